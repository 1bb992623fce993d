//! Moving bytes and descriptors between two processes.
//!
//! Every protocol of this crate (the template protocol in
//! [`crate::proto`], RPC in [`crate::rpc`]) talks through a [`Transport`],
//! one end of a connection, of one of two kinds:
//!
//! - **A unix stream socket** (what [`crate::Fork`] makes for every local
//!   process): carries descriptors (`SCM_RIGHTS`) and the sender's
//!   credentials (`SCM_CREDENTIALS`), and can be peeked at.
//! - **A pair of byte streams**, a read end and a write end: two pipes, a
//!   command's stdin and stdout, an ssh session. No descriptors, no
//!   credentials, no peeking: a reader that must leave the rest of the
//!   stream to its next owner reads exactly the bytes it needs. Both ends
//!   are made non-blocking when the transport is made (they are this
//!   process's own: pipes it created, or its stdin and stdout in a process
//!   started for the purpose), and the blocking operations wait in `poll`.
//!
//! A frame that names a descriptor cannot travel on a pair of streams:
//! sending one is an error of kind [`io::ErrorKind::Unsupported`] saying so,
//! before any byte of it is written.
//!
//! Nothing else in the crate makes I/O system calls on a connection: the
//! protocols ask the transport to send, receive and wait, and [`crate::sys`]
//! holds the calls the standard library and rustix do not wrap.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
#[cfg(feature = "tokio")]
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::sys::{fdpass, fds, poll};

/// What sending a descriptor on a pair of byte streams says.
pub(crate) const NO_FDS: &str =
    "this transport is a pair of byte streams, which cannot carry file descriptors";

/// One end of a connection between two processes.
///
/// A transport may be duplicated ([`try_clone`](Transport::try_clone)) so
/// that a reader and a writer hold it independently; shutting the writing
/// direction down through any copy ends it for all of them (a socket's
/// copies are duplicates of one socket; a pair of streams' copies share
/// the same two descriptors, since a pipe ends only when every descriptor
/// of its write end is gone).
#[derive(Debug)]
pub(crate) enum Transport {
    /// A unix stream socket.
    Socket(OwnedFd),
    /// A pair of byte streams.
    Streams {
        /// Where the peer's bytes arrive.
        read: Arc<OwnedFd>,
        /// Where this side's bytes go.
        write: Arc<OwnedFd>,
    },
}

impl Transport {
    /// A pair of byte streams, made non-blocking.
    pub(crate) fn streams(read: OwnedFd, write: OwnedFd) -> io::Result<Transport> {
        rustix::io::ioctl_fionbio(&read, true)?;
        rustix::io::ioctl_fionbio(&write, true)?;
        Ok(Transport::Streams {
            read: Arc::new(read),
            write: Arc::new(write),
        })
    }

    /// Whether descriptors (and credentials) can travel on this transport.
    pub(crate) fn carries_fds(&self) -> bool {
        matches!(self, Transport::Socket(_))
    }

    /// The descriptor to read from (and to wait on for reading).
    pub(crate) fn read_fd(&self) -> BorrowedFd<'_> {
        match self {
            Transport::Socket(socket) => socket.as_fd(),
            Transport::Streams { read, .. } => read.as_fd(),
        }
    }

    /// The descriptor to write to (and to wait on for writing).
    pub(crate) fn write_fd(&self) -> BorrowedFd<'_> {
        match self {
            Transport::Socket(socket) => socket.as_fd(),
            Transport::Streams { write, .. } => write.as_fd(),
        }
    }

    /// Sends `bytes` with `fds` attached to the first of them; returns how
    /// many bytes went. A non-blocking send that would block is
    /// [`io::ErrorKind::WouldBlock`].
    pub(crate) fn send(
        &self,
        bytes: &[u8],
        fds: &[BorrowedFd<'_>],
        nonblocking: bool,
    ) -> io::Result<usize> {
        match self {
            Transport::Socket(socket) => {
                fdpass::send_with_fds(socket.as_fd(), bytes, fds, nonblocking)
            }
            Transport::Streams { write, .. } => {
                if !fds.is_empty() {
                    return Err(io::Error::new(io::ErrorKind::Unsupported, NO_FDS));
                }
                loop {
                    match rustix::io::write(write, bytes) {
                        Err(rustix::io::Errno::AGAIN) if !nonblocking => {
                            poll::wait_writable_until(write, None)?;
                        }
                        Err(rustix::io::Errno::INTR) => {}
                        other => return Ok(other?),
                    }
                }
            }
        }
    }

    /// Sends all of `bytes` (no descriptors), waiting for room at most
    /// until `deadline`; [`io::ErrorKind::TimedOut`] when it passes.
    pub(crate) fn send_all_until(&self, bytes: &[u8], deadline: Instant) -> io::Result<()> {
        let mut at = 0;
        while at < bytes.len() {
            match self.send(&bytes[at..], &[], true) {
                Ok(n) => at += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !self.wait_writable_until(Some(deadline))? {
                        return Err(io::ErrorKind::TimedOut.into());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Receives bytes into `buf`, appending descriptors that came with them
    /// to `fds`; 0 is end of stream. A non-blocking receive that would
    /// block is [`io::ErrorKind::WouldBlock`].
    pub(crate) fn recv(
        &self,
        buf: &mut [u8],
        fds: &mut VecDeque<OwnedFd>,
        nonblocking: bool,
    ) -> io::Result<usize> {
        match self {
            Transport::Socket(socket) => {
                fdpass::recv_with_fds(socket.as_fd(), buf, fds, nonblocking)
            }
            Transport::Streams { read, .. } => read_stream(read.as_fd(), buf, nonblocking),
        }
    }

    /// [`recv`](Transport::recv), also saying which process sent the bytes
    /// where the kernel tells (a socket with
    /// [`pass_credentials`](Transport::pass_credentials) on); `None`
    /// otherwise.
    pub(crate) fn recv_from(
        &self,
        buf: &mut [u8],
        fds: &mut VecDeque<OwnedFd>,
        nonblocking: bool,
        sender: &mut Option<u32>,
    ) -> io::Result<usize> {
        match self {
            Transport::Socket(socket) => {
                fdpass::recv_with_fds_from(socket.as_fd(), buf, fds, nonblocking, sender)
            }
            Transport::Streams { read, .. } => {
                *sender = None;
                read_stream(read.as_fd(), buf, nonblocking)
            }
        }
    }

    /// [`recv`](Transport::recv) that tries without blocking first and
    /// otherwise waits in `poll` (see [`crate::sys::poll`] for why), calling
    /// `before_wait` once before the first wait; gives up at `deadline`
    /// with [`io::ErrorKind::TimedOut`].
    pub(crate) fn recv_waiting(
        &self,
        buf: &mut [u8],
        fds: &mut VecDeque<OwnedFd>,
        deadline: Option<Instant>,
        before_wait: &mut dyn FnMut(),
    ) -> io::Result<usize> {
        poll::read_when_readable_until(self.read_fd(), deadline, before_wait, || {
            self.recv(buf, fds, true)
        })
    }

    /// [`recv_waiting`](Transport::recv_waiting) with the sender's pid (see
    /// [`recv_from`](Transport::recv_from)).
    pub(crate) fn recv_from_waiting(
        &self,
        buf: &mut [u8],
        fds: &mut VecDeque<OwnedFd>,
        sender: &mut Option<u32>,
        deadline: Option<Instant>,
    ) -> io::Result<usize> {
        poll::read_when_readable_until(
            self.read_fd(),
            deadline,
            || {},
            || self.recv_from(buf, fds, true, sender),
        )
    }

    /// [`recv_waiting`](Transport::recv_waiting) for bytes only: a
    /// descriptor that arrives is closed (a plain `recv` on a socket).
    pub(crate) fn recv_bytes_waiting(
        &self,
        buf: &mut [u8],
        deadline: Option<Instant>,
    ) -> io::Result<usize> {
        poll::read_when_readable_until(self.read_fd(), deadline, || {}, || self.recv_bytes(buf))
    }

    /// One non-blocking receive of bytes only (see
    /// [`recv_bytes_waiting`](Transport::recv_bytes_waiting)).
    pub(crate) fn recv_bytes(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Socket(socket) => {
                let flags = rustix::net::RecvFlags::DONTWAIT;
                Ok(rustix::net::recv(socket, buf, flags)?.0)
            }
            Transport::Streams { read, .. } => read_stream(read.as_fd(), buf, true),
        }
    }

    /// [`peek`](Transport::peek), waiting in `poll` until something is
    /// there; `before_wait` runs once before the first wait.
    pub(crate) fn peek_waiting(
        &self,
        buf: &mut [u8],
        before_wait: &mut dyn FnMut(),
    ) -> Option<io::Result<usize>> {
        match self {
            Transport::Socket(_) => Some(poll::read_when_readable(
                self.read_fd(),
                before_wait,
                || self.peek(buf).unwrap_or(Ok(0)),
            )),
            Transport::Streams { .. } => None,
        }
    }

    /// Copies what is waiting into `buf` without taking it, without
    /// blocking (0: end of stream); `None` on a transport that cannot peek.
    pub(crate) fn peek(&self, buf: &mut [u8]) -> Option<io::Result<usize>> {
        match self {
            Transport::Socket(socket) => {
                use rustix::net::RecvFlags;
                let flags = RecvFlags::PEEK | RecvFlags::DONTWAIT;
                Some(
                    rustix::net::recv(socket, buf, flags)
                        .map(|(n, _)| n)
                        .map_err(io::Error::from),
                )
            }
            Transport::Streams { .. } => None,
        }
    }

    /// Asks the kernel to say who sends each message from now on (a socket
    /// only; a pair of streams never knows).
    pub(crate) fn pass_credentials(&self) -> io::Result<()> {
        match self {
            Transport::Socket(socket) => fdpass::pass_credentials(socket.as_fd()),
            Transport::Streams { .. } => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "a pair of byte streams does not say who sent its bytes",
            )),
        }
    }

    /// Whether something (bytes or end of stream) is waiting to be read,
    /// without waiting.
    pub(crate) fn is_readable_now(&self) -> bool {
        matches!(
            poll::wait_readable(self.read_fd(), Some(Duration::ZERO)),
            Ok(true)
        )
    }

    /// Waits until more can be written or `deadline` passes; false on
    /// timeout.
    pub(crate) fn wait_writable_until(&self, deadline: Option<Instant>) -> io::Result<bool> {
        poll::wait_writable_until(self.write_fd(), deadline)
    }

    /// Ends the writing direction: the peer reads end-of-stream after what
    /// was sent. The reading direction stays open. On a pair of streams
    /// this copy's write end is pointed at `/dev/null` (the number stays
    /// valid); the peer sees the end once every copy has shut down.
    pub(crate) fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Transport::Socket(socket) => {
                Ok(rustix::net::shutdown(socket, rustix::net::Shutdown::Write)?)
            }
            Transport::Streams { write, .. } => fds::replace_with_null(write.as_fd()),
        }
    }

    /// Ends both directions without closing the descriptors (on a pair of
    /// streams: the writing direction; the reader sees the peer's end).
    pub(crate) fn shutdown_both(&self) {
        match self {
            Transport::Socket(socket) => {
                let _ = rustix::net::shutdown(socket, rustix::net::Shutdown::Both);
            }
            Transport::Streams { .. } => {
                let _ = self.shutdown_write();
            }
        }
    }

    /// Makes blocking operations on the descriptors block again (a socket
    /// handed to a function that expects a blocking stream).
    pub(crate) fn set_blocking(&self) -> io::Result<()> {
        match self {
            Transport::Socket(socket) => Ok(rustix::io::ioctl_fionbio(socket, false)?),
            // Streams stay non-blocking: their operations wait in `poll`.
            Transport::Streams { .. } => Ok(()),
        }
    }

    /// Another transport on the same descriptors (for a reader and a writer
    /// that hold them independently).
    pub(crate) fn try_clone(&self) -> io::Result<Transport> {
        Ok(match self {
            Transport::Socket(socket) => Transport::Socket(socket.try_clone()?),
            Transport::Streams { read, write } => Transport::Streams {
                read: read.clone(),
                write: write.clone(),
            },
        })
    }

    /// The socket, if this is one.
    pub(crate) fn into_socket(self) -> Result<OwnedFd, Transport> {
        match self {
            Transport::Socket(socket) => Ok(socket),
            other => Err(other),
        }
    }
}

/// What a [`Transport::wait_ready`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Ready {
    /// Bytes, end of stream or an error wait to be read.
    pub(crate) readable: bool,
    /// More can be written (or writing fails at once).
    pub(crate) writable: bool,
}

impl Transport {
    /// Waits until the transport is readable or, with `want_write`,
    /// writable, or `deadline` passes (nothing ready) or a signal
    /// interrupts the wait (nothing ready: callers look again).
    pub(crate) fn wait_ready(
        &self,
        want_write: bool,
        deadline: Option<Instant>,
    ) -> io::Result<Ready> {
        use rustix::event::{PollFd, PollFlags};
        let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let timeout = timeout.and_then(|t| rustix::fs::Timespec::try_from(t).ok());
        let done = PollFlags::ERR | PollFlags::HUP;
        let out = if want_write {
            PollFlags::OUT
        } else {
            PollFlags::empty()
        };
        let (read, write) = (self.read_fd(), self.write_fd());
        let mut both = [
            PollFd::new(&read, PollFlags::IN | out),
            PollFd::new(&write, out),
        ];
        let fds = if self.carries_fds() || !want_write {
            &mut both[..1]
        } else {
            both[0] = PollFd::new(&read, PollFlags::IN);
            &mut both[..]
        };
        match rustix::event::poll(fds, timeout.as_ref()) {
            Ok(0) | Err(rustix::io::Errno::INTR) => return Ok(Ready::default()),
            Ok(_) => {}
            Err(e) => return Err(e.into()),
        }
        let first = fds[0].revents();
        let last = fds[fds.len() - 1].revents();
        Ok(Ready {
            readable: first.intersects(PollFlags::IN | done),
            writable: want_write && last.intersects(PollFlags::OUT | done),
        })
    }
}

/// A descriptor tokio watches for a transport: a duplicate of a socket, or
/// one of a pair of streams' shared descriptors (never a duplicate of
/// those: it would keep a pipe open after the transport shut it).
#[cfg(feature = "tokio")]
#[derive(Debug)]
pub(crate) enum Watched {
    Own(OwnedFd),
    Shared(Arc<OwnedFd>),
}

#[cfg(feature = "tokio")]
impl AsFd for Watched {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Watched::Own(fd) => fd.as_fd(),
            Watched::Shared(fd) => fd.as_fd(),
        }
    }
}

#[cfg(feature = "tokio")]
impl AsRawFd for Watched {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Watched::Own(fd) => fd.as_raw_fd(),
            Watched::Shared(fd) => fd.as_raw_fd(),
        }
    }
}

/// Waiting for a transport's readiness in tokio: on a duplicate of a
/// socket, or on a pair of streams' two descriptors, made non-blocking;
/// the reads and writes themselves go through the transport.
#[cfg(feature = "tokio")]
#[derive(Debug, Clone)]
pub(crate) struct AsyncReadiness {
    read: Arc<tokio::io::unix::AsyncFd<Watched>>,
    write: Arc<tokio::io::unix::AsyncFd<Watched>>,
}

#[cfg(feature = "tokio")]
impl AsyncReadiness {
    /// Registers `transport`'s descriptors with the current runtime.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime with I/O enabled.
    pub(crate) fn new(transport: &Transport) -> io::Result<AsyncReadiness> {
        use tokio::io::Interest;
        use tokio::io::unix::AsyncFd;
        let watch = |fd: Watched, interest| {
            rustix::io::ioctl_fionbio(&fd, true)?;
            // SAFETY: the AsyncFd holds `fd` (a duplicate made for it, or a
            // share of a descriptor that stays open while any share does)
            // until it is dropped; nothing closes that number meanwhile (a
            // pair of streams' shutdown points it at /dev/null, keeping the
            // number open).
            unsafe { AsyncFd::register_with_interest(fd, interest) }
                .map(Arc::new)
                .map_err(io::Error::from)
        };
        match transport {
            Transport::Socket(socket) => {
                let both = watch(
                    Watched::Own(socket.try_clone()?),
                    Interest::READABLE | Interest::WRITABLE,
                )?;
                Ok(AsyncReadiness {
                    read: both.clone(),
                    write: both,
                })
            }
            Transport::Streams { read, write } => Ok(AsyncReadiness {
                read: watch(Watched::Shared(read.clone()), Interest::READABLE)?,
                write: watch(Watched::Shared(write.clone()), Interest::WRITABLE)?,
            }),
        }
    }

    /// Waits until the transport may be readable; clear the guard when a
    /// read finds nothing.
    pub(crate) async fn readable(
        &self,
    ) -> io::Result<tokio::io::unix::AsyncFdReadyGuard<'_, Watched>> {
        self.read.readable().await
    }

    /// Waits until the transport may be writable; clear the guard when a
    /// write would block.
    pub(crate) async fn writable(
        &self,
    ) -> io::Result<tokio::io::unix::AsyncFdReadyGuard<'_, Watched>> {
        self.write.writable().await
    }
}

/// One `read` from a non-blocking stream, waiting in `poll` unless
/// `nonblocking`; interrupted reads are tried again.
fn read_stream(read: BorrowedFd<'_>, buf: &mut [u8], nonblocking: bool) -> io::Result<usize> {
    loop {
        match rustix::io::read(read, &mut *buf) {
            Err(rustix::io::Errno::AGAIN) if !nonblocking => {
                poll::wait_readable(read, None)?;
            }
            Err(rustix::io::Errno::INTR) => {}
            other => return Ok(other?),
        }
    }
}

/// A connected pair of unix stream sockets, close-on-exec.
pub(crate) fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    Ok(rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

/// A pipe, close-on-exec: (read end, write end).
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
}

/// True for errors meaning the other end has gone.
pub(crate) fn is_peer_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset | io::ErrorKind::NotConnected
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream_pair() -> (Transport, Transport) {
        let (a_read, b_write) = pipe().unwrap();
        let (b_read, a_write) = pipe().unwrap();
        (
            Transport::streams(a_read, a_write).unwrap(),
            Transport::streams(b_read, b_write).unwrap(),
        )
    }

    #[test]
    fn streams_carry_bytes_both_ways_and_end() {
        let (a, b) = stream_pair();
        let mut fds = VecDeque::new();
        let mut buf = [0u8; 8];
        assert_eq!(
            a.recv(&mut buf, &mut fds, true).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        assert_eq!(b.send(b"ping", &[], false).unwrap(), 4);
        assert_eq!(a.recv(&mut buf, &mut fds, false).unwrap(), 4);
        assert_eq!(&buf[..4], b"ping");
        b.shutdown_write().unwrap();
        assert!(a.is_readable_now());
        assert_eq!(a.recv(&mut buf, &mut fds, false).unwrap(), 0);
    }

    #[test]
    fn streams_refuse_descriptors_before_writing() {
        let (a, b) = stream_pair();
        let (x, _y) = socketpair().unwrap();
        let error = b.send(b"!", &[x.as_fd()], false).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::Unsupported);
        assert!(error.to_string().contains("cannot carry file descriptors"));
        assert!(!a.is_readable_now(), "nothing was written");
        assert!(!a.carries_fds());
        assert!(a.peek(&mut [0u8; 1]).is_none());
        assert!(b.pass_credentials().is_err());
    }

    #[test]
    fn a_socket_carries_descriptors() {
        let (a, b) = socketpair().unwrap();
        let (a, b) = (Transport::Socket(a), Transport::Socket(b));
        let (x, _y) = socketpair().unwrap();
        b.send(b"!", &[x.as_fd()], false).unwrap();
        let mut peeked = [0u8; 4];
        assert_eq!(a.peek(&mut peeked).unwrap().unwrap(), 1);
        let mut fds = VecDeque::new();
        assert_eq!(a.recv(&mut [0u8; 4], &mut fds, false).unwrap(), 1);
        assert_eq!(fds.len(), 1);
    }
}
