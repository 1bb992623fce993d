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

/// `dl_iterate_phdr` callback: copies the GNU build-id note of the first
/// object (the main program), if it has one, and stops.
extern "C" fn first_build_id(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    data: *mut libc::c_void,
) -> libc::c_int {
    // SAFETY: as in `first_object`; `data` is the `Option<Vec<u8>>` that
    // `gnu_build_id` passes.
    let (info, out) = unsafe { (&*info, &mut *(data as *mut Option<Vec<u8>>)) };
    for i in 0..info.dlpi_phnum as usize {
        // SAFETY: dlpi_phdr points to dlpi_phnum program headers.
        let header = unsafe { &*info.dlpi_phdr.add(i) };
        if header.p_type != libc::PT_NOTE {
            continue;
        }
        let start = (info.dlpi_addr as usize + header.p_vaddr as usize) as *const u8;
        // SAFETY: a PT_NOTE segment is loaded (it lies within a PT_LOAD
        // segment of the object) and p_memsz bytes long.
        let notes = unsafe { std::slice::from_raw_parts(start, header.p_memsz as usize) };
        if let Some(id) = find_build_id(notes) {
            *out = Some(id.to_vec());
            break;
        }
    }
    1
}

/// The descriptor of the `NT_GNU_BUILD_ID` note named `GNU` in `notes`.
fn find_build_id(mut notes: &[u8]) -> Option<&[u8]> {
    let align = |n: usize| n.div_ceil(4) * 4;
    while notes.len() >= 12 {
        let word = |at: usize| {
            u32::from_ne_bytes([notes[at], notes[at + 1], notes[at + 2], notes[at + 3]]) as usize
        };
        let (namesz, descsz, kind) = (word(0), word(4), word(8));
        let name_end = 12 + align(namesz);
        let desc_end = name_end.checked_add(align(descsz))?;
        if desc_end > notes.len() {
            return None;
        }
        if kind == 3 && notes.get(12..12 + namesz) == Some(b"GNU\0") {
            return notes.get(name_end..name_end + descsz);
        }
        notes = &notes[desc_end..];
    }
    None
}

/// The GNU build id of the executable (a hash of its contents the linker
/// wrote into a note), if it has one.
pub(crate) fn gnu_build_id() -> Option<Vec<u8>> {
    let mut id: Option<Vec<u8>> = None;
    // SAFETY: the callback only reads the loader's tables and the loaded
    // note, and writes `id`, which outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(first_build_id), &mut id as *mut _ as *mut libc::c_void) };
    id
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_id_note_is_found_among_others() {
        let note = |name: &[u8], kind: u32, desc: &[u8]| {
            let mut out = Vec::new();
            out.extend_from_slice(&(name.len() as u32).to_ne_bytes());
            out.extend_from_slice(&(desc.len() as u32).to_ne_bytes());
            out.extend_from_slice(&kind.to_ne_bytes());
            out.extend_from_slice(name);
            out.resize(out.len().div_ceil(4) * 4, 0);
            out.extend_from_slice(desc);
            out.resize(out.len().div_ceil(4) * 4, 0);
            out
        };
        let mut notes = note(b"GNU\0", 1, b"\x01\x02\x03\x04");
        notes.extend(note(b"GNU\0", 3, b"\xaa\xbb\xcc"));
        assert_eq!(find_build_id(&notes), Some(&b"\xaa\xbb\xcc"[..]));
        assert_eq!(find_build_id(&notes[..notes.len() - 4]), None);
        assert_eq!(find_build_id(&note(b"XYZ\0", 3, b"\x01")), None);
        // This test binary has one (Debian's linker writes it).
        assert!(gnu_build_id().is_some_and(|id| id.len() >= 8));
    }
}
