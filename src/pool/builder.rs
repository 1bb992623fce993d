//! [`PoolBuilder`]: the pool's options (the Perl module's `max`, `idle`,
//! `load`, `start`, `stop`, `on_destroy`, and what it lacks), the RPC
//! options every worker starts with, and starting the pool.

use std::marker::PhantomData;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::config::Config;
use super::handle::{Handle, Pool};
use super::inner::{Inner, Recipe, WorkerHandler};
use super::state::{Chores, State};
use super::status::WorkerEvent;
use crate::fork::Fork;
use crate::rpc::{IntoRpc, NoticeHandler, Octets, RpcBuilder, RpcFunction, UntypedRpc};

type Configure<Req, Rep> = Arc<
    dyn Fn(RpcBuilder<Req, Rep, Octets>, NoticeHandler) -> Result<UntypedRpc, crate::Error>
        + Send
        + Sync,
>;

/// Prepares a [`Pool`]: made by [`Fork::pool`].
#[must_use = "a PoolBuilder does nothing until build()"]
pub struct PoolBuilder<Req, Rep> {
    template: Fork,
    function: RpcFunction,
    configure: Configure<Req, Rep>,
    max: usize,
    /// Other templates to fork workers from, each with its own `max`.
    sources: Vec<(Fork, usize)>,
    idle: usize,
    config: Config,
    on_worker: Option<WorkerHandler>,
    on_destroy: Option<Box<dyn FnOnce() + Send>>,
    _types: PhantomData<fn(Req) -> Rep>,
}

impl<Req, Rep> std::fmt::Debug for PoolBuilder<Req, Rep> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("function", &self.function.label())
            .field("max", &self.max)
            .field("idle", &self.idle)
            .field("load", &self.config.load)
            .finish_non_exhaustive()
    }
}

impl Fork {
    /// A pool of workers forked from this process (the template), each
    /// running `function` as an RPC server (AnyEvent::Fork::Pool's `run`).
    /// What the template was given (`eval`, `require`, `send_arg`,
    /// `send_fh`) every worker has. See [the `pool` module](mod@crate::pool).
    ///
    /// ```
    /// fn double(n: u64) -> u64 {
    ///     n * 2
    /// }
    /// let pool = anyfork::Fork::new()?.pool(double).max(2).build()?;
    /// assert_eq!(pool.call_blocking(21)?, 42);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn pool<M, F: IntoRpc<M>>(self, function: F) -> PoolBuilder<F::Req, F::Rep>
    where
        F::Req: Serialize + Send + 'static,
        F::Rep: DeserializeOwned + Send + 'static,
    {
        let function = function.into_rpc();
        let sequential = crate::rpc::registry::is_sequential(&function);
        PoolBuilder {
            template: self,
            configure: plain_configure(),
            config: Config {
                function: function.label().to_owned(),
                load: 2,
                start: Duration::from_millis(100),
                stop: Duration::from_secs(10),
                queue_limit: None,
                max_calls: None,
                max_rss: None,
                max_age: None,
                call_timeout: None,
                kill_on_timeout: true,
                crash_limit: 5,
                sequential,
                stop_grace: Duration::from_secs(10),
            },
            function,
            max: crate::ncpu(),
            sources: Vec::new(),
            idle: 0,
            on_worker: None,
            on_destroy: None,
            _types: PhantomData,
        }
    }
}

/// Starts workers with the RPC builder's defaults.
fn plain_configure<Req, Rep>() -> Configure<Req, Rep>
where
    Req: Serialize + 'static,
    Rep: DeserializeOwned + 'static,
{
    Arc::new(|builder: RpcBuilder<Req, Rep, Octets>, notice| {
        builder
            .on_notice(notice)
            .start()
            .map(crate::rpc::Rpc::into_untyped)
    })
}

impl<Req, Rep> PoolBuilder<Req, Rep>
where
    Req: Serialize + Send + 'static,
    Rep: DeserializeOwned + Send + 'static,
{
    /// The most workers (Perl: `max`, default 4). Default: [`ncpu()`](crate::ncpu),
    /// the CPUs this process may use. At least 1, unless other
    /// [sources](PoolBuilder::source) give workers: then 0 forks nothing
    /// from this template.
    pub fn max(mut self, max: usize) -> Self {
        self.max = max;
        self
    }

    /// Also forks workers from `template`, at most `max` of them at a time:
    /// a pool across machines, with a template on each (see
    /// [`remote`](crate::remote)). Calls go to the least-loaded worker
    /// wherever it runs; a new worker comes from the least full source. If
    /// a source's template goes (its connection dropped), only the calls
    /// on its workers fail (or are retried, for idempotent calls) and its
    /// share of `max` is given up: replacements start on the other
    /// sources, up to their own `max`.
    ///
    /// ```
    /// use std::process::Command;
    /// use anyfork::remote::{Remote, serve_arg};
    ///
    /// fn double(n: u64) -> u64 {
    ///     n * 2
    /// }
    ///
    /// let mut command = Command::new(std::env::current_exe()?);
    /// command.arg(serve_arg()); // `Remote::ssh("host")` for another machine
    /// let far = Remote::command(command)?;
    /// let pool = anyfork::Fork::new()?
    ///     .pool(double)
    ///     .max(1)
    ///     .source(far.new_exec()?, 2)
    ///     .idle(3)
    ///     .build()?;
    /// assert_eq!(pool.call_blocking(21)?, 42);
    /// assert_eq!(pool.status().max, 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn source(mut self, template: Fork, max: usize) -> Self {
        self.sources.push((template, max));
        self
    }

    /// Workers kept when quiet, started at once (Perl: `idle`, default 0).
    pub fn idle(mut self, idle: usize) -> Self {
        self.idle = idle;
        self
    }

    /// The most calls in flight on one worker (Perl: `load`, default 2):
    /// 1 for the lowest latency, 2 or more so a worker finds its next call
    /// waiting when it finishes one. At least 1.
    pub fn load(mut self, load: usize) -> Self {
        self.config.load = load.max(1);
        self
    }

    /// The least time between starting two workers for waiting calls
    /// (Perl: `start`, default 0.1 s). Zero starts as many as the queue
    /// needs at once. Workers up to `idle`, and replacements of recycled
    /// ones, start at once regardless.
    pub fn start_interval(mut self, interval: Duration) -> Self {
        self.config.start = interval;
        self
    }

    /// How long a worker above `idle` must have been idle to be stopped;
    /// at most one is stopped per interval (Perl: `stop`, default 10 s).
    pub fn stop_interval(mut self, interval: Duration) -> Self {
        self.config.stop = interval;
        self
    }

    /// A bound on the calls waiting in the queue (default: none). When it
    /// is full, [`Pool::call`] waits for room, [`Pool::call_blocking`]
    /// blocks, and [`Pool::try_call`] fails with
    /// [`Error::Full`](super::Error::Full).
    pub fn queue_limit(mut self, limit: usize) -> Self {
        self.config.queue_limit = Some(limit);
        self
    }

    /// Recycles a worker after `calls` calls plus up to `jitter` more
    /// (chosen per worker, so workers started together are not recycled
    /// together). Its replacement starts at once.
    pub fn max_calls(mut self, calls: u64, jitter: u64) -> Self {
        self.config.max_calls = Some((calls.max(1), jitter));
        self
    }

    /// Recycles a worker whose resident memory exceeds `bytes` after a
    /// call (measured after each call).
    pub fn max_rss(mut self, bytes: u64) -> Self {
        self.config.max_rss = Some(bytes);
        self
    }

    /// Recycles a worker once it has run this long.
    pub fn max_age(mut self, age: Duration) -> Self {
        self.config.max_age = Some(age);
        self
    }

    /// The deadline of every call that does not set its own (default:
    /// none). See [`kill_on_timeout`](Self::kill_on_timeout).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.config.call_timeout = Some(timeout);
        self
    }

    /// What happens when a call's deadline passes while a worker of the
    /// synchronous backend runs it: with `true` (the default) the worker is
    /// killed and replaced, and the calls queued behind it on that worker go
    /// to others; with `false` the call is only given up, and the worker
    /// computes on. On the asynchronous backend the call is always
    /// cancelled (the worker aborts it).
    pub fn kill_on_timeout(mut self, kill: bool) -> Self {
        self.config.kill_on_timeout = kill;
        self
    }

    /// How many workers in a row may die before answering a call before the
    /// pool stops starting them and fails calls with
    /// [`Error::CrashLoop`](super::Error::CrashLoop) (default 5). Starts
    /// back off meanwhile: the start interval, doubled at each death.
    pub fn crash_limit(mut self, limit: u32) -> Self {
        self.config.crash_limit = limit.max(1);
        self
    }

    /// How long a worker that was let go (retired, recycled, idle, shut
    /// down) may take to finish and exit before it is killed (default
    /// 10 s).
    pub fn stop_grace(mut self, grace: Duration) -> Self {
        self.config.stop_grace = grace;
        self
    }

    /// Called when a worker starts (with its pid) and when one ends (why,
    /// and how), from the pool's supervisor thread or a caller's; it must
    /// not call the pool.
    pub fn on_worker(mut self, handler: impl FnMut(&WorkerEvent) + Send + 'static) -> Self {
        self.on_worker = Some(Box::new(handler));
        self
    }

    /// Called once the pool was dropped (or shut down) and its last worker
    /// has ended (Perl: `on_destroy`).
    pub fn on_destroy(mut self, handler: impl FnOnce() + Send + 'static) -> Self {
        self.on_destroy = Some(Box::new(handler));
        self
    }

    /// The RPC options every worker starts with: `configure` gets each
    /// worker's [`RpcBuilder`] and sets codec, `init`, `done`,
    /// `on_event`, `on_error`, buffer sizes and so on (Perl passes these
    /// to AnyEvent::Fork::RPC). It runs once per worker, so handlers made
    /// in it are per worker.
    ///
    /// ```
    /// use anyfork::rpc::Codec;
    /// fn double(n: u64) -> u64 {
    ///     n * 2
    /// }
    /// let pool = anyfork::Fork::new()?
    ///     .pool(double)
    ///     .rpc(|rpc| rpc.codec(Codec::Json).buflen(4096))
    ///     .build()?;
    /// assert_eq!(pool.call_blocking(4)?, 8);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn rpc<Ev, F>(mut self, configure: F) -> Self
    where
        Ev: DeserializeOwned + 'static,
        F: Fn(RpcBuilder<Req, Rep, Octets>) -> RpcBuilder<Req, Rep, Ev> + Send + Sync + 'static,
    {
        self.configure = Arc::new(move |builder, notice| {
            configure(builder)
                .on_notice(notice)
                .start()
                .map(crate::rpc::Rpc::into_untyped)
        });
        self
    }

    /// Sets the request and reply types (for a function named by string),
    /// as [`RpcBuilder::types`] does; RPC options set before are dropped.
    pub fn types<Req2, Rep2>(self) -> PoolBuilder<Req2, Rep2>
    where
        Req2: Serialize + Send + 'static,
        Rep2: DeserializeOwned + Send + 'static,
    {
        PoolBuilder {
            template: self.template,
            function: RpcFunction {
                typed: true,
                ..self.function
            },
            configure: plain_configure(),
            max: self.max,
            sources: self.sources,
            idle: self.idle,
            config: self.config,
            on_worker: self.on_worker,
            on_destroy: self.on_destroy,
            _types: PhantomData,
        }
    }

    /// Starts the pool: `idle` workers at once, and its supervisor thread.
    ///
    /// # Errors
    ///
    /// [`Error::Start`](super::Error::Start) if the supervisor thread
    /// cannot be started. Workers that cannot be started are retried, then
    /// reported by calls ([`Error::CrashLoop`](super::Error::CrashLoop)).
    pub fn build(self) -> Result<Pool<Req, Rep>, super::Error> {
        let (function, configure) = (self.function, self.configure);
        let recipe: Recipe = Box::new(move |template: &Fork, notice| {
            let builder = template.fork()?.rpc_of::<Req, Rep>(function.clone());
            configure(builder, notice)
        });
        let mut maxes = vec![if self.sources.is_empty() {
            self.max.max(1)
        } else {
            self.max
        }];
        maxes.extend(self.sources.iter().map(|(_, max)| *max));
        if maxes.iter().sum::<usize>() == 0 {
            maxes[0] = 1;
        }
        let total: usize = maxes.iter().sum();
        let mut templates = vec![self.template];
        templates.extend(self.sources.into_iter().map(|(template, _)| template));
        let io = |source: std::io::Error| {
            super::Error::Start(Arc::new(crate::Error::Io {
                process: crate::error::ProcessName {
                    pid: None,
                    origin: crate::error::Origin::Exec,
                },
                doing: "starting the pool's supervisor".into(),
                source,
            }))
        };
        let inner = Arc::new(Inner {
            state: Mutex::new(State::new(&maxes, self.idle.min(total))),
            config: self.config,
            recipe,
            templates,
            wake: crate::sys::wake::Wake::new().map_err(io)?,
            ended: Condvar::new(),
            on_worker: Mutex::new(self.on_worker),
            on_destroy: Mutex::new(self.on_destroy),
            next_seq: std::sync::atomic::AtomicU64::new(1),
        });
        let mut chores = Chores::default();
        let _ = inner
            .lock()
            .plan_starts(&inner.config, std::time::Instant::now(), &mut chores);
        inner.run_chores(chores);
        super::supervisor::spawn(inner.clone()).map_err(io)?;
        Ok(Pool {
            handle: Arc::new(Handle {
                inner: inner.clone(),
            }),
            inner,
            _types: PhantomData,
        })
    }
}
