//! The sending side of a region: which chunks are free, reserving them
//! for a message being encoded, and taking back those the peer released.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use super::{CHUNK, HEADER_LEN, chunks_for, released_word};
use crate::sys::shared_mapping::Mapping;

/// This side's region: written here, read by the peer.
#[derive(Debug)]
pub(crate) struct Outgoing {
    mapping: Mapping,
    /// Chunks in the data area.
    chunks: usize,
    /// Chunks given to messages the peer has not released (one bit each).
    in_use: Mutex<Vec<u64>>,
    /// The region's descriptor until it is sent (with the first frame that
    /// uses the region).
    announcement: Mutex<Option<OwnedFd>>,
}

/// Chunks reserved for one message while it is encoded: written only
/// through [`Outgoing::write`], given back by [`Outgoing::finish`] or
/// [`Outgoing::cancel`].
#[derive(Debug)]
pub(crate) struct Reservation {
    first: usize,
    count: usize,
}

impl Reservation {
    /// Bytes that fit.
    pub(crate) fn capacity(&self) -> usize {
        self.count * CHUNK
    }
}

impl Outgoing {
    /// A new region with room for `bytes` of messages (rounded up to whole
    /// chunks).
    pub(crate) fn create(bytes: u64) -> std::io::Result<Outgoing> {
        let chunks = chunks_for(bytes).clamp(1, super::MAX_CHUNKS);
        let (fd, mapping) = Mapping::create("anyfork-rpc", HEADER_LEN + chunks * CHUNK)?;
        Ok(Outgoing {
            mapping,
            chunks,
            in_use: Mutex::new(vec![0; chunks.div_ceil(64)]),
            announcement: Mutex::new(Some(fd)),
        })
    }

    /// The region's size, as announced to the peer.
    pub(crate) fn region_len(&self) -> u64 {
        self.mapping.len() as u64
    }

    /// The descriptor to send, the first time this is asked.
    pub(crate) fn take_announcement(&self) -> Option<OwnedFd> {
        self.announcement
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    fn released(&self, word: usize) -> &AtomicU64 {
        // SAFETY: the header is at least `HEADER_LEN` bytes, 8-aligned
        // (a mapping starts on a page), and `word` < `MAX_CHUNKS / 64`
        // words fit in it; the peer changes these words only atomically.
        unsafe { released_word(self.mapping.as_ptr(), word) }
    }

    /// Takes back what the peer released, then reserves the longest run of
    /// free chunks if it holds at least `at_least` bytes.
    pub(crate) fn reserve(&self, at_least: usize) -> Option<Reservation> {
        let mut in_use = self.in_use.lock().unwrap_or_else(PoisonError::into_inner);
        for (word, bits) in in_use.iter_mut().enumerate() {
            *bits &= !self.released(word).swap(0, Ordering::Acquire);
        }
        let (mut best, mut run_start, mut run) = ((0, 0), 0, 0);
        for chunk in 0..self.chunks {
            if in_use[chunk / 64] & (1 << (chunk % 64)) == 0 {
                if run == 0 {
                    run_start = chunk;
                }
                run += 1;
                if run > best.1 {
                    best = (run_start, run);
                }
            } else {
                run = 0;
            }
        }
        let (first, count) = best;
        if count == 0 || count * CHUNK < at_least {
            return None;
        }
        mark(&mut in_use, first, count, true);
        Some(Reservation { first, count })
    }

    /// Copies `bytes` to `at` within the reservation. False if they do not
    /// fit (nothing is written).
    pub(crate) fn write(&self, reservation: &Reservation, at: usize, bytes: &[u8]) -> bool {
        if at
            .checked_add(bytes.len())
            .is_none_or(|end| end > reservation.capacity())
        {
            return false;
        }
        let offset = HEADER_LEN + reservation.first * CHUNK + at;
        // SAFETY: `offset + bytes.len()` lies within the reservation, so
        // within the mapping; the reserved chunks are written by no one
        // else (the peer reads them only once the frame naming them is
        // sent, after the reservation is finished), and `bytes` is private
        // memory, so the ranges do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.mapping.as_ptr().add(offset),
                bytes.len(),
            );
        }
        true
    }

    /// Copies the first `len` bytes written into the reservation to `out`
    /// (a message that outgrew it continues in the socket).
    pub(crate) fn copy_out(&self, reservation: &Reservation, len: usize, out: &mut Vec<u8>) {
        let len = len.min(reservation.capacity());
        let offset = HEADER_LEN + reservation.first * CHUNK;
        self.mapping.append_to(offset, len, out);
    }

    /// Tries to grow the reservation in place to hold `bytes`.
    pub(crate) fn extend(&self, reservation: &mut Reservation, bytes: usize) -> bool {
        let wanted = bytes.div_ceil(CHUNK);
        if wanted <= reservation.count {
            return true;
        }
        let end = reservation.first + wanted;
        if end > self.chunks {
            return false;
        }
        let mut in_use = self.in_use.lock().unwrap_or_else(PoisonError::into_inner);
        let from = reservation.first + reservation.count;
        if (from..end).any(|chunk| in_use[chunk / 64] & (1 << (chunk % 64)) != 0) {
            return false;
        }
        mark(&mut in_use, from, end - from, true);
        reservation.count = wanted;
        true
    }

    /// Keeps the chunks holding the message's `len` bytes (until the peer
    /// releases them), gives back the rest, and says where the message is:
    /// its offset in the data area and its length.
    pub(crate) fn finish(&self, reservation: Reservation, len: usize) -> (u64, u64) {
        let kept = chunks_for(len as u64).clamp(1, reservation.count);
        let mut in_use = self.in_use.lock().unwrap_or_else(PoisonError::into_inner);
        mark(
            &mut in_use,
            reservation.first + kept,
            reservation.count - kept,
            false,
        );
        ((reservation.first * CHUNK) as u64, len as u64)
    }

    /// Gives a finished message's chunks back (its frame could not be
    /// queued after all).
    pub(crate) fn forget(&self, offset: u64, len: u64) {
        let first = usize::try_from(offset / CHUNK as u64).unwrap_or(usize::MAX);
        let count = chunks_for(len);
        if first.saturating_add(count) <= self.chunks {
            let mut in_use = self.in_use.lock().unwrap_or_else(PoisonError::into_inner);
            mark(&mut in_use, first, count, false);
        }
    }

    /// Gives the whole reservation back (the message failed to encode, or
    /// went through the socket after all).
    pub(crate) fn cancel(&self, reservation: Reservation) {
        let mut in_use = self.in_use.lock().unwrap_or_else(PoisonError::into_inner);
        mark(&mut in_use, reservation.first, reservation.count, false);
    }

    /// Chunks in use (tests and the soak benchmark's accounting).
    #[cfg(test)]
    pub(crate) fn chunks_in_use(&self) -> usize {
        let in_use = self.in_use.lock().unwrap_or_else(PoisonError::into_inner);
        in_use.iter().map(|w| w.count_ones() as usize).sum()
    }
}

fn mark(bits: &mut [u64], first: usize, count: usize, used: bool) {
    for chunk in first..first + count {
        if used {
            bits[chunk / 64] |= 1 << (chunk % 64);
        } else {
            bits[chunk / 64] &= !(1 << (chunk % 64));
        }
    }
}
