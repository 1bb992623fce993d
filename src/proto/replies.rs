//! Replies: what a serving process answers (`P`, `S`, `I`, `E`) and how a
//! parent reads them without reading past `S` ([`ReplyBuffer`]).

use std::collections::VecDeque;
use std::time::Instant;

use super::reader::{REPLY_TAGS, ReadError, parse_header};
use super::wire::{
    ChildErrorKind, Cursor, HEADER_LEN, MAX_REPLY_LEN, ProtocolError, Tag, put_u32, tag,
};
use crate::transport::Transport;

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
        transport: &Transport,
        budget: usize,
    ) -> Result<Option<Reply>, ReadError> {
        Ok(self
            .next_with_sender(transport, budget)?
            .map(|(reply, _)| reply))
    }

    /// [`next_from`](Self::next_from), with the pid the kernel says sent
    /// the frame (known when `SO_PASSCRED` is on: see
    /// [`fdpass::pass_credentials`]).
    pub(crate) fn next_with_sender(
        &mut self,
        transport: &Transport,
        budget: usize,
    ) -> Result<Option<(Reply, Option<u32>)>, ReadError> {
        self.next_until(transport, budget, None)
    }

    /// [`next_with_sender`](Self::next_with_sender) that gives up at
    /// `deadline` (`ErrorKind::TimedOut`).
    pub(crate) fn next_until(
        &mut self,
        transport: &Transport,
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
            let n = if ask {
                transport.recv_from_waiting(
                    &mut chunk,
                    &mut VecDeque::new(),
                    &mut sender,
                    deadline,
                )?
            } else {
                transport.recv_bytes_waiting(&mut chunk, deadline)?
            };
            if n == 0 {
                self.at_end()?;
                return Ok(None);
            }
            self.extend_from(&chunk[..n], sender);
        }
    }
}
