//! [`Ticket`]: one call's place in the pool, from the queue to its reply,
//! and [`RoomWaiter`]: a caller waiting for room in a full queue.

use std::os::fd::OwnedFd;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::Waker;
#[cfg(feature = "tokio")]
use std::task::{Context, Poll};
use std::time::Instant;

use serde::Serialize;

use super::error::Error;
use crate::rpc::{Codec, SubmittedCall, UntypedRpc};

/// What one call asked for beyond its request: see
/// [`CallOptions`](super::CallOptions).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Terms {
    pub(super) deadline: Option<(Instant, std::time::Duration)>,
    pub(super) idempotent: bool,
    // Only async calls can be cancelled.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(super) kill_on_cancel: bool,
}

/// The request, as given and then as encoded (kept to send it again).
pub(super) enum Payload<Req> {
    Given(Req),
    Encoded(Vec<u8>, Vec<OwnedFd>),
    /// Encoding failed; the call has failed.
    Gone,
}

/// A call on its worker, as its caller holds it.
pub(super) struct Sent {
    pub(super) worker: u64,
    pub(super) rpc: Arc<UntypedRpc>,
    pub(super) call: SubmittedCall,
    /// Set by whoever frees the call's place on its worker first: the
    /// reader that read its result, or its caller (see
    /// [`Inner::free_place`](super::inner::Inner::free_place)).
    pub(super) place: Arc<std::sync::atomic::AtomicBool>,
}

/// Where a call stands.
pub(super) enum Stage {
    /// In the pool's queue (or not yet placed).
    Queued,
    /// Sent to a worker.
    Sent(Sent),
    /// Failed before reaching a worker.
    Failed(Error),
    /// The caller took what was here.
    Taken,
}

pub(super) struct TicketInner<Req> {
    pub(super) payload: Payload<Req>,
    pub(super) stage: Stage,
    pub(super) waker: Option<Waker>,
    /// Sent again once already, after its worker died.
    pub(super) retried: bool,
}

/// One call through the pool.
pub(super) struct Ticket<Req> {
    /// Its place in the order of calls.
    pub(super) seq: u64,
    pub(super) terms: Terms,
    /// The runtime of an async caller: its call is read by a driver task
    /// there, whoever sends it.
    #[cfg(feature = "tokio")]
    pub(super) runtime: Option<tokio::runtime::Handle>,
    inner: Mutex<TicketInner<Req>>,
    changed: Condvar,
}

impl<Req> Ticket<Req> {
    /// A call; `asynchronous` for an async caller, who must be in a tokio
    /// runtime.
    pub(super) fn new(seq: u64, request: Req, terms: Terms, asynchronous: bool) -> Ticket<Req> {
        let _ = asynchronous;
        Ticket {
            seq,
            terms,
            #[cfg(feature = "tokio")]
            runtime: asynchronous
                .then(tokio::runtime::Handle::try_current)
                .and_then(Result::ok),
            inner: Mutex::new(TicketInner {
                payload: Payload::Given(request),
                stage: Stage::Queued,
                waker: None,
                retried: false,
            }),
            changed: Condvar::new(),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, TicketInner<Req>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves the call on to `stage` and wakes its caller.
    pub(super) fn advance(&self, stage: Stage) {
        let mut inner = self.lock();
        inner.stage = stage;
        if let Some(waker) = inner.waker.take() {
            waker.wake();
        }
        drop(inner);
        self.changed.notify_all();
    }

    /// Blocking: waits until the call has left the queue, at most until
    /// `deadline`; takes the stage it reached (`Queued` on timeout).
    pub(super) fn wait_sent(&self, deadline: Option<Instant>) -> Stage {
        let ready = |inner: &TicketInner<Req>| !matches!(inner.stage, Stage::Queued);
        let mut inner = wait_until(&self.changed, self.lock(), deadline, ready);
        if !ready(&inner) {
            return Stage::Queued;
        }
        std::mem::replace(&mut inner.stage, Stage::Taken)
    }

    /// Async: the stage once the call has left the queue.
    #[cfg(feature = "tokio")]
    pub(super) fn poll_sent(&self, cx: &mut Context<'_>) -> Poll<Stage> {
        let mut inner = self.lock();
        if matches!(inner.stage, Stage::Queued) {
            inner.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        Poll::Ready(std::mem::replace(&mut inner.stage, Stage::Taken))
    }

    /// Puts the call back in the queued stage (to be sent again).
    pub(super) fn requeued(&self) {
        self.lock().stage = Stage::Queued;
    }
}

impl<Req: Serialize> Ticket<Req> {
    /// Sends the call to a worker: encodes it the first time (keeping the
    /// bytes and copies of its descriptors to send it again), then submits.
    pub(super) fn send(
        &self,
        rpc: &UntypedRpc,
        codec: Codec,
        function: &str,
    ) -> Result<SubmittedCall, crate::rpc::Error> {
        let mut inner = self.lock();
        // Encoded the first time it is sent, kept for a resend.
        inner.payload = match std::mem::replace(&mut inner.payload, Payload::Gone) {
            Payload::Given(request) => {
                let encoded =
                    codec
                        .encode(&request)
                        .map_err(|source| crate::rpc::Error::Codec {
                            function: function.to_owned(),
                            source,
                        })?;
                Payload::Encoded(encoded.bytes, encoded.fds)
            }
            kept => kept,
        };
        let Payload::Encoded(bytes, fds) = &inner.payload else {
            // Its encoding failed before: the call has failed already.
            return Err(crate::rpc::Error::Io {
                process: rpc.process_name(),
                doing: "sending a request that could not be encoded",
                source: Arc::new(std::io::Error::other("no encoded request")),
            });
        };
        // The descriptors go with the request; copies stay for a resend.
        let copies = fds
            .iter()
            .map(OwnedFd::try_clone)
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| crate::rpc::Error::Io {
                process: rpc.process_name(),
                doing: "copying a request's descriptors",
                source: Arc::new(e),
            })?;
        #[cfg(feature = "tokio")]
        if let Some(runtime) = &self.runtime {
            let _entered = runtime.enter();
            return rpc.submit_async(bytes, copies);
        }
        rpc.submit(bytes, copies)
    }
}

/// A caller waiting for room in the queue, first come first served.
#[derive(Default)]
pub(super) struct RoomWaiter {
    inner: Mutex<(bool, Option<Waker>)>,
    changed: Condvar,
}

impl RoomWaiter {
    /// Room was kept for this caller.
    pub(super) fn grant(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.0 = true;
        if let Some(waker) = inner.1.take() {
            waker.wake();
        }
        drop(inner);
        self.changed.notify_all();
    }

    pub(super) fn is_granted(&self) -> bool {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).0
    }

    /// Blocking: waits for room, at most until `deadline`; whether it came.
    pub(super) fn wait(&self, deadline: Option<Instant>) -> bool {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        wait_until(&self.changed, inner, deadline, |inner| inner.0).0
    }

    #[cfg(feature = "tokio")]
    pub(super) fn poll_granted(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if inner.0 {
            return Poll::Ready(());
        }
        inner.1 = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// Waits on `changed` until `ready` says so or `deadline` passes; returns
/// the guard (look again to tell which).
fn wait_until<'a, T>(
    changed: &Condvar,
    mut guard: MutexGuard<'a, T>,
    deadline: Option<Instant>,
    ready: impl Fn(&T) -> bool,
) -> MutexGuard<'a, T> {
    loop {
        if ready(&guard) {
            return guard;
        }
        let now = Instant::now();
        guard = match deadline {
            Some(d) if d <= now => return guard,
            Some(d) => {
                changed
                    .wait_timeout(guard, d - now)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
            }
            None => changed.wait(guard).unwrap_or_else(PoisonError::into_inner),
        };
    }
}
