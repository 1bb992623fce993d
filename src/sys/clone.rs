//! Creating processes by duplicating the calling one.
//!
//! Templates create their children with `clone(CLONE_PARENT | SIGCHLD)`: the
//! new process is a *sibling* of the template, a direct child of the program
//! that created the template. That program can therefore wait for it, signal
//! it through a pidfd without pid-reuse races, and read its exit status, and
//! templates never have children of their own to reap.
//!
//! References:
//! - [`clone(2)`](https://man7.org/linux/man-pages/man2/clone.2.html)
//! - [`fork(2)`](https://man7.org/linux/man-pages/man2/fork.2.html)

use std::io;

/// Which side of a fork the caller is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Forked {
    /// The new process.
    Child,
    /// The calling process; the new process has this pid.
    Parent(i32),
}

fn forked(ret: libc::c_long) -> io::Result<Forked> {
    match ret {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid as i32)),
    }
}

/// `clone(CLONE_PARENT | SIGCHLD)`: a copy of the calling process whose parent
/// is the caller's parent.
///
/// The raw system call is used because glibc's `fork` cannot set
/// `CLONE_PARENT`. That skips glibc's fork handlers, which is sound only
/// because the caller is a single-threaded template: no other thread can hold
/// a lock (malloc, stdio) that the child would inherit locked. The child's
/// cached thread id in glibc's thread descriptor keeps the template's value;
/// glibc's `raise`/`abort` ask the kernel for the real id, and anyfork's
/// children never compare thread ids of the template.
///
/// # Safety
///
/// The calling process must have exactly one thread, and the child must not
/// return into code that assumes it is the template (the serve loop handles
/// the child explicitly).
pub(crate) unsafe fn clone_sibling() -> io::Result<Forked> {
    let flags = (libc::CLONE_PARENT | libc::SIGCHLD) as libc::c_long;
    // SAFETY: with a null stack pointer the child runs on a copy of the
    // caller's stack, exactly like fork(2); all other arguments are unused
    // without the CLONE_*TID/SETTLS flags. The caller guarantees a single
    // thread (see the function's safety section).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags,
            0 as libc::c_long,
            0 as libc::c_long,
            0 as libc::c_long,
            0 as libc::c_long,
        )
    };
    forked(ret)
}

/// glibc's `fork()`: a copy of the calling process as its child.
///
/// # Safety
///
/// The calling process must have exactly one thread; the child must only run
/// code that is safe after fork in that situation and must never return into
/// the caller's code path (it ends with `_exit`).
pub(crate) unsafe fn fork_child() -> io::Result<Forked> {
    // SAFETY: the caller guarantees a single-threaded process, so the child
    // inherits no lock held by another thread.
    let ret = unsafe { libc::fork() };
    forked(ret as libc::c_long)
}
