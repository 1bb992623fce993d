//! Ending a process when the program that made it dies.
//!
//! `prctl(PR_SET_PDEATHSIG)` asks the kernel for a signal when the
//! process's parent goes away. The catch: "parent" is the *thread* that
//! created the process, and the signal also comes when that thread exits
//! and the process is handed to another thread of the same program.
//! anyfork's processes are created by whatever thread asked (`posix_spawn`
//! from the caller's thread, `clone(CLONE_PARENT)` in a template, which
//! inherits the template's creating thread), so a worker made from a
//! short-lived thread would be killed while its program runs on.
//!
//! So the signal is not `SIGKILL` but [`SIGNAL`], whose handler looks at
//! the parent *process* (`getppid`): the same program, after a thread's
//! exit, means nothing happened; another process (init, a subreaper) means
//! the program is gone, and the handler kills the process with `SIGKILL`.
//! `getppid` and `kill` are async-signal-safe.
//!
//! The process must not block or take over [`SIGNAL`] itself.
//!
//! References:
//! - [`PR_SET_PDEATHSIG(2const)`](https://man7.org/linux/man-pages/man2/PR_SET_PDEATHSIG.2const.html)
//! - [`getppid(2)`](https://man7.org/linux/man-pages/man2/getppid.2.html)

use std::io;
use std::sync::atomic::{AtomicI32, Ordering};

/// The signal the kernel sends when the creating thread goes away: the
/// highest real-time signal, which neither glibc nor tokio uses.
pub(crate) fn signal() -> libc::c_int {
    libc::SIGRTMAX()
}

/// The pid of the program this process must not outlive.
static EXPECTED_PARENT: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_parent_death(_: libc::c_int) {
    // SAFETY: getppid, getpid and kill are async-signal-safe and have no
    // preconditions.
    unsafe {
        if libc::getppid() != EXPECTED_PARENT.load(Ordering::Relaxed) {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Makes this process die (`SIGKILL`) when `parent` is no longer its
/// parent process; `None` means the current parent. If `parent` is
/// already gone, the process dies now.
pub(crate) fn die_with(parent: Option<u32>) -> io::Result<()> {
    // SAFETY: getppid has no preconditions.
    let now = unsafe { libc::getppid() };
    let parent = parent.and_then(|p| i32::try_from(p).ok()).unwrap_or(now);
    EXPECTED_PARENT.store(parent, Ordering::Relaxed);
    let sig = signal();
    // SAFETY: installs a handler that only calls async-signal-safe
    // functions and reads an atomic; `action` is fully initialised.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_parent_death as extern "C" fn(libc::c_int) as *const () as usize;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        check(libc::sigaction(sig, &action, std::ptr::null_mut()))?;
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        check(libc::pthread_sigmask(
            libc::SIG_UNBLOCK,
            &set,
            std::ptr::null_mut(),
        ))?;
        check(libc::prctl(
            libc::PR_SET_PDEATHSIG,
            sig as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        ))?;
    }
    // The parent may have died before the request was made.
    on_parent_death(sig);
    Ok(())
}
