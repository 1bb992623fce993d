//! Waiting for a socket to become readable, with `poll(2)`, instead of
//! sleeping in a blocking read.
//!
//! Why not simply block in `recv`? On Linux, a process asleep in `recv` on a
//! unix stream socket waits on the socket's one wait queue, and that queue is
//! also woken when the *peer reads* what this process wrote: the kernel
//! frees the consumed bytes, signals "writable again" on the writer's socket,
//! and the sleeping reader wakes, finds nothing and sleeps again. Between two
//! processes on different CPUs each such wake-up is an inter-processor
//! interrupt, paid by the peer inside its `recv` (12 µs for a 70-byte read on
//! our 2-vCPU test machines, against 4 µs without a sleeper) and by the
//! sleeper in a needless context switch. A process asleep in `poll` for
//! `POLLIN` only is not woken by "writable" news.
//!
//! So the reads of the process-creation protocol (a parent waiting for a
//! new process to say it started, a serving process waiting for commands)
//! first try without blocking and, if nothing is there, wait here and try
//! again: one more system call, only when there was nothing to read anyway.
//! Measured with `anyfork bench spawn --quick`, side by side: `new_exec`
//! 3 % and forks of templates about 10 % more processes per second.
//!
//! RPC calls keep sleeping in `recv`, on purpose: there the reply follows
//! the peer's read within microseconds, and the early wake-up finds the
//! waiting CPU awake when the reply comes. Waiting in `poll` instead made a
//! small blocking call across CPUs 41 µs → 63 µs on the same machines.
//!
//! References:
//! - [`poll(2)`](https://man7.org/linux/man-pages/man2/poll.2.html)
//! - [`unix(7)`](https://man7.org/linux/man-pages/man7/unix.7.html)

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, poll};

/// Waits until `fd` can take more bytes (or is in error), or until
/// `deadline` passes; false on timeout.
pub(crate) fn wait_writable_until(fd: impl AsFd, deadline: Option<Instant>) -> io::Result<bool> {
    let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
    if left == Some(Duration::ZERO) {
        return Ok(false);
    }
    wait_for(fd, PollFlags::OUT, left)
}

/// Waits until `fd` is readable, at its end, or in error, or until `timeout`
/// passes (`None`: no limit). Returns false on timeout; also returns (true)
/// early when a signal interrupts the wait, so callers simply try their read
/// again.
pub(crate) fn wait_readable(fd: impl AsFd, timeout: Option<Duration>) -> io::Result<bool> {
    wait_for(fd, PollFlags::IN, timeout)
}

/// One `poll` of `fd` for `flags`: false on timeout, true when ready (or
/// interrupted: callers try again). A timeout too long to express is no
/// limit.
fn wait_for(fd: impl AsFd, flags: PollFlags, timeout: Option<Duration>) -> io::Result<bool> {
    let mut fds = [PollFd::new(&fd, flags)];
    let timeout = timeout.and_then(|t| rustix::fs::Timespec::try_from(t).ok());
    match poll(&mut fds, timeout.as_ref()) {
        Ok(0) => Ok(false),
        Ok(_) | Err(rustix::io::Errno::INTR) => Ok(true),
        Err(e) => Err(e.into()),
    }
}

/// Waits until one of `fds` is readable (or at its end, or in error), or
/// `timeout` passes (`None`: no limit). Returns `None` on timeout, else
/// which of them are ready (none after an interrupted wait: callers look
/// again).
pub(crate) fn wait_readable_any(
    fds: &[BorrowedFd<'_>],
    timeout: Option<Duration>,
) -> io::Result<Option<Vec<bool>>> {
    let mut polled: Vec<PollFd<'_>> = fds
        .iter()
        .map(|fd| PollFd::new(fd, PollFlags::IN))
        .collect();
    let timeout = timeout.and_then(|t| rustix::fs::Timespec::try_from(t).ok());
    match poll(&mut polled, timeout.as_ref()) {
        Ok(0) => Ok(None),
        Ok(_) => Ok(Some(
            polled.iter().map(|p| !p.revents().is_empty()).collect(),
        )),
        Err(rustix::io::Errno::INTR) => Ok(Some(vec![false; fds.len()])),
        Err(e) => Err(e.into()),
    }
}

/// Calls `read`, a read that does not block, until it reports something
/// other than "would block", waiting in [`wait_readable`] for `fd` between
/// tries; `before_wait` runs once, before the first wait. Interrupted reads
/// are tried again.
pub(crate) fn read_when_readable<T>(
    fd: BorrowedFd<'_>,
    before_wait: impl FnMut(),
    read: impl FnMut() -> io::Result<T>,
) -> io::Result<T> {
    read_when_readable_until(fd, None, before_wait, read)
}

/// [`read_when_readable`] that gives up at `deadline` with
/// `ErrorKind::TimedOut`.
pub(crate) fn read_when_readable_until<T>(
    fd: BorrowedFd<'_>,
    deadline: Option<Instant>,
    mut before_wait: impl FnMut(),
    mut read: impl FnMut() -> io::Result<T>,
) -> io::Result<T> {
    let mut waited = false;
    loop {
        match read() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if !waited {
                    before_wait();
                    waited = true;
                }
                let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
                if left == Some(Duration::ZERO) || !wait_readable(fd, left)? {
                    return Err(io::ErrorKind::TimedOut.into());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    #[test]
    fn readable_after_data_or_end_and_not_before() {
        let (mut a, b) = UnixStream::pair().unwrap();
        assert!(!wait_readable(&b, Some(Duration::from_millis(10))).unwrap());
        a.write_all(b"x").unwrap();
        assert!(wait_readable(&b, None).unwrap());
        let (a, b) = UnixStream::pair().unwrap();
        drop(a);
        assert!(wait_readable(&b, Some(Duration::from_secs(5))).unwrap());
    }

    #[test]
    fn a_read_that_would_block_waits_once_announced_then_gets_the_data() {
        use std::io::Read;
        use std::os::fd::AsFd;
        let (mut a, mut b) = UnixStream::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            a.write_all(b"late").unwrap();
        });
        let mut announced = 0;
        let mut buf = [0u8; 8];
        let fd = b.try_clone().unwrap();
        let n = read_when_readable(fd.as_fd(), || announced += 1, || b.read(&mut buf)).unwrap();
        assert_eq!((&buf[..n], announced), (&b"late"[..], 1));
        writer.join().unwrap();
    }
}
