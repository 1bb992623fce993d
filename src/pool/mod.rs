//! Pools of worker processes (AnyEvent::Fork::Pool in Rust, and what its
//! users miss).
//!
//! # Why
//!
//! One [`Rpc`](crate::rpc::Rpc) handle is one worker. Offloading jobs from
//! a service means several workers, a choice of worker per call, a queue,
//! replacing workers that die, and not letting one dead worker fail a
//! hundred calls queued behind it. A [`Pool`] does that: it forks its
//! workers from a template [`Fork`](crate::Fork) (so they share what the
//! template loaded, copy-on-write), starts an RPC server for one function
//! in each, and dispatches calls to them.
//!
//! ```
//! fn checksum(data: Vec<u8>) -> u32 {
//!     data.iter().map(|&b| u32::from(b)).sum()
//! }
//!
//! let pool = anyfork::Fork::new()?.pool(checksum).max(2).build()?;
//! assert_eq!(pool.call_blocking(vec![1, 2, 3])?, 6);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # How calls are dispatched
//!
//! A call goes to the least-loaded worker with fewer than `load` calls in
//! flight ([`PoolBuilder::load`], default 2). If none has room, it waits in
//! the pool's one queue, first come first served, and a worker is started
//! while fewer than `max` run (at most one per `start` interval). A worker
//! that finishes a call takes the oldest queued one. Workers above `idle`
//! that stay idle for `stop` are stopped, one per `stop`.
//!
//! The caller does the dispatching itself, under a short lock, and then
//! reads its reply as an [`Rpc`](crate::rpc::Rpc) caller does: a blocking
//! call through a pool costs about what it costs on one handle. A
//! supervisor thread per pool watches the workers' processes and does what
//! must happen at a time: delayed starts, stops, recycling, replacements.
//!
//! # The manual's recipes
//!
//! - **Lowest latency**: `load(1)` (a call never waits behind another on
//!   its worker) and `idle(max)` (no worker is ever started for a call).
//!   ```
//!   # fn f(n: u32) -> u32 { n }
//!   let cpus = anyfork::ncpu();
//!   let pool = anyfork::Fork::new()?.pool(f).max(cpus).idle(cpus).load(1).build()?;
//!   # Ok::<(), Box<dyn std::error::Error>>(())
//!   ```
//! - **CPU-bound throughput**: `max(ncpu())` (the default) and `load(2)` or
//!   more (the default 2), so a worker finds its next call waiting.
//!   ```
//!   # fn f(n: u32) -> u32 { n }
//!   let pool = anyfork::Fork::new()?.pool(f).max(anyfork::ncpu()).load(2).build()?;
//!   # Ok::<(), Box<dyn std::error::Error>>(())
//!   ```
//! - **I/O-bound work**: many calls per worker on the asynchronous backend
//!   (an `async fn`), or many workers: `load` high, `max` as the I/O
//!   allows (sometimes 1, for one disk; sometimes far above the CPUs).
//!   ```
//!   # async fn fetch(n: u32) -> u32 { n }
//!   let pool = anyfork::Fork::new()?.pool(fetch).max(4).load(64).build()?;
//!   # Ok::<(), Box<dyn std::error::Error>>(())
//!   ```
//!
//! # When a worker dies
//!
//! Only the calls it had started fail, with [`Error::WorkerDied`], which
//! says how it died (exit status, signal, "killed by the kernel's OOM
//! killer", when its memory cgroup's OOM count rose); the calls it had
//! not started (a synchronous worker runs one at a time: those delivered
//! behind the running one) go back to the queue in their place, and the
//! worker is replaced as calls need. A worker that exits (not killed)
//! before answering any call is one that failed to start: its calls never
//! ran and go back to the queue. On the asynchronous backend every call
//! delivered to a dead worker may have run, and fails (unless idempotent). A call
//! marked [idempotent](CallOptions::idempotent) is sent once more instead
//! of failing. Workers that keep dying before they answer anything (a bad
//! `init`, a missing library) trip a breaker after
//! [`crash_limit`](PoolBuilder::crash_limit) in a row: calls then fail with
//! [`Error::CrashLoop`] and its cause instead of the pool spinning.
//!
//! # Deadlines, recycling, back-pressure, shutdown
//!
//! - A call may have a deadline ([`CallOptions::timeout`],
//!   [`PoolBuilder::timeout`]); a synchronous worker still running a call
//!   whose deadline passed is killed and replaced
//!   ([`PoolBuilder::kill_on_timeout`]).
//! - Workers are recycled after [`max_calls`](PoolBuilder::max_calls)
//!   (with jitter), above [`max_rss`](PoolBuilder::max_rss), or at
//!   [`max_age`](PoolBuilder::max_age); a worker may [`retire`] itself.
//!   Replacements start before the old worker stops.
//! - A [`queue_limit`](PoolBuilder::queue_limit) bounds the queue:
//!   [`Pool::call`] waits for room, [`Pool::try_call`] fails with
//!   [`Error::Full`].
//! - [`Pool::shutdown`] drains with a grace period, then kills;
//!   [`Pool::shutdown_now`] kills at once. Dropping the pool drains.
//! - The worker's place is freed where its reply is read, whether or not
//!   its caller has looked yet: callers that await in any order keep the
//!   workers busy.
//! - Blocking and async calls mix, with one limit inherited from
//!   [`Rpc`](crate::rpc::Rpc): a worker that has served async calls is read
//!   by a driver task of that runtime, so a blocking call to it waits for
//!   that runtime to run. Make blocking calls from threads outside a
//!   current-thread runtime only while it runs (a multi-thread runtime
//!   always does).
//! - [`Pool::status`] is a snapshot; [`PoolBuilder::on_worker`] reports
//!   workers coming and going; [`Pool::set_max`] and [`Pool::set_idle`]
//!   resize a running pool.
//!
//! # Server pools
//!
//! [`ServerPool`] is for workers that do not answer calls but serve for a
//! long time: an accept loop on a listener the template was given. See its
//! module section and `examples/http_server_pool.rs`.

mod builder;
mod calls;
mod config;
mod error;
mod exits;
mod handle;
mod inner;
mod lifecycle;
mod outcome;
mod servers;
mod sources;
mod state;
mod status;
mod supervisor;
mod ticket;

pub use builder::PoolBuilder;
pub use calls::CallOptions;
pub use error::{Death, Error};
pub use handle::Pool;
pub use servers::{ServerEvent, ServerPool, ServerPoolBuilder, ServerStatus, stop_requested};
pub use status::{Status, StopReason, Totals, WorkerEvent, WorkerStatus};

/// The notice a worker sends to retire.
pub(crate) const RETIRE_NOTICE: &[u8] = b"retire";

/// Called in a worker, inside a call: asks the pool to retire this worker
/// (AnyEvent::Fork::Pool's `retire`). It gets no new calls, finishes those
/// it has, and exits; the pool starts another in its place.
///
/// ```
/// fn once(n: u32) -> u32 {
///     let _ = anyfork::pool::retire(); // one call per worker
///     n
/// }
/// let pool = anyfork::Fork::new()?.pool(once).max(1).build()?;
/// assert_eq!(pool.call_blocking(1)?, 1);
/// assert_eq!(pool.call_blocking(2)?, 2); // on a new worker
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// [`EventError::NotServing`](crate::rpc::EventError::NotServing) outside
/// a running RPC server; a write error if the parent is gone.
pub fn retire() -> Result<(), crate::rpc::EventError> {
    crate::rpc::send_notice(RETIRE_NOTICE)
}
