//! What a pool can tell about itself: a [`Status`] snapshot, its
//! [`Totals`], and the [`WorkerEvent`]s of workers coming and going.

use std::time::Duration;

use super::error::Death;

/// Counts since the pool was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Totals {
    /// Calls answered with a result.
    pub calls: u64,
    /// Calls that ended in an error (the function failed, the worker died
    /// running it, the deadline passed, the pool was shut down).
    pub failures: u64,
    /// Workers started, in all.
    pub started: u64,
    /// Workers that died unplanned (and were replaced as needed).
    pub restarts: u64,
    /// Workers recycled (`max_calls`, `max_rss`, `max_age`) or retired
    /// by themselves.
    pub recycles: u64,
    /// Calls put back in the queue because their worker died before
    /// running them (or, for idempotent calls, while running them).
    pub requeued: u64,
    /// Calls whose deadline passed.
    pub timeouts: u64,
}

/// One worker in a [`Status`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerStatus {
    /// Where it was forked: 0 for the pool's template, then the
    /// [sources](super::PoolBuilder::source) in the order they were added.
    pub source: usize,
    /// Its pid (on its machine), once it said it.
    pub pid: Option<u32>,
    /// Calls in flight on it.
    pub load: usize,
    /// Calls it answered with a result.
    pub served: u64,
    /// Its resident memory now, in bytes, if the kernel says.
    pub rss: Option<u64>,
    /// How long it has run.
    pub age: Duration,
    /// It takes no new calls (it is retiring, being recycled or stopped,
    /// or it died with calls still to be told).
    pub leaving: bool,
}

/// A snapshot of a pool: see [`Pool::status`](super::Pool::status).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Status {
    /// The workers, oldest first.
    pub workers: Vec<WorkerStatus>,
    /// Workers being started.
    pub starting: usize,
    /// Calls waiting in the queue.
    pub queued: usize,
    /// Callers waiting for room in a full queue.
    pub waiting_for_room: usize,
    /// The most workers.
    pub max: usize,
    /// The workers kept when quiet.
    pub idle: usize,
    /// The counts since the pool was built.
    pub totals: Totals,
    /// Why the crash-loop breaker tripped, if it did.
    pub breaker: Option<String>,
}

/// A worker came or went: see [`PoolBuilder::on_worker`](super::PoolBuilder::on_worker).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WorkerEvent {
    /// A worker started and said its pid.
    Started {
        /// Its pid.
        pid: u32,
    },
    /// A worker ended.
    Stopped {
        /// Its pid (0 if it never said it).
        pid: u32,
        /// Why it was stopped, or `None` if nobody asked it to: it died.
        reason: Option<StopReason>,
        /// How it ended.
        death: Death,
    },
}

/// Why the pool stopped a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// It called [`retire`](super::retire).
    Retired,
    /// It reached `max_calls`.
    MaxCalls,
    /// Its memory exceeded `max_rss`.
    MaxRss,
    /// It reached `max_age`.
    MaxAge,
    /// It was idle above `idle` for `stop`.
    Idle,
    /// The pool was shut down or made smaller.
    Shutdown,
    /// A call overran its deadline on it, or was cancelled with
    /// `kill_on_cancel`, and it was killed.
    Killed,
}
