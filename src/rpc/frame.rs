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
}

/// Kinds a child accepts.
pub(crate) const TO_CHILD: &[u8] = &[kind::REQUEST, kind::CANCEL];
/// Kinds a parent accepts.
pub(crate) const TO_PARENT: &[u8] = &[
    kind::REPLY,
    kind::FAILED,
    kind::EVENT,
    kind::LOG,
    kind::NOTICE,
];

/// One frame.
#[derive(Debug)]
pub(crate) struct Frame {
    pub(crate) id: u32,
    pub(crate) kind: u8,
    pub(crate) payload: Vec<u8>,
    pub(crate) fds: Vec<OwnedFd>,
}

/// Appends a frame whose payload `write` appends to the buffer it is given
/// (the payload is encoded in place: no copy), returning the descriptors
/// that go with it. If `write` fails, `out` is as it was.
pub(crate) fn encode_with<E>(
    out: &mut Outbox,
    id: u32,
    kind: u8,
    write: impl FnOnce(&mut Vec<u8>) -> Result<Vec<OwnedFd>, E>,
) -> Result<Result<(), E>, ProtocolError> {
    let carries_fds = out.carries_fds();
    out.append_with(|data| {
        let start = data.len();
        data.extend_from_slice(&[0u8; HEADER_LEN]);
        let fds = match write(data) {
            Ok(fds) => fds,
            Err(e) => {
                data.truncate(start);
                return Ok((Err(e), Vec::new()));
            }
        };
        let len = data.len() - start - HEADER_LEN;
        let Ok(len) = u32::try_from(len) else {
            data.truncate(start);
            return Err(ProtocolError::TooLong {
                tag: Tag(kind),
                len: len as u64,
                limit: u32::MAX as u64,
            });
        };
        if fds.len() > MAX_FDS_PER_SEND {
            data.truncate(start);
            return Err(ProtocolError::Malformed {
                tag: Tag(kind),
                what: "a message may carry at most 32 file descriptors",
            });
        }
        if !fds.is_empty() && !carries_fds {
            data.truncate(start);
            return Err(ProtocolError::Malformed {
                tag: Tag(kind),
                what: "this transport is a pair of byte streams, which cannot carry file descriptors",
            });
        }
        let header = &mut data[start..start + HEADER_LEN];
        header[..4].copy_from_slice(&id.to_be_bytes());
        header[4..8].copy_from_slice(&len.to_be_bytes());
        header[8] = kind;
        header[9] = fds.len() as u8;
        Ok((Ok(()), fds))
    })
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
    let written = encode_with(out, id, kind, |buf| {
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
}

/// The room a read gets when no frame in progress needs more.
const MIN_ROOM: usize = 64 * 1024;

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

    /// The next complete frame, if buffered.
    pub(crate) fn next(&mut self) -> Result<Option<Frame>, ProtocolError> {
        Ok(self.next_borrowed()?.map(|frame| Frame {
            id: frame.id,
            kind: frame.kind,
            payload: frame.payload.to_vec(),
            fds: frame.fds,
        }))
    }

    /// The next complete frame, if buffered, its payload still in the
    /// buffer (no copy: for a reader that is done with it before reading
    /// again).
    pub(crate) fn next_borrowed(&mut self) -> Result<Option<FrameRef<'_>>, ProtocolError> {
        let available = &self.buffer[self.start..self.end];
        if available.len() < HEADER_LEN {
            return Ok(None);
        }
        let id = u32::from_be_bytes([available[0], available[1], available[2], available[3]]);
        let len =
            u32::from_be_bytes([available[4], available[5], available[6], available[7]]) as u64;
        let kind = available[8];
        let nfds = available[9] as usize;
        if !self.kinds.contains(&kind) {
            return Err(ProtocolError::UnknownTag(Tag(kind)));
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
        let payload = self.start + HEADER_LEN..self.start + total;
        self.start += total;
        let fds = self.fds.drain(..nfds).collect();
        Ok(Some(FrameRef {
            id,
            kind,
            payload: &self.buffer[payload],
            fds,
        }))
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
            frames in proptest::collection::vec((1u32.., prop::sample::select(TO_PARENT.to_vec()), proptest::collection::vec(any::<u8>(), 0..300)), 0..20),
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
        let written = encode_with(&mut out, 2, kind::REPLY, |buf: &mut Vec<u8>| {
            buf.extend_from_slice(b"in place");
            Ok::<_, String>(Vec::new())
        });
        assert_eq!(written.unwrap(), Ok(()));
        let failed = encode_with(&mut out, 3, kind::REPLY, |buf: &mut Vec<u8>| {
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
