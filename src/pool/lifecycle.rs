//! Workers coming and going, decided under the pool's lock: started,
//! exited (and the crash-loop breaker), retired, stopped when idle,
//! recycled by age, and the pool's own end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::config::Config;
use super::error::{Death, Error};
use super::state::{Chores, KilledFor, Leaving, State, Worker};
use super::status::StopReason;
use crate::rpc::UntypedRpc;

/// A worker that dies within this of its start, having answered nothing,
/// counts toward the crash-loop breaker.
const START_WINDOW: Duration = Duration::from_secs(1);

impl<Req> State<Req> {
    /// A worker was started (not yet known to be running).
    pub(super) fn started(
        &mut self,
        config: &Config,
        id: u64,
        source: usize,
        rpc: UntypedRpc,
        chores: &mut Chores<Req>,
    ) {
        self.starting = self.starting.saturating_sub(1);
        if let Some(source) = self.sources.get_mut(source) {
            source.starting = source.starting.saturating_sub(1);
        }
        self.codec.get_or_insert(rpc.codec());
        self.totals.started += 1;
        let now = Instant::now();
        let max_calls = config.max_calls.map(|(calls, jitter)| {
            // Spread the recycling of workers started together.
            calls
                + if jitter == 0 {
                    0
                } else {
                    fastrand_below(id, jitter + 1)
                }
        });
        self.workers.push(Worker {
            id,
            source,
            watch: Arc::new(rpc.watch()),
            rpc: Some(Arc::new(rpc)),
            pid: None,
            process: None,
            load: 0,
            calls: 0,
            served: 0,
            answered: 0,
            started_at: now,
            idle_since: now,
            leaving: None,
            max_calls,
            killed_for: None,
            death: None,
            exited: false,
            released_at: None,
            oom: None,
            broken: None,
            rss: None,
        });
        self.assign(config, chores);
    }

    /// A worker could not be started at all.
    /// `gone`: its source's template is gone (a dropped connection): the
    /// source is down, which is not the workers' fault.
    pub(super) fn start_failed(
        &mut self,
        config: &Config,
        source: usize,
        gone: bool,
        error: &crate::Error,
        chores: &mut Chores<Req>,
    ) {
        self.starting = self.starting.saturating_sub(1);
        if let Some(slot) = self.sources.get_mut(source) {
            slot.starting = slot.starting.saturating_sub(1);
        }
        if gone {
            self.source_down(config, source, chores);
            return;
        }
        self.note_crash(config, crate::error::chain(error), chores);
    }

    /// A worker died before answering any call: one more in a row; the
    /// breaker trips at the limit, and until then starts back off.
    pub(super) fn note_crash(&mut self, config: &Config, cause: String, chores: &mut Chores<Req>) {
        self.crash.in_a_row += 1;
        if self.crash.in_a_row >= config.crash_limit {
            let error = Error::CrashLoop {
                function: config.function.clone(),
                failures: self.crash.in_a_row,
                cause: cause.into(),
            };
            for ticket in self.queue.drain(..) {
                chores.fail.push((ticket, error.clone()));
            }
            // Those waiting for room come in to meet the error.
            for waiter in self.room.drain(..) {
                waiter.grant();
            }
            self.crash.tripped = Some(error);
        } else {
            self.crash.retry_at = Some(Instant::now() + config.backoff(self.crash.in_a_row));
        }
        chores.wake_supervisor = true;
    }

    /// Worker `id` said its pid.
    pub(super) fn pid_known(
        &mut self,
        id: u64,
        pid: u32,
        process: Option<crate::Process>,
        oom: Option<(std::path::PathBuf, u64)>,
        chores: &mut Chores<Req>,
    ) {
        if let Some(worker) = self.worker(id) {
            worker.pid = Some(pid);
            worker.process = process;
            worker.oom = oom;
            chores
                .events
                .push(super::status::WorkerEvent::Started { pid });
        }
    }

    /// Worker `id` never said its pid: it failed to start.
    pub(super) fn pid_unknown(
        &mut self,
        config: &Config,
        id: u64,
        cause: String,
        chores: &mut Chores<Req>,
    ) {
        let Some(index) = self.workers.iter().position(|w| w.id == id) else {
            return;
        };
        let worker = &mut self.workers[index];
        worker.leaving.get_or_insert(Leaving::Dead);
        worker.exited = true;
        let cause = worker.broken.clone().unwrap_or(cause);
        worker.release(chores);
        self.forget_if_done(id, chores);
        self.note_crash(config, cause, chores);
    }

    /// Worker `id`'s process exited with `status`.
    pub(super) fn exited(
        &mut self,
        config: &Config,
        id: u64,
        status: Option<std::process::ExitStatus>,
        last_words: Option<String>,
        chores: &mut Chores<Req>,
    ) {
        let Some(index) = self.workers.iter().position(|w| w.id == id) else {
            return;
        };
        let worker = &mut self.workers[index];
        worker.exited = true;
        // Its server's own words beat what its exit status says.
        if let Some(words) = last_words {
            worker.broken = Some(words);
        }
        // Killed by the pool for a call, it says why (set at the kill).
        let death = match &worker.death {
            Some(death) => death.clone(),
            None => Death::from_status(status, worker.oom_struck()),
        };
        worker.death = Some(death.clone());
        let planned = matches!(
            worker.leaving,
            Some(Leaving::Recycled(_) | Leaving::Idle | Leaving::Shutdown)
        ) || worker.killed_for.is_some();
        worker.leaving.get_or_insert(Leaving::Dead);
        worker.release(chores);
        // Died young, before answering anything (or its server said it
        // could not serve): a start that failed. A worker killed from
        // outside after it had run a while is not counted.
        let crashed_at_start = !planned
            && worker.answered == 0
            && (worker.broken.is_some() || worker.started_at.elapsed() < START_WINDOW);
        let cause = worker.broken.clone().unwrap_or_else(|| death.to_string());
        self.forget_if_done(id, chores);
        if !planned {
            self.totals.restarts += 1;
        }
        if crashed_at_start {
            self.note_crash(config, cause, chores);
        }
        self.plan(config, chores);
    }

    /// Recycles worker `id` (unless it is leaving already): it takes no
    /// new calls, and its replacement starts at once.
    pub(super) fn recycle(&mut self, id: u64, reason: StopReason, chores: &mut Chores<Req>) {
        let Some(index) = self.workers.iter().position(|w| w.id == id) else {
            return;
        };
        if self.let_go(index, Leaving::Recycled(reason), chores) {
            self.replace_now += 1;
            self.totals.recycles += 1;
            chores.wake_supervisor = true;
        }
    }

    /// Marks a worker leaving, unless it is already; lets it go at once if
    /// it is idle. Returns whether it was marked.
    pub(super) fn let_go(&mut self, index: usize, why: Leaving, chores: &mut Chores<Req>) -> bool {
        let worker = &mut self.workers[index];
        if worker.leaving.is_some() {
            return false;
        }
        worker.leaving = Some(why);
        if worker.load == 0 {
            worker.release(chores);
        }
        true
    }

    /// The supervisor's timed duties: stopping an idle worker above `idle`
    /// (at most one per `stop`), recycling by age, shrinking to `max`,
    /// killing workers that do not exit after being let go, and the end of
    /// a shutdown. Returns when to look again.
    pub(super) fn tend(
        &mut self,
        config: &Config,
        now: Instant,
        chores: &mut Chores<Req>,
    ) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut sooner = |at: Instant| next = Some(next.map_or(at, |n| n.min(at)));
        // Too many (after set_max): the idlest go.
        while self.workers.iter().filter(|w| w.counts()).count() > self.max {
            let index = self
                .workers
                .iter()
                .enumerate()
                .filter(|(_, w)| w.counts())
                .min_by_key(|(_, w)| w.load)
                .map(|(i, _)| i);
            let Some(index) = index else { break };
            self.let_go(index, Leaving::Shutdown, chores);
        }
        // Idle above `idle`.
        let counted = self.workers.iter().filter(|w| w.counts()).count();
        if counted > self.idle && !self.queue.is_empty() {
            // Busy now; look again in a while (calls do not wake the
            // supervisor when they finish).
            sooner(now + config.stop);
        } else if counted > self.idle {
            let idlest = self
                .workers
                .iter()
                .enumerate()
                .filter(|(_, w)| w.accepts() && w.load == 0)
                .min_by_key(|(_, w)| w.idle_since)
                .map(|(i, w)| (i, w.idle_since));
            match idlest {
                Some((index, since)) => {
                    let due = (since + config.stop).max(self.last_stop + config.stop);
                    if due <= now {
                        self.let_go(index, Leaving::Idle, chores);
                        self.last_stop = now;
                    } else {
                        sooner(due);
                    }
                }
                None => sooner(now + config.stop),
            }
        }
        // Too old.
        if let Some(max_age) = config.max_age {
            for index in 0..self.workers.len() {
                let worker = &self.workers[index];
                if !worker.counts() {
                    continue;
                }
                let due = worker.started_at + max_age;
                if due <= now {
                    let id = worker.id;
                    self.recycle(id, StopReason::MaxAge, chores);
                } else {
                    sooner(due);
                }
            }
        }
        // Let go, but still running.
        for worker in &mut self.workers {
            if let (Some(at), false) = (worker.released_at, worker.exited) {
                if at + config.stop_grace <= now {
                    if let Some(process) = &worker.process {
                        let _ = process.kill(crate::Signal::KILL);
                    }
                    worker.released_at = None;
                } else {
                    sooner(at + config.stop_grace);
                }
            }
        }
        self.tend_closing(config, now, chores, &mut sooner);
        next
    }

    /// A shutdown: when nothing is queued or running, every worker is let
    /// go; when the deadline passes, those still running are killed and
    /// the queued calls fail.
    fn tend_closing(
        &mut self,
        config: &Config,
        now: Instant,
        chores: &mut Chores<Req>,
        sooner: &mut impl FnMut(Instant),
    ) {
        let draining = self.closing.is_some() || self.handles == 0;
        if !draining {
            return;
        }
        let deadline = self.closing.and_then(|c| c.deadline);
        if deadline.is_some_and(|d| d <= now) {
            let error = Error::ShutDown {
                function: config.function.clone(),
                killed: false,
            };
            for ticket in self.queue.drain(..) {
                chores.fail.push((ticket, error.clone()));
            }
            for worker in &mut self.workers {
                if worker.load > 0 && worker.killed_for.is_none() && !worker.exited {
                    worker.killed_for = Some(KilledFor::Shutdown);
                    if let Some(rpc) = worker.rpc.clone() {
                        chores
                            .kill
                            .push((rpc, "the pool's shutdown grace ran out".into()));
                    }
                }
            }
        } else if let Some(deadline) = deadline {
            sooner(deadline);
        }
        if self.queue.is_empty() {
            for index in 0..self.workers.len() {
                self.let_go(index, Leaving::Shutdown, chores);
            }
        }
        if self.workers.is_empty() && self.starting == 0 && self.queue.is_empty() {
            self.ended = true;
        } else {
            // Look again soon: workers let go are exiting.
            sooner(now + Duration::from_millis(100));
        }
    }
}

/// A number below `bound`, spread by `seed` (for recycling jitter; no
/// randomness source needed).
fn fastrand_below(seed: u64, bound: u64) -> u64 {
    let mut x = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(std::process::id() as u64);
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 29;
    x % bound
}
