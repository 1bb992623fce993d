//! Descriptor hygiene: what a new process may hold, and checking what it got.
//!
//! References:
//! - [`close_range(2)`](https://man7.org/linux/man-pages/man2/close_range.2.html)
//! - [`fcntl(2)`](https://man7.org/linux/man-pages/man2/fcntl.2.html) (`F_GETFD`, `F_SETFD`)
//! - [`getsockopt(2)`](https://man7.org/linux/man-pages/man2/getsockopt.2.html) (`SO_DOMAIN`, `SO_TYPE`)

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

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

/// Points every open descriptor above stderr except `keep` at `/dev/null`
/// (close-on-exec), without closing any.
///
/// For a copy of a running program ([`early`](crate::early),
/// [`Template::here`](crate::Template::here)): objects of the program (a
/// static `File`, a logger) still own the numbers of its descriptors in the
/// copy. Closed, those numbers would be reused by descriptors the copy
/// receives later, and the program's objects would write into a worker's
/// socket; pointed at `/dev/null`, they stay taken and harmless (I/O
/// safety). Uses `/proc/self/fd` to find them, or tries every number below
/// the descriptor limit where `/proc` is missing.
pub(crate) fn replace_all_with_null_except(keep: RawFd) -> io::Result<()> {
    use rustix::fs::{Mode, OFlags};
    let null = rustix::fs::open(
        "/dev/null",
        OFlags::RDWR | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )?;
    let null_fd = null.as_raw_fd();
    let open: Vec<RawFd> = match std::fs::read_dir("/proc/self/fd") {
        Ok(dir) => dir
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
            .collect(),
        Err(_) => {
            let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
                .current
                .unwrap_or(1 << 16)
                .min(1 << 16) as RawFd;
            (3..limit).collect()
        }
    };
    for fd in open {
        if fd <= 2 || fd == keep || fd == null_fd {
            continue;
        }
        // SAFETY: only asks whether the number is open (read_dir's own
        // descriptor is in the list and closed by now).
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        if rustix::io::fcntl_getfd(borrowed).is_err() {
            continue;
        }
        // Whatever object of the program owns the number keeps a valid
        // descriptor, and no other object can be handed that number.
        point_at(null.as_fd(), fd)?;
    }
    Ok(())
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

/// Takes stdin and stdout over as a connection: returns new descriptors
/// (close-on-exec) for them, then points stdin at `/dev/null` and stdout at
/// stderr, so that what the process prints cannot mix with the protocol.
/// For a serving process started with its protocol on stdin and stdout.
pub(crate) fn take_stdio() -> io::Result<(OwnedFd, OwnedFd)> {
    use rustix::fs::{Mode, OFlags};
    let stdin = rustix::io::fcntl_dupfd_cloexec(rustix::stdio::stdin(), 3)?;
    let stdout = rustix::io::fcntl_dupfd_cloexec(rustix::stdio::stdout(), 3)?;
    let null = rustix::fs::open("/dev/null", OFlags::RDONLY | OFlags::NOCTTY, Mode::empty())?;
    // SAFETY: replaces what descriptor 0 refers to; the number stays open,
    // and the connection lives on in the duplicate made above.
    if unsafe { libc::dup2(null.as_raw_fd(), 0) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above, for descriptor 1 (now a copy of stderr).
    if unsafe { libc::dup2(2, 1) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok((stdin, stdout))
}

/// Points `fd` at `/dev/null` (close-on-exec) without closing the number:
/// whatever it referred to loses this reference (the last write end of a
/// pipe closing: the reader sees end of stream), while every holder of
/// the number keeps a valid descriptor.
pub(crate) fn replace_with_null(fd: BorrowedFd<'_>) -> io::Result<()> {
    use rustix::fs::{Mode, OFlags};
    let null = rustix::fs::open(
        "/dev/null",
        OFlags::WRONLY | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )?;
    point_at(null.as_fd(), fd.as_raw_fd())
}

/// Makes the number `target` refer to what `source` refers to (close-on-
/// exec), atomically: the number never stops being open, so its owner
/// keeps a valid descriptor throughout.
fn point_at(source: BorrowedFd<'_>, target: RawFd) -> io::Result<()> {
    // SAFETY: dup3 replaces what `target` refers to without closing the
    // number (the callers' reason to use it); it touches no memory.
    if unsafe { libc::dup3(source.as_raw_fd(), target, libc::O_CLOEXEC) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
