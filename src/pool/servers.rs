//! [`ServerPool`]: the manual's pre-forked server pool, supervised. N
//! workers forked from a template, each running a long-lived function
//! (typically an accept loop on a listening socket the template was given
//! with `send_fh`); restarted with back-off when they die; resized; and
//! replaced gracefully from a new template (a reload).
//!
//! # What a worker is told
//!
//! A worker runs `fn(UnixStream, Args)` as with [`Fork::run`]. The socket
//! is its line to the pool: when the pool wants it to stop (a reload, a
//! smaller pool, a shutdown) it closes its end, and the worker reads
//! end-of-file there. A worker then stops accepting, finishes the
//! connections it has, and returns. One that does not within the stop
//! grace is killed. (Watch the socket beside the listener, with `poll`,
//! as the HTTP example does.)

use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::exits::{POLL_WITHOUT_PIDFD, wait_for_exits};
use crate::registry::{FunctionRef, IntoRun};
use crate::sys::wake::Wake;
use crate::{Fork, Process};

type ServerHandler = Box<dyn FnMut(&ServerEvent) + Send>;

/// How a server pool behaves: see [`Fork::server_pool`].
#[must_use = "a ServerPoolBuilder does nothing until start()"]
pub struct ServerPoolBuilder {
    template: Fork,
    function: FunctionRef,
    workers: usize,
    backoff: (Duration, Duration),
    stop_grace: Duration,
    on_worker: Option<ServerHandler>,
}

impl std::fmt::Debug for ServerPoolBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerPoolBuilder")
            .field("function", &self.function.label())
            .field("workers", &self.workers)
            .finish_non_exhaustive()
    }
}

/// A server worker came or went.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerEvent {
    /// A worker started.
    Started {
        /// Its pid.
        pid: u32,
        /// The reload it belongs to (0 before the first).
        generation: u64,
    },
    /// A worker ended: asked to stop (`planned`), or not (it died and is
    /// restarted).
    Stopped {
        /// Its pid.
        pid: u32,
        /// How it ended, if it was reaped.
        status: Option<std::process::ExitStatus>,
        /// The pool had asked it to stop.
        planned: bool,
    },
}

/// A snapshot of a server pool.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStatus {
    /// The workers serving now (not asked to stop), by pid.
    pub serving: Vec<u32>,
    /// Workers asked to stop that have not exited yet.
    pub stopping: Vec<u32>,
    /// The number of workers wanted.
    pub wanted: usize,
    /// Reloads so far.
    pub generation: u64,
    /// Workers that died unplanned and were restarted.
    pub restarts: u64,
}

impl Fork {
    /// A supervised pool of `function` servers forked from this template
    /// (AnyEvent::Fork's pre-forked server pool, kept alive): see
    /// [`ServerPool`].
    ///
    /// ```
    /// use std::os::unix::net::UnixStream;
    /// fn serve(control: UnixStream, _args: anyfork::Args) {
    ///     // A real server accepts on a listener from the template until
    ///     // this socket ends; this one only waits.
    ///     let _ = std::io::Read::read(&mut &control, &mut [0u8; 1]);
    /// }
    /// let servers = anyfork::Fork::new()?.server_pool(serve).workers(2).start()?;
    /// assert_eq!(servers.status().serving.len(), 2);
    /// servers.shutdown(std::time::Duration::from_secs(5));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn server_pool(self, function: impl IntoRun) -> ServerPoolBuilder {
        ServerPoolBuilder {
            template: self,
            function: function.into_run(),
            workers: crate::ncpu(),
            backoff: (Duration::from_millis(100), Duration::from_secs(10)),
            stop_grace: Duration::from_secs(10),
            on_worker: None,
        }
    }
}

impl ServerPoolBuilder {
    /// How many workers (default [`ncpu()`](crate::ncpu)).
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// The pause before restarting a worker that died within a second of
    /// its start: `first`, doubled each time one dies so in a row, at most
    /// `most`. A worker that died after running a while is restarted at
    /// once.
    pub fn backoff(mut self, first: Duration, most: Duration) -> Self {
        self.backoff = (first, most.max(first));
        self
    }

    /// How long a worker asked to stop may take to finish its connections
    /// before it is killed (default 10 s).
    pub fn stop_grace(mut self, grace: Duration) -> Self {
        self.stop_grace = grace;
        self
    }

    /// Called as workers start and stop, from the pool's thread; it must
    /// not call the pool.
    pub fn on_worker(mut self, handler: impl FnMut(&ServerEvent) + Send + 'static) -> Self {
        self.on_worker = Some(Box::new(handler));
        self
    }

    /// Starts the workers (waiting until each has started the function)
    /// and the pool's supervising thread.
    ///
    /// # Errors
    ///
    /// As for [`Fork::run`] if the first workers cannot be started; an
    /// I/O error if the thread cannot be.
    pub fn start(self) -> Result<ServerPool, crate::Error> {
        let io = |source: std::io::Error| crate::Error::Io {
            process: crate::error::ProcessName {
                pid: None,
                origin: crate::error::Origin::Exec,
            },
            doing: "starting the server pool's supervisor".into(),
            source,
        };
        let inner = Arc::new(ServerInner {
            state: Mutex::new(ServerState {
                template: Arc::new(self.template),
                generation: 0,
                wanted: self.workers,
                workers: Vec::new(),
                restarts: 0,
                in_a_row: 0,
                retry_at: None,
                closing: None,
                finished: false,
            }),
            function: self.function,
            backoff: self.backoff,
            stop_grace: self.stop_grace,
            wake: Wake::new().map_err(io)?,
            finished: Condvar::new(),
            on_worker: Mutex::new(self.on_worker),
        });
        // The first workers, here, so that errors reach the caller.
        let template = inner.lock().template.clone();
        for _ in 0..self.workers {
            let server = inner.start_one(&template, 0)?;
            inner.lock().workers.push(server);
        }
        let supervised = inner.clone();
        std::thread::Builder::new()
            .name("anyfork-servers".into())
            .spawn(move || supervised.supervise())
            .map_err(io)?;
        Ok(ServerPool { inner })
    }
}

/// A supervised pool of server processes: made by [`Fork::server_pool`].
/// Dropping it shuts it down as [`shutdown`](Self::shutdown) does with
/// the stop grace, without waiting.
#[derive(Debug)]
pub struct ServerPool {
    inner: Arc<ServerInner>,
}

struct ServerInner {
    state: Mutex<ServerState>,
    function: FunctionRef,
    backoff: (Duration, Duration),
    stop_grace: Duration,
    wake: Wake,
    finished: Condvar,
    on_worker: Mutex<Option<ServerHandler>>,
}

impl std::fmt::Debug for ServerInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerInner")
            .field("function", &self.function.label())
            .finish_non_exhaustive()
    }
}

struct ServerState {
    template: Arc<Fork>,
    generation: u64,
    wanted: usize,
    workers: Vec<Server>,
    restarts: u64,
    /// Workers that died young, in a row.
    in_a_row: u32,
    retry_at: Option<Instant>,
    /// Shutting down: workers still running at this time are killed.
    closing: Option<Instant>,
    finished: bool,
}

/// One worker.
struct Server {
    process: Process,
    /// The pool's end of its socket; `None` once it was asked to stop.
    control: Option<UnixStream>,
    generation: u64,
    started: Instant,
    stopping_since: Option<Instant>,
}

/// A worker that dies within this of its start counts toward the back-off.
const YOUNG: Duration = Duration::from_secs(1);

impl ServerInner {
    fn lock(&self) -> MutexGuard<'_, ServerState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn tell(&self, event: ServerEvent) {
        let mut handler = self
            .on_worker
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(handler) = handler.as_mut() {
            handler(&event);
        }
    }

    fn start_one(&self, template: &Fork, generation: u64) -> Result<Server, crate::Error> {
        let (control, process) = template.fork()?.run_with_process(self.function.clone())?;
        self.tell(ServerEvent::Started {
            pid: process.id(),
            generation,
        });
        Ok(Server {
            process,
            control: Some(control),
            generation,
            started: Instant::now(),
            stopping_since: None,
        })
    }

    /// The supervising thread.
    fn supervise(self: Arc<Self>) {
        loop {
            let now = Instant::now();
            let (start, template, generation, next, done) = self.plan(now);
            if done {
                break;
            }
            for _ in 0..start {
                match self.start_one(&template, generation) {
                    Ok(server) => self.lock().workers.push(server),
                    Err(e) => {
                        tracing::error!("anyfork server pool: cannot start a worker: {e}");
                        self.died_young();
                    }
                }
            }
            let watch: Vec<Process> = self
                .lock()
                .workers
                .iter()
                .map(|w| w.process.clone())
                .collect();
            // After starts, look again soon: one that failed set a pause.
            let until = if start > 0 {
                let soon = Instant::now() + POLL_WITHOUT_PIDFD;
                Some(next.map_or(soon, |n| n.min(soon)))
            } else {
                next
            };
            wait_for_exits(&watch.iter().collect::<Vec<_>>(), false, &self.wake, until);
            for process in &watch {
                if let Ok(Some(status)) = process.try_wait() {
                    self.exited(process.id(), Some(status));
                }
            }
        }
        self.lock().finished = true;
        self.finished.notify_all();
    }

    /// Decides: how many workers to start (from which template), which to
    /// ask to stop or kill; when to look again; whether all is over.
    fn plan(&self, now: Instant) -> (usize, Arc<Fork>, u64, Option<Instant>, bool) {
        let mut state = self.lock();
        let mut next: Option<Instant> = None;
        let mut sooner = |at: Instant| next = Some(next.map_or(at, |n: Instant| n.min(at)));
        let generation = state.generation;
        let closing = state.closing;
        // Ask to stop: everyone when closing; the old generation once as
        // many of the new one serve as are wanted; the extra ones.
        let current = |w: &Server| w.generation == generation && w.control.is_some();
        let serving_new = state.workers.iter().filter(|w| current(w)).count();
        let wanted = state.wanted;
        let mut extra = serving_new.saturating_sub(wanted);
        for worker in &mut state.workers {
            let stop = closing.is_some()
                || (worker.generation != generation && serving_new >= wanted)
                || (worker.generation == generation && worker.control.is_some() && extra > 0);
            if stop && worker.control.is_some() {
                if worker.generation == generation && closing.is_none() {
                    extra -= 1;
                }
                // End-of-file on its socket: finish and exit.
                worker.control = None;
                worker.stopping_since = Some(now);
            }
            if let Some(since) = worker.stopping_since {
                let kill_at = match closing {
                    Some(deadline) => deadline.min(since + self.stop_grace),
                    None => since + self.stop_grace,
                };
                if kill_at <= now {
                    let _ = worker.process.kill(crate::Signal::KILL);
                } else {
                    sooner(kill_at);
                }
            }
        }
        if closing.is_some() {
            let done = state.workers.is_empty();
            return (
                0,
                state.template.clone(),
                generation,
                next.or(Some(now + Duration::from_millis(100))),
                done,
            );
        }
        let missing = wanted.saturating_sub(serving_new);
        let start = match state.retry_at {
            Some(at) if at > now => {
                sooner(at);
                0
            }
            _ => missing,
        };
        (start, state.template.clone(), generation, next, false)
    }

    fn died_young(&self) {
        let mut state = self.lock();
        state.in_a_row += 1;
        let (first, most) = self.backoff;
        let pause = first
            .saturating_mul(1 << state.in_a_row.min(16).saturating_sub(1))
            .min(most);
        state.retry_at = Some(Instant::now() + pause);
    }

    /// Worker `pid` exited.
    fn exited(&self, pid: u32, status: Option<std::process::ExitStatus>) {
        let removed = {
            let mut state = self.lock();
            let Some(index) = state.workers.iter().position(|w| w.process.id() == pid) else {
                return;
            };
            state.workers.remove(index)
        };
        let planned = removed.stopping_since.is_some();
        if !planned {
            let mut state = self.lock();
            state.restarts += 1;
            if removed.started.elapsed() >= YOUNG {
                state.in_a_row = 0;
                state.retry_at = None;
            }
            drop(state);
            if removed.started.elapsed() < YOUNG {
                self.died_young();
            }
        }
        self.tell(ServerEvent::Stopped {
            pid,
            status,
            planned,
        });
    }
}

impl ServerPool {
    /// A snapshot of the workers.
    pub fn status(&self) -> ServerStatus {
        let state = self.inner.lock();
        ServerStatus {
            serving: state
                .workers
                .iter()
                .filter(|w| w.control.is_some())
                .map(|w| w.process.id())
                .collect(),
            stopping: state
                .workers
                .iter()
                .filter(|w| w.control.is_none())
                .map(|w| w.process.id())
                .collect(),
            wanted: state.wanted,
            generation: state.generation,
            restarts: state.restarts,
        }
    }

    /// Changes the number of workers: more start at once; extra ones are
    /// asked to stop.
    pub fn set_workers(&self, workers: usize) {
        self.inner.lock().wanted = workers;
        self.inner.wake.notify();
    }

    /// Replaces every worker gracefully with workers forked from
    /// `template` (give it the same listener, and whatever the new code
    /// needs): the new ones start, and once as many serve as are wanted,
    /// the old ones are asked to finish their connections and exit. The
    /// old template is dropped when its last worker has been started.
    pub fn reload(&self, template: Fork) {
        let mut state = self.inner.lock();
        state.template = Arc::new(template);
        state.generation += 1;
        state.in_a_row = 0;
        state.retry_at = None;
        drop(state);
        self.inner.wake.notify();
    }

    /// Stops every worker: each is asked to finish and exit, and killed
    /// if it has not within `grace`. Returns when all have exited.
    pub fn shutdown(self, grace: Duration) {
        let inner = self.inner.clone();
        {
            let mut state = inner.lock();
            state.closing = Some(Instant::now() + grace);
        }
        inner.wake.notify();
        drop(self);
        let mut state = inner.lock();
        while !state.finished {
            state = inner
                .finished
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

impl Drop for ServerPool {
    fn drop(&mut self) {
        let mut state = self.inner.lock();
        if state.closing.is_none() {
            state.closing = Some(Instant::now() + self.inner.stop_grace);
        }
        drop(state);
        self.inner.wake.notify();
    }
}

/// Whether the pool has asked this worker to stop: end-of-file (or an
/// error) on its socket. Does not block.
///
/// ```
/// let (pool_end, worker_end) = std::os::unix::net::UnixStream::pair()?;
/// assert!(!anyfork::pool::stop_requested(&worker_end));
/// drop(pool_end);
/// assert!(anyfork::pool::stop_requested(&worker_end));
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn stop_requested(control: &UnixStream) -> bool {
    let mut byte = [0u8; 1];
    match rustix::net::recv(
        control,
        &mut byte,
        rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT,
    ) {
        Ok((0, _)) => true,
        Ok(_) => false,
        Err(e) => e != rustix::io::Errno::AGAIN,
    }
}
