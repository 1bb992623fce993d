//! Where code lives in the running executable.
//!
//! A function value can be named across `exec` by its offset from the start
//! of the executable: a serving process runs the same file (by inode, see
//! [`spawn`](super::spawn)), so the same offset is the same function there,
//! whatever address the loader chose. These helpers find the executable's
//! base, check that an address belongs to the executable (not to a shared
//! library), and identify the executable file.
//!
//! References:
//! - [`dl_iterate_phdr(3)`](https://man7.org/linux/man-pages/man3/dl_iterate_phdr.3.html)
//! - [`stat(2)`](https://man7.org/linux/man-pages/man2/stat.2.html)

use std::sync::OnceLock;

/// Where the main executable is loaded: its load bias and the address
/// range its segments cover.
#[derive(Debug, Clone, Copy)]
struct MainImage {
    bias: usize,
    start: usize,
    end: usize,
}

/// `dl_iterate_phdr` callback: records the first object, which is the main
/// program, and stops.
extern "C" fn first_object(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    data: *mut libc::c_void,
) -> libc::c_int {
    // SAFETY: dl_iterate_phdr passes a valid info for the duration of the
    // call, and `data` is the `Option<MainImage>` that `main_image` passes.
    let (info, out) = unsafe { (&*info, &mut *(data as *mut Option<MainImage>)) };
    let bias = info.dlpi_addr as usize;
    let (mut start, mut end) = (usize::MAX, 0usize);
    for i in 0..info.dlpi_phnum as usize {
        // SAFETY: dlpi_phdr points to dlpi_phnum program headers.
        let header = unsafe { &*info.dlpi_phdr.add(i) };
        if header.p_type == libc::PT_LOAD {
            start = start.min(bias + header.p_vaddr as usize);
            end = end.max(bias + (header.p_vaddr + header.p_memsz) as usize);
        }
    }
    if start < end {
        *out = Some(MainImage { bias, start, end });
    }
    1
}

fn main_image() -> Option<MainImage> {
    static IMAGE: OnceLock<Option<MainImage>> = OnceLock::new();
    *IMAGE.get_or_init(|| {
        let mut image: Option<MainImage> = None;
        // SAFETY: the callback only reads the loader's tables and writes
        // `image`, which outlives the call.
        unsafe {
            libc::dl_iterate_phdr(
                Some(first_object),
                &mut image as *mut _ as *mut libc::c_void,
            )
        };
        image
    })
}

/// The offset of `addr` from the main executable's load address, if `addr`
/// lies in the main executable.
pub(crate) fn offset_in_main(addr: usize) -> Option<u64> {
    let image = main_image()?;
    (image.start..image.end)
        .contains(&addr)
        .then(|| (addr - image.bias) as u64)
}

/// The address at `offset` in the main executable.
pub(crate) fn address_in_main(offset: u64) -> Option<usize> {
    let image = main_image()?;
    let addr = image.bias.checked_add(usize::try_from(offset).ok()?)?;
    (image.start..image.end).contains(&addr).then_some(addr)
}

/// Identifies the executable file: device and inode of `/proc/self/exe`, plus
/// its size and modification time, so a rebuilt binary at the same inode
/// does not pass.
pub(crate) fn identity() -> [u64; 4] {
    static ID: OnceLock<[u64; 4]> = OnceLock::new();
    *ID.get_or_init(|| match rustix::fs::stat("/proc/self/exe") {
        Ok(st) => [st.st_dev, st.st_ino, st.st_size as u64, st.st_mtime as u64],
        Err(_) => [0; 4],
    })
}
