//! Making a call through the pool, blocking or async: waiting for room,
//! the queue, the worker's reply, deadlines and cancellation.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::{Death, Error};
use super::inner::Inner;
use super::outcome::Verdict;
use super::state::{Chores, KilledFor};
use super::ticket::{RoomWaiter, Sent, Stage, Terms, Ticket};
use crate::rpc::{Settled, UntypedRpc};

/// How one call goes through the pool: see [`Pool::call_with`](super::Pool::call_with).
///
/// ```
/// use std::time::Duration;
/// let options = anyfork::pool::CallOptions::new()
///     .timeout(Duration::from_secs(2))
///     .idempotent(true);
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct CallOptions {
    timeout: Option<Duration>,
    idempotent: bool,
    kill_on_cancel: bool,
}

impl CallOptions {
    /// The defaults: the pool's default deadline, not idempotent, a
    /// cancelled call is only cancelled.
    pub fn new() -> CallOptions {
        CallOptions::default()
    }

    /// The call's deadline, from the moment it is made (time in the queue
    /// counts). See [`PoolBuilder::kill_on_timeout`](super::PoolBuilder::kill_on_timeout)
    /// for what happens to a worker running it when it passes.
    pub fn timeout(mut self, timeout: Duration) -> CallOptions {
        self.timeout = Some(timeout);
        self
    }

    /// The call may run twice: if its worker dies while running it, it is
    /// sent once more, to another worker, instead of failing.
    pub fn idempotent(mut self, idempotent: bool) -> CallOptions {
        self.idempotent = idempotent;
        self
    }

    /// Dropping the call's future while its worker runs it kills that
    /// worker (synchronous backend; the pool replaces it), instead of
    /// letting it compute on with nobody waiting.
    pub fn kill_on_cancel(mut self, kill: bool) -> CallOptions {
        self.kill_on_cancel = kill;
        self
    }

    pub(super) fn terms(self, default_timeout: Option<Duration>) -> Terms {
        let timeout = self.timeout.or(default_timeout);
        Terms {
            deadline: timeout.map(|t| (Instant::now() + t, t)),
            idempotent: self.idempotent,
            kill_on_cancel: self.kill_on_cancel,
        }
    }
}

/// Where a new call went.
pub(super) enum Placed {
    /// In the queue (or already sent).
    Queued,
    /// The queue is full: wait for this.
    MustWait(Arc<RoomWaiter>),
}

impl<Req: Serialize + Send + 'static> Inner<Req> {
    /// A new ticket for a call.
    pub(super) fn ticket(
        &self,
        request: Req,
        terms: Terms,
        asynchronous: bool,
    ) -> Arc<Ticket<Req>> {
        let seq = self
            .next_seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Arc::new(Ticket::new(seq, request, terms, asynchronous))
    }

    /// Puts a call in the queue if there is room (or `granted` room was
    /// kept for it); otherwise, unless `wait` is false, in line for room.
    pub(super) fn place(
        self: &Arc<Self>,
        ticket: &Arc<Ticket<Req>>,
        wait: bool,
        granted: bool,
    ) -> Result<Placed, Error> {
        let mut chores = Chores::default();
        let placed = {
            let mut state = self.lock();
            if granted {
                state.reserved = state.reserved.saturating_sub(1);
            }
            if let Some(error) = state.refusal(&self.config) {
                return Err(error);
            }
            if !granted && !state.has_room(&self.config) {
                let Some(limit) = self.config.queue_limit.filter(|_| !wait) else {
                    let waiter = Arc::new(RoomWaiter::default());
                    state.room.push_back(waiter.clone());
                    return Ok(Placed::MustWait(waiter));
                };
                return Err(Error::Full { limit });
            }
            state.queue.push_back(ticket.clone());
            state.assign(&self.config, &mut chores);
            // A start that must wait for `start` is the supervisor's (it
            // is not woken otherwise: a call costs no thread wake-up).
            state.plan(&self.config, &mut chores);
            Placed::Queued
        };
        self.run_chores(chores);
        Ok(placed)
    }

    /// A caller waiting for room gave up.
    pub(super) fn leave_line(&self, waiter: &Arc<RoomWaiter>) {
        let mut state = self.lock();
        if let Some(at) = state.room.iter().position(|w| Arc::ptr_eq(w, waiter)) {
            state.room.remove(at);
        } else if waiter.is_granted() {
            // Room was kept for it: give it on.
            state.reserved = state.reserved.saturating_sub(1);
            state.give_room(&self.config);
        }
    }

    /// A caller gave up on a queued call; whether it was still queued.
    pub(super) fn withdraw(&self, ticket: &Arc<Ticket<Req>>) -> bool {
        self.lock().withdraw(ticket, &self.config)
    }

    /// Settles a call's outcome (and frees its place on the worker, if the
    /// reader that read it has not).
    pub(super) fn settle(
        self: &Arc<Self>,
        worker: u64,
        place: &AtomicBool,
        ticket: &Arc<Ticket<Req>>,
        outcome: Result<(Vec<u8>, Vec<std::os::fd::OwnedFd>), crate::rpc::Error>,
    ) -> Verdict {
        let place = (!place.swap(true, Ordering::AcqRel)).then(|| {
            let settled = Settled::of(&outcome);
            (settled, self.rss_after(worker, settled))
        });
        let mut chores = Chores::default();
        let verdict = self
            .lock()
            .settle(&self.config, worker, ticket, outcome, place, &mut chores);
        self.run_chores(chores);
        verdict
    }

    /// A caller gave up on a call its worker has (deadline, dropped
    /// future): the call is cancelled, or its worker killed when it runs
    /// the call on the synchronous backend and `kill` says so. Returns the
    /// pid of a killed worker.
    pub(super) fn give_up(
        self: &Arc<Self>,
        sent: Sent,
        ticket: &Arc<Ticket<Req>>,
        kill: bool,
        why: &str,
    ) -> Option<u32> {
        let Sent {
            worker,
            rpc,
            call,
            place,
        } = sent;
        let mut killed = None;
        if kill && self.config.sequential && rpc.is_running(call.id()) {
            if let Some(w) = self.lock().worker(worker) {
                w.killed_for = Some(KilledFor::Call(ticket.seq));
                w.death = Some(Death::KilledByPool(why.into()));
            }
            killed = rpc.known_pid().or(Some(0));
            if let Err(e) = rpc.kill(why.to_owned()) {
                tracing::warn!("anyfork pool: cannot kill a worker: {e}");
            }
        }
        drop(call);
        let mut chores = Chores::default();
        let holds_place = !place.swap(true, Ordering::AcqRel);
        self.lock()
            .abandon(&self.config, worker, holds_place, &mut chores);
        self.run_chores(chores);
        killed
    }

    fn timeout_error(&self, timeout: Duration, queued: bool, killed: Option<u32>) -> Error {
        self.lock().totals.timeouts += 1;
        Error::Timeout {
            function: self.config.function.clone(),
            timeout,
            queued,
            killed,
        }
    }
}

/// A call, blocking.
pub(super) fn call_blocking<Req, Rep>(
    inner: &Arc<Inner<Req>>,
    request: Req,
    terms: Terms,
) -> Result<Rep, Error>
where
    Req: Serialize + Send + 'static,
    Rep: DeserializeOwned,
{
    let ticket = inner.ticket(request, terms, false);
    let deadline = terms.deadline.map(|(d, _)| d);
    let timeout = terms.deadline.map_or(Duration::ZERO, |(_, t)| t);
    if let Placed::MustWait(waiter) = inner.place(&ticket, true, false)? {
        if !waiter.wait(deadline) {
            inner.leave_line(&waiter);
            return Err(inner.timeout_error(timeout, true, None));
        }
        inner.place(&ticket, false, true)?;
    }
    loop {
        match ticket.wait_sent(deadline) {
            Stage::Queued => {
                if inner.withdraw(&ticket) {
                    return Err(inner.timeout_error(timeout, true, None));
                }
                // Sent just now: take it.
            }
            Stage::Failed(error) => return Err(error),
            Stage::Taken => return Err(Error::Call(Box::new(crate::rpc::Error::NoRuntime))),
            Stage::Sent(sent) => {
                let Some(outcome) = sent.call.wait_until(deadline) else {
                    let why = format!("a call overran its deadline of {timeout:?}");
                    let kill = inner.config.kill_on_timeout;
                    let killed = inner.give_up(sent, &ticket, kill, &why);
                    return Err(inner.timeout_error(timeout, false, killed));
                };
                match inner.settle(sent.worker, &sent.place, &ticket, outcome) {
                    Verdict::Reply(bytes, fds) => {
                        return decode(&sent.rpc, &inner.config.function, bytes, fds);
                    }
                    Verdict::Fail(error) => return Err(error),
                    Verdict::Requeue => {}
                }
            }
        }
    }
}

fn decode<Rep: DeserializeOwned>(
    rpc: &UntypedRpc,
    function: &str,
    bytes: Vec<u8>,
    fds: Vec<std::os::fd::OwnedFd>,
) -> Result<Rep, Error> {
    rpc.codec().decode(&bytes, fds).map_err(|source| {
        Error::Call(Box::new(crate::rpc::Error::Codec {
            function: function.to_owned(),
            source,
        }))
    })
}

/// A call, async; placed at once if there is room (so calls keep the
/// order they were made in), else when the future first finds room.
#[cfg(feature = "tokio")]
pub(super) fn call_async<Req, Rep>(
    inner: Arc<Inner<Req>>,
    request: Req,
    terms: Terms,
    wait: bool,
) -> Result<impl std::future::Future<Output = Result<Rep, Error>> + Send + 'static, Error>
where
    Req: Serialize + Send + 'static,
    Rep: DeserializeOwned + Send + 'static,
{
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(Error::NoRuntime);
    }
    let ticket = inner.ticket(request, terms, true);
    let placed = inner.place(&ticket, wait, false)?;
    let mut guard = CallGuard {
        inner,
        ticket,
        waiting: match placed {
            Placed::MustWait(waiter) => Some(waiter),
            Placed::Queued => None,
        },
        sent: None,
        finished: false,
    };
    Ok(async move {
        let result = guard.run().await;
        guard.disarm();
        result
    })
}

/// An async call in progress; dropping it takes the call out of the
/// queue, or cancels it on its worker.
#[cfg(feature = "tokio")]
struct CallGuard<Req: Serialize + Send + 'static> {
    inner: Arc<Inner<Req>>,
    ticket: Arc<Ticket<Req>>,
    waiting: Option<Arc<RoomWaiter>>,
    sent: Option<Sent>,
    /// The call returned: nothing to undo.
    finished: bool,
}

#[cfg(feature = "tokio")]
impl<Req: Serialize + Send + 'static> CallGuard<Req> {
    /// The call returned: nothing to undo at the drop.
    fn disarm(&mut self) {
        self.finished = true;
    }

    async fn run<Rep: DeserializeOwned>(&mut self) -> Result<Rep, Error> {
        let deadline = self.ticket.terms.deadline;
        let timeout = deadline.map_or(Duration::ZERO, |(_, t)| t);
        if let Some(waiter) = self.waiting.clone() {
            let granted = std::future::poll_fn(|cx| waiter.poll_granted(cx));
            if within(deadline, granted).await.is_none() {
                self.waiting = None;
                self.inner.leave_line(&waiter);
                return Err(self.inner.timeout_error(timeout, true, None));
            }
            self.waiting = None;
            self.inner.place(&self.ticket, false, true)?;
        }
        loop {
            let ticket = self.ticket.clone();
            let sent = std::future::poll_fn(|cx| ticket.poll_sent(cx));
            let Some(stage) = within(deadline, sent).await else {
                if self.inner.withdraw(&self.ticket) {
                    return Err(self.inner.timeout_error(timeout, true, None));
                }
                continue;
            };
            match stage {
                Stage::Queued | Stage::Taken => {
                    return Err(Error::Call(Box::new(crate::rpc::Error::NoRuntime)));
                }
                Stage::Failed(error) => return Err(error),
                Stage::Sent(sent) => self.sent = Some(sent),
            }
            let Some(sent) = self.sent.as_mut() else {
                continue;
            };
            let Some(outcome) = within(deadline, &mut sent.call).await else {
                let Some(sent) = self.sent.take() else {
                    continue;
                };
                let why = format!("a call overran its deadline of {timeout:?}");
                let kill = self.inner.config.kill_on_timeout;
                let killed = self.inner.give_up(sent, &self.ticket, kill, &why);
                return Err(self.inner.timeout_error(timeout, false, killed));
            };
            let Some(sent) = self.sent.take() else {
                continue;
            };
            match self
                .inner
                .settle(sent.worker, &sent.place, &self.ticket, outcome)
            {
                Verdict::Reply(bytes, fds) => {
                    return decode(&sent.rpc, &self.inner.config.function, bytes, fds);
                }
                Verdict::Fail(error) => return Err(error),
                Verdict::Requeue => {}
            }
        }
    }
}

/// `future`, or `None` if `deadline` passes first (no timer without one).
#[cfg(feature = "tokio")]
async fn within<T>(
    deadline: Option<(Instant, Duration)>,
    future: impl std::future::Future<Output = T>,
) -> Option<T> {
    match deadline {
        None => Some(future.await),
        Some((at, _)) => tokio::time::timeout_at(tokio::time::Instant::from_std(at), future)
            .await
            .ok(),
    }
}

#[cfg(feature = "tokio")]
impl<Req: Serialize + Send + 'static> Drop for CallGuard<Req> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if let Some(waiter) = self.waiting.take() {
            self.inner.leave_line(&waiter);
        }
        let kill = self.ticket.terms.kill_on_cancel;
        if let Some(sent) = self.sent.take() {
            self.inner
                .give_up(sent, &self.ticket, kill, "its call was cancelled");
            return;
        }
        // Still queued (or never placed): out of the queue. A call sent
        // meanwhile is in the ticket: cancel it there.
        if !self.inner.withdraw(&self.ticket) {
            let stage = std::mem::replace(&mut self.ticket.lock().stage, Stage::Taken);
            if let Stage::Sent(sent) = stage {
                self.inner
                    .give_up(sent, &self.ticket, kill, "its call was cancelled");
            }
        }
    }
}
