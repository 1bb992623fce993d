//! What a pool was told when it was built, and fixed from then on.

use std::time::Duration;

/// The pool's fixed settings (the live ones, `max` and `idle`, are in the
/// state).
#[derive(Debug, Clone)]
pub(super) struct Config {
    /// The RPC function's name, for errors.
    pub(super) function: String,
    /// Most calls in flight on one worker.
    pub(super) load: usize,
    /// Least time between two starts for demand.
    pub(super) start: Duration,
    /// Least time between two stops of idle workers; also how long a worker
    /// must have been idle to be stopped.
    pub(super) stop: Duration,
    /// Most calls waiting in the queue (`None`: no bound).
    pub(super) queue_limit: Option<usize>,
    /// Recycle a worker after this many calls, plus up to `jitter`.
    pub(super) max_calls: Option<(u64, u64)>,
    /// Recycle a worker whose resident memory exceeds this, in bytes.
    pub(super) max_rss: Option<u64>,
    /// Recycle a worker this old.
    pub(super) max_age: Option<Duration>,
    /// The deadline of a call that sets none.
    pub(super) call_timeout: Option<Duration>,
    /// Kill a worker of the synchronous backend whose running call overran
    /// its deadline.
    pub(super) kill_on_timeout: bool,
    /// Workers dying in a row before answering a call that trip the breaker.
    pub(super) crash_limit: u32,
    /// The workers run one call at a time (the synchronous backend).
    pub(super) sequential: bool,
    /// How long a graceful stop of a worker may take before it is killed.
    pub(super) stop_grace: Duration,
}

/// The largest pause between two starts while new workers keep dying.
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(10);

impl Config {
    /// The pause before the next start after `in_a_row` workers died at
    /// start: `start` doubled each time (at least 10 ms), at most
    /// [`MAX_BACKOFF`].
    pub(super) fn backoff(&self, in_a_row: u32) -> Duration {
        let base = self.start.max(Duration::from_millis(10));
        base.saturating_mul(1 << in_a_row.min(16)).min(MAX_BACKOFF)
    }
}
