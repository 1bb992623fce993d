//! Reading RPC frames: bounded, in place, with the peer's shared region.

use std::collections::VecDeque;
use std::io;
use std::os::fd::OwnedFd;

#[cfg(any(test, feature = "fuzzing"))]
use super::put_header;
use super::{Frame, FrameRef, HEADER_LEN, kind};
use crate::proto::{self, ProtocolError, Tag};
#[cfg(any(test, feature = "fuzzing"))]
use crate::rpc::shared_memory::Outgoing;
use crate::rpc::shared_memory::{Incoming, SHARED_FLAG, SPILL_AT, parse_reference};
use crate::sys::fdpass::MAX_FDS_PER_SEND;
use crate::transport::Transport;

/// Reads frames from a byte stream with descriptors.
#[derive(Debug)]
pub(crate) struct Decoder {
    /// Received bytes in `start..end`; the rest is room for the next read,
    /// zeroed once when the buffer grows, never again per read.
    buffer: Vec<u8>,
    /// Start of unparsed bytes in `buffer`.
    start: usize,
    /// End of received bytes in `buffer`.
    end: usize,
    fds: VecDeque<OwnedFd>,
    /// Kinds accepted.
    kinds: &'static [u8],
    /// Largest payload accepted.
    limit: u64,
    /// How much a read may ask the socket for: the manual's `buflen`,
    /// doubled while frames outgrow it. Memory is allocated only for what
    /// a frame needs (at least [`MIN_ROOM`]), never for all of it up front.
    read_len: usize,
    /// The serve protocol's replies (`P`, `S`) come first (the parent's
    /// side): their headers are not RPC headers.
    serve_replies: bool,
    /// Ask the kernel who sent what is read (see
    /// [`fdpass::recv_with_fds_from`]), for a process this program did not
    /// make.
    track_sender: bool,
    /// Who sent the buffered bytes, if known and one process.
    sender: Option<u32>,
    mixed_senders: bool,
    /// The largest shared-memory region the peer may announce (0: none).
    shared_allowed: u64,
    /// The peer's region, once announced.
    incoming: Option<Incoming>,
    /// A message read in place from the region, released at the next
    /// frame (or by [`release_borrowed`](Decoder::release_borrowed)).
    borrowed: Option<(usize, usize)>,
    /// A buffer a shared message was copied into, given back once decoded
    /// ([`recycle`](Decoder::recycle)): the next one is copied into memory
    /// already mapped, whatever `malloc` would do with a fresh one.
    spare: Vec<u8>,
}

/// Where a parsed frame's payload is.
enum Payload {
    Buffer(std::ops::Range<usize>),
    Shared(usize, usize),
}

/// The room a read gets when no frame in progress needs more.
const MIN_ROOM: usize = 64 * 1024;

/// The most a read asks for because earlier reads came back full.
const MAX_READ: usize = 64 * 1024;

impl Decoder {
    pub(crate) fn new(kinds: &'static [u8], limit: u64, buflen: usize) -> Decoder {
        Decoder {
            buffer: Vec::new(),
            start: 0,
            end: 0,
            fds: VecDeque::new(),
            kinds,
            limit,
            read_len: buflen.max(HEADER_LEN),
            serve_replies: false,
            track_sender: false,
            sender: None,
            mixed_senders: false,
            shared_allowed: 0,
            incoming: None,
            borrowed: None,
            spare: Vec::new(),
        }
    }

    /// Takes back the buffer of a shared message once it is decoded (kept
    /// if it is no larger than the region it came from).
    pub(crate) fn recycle(&mut self, mut buffer: Vec<u8>) {
        if buffer.capacity() > self.spare.capacity()
            && buffer.capacity() as u64 <= self.shared_allowed
            && buffer.capacity() > SPILL_AT
        {
            buffer.clear();
            self.spare = buffer;
        }
    }

    /// Accepts a shared-memory region of at most `bytes` from the peer
    /// (see [`super::shared_memory`]); without this an `m` frame is a
    /// protocol error.
    pub(crate) fn accepting_shared_memory(mut self, bytes: u64) -> Decoder {
        self.shared_allowed = bytes;
        self
    }

    /// Gives the message last read in place back to its sender.
    pub(crate) fn release_borrowed(&mut self) {
        if let (Some((offset, len)), Some(incoming)) = (self.borrowed.take(), &self.incoming) {
            incoming.release(offset, len);
        }
    }

    /// Keeps track of who sent what is read (the socket must have
    /// `SO_PASSCRED` on), for [`next_serve_reply`](Self::next_serve_reply).
    pub(crate) fn tracking_senders(mut self) -> Decoder {
        self.track_sender = true;
        self
    }

    /// For the parent: the serve protocol's replies come before the first
    /// RPC frame (see [`next_serve_reply`](Self::next_serve_reply)).
    pub(crate) fn after_serve_replies(mut self) -> Decoder {
        self.serve_replies = true;
        self
    }

    /// How many more bytes the frame begun in the buffer needs (its header,
    /// or the rest of its payload, bounded by the limit: a larger frame is
    /// an error at the next `next`). 0 between frames.
    fn frame_needs(&self) -> usize {
        let available = &self.buffer[self.start..self.end];
        if self.serve_replies || available.is_empty() {
            return 0;
        }
        if available.len() < HEADER_LEN {
            return HEADER_LEN - available.len();
        }
        let len = u32::from_be_bytes([available[4], available[5], available[6], available[7]]);
        let total = HEADER_LEN as u64 + u64::from(len).min(self.limit);
        usize::try_from(total)
            .unwrap_or(usize::MAX)
            .saturating_sub(available.len())
    }

    /// Bytes received but not yet taken as frames.
    pub(crate) fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Adds bytes (and descriptors) received elsewhere.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn feed(&mut self, bytes: &[u8], fds: impl IntoIterator<Item = OwnedFd>) {
        self.make_room(bytes.len());
        self.buffer[self.end..self.end + bytes.len()].copy_from_slice(bytes);
        self.end += bytes.len();
        self.fds.extend(fds);
    }

    /// Accepts shared memory and is given a region of four chunks, as a
    /// peer would announce it (tests and fuzzing: shared frames with any
    /// offset and length then reach the checks). The region's sending
    /// side comes back, to write messages into.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn with_test_region(self) -> (Decoder, Outgoing) {
        let mut decoder = self.accepting_shared_memory(1 << 20);
        let region = Outgoing::create(4 * crate::rpc::shared_memory::CHUNK as u64)
            .expect("a memfd for the test region");
        let fd = region
            .take_announcement()
            .expect("a new region's descriptor");
        let mut announcement = Vec::new();
        put_header(&mut announcement, 0, kind::MEMORY, 8, 1);
        announcement.extend_from_slice(&region.region_len().to_be_bytes());
        decoder.feed(&announcement, [fd]);
        (decoder, region)
    }

    /// Makes room for at least `wanted` more bytes after `end`: first by
    /// moving the unparsed bytes to the front, then by growing (at least
    /// doubling, so that a frame arriving in pieces costs amortised one
    /// move per byte).
    fn make_room(&mut self, wanted: usize) {
        /// A buffer grown larger than this by a burst is given back once
        /// it is empty.
        const KEEP_AT_MOST: usize = 8 << 20;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.buffer.len() > KEEP_AT_MOST && wanted <= KEEP_AT_MOST {
                self.buffer = Vec::new();
            }
        }
        if self.buffer.len() - self.end >= wanted {
            return;
        }
        if self.start > 0 {
            self.buffer.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buffer.len() - self.end < wanted {
            // Doubling (a frame arriving in pieces costs amortised one move
            // per byte), but never past the end of the frame in progress.
            let frame_end = self.end + self.frame_needs();
            let grown = (self.end + wanted).max((self.buffer.len() * 2).min(frame_end));
            self.buffer.resize(grown, 0);
        }
    }

    /// Reads once from `socket` into the buffer (growing it when a frame
    /// needs more room). Returns the number of bytes read: 0 at end of
    /// stream.
    pub(crate) fn read_from(
        &mut self,
        transport: &Transport,
        nonblocking: bool,
    ) -> io::Result<usize> {
        // A read asks for up to `read_len`, doubled while frames outgrow it
        // (the manual's buflen rule), but room is made only for what the
        // frame in progress needs, or MIN_ROOM: a huge buflen costs nothing
        // until frames are that large.
        if self.buffered() + 128 > self.read_len {
            self.read_len = self.read_len.saturating_mul(2).saturating_add(16);
        }
        let room = self.read_len.min(self.frame_needs().max(MIN_ROOM));
        self.make_room(room);
        let was_empty = self.start == self.end;
        let mut sender = None;
        let buffer = &mut self.buffer[self.end..];
        let result = if self.track_sender {
            transport.recv_from(buffer, &mut self.fds, nonblocking, &mut sender)
        } else {
            transport.recv(buffer, &mut self.fds, nonblocking)
        };
        if let Ok(got) = result {
            if got >= room && self.read_len < MAX_READ {
                // The read filled all it asked for: more is waiting (calls
                // in flight). Ask for more next time, so that a burst of
                // frames costs a few reads, not one each.
                self.read_len = (self.read_len * 2).min(MAX_READ);
            }
            if got > 0 && self.track_sender {
                if was_empty {
                    (self.sender, self.mixed_senders) = (sender, false);
                } else if self.sender != sender {
                    self.mixed_senders = true;
                }
            }
            self.end += got;
        }
        result
    }

    /// The next complete frame, if buffered, its payload copied out (of
    /// the buffer, or of the peer's shared region, which is then released
    /// at once: a side that does not trust its peer reads this way).
    pub(crate) fn next(&mut self) -> Result<Option<Frame>, ProtocolError> {
        self.release_borrowed();
        let Some((id, kind, payload, fds)) = self.parse()? else {
            return Ok(None);
        };
        let payload = match payload {
            Payload::Buffer(range) => self.buffer[range].to_vec(),
            Payload::Shared(offset, len) => {
                let mut out = std::mem::take(&mut self.spare);
                if let Some(incoming) = &self.incoming {
                    incoming.copy_to(offset, len, &mut out);
                    incoming.release(offset, len);
                }
                out
            }
        };
        Ok(Some(Frame {
            id,
            kind,
            payload,
            fds,
        }))
    }

    /// The next complete frame, if buffered, its payload still in the
    /// buffer or in the peer's shared region (no copy: for a reader that is
    /// done with it before reading again, and that trusts the peer not to
    /// write a message it sent, as a child trusts its parent).
    pub(crate) fn next_borrowed(&mut self) -> Result<Option<FrameRef<'_>>, ProtocolError> {
        self.release_borrowed();
        let Some((id, kind, payload, fds)) = self.parse()? else {
            return Ok(None);
        };
        let payload = match payload {
            Payload::Buffer(range) => &self.buffer[range],
            Payload::Shared(offset, len) => match &self.incoming {
                Some(incoming) => {
                    self.borrowed = Some((offset, len));
                    incoming.payload(offset, len)
                }
                None => &[],
            },
        };
        Ok(Some(FrameRef {
            id,
            kind,
            payload,
            fds,
        }))
    }

    /// Takes the next complete frame's header and descriptors, mapping a
    /// region announced on the way.
    #[allow(clippy::type_complexity)]
    fn parse(&mut self) -> Result<Option<(u32, u8, Payload, Vec<OwnedFd>)>, ProtocolError> {
        loop {
            let available = &self.buffer[self.start..self.end];
            if available.len() < HEADER_LEN {
                return Ok(None);
            }
            let id = u32::from_be_bytes([available[0], available[1], available[2], available[3]]);
            let len =
                u32::from_be_bytes([available[4], available[5], available[6], available[7]]) as u64;
            let wire_kind = available[8];
            let kind = wire_kind & !SHARED_FLAG;
            let shared = wire_kind & SHARED_FLAG != 0;
            let nfds = available[9] as usize;
            if !self.kinds.contains(&kind) || (shared && kind == self::kind::MEMORY) {
                return Err(ProtocolError::UnknownTag(Tag(wire_kind)));
            }
            if len > self.limit {
                return Err(ProtocolError::TooLong {
                    tag: Tag(kind),
                    len,
                    limit: self.limit,
                });
            }
            if nfds > MAX_FDS_PER_SEND {
                return Err(ProtocolError::Malformed {
                    tag: Tag(kind),
                    what: "a frame announces more than 32 file descriptors",
                });
            }
            let total = HEADER_LEN + len as usize;
            if available.len() < total {
                return Ok(None);
            }
            if self.fds.len() < nfds {
                return Err(ProtocolError::MissingFd { tag: Tag(kind) });
            }
            let body = self.start + HEADER_LEN..self.start + total;
            if kind == self::kind::MEMORY {
                self.map_region(&body, nfds)?;
                self.start += total;
                continue;
            }
            let payload = if shared {
                let malformed = |what| ProtocolError::Malformed {
                    tag: Tag(wire_kind),
                    what,
                };
                let (offset, len) = parse_reference(&self.buffer[body]).ok_or(malformed(
                    "a shared-memory frame is not an offset and a length",
                ))?;
                let incoming = self
                    .incoming
                    .as_ref()
                    .ok_or(malformed("a shared-memory frame before its region"))?;
                if len > self.limit {
                    return Err(ProtocolError::TooLong {
                        tag: Tag(kind),
                        len,
                        limit: self.limit,
                    });
                }
                let (offset, len) = incoming.check(offset, len).map_err(malformed)?;
                Payload::Shared(offset, len)
            } else {
                Payload::Buffer(body)
            };
            self.start += total;
            let fds = self.fds.drain(..nfds).collect();
            return Ok(Some((id, kind, payload, fds)));
        }
    }

    /// An `m` frame: the peer's region, checked and mapped.
    fn map_region(
        &mut self,
        body: &std::ops::Range<usize>,
        nfds: usize,
    ) -> Result<(), ProtocolError> {
        let malformed = |what| ProtocolError::Malformed {
            tag: Tag(kind::MEMORY),
            what,
        };
        if self.shared_allowed == 0 {
            return Err(malformed("shared memory was not offered to this side"));
        }
        if self.incoming.is_some() {
            return Err(malformed("a second shared-memory region"));
        }
        let size: [u8; 8] = self.buffer[body.clone()]
            .try_into()
            .map_err(|_| malformed("a region's announcement is not its size"))?;
        if nfds != 1 {
            return Err(malformed("a region's announcement carries no descriptor"));
        }
        let Some(fd) = self.fds.pop_front() else {
            return Err(ProtocolError::MissingFd {
                tag: Tag(kind::MEMORY),
            });
        };
        let incoming =
            Incoming::map(&fd, u64::from_be_bytes(size), self.shared_allowed).map_err(malformed)?;
        self.incoming = Some(incoming);
        Ok(())
    }

    /// Before the RPC frames: the next reply of the serve protocol (`P`,
    /// `S`, `E`, see [`crate::proto`]), which the client reads in the same
    /// buffer.
    ///
    /// With the reply, the pid the kernel says sent it, when senders are
    /// tracked ([`tracking_senders`](Self::tracking_senders)).
    pub(crate) fn next_serve_reply(
        &mut self,
    ) -> Result<Option<(proto::Reply, Option<u32>)>, ProtocolError> {
        let sender = if self.mixed_senders {
            None
        } else {
            self.sender
        };
        let available = &self.buffer[self.start..self.end];
        if available.len() < proto::HEADER_LEN {
            return Ok(None);
        }
        let mut header = [0u8; proto::HEADER_LEN];
        header.copy_from_slice(&available[..proto::HEADER_LEN]);
        let (tag, len) = proto::parse_header(header, proto::REPLY_TAGS, proto::MAX_REPLY_LEN)?;
        let total = proto::HEADER_LEN + len as usize;
        if available.len() < total {
            return Ok(None);
        }
        let reply = proto::decode_reply(tag, &available[proto::HEADER_LEN..total])?;
        self.start += total;
        if matches!(reply, proto::Reply::Started(_)) {
            // Every later byte is an RPC frame.
            self.serve_replies = false;
        }
        Ok(Some((reply, sender)))
    }

    /// At end of stream: an error if a frame was cut short.
    pub(crate) fn at_end(&self) -> Result<(), ProtocolError> {
        let available = &self.buffer[self.start..self.end];
        if available.is_empty() {
            return Ok(());
        }
        let expected = if available.len() >= HEADER_LEN {
            HEADER_LEN as u64
                + u32::from_be_bytes([available[4], available[5], available[6], available[7]])
                    as u64
        } else {
            HEADER_LEN as u64
        };
        Err(ProtocolError::Truncated {
            tag: Tag(available.get(8).copied().unwrap_or(0)),
            expected,
            got: available.len() as u64,
        })
    }
}
