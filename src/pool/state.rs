//! The pool's state, and the decisions made under its lock: which worker
//! takes a call, when to start workers. Work that talks to processes
//! (sending, starting, killing) is collected as [`Chores`] and done after
//! the lock is released, so that no process, socket or user handler is
//! ever waited for while the pool is locked.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use super::config::Config;
use super::error::{Death, Error};
use super::status::{StopReason, Totals, WorkerEvent};
use super::ticket::{RoomWaiter, Ticket};
use crate::rpc::{Codec, UntypedRpc};

/// Why a worker takes no new calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Leaving {
    /// It is recycled: it called [`retire`](super::retire), or reached
    /// `max_calls`, `max_rss` or `max_age`. Its replacement starts at once.
    Recycled(StopReason),
    /// It was idle above `idle` for `stop`.
    Idle,
    /// The pool is shutting down, or was resized below it.
    Shutdown,
    /// It died, or its connection broke.
    Dead,
}

/// Why the pool killed a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KilledFor {
    /// Call `seq` overran its deadline, or was cancelled with
    /// `kill_on_cancel`; it was running.
    Call(u64),
    /// The shutdown's grace ran out.
    Shutdown,
}

/// One worker process.
pub(super) struct Worker {
    pub(super) id: u64,
    /// The source it was forked from (see the `sources` module).
    pub(super) source: usize,
    /// `None` once let go (the child finishes and exits).
    pub(super) rpc: Option<Arc<UntypedRpc>>,
    /// Learns its pid and process, also after it was let go.
    pub(super) watch: Arc<crate::rpc::RpcWatch>,
    pub(super) pid: Option<u32>,
    pub(super) process: Option<crate::Process>,
    pub(super) load: usize,
    /// Calls sent to it whose callers have not yet settled them: it is
    /// remembered (how it died, why it was killed) until they have.
    pub(super) calls: usize,
    /// Calls answered with a result.
    pub(super) served: u64,
    /// Calls answered at all (a result, or a failure in the function).
    pub(super) answered: u64,
    pub(super) started_at: Instant,
    pub(super) idle_since: Instant,
    pub(super) leaving: Option<Leaving>,
    /// Recycle after this many calls.
    pub(super) max_calls: Option<u64>,
    pub(super) killed_for: Option<KilledFor>,
    /// How it ended, once known.
    pub(super) death: Option<Death>,
    /// The process has exited (and was reaped).
    pub(super) exited: bool,
    /// When it was let go.
    pub(super) released_at: Option<Instant>,
    /// Where its cgroup's OOM kills are counted, and the count when it
    /// said its pid.
    pub(super) oom: Option<(std::path::PathBuf, u64)>,
    /// Why it could not serve (its server gave up), if it said.
    pub(super) broken: Option<String>,
    /// Its resident memory after its last call, when measured.
    pub(super) rss: Option<u64>,
}

impl Worker {
    /// Lets the child go (it finishes and exits), once; the supervisor is
    /// woken to see that it does within the stop grace.
    pub(super) fn release<Req>(&mut self, chores: &mut Chores<Req>) {
        if let Some(rpc) = self.rpc.take() {
            self.released_at = Some(Instant::now());
            chores.release.push(rpc);
            chores.wake_supervisor = true;
        }
    }
    /// The event for a worker that has ended.
    pub(super) fn stopped_event(&self) -> WorkerEvent {
        let reason = match (&self.killed_for, &self.leaving) {
            (Some(KilledFor::Call(_)), _) => Some(StopReason::Killed),
            (Some(KilledFor::Shutdown), _) | (_, Some(Leaving::Shutdown)) => {
                Some(StopReason::Shutdown)
            }
            (_, Some(Leaving::Recycled(reason))) => Some(*reason),
            (_, Some(Leaving::Idle)) => Some(StopReason::Idle),
            _ => None,
        };
        WorkerEvent::Stopped {
            pid: self.pid.unwrap_or(0),
            reason,
            death: self.death.clone().unwrap_or(Death::Unknown),
        }
    }

    /// Whether its cgroup's OOM killer struck since it started.
    pub(super) fn oom_struck(&self) -> bool {
        self.oom.as_ref().is_some_and(|(file, then)| {
            crate::sys::memory::oom_kills(file).is_some_and(|now| now > *then)
        })
    }

    /// Whether it takes new calls.
    pub(super) fn accepts(&self) -> bool {
        self.rpc.is_some() && self.leaving.is_none()
    }

    /// Whether it counts toward `max` (leaving workers do not: they are
    /// replaced before they stop).
    pub(super) fn counts(&self) -> bool {
        self.leaving.is_none()
    }
}

/// The crash-loop breaker.
#[derive(Default)]
pub(super) struct Crash {
    /// Workers that died in a row before answering a call.
    pub(super) in_a_row: u32,
    /// No start before this.
    pub(super) retry_at: Option<Instant>,
    /// Tripped: every call fails with this.
    pub(super) tripped: Option<Error>,
}

/// A shutdown under way.
#[derive(Debug, Clone, Copy)]
pub(super) struct Closing {
    /// When calls still running are killed (`None`: never).
    pub(super) deadline: Option<Instant>,
}

/// A call to send to a worker once the lock is released.
pub(super) struct Assignment<Req> {
    pub(super) ticket: Arc<Ticket<Req>>,
    pub(super) worker: u64,
    pub(super) rpc: Arc<UntypedRpc>,
    /// The workers' codec, to encode the request with.
    pub(super) codec: Codec,
}

/// Work decided under the lock, done after it.
pub(super) struct Chores<Req> {
    pub(super) assign: Vec<Assignment<Req>>,
    pub(super) fail: Vec<(Arc<Ticket<Req>>, Error)>,
    pub(super) release: Vec<Arc<UntypedRpc>>,
    pub(super) kill: Vec<(Arc<UntypedRpc>, String)>,
    /// Workers to start, by reserved id.
    /// Workers to start: id, source.
    pub(super) start: Vec<(u64, usize)>,
    pub(super) events: Vec<WorkerEvent>,
    pub(super) wake_supervisor: bool,
}

impl<Req> Default for Chores<Req> {
    fn default() -> Self {
        Chores {
            assign: Vec::new(),
            fail: Vec::new(),
            release: Vec::new(),
            kill: Vec::new(),
            start: Vec::new(),
            events: Vec::new(),
            wake_supervisor: false,
        }
    }
}

impl<Req> Chores<Req> {
    pub(super) fn is_empty(&self) -> bool {
        self.assign.is_empty()
            && self.fail.is_empty()
            && self.release.is_empty()
            && self.kill.is_empty()
            && self.start.is_empty()
            && self.events.is_empty()
            && !self.wake_supervisor
    }
}

/// One source of workers' place in the state (see the `sources` module).
#[derive(Debug, Clone)]
pub(super) struct Source {
    /// The most workers from it.
    pub(super) max: usize,
    /// Workers from it being started.
    pub(super) starting: usize,
    /// Its template is gone.
    pub(super) down: bool,
}

impl Source {
    pub(super) fn new(max: usize) -> Source {
        Source {
            max,
            starting: 0,
            down: false,
        }
    }
}

/// Everything the pool's lock guards.
pub(super) struct State<Req> {
    pub(super) workers: Vec<Worker>,
    /// Workers being started (counted toward `max`).
    pub(super) starting: usize,
    pub(super) queue: VecDeque<Arc<Ticket<Req>>>,
    /// Callers waiting for room in a full queue, in order.
    pub(super) room: VecDeque<Arc<RoomWaiter>>,
    /// Places in the queue kept for callers who were given room.
    pub(super) reserved: usize,
    /// The sum of the `max` of the sources that are up.
    pub(super) max: usize,
    pub(super) sources: Vec<Source>,
    pub(super) idle: usize,
    pub(super) last_start: Option<Instant>,
    /// Replacements of recycled or retired workers to start at once.
    pub(super) replace_now: usize,
    pub(super) last_stop: Instant,
    pub(super) totals: Totals,
    pub(super) crash: Crash,
    pub(super) closing: Option<Closing>,
    /// Pool handles alive; at 0 the pool drains and ends.
    pub(super) handles: usize,
    pub(super) next_worker: u64,
    /// The workers' codec, known once one was started.
    pub(super) codec: Option<Codec>,
    /// Every worker has ended; the supervisor finishes.
    pub(super) ended: bool,
    /// `on_destroy` has run; the supervisor is gone.
    pub(super) finished: bool,
}

impl<Req> State<Req> {
    pub(super) fn new(maxes: &[usize], idle: usize) -> State<Req> {
        let max = maxes.iter().sum();
        State {
            sources: maxes.iter().map(|&max| Source::new(max)).collect(),
            workers: Vec::new(),
            starting: 0,
            queue: VecDeque::new(),
            room: VecDeque::new(),
            reserved: 0,
            max,
            idle,
            last_start: None,
            replace_now: 0,
            last_stop: Instant::now(),
            totals: Totals::default(),
            crash: Crash::default(),
            closing: None,
            handles: 1,
            next_worker: 1,
            codec: None,
            ended: false,
            finished: false,
        }
    }

    pub(super) fn worker(&mut self, id: u64) -> Option<&mut Worker> {
        self.workers.iter_mut().find(|w| w.id == id)
    }

    /// The least-loaded worker that takes calls and has room under `load`.
    fn pick(&self, load: usize) -> Option<usize> {
        self.workers
            .iter()
            .enumerate()
            .filter(|(_, w)| w.accepts() && w.load < load)
            .min_by_key(|(_, w)| w.load)
            .map(|(i, _)| i)
    }

    /// Whether a new call may join the queue now (callers waiting for room
    /// go first).
    pub(super) fn has_room(&self, config: &Config) -> bool {
        let Some(limit) = config.queue_limit else {
            return true;
        };
        if !self.room.is_empty() {
            return false;
        }
        (self.queue.is_empty() && self.pick(config.load).is_some())
            || self.queue.len() + self.reserved < limit
    }

    /// Why a new call is refused, if it is.
    pub(super) fn refusal(&self, config: &Config) -> Option<Error> {
        if let Some(error) = &self.crash.tripped {
            return Some(error.clone());
        }
        if self.closing.is_some() || self.handles == 0 {
            return Some(Error::ShutDown {
                function: config.function.clone(),
                killed: false,
            });
        }
        None
    }

    /// Hands queued calls to workers with room, oldest first; gives the
    /// places they leave to callers waiting for room.
    pub(super) fn assign(&mut self, config: &Config, chores: &mut Chores<Req>) {
        // Known once a worker has started, which any pick needs.
        let Some(codec) = self.codec else {
            return;
        };
        while !self.queue.is_empty() {
            let Some(index) = self.pick(config.load) else {
                break;
            };
            let Some(ticket) = self.queue.pop_front() else {
                break;
            };
            let worker = &mut self.workers[index];
            let Some(rpc) = worker.rpc.clone() else {
                self.queue.push_front(ticket);
                break;
            };
            worker.load += 1;
            worker.calls += 1;
            chores.assign.push(Assignment {
                ticket,
                worker: worker.id,
                rpc,
                codec,
            });
            self.give_room(config);
        }
    }

    /// Lets the first callers waiting for room in, as far as there is room.
    pub(super) fn give_room(&mut self, config: &Config) {
        let limit = config.queue_limit.unwrap_or(usize::MAX);
        while self.queue.len() + self.reserved < limit {
            let Some(waiter) = self.room.pop_front() else {
                break;
            };
            self.reserved += 1;
            waiter.grant();
        }
    }

    /// Puts a call back in the queue, in its place by age.
    pub(super) fn requeue(&mut self, ticket: Arc<Ticket<Req>>) {
        ticket.requeued();
        let at = self
            .queue
            .iter()
            .position(|t| t.seq > ticket.seq)
            .unwrap_or(self.queue.len());
        self.queue.insert(at, ticket);
        self.totals.requeued += 1;
    }

    /// Takes a call out of the queue (its caller gave up); whether it was
    /// there.
    pub(super) fn withdraw(&mut self, ticket: &Arc<Ticket<Req>>, config: &Config) -> bool {
        let Some(at) = self.queue.iter().position(|t| Arc::ptr_eq(t, ticket)) else {
            return false;
        };
        self.queue.remove(at);
        self.give_room(config);
        true
    }

    /// Forgets worker `id` once it has exited and every call sent to it
    /// was settled.
    pub(super) fn forget_if_done(&mut self, id: u64, chores: &mut Chores<Req>) {
        let Some(index) = self.workers.iter().position(|w| w.id == id) else {
            return;
        };
        let worker = &self.workers[index];
        if worker.exited && worker.load == 0 && worker.calls == 0 {
            let worker = self.workers.remove(index);
            chores.events.push(worker.stopped_event());
        }
    }

    /// Workers counted toward `max`, with those starting.
    pub(super) fn active(&self) -> usize {
        self.workers.iter().filter(|w| w.counts()).count() + self.starting
    }

    /// [`plan_starts`](Self::plan_starts) outside the supervisor: it is
    /// woken if a start must wait (it starts it then), or to learn the
    /// pids of the workers started.
    pub(super) fn plan(&mut self, config: &Config, chores: &mut Chores<Req>) {
        let later = self.plan_starts(config, Instant::now(), chores);
        chores.wake_supervisor |= later.is_some() || !chores.start.is_empty();
    }

    /// Decides which workers to start now: up to `idle` and replacements
    /// at once, one more for waiting calls at most once per `start` (as
    /// many as the queue needs when `start` is zero), never above `max`.
    /// Returns when to look again, if a start must wait.
    pub(super) fn plan_starts(
        &mut self,
        config: &Config,
        now: Instant,
        chores: &mut Chores<Req>,
    ) -> Option<Instant> {
        if self.crash.tripped.is_some() || self.closing.is_some() || self.handles == 0 {
            self.replace_now = 0;
            // Draining: calls still queued need a worker all the same.
            if self.crash.tripped.is_some() || self.queue.is_empty() || self.active() > 0 {
                return None;
            }
        }
        if let Some(at) = self.crash.retry_at {
            if now < at {
                return Some(at);
            }
            self.crash.retry_at = None;
        }
        let active = self.active();
        let room = self.max.saturating_sub(active);
        let floor = if self.closing.is_some() || self.handles == 0 {
            0
        } else {
            self.idle.min(self.max).saturating_sub(active)
        };
        let replace = std::mem::take(&mut self.replace_now);
        let mut count = (floor + replace).min(room);
        let mut later = None;
        let capacity: usize = self
            .workers
            .iter()
            .filter(|w| w.accepts())
            .map(|w| config.load.saturating_sub(w.load))
            .sum::<usize>()
            + (self.starting + count) * config.load;
        if self.queue.len() > capacity && count < room {
            if config.start.is_zero() {
                let short = self.queue.len() - capacity;
                count += short.div_ceil(config.load.max(1)).min(room - count);
            } else {
                match self.last_start.map(|t| t + config.start) {
                    Some(at) if at > now => later = Some(at),
                    _ => count += 1,
                }
            }
        }
        let mut picked = 0;
        for _ in 0..count {
            let Some(source) = self.pick_source() else {
                break;
            };
            let id = self.next_worker;
            self.next_worker += 1;
            self.sources[source].starting += 1;
            chores.start.push((id, source));
            picked += 1;
        }
        let count = picked;
        if count > 0 {
            self.starting += count;
            self.last_start = Some(now);
        }
        later
    }
}
