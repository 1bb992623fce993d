//! Hearing that children exited without looking every few milliseconds:
//! `SIGCHLD` through a `signalfd(2)`.
//!
//! For a process that has many children it did not start itself (the relay
//! of a remote connection: its templates fork siblings, which become its
//! children) and sleeps in `poll`: the signal is blocked and read from a
//! descriptor, which becomes readable when a child exits. Children started
//! with `posix_spawn` get an empty signal mask ([`super::spawn`]), so the
//! block is not inherited.
//!
//! References:
//! - [`signalfd(2)`](https://man7.org/linux/man-pages/man2/signalfd.2.html)
//! - [`sigprocmask(2)`](https://man7.org/linux/man-pages/man2/sigprocmask.2.html)

use std::io;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};

/// A descriptor that is readable when a child has exited.
#[derive(Debug)]
pub(crate) struct ChildExits(OwnedFd);

impl ChildExits {
    /// Blocks `SIGCHLD` in the calling thread and opens the descriptor.
    /// For a single-threaded process (the relay): other threads would
    /// still take the signal.
    pub(crate) fn new() -> io::Result<ChildExits> {
        // SAFETY: sigset_t is plain data; sigemptyset and sigaddset
        // initialise it before use.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid sigset_t owned by this frame.
        unsafe {
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGCHLD);
        }
        // SAFETY: changes this thread's signal mask; the old mask is not
        // needed.
        let blocked = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if blocked != 0 {
            return Err(io::Error::from_raw_os_error(blocked));
        }
        // SAFETY: `set` is initialised; a new descriptor is returned or -1.
        let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: signalfd returned a new descriptor that nothing else owns.
        Ok(ChildExits(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Reads every pending notice (the descriptor is readable until then).
    /// Several exits may make one notice: reap with `WNOHANG` until none.
    pub(crate) fn clear(&self) {
        let mut info = [0u8; std::mem::size_of::<libc::signalfd_siginfo>() * 8];
        while matches!(rustix::io::read(&self.0, &mut info), Ok(n) if n > 0) {}
    }
}

impl AsFd for ChildExits {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}
