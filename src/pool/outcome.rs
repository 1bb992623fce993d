//! What a call's outcome means for the call, its worker and the pool: the
//! rules of "a dead worker never takes innocent calls with it".

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Instant;

use super::config::Config;
use super::error::{Death, Error};
use super::state::{Chores, KilledFor, Leaving, State};
use super::status::StopReason;
use super::ticket::Ticket;
use crate::rpc::{Error as RpcError, Settled};

/// What becomes of a call after its worker answered (or failed).
pub(super) enum Verdict {
    /// The reply, to decode.
    Reply(Vec<u8>, Vec<OwnedFd>),
    /// The call fails with this.
    Fail(Error),
    /// The call goes back to the queue.
    Requeue,
}

impl<Req> State<Req> {
    /// Settles a call on worker `worker_id` with `outcome`: what becomes
    /// of it. `place` is what its result was (and the worker's memory
    /// after it) if the call still holds its place on the worker, which
    /// is then freed here.
    pub(super) fn settle(
        &mut self,
        config: &Config,
        worker_id: u64,
        ticket: &Arc<Ticket<Req>>,
        outcome: Result<(Vec<u8>, Vec<OwnedFd>), RpcError>,
        place: Option<(Settled, Option<u64>)>,
        chores: &mut Chores<Req>,
    ) -> Verdict {
        let verdict = match outcome {
            Ok((bytes, fds)) => {
                self.crash.in_a_row = 0;
                self.crash.retry_at = None;
                self.totals.calls += 1;
                Verdict::Reply(bytes, fds)
            }
            Err(error) => match self.judge_failure(config, worker_id, ticket, error) {
                // No worker will come for it: the breaker tripped.
                Verdict::Requeue if self.crash.tripped.is_some() => {
                    Verdict::Fail(self.crash.tripped.clone().unwrap_or(Error::NoRuntime))
                }
                verdict => verdict,
            },
        };
        match &verdict {
            Verdict::Fail(_) => self.totals.failures += 1,
            Verdict::Requeue => {
                self.requeue(ticket.clone());
            }
            Verdict::Reply(..) => {}
        }
        if let Some(worker) = self.worker(worker_id) {
            worker.calls = worker.calls.saturating_sub(1);
        }
        match place {
            Some((settled, rss)) => self.free_place(config, worker_id, settled, rss, chores),
            // The reader freed the place (and handed it on) already; a
            // call back in the queue may find another, or need a worker.
            None if matches!(verdict, Verdict::Requeue) => {
                self.assign(config, chores);
                self.plan(config, chores);
            }
            None => {}
        }
        self.forget_if_done(worker_id, chores);
        verdict
    }

    /// Frees a call's place on worker `worker_id`, where its result was
    /// read: counts what the worker answered, recycles it if it reached a
    /// limit (`rss`: its memory just after), marks it leaving if its
    /// connection failed, and hands the place to the oldest queued call.
    pub(super) fn free_place(
        &mut self,
        config: &Config,
        worker_id: u64,
        settled: Settled,
        rss: Option<u64>,
        chores: &mut Chores<Req>,
    ) {
        if let Some(worker) = self.worker(worker_id) {
            match settled {
                Settled::Reply => {
                    worker.served += 1;
                    worker.answered += 1;
                    worker.rss = rss.or(worker.rss);
                }
                Settled::CallFailed => worker.answered += 1,
                Settled::ConnectionFailed => {
                    worker.leaving.get_or_insert(Leaving::Dead);
                }
            }
            let limit = if worker.max_calls.is_some_and(|m| worker.served >= m) {
                Some(StopReason::MaxCalls)
            } else if config.max_rss.zip(rss).is_some_and(|(max, rss)| rss > max) {
                Some(StopReason::MaxRss)
            } else {
                None
            };
            if let Some(reason) = limit {
                self.recycle(worker_id, reason, chores);
            }
        }
        self.unload(worker_id, chores);
        self.assign(config, chores);
        self.plan(config, chores);
    }

    /// A call on worker `worker_id` was given up by its caller (deadline,
    /// dropped future); if it still held its place, the place is freed.
    pub(super) fn abandon(
        &mut self,
        config: &Config,
        worker_id: u64,
        holds_place: bool,
        chores: &mut Chores<Req>,
    ) {
        self.totals.failures += 1;
        if let Some(worker) = self.worker(worker_id) {
            worker.calls = worker.calls.saturating_sub(1);
        }
        if holds_place {
            self.unload(worker_id, chores);
        }
        self.forget_if_done(worker_id, chores);
        self.assign(config, chores);
        self.plan(config, chores);
    }

    /// One call less on the worker; a worker leaving with nothing left is
    /// let go, and one that has exited is forgotten.
    fn unload(&mut self, worker_id: u64, chores: &mut Chores<Req>) {
        let Some(index) = self.workers.iter().position(|w| w.id == worker_id) else {
            return;
        };
        let worker = &mut self.workers[index];
        worker.load = worker.load.saturating_sub(1);
        if worker.load > 0 {
            return;
        }
        worker.idle_since = Instant::now();
        if worker.leaving.is_some() {
            worker.release(chores);
        }
        self.forget_if_done(worker_id, chores);
    }

    /// A call failed: whether it fails, or goes back to the queue because
    /// it never ran (or may run again).
    fn judge_failure(
        &mut self,
        config: &Config,
        worker_id: u64,
        ticket: &Arc<Ticket<Req>>,
        error: RpcError,
    ) -> Verdict {
        let worker = self.workers.iter_mut().find(|w| w.id == worker_id);
        let Some(worker) = worker else {
            return Verdict::Fail(Error::Call(Box::new(error)));
        };
        let never_ran = match &error {
            // The worker answered: the function failed, or the messages.
            RpcError::Failed { .. } => {
                return Verdict::Fail(Error::Call(Box::new(error)));
            }
            RpcError::Codec { .. } | RpcError::Timeout { .. } | RpcError::NoRuntime => {
                return Verdict::Fail(Error::Call(Box::new(error)));
            }
            RpcError::ShutDown { .. } => {
                return Verdict::Fail(Error::ShutDown {
                    function: config.function.clone(),
                    killed: false,
                });
            }
            // Its server gave up before running anything (a failing
            // `init`, an unknown function), or it never started.
            RpcError::Server { message, .. } => {
                worker.broken = Some(message.clone());
                true
            }
            RpcError::Start(_) => true,
            // A worker that exited (not killed) before answering anything
            // never got to run a call: its server gave up at start.
            RpcError::Ended {
                delivered,
                started,
                ending,
                ..
            } => {
                let gave_up = worker.answered == 0
                    && ending
                        .status()
                        .is_some_and(|status| status.code().is_some());
                if gave_up {
                    worker.broken.get_or_insert_with(|| {
                        format!("{}", Death::from_status(ending.status(), false))
                    });
                }
                *delivered == Some(false) || *started == Some(false) || gave_up
            }
            RpcError::Killed { .. } => match worker.killed_for {
                Some(KilledFor::Call(seq)) => seq != ticket.seq,
                Some(KilledFor::Shutdown) => {
                    worker.leaving.get_or_insert(Leaving::Dead);
                    return Verdict::Fail(Error::ShutDown {
                        function: config.function.clone(),
                        killed: true,
                    });
                }
                None => false,
            },
            _ => false,
        };
        worker.leaving.get_or_insert(Leaving::Dead);
        if never_ran {
            return Verdict::Requeue;
        }
        let mut retry = ticket.lock();
        if ticket.terms.idempotent && !retry.retried {
            retry.retried = true;
            return Verdict::Requeue;
        }
        drop(retry);
        let death = match (&error, worker.killed_for) {
            (RpcError::Killed { why, .. }, _) => Death::KilledByPool(why.as_str().into()),
            (RpcError::Ended { ending, .. }, _) => {
                Death::from_status(ending.status(), worker.oom_struck())
            }
            _ => Death::Unknown,
        };
        worker.death.get_or_insert(death.clone());
        Verdict::Fail(Error::WorkerDied {
            function: config.function.clone(),
            pid: worker.pid.unwrap_or(0),
            death,
            started: config.sequential,
            source: Box::new(error),
        })
    }
}
