//! [`Pool`]: the handle, its calls, its status, resizing and shutdown.

use std::future::Future;
use std::marker::PhantomData;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::calls::CallOptions;
use super::error::Error;
use super::inner::Inner;
use super::state::{Chores, Closing};
use super::status::{Status, WorkerStatus};

/// A pool of worker processes running one RPC function: made by
/// [`Fork::pool`](crate::Fork::pool).
///
/// Cheap to clone; every clone uses the same workers. Dropping the last
/// clone lets queued and running calls finish, then ends the workers;
/// `on_destroy` runs after the last has exited. See [the module
/// docs](mod@crate::pool) for how calls are dispatched and what happens
/// when a worker dies.
pub struct Pool<Req, Rep> {
    pub(super) inner: Arc<Inner<Req>>,
    pub(super) handle: Arc<Handle<Req>>,
    pub(super) _types: PhantomData<fn(Req) -> Rep>,
}

/// Shared by the clones of a pool; at its drop the pool drains and ends.
pub(super) struct Handle<Req> {
    pub(super) inner: Arc<Inner<Req>>,
}

impl<Req> Drop for Handle<Req> {
    fn drop(&mut self) {
        let mut state = self.inner.lock();
        state.handles = 0;
        drop(state);
        self.inner.wake.notify();
    }
}

impl<Req, Rep> Clone for Pool<Req, Rep> {
    fn clone(&self) -> Self {
        Pool {
            inner: self.inner.clone(),
            handle: self.handle.clone(),
            _types: PhantomData,
        }
    }
}

impl<Req, Rep> std::fmt::Debug for Pool<Req, Rep> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("function", &self.inner.config.function)
            .finish_non_exhaustive()
    }
}

impl<Req, Rep> Pool<Req, Rep>
where
    Req: Serialize + Send + 'static,
    Rep: DeserializeOwned + Send + 'static,
{
    /// Calls the function on the least-loaded worker with room (async).
    /// The call is queued at once, when `call` is called, unless the queue
    /// is full ([`PoolBuilder::queue_limit`](super::PoolBuilder::queue_limit)):
    /// then the future waits for room first. Dropping the future takes the
    /// call out of the queue, or cancels it on its worker.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// fn square(n: u64) -> u64 {
    ///     n * n
    /// }
    /// let pool = anyfork::Fork::new()?.pool(square).max(2).build()?;
    /// let calls: Vec<_> = (0..10).map(|n| pool.call(n)).collect();
    /// let mut sum = 0;
    /// for call in calls {
    ///     sum += call.await?;
    /// }
    /// assert_eq!(sum, 285);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Call`] if the function failed; [`Error::WorkerDied`] if the
    /// worker died running it; [`Error::Timeout`], [`Error::CrashLoop`],
    /// [`Error::ShutDown`]; [`Error::NoRuntime`] outside a tokio runtime.
    pub fn call(&self, request: Req) -> impl Future<Output = Result<Rep, Error>> + Send + 'static {
        self.call_with(request, CallOptions::new())
    }

    /// [`call`](Self::call) with a deadline, idempotence or
    /// kill-on-cancel: see [`CallOptions`].
    pub fn call_with(
        &self,
        request: Req,
        options: CallOptions,
    ) -> impl Future<Output = Result<Rep, Error>> + Send + 'static {
        let terms = options.terms(self.inner.config.call_timeout);
        #[cfg(feature = "tokio")]
        let placed = super::calls::call_async::<Req, Rep>(self.inner.clone(), request, terms, true);
        #[cfg(not(feature = "tokio"))]
        let placed: Result<std::future::Ready<Result<Rep, Error>>, Error> = {
            let _ = (request, terms);
            Err(Error::NoRuntime)
        };
        async move { placed?.await }
    }

    /// [`call`](Self::call) that fails at once with [`Error::Full`] instead
    /// of waiting when the queue is full.
    ///
    /// # Errors
    ///
    /// [`Error::Full`], [`Error::CrashLoop`], [`Error::ShutDown`],
    /// [`Error::NoRuntime`] at once; the future as for [`call`](Self::call).
    pub fn try_call(
        &self,
        request: Req,
    ) -> Result<impl Future<Output = Result<Rep, Error>> + Send + 'static, Error> {
        let terms = CallOptions::new().terms(self.inner.config.call_timeout);
        #[cfg(feature = "tokio")]
        return super::calls::call_async::<Req, Rep>(self.inner.clone(), request, terms, false);
        #[cfg(not(feature = "tokio"))]
        {
            let _ = (request, terms);
            Err::<std::future::Ready<Result<Rep, Error>>, _>(Error::NoRuntime)
        }
    }

    /// Calls the function and waits (blocking) for its result; blocks
    /// first for room if the queue is full. The calling thread reads its
    /// worker's reply itself, so a call costs what a call on one
    /// [`Rpc`](crate::rpc::Rpc) costs. Not for async tasks.
    ///
    /// # Errors
    ///
    /// As for [`call`](Self::call), without [`Error::NoRuntime`].
    pub fn call_blocking(&self, request: Req) -> Result<Rep, Error> {
        self.call_blocking_with(request, CallOptions::new())
    }

    /// [`call_blocking`](Self::call_blocking) with [`CallOptions`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use anyfork::pool::{CallOptions, Error};
    /// fn nap(ms: u64) -> u64 {
    ///     std::thread::sleep(Duration::from_millis(ms));
    ///     ms
    /// }
    /// let pool = anyfork::Fork::new()?.pool(nap).max(1).build()?;
    /// let late = pool.call_blocking_with(5_000, CallOptions::new().timeout(Duration::from_millis(100)));
    /// assert!(matches!(late, Err(Error::Timeout { killed: Some(_), .. })));
    /// assert_eq!(pool.call_blocking(1)?, 1); // on a new worker
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As for [`call_blocking`](Self::call_blocking).
    pub fn call_blocking_with(&self, request: Req, options: CallOptions) -> Result<Rep, Error> {
        let terms = options.terms(self.inner.config.call_timeout);
        super::calls::call_blocking(&self.inner, request, terms)
    }

    /// A snapshot: the workers (pid, load, calls served, memory, age), the
    /// queue, the totals, the breaker.
    ///
    /// ```
    /// fn id(n: u32) -> u32 {
    ///     n
    /// }
    /// let pool = anyfork::Fork::new()?.pool(id).idle(1).build()?;
    /// pool.call_blocking(7)?;
    /// let status = pool.status();
    /// assert_eq!(status.totals.calls, 1);
    /// assert_eq!(status.workers.len(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn status(&self) -> Status {
        let now = Instant::now();
        let (mut status, pids) = {
            let state = self.inner.lock();
            let workers: Vec<WorkerStatus> = state
                .workers
                .iter()
                .filter(|w| !w.exited)
                .map(|w| WorkerStatus {
                    source: w.source,
                    pid: w.pid,
                    load: w.load,
                    served: w.served,
                    rss: None,
                    age: now - w.started_at,
                    leaving: w.leaving.is_some(),
                })
                .collect();
            // Memory is read for processes of this machine only.
            let pids: Vec<Option<u32>> = state
                .workers
                .iter()
                .filter(|w| !w.exited)
                .map(|w| w.pid.filter(|_| w.process.is_some()))
                .collect();
            let status = Status {
                workers,
                starting: state.starting,
                queued: state.queue.len(),
                waiting_for_room: state.room.len(),
                max: state.max,
                idle: state.idle,
                totals: state.totals,
                breaker: state.crash.tripped.as_ref().map(|e| crate::error::chain(e)),
            };
            (status, pids)
        };
        // Read outside the lock: /proc is not free.
        for (worker, pid) in status.workers.iter_mut().zip(pids) {
            worker.rss = pid.and_then(crate::sys::memory::rss_bytes);
        }
        status
    }

    /// Changes the most workers forked from the pool's own template (the
    /// other [sources](super::PoolBuilder::source) keep theirs): more start
    /// as calls need them, extra ones are let go (the idlest first) after
    /// finishing their calls.
    pub fn set_max(&self, max: usize) {
        let mut state = self.inner.lock();
        let others: usize = state.sources[1..].iter().map(|s| s.max).sum();
        state.sources[0].max = if others == 0 { max.max(1) } else { max };
        state.refresh_max();
        state.idle = state.idle.min(state.max);
        drop(state);
        self.tend();
    }

    /// Changes the workers kept when quiet: more start at once, extra ones
    /// stop as they idle for the stop interval.
    pub fn set_idle(&self, idle: usize) {
        let mut state = self.inner.lock();
        state.idle = idle.min(state.max);
        drop(state);
        self.tend();
    }

    /// Rearms a tripped crash-loop breaker: the pool starts workers again.
    pub fn reset_breaker(&self) {
        let mut state = self.inner.lock();
        state.crash = super::state::Crash::default();
        drop(state);
        self.tend();
    }

    fn tend(&self) {
        let mut chores = Chores::default();
        self.inner.lock().plan(&self.inner.config, &mut chores);
        chores.wake_supervisor = true;
        self.inner.run_chores(chores);
    }

    /// Shuts the pool down gracefully: new calls are refused; queued and
    /// running calls finish, then the workers exit; if that takes longer
    /// than `grace`, the calls still queued fail and the workers still
    /// running are killed (their calls fail with [`Error::ShutDown`]).
    /// Returns once every worker has ended and `on_destroy` has run.
    /// Blocks: in async code, call it in `spawn_blocking`.
    ///
    /// ```
    /// fn double(n: u64) -> u64 {
    ///     n * 2
    /// }
    /// let pool = anyfork::Fork::new()?.pool(double).idle(2).build()?;
    /// assert_eq!(pool.call_blocking(1)?, 2);
    /// pool.shutdown(std::time::Duration::from_secs(5));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn shutdown(self, grace: Duration) {
        {
            let mut state = self.inner.lock();
            let deadline = Instant::now() + grace;
            let sooner = state
                .closing
                .and_then(|c| c.deadline)
                .map_or(deadline, |d| d.min(deadline));
            state.closing = Some(Closing {
                deadline: Some(sooner),
            });
            // Those waiting for room come in to meet the refusal.
            for waiter in state.room.drain(..) {
                waiter.grant();
            }
        }
        self.inner.wake.notify();
        let inner = self.inner.clone();
        drop(self);
        let mut state = inner.lock();
        while !state.finished {
            state = inner
                .ended
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Shuts the pool down at once: the workers are killed, every queued
    /// and running call fails with [`Error::ShutDown`]. Returns once every
    /// worker has ended.
    pub fn shutdown_now(self) {
        self.shutdown(Duration::ZERO);
    }
}
