//! Starting a fresh serving process: `posix_spawn` of the running executable.
//!
//! `posix_spawn` in glibc uses `clone(CLONE_VM | CLONE_VFORK)`, so the cost
//! does not grow with the parent's memory (a `fork` of a 2000 MB parent
//! manages about 13 per second on these machines; this stays above 1,000).
//! The new process gets the control socket at a fixed descriptor number, the
//! serve marker in its environment, an empty signal mask and default signal
//! dispositions; everything else anyfork holds is close-on-exec.
//!
//! References:
//! - [`posix_spawn(3)`](https://man7.org/linux/man-pages/man3/posix_spawn.3.html)
//! - [`proc_pid_exe(5)`](https://man7.org/linux/man-pages/man5/proc_pid_exe.5.html)

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::ptr;
use std::sync::OnceLock;

/// The descriptor number at which a spawned serving process finds its control
/// socket.
pub(crate) const SERVE_FD: i32 = 3;

/// The executable every serving process runs: the caller's own, by inode, so a
/// binary replaced on disk meanwhile does not matter.
pub(crate) const SELF_EXE: &CStr = c"/proc/self/exe";

/// The `argv[0]` serving processes get: the program's own path, looked up
/// once. It names them in `ps` (see `serve::name_after_program`); the
/// executable itself is always [`SELF_EXE`].
fn program_path() -> &'static CStr {
    static PATH: OnceLock<CString> = OnceLock::new();
    PATH.get_or_init(|| {
        std::fs::read_link(std::ffi::OsStr::from_bytes(SELF_EXE.to_bytes()))
            .ok()
            .and_then(|path| CString::new(path.into_os_string().into_vec()).ok())
            .unwrap_or_else(|| c"anyfork-serve".to_owned())
    })
}

/// Owns a `posix_spawn_file_actions_t`.
struct FileActions(libc::posix_spawn_file_actions_t);

impl FileActions {
    fn new() -> io::Result<Self> {
        let mut raw = std::mem::MaybeUninit::uninit();
        // SAFETY: init writes a valid object into `raw` when it returns 0.
        check(unsafe { libc::posix_spawn_file_actions_init(raw.as_mut_ptr()) })?;
        // SAFETY: initialised just above.
        Ok(Self(unsafe { raw.assume_init() }))
    }
}

impl Drop for FileActions {
    fn drop(&mut self) {
        // SAFETY: self.0 was initialised by posix_spawn_file_actions_init.
        unsafe { libc::posix_spawn_file_actions_destroy(&mut self.0) };
    }
}

/// Owns a `posix_spawnattr_t`.
struct Attributes(libc::posix_spawnattr_t);

impl Attributes {
    fn new() -> io::Result<Self> {
        let mut raw = std::mem::MaybeUninit::uninit();
        // SAFETY: init writes a valid object into `raw` when it returns 0.
        check(unsafe { libc::posix_spawnattr_init(raw.as_mut_ptr()) })?;
        // SAFETY: initialised just above.
        Ok(Self(unsafe { raw.assume_init() }))
    }
}

impl Drop for Attributes {
    fn drop(&mut self) {
        // SAFETY: self.0 was initialised by posix_spawnattr_init.
        unsafe { libc::posix_spawnattr_destroy(&mut self.0) };
    }
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(ret))
    }
}

/// Spawns `/proc/self/exe` with each `(descriptor, number)` of `fds` at
/// that number (the connection: a socket at [`SERVE_FD`], or pipes at 0
/// and 1) and `marker` (`NAME=VALUE`) added to the environment. Returns the
/// new pid.
pub(crate) fn spawn_self(fds: &[(BorrowedFd<'_>, RawFd)], marker: &CStr) -> io::Result<i32> {
    let argv0 = program_path();
    let argv = [argv0.as_ptr(), ptr::null()];

    let marker_name = marker
        .to_bytes()
        .split(|&b| b == b'=')
        .next()
        .unwrap_or_default();
    let mut env: Vec<CString> = Vec::new();
    for (key, value) in std::env::vars_os() {
        if key.as_bytes() == marker_name {
            continue;
        }
        let mut entry = key.as_bytes().to_vec();
        entry.push(b'=');
        entry.extend_from_slice(value.as_bytes());
        if let Ok(entry) = CString::new(entry) {
            env.push(entry);
        }
    }
    env.push(marker.to_owned());
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    envp.push(ptr::null());

    let mut actions = FileActions::new()?;
    // dup2 onto itself would keep close-on-exec set, and a source that is
    // another mapping's target would be overwritten first: such sources
    // are moved above every target first.
    let highest = fds.iter().map(|&(_, target)| target).max().unwrap_or(0);
    let mut moved = Vec::new();
    for &(source, target) in fds {
        let source = if fds.iter().any(|&(_, t)| t == source.as_raw_fd()) {
            let copy = rustix::io::fcntl_dupfd_cloexec(source, highest + 1)?;
            let raw = copy.as_raw_fd();
            moved.push(copy);
            raw
        } else {
            source.as_raw_fd()
        };
        // SAFETY: `actions` is initialised; `source` is open for the
        // duration of the spawn call below (`moved` keeps the copies).
        check(unsafe { libc::posix_spawn_file_actions_adddup2(&mut actions.0, source, target) })?;
    }

    let mut attributes = Attributes::new()?;
    // SAFETY: plain initialisation of signal sets that live on this stack frame.
    let (empty, all) = unsafe {
        let mut empty = std::mem::zeroed::<libc::sigset_t>();
        let mut all = std::mem::zeroed::<libc::sigset_t>();
        libc::sigemptyset(&mut empty);
        libc::sigfillset(&mut all);
        (empty, all)
    };
    // SAFETY: `attributes` is initialised; the sets are valid.
    unsafe {
        check(libc::posix_spawnattr_setsigmask(&mut attributes.0, &empty))?;
        check(libc::posix_spawnattr_setsigdefault(&mut attributes.0, &all))?;
        check(libc::posix_spawnattr_setflags(
            &mut attributes.0,
            (libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF) as libc::c_short,
        ))?;
    }

    let mut pid: libc::pid_t = 0;
    // SAFETY: every pointer argument is valid and null-terminated where
    // required (`argv`, `envp`), and outlives the call.
    check(unsafe {
        libc::posix_spawn(
            &mut pid,
            SELF_EXE.as_ptr(),
            &actions.0,
            &attributes.0,
            argv.as_ptr() as *const *mut libc::c_char,
            envp.as_ptr() as *const *mut libc::c_char,
        )
    })?;
    Ok(pid)
}
