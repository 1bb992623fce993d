//! RPC frames: the bytes on the socket once the child runs the RPC server.
//!
//! ```text
//!  0            4             8      9      10
//! +------------+-------------+------+------+---------------------+
//! | id (u32 BE)| len (u32 BE)| kind | nfds | payload (len bytes) |
//! +------------+-------------+------+------+---------------------+
//! ```
//!
//! | kind | direction | id | payload |
//! |---|---|---|---|
//! | `q` request | parent → child | the call's id (never 0) | the encoded arguments |
//! | `c` cancel | parent → child | the call's id | empty: the caller gave up |
//! | `r` reply | child → parent | the call's id | the encoded result |
//! | `x` failed | child → parent | the call's id | UTF-8: why the call failed (panic, undecodable arguments) |
//! | `v` event | child → parent | 0 | the encoded event |
//! | `l` log | child → parent | 0 | a `tracing` record: level (u8), target (u16 BE length + bytes), message |
//! | `n` notice | child → parent | 0 | a word for whoever manages the process: `retire` (see [`crate::pool::retire`]) |
//!
//! `nfds` descriptors (at most 32) travel with the frame's bytes as
//! `SCM_RIGHTS`, in the order the message's [`Fd`](super::Fd) values index
//! them. The Perl module's frames are `id, len, payload` (and requests of
//! its synchronous backend carry no id); anyfork adds the kind, so that a
//! call can fail on its own, be cancelled, and carry descriptors, and gives
//! every request an id, so that replies are matched the same way for both
//! backends and a late reply to a cancelled call is recognised.
//!
//! A reader bounds every length before allocating and grows its buffer only
//! as data arrives, starting from `buflen` bytes.

use std::collections::VecDeque;
use std::io;
use std::os::fd::OwnedFd;

use super::shared_memory::{
    Incoming, LazyRegion, Outgoing, Placement, REFERENCE_LEN, SHARED_FLAG, SPILL_AT, Sink,
    parse_reference, reference,
};
use crate::proto::{self, Outbox, ProtocolError, Tag};
use crate::sys::fdpass::MAX_FDS_PER_SEND;
use crate::transport::Transport;

/// Length of a frame header.
pub(crate) const HEADER_LEN: usize = 10;

/// Frame kinds.
pub(crate) mod kind {
    pub(crate) const REQUEST: u8 = b'q';
    pub(crate) const CANCEL: u8 = b'c';
    pub(crate) const REPLY: u8 = b'r';
    pub(crate) const FAILED: u8 = b'x';
    pub(crate) const EVENT: u8 = b'v';
    pub(crate) const LOG: u8 = b'l';
    pub(crate) const NOTICE: u8 = b'n';
    pub(crate) const MEMORY: u8 = b'm';
}

/// Kinds a child accepts.
pub(crate) const TO_CHILD: &[u8] = &[kind::REQUEST, kind::CANCEL, kind::MEMORY];
/// Kinds a parent accepts.
pub(crate) const TO_PARENT: &[u8] = &[
    kind::REPLY,
    kind::FAILED,
    kind::EVENT,
    kind::LOG,
    kind::NOTICE,
    kind::MEMORY,
];

/// One frame.
#[derive(Debug)]
pub(crate) struct Frame {
    pub(crate) id: u32,
    pub(crate) kind: u8,
    pub(crate) payload: Vec<u8>,
    pub(crate) fds: Vec<OwnedFd>,
}

/// Appends a frame whose payload `write` gives its sink (the payload is
/// encoded in place: no copy), returning the descriptors that go with it.
/// With `shared`, a payload longer than [`SPILL_AT`] is written to the
/// shared region instead, and the frame only says where (see
/// [`super::shared_memory`]). If `write` fails, `out` is as it was.
pub(crate) fn encode_with<E>(
    out: &mut Outbox,
    shared: Option<&LazyRegion>,
    id: u32,
    kind: u8,
    write: impl FnOnce(&mut Sink<'_, '_>) -> Result<Vec<OwnedFd>, E>,
) -> Result<Result<(), E>, ProtocolError> {
    let carries_fds = out.carries_fds();
    let shared = shared.filter(|_| carries_fds);
    out.append_with(|data| {
        let start = data.len();
        data.extend_from_slice(&[0u8; HEADER_LEN]);
        let mut sink = Sink::spilling(data, shared, SPILL_AT);
        let fds = match write(&mut sink) {
            Ok(fds) => fds,
            Err(e) => {
                sink.abandon();
                data.truncate(start);
                return Ok((Err(e), Vec::new()));
            }
        };
        let placement = sink.finish();
        let fail = |data: &mut Vec<u8>, error| {
            if let Placement::Shared { region, offset, len } = placement {
                region.forget(offset, len);
            }
            data.truncate(start);
            Err(error)
        };
        let len = data.len() - start - HEADER_LEN;
        let Ok(len) = u32::try_from(len) else {
            return fail(
                data,
                ProtocolError::TooLong {
                    tag: Tag(kind),
                    len: len as u64,
                    limit: u32::MAX as u64,
                },
            );
        };
        if fds.len() > MAX_FDS_PER_SEND {
            return fail(
                data,
                ProtocolError::Malformed {
                    tag: Tag(kind),
                    what: "a message may carry at most 32 file descriptors",
                },
            );
        }
        if !fds.is_empty() && !carries_fds {
            return fail(
                data,
                ProtocolError::Malformed {
                    tag: Tag(kind),
                    what: "this transport is a pair of byte streams, which cannot carry file descriptors",
                },
            );
        }
        match placement {
            Placement::Shared { region, offset, len } => {
                data.truncate(start);
                let fds = put_shared(data, region, id, kind, (offset, len), fds);
                Ok((Ok(()), fds))
            }
            _ => {
                let header = &mut data[start..start + HEADER_LEN];
                write_header(header, id, kind, len, fds.len());
                Ok((Ok(()), fds))
            }
        }
    })
}

/// Appends a frame whose payload is at `place` in `shared`, preceded by
/// the region's announcement the first time; returns the descriptors of
/// both, in order.
fn put_shared(
    data: &mut Vec<u8>,
    shared: &Outgoing,
    id: u32,
    kind: u8,
    (offset, len): (u64, u64),
    fds: Vec<OwnedFd>,
) -> Vec<OwnedFd> {
    let mut all = Vec::with_capacity(fds.len() + 1);
    if let Some(region) = shared.take_announcement() {
        // The region first: the frame after it uses it.
        put_header(data, 0, kind::MEMORY, 8, 1);
        data.extend_from_slice(&shared.region_len().to_be_bytes());
        all.push(region);
    }
    put_header(
        data,
        id,
        kind | SHARED_FLAG,
        REFERENCE_LEN as u32,
        fds.len(),
    );
    data.extend_from_slice(&reference(offset, len));
    all.extend(fds);
    all
}

/// Appends a frame whose payload was encoded into `shared` already (at
/// `place`, see [`Sink::finish`]).
pub(crate) fn encode_shared(
    out: &mut Outbox,
    shared: &Outgoing,
    id: u32,
    kind: u8,
    place: (u64, u64),
    fds: Vec<OwnedFd>,
) -> Result<(), ProtocolError> {
    if fds.len() > MAX_FDS_PER_SEND || !out.carries_fds() {
        shared.forget(place.0, place.1);
        return Err(ProtocolError::Malformed {
            tag: Tag(kind),
            what: "a message may carry at most 32 file descriptors",
        });
    }
    out.append_with(|data| {
        let fds = put_shared(data, shared, id, kind, place, fds);
        Ok(((), fds))
    })
}

fn write_header(header: &mut [u8], id: u32, kind: u8, len: u32, nfds: usize) {
    header[..4].copy_from_slice(&id.to_be_bytes());
    header[4..8].copy_from_slice(&len.to_be_bytes());
    header[8] = kind;
    header[9] = nfds as u8;
}

fn put_header(data: &mut Vec<u8>, id: u32, kind: u8, len: u32, nfds: usize) {
    let mut header = [0u8; HEADER_LEN];
    write_header(&mut header, id, kind, len, nfds);
    data.extend_from_slice(&header);
}

/// One frame whose payload is still in the [`Decoder`]'s buffer.
#[derive(Debug)]
pub(crate) struct FrameRef<'a> {
    pub(crate) id: u32,
    pub(crate) kind: u8,
    pub(crate) payload: &'a [u8],
    pub(crate) fds: Vec<OwnedFd>,
}

/// Appends a frame to `out`.
pub(crate) fn encode(
    out: &mut Outbox,
    id: u32,
    kind: u8,
    payload: &[u8],
    fds: Vec<OwnedFd>,
) -> Result<(), ProtocolError> {
    // Checked before anything is copied; the rest as for `encode_with`.
    if u32::try_from(payload.len()).is_err() {
        return Err(ProtocolError::TooLong {
            tag: Tag(kind),
            len: payload.len() as u64,
            limit: u32::MAX as u64,
        });
    }
    let written = encode_with(out, None, id, kind, |buf| {
        buf.extend_from_slice(payload);
        Ok::<_, std::convert::Infallible>(fds)
    })?;
    match written {
        Ok(()) => Ok(()),
        Err(never) => match never {},
    }
}

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
        let region = Outgoing::create(4 * super::shared_memory::CHUNK as u64)
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bytes_of(out: &mut Outbox) -> Vec<u8> {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        out.send_all(&crate::transport::Transport::Socket(
            a.try_clone().unwrap().into(),
        ))
        .unwrap();
        drop(a);
        let mut all = Vec::new();
        std::io::Read::read_to_end(&mut &b, &mut all).unwrap();
        all
    }

    proptest! {
        /// Frames survive any split of the byte stream.
        #[test]
        fn frames_round_trip_under_any_split(
            frames in proptest::collection::vec((1u32.., prop::sample::select(TO_PARENT.iter().copied().filter(|k| *k != kind::MEMORY).collect::<Vec<_>>()), proptest::collection::vec(any::<u8>(), 0..300)), 0..20),
            cuts in proptest::collection::vec(0usize..4000, 0..30),
        ) {
            let mut out = Outbox::default();
            for (id, kind, payload) in &frames {
                encode(&mut out, *id, *kind, payload, Vec::new()).unwrap();
            }
            let bytes = bytes_of(&mut out);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.push(bytes.len());
            cuts.sort();
            let mut decoder = Decoder::new(TO_PARENT, 1 << 20, 16);
            let mut seen = Vec::new();
            let mut from = 0;
            for cut in cuts {
                decoder.feed(&bytes[from..cut], std::iter::empty());
                from = cut;
                while let Some(frame) = decoder.next().unwrap() {
                    seen.push((frame.id, frame.kind, frame.payload));
                }
            }
            decoder.at_end().unwrap();
            prop_assert_eq!(seen, frames);
        }

        /// Raw-codec messages survive encoding and decoding.
        #[test]
        fn raw_messages_round_trip(parts in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..10)) {
            let encoded = super::super::Codec::Raw.encode(&parts).unwrap();
            let back: Vec<Vec<u8>> = super::super::Codec::Raw.decode(&encoded.bytes, encoded.fds).unwrap();
            prop_assert_eq!(back, parts);
        }

        /// Shared frames with any offset and length are read from within
        /// the region or refused; garbage around them never panics.
        #[test]
        fn shared_frames_stay_within_the_region(
            frames in proptest::collection::vec((any::<u64>(), any::<u64>(), any::<bool>()), 1..20),
            garbage in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let (mut decoder, _region) = Decoder::new(TO_PARENT, 1 << 30, 16).with_test_region();
            let region_len = 4 * super::super::shared_memory::CHUNK as u64;
            for (offset, len, small) in frames {
                let (offset, len) = if small { (offset % (region_len + 1), len % (region_len + 1)) } else { (offset, len) };
                let mut bytes = Vec::new();
                put_header(&mut bytes, 1, kind::REPLY | SHARED_FLAG, REFERENCE_LEN as u32, 0);
                bytes.extend_from_slice(&reference(offset, len));
                decoder.feed(&bytes, std::iter::empty());
                let valid = offset % super::super::shared_memory::CHUNK as u64 == 0
                    && len > 0
                    && offset.checked_add(len).is_some_and(|end| end <= region_len);
                match decoder.next() {
                    Ok(Some(frame)) => {
                        prop_assert!(valid);
                        prop_assert_eq!(frame.payload.len() as u64, len);
                    }
                    Ok(None) => prop_assert!(false, "a whole frame was not read"),
                    Err(ProtocolError::Malformed { .. } | ProtocolError::TooLong { .. }) => {
                        prop_assert!(!valid);
                        // A refused frame ends the connection: start again.
                        decoder = Decoder::new(TO_PARENT, 1 << 30, 16).with_test_region().0;
                    }
                    Err(other) => prop_assert!(false, "unexpected error {other}"),
                }
            }
            decoder.feed(&garbage, std::iter::empty());
            while let Ok(Some(_)) = decoder.next() {}
        }

        /// Garbage never panics the decoder.
        #[test]
        fn garbage_is_an_error_or_a_frame(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut decoder = Decoder::new(TO_PARENT, 1024, 16);
            decoder.feed(&bytes, std::iter::empty());
            while let Ok(Some(_)) = decoder.next() {}
        }
    }

    #[test]
    fn frames_encoded_in_place_read_back_and_a_failed_encoding_leaves_nothing() {
        let mut out = Outbox::default();
        encode(&mut out, 1, kind::REPLY, b"before", Vec::new()).unwrap();
        let written = encode_with(&mut out, None, 2, kind::REPLY, |buf: &mut Sink<'_, '_>| {
            buf.extend_from_slice(b"in place");
            Ok::<_, String>(Vec::new())
        });
        assert_eq!(written.unwrap(), Ok(()));
        let failed = encode_with(&mut out, None, 3, kind::REPLY, |buf: &mut Sink<'_, '_>| {
            buf.extend_from_slice(b"half a message");
            Err::<Vec<OwnedFd>, _>("cannot encode".to_owned())
        });
        assert_eq!(failed.unwrap(), Err("cannot encode".to_owned()));
        encode(&mut out, 4, kind::EVENT, b"after", Vec::new()).unwrap();
        let bytes = bytes_of(&mut out);
        let mut decoder = Decoder::new(TO_PARENT, 1 << 20, 16);
        decoder.feed(&bytes, std::iter::empty());
        let mut seen = Vec::new();
        while let Some(frame) = decoder.next().unwrap() {
            seen.push((frame.id, frame.payload));
        }
        decoder.at_end().unwrap();
        assert_eq!(
            seen,
            [
                (1, b"before".to_vec()),
                (2, b"in place".to_vec()),
                (4, b"after".to_vec())
            ]
        );
    }

    #[test]
    fn limits_and_kinds_are_checked() {
        let mut decoder = Decoder::new(TO_CHILD, 100, 16);
        decoder.feed(&[0, 0, 0, 1, 0, 0, 1, 0, b'q', 0], std::iter::empty());
        assert!(matches!(
            decoder.next(),
            Err(ProtocolError::TooLong {
                len: 256,
                limit: 100,
                ..
            })
        ));
        let mut decoder = Decoder::new(TO_CHILD, 100, 16);
        decoder.feed(&[0, 0, 0, 1, 0, 0, 0, 0, b'r', 0], std::iter::empty());
        assert!(matches!(decoder.next(), Err(ProtocolError::UnknownTag(_))));
        let mut decoder = Decoder::new(TO_CHILD, 100, 16);
        decoder.feed(&[0, 0, 0, 1, 0, 0, 0, 0, b'q', 2], std::iter::empty());
        assert!(matches!(
            decoder.next(),
            Err(ProtocolError::MissingFd { .. })
        ));
        let mut decoder = Decoder::new(TO_CHILD, 100, 16);
        decoder.feed(&[0, 0, 0, 1, 0, 0, 0, 9, b'q', 0, 1], std::iter::empty());
        assert!(matches!(decoder.next(), Ok(None)));
        assert!(matches!(
            decoder.at_end(),
            Err(ProtocolError::Truncated {
                expected: 19,
                got: 11,
                ..
            })
        ));
    }
}
