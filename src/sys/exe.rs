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
//! - [`dladdr(3)`](https://man7.org/linux/man-pages/man3/dladdr.3.html)
//! - [`getauxval(3)`](https://man7.org/linux/man-pages/man3/getauxval.3.html) (`AT_PHDR`)
//! - [`stat(2)`](https://man7.org/linux/man-pages/man2/stat.2.html)

use std::sync::OnceLock;

/// The base address of the loaded object that contains `addr`, if any.
fn object_base(addr: usize) -> Option<usize> {
    let mut info = std::mem::MaybeUninit::<libc::Dl_info>::zeroed();
    // SAFETY: dladdr only reads the loader's tables and writes `info`.
    let found = unsafe { libc::dladdr(addr as *const libc::c_void, info.as_mut_ptr()) };
    if found == 0 {
        return None;
    }
    // SAFETY: dladdr filled `info` when it returned non-zero.
    let info = unsafe { info.assume_init() };
    Some(info.dli_fbase as usize)
}

/// The base address of the main executable.
pub(crate) fn main_base() -> Option<usize> {
    static BASE: OnceLock<Option<usize>> = OnceLock::new();
    *BASE.get_or_init(|| {
        // SAFETY: getauxval has no preconditions.
        let phdr = unsafe { libc::getauxval(libc::AT_PHDR) } as usize;
        if phdr == 0 { None } else { object_base(phdr) }
    })
}

/// The offset of `addr` from the start of the main executable, if `addr` lies
/// in the main executable.
pub(crate) fn offset_in_main(addr: usize) -> Option<u64> {
    let base = main_base()?;
    (object_base(addr)? == base).then(|| (addr - base) as u64)
}

/// The address at `offset` in the main executable.
pub(crate) fn address_in_main(offset: u64) -> Option<usize> {
    main_base()?.checked_add(usize::try_from(offset).ok()?)
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
