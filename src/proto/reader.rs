//! How a serving process reads commands: never a byte past `run`, and
//! descriptors kept in arrival order.

use std::collections::VecDeque;
use std::io;
use std::os::fd::OwnedFd;

use super::wire::{FD_MARKER, HEADER_LEN, ProtocolError, Tag, tag};
use crate::transport::Transport;

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
    tag::TITLE,
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

/// Reads frames from a transport, never past the end of a `run` frame,
/// keeping received descriptors in order (serving-process side).
///
/// Its basic way works on any transport: one frame exactly, header then
/// payload, the payload's buffer growing only as data arrives. On a socket
/// it first peeks at what is waiting (a peek without room for control
/// messages installs no descriptors), takes every complete frame up to and
/// including a `run` frame with one `recvmsg`, and hands them out one by
/// one: a batch of commands costs two system calls. A frame larger than the
/// peek is read the basic way.
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
    /// `before_wait` runs before waiting for data (a serving process says
    /// its pid then; it must be harmless to run again).
    fn fill(
        &mut self,
        transport: &Transport,
        buf: &mut [u8],
        before_wait: &mut dyn FnMut(),
    ) -> io::Result<usize> {
        let mut got = 0;
        while got < buf.len() {
            // Waiting in poll, not in recv: see `sys::poll`.
            let n = transport.recv_waiting(&mut buf[got..], &mut self.fds, None, before_wait)?;
            if n == 0 {
                break;
            }
            got += n;
        }
        Ok(got)
    }

    /// Peeks at what is waiting. Tries without blocking first; if nothing is
    /// there, calls `before_wait` and then waits. `None` on a transport
    /// that cannot peek.
    fn peek(
        &mut self,
        transport: &Transport,
        before_wait: &mut dyn FnMut(),
    ) -> Option<io::Result<usize>> {
        if self.peeked.len() < PEEK_LEN {
            self.peeked.resize(PEEK_LEN, 0);
        }
        transport.peek_waiting(&mut self.peeked, before_wait)
    }

    /// Reads one frame whose tag is one of `tags` and whose length is at
    /// most `limit`. `before_wait` is called if the reader has to wait for
    /// data. `Ok(None)` is end of stream at a frame boundary.
    pub(crate) fn read_frame(
        &mut self,
        transport: &Transport,
        tags: &[u8],
        limit: u64,
        before_wait: &mut dyn FnMut(),
    ) -> Result<Option<Frame>, ReadError> {
        if let Some(frame) = self.ready.pop_front() {
            return Ok(Some(frame));
        }
        let Some(available) = self.peek(transport, before_wait) else {
            // A pair of streams: one frame exactly, header then payload.
            return self.read_one(transport, tags, limit, before_wait);
        };
        let available = available?;
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
            return self.read_one(transport, tags, limit, &mut || {});
        }
        let mut batch = vec![0u8; end];
        let got = self.fill(transport, &mut batch, &mut || {})?;
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
        transport: &Transport,
        tags: &[u8],
        limit: u64,
        before_wait: &mut dyn FnMut(),
    ) -> Result<Option<Frame>, ReadError> {
        let mut header = [0u8; HEADER_LEN];
        let got = self.fill(transport, &mut header, before_wait)?;
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
        let payload = self.read_payload(transport, tag, len)?;
        Ok(Some(self.frame(tag, payload)?))
    }

    /// Reads `len` payload bytes, growing the buffer only as data arrives.
    fn read_payload(
        &mut self,
        transport: &Transport,
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
            let got = self.fill(transport, &mut payload[have..want], &mut || {})?;
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
