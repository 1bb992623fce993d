//! [`Inner`]: what the pool's handles, calls and supervisor share, and
//! doing the [`Chores`] decided under its lock.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};

use serde::Serialize;

use super::config::Config;
use super::state::{Chores, State};
use super::status::WorkerEvent;
use super::ticket::{Sent, Stage};
use crate::rpc::{Settled, SettledHook, UntypedRpc};
use crate::sys::wake::Wake;

/// Starts one worker: forks a template and starts the RPC server in it,
/// with a handler for its notices.
pub(super) type Recipe = Box<
    dyn Fn(&crate::Fork, crate::rpc::NoticeHandler) -> Result<UntypedRpc, crate::Error>
        + Send
        + Sync,
>;

pub(super) type WorkerHandler = Box<dyn FnMut(&WorkerEvent) + Send>;

/// The shared heart of a pool.
pub(super) struct Inner<Req> {
    pub(super) state: Mutex<State<Req>>,
    pub(super) config: Config,
    pub(super) recipe: Recipe,
    /// The templates workers are forked from: the pool's, then the other
    /// sources (see [`super::sources`]).
    pub(super) templates: Vec<crate::Fork>,
    /// Wakes the supervisor.
    pub(super) wake: Wake,
    /// Signalled when the pool has ended.
    pub(super) ended: Condvar,
    pub(super) on_worker: Mutex<Option<WorkerHandler>>,
    pub(super) on_destroy: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    /// The next call's place in the order of calls.
    pub(super) next_seq: std::sync::atomic::AtomicU64,
}

impl<Req> Inner<Req> {
    pub(super) fn lock(&self) -> MutexGuard<'_, State<Req>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<Req: Serialize + Send + 'static> Inner<Req> {
    /// Does what was decided under the lock, and what that leads to, until
    /// nothing is left; the lock is not held meanwhile.
    pub(super) fn run_chores(self: &Arc<Self>, mut chores: Chores<Req>) {
        while !chores.is_empty() {
            let mut more = Chores::default();
            for rpc in chores.release.drain(..) {
                drop(rpc);
            }
            for (rpc, why) in chores.kill.drain(..) {
                if let Err(e) = rpc.kill(why) {
                    tracing::warn!("anyfork pool: cannot kill a worker: {e}");
                }
            }
            for (ticket, error) in chores.fail.drain(..) {
                ticket.advance(Stage::Failed(error));
            }
            for (id, source) in chores.start.drain(..) {
                let template = &self.templates[source];
                let started = (self.recipe)(template, self.notice_handler(id));
                // A template that is gone (its connection dropped) takes
                // its source down rather than counting as a crash.
                let gone = started.is_err() && self.templates.len() > 1 && template.is_gone();
                let mut state = self.lock();
                match started {
                    Ok(rpc) => state.started(&self.config, id, source, rpc, &mut more),
                    Err(e) => state.start_failed(&self.config, source, gone, &e, &mut more),
                }
                more.wake_supervisor = true;
            }
            for assignment in chores.assign.drain(..) {
                match assignment.ticket.send(
                    &assignment.rpc,
                    assignment.codec,
                    &self.config.function,
                ) {
                    Ok(call) => {
                        // The worker's place is freed where the result is
                        // read, whether or not its caller looks yet.
                        let place = Arc::new(AtomicBool::new(false));
                        let (inner, freed) = (Arc::downgrade(self), place.clone());
                        let worker = assignment.worker;
                        let hook: SettledHook = Box::new(move |settled| {
                            if let Some(inner) = inner.upgrade() {
                                inner.free_place(worker, &freed, settled);
                            }
                        });
                        // Already settled: its caller frees the place.
                        drop(call.on_settled(hook));
                        assignment.ticket.advance(Stage::Sent(Sent {
                            worker,
                            rpc: assignment.rpc,
                            call,
                            place,
                        }));
                    }
                    Err(error) => {
                        // A closed worker, or a request that cannot be
                        // encoded (the worker is fine): settled as if sent
                        // and failed.
                        let outcome = Err(error);
                        let settled = Settled::of(&outcome);
                        let verdict = self.lock().settle(
                            &self.config,
                            assignment.worker,
                            &assignment.ticket,
                            outcome,
                            Some((settled, None)),
                            &mut more,
                        );
                        if let super::outcome::Verdict::Fail(error) = verdict {
                            assignment.ticket.advance(Stage::Failed(error));
                        }
                    }
                }
            }
            if !chores.events.is_empty() {
                let mut handler = self
                    .on_worker
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if let Some(handler) = handler.as_mut() {
                    for event in &chores.events {
                        handler(event);
                    }
                }
            }
            if chores.wake_supervisor {
                self.wake.notify();
            }
            chores = more;
        }
    }

    /// Frees a call's place on worker `worker` (once: `place` says whether
    /// it was), with what its result was; measures the worker's memory
    /// after a reply if `max_rss` asks.
    pub(super) fn free_place(self: &Arc<Self>, worker: u64, place: &AtomicBool, settled: Settled) {
        if place.swap(true, Ordering::AcqRel) {
            return;
        }
        let rss = self.rss_after(worker, settled);
        let mut chores = Chores::default();
        self.lock()
            .free_place(&self.config, worker, settled, rss, &mut chores);
        self.run_chores(chores);
    }

    /// The worker's resident memory after a reply, if `max_rss` is set.
    pub(super) fn rss_after(&self, worker: u64, settled: Settled) -> Option<u64> {
        if self.config.max_rss.is_none() || settled != Settled::Reply {
            return None;
        }
        // Only a process of this machine: a far pid names another process
        // here.
        let pid = self
            .lock()
            .worker(worker)
            .filter(|w| w.process.is_some())
            .and_then(|w| w.pid);
        pid.and_then(crate::sys::memory::rss_bytes)
    }

    /// The handler for worker `id`'s notices: `retire`.
    fn notice_handler(self: &Arc<Self>, id: u64) -> crate::rpc::NoticeHandler {
        let inner: Weak<Self> = Arc::downgrade(self);
        Box::new(move |word: &[u8]| {
            if word != super::RETIRE_NOTICE {
                tracing::debug!("anyfork pool: unknown notice {word:?} from a worker");
                return;
            }
            if let Some(inner) = inner.upgrade() {
                let mut chores = Chores::default();
                inner
                    .lock()
                    .recycle(id, super::status::StopReason::Retired, &mut chores);
                // The supervisor starts the replacement: this runs where
                // the worker's replies are read.
                if chores.wake_supervisor {
                    inner.wake.notify();
                }
            }
        })
    }
}
