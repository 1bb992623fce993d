//! Where an encoder writes a message: the socket's queue while it is
//! small, the shared region once it grows past the threshold.

use std::io;

use super::lazy_region::LazyRegion;
use super::outgoing::{Outgoing, Reservation};

/// Where a finished message ended up.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Placement<'a> {
    /// In the buffer, after its start.
    Inline,
    /// In the region: offset in its data area and length.
    Shared {
        region: &'a Outgoing,
        offset: u64,
        len: u64,
    },
}

/// An encoder's output: appends to `inline` from `start` on, and moves the
/// message to the shared region once it is longer than `threshold` (one
/// copy of at most `threshold` bytes; the rest is written straight there).
/// A message that then outgrows the free room comes back to `inline` and
/// continues there: it is never lost or split.
///
/// Dropping a sink without [`finish`](Sink::finish) gives its reservation
/// back (an encoder that failed).
pub(crate) struct Sink<'a, 'r> {
    inline: &'a mut Vec<u8>,
    start: usize,
    region: Option<&'r LazyRegion>,
    threshold: usize,
    spilled: Option<Spilled<'r>>,
}

/// A message moved to the region: where, and how much of it is written.
struct Spilled<'r> {
    region: &'r Outgoing,
    reservation: Reservation,
    written: usize,
}

impl<'a, 'r> Sink<'a, 'r> {
    /// A sink that writes only to `inline`.
    pub(crate) fn inline(inline: &'a mut Vec<u8>) -> Sink<'a, 'r> {
        Sink::spilling(inline, None, usize::MAX)
    }

    /// A sink that moves messages longer than `threshold` to `region`
    /// (created then, if it was not yet).
    pub(crate) fn spilling(
        inline: &'a mut Vec<u8>,
        region: Option<&'r LazyRegion>,
        threshold: usize,
    ) -> Sink<'a, 'r> {
        let start = inline.len();
        Sink {
            inline,
            start,
            region,
            threshold,
            spilled: None,
        }
    }

    /// Appends bytes.
    pub(crate) fn extend_from_slice(&mut self, bytes: &[u8]) {
        if let Some(spilled) = &mut self.spilled {
            let (region, at) = (spilled.region, spilled.written);
            let end = at + bytes.len();
            if region.write(&spilled.reservation, at, bytes)
                || (region.extend(&mut spilled.reservation, end)
                    && region.write(&spilled.reservation, at, bytes))
            {
                spilled.written = end;
                return;
            }
            // No room left: the message goes by the socket after all.
            if let Some(spilled) = self.spilled.take() {
                region.copy_out(&spilled.reservation, spilled.written, self.inline);
                region.cancel(spilled.reservation);
            }
            self.threshold = usize::MAX;
            self.inline.extend_from_slice(bytes);
            return;
        }
        if self.inline.len() - self.start + bytes.len() > self.threshold {
            // Moved before these bytes are appended, so that a large piece
            // (a whole byte string, as most encoders write one) is copied
            // once, straight into the region.
            self.spill(bytes.len());
            if self.spilled.is_some() {
                return self.extend_from_slice(bytes);
            }
        }
        self.inline.extend_from_slice(bytes);
    }

    /// Appends one byte.
    #[cfg_attr(not(feature = "postcard"), allow(dead_code))]
    pub(crate) fn push(&mut self, byte: u8) {
        if self.spilled.is_none() {
            self.inline.push(byte);
            if self.inline.len() - self.start > self.threshold {
                self.spill(0);
            }
        } else {
            self.extend_from_slice(&[byte]);
        }
    }

    /// Moves what was written to the region, with room for `coming` more
    /// bytes; or, if the region has no such room, gives up on it for this
    /// message.
    fn spill(&mut self, coming: usize) {
        let Some(region) = self.region.and_then(LazyRegion::get) else {
            self.threshold = usize::MAX;
            return;
        };
        let written = self.inline.len() - self.start;
        let wanted = written
            .saturating_add(coming)
            .max(written.saturating_mul(2));
        match region.reserve(wanted) {
            Some(reservation) => {
                // Fits: `reserve` found at least `wanted`.
                let _ = region.write(&reservation, 0, &self.inline[self.start..]);
                self.inline.truncate(self.start);
                self.spilled = Some(Spilled {
                    region,
                    reservation,
                    written,
                });
            }
            None => {
                // The region is busy: this message goes by the socket.
                self.threshold = usize::MAX;
            }
        }
    }

    /// Where the message is.
    pub(crate) fn finish(mut self) -> Placement<'r> {
        match self.spilled.take() {
            Some(Spilled {
                region,
                reservation,
                written,
            }) => {
                let (offset, len) = region.finish(reservation, written);
                Placement::Shared {
                    region,
                    offset,
                    len,
                }
            }
            None => Placement::Inline,
        }
    }

    /// Forgets what was written (a failed encoder): the buffer is as it
    /// was, and the reservation goes back (on drop).
    pub(crate) fn abandon(self) {
        self.inline.truncate(self.start);
    }
}

impl Drop for Sink<'_, '_> {
    fn drop(&mut self) {
        if let Some(spilled) = self.spilled.take() {
            spilled.region.cancel(spilled.reservation);
        }
    }
}

impl io::Write for Sink<'_, '_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.extend_from_slice(bytes);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
