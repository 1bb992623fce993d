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
//! | `m` memory | either way, once | 0 | the sender's shared-memory region size (u64 BE), with its `memfd` (see [`super::shared_memory`]) |
//! | any of the above with the high bit set (`0x80 \| kind`) | as the kind | as the kind | offset and length (u64 BE each) of the payload in the sender's region |
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

use std::os::fd::OwnedFd;

use super::shared_memory::{
    LazyRegion, Outgoing, Placement, REFERENCE_LEN, SHARED_FLAG, SPILL_AT, Sink, reference,
};
use crate::proto::{Outbox, ProtocolError, Tag};
use crate::sys::fdpass::MAX_FDS_PER_SEND;

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
            if let Placement::Shared {
                region,
                offset,
                len,
            } = placement
            {
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
        if let Err(error) = check_fds(kind, fds.len(), carries_fds) {
            return fail(data, error);
        }
        match placement {
            Placement::Shared {
                region,
                offset,
                len,
            } => {
                data.truncate(start);
                let fds = put_shared(data, region, id, kind, (offset, len), fds);
                Ok((Ok(()), fds))
            }
            Placement::Inline => {
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
    // The region's own descriptor travels with its first frame: shared
    // memory needs a transport that carries descriptors.
    if let Err(error) = check_fds(kind, fds.len().max(1), out.carries_fds()) {
        shared.forget(place.0, place.1);
        return Err(error);
    }
    out.append_with(|data| {
        let fds = put_shared(data, shared, id, kind, place, fds);
        Ok(((), fds))
    })
}

/// Whether a frame may carry `nfds` descriptors on this transport.
fn check_fds(kind: u8, nfds: usize, carries_fds: bool) -> Result<(), ProtocolError> {
    if nfds > MAX_FDS_PER_SEND {
        return Err(ProtocolError::Malformed {
            tag: Tag(kind),
            what: "a message may carry at most 32 file descriptors",
        });
    }
    if nfds > 0 && !carries_fds {
        return Err(ProtocolError::Malformed {
            tag: Tag(kind),
            what: "this transport is a pair of byte streams, which cannot carry file descriptors",
        });
    }
    Ok(())
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

/// Queues the frame whose payload is `buffer[HEADER_LEN..]` (the first
/// [`HEADER_LEN`] bytes are room for its header) by handing `buffer` to
/// `out` if `out` has nothing waiting, in which case `buffer` becomes the
/// queue's old, empty buffer; otherwise copies the payload in, as
/// [`encode`] does. Either way the frame is queued once.
pub(crate) fn encode_adopting(
    out: &mut Outbox,
    id: u32,
    kind: u8,
    buffer: &mut Vec<u8>,
    fds: Vec<OwnedFd>,
) -> Result<(), ProtocolError> {
    let payload_len = buffer.len().saturating_sub(HEADER_LEN);
    if !fds.is_empty() || buffer.len() < HEADER_LEN || !out.is_empty() {
        return encode(out, id, kind, &buffer[HEADER_LEN.min(buffer.len())..], fds);
    }
    let Ok(len) = u32::try_from(payload_len) else {
        return Err(ProtocolError::TooLong {
            tag: Tag(kind),
            len: payload_len as u64,
            limit: u32::MAX as u64,
        });
    };
    write_header(&mut buffer[..HEADER_LEN], id, kind, len, 0);
    match out.adopt(std::mem::take(buffer)) {
        Ok(old) => *buffer = old,
        // Not empty after all (checked above): put it back and copy.
        Err(back) => {
            *buffer = back;
            return encode(out, id, kind, &buffer[HEADER_LEN..], Vec::new());
        }
    }
    Ok(())
}

mod decoder;
#[cfg(test)]
mod tests;

pub(crate) use decoder::Decoder;
