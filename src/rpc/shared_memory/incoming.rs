//! The receiving side of a region: the peer's region mapped here, every
//! offset and length checked against it, and chunks released when read.

use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;

use super::{CHUNK, HEADER_LEN, MAX_CHUNKS, chunks_for, released_word};
use crate::sys::shared_mapping::Mapping;

/// The peer's region, mapped: its header read-write (to release chunks),
/// its data read-only.
#[derive(Debug)]
pub(crate) struct Incoming {
    header: Mapping,
    data: Mapping,
}

impl Incoming {
    /// Maps the region the peer announced: `len` bytes (header and data),
    /// at most `allowed` bytes of data. Every check is made before
    /// anything is mapped.
    pub(crate) fn map(fd: &OwnedFd, len: u64, allowed: u64) -> Result<Incoming, &'static str> {
        let data_len = len
            .checked_sub(HEADER_LEN as u64)
            .filter(|&data| data > 0 && data % CHUNK as u64 == 0)
            .ok_or("the shared-memory region's size is not a header and whole chunks")?;
        if data_len > allowed.max(CHUNK as u64) || chunks_for(data_len) > MAX_CHUNKS {
            return Err("the shared-memory region is larger than this side accepts");
        }
        Mapping::check_sealed(fd, len)?;
        let data_len =
            usize::try_from(data_len).map_err(|_| "the shared-memory region is too large")?;
        let header = Mapping::map(fd, 0, HEADER_LEN, true)
            .map_err(|_| "cannot map the shared-memory region's header")?;
        let data = Mapping::map(fd, HEADER_LEN as u64, data_len, false)
            .map_err(|_| "cannot map the shared-memory region")?;
        Ok(Incoming { header, data })
    }

    /// Checks that a message lies within the region and starts on a chunk.
    pub(crate) fn check(&self, offset: u64, len: u64) -> Result<(usize, usize), &'static str> {
        let end = offset
            .checked_add(len)
            .ok_or("a shared-memory message's end overflows")?;
        if offset % CHUNK as u64 != 0 {
            return Err("a shared-memory message does not start on a chunk");
        }
        if len == 0 || end > self.data.len() as u64 {
            return Err("a shared-memory message lies outside the region");
        }
        Ok((offset as usize, len as usize))
    }

    /// A checked message, read in place. Only for a side that trusts the
    /// peer not to write it meanwhile (the child reading its parent's
    /// requests: the parent made it).
    pub(crate) fn payload(&self, offset: usize, len: usize) -> &[u8] {
        debug_assert!(offset + len <= self.data.len());
        // SAFETY: `check` put the range within the read-only mapping, which
        // lives as long as `self`; the peer writes a chunk only after it is
        // released, which happens after this borrow ends (see
        // `Decoder::release_borrowed`).
        unsafe { std::slice::from_raw_parts(self.data.as_ptr().add(offset), len) }
    }

    /// A checked message, copied to `out` (a side that does not trust the
    /// peer never makes a reference to memory the peer can write).
    pub(crate) fn copy_to(&self, offset: usize, len: usize, out: &mut Vec<u8>) {
        debug_assert!(offset + len <= self.data.len());
        self.data.append_to(offset, len, out);
    }

    /// Gives a read message's chunks back to the peer.
    pub(crate) fn release(&self, offset: usize, len: usize) {
        let first = offset / CHUNK;
        let count = chunks_for(len as u64);
        let mut chunk = first;
        while chunk < first + count {
            let word = chunk / 64;
            let bit = chunk % 64;
            let take = (64 - bit).min(first + count - chunk);
            let mask = if take == 64 {
                u64::MAX
            } else {
                ((1u64 << take) - 1) << bit
            };
            // SAFETY: `chunk` < MAX_CHUNKS (the message lies in the region,
            // checked by `Incoming::map` and `check`), so the word is in
            // the header, which is mapped read-write and 8-aligned.
            unsafe { released_word(self.header.as_ptr(), word) }.fetch_or(mask, Ordering::Release);
            chunk += take;
        }
    }
}
