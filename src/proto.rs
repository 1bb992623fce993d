//! The command protocol between a parent and a serving process.
//!
//! Every process anyfork creates starts by *serving*: it reads commands from
//! its control socket (a unix stream socket whose other end the parent holds)
//! and carries them out, until a `run` command hands the socket over to a user
//! function. This module owns the bytes on that socket.
//!
//! # Frames
//!
//! Both directions use the same frame:
//!
//! ```text
//!  0        1                 5
//! +--------+-----------------+---------------------------+
//! |  tag   | length (u32 BE) | payload (length bytes)    |
//! +--------+-----------------+---------------------------+
//! ```
//!
//! Parent → serving process:
//!
//! | tag | command      | payload                                                      |
//! |-----|--------------|--------------------------------------------------------------|
//! | `a` | send_arg     | the bytes                                                    |
//! | `h` | send_fh      | one marker byte `!`; the descriptor is attached (SCM_RIGHTS) |
//! | `e` | eval         | target: u32 len + target; count: u32; each arg: u32 len + bytes |
//! | `r` | require      | the library path                                             |
//! | `f` | fork         | one marker byte `!`; the new process's socket is attached    |
//! | `l` | limit        | u64: the largest frame the process accepts from now on       |
//! | `x` | run          | target (below); answered by `S`, then the socket is the function's |
//! | `i` | sync         | empty; answered by `I` once every earlier command was carried out |
//! | `c` | current dir  | the directory the function runs in (applied just before `run` calls it) |
//! | `v` | environment  | count: u32; each `NAME=value`: u32 len + bytes; replaces the environment just before `run` calls the function |
//! | `k` | parent death | u32: die when this pid stops being the parent (0: the parent now; `u32::MAX`: never), from `run` on |
//!
//! A target (what `eval` and `run` call) is either `0` followed by the
//! function's registered name, or `1`, a u64 offset of the function's
//! trampoline in the executable, four u64 identifying the executable file,
//! then the function's type name (for error messages).
//!
//! Serving process → parent:
//!
//! | tag | reply   | payload                                    |
//! |-----|---------|--------------------------------------------|
//! | `P` | pid     | u32 pid                                    |
//! | `S` | started | u32 pid: the function is about to be called; every later byte is the function's |
//! | `I` | in sync | u32 pid: the answer to `i`                 |
//! | `E` | error   | u8 [`ChildErrorKind`], then a UTF-8 message; the process exits |
//!
//! `P` is always a process's first frame (`S` repeats the pid for a parent
//! that received the process with `new_from_fh`, after `P` was read). It is sent unasked, before the
//! process first waits for a command, runs an initialiser, loads a library,
//! forks, replies or exits — in the common case in the same `send` as `S`,
//! so it costs no extra wake-up. The parent thus learns the pid of every
//! process it must reap, even of one that fails before it runs anything.
//! (The only frame that does not follow `P` is a template's `E` written into
//! the socket of a process it could not fork: there is no process.)
//!
//! # Descriptors
//!
//! A descriptor travels with the bytes of the frame that names it, as in
//! IO::FDPass: the sender attaches a batch of descriptors (at most 32) to
//! one `sendmsg` whose bytes contain their marker bytes, and the reader keeps
//! received descriptors in arrival order and takes one for each `h` or `f`
//! frame it parses. A marker frame whose descriptor has not arrived is an
//! error ([`ProtocolError::MissingFd`]), never a hang.
//!
//! # Never reading past `run`
//!
//! The parent may queue its own data right behind the run command (an RPC
//! client does). A serving process therefore never consumes a byte past the
//! `run` frame: it *peeks* at what is waiting (a peek without room for
//! control messages installs no descriptors), finds the complete frames in
//! it, stopping after `run`, and takes exactly those bytes, with their
//! descriptors, in one `recvmsg`. A frame too large to peek at is read on
//! its own, header then payload. When the `run` frame has been read, every
//! later byte is still in the socket for the function.
//!
//! Likewise a parent never reads past `S`: it asks for at most the bytes of
//! the `P` and `S` frames it still expects.
//!
//! # Bounds
//!
//! A length prefix is checked against the receiver's limit before anything is
//! allocated, and a payload buffer grows only as data arrives, so a huge
//! prefix followed by nothing costs nothing. Errors name the frame's tag.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Instant;

use crate::sys::fdpass::{self, MAX_FDS_PER_SEND};
use crate::sys::poll;

/// The environment variable that starts serve mode; its value is
/// `FD:VERSION`.
pub(crate) const SERVE_MARKER: &str = "ANYFORK_SERVE";

/// The protocol version carried in the serve marker.
pub(crate) const PROTOCOL_VERSION: u32 = 1;

/// Length of a frame header: tag and u32 length.
pub(crate) const HEADER_LEN: usize = 5;

/// The byte that carries a descriptor.
pub(crate) const FD_MARKER: u8 = b'!';

/// The largest frame a serving process accepts unless told otherwise: 1 GiB.
pub const DEFAULT_MAX_FRAME_LEN: u64 = 1 << 30;

/// The largest reply frame a parent accepts (pid or error message).
pub(crate) const MAX_REPLY_LEN: u64 = 64 * 1024;

/// Frame tags.
pub(crate) mod tag {
    pub(crate) const ARG: u8 = b'a';
    pub(crate) const FD: u8 = b'h';
    pub(crate) const EVAL: u8 = b'e';
    pub(crate) const REQUIRE: u8 = b'r';
    pub(crate) const FORK: u8 = b'f';
    pub(crate) const LIMIT: u8 = b'l';
    pub(crate) const RUN: u8 = b'x';
    pub(crate) const SYNC: u8 = b'i';
    pub(crate) const PARENT_DEATH: u8 = b'k';
    pub(crate) const CHDIR: u8 = b'c';
    pub(crate) const ENVIRONMENT: u8 = b'v';
    pub(crate) const PID_REPLY: u8 = b'P';
    pub(crate) const IN_SYNC: u8 = b'I';
    pub(crate) const STARTED: u8 = b'S';
    pub(crate) const ERROR: u8 = b'E';
}

/// A frame tag, printed the way the protocol tables write it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Tag(pub u8);

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_ascii_graphic() {
            write!(f, "'{}'", self.0 as char)
        } else {
            write!(f, "0x{:02x}", self.0)
        }
    }
}

/// What was wrong with the bytes on a control socket.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The stream ended inside a frame.
    #[error("truncated frame {tag}: expected {expected} bytes, the stream ended after {got}")]
    Truncated {
        /// The frame's tag (0 if the header itself was cut short).
        tag: Tag,
        /// Bytes the frame needed.
        expected: u64,
        /// Bytes that arrived.
        got: u64,
    },
    /// A length prefix exceeds the receiver's limit.
    #[error("frame {tag} announces {len} bytes, more than the limit of {limit}")]
    TooLong {
        /// The frame's tag.
        tag: Tag,
        /// The announced length.
        len: u64,
        /// The receiver's limit.
        limit: u64,
    },
    /// The tag is not one this side understands.
    #[error("unknown frame tag {0}")]
    UnknownTag(Tag),
    /// A descriptor frame arrived without its descriptor.
    #[error("frame {tag} should carry a file descriptor, but none arrived with it")]
    MissingFd {
        /// The frame's tag.
        tag: Tag,
    },
    /// A descriptor arrived where none was announced.
    #[error("a file descriptor arrived that no frame announced")]
    UnexpectedFd,
    /// A process this program did not make claimed a pid that is not its
    /// own (or the kernel could not confirm it).
    #[error("the process claims to be process {claimed}, but the kernel says the sender is {}", match sender { Some(pid) => format!("process {pid}"), None => "unknown".to_owned() })]
    WrongPid {
        /// The pid it claimed.
        claimed: u32,
        /// The sender's pid, as the kernel says (`SCM_CREDENTIALS`).
        sender: Option<u32>,
    },
    /// A payload did not have the documented layout.
    #[error("malformed frame {tag}: {what}")]
    Malformed {
        /// The frame's tag.
        tag: Tag,
        /// What was wrong.
        what: &'static str,
    },
}

/// Why a serving process refused a command, as sent in an `E` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChildErrorKind {
    /// `run` or `eval` named a function the process does not have.
    UnknownFunction,
    /// An initialiser given to `eval` failed or panicked.
    InitialiserFailed,
    /// `require` could not load a library.
    RequireFailed,
    /// The command stream was malformed.
    Protocol,
    /// A template could not fork.
    ForkFailed,
    /// A function value was sent to a process running another executable.
    WrongExecutable,
    /// A template refused to fork because an initialiser or library started
    /// threads in it.
    Threaded,
    /// Anything else (the message says what).
    Other,
}

impl ChildErrorKind {
    pub(crate) fn code(self) -> u8 {
        match self {
            Self::UnknownFunction => 1,
            Self::InitialiserFailed => 2,
            Self::RequireFailed => 3,
            Self::Protocol => 4,
            Self::ForkFailed => 5,
            Self::WrongExecutable => 6,
            Self::Other => 7,
            Self::Threaded => 8,
        }
    }

    pub(crate) fn from_code(code: u8) -> Self {
        match code {
            1 => Self::UnknownFunction,
            2 => Self::InitialiserFailed,
            3 => Self::RequireFailed,
            4 => Self::Protocol,
            5 => Self::ForkFailed,
            6 => Self::WrongExecutable,
            8 => Self::Threaded,
            _ => Self::Other,
        }
    }
}

impl fmt::Display for ChildErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::UnknownFunction => "unknown function",
            Self::InitialiserFailed => "initialiser failed",
            Self::RequireFailed => "library could not be loaded",
            Self::Protocol => "protocol error",
            Self::ForkFailed => "fork failed",
            Self::WrongExecutable => "different executable",
            Self::Threaded => "template has threads",
            Self::Other => "error",
        })
    }
}

/// What `run` should call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// A function registered under this name.
    Name(String),
    /// A trampoline at this offset in the executable identified by `exe`.
    Offset {
        offset: u64,
        exe: [u64; 4],
        label: String,
    },
}

impl Target {
    /// How the target is named in messages.
    pub(crate) fn label(&self) -> &str {
        match self {
            Self::Name(name) => name,
            Self::Offset { label, .. } => label,
        }
    }
}

/// One decoded command, as the serving process sees it.
#[derive(Debug)]
pub(crate) enum Command {
    Arg(Vec<u8>),
    Fd(OwnedFd),
    Eval {
        target: Target,
        args: Vec<Vec<u8>>,
    },
    Require(Vec<u8>),
    Fork(OwnedFd),
    Limit(u64),
    Sync,
    /// `Some(None)`: the parent at that moment; `None`: off.
    ParentDeath(Option<Option<u32>>),
    Chdir(Vec<u8>),
    Environment(Vec<Vec<u8>>),
    Run(Target),
}

/// One decoded reply, as the parent sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    Pid(u32),
    Started(u32),
    InSync(u32),
    Error {
        kind: ChildErrorKind,
        message: String,
    },
}

// ---------------------------------------------------------------------------
// Encoding (parent side)

/// Commands queued by a parent, with their descriptors, until they are sent
/// in as few `sendmsg` calls as possible.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    data: Vec<u8>,
    /// Descriptors not yet sent, each with the offset just past its marker.
    fds: VecDeque<(usize, OwnedFd)>,
    /// Bytes of `data` already sent.
    sent: usize,
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_len(out: &mut Vec<u8>, len: usize) -> Result<(), ProtocolError> {
    let len = u32::try_from(len).map_err(|_| ProtocolError::TooLong {
        tag: Tag(0),
        len: len as u64,
        limit: u32::MAX as u64,
    })?;
    put_u32(out, len);
    Ok(())
}

pub(crate) fn encode_target(target: &Target) -> Vec<u8> {
    let mut out = Vec::new();
    match target {
        Target::Name(name) => {
            out.push(0);
            out.extend_from_slice(name.as_bytes());
        }
        Target::Offset { offset, exe, label } => {
            out.push(1);
            out.extend_from_slice(&offset.to_be_bytes());
            for part in exe {
                out.extend_from_slice(&part.to_be_bytes());
            }
            out.extend_from_slice(label.as_bytes());
        }
    }
    out
}

pub(crate) fn decode_target(tag: u8, bytes: &[u8]) -> Result<Target, ProtocolError> {
    let mut c = Cursor { tag, rest: bytes };
    match c.take(1, "missing target kind")?[0] {
        0 => {
            let n = c.rest.len();
            Ok(Target::Name(c.string(n, "function name is not UTF-8")?))
        }
        1 => {
            let offset = c.u64("missing function offset")?;
            let mut exe = [0u64; 4];
            for part in &mut exe {
                *part = c.u64("missing executable identity")?;
            }
            let n = c.rest.len();
            let label = c.string(n, "function type name is not UTF-8")?;
            Ok(Target::Offset { offset, exe, label })
        }
        _ => Err(ProtocolError::Malformed {
            tag: Tag(tag),
            what: "unknown target kind",
        }),
    }
}

impl Outbox {
    /// True when nothing is waiting to be sent.
    pub(crate) fn is_empty(&self) -> bool {
        self.sent == self.data.len() && self.fds.is_empty()
    }

    fn frame(&mut self, tag: u8, payload: &[u8]) -> Result<(), ProtocolError> {
        let len = u32::try_from(payload.len()).map_err(|_| ProtocolError::TooLong {
            tag: Tag(tag),
            len: payload.len() as u64,
            limit: u32::MAX as u64,
        })?;
        self.data.push(tag);
        put_u32(&mut self.data, len);
        self.data.extend_from_slice(payload);
        Ok(())
    }

    fn fd_frame(&mut self, tag: u8, fd: OwnedFd) {
        self.data.push(tag);
        put_u32(&mut self.data, 1);
        self.data.push(FD_MARKER);
        self.fds.push_back((self.data.len(), fd));
    }

    pub(crate) fn arg(&mut self, bytes: &[u8]) -> Result<(), ProtocolError> {
        self.frame(tag::ARG, bytes)
    }

    pub(crate) fn fd(&mut self, fd: OwnedFd) {
        self.fd_frame(tag::FD, fd);
    }

    pub(crate) fn fork(&mut self, socket: OwnedFd) {
        self.fd_frame(tag::FORK, socket);
    }

    pub(crate) fn eval(&mut self, target: &Target, args: &[&[u8]]) -> Result<(), ProtocolError> {
        let mut payload = Vec::new();
        let target = encode_target(target);
        put_len(&mut payload, target.len())?;
        payload.extend_from_slice(&target);
        put_len(&mut payload, args.len())?;
        for arg in args {
            put_len(&mut payload, arg.len())?;
            payload.extend_from_slice(arg);
        }
        self.frame(tag::EVAL, &payload)
    }

    pub(crate) fn require(&mut self, path: &[u8]) -> Result<(), ProtocolError> {
        self.frame(tag::REQUIRE, path)
    }

    pub(crate) fn limit(&mut self, limit: u64) {
        self.data.push(tag::LIMIT);
        put_u32(&mut self.data, 8);
        self.data.extend_from_slice(&limit.to_be_bytes());
    }

    pub(crate) fn run(&mut self, target: &Target) -> Result<(), ProtocolError> {
        self.frame(tag::RUN, &encode_target(target))
    }

    pub(crate) fn sync(&mut self) {
        self.data.push(tag::SYNC);
        put_u32(&mut self.data, 0);
    }

    pub(crate) fn chdir(&mut self, dir: &[u8]) -> Result<(), ProtocolError> {
        self.frame(tag::CHDIR, dir)
    }

    /// Each entry is `NAME=value`.
    pub(crate) fn environment(&mut self, vars: &[Vec<u8>]) -> Result<(), ProtocolError> {
        let mut payload = Vec::new();
        put_len(&mut payload, vars.len())?;
        for var in vars {
            put_len(&mut payload, var.len())?;
            payload.extend_from_slice(var);
        }
        self.frame(tag::ENVIRONMENT, &payload)
    }

    /// `parent`: `Some(pid)` to die when `pid` is no longer the parent,
    /// `Some(0)` for the parent at that moment, `None` to stop.
    pub(crate) fn parent_death(&mut self, parent: Option<u32>) {
        self.data.push(tag::PARENT_DEATH);
        put_u32(&mut self.data, 4);
        put_u32(&mut self.data, parent.unwrap_or(u32::MAX));
    }

    /// Lets `append` add bytes to the queue directly; the descriptors it
    /// returns go with the last of them (RPC frames encoded in place use
    /// this).
    pub(crate) fn append_with<T, E>(
        &mut self,
        append: impl FnOnce(&mut Vec<u8>) -> Result<(T, Vec<OwnedFd>), E>,
    ) -> Result<T, E> {
        let (value, fds) = append(&mut self.data)?;
        let end = self.data.len();
        self.fds.extend(fds.into_iter().map(|fd| (end, fd)));
        Ok(value)
    }

    /// Bytes queued but not yet sent.
    pub(crate) fn unsent(&self) -> usize {
        self.data.len() - self.sent
    }

    /// Appends raw bytes (tests use this to corrupt a stream on purpose).
    #[doc(hidden)]
    pub(crate) fn raw(&mut self, bytes: &[u8]) {
        self.data.extend_from_slice(bytes);
    }

    /// Sends the next part of the queue with one `sendmsg`. Returns `true`
    /// when everything has been sent. A nonblocking send that would block is
    /// `ErrorKind::WouldBlock`.
    pub(crate) fn send_some(
        &mut self,
        socket: BorrowedFd<'_>,
        nonblocking: bool,
    ) -> io::Result<bool> {
        if self.is_empty() {
            self.clear();
            return Ok(true);
        }
        let batch = self.fds.len().min(MAX_FDS_PER_SEND);
        // Send up to the marker of the last descriptor in this batch, or
        // everything when no descriptor follows.
        let end = if self.fds.len() > batch {
            self.fds[batch - 1].0
        } else {
            self.data.len()
        };
        let fds: Vec<BorrowedFd<'_>> = self
            .fds
            .iter()
            .take(batch)
            .map(|(_, fd)| fd.as_fd())
            .collect();
        let sent = fdpass::send_with_fds(socket, &self.data[self.sent..end], &fds, nonblocking)?;
        drop(fds);
        // The descriptors went with the first byte of this send.
        self.fds.drain(..batch);
        self.sent += sent;
        if self.is_empty() {
            self.clear();
            Ok(true)
        } else {
            self.compact();
            Ok(false)
        }
    }

    /// Drops the sent part once it is most of the buffer, so that a queue
    /// that is appended to while it is being sent (pipelined calls) stays
    /// as large as what is unsent, at an amortised cost of one move per
    /// byte.
    fn compact(&mut self) {
        const MIN_COMPACT: usize = 64 * 1024;
        if self.sent < MIN_COMPACT || self.sent * 2 < self.data.len() {
            return;
        }
        self.data.drain(..self.sent);
        for (marker, _) in &mut self.fds {
            *marker -= self.sent;
        }
        self.sent = 0;
    }

    /// Sends everything on a blocking socket.
    #[cfg(test)]
    pub(crate) fn send_all(&mut self, socket: BorrowedFd<'_>) -> io::Result<()> {
        loop {
            match self.send_some(socket, false) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends everything, waiting for room at most until `deadline`
    /// (`ErrorKind::TimedOut`: a peer that does not read, a stopped
    /// process, must not hold the caller forever).
    pub(crate) fn send_all_until(
        &mut self,
        socket: BorrowedFd<'_>,
        deadline: Option<Instant>,
    ) -> io::Result<()> {
        loop {
            match self.send_some(socket, true) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !poll::wait_writable_until(socket, deadline)? {
                        return Err(io::ErrorKind::TimedOut.into());
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn clear(&mut self) {
        self.data.clear();
        self.sent = 0;
    }
}

// ---------------------------------------------------------------------------
// Decoding (both sides)

/// Why reading a frame failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
}

/// A frame as read from the socket.
#[derive(Debug)]
pub(crate) struct Frame {
    pub(crate) tag: u8,
    pub(crate) payload: Vec<u8>,
    pub(crate) fd: Option<OwnedFd>,
}

/// Tags a serving process accepts.
pub(crate) const COMMAND_TAGS: &[u8] = &[
    tag::ARG,
    tag::FD,
    tag::EVAL,
    tag::REQUIRE,
    tag::FORK,
    tag::LIMIT,
    tag::SYNC,
    tag::PARENT_DEATH,
    tag::CHDIR,
    tag::ENVIRONMENT,
    tag::RUN,
];

/// Tags a parent accepts.
pub(crate) const REPLY_TAGS: &[u8] = &[tag::PID_REPLY, tag::STARTED, tag::IN_SYNC, tag::ERROR];

/// Parses a frame header: the tag must be one of `tags` (checked first, so
/// that garbage is reported as such), the length at most `limit`.
pub(crate) fn parse_header(
    header: [u8; HEADER_LEN],
    tags: &[u8],
    limit: u64,
) -> Result<(u8, u64), ProtocolError> {
    let tag = header[0];
    if !tags.contains(&tag) {
        return Err(ProtocolError::UnknownTag(Tag(tag)));
    }
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as u64;
    if len > limit {
        return Err(ProtocolError::TooLong {
            tag: Tag(tag),
            len,
            limit,
        });
    }
    Ok((tag, len))
}

fn carries_fd(tag: u8) -> bool {
    tag == tag::FD || tag == tag::FORK
}

/// How many bytes a serving process looks at at once.
const PEEK_LEN: usize = 8 * 1024;

/// Reads frames from a blocking socket, never past the end of a `run`
/// frame, keeping received descriptors in order (serving-process side).
///
/// It peeks at what is waiting (a peek without room for control messages
/// installs no descriptors), takes every complete frame up to and including
/// a `run` frame with one `recvmsg`, and hands them out one by one: a batch
/// of commands costs two system calls. A frame larger than the peek is read
/// on its own, header then payload, its buffer growing only as data arrives.
#[derive(Debug, Default)]
pub(crate) struct FrameReader {
    fds: VecDeque<OwnedFd>,
    ready: VecDeque<Frame>,
    peeked: Vec<u8>,
}

impl FrameReader {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Descriptors that arrived but whose frames were not handed out yet.
    pub(crate) fn pending_fds(&self) -> usize {
        self.fds.len()
    }

    /// Fills `buf`; returns how many bytes arrived before end of stream.
    fn fill(&mut self, socket: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
        let mut got = 0;
        while got < buf.len() {
            // Waiting in poll, not in recv: see `sys::poll`.
            let n = poll::read_when_readable(
                socket,
                || {},
                || fdpass::recv_with_fds(socket, &mut buf[got..], &mut self.fds, true),
            )?;
            if n == 0 {
                break;
            }
            got += n;
        }
        Ok(got)
    }

    /// Peeks at what is waiting. Tries without blocking first; if nothing is
    /// there, calls `before_wait` and then waits.
    fn peek(&mut self, socket: BorrowedFd<'_>, before_wait: &mut dyn FnMut()) -> io::Result<usize> {
        use rustix::net::RecvFlags;
        if self.peeked.len() < PEEK_LEN {
            self.peeked.resize(PEEK_LEN, 0);
        }
        let peeked = &mut self.peeked;
        // Waiting in poll, not in recv: see `sys::poll`.
        poll::read_when_readable(socket, before_wait, || {
            let flags = RecvFlags::PEEK | RecvFlags::DONTWAIT;
            Ok(rustix::net::recv(socket, &mut peeked[..], flags)?.0)
        })
    }

    /// Reads one frame whose tag is one of `tags` and whose length is at
    /// most `limit`. `before_wait` is called if the reader has to wait for
    /// data. `Ok(None)` is end of stream at a frame boundary.
    pub(crate) fn read_frame(
        &mut self,
        socket: BorrowedFd<'_>,
        tags: &[u8],
        limit: u64,
        before_wait: &mut dyn FnMut(),
    ) -> Result<Option<Frame>, ReadError> {
        if let Some(frame) = self.ready.pop_front() {
            return Ok(Some(frame));
        }
        let available = self.peek(socket, before_wait)?;
        if available == 0 {
            return Ok(None);
        }
        // The complete frames in what is waiting, stopping after `run`.
        let mut end = 0;
        let mut bounds = Vec::new();
        while available - end >= HEADER_LEN {
            let mut header = [0u8; HEADER_LEN];
            header.copy_from_slice(&self.peeked[end..end + HEADER_LEN]);
            let (tag, len) = parse_header(header, tags, limit)?;
            let frame_end = end + HEADER_LEN + len as usize;
            if frame_end > available {
                break;
            }
            bounds.push((tag, end + HEADER_LEN, frame_end));
            end = frame_end;
            if tag == tag::RUN {
                break;
            }
        }
        if bounds.is_empty() {
            return self.read_one(socket, tags, limit);
        }
        let mut batch = vec![0u8; end];
        let got = self.fill(socket, &mut batch)?;
        if got < end {
            // The peeked bytes are gone: someone else reads this socket.
            return Err(ProtocolError::Truncated {
                tag: Tag(batch[0]),
                expected: end as u64,
                got: got as u64,
            }
            .into());
        }
        for (tag, start, stop) in bounds {
            let frame = self.frame(tag, batch[start..stop].to_vec())?;
            self.ready.push_back(frame);
        }
        Ok(self.ready.pop_front())
    }

    /// Attaches the descriptor a frame carries.
    fn frame(&mut self, tag: u8, payload: Vec<u8>) -> Result<Frame, ProtocolError> {
        let fd = if carries_fd(tag) {
            if payload != [FD_MARKER] {
                return Err(ProtocolError::Malformed {
                    tag: Tag(tag),
                    what: "a descriptor frame's payload must be the single marker byte '!'",
                });
            }
            Some(
                self.fds
                    .pop_front()
                    .ok_or(ProtocolError::MissingFd { tag: Tag(tag) })?,
            )
        } else {
            None
        };
        Ok(Frame { tag, payload, fd })
    }

    /// Reads one frame exactly: header, then payload.
    fn read_one(
        &mut self,
        socket: BorrowedFd<'_>,
        tags: &[u8],
        limit: u64,
    ) -> Result<Option<Frame>, ReadError> {
        let mut header = [0u8; HEADER_LEN];
        let got = self.fill(socket, &mut header)?;
        if got == 0 {
            return Ok(None);
        }
        if got < HEADER_LEN {
            return Err(ProtocolError::Truncated {
                tag: Tag(header[0]),
                expected: HEADER_LEN as u64,
                got: got as u64,
            }
            .into());
        }
        let (tag, len) = parse_header(header, tags, limit)?;
        let payload = self.read_payload(socket, tag, len)?;
        Ok(Some(self.frame(tag, payload)?))
    }

    /// Reads `len` payload bytes, growing the buffer only as data arrives.
    fn read_payload(
        &mut self,
        socket: BorrowedFd<'_>,
        tag: u8,
        len: u64,
    ) -> Result<Vec<u8>, ReadError> {
        const FIRST_CHUNK: u64 = 64 * 1024;
        let len_usize = usize::try_from(len).map_err(|_| ProtocolError::TooLong {
            tag: Tag(tag),
            len,
            limit: usize::MAX as u64,
        })?;
        let mut payload = Vec::with_capacity(len.min(FIRST_CHUNK) as usize);
        while payload.len() < len_usize {
            let have = payload.len();
            let want = len_usize
                .min(have.max(FIRST_CHUNK as usize) * 2)
                .max(have + 1);
            payload.resize(want, 0);
            let got = self.fill(socket, &mut payload[have..want])?;
            payload.truncate(have + got);
            if have + got < want {
                return Err(ProtocolError::Truncated {
                    tag: Tag(tag),
                    expected: HEADER_LEN as u64 + len,
                    got: (HEADER_LEN + have + got) as u64,
                }
                .into());
            }
        }
        Ok(payload)
    }
}

/// Takes bytes off the front of a payload.
struct Cursor<'a> {
    tag: u8,
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], ProtocolError> {
        if self.rest.len() < n {
            return Err(ProtocolError::Malformed {
                tag: Tag(self.tag),
                what,
            });
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, ProtocolError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, ProtocolError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    fn string(&mut self, n: usize, what: &'static str) -> Result<String, ProtocolError> {
        String::from_utf8(self.take(n, what)?.to_vec()).map_err(|_| ProtocolError::Malformed {
            tag: Tag(self.tag),
            what,
        })
    }

    fn finish(&self, what: &'static str) -> Result<(), ProtocolError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(ProtocolError::Malformed {
                tag: Tag(self.tag),
                what,
            })
        }
    }
}

/// Decodes a command frame (serving-process side).
pub(crate) fn decode_command(frame: Frame) -> Result<Command, ProtocolError> {
    let Frame { tag, payload, fd } = frame;
    let mut c = Cursor {
        tag,
        rest: &payload,
    };
    let command = match tag {
        tag::ARG => return Ok(Command::Arg(payload)),
        tag::FD => Command::Fd(fd.ok_or(ProtocolError::MissingFd { tag: Tag(tag) })?),
        tag::FORK => Command::Fork(fd.ok_or(ProtocolError::MissingFd { tag: Tag(tag) })?),
        tag::EVAL => {
            let n = c.u32("eval: missing target length")? as usize;
            let target = decode_target(tag, c.take(n, "eval: target is cut short")?)?;
            let count = c.u32("eval: missing argument count")?;
            let mut args = Vec::new();
            for _ in 0..count {
                let n = c.u32("eval: missing argument length")? as usize;
                args.push(c.take(n, "eval: argument is cut short")?.to_vec());
            }
            c.finish("eval: bytes after the last argument")?;
            Command::Eval { target, args }
        }
        tag::REQUIRE => return Ok(Command::Require(payload)),
        tag::LIMIT => {
            let limit = c.u64("limit: payload must be a u64")?;
            c.finish("limit: payload must be a u64")?;
            Command::Limit(limit)
        }
        tag::RUN => Command::Run(decode_target(tag, &payload)?),
        tag::SYNC => {
            c.finish("sync: the payload must be empty")?;
            Command::Sync
        }
        tag::CHDIR => return Ok(Command::Chdir(payload)),
        tag::ENVIRONMENT => {
            let count = c.u32("environment: missing count")?;
            let mut vars = Vec::new();
            for _ in 0..count {
                let n = c.u32("environment: missing length")? as usize;
                let var = c.take(n, "environment: a variable is cut short")?;
                if !var.contains(&b'=') || var.contains(&0) {
                    return Err(ProtocolError::Malformed {
                        tag: Tag(tag),
                        what: "environment: a variable is not NAME=value",
                    });
                }
                vars.push(var.to_vec());
            }
            c.finish("environment: bytes after the last variable")?;
            Command::Environment(vars)
        }
        tag::PARENT_DEATH => {
            let pid = c.u32("parent death: the payload must be a u32 pid")?;
            c.finish("parent death: the payload must be a u32 pid")?;
            Command::ParentDeath(match pid {
                u32::MAX => None,
                0 => Some(None),
                pid => Some(Some(pid)),
            })
        }
        other => return Err(ProtocolError::UnknownTag(Tag(other))),
    };
    Ok(command)
}

/// Encodes a reply frame (serving-process side).
pub(crate) fn encode_reply(reply: &Reply) -> Vec<u8> {
    let (tag, payload) = match reply {
        Reply::Pid(pid) => (tag::PID_REPLY, pid.to_be_bytes().to_vec()),
        Reply::Started(pid) => (tag::STARTED, pid.to_be_bytes().to_vec()),
        Reply::InSync(pid) => (tag::IN_SYNC, pid.to_be_bytes().to_vec()),
        Reply::Error { kind, message } => {
            let mut p = vec![kind.code()];
            // Keep within what the parent accepts, on a character boundary.
            let mut end = message.len().min(MAX_REPLY_LEN as usize - 1);
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            p.extend_from_slice(&message.as_bytes()[..end]);
            (tag::ERROR, p)
        }
    };
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.push(tag);
    put_u32(&mut out, payload.len() as u32);
    out.extend_from_slice(&payload);
    out
}

/// Decodes a reply frame (parent side).
pub(crate) fn decode_reply(tag: u8, payload: &[u8]) -> Result<Reply, ProtocolError> {
    let mut c = Cursor { tag, rest: payload };
    match tag {
        tag::PID_REPLY | tag::STARTED | tag::IN_SYNC => {
            let pid = c.u32("payload must be a u32 pid")?;
            c.finish("payload must be a u32 pid")?;
            Ok(match tag {
                tag::PID_REPLY => Reply::Pid(pid),
                tag::STARTED => Reply::Started(pid),
                _ => Reply::InSync(pid),
            })
        }
        tag::ERROR => {
            let kind = ChildErrorKind::from_code(c.take(1, "error: missing kind")?[0]);
            let message = String::from_utf8_lossy(c.rest).into_owned();
            Ok(Reply::Error { kind, message })
        }
        other => Err(ProtocolError::UnknownTag(Tag(other))),
    }
}

/// Size of a `P` or `S` frame.
pub(crate) const PID_FRAME_LEN: usize = HEADER_LEN + 4;

/// Reply bytes received but not yet taken as frames (parent side).
///
/// A parent must never read past `S`: what follows belongs to the function.
/// So it asks the socket for at most the bytes of the `P` and `S` frames it
/// still expects (its *budget*), and for exactly the rest of a frame it has
/// begun; in the common case `P` and `S` arrive in one `recv`.
#[derive(Debug, Default)]
pub(crate) struct ReplyBuffer {
    bytes: Vec<u8>,
    /// Who sent the buffered bytes, as the kernel vouched (see
    /// [`fdpass::recv_with_fds_from`]); `None` if unknown or if the
    /// buffered bytes came from more than one sender.
    sender: Option<u32>,
    mixed: bool,
    /// Ask the kernel who sent each read (only for processes this program
    /// did not make: `recvmsg` with room for credentials costs a little
    /// more than `recv`).
    ask_senders: bool,
}

impl ReplyBuffer {
    /// How many more bytes the next frame needs: `None` while it is
    /// complete.
    fn missing(&self) -> Result<Option<usize>, ProtocolError> {
        if self.bytes.len() < HEADER_LEN {
            return Ok(Some(HEADER_LEN - self.bytes.len()));
        }
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(&self.bytes[..HEADER_LEN]);
        let (_, len) = parse_header(header, REPLY_TAGS, MAX_REPLY_LEN)?;
        let total = HEADER_LEN + len as usize;
        Ok((self.bytes.len() < total).then(|| total - self.bytes.len()))
    }

    /// A buffer whose reads ask the kernel who sent the bytes.
    pub(crate) fn asking_senders() -> ReplyBuffer {
        ReplyBuffer {
            ask_senders: true,
            ..ReplyBuffer::default()
        }
    }

    /// Takes the next complete frame, if one is buffered.
    pub(crate) fn take(&mut self) -> Result<Option<Reply>, ProtocolError> {
        Ok(self.take_with_sender()?.map(|(reply, _)| reply))
    }

    /// [`take`](Self::take), with the pid the kernel says sent the frame.
    pub(crate) fn take_with_sender(
        &mut self,
    ) -> Result<Option<(Reply, Option<u32>)>, ProtocolError> {
        let sender = if self.mixed { None } else { self.sender };
        Ok(self.take_frame()?.map(|reply| (reply, sender)))
    }

    fn take_frame(&mut self) -> Result<Option<Reply>, ProtocolError> {
        if self.missing()?.is_some() {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.bytes[1], self.bytes[2], self.bytes[3], self.bytes[4]])
            as usize;
        let reply = decode_reply(self.bytes[0], &self.bytes[HEADER_LEN..HEADER_LEN + len]);
        self.bytes.drain(..HEADER_LEN + len);
        reply.map(Some)
    }

    /// How many bytes to ask the socket for next: `budget` at a frame
    /// boundary, else exactly the rest of the frame begun.
    pub(crate) fn wanted(&self, budget: usize) -> Result<usize, ProtocolError> {
        if self.bytes.is_empty() {
            return Ok(budget.max(1));
        }
        Ok(self.missing()?.unwrap_or(0).max(1))
    }

    /// Adds bytes read from the socket.
    pub(crate) fn extend(&mut self, bytes: &[u8]) {
        self.extend_from(bytes, None);
    }

    /// Adds bytes read from the socket, sent by `sender` as far as the
    /// kernel knows.
    pub(crate) fn extend_from(&mut self, bytes: &[u8], sender: Option<u32>) {
        if self.bytes.is_empty() {
            self.sender = sender;
            self.mixed = false;
        } else if self.sender != sender {
            self.mixed = true;
        }
        self.bytes.extend_from_slice(bytes);
    }

    /// The stream ended: fine at a frame boundary, else a truncated frame.
    pub(crate) fn at_end(&self) -> Result<(), ProtocolError> {
        if self.bytes.is_empty() {
            return Ok(());
        }
        let got = self.bytes.len() as u64;
        Err(ProtocolError::Truncated {
            tag: Tag(self.bytes[0]),
            expected: got + self.missing()?.unwrap_or(0) as u64,
            got,
        })
    }

    /// The next reply from a blocking socket, reading at most `budget` bytes
    /// ahead of a frame boundary. `Ok(None)` is end of stream at a frame
    /// boundary.
    pub(crate) fn next_from(
        &mut self,
        socket: BorrowedFd<'_>,
        budget: usize,
    ) -> Result<Option<Reply>, ReadError> {
        Ok(self
            .next_with_sender(socket, budget)?
            .map(|(reply, _)| reply))
    }

    /// [`next_from`](Self::next_from), with the pid the kernel says sent
    /// the frame (known when `SO_PASSCRED` is on: see
    /// [`fdpass::pass_credentials`]).
    pub(crate) fn next_with_sender(
        &mut self,
        socket: BorrowedFd<'_>,
        budget: usize,
    ) -> Result<Option<(Reply, Option<u32>)>, ReadError> {
        self.next_until(socket, budget, None)
    }

    /// [`next_with_sender`](Self::next_with_sender) that gives up at
    /// `deadline` (`ErrorKind::TimedOut`).
    pub(crate) fn next_until(
        &mut self,
        socket: BorrowedFd<'_>,
        budget: usize,
        deadline: Option<Instant>,
    ) -> Result<Option<(Reply, Option<u32>)>, ReadError> {
        loop {
            if let Some(reply) = self.take_with_sender()? {
                return Ok(Some(reply));
            }
            let mut chunk = vec![0u8; self.wanted(budget)?];
            let mut sender = None;
            let ask = self.ask_senders;
            // Waiting in poll, not in recv: see `sys::poll`. Descriptors
            // nobody announced are closed.
            let n = poll::read_when_readable_until(
                socket,
                deadline,
                || {},
                || {
                    if ask {
                        fdpass::recv_with_fds_from(
                            socket,
                            &mut chunk,
                            &mut VecDeque::new(),
                            true,
                            &mut sender,
                        )
                    } else {
                        let flags = rustix::net::RecvFlags::DONTWAIT;
                        Ok(rustix::net::recv(socket, &mut chunk, flags)?.0)
                    }
                },
            )?;
            if n == 0 {
                self.at_end()?;
                return Ok(None);
            }
            self.extend_from(&chunk[..n], sender);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    #[test]
    fn header_limit_is_checked_before_allocation() {
        let err = parse_header([b'a', 0xff, 0xff, 0xff, 0xff], COMMAND_TAGS, 1024).unwrap_err();
        assert_eq!(
            err,
            ProtocolError::TooLong {
                tag: Tag(b'a'),
                len: u32::MAX as u64,
                limit: 1024
            }
        );
    }

    #[test]
    fn commands_round_trip_with_fds_in_order() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut out = Outbox::default();
        out.arg(b"one").unwrap();
        let (p1, _p1b) = UnixStream::pair().unwrap();
        out.fd(p1.into());
        out.eval(&Target::Name("init".into()), &[b"x", b""])
            .unwrap();
        out.limit(99);
        out.run(&Target::Name("m::f".into())).unwrap();
        out.send_all(a.as_fd()).unwrap();
        let mut reader = FrameReader::new();
        let mut seen = Vec::new();
        for _ in 0..5 {
            let frame = reader
                .read_frame(b.as_fd(), COMMAND_TAGS, 1 << 20, &mut || {})
                .unwrap()
                .unwrap();
            seen.push(decode_command(frame).unwrap());
        }
        assert!(matches!(&seen[0], Command::Arg(v) if v == b"one"));
        assert!(matches!(&seen[1], Command::Fd(_)));
        assert!(
            matches!(&seen[2], Command::Eval { target: Target::Name(n), args } if n == "init" && args == &[b"x".to_vec(), vec![]])
        );
        assert!(matches!(&seen[3], Command::Limit(99)));
        assert!(matches!(&seen[4], Command::Run(Target::Name(n)) if n == "m::f"));
    }

    #[test]
    fn a_queue_sent_while_it_grows_stays_as_large_as_its_unsent_part() {
        use std::io::Read;
        let (a, mut b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let mut out = Outbox::default();
        let mut expected = Vec::new();
        let mut received = Vec::new();
        let mut fds_received = 0;
        let mut chunk = vec![0u8; 100_000];
        for i in 0..200u32 {
            chunk.fill(i as u8);
            // A descriptor with every tenth chunk, which must arrive no
            // later than the chunk's last byte.
            let fds: Vec<OwnedFd> = if i % 10 == 0 {
                vec![UnixStream::pair().unwrap().0.into()]
            } else {
                Vec::new()
            };
            out.append_with(|data| {
                data.extend_from_slice(&chunk);
                Ok::<_, ()>(((), fds))
            })
            .unwrap();
            expected.extend_from_slice(&chunk);
            loop {
                match out.send_some(a.as_fd(), true) {
                    Ok(true) => break,
                    Ok(false) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("{e}"),
                }
            }
            assert!(
                out.data.len() <= 2 * out.unsent() + 200_000,
                "queue of {} bytes for {} unsent",
                out.data.len(),
                out.unsent()
            );
            // The reader takes less than is written, so the queue stays
            // busy.
            let mut buf = vec![0u8; 60_000];
            let mut fds = std::collections::VecDeque::new();
            let n =
                crate::sys::fdpass::recv_with_fds(b.as_fd(), &mut buf, &mut fds, false).unwrap();
            received.extend_from_slice(&buf[..n]);
            fds_received += fds.len();
        }
        a.set_nonblocking(false).unwrap();
        let sender = std::thread::spawn(move || {
            out.send_all(a.as_fd()).unwrap();
        });
        let mut fds = std::collections::VecDeque::new();
        loop {
            let mut buf = vec![0u8; 1 << 20];
            let n =
                crate::sys::fdpass::recv_with_fds(b.as_fd(), &mut buf, &mut fds, false).unwrap();
            received.extend_from_slice(&buf[..n]);
            if received.len() == expected.len() {
                break;
            }
        }
        sender.join().unwrap();
        fds_received += fds.len();
        assert!(received == expected, "the bytes arrived changed");
        assert_eq!(fds_received, 20);
        let mut rest = Vec::new();
        b.set_nonblocking(true).unwrap();
        let _ = b.read_to_end(&mut rest);
        assert!(rest.is_empty());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// A command stream arriving in arbitrary pieces (a pause after
        /// each, so that the reader mostly sees them one by one) reads back
        /// as it was sent, and the reader stops at `run`.
        #[test]
        fn commands_round_trip_under_any_split(
            args in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300), 0..8),
            cuts in proptest::collection::vec(0usize..3000, 0..12),
        ) {
            let mut out = Outbox::default();
            for arg in &args {
                out.arg(arg).unwrap();
            }
            out.limit(77);
            out.run(&Target::Name("m::f".into())).unwrap();
            let bytes = out.data.clone();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.push(0);
            cuts.push(bytes.len());
            cuts.sort();
            cuts.dedup();
            let pieces: Vec<Vec<u8>> = cuts.windows(2).map(|w| bytes[w[0]..w[1]].to_vec()).collect();
            let (mut a, b) = UnixStream::pair().unwrap();
            let writer = std::thread::spawn(move || {
                for piece in pieces {
                    a.write_all(&piece).unwrap();
                    std::thread::sleep(std::time::Duration::from_micros(300));
                }
            });
            let mut reader = FrameReader::new();
            let mut seen = Vec::new();
            let mut limit = None;
            loop {
                let frame = reader
                    .read_frame(b.as_fd(), COMMAND_TAGS, 1 << 20, &mut || {})
                    .unwrap()
                    .expect("the stream ended before run");
                match decode_command(frame).unwrap() {
                    Command::Arg(arg) => seen.push(arg),
                    Command::Limit(l) => limit = Some(l),
                    Command::Run(Target::Name(name)) => {
                        proptest::prop_assert_eq!(name, "m::f");
                        break;
                    }
                    _ => proptest::prop_assert!(false, "an unexpected command"),
                }
            }
            writer.join().unwrap();
            proptest::prop_assert_eq!(seen, args);
            proptest::prop_assert_eq!(limit, Some(77));
        }
    }

    #[test]
    fn reader_stops_at_frame_end() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let mut out = Outbox::default();
        out.run(&Target::Name("f".into())).unwrap();
        out.send_all(a.as_fd()).unwrap();
        a.write_all(b"user data").unwrap();
        let mut reader = FrameReader::new();
        reader
            .read_frame(b.as_fd(), COMMAND_TAGS, 1024, &mut || {})
            .unwrap()
            .unwrap();
        let mut rest = [0u8; 9];
        std::io::Read::read_exact(&mut &b, &mut rest).unwrap();
        assert_eq!(&rest, b"user data");
    }

    #[test]
    fn truncated_and_fdless_frames_are_errors() {
        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(&[b'a', 0, 0, 0, 10, 1, 2, 3]).unwrap();
        drop(a);
        let err = FrameReader::new()
            .read_frame(b.as_fd(), COMMAND_TAGS, 1024, &mut || {})
            .unwrap_err();
        assert!(matches!(
            err,
            ReadError::Protocol(ProtocolError::Truncated {
                expected: 15,
                got: 8,
                ..
            })
        ));

        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(&[b'h', 0, 0, 0, 1, b'!']).unwrap();
        let err = FrameReader::new()
            .read_frame(b.as_fd(), COMMAND_TAGS, 1024, &mut || {})
            .unwrap_err();
        assert!(matches!(
            err,
            ReadError::Protocol(ProtocolError::MissingFd { .. })
        ));
    }

    #[test]
    fn reply_buffer_never_reads_past_started() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let mut bytes = encode_reply(&Reply::Pid(7));
        bytes.extend(encode_reply(&Reply::Started(7)));
        bytes.extend_from_slice(b"user data");
        a.write_all(&bytes).unwrap();
        let mut buffer = ReplyBuffer::default();
        assert_eq!(
            buffer.next_from(b.as_fd(), 2 * PID_FRAME_LEN).unwrap(),
            Some(Reply::Pid(7))
        );
        assert_eq!(
            buffer.next_from(b.as_fd(), PID_FRAME_LEN).unwrap(),
            Some(Reply::Started(7))
        );
        let mut rest = [0u8; 9];
        std::io::Read::read_exact(&mut &b, &mut rest).unwrap();
        assert_eq!(&rest, b"user data");
    }

    #[test]
    fn reply_buffer_reads_long_errors_whole() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let message = "x".repeat(5000);
        let mut bytes = encode_reply(&Reply::Pid(1));
        bytes.extend(encode_reply(&Reply::Error {
            kind: ChildErrorKind::Other,
            message: message.clone(),
        }));
        a.write_all(&bytes).unwrap();
        drop(a);
        let mut buffer = ReplyBuffer::default();
        assert_eq!(
            buffer.next_from(b.as_fd(), 2 * PID_FRAME_LEN).unwrap(),
            Some(Reply::Pid(1))
        );
        assert_eq!(
            buffer.next_from(b.as_fd(), PID_FRAME_LEN).unwrap(),
            Some(Reply::Error {
                kind: ChildErrorKind::Other,
                message
            })
        );
        assert_eq!(buffer.next_from(b.as_fd(), PID_FRAME_LEN).unwrap(), None);
    }

    #[test]
    fn replies_round_trip() {
        for reply in [
            Reply::Pid(7),
            Reply::Started(u32::MAX),
            Reply::Error {
                kind: ChildErrorKind::UnknownFunction,
                message: "no such thing".into(),
            },
        ] {
            let bytes = encode_reply(&reply);
            let (tag, len) =
                parse_header(bytes[..5].try_into().unwrap(), REPLY_TAGS, MAX_REPLY_LEN).unwrap();
            assert_eq!(len as usize, bytes.len() - 5);
            assert_eq!(decode_reply(tag, &bytes[5..]).unwrap(), reply);
        }
    }
}
