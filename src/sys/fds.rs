//! Descriptor hygiene: what a new process may hold, and checking what it got.
//!
//! References:
//! - [`close_range(2)`](https://man7.org/linux/man-pages/man2/close_range.2.html)
//! - [`fcntl(2)`](https://man7.org/linux/man-pages/man2/fcntl.2.html) (`F_GETFD`, `F_SETFD`)
//! - [`getsockopt(2)`](https://man7.org/linux/man-pages/man2/getsockopt.2.html) (`SO_DOMAIN`, `SO_TYPE`)

use std::io;
use std::os::fd::{AsFd, BorrowedFd, RawFd};

use rustix::io::FdFlags;
use rustix::net::{AddressFamily, SocketType};

/// `close_range(first, last, 0)`: closes every descriptor in `first..=last`.
pub(crate) fn close_range(first: RawFd, last: RawFd) -> io::Result<()> {
    if first > last {
        return Ok(());
    }
    // SAFETY: close_range only closes descriptors; the callers own every
    // descriptor in the range (it is called where the process's descriptor
    // table is being reset, before any Rust object holds those numbers).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            last as libc::c_uint,
            0 as libc::c_uint,
        )
    };
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Closes every descriptor above stderr except `keep`.
pub(crate) fn close_all_except(keep: RawFd) -> io::Result<()> {
    close_range(3, keep - 1)?;
    close_range(keep + 1, RawFd::MAX)
}

/// Why a descriptor cannot serve as a control socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotAControlSocket {
    /// The descriptor is not open.
    NotOpen,
    /// It is open but not a socket, or not a unix stream socket.
    WrongKind,
}

/// Checks that `fd` is an open unix-domain stream socket.
pub(crate) fn check_unix_stream(fd: BorrowedFd<'_>) -> Result<(), NotAControlSocket> {
    if rustix::io::fcntl_getfd(fd).is_err() {
        return Err(NotAControlSocket::NotOpen);
    }
    match (
        rustix::net::sockopt::socket_domain(fd),
        rustix::net::sockopt::socket_type(fd),
    ) {
        (Ok(AddressFamily::UNIX), Ok(SocketType::STREAM)) => Ok(()),
        _ => Err(NotAControlSocket::WrongKind),
    }
}

/// Marks `fd` close-on-exec.
pub(crate) fn set_cloexec(fd: impl AsFd) -> io::Result<()> {
    rustix::io::fcntl_setfd(fd, FdFlags::CLOEXEC)?;
    Ok(())
}

/// The number of threads of the calling process, from `/proc/self/task`.
pub(crate) fn thread_count() -> io::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/task")?.count())
}
