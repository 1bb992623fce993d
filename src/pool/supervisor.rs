//! The supervisor: one thread per pool that watches the workers' processes
//! (their pidfds, in one `poll`) and does what must happen at a time
//! rather than on a call: delayed starts, stopping idle workers, recycling
//! by age, replacing the dead, ending the pool.
//!
//! Calls never wait for it: a caller picks its worker, sends its request
//! and reads its reply itself (or through the RPC driver task), so a
//! synchronous call through the pool costs what one on an [`Rpc`](crate::rpc::Rpc)
//! costs. The supervisor sleeps until a worker exits, a deadline of its
//! own comes, or a caller wakes it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::exits::wait_for_exits;
use super::inner::Inner;
use super::state::Chores;

/// How long a new worker may take to say its pid.
const PID_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the last frames of an exited worker are read for.
const LAST_WORDS: Duration = Duration::from_millis(100);

/// Worker `id` has exited (with `status`, where known).
fn report_exit<Req: Serialize + Send + 'static>(
    inner: &Arc<Inner<Req>>,
    id: u64,
    status: Option<std::process::ExitStatus>,
    rpc: &crate::rpc::RpcWatch,
) {
    // Why its server gave up, if it did and nobody has read it.
    let words = rpc.last_words(Instant::now() + LAST_WORDS);
    let mut chores = Chores::default();
    inner
        .lock()
        .exited(&inner.config, id, status, words, &mut chores);
    chores.wake_supervisor = false;
    inner.run_chores(chores);
}

/// Starts the supervisor of `inner`.
pub(super) fn spawn<Req: Serialize + Send + 'static>(
    inner: Arc<Inner<Req>>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("anyfork-pool".into())
        .spawn(move || supervise(&inner))
        .map(drop)
}

fn supervise<Req: Serialize + Send + 'static>(inner: &Arc<Inner<Req>>) {
    loop {
        // Sources whose template is gone (looked at outside the lock).
        let gone: Vec<usize> = if inner.templates.len() > 1 {
            (0..inner.templates.len())
                .filter(|&i| inner.templates[i].is_gone())
                .collect()
        } else {
            Vec::new()
        };
        if !gone.is_empty() {
            let mut chores = Chores::default();
            {
                let mut state = inner.lock();
                for i in gone {
                    state.source_down(&inner.config, i, &mut chores);
                }
            }
            chores.wake_supervisor = false;
            inner.run_chores(chores);
        }
        let now = Instant::now();
        let mut chores = Chores::default();
        let (next, need_pid, watch, far, ended) = {
            let mut state = inner.lock();
            let start_at = state.plan_starts(&inner.config, now, &mut chores);
            let tend_at = state.tend(&inner.config, now, &mut chores);
            let need_pid: Vec<_> = state
                .workers
                .iter()
                .filter(|w| w.pid.is_none() && !w.exited)
                .map(|w| (w.id, w.watch.clone()))
                .collect();
            let watch: Vec<_> = state
                .workers
                .iter()
                .filter(|w| !w.exited)
                .filter_map(|w| w.process.clone().map(|p| (w.id, p, w.watch.clone())))
                .collect();
            // Workers on other machines: no pidfd; their far side says
            // when they end.
            let far: Vec<_> = state
                .workers
                .iter()
                .filter(|w| !w.exited && w.pid.is_some() && w.process.is_none())
                .map(|w| (w.id, w.watch.clone()))
                .collect();
            let next = match (start_at, tend_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            (next, need_pid, watch, far, state.ended)
        };
        chores.wake_supervisor = false;
        inner.run_chores(chores);
        if ended {
            break;
        }
        for (id, rpc) in need_pid {
            let known = rpc.await_pid(Instant::now() + PID_TIMEOUT);
            // Where the OOM killer's strikes on it will be counted (on
            // this machine only).
            let local = rpc.process().is_some();
            let oom = known.as_ref().ok().filter(|_| local).and_then(|pid| {
                let file = crate::sys::memory::oom_kill_file(*pid)?;
                let count = crate::sys::memory::oom_kills(&file)?;
                Some((file, count))
            });
            let mut chores = Chores::default();
            {
                let mut state = inner.lock();
                match known {
                    Ok(pid) => state.pid_known(id, pid, rpc.process(), oom, &mut chores),
                    Err(e) => {
                        let cause = crate::error::chain(&e);
                        state.pid_unknown(&inner.config, id, cause, &mut chores);
                    }
                }
            }
            chores.wake_supervisor = false;
            inner.run_chores(chores);
        }
        let processes: Vec<&crate::Process> = watch.iter().map(|(_, p, _)| p).collect();
        wait_for_exits(&processes, !far.is_empty(), &inner.wake, next);
        for (id, rpc) in &far {
            if let Some(status) = rpc.far_gone() {
                report_exit(inner, *id, status, rpc);
            }
        }
        for (id, process, rpc) in &watch {
            let status = match process.try_wait() {
                Ok(None) => continue,
                Ok(Some(status)) => Some(status),
                Err(_) => None,
            };
            report_exit(inner, *id, status, rpc);
        }
    }
    let destroy = inner
        .on_destroy
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    if let Some(destroy) = destroy {
        destroy();
    }
    inner.lock().finished = true;
    inner.ended.notify_all();
}
