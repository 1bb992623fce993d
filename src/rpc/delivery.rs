//! Handing what the child sent to the parent's code, in the child's order.
//!
//! Frames are read in the order the child wrote them. What the parent's
//! code sees of them comes in two kinds:
//!
//! - a **reply** lands in its call's [`Slot`]; the task awaiting the call
//!   (or the thread in `call_blocking`) takes it when it next runs;
//! - a **handler** runs here: `on_event` for an event, `on_error` for a
//!   fatal error, `on_destroy` at the end.
//!
//! The guarantee (documented for users in the `rpc` module):
//!
//! 1. Handlers run one at a time, in the order the child sent what they
//!    handle.
//! 2. A handler runs only after every earlier reply to a call that someone
//!    was waiting for (an awaited future, a blocking caller) has been
//!    *taken*: the future has returned it, the blocking call has it.
//! 3. A reply that follows a handler's message is handed to its call only
//!    after that handler has returned.
//!
//! On a current-thread runtime this is the Perl module's order exactly: a
//! task that awaits its calls one after another runs its code between two
//! awaits before the handler of an event the child sent between the two
//! replies, and the handler runs before the next reply reaches the task.
//! On a multi-threaded runtime a handler may run on another thread while
//! the task goes on after its `await`; it never runs before that `await`
//! has returned.
//!
//! A reply to a call nobody is waiting for (its future not polled yet) is
//! not waited for: nothing could take it. A future that was polled and is
//! then left unpolled (kept aside after a `select!`) would hold handlers
//! (and the replies behind them) back: after a second they go ahead
//! without it.
//!
//! Replies are counted only when there are handlers to order; without
//! them a reply is handed over at once and costs no bookkeeping.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
#[cfg(feature = "tokio")]
use std::time::Duration;
use std::time::Instant;

use super::error::Error;

/// What a call gets: the reply's bytes and descriptors, or why it failed.
pub(super) type Outcome = Result<(Vec<u8>, Vec<OwnedFd>), Error>;

/// How long a reply that someone was waiting for may stay untaken before
/// the handlers behind it go ahead anyway (the tokio driver's watch).
#[cfg(feature = "tokio")]
pub(super) const STALL: Duration = Duration::from_secs(1);

/// Where a call's result lands.
#[derive(Default)]
pub(super) struct Slot {
    inner: Mutex<SlotInner>,
}

#[derive(Default)]
struct SlotInner {
    result: Option<Outcome>,
    /// The result was taken, or the call given up.
    taken: bool,
    waker: Option<Waker>,
    /// A thread waits for it in `call_blocking`.
    blocking: bool,
    /// Counted as waited for, in this generation of the count (see
    /// [`Delivery::force`]), until taken.
    counted: Option<u64>,
    /// Told when the result arrives (before anyone takes it).
    hook: Option<SettledHook>,
}

/// Told that a call's result arrived, and whether it is a reply (`Ok`),
/// a failure of the call alone ([`Error::Failed`], a codec error) or of
/// the connection: runs where it was read, after the delivery's lock is
/// released (the pool frees the worker's place there).
pub(crate) type SettledHook = Box<dyn FnOnce(Settled) + Send>;

/// What a call's result was, for a [`SettledHook`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settled {
    Reply,
    CallFailed,
    ConnectionFailed,
}

impl Settled {
    pub(crate) fn of(outcome: &Outcome) -> Settled {
        match outcome {
            Ok(_) => Settled::Reply,
            Err(Error::Failed { .. } | Error::Codec { .. }) => Settled::CallFailed,
            Err(_) => Settled::ConnectionFailed,
        }
    }
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, SlotInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Asks to be told when the result arrives; returns the hook back if
    /// it already has.
    pub(super) fn on_settled(&self, hook: SettledHook) -> Option<SettledHook> {
        let mut inner = self.lock();
        if inner.result.is_some() || inner.taken {
            return Some(hook);
        }
        inner.hook = Some(hook);
        None
    }

    /// Sets the result and wakes whoever waits. With `generation`, returns
    /// whether someone was waiting, so that handlers must wait for the take;
    /// and the hook to run once the delivery's lock is released.
    fn fulfil(
        &self,
        outcome: Outcome,
        generation: Option<u64>,
    ) -> (bool, Option<(SettledHook, Settled)>) {
        let mut inner = self.lock();
        if inner.result.is_some() || inner.taken {
            return (false, None);
        }
        let hook = inner.hook.take().map(|hook| (hook, Settled::of(&outcome)));
        inner.result = Some(outcome);
        let waited_for = inner.waker.is_some() || inner.blocking;
        if let Some(waker) = inner.waker.take() {
            waker.wake();
        }
        let counted = match generation {
            Some(generation) if waited_for => {
                inner.counted = Some(generation);
                true
            }
            _ => false,
        };
        (counted, hook)
    }

    /// Whether the call has its result (or was given up).
    pub(super) fn is_done(&self) -> bool {
        let inner = self.lock();
        inner.result.is_some() || inner.taken
    }

    /// A thread is about to wait for the result in `call_blocking`.
    pub(super) fn wait_blocking(&self) {
        self.lock().blocking = true;
    }

    /// Takes the result, if it is there; with the count to release (see
    /// [`Delivery::release`]).
    pub(super) fn take(&self) -> Option<(Outcome, Option<u64>)> {
        let mut inner = self.lock();
        let result = inner.result.take()?;
        inner.taken = true;
        Some((result, inner.counted.take()))
    }

    /// [`take`](Self::take) for a future: registers the waker otherwise.
    pub(super) fn poll_take(&self, cx: &mut Context<'_>) -> Poll<(Outcome, Option<u64>)> {
        let mut inner = self.lock();
        if let Some(result) = inner.result.take() {
            inner.taken = true;
            return Poll::Ready((result, inner.counted.take()));
        }
        inner.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// The call was given up (its future dropped): a result that came is
    /// never taken. Returns the count to release.
    pub(super) fn abandon(&self) -> Option<u64> {
        let mut inner = self.lock();
        inner.taken = true;
        inner.result = None;
        inner.waker = None;
        inner.counted.take()
    }
}

/// Something the parent's code is to see, in the child's order.
pub(super) enum Item {
    /// A reply or failure for a call.
    Fulfil(Arc<Slot>, Outcome),
    /// A handler to run; waits for the replies before it to be taken.
    Handler(Handler),
    /// An event for the event stream (whose reader pulls it when it likes:
    /// no waiting for replies).
    Stream(Vec<u8>, Vec<OwnedFd>),
    /// The event stream ends.
    CloseStream,
}

/// A handler call.
pub(super) enum Handler {
    Event(Vec<u8>, Vec<OwnedFd>),
    /// `told`: every call the error ended has been given it.
    Report {
        error: Error,
        told: bool,
    },
    Destroy,
}

/// The queue of what is to be handed over, and the count of replies that
/// were handed to waiting calls and not taken yet.
pub(super) struct Delivery {
    state: Mutex<DeliveryState>,
    /// There are handlers to order (else replies are not counted).
    ordered: bool,
}

struct DeliveryState {
    queue: VecDeque<Item>,
    /// Replies handed to calls someone waits for, not taken yet.
    untaken: usize,
    /// Bumped by [`Delivery::force`]: counts of older generations are void.
    generation: u64,
    /// Someone is delivering (handlers run outside the lock).
    delivering: bool,
    /// Since when a handler has been waiting for replies to be taken.
    blocked_since: Option<Instant>,
}

impl Delivery {
    pub(super) fn new(ordered: bool) -> Delivery {
        Delivery {
            state: Mutex::new(DeliveryState {
                queue: VecDeque::new(),
                untaken: 0,
                generation: 0,
                delivering: false,
                blocked_since: None,
            }),
            ordered,
        }
    }

    fn lock(&self) -> MutexGuard<'_, DeliveryState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues items, after everything queued before.
    pub(super) fn push(&self, items: impl IntoIterator<Item = Item>) {
        self.lock().queue.extend(items);
    }

    /// Hands over everything that may go now, in order: fulfils slots here,
    /// and passes handler and stream items to `apply` (called without the
    /// lock). Returns at once if another thread is delivering (it picks up
    /// what was queued). Returns whether anything was handed over.
    pub(super) fn deliver(&self, apply: &mut dyn FnMut(Item)) -> bool {
        let mut state = self.lock();
        if state.delivering {
            return false;
        }
        state.delivering = true;
        let mut any = false;
        let mut hooks = Vec::new();
        loop {
            match state.queue.front() {
                None => break,
                Some(Item::Handler(_)) if state.untaken > 0 => {
                    state.blocked_since.get_or_insert_with(Instant::now);
                    break;
                }
                Some(_) => {}
            }
            let Some(item) = state.queue.pop_front() else {
                break;
            };
            any = true;
            match item {
                Item::Fulfil(slot, outcome) => {
                    let generation = self.ordered.then_some(state.generation);
                    let (counted, hook) = slot.fulfil(outcome, generation);
                    if counted {
                        state.untaken += 1;
                    }
                    hooks.extend(hook);
                }
                other => {
                    state.blocked_since = None;
                    drop(state);
                    apply(other);
                    state = self.lock();
                }
            }
        }
        // Cleared under the same lock as the last look at the queue: a
        // release that comes after it sees `delivering` false.
        state.delivering = false;
        drop(state);
        for (hook, settled) in hooks {
            hook(settled);
        }
        any
    }

    /// A counted reply was taken (or its call given up). Returns whether
    /// handlers may now go ahead and nobody is delivering: the caller then
    /// delivers (or wakes whoever does).
    pub(super) fn release(&self, generation: Option<u64>) -> bool {
        let Some(generation) = generation else {
            return false;
        };
        let mut state = self.lock();
        if generation == state.generation && state.untaken > 0 {
            state.untaken -= 1;
        }
        state.untaken == 0
            && !state.delivering
            && matches!(state.queue.front(), Some(Item::Handler(_)))
    }

    /// Whether nothing is queued and nobody is delivering.
    #[cfg(feature = "tokio")]
    pub(super) fn is_idle(&self) -> bool {
        let state = self.lock();
        state.queue.is_empty() && !state.delivering
    }

    /// Whether a handler waits for replies to be taken (readers then stop
    /// reading: what they would read could only queue up behind it).
    pub(super) fn is_blocked(&self) -> bool {
        let state = self.lock();
        state.untaken > 0 && matches!(state.queue.front(), Some(Item::Handler(_)))
    }

    /// When handlers started waiting for replies to be taken, if they are.
    #[cfg(feature = "tokio")]
    pub(super) fn blocked_since(&self) -> Option<Instant> {
        let state = self.lock();
        if state.untaken > 0 && matches!(state.queue.front(), Some(Item::Handler(_))) {
            state.blocked_since
        } else {
            None
        }
    }

    /// Stops waiting for the replies counted so far (a future that was
    /// polled and then left aside would hold everything back).
    #[cfg(feature = "tokio")]
    pub(super) fn force(&self) {
        let mut state = self.lock();
        if state.untaken > 0 {
            tracing::debug!(
                "anyfork rpc: {} repl(ies) not taken within {STALL:?}; handlers go ahead",
                state.untaken
            );
        }
        state.generation = state.generation.wrapping_add(1);
        state.untaken = 0;
        state.blocked_since = None;
    }
}
