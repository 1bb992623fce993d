//! Commands: what a parent queues for a serving process ([`Outbox`], sent
//! in as few writes as possible, descriptors included) and how the serving
//! process decodes them ([`decode_command`]).

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Instant;

use super::reader::Frame;
use super::wire::{Cursor, FD_MARKER, ProtocolError, Tag, put_len, put_u32, tag};
use crate::sys::fdpass::MAX_FDS_PER_SEND;
use crate::transport::Transport;

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
    Title(Vec<u8>),
    Environment(Vec<Vec<u8>>),
    Run(Target),
}

/// Commands queued by a parent, with their descriptors, until they are sent
/// in as few `sendmsg` calls as possible.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    pub(super) data: Vec<u8>,
    /// Descriptors not yet sent, each with the offset just past its marker.
    fds: VecDeque<(usize, OwnedFd)>,
    /// Bytes of `data` already sent.
    sent: usize,
    /// The queue is for a transport that cannot carry descriptors.
    no_fds: bool,
    /// Bytes sent and dropped from `data` before now: with `data.len()`
    /// and `sent`, positions in the whole stream ever queued.
    dropped: u64,
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
    /// A queue for `transport`: one that cannot carry descriptors refuses
    /// frames that would ([`carries_fds`](Outbox::carries_fds)).
    pub(crate) fn for_transport(transport: &Transport) -> Outbox {
        Outbox {
            no_fds: !transport.carries_fds(),
            ..Outbox::default()
        }
    }

    /// Whether descriptors may be queued.
    pub(crate) fn carries_fds(&self) -> bool {
        !self.no_fds
    }

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

    pub(crate) fn title(&mut self, title: &[u8]) -> Result<(), ProtocolError> {
        self.frame(tag::TITLE, title)
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

    /// Makes `bytes` (whole frames, no descriptors) the queue, if nothing
    /// is waiting to be sent, and returns the buffer it had (empty, for
    /// reuse); otherwise gives `bytes` back. A large frame encoded
    /// elsewhere is then queued without a copy.
    pub(crate) fn adopt(&mut self, bytes: Vec<u8>) -> Result<Vec<u8>, Vec<u8>> {
        if !self.is_empty() {
            return Err(bytes);
        }
        self.clear();
        Ok(std::mem::replace(&mut self.data, bytes))
    }

    /// How many bytes were ever queued: the stream position just past the
    /// last one.
    pub(crate) fn queued_total(&self) -> u64 {
        self.dropped + self.data.len() as u64
    }

    /// How many bytes were ever sent: a frame that ended at or before this
    /// position has left this process.
    pub(crate) fn sent_total(&self) -> u64 {
        self.dropped + self.sent as u64
    }

    /// Bytes queued but not yet sent.
    pub(crate) fn unsent(&self) -> usize {
        self.data.len() - self.sent
    }

    /// Appends raw bytes (tests use this to corrupt a stream on purpose).
    #[cfg(feature = "test-hooks")]
    pub(crate) fn raw(&mut self, bytes: &[u8]) {
        self.data.extend_from_slice(bytes);
    }

    /// Sends the next part of the queue with one `sendmsg`. Returns `true`
    /// when everything has been sent. A nonblocking send that would block is
    /// `ErrorKind::WouldBlock`.
    pub(crate) fn send_some(
        &mut self,
        transport: &Transport,
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
        let sent = transport.send(&self.data[self.sent..end], &fds, nonblocking)?;
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
        self.dropped += self.sent as u64;
        for (marker, _) in &mut self.fds {
            *marker -= self.sent;
        }
        self.sent = 0;
    }

    /// Sends everything on a blocking socket.
    #[cfg(test)]
    pub(crate) fn send_all(&mut self, transport: &Transport) -> io::Result<()> {
        loop {
            match self.send_some(transport, false) {
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
        transport: &Transport,
        deadline: Option<Instant>,
    ) -> io::Result<()> {
        loop {
            match self.send_some(transport, true) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !transport.wait_writable_until(deadline)? {
                        return Err(io::ErrorKind::TimedOut.into());
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn clear(&mut self) {
        self.dropped += self.data.len() as u64;
        self.data.clear();
        self.sent = 0;
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
        tag::TITLE => return Ok(Command::Title(payload)),
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
