//! [`PendingCall`]: one call waiting for its reply, blocking or as a
//! future; dropping it cancels the call.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use std::io;
use std::os::fd::OwnedFd;

use serde::Serialize;

use super::core::{Core, KEEP_SCRATCH};
use crate::rpc::delivery::{Outcome, Slot};
use crate::rpc::error::Error;
use crate::rpc::frame::{self, kind};
use crate::rpc::shared_memory::{Outgoing, Placement, SPILL_AT, Sink};
use crate::rpc::{Codec, CodecError};

/// A call waiting for its reply; dropping it cancels the call.
pub(super) struct PendingCall {
    pub(super) core: Arc<Core>,
    pub(super) id: u32,
    pub(super) slot: Arc<Slot>,
}

impl PendingCall {
    /// Takes the result if it is there, releasing what waited for the take.
    pub(super) fn take(&self) -> Option<Outcome> {
        let (outcome, generation) = self.slot.take()?;
        self.core.released(generation, true);
        Some(outcome)
    }

    pub(super) fn wait_blocking(&self, deadline: Option<Instant>, timeout: Duration) -> Outcome {
        self.slot.wait_blocking();
        loop {
            if let Some(outcome) = self.take() {
                return outcome;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                self.core.cancel(self.id);
                return Err(self.core.timed_out(timeout, true));
            }
            let slot = self.slot.clone();
            if let Err(error) = self.core.pump_or_wait(deadline, &move |_| slot.is_done()) {
                return self.take().unwrap_or(Err(error));
            }
        }
    }
}

impl Future for PendingCall {
    type Output = Outcome;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        match self.slot.poll_take(cx) {
            Poll::Ready((outcome, generation)) => {
                self.core.released(generation, false);
                Poll::Ready(outcome)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for PendingCall {
    fn drop(&mut self) {
        if !self.slot.is_done() {
            self.core.cancel(self.id);
        }
        // A reply that came but was not taken holds nothing back.
        let generation = self.slot.abandon();
        self.core.released(generation, false);
    }
}

/// An encoded request: in the scratch buffer (after [`frame::HEADER_LEN`]
/// bytes of room for its header), or in shared memory.
enum Encoded<'a> {
    Inline(&'a mut Vec<u8>),
    Shared(&'a Outgoing, (u64, u64)),
}

impl Core {
    /// Queues a request and returns its pending call.
    pub(super) fn submit<Req: Serialize>(
        self: &Arc<Self>,
        request: &Req,
    ) -> Result<PendingCall, Error> {
        self.submit_with(|codec, sink| codec.encode_to_sink(request, sink))
    }

    /// Queues a request already encoded.
    pub(super) fn submit_encoded(
        self: &Arc<Self>,
        bytes: &[u8],
        fds: Vec<OwnedFd>,
    ) -> Result<PendingCall, Error> {
        self.submit_with(|_, sink| {
            sink.extend_from_slice(bytes);
            Ok(fds)
        })
    }

    /// Encodes a request outside the state lock, into a buffer kept from
    /// call to call (a concurrent caller finds it taken and uses a new
    /// one), or, when it is large, straight into shared memory; then
    /// queues it.
    fn submit_with(
        self: &Arc<Self>,
        encode: impl FnOnce(Codec, &mut Sink<'_, '_>) -> Result<Vec<OwnedFd>, CodecError>,
    ) -> Result<PendingCall, Error> {
        let mut encoded = std::mem::take(&mut *self.scratch());
        encoded.clear();
        // Room for the frame's header: a large request can then become the
        // send queue as it is, if nothing else is waiting (see
        // `frame::encode_adopting`).
        encoded.resize(frame::HEADER_LEN, 0);
        let mut sink = Sink::spilling(&mut encoded, Some(&self.region), SPILL_AT);
        let fds = match encode(self.codec, &mut sink) {
            Ok(fds) => fds,
            Err(source) => {
                sink.abandon();
                return Err(Error::Codec {
                    function: self.function.clone(),
                    source,
                });
            }
        };
        let result = match sink.finish() {
            Placement::Inline => self.queue_request(Encoded::Inline(&mut encoded), fds),
            Placement::Shared {
                region,
                offset,
                len,
            } => self.queue_request(Encoded::Shared(region, (offset, len)), fds),
        };
        if encoded.capacity() <= KEEP_SCRATCH {
            *self.scratch() = encoded;
        }
        result
    }

    fn queue_request(
        self: &Arc<Self>,
        mut encoded: Encoded<'_>,
        fds: Vec<OwnedFd>,
    ) -> Result<PendingCall, Error> {
        let result = self.queue_encoded(&mut encoded, fds);
        if let (Err(_), Encoded::Shared(region, (offset, len))) = (&result, encoded) {
            region.forget(offset, len);
        }
        result
    }

    fn queue_encoded(
        self: &Arc<Self>,
        encoded: &mut Encoded<'_>,
        fds: Vec<OwnedFd>,
    ) -> Result<PendingCall, Error> {
        let mut state = self.lock();
        if let Some(error) = self.closed_error(&state) {
            return Err(error);
        }
        if state.handle_dropped {
            // Rpc::shutdown through a clone: no more requests.
            return Err(Error::ShutDown {
                function: self.function.clone(),
                process: state.link.name().clone(),
            });
        }
        // After four billion calls ids come round again: skip those still
        // in use (it rarely loops, as in the Perl module).
        let mut id = state.next_id;
        while state.pending.contains_key(&id) || state.cancelled.contains_key(&id) {
            id = id.wrapping_add(1).max(1);
        }
        state.next_id = id.wrapping_add(1).max(1);
        let process = state.link.name().clone();
        if !fds.is_empty() && !self.connection.carries_fds() {
            return Err(Error::Io {
                process,
                doing: "sending a request",
                source: Arc::new(io::Error::new(
                    io::ErrorKind::Unsupported,
                    crate::transport::NO_FDS,
                )),
            });
        }
        match encoded {
            Encoded::Inline(buffer) => {
                frame::encode_adopting(state.link.outbox(), id, kind::REQUEST, buffer, fds)
            }
            Encoded::Shared(region, place) => {
                frame::encode_shared(state.link.outbox(), region, id, kind::REQUEST, *place, fds)
            }
        }
        .map_err(|source| Error::Protocol { process, source })?;
        let slot = Arc::new(Slot::default());
        let end = state.link.outbox().queued_total();
        state.pending.insert(id, (slot.clone(), end));
        let driver = state.driver;
        drop(state);
        self.send_or_wake(driver);
        Ok(PendingCall {
            core: self.clone(),
            id,
            slot,
        })
    }
}
