//! Large messages through memory both processes map, instead of through
//! the socket.
//!
//! A message sent over a unix socket is copied into the kernel and out
//! again, in pieces as large as the socket's buffer, each piece a wake-up
//! of the reader. Above a threshold ([`SPILL_AT`]) an RPC message is
//! instead written by its encoder straight into a region of shared memory
//! and the socket carries only where it is: one copy into the region, one
//! decode out of it, one wake-up.
//!
//! What it buys (`anyfork bench rpc`, 2 CPUs, byte strings echoed one
//! call at a time): about half the time of the same messages through the
//! socket at 256 KiB, 1 MiB and 16 MiB; at 1 MiB as fast as a hand-written
//! socket echo and faster than `ipc-channel`. At 256 KiB and 16 MiB a
//! hand-written echo is faster still: the kernel copies a socket message in
//! pieces, the reader copying one while the writer writes the next, where
//! a message here is written whole before it is read.
//!
//! # The protocol
//!
//! Each side that sends large messages owns one region for that direction
//! (created when first needed): a `memfd` whose size is sealed, made of a
//! 4 KiB header and `n` chunks of 64 KiB.
//!
//! ```text
//!  0                              4096           4096 + 64 KiB
//! +------------------------------+--------------+--------------+----
//! | released: u64 bitmap words   | chunk 0      | chunk 1      | ...
//! +------------------------------+--------------+--------------+----
//! ```
//!
//! - The region is announced once, by an `m` frame (id 0, payload: the
//!   region's size as u64 BE) carrying the `memfd`, before the first frame
//!   that uses it. The receiver checks that the file's size is sealed and
//!   is the size announced, and that it is no larger than it accepts,
//!   before mapping it (a peer that could shrink the file could make the
//!   other side fault).
//! - A frame whose kind has its high bit set (`0x80 | kind`) has its
//!   payload in the region: the frame carries `offset` and `len` (u64 BE
//!   each), the message's place in the data area. The offset is a multiple
//!   of the chunk size and the message lies in the region, or the frame is
//!   a protocol error naming the cause. Descriptors travel in the frame as
//!   usual.
//! - The message's chunks belong to the receiver until it has read it; it
//!   then sets their bits in the header's `released` words (an atomic OR),
//!   and the sender takes them back when it next reserves room. The sender
//!   reserves the longest free run of chunks for a message being encoded
//!   and keeps only the chunks it filled; a message that outgrows the room
//!   goes through the socket instead, so nothing waits and nothing is lost.
//!
//! # Trust
//!
//! The child reads its parent's requests in place (the parent made it);
//! the parent copies a child's message out before decoding it, so a child
//! that writes into a message it has sent changes only which bytes arrive,
//! as it could over a socket. A receiver never touches memory outside the
//! region: every offset and length is checked first, and the region's size
//! cannot change.
//!
//! # Memory
//!
//! A region is sparse: pages are allocated when first written, reused
//! from message to message (so after the first large message no call page
//! faults), at most the configured size
//! ([`RpcBuilder::shared_memory`](crate::rpc::RpcBuilder::shared_memory)),
//! and returned when the connection ends. Transports that cannot carry
//! descriptors (pipes, ssh) always use the socket.

mod incoming;
mod lazy_region;
mod outgoing;
mod sink;
#[cfg(test)]
mod tests;

pub(crate) use incoming::Incoming;
pub(crate) use lazy_region::LazyRegion;
pub(crate) use outgoing::Outgoing;
pub(crate) use sink::{Placement, Sink};

use std::sync::atomic::AtomicU64;

/// The header: the `released` bitmap.
pub(crate) const HEADER_LEN: usize = 4096;
/// The unit of allocation.
pub(crate) const CHUNK: usize = 64 * 1024;
/// The most chunks a header's bitmap can describe (2 GiB).
pub(crate) const MAX_CHUNKS: usize = HEADER_LEN * 8;
/// Messages longer than this go through shared memory, when the
/// connection has it.
pub const SPILL_AT: usize = 64 * 1024;
/// The default room for messages in flight in each direction.
pub const DEFAULT_REGION: u64 = 64 << 20;

/// The high bit of a frame's kind: its payload is in the region.
pub(crate) const SHARED_FLAG: u8 = 0x80;

/// Length of a shared frame's payload: offset and length.
pub(crate) const REFERENCE_LEN: usize = 16;

/// Chunks needed for `bytes`.
pub(crate) fn chunks_for(bytes: u64) -> usize {
    usize::try_from(bytes.div_ceil(CHUNK as u64)).unwrap_or(usize::MAX)
}

/// One word of the `released` bitmap.
///
/// # Safety
///
/// `header` is the start of a mapping of at least [`HEADER_LEN`] bytes,
/// readable and writable, that outlives the returned reference, and
/// `word` < `MAX_CHUNKS / 64`.
pub(crate) unsafe fn released_word<'a>(header: *mut u8, word: usize) -> &'a AtomicU64 {
    debug_assert!(word < MAX_CHUNKS / 64);
    // SAFETY: by the caller's promise the word lies in the mapping; a
    // mapping is page-aligned, so the word is 8-aligned; both processes
    // access it only through atomics.
    unsafe { AtomicU64::from_ptr(header.cast::<u64>().add(word)) }
}

/// Encodes a shared frame's payload.
pub(crate) fn reference(offset: u64, len: u64) -> [u8; REFERENCE_LEN] {
    let mut out = [0u8; REFERENCE_LEN];
    out[..8].copy_from_slice(&offset.to_be_bytes());
    out[8..].copy_from_slice(&len.to_be_bytes());
    out
}

/// Decodes a shared frame's payload.
pub(crate) fn parse_reference(payload: &[u8]) -> Option<(u64, u64)> {
    let bytes: &[u8; REFERENCE_LEN] = payload.try_into().ok()?;
    let mut offset = [0u8; 8];
    let mut len = [0u8; 8];
    offset.copy_from_slice(&bytes[..8]);
    len.copy_from_slice(&bytes[8..]);
    Some((u64::from_be_bytes(offset), u64::from_be_bytes(len)))
}
