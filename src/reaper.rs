//! Waiting for the processes nobody waits for.
//!
//! Every process anyfork creates is a direct child of the program. When the
//! last [`Process`](crate::Process) handle of a process that was not waited
//! for is dropped, or a [`Fork`](crate::Fork) that never ran is dropped
//! before its pid was known, the process is *adopted* here. A single thread,
//! started on first need and ending after a second with nothing to watch,
//! reaps adopted processes as they exit.
//!
//! The thread works in batches so that a program creating thousands of
//! short-lived processes a second does not pay a thread wake-up for each: it
//! wakes when something is adopted (at most once per batch), waits
//! [`BATCH`] for more to happen, then reaps every adopted process that has
//! exited, by pid (which is safe: a child's pid cannot be reused before its
//! parent reaps it). Processes still running after a sweep are watched
//! through pidfds until one becomes readable. A zombie thus lives at most
//! about [`BATCH`] after its process exits.
//!
//! A dropped `Fork` whose pid is unknown arrives as its control socket: the
//! process sends its pid before it exits (see [`crate::proto`]); the reaper
//! reads it and carries on. If the process never existed (its template died
//! first) the socket just ends.
//!
//! [`Template::here`](crate::Template::here) needs a single-threaded program,
//! so it [`pause`]s the reaper thread around its fork.
//!
//! References:
//! - [`poll(2)`](https://man7.org/linux/man-pages/man2/poll.2.html)
//! - [`pidfd_open(2)`](https://man7.org/linux/man-pages/man2/pidfd_open.2.html)
//! - [`waitid(2)`](https://man7.org/linux/man-pages/man2/waitid.2.html)
//! - [`eventfd(2)`](https://man7.org/linux/man-pages/man2/eventfd.2.html)

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use rustix::process::{Pid, WaitId, WaitIdOptions};

use crate::proto::{self, Reply};
use crate::sys::pidfd;
use crate::sys::poll;
use crate::sys::wake::Wake;
use crate::transport::Transport;

/// How long the thread lingers with nothing to watch.
const IDLE: Duration = Duration::from_secs(1);

/// How long the thread lets exits accumulate before it sweeps.
pub(crate) const BATCH: Duration = Duration::from_millis(10);

enum Orphan {
    /// A process known by pid, waiting to exit; with a pidfd once it has
    /// outlived a sweep.
    Exiting { pid: u32, pidfd: Option<OwnedFd> },
    /// A serving process whose pid is on its way.
    Unnamed { connection: Transport },
    /// A process someone may still hold a handle to, but nobody waits for
    /// now (an RPC child whose handle was dropped while a parked task still
    /// holds its state): reaped through the handle, which keeps the status.
    Watched(Box<dyn Watched>),
}

impl Orphan {
    /// What to poll for this orphan, if anything.
    fn fd(&self) -> Option<BorrowedFd<'_>> {
        match self {
            Orphan::Exiting { pidfd, .. } => pidfd.as_ref().map(|fd| fd.as_fd()),
            Orphan::Unnamed { connection } => Some(connection.read_fd()),
            Orphan::Watched(handle) => handle.pidfd(),
        }
    }
}

#[derive(Default)]
struct State {
    inbox: Vec<Orphan>,
    wake: Option<Wake>,
    thread: Option<JoinHandle<()>>,
    stop: bool,
}

static STATE: Mutex<State> = Mutex::new(State {
    inbox: Vec::new(),
    wake: None,
    thread: None,
    stop: false,
});

/// Set when the thread has been woken for the current batch, so adopting
/// does not write the eventfd again.
static NOTIFIED: AtomicBool = AtomicBool::new(false);

fn state() -> MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Reaps `pid` if it has exited; true if it is gone (reaped now, or not our
/// child any more).
fn reap(pid: u32) -> bool {
    let Some(raw) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return true;
    };
    loop {
        match rustix::process::waitid(
            WaitId::Pid(raw),
            WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
        ) {
            Ok(Some(_)) => return true,
            Ok(None) => return false,
            Err(rustix::io::Errno::INTR) => {}
            // ECHILD: reaped elsewhere. Nothing to do.
            Err(_) => return true,
        }
    }
}

/// Takes over waiting for a child process.
pub(crate) fn adopt(pid: u32, pidfd: Option<OwnedFd>) {
    push(Orphan::Exiting { pid, pidfd });
}

/// A handle to a process that keeps its exit status ([`crate::Process`]):
/// the reaper polls its pidfd and asks it to look, so the status lands in
/// the handle (and every clone of it).
pub(crate) trait Watched: Send {
    /// What to poll for the process's exit, if anything.
    fn pidfd(&self) -> Option<BorrowedFd<'_>>;
    /// Whether the process has ended (and was reaped through the handle),
    /// without waiting.
    fn has_ended(&self) -> bool;
}

/// Reaps the process behind `handle` when it exits, through the handle.
pub(crate) fn watch(handle: impl Watched + 'static) {
    push(Orphan::Watched(Box::new(handle)));
}

/// Takes over a serving process whose pid is not known yet: `socket` is its
/// control socket, whose write side has been shut down; the process sends
/// its pid before it exits.
pub(crate) fn adopt_unnamed(connection: Transport) {
    push(Orphan::Unnamed { connection });
}

fn push(orphan: Orphan) {
    let mut state = state();
    state.inbox.push(orphan);
    ensure_running(&mut state);
}

fn notify(state: &State) {
    if !NOTIFIED.swap(true, Ordering::AcqRel) {
        if let Some(wake) = &state.wake {
            wake.notify();
        }
    }
}

fn ensure_running(state: &mut State) {
    if state.wake.is_none() {
        match Wake::new() {
            Ok(wake) => state.wake = Some(wake),
            Err(e) => {
                tracing::error!("anyfork reaper: cannot create eventfd: {e}");
                return;
            }
        }
    }
    if state.thread.is_none() && !state.stop {
        let Some(wake) = state.wake.as_ref().and_then(|w| w.try_clone().ok()) else {
            return;
        };
        NOTIFIED.store(false, Ordering::Release);
        match std::thread::Builder::new()
            .name("anyfork-reaper".into())
            .stack_size(64 * 1024)
            .spawn(move || reap_loop(wake))
        {
            Ok(handle) => state.thread = Some(handle),
            Err(e) => tracing::error!("anyfork reaper: cannot start thread: {e}"),
        }
    }
    notify(state);
}

/// Waits until `wake` or one of `watched` is readable, or `timeout` passes.
/// Returns `None` on timeout, else which of `watched` are ready.
fn wait_for(wake: &Wake, watched: &[Orphan], timeout: Option<Duration>) -> Option<Vec<bool>> {
    let mut fds = Vec::with_capacity(watched.len() + 1);
    fds.push(wake.as_fd());
    let mut index = Vec::with_capacity(watched.len());
    for (i, orphan) in watched.iter().enumerate() {
        if let Some(fd) = orphan.fd() {
            fds.push(fd);
            index.push(i);
        }
    }
    let ready_fds = match poll::wait_readable_any(&fds, timeout) {
        Ok(None) => return None,
        Ok(Some(ready)) => ready,
        Err(e) => {
            tracing::error!("anyfork reaper: poll failed: {e}");
            std::thread::sleep(BATCH);
            vec![false; fds.len()]
        }
    };
    let mut ready = vec![false; watched.len()];
    for (&is_ready, &i) in ready_fds.iter().skip(1).zip(&index) {
        ready[i] = is_ready;
    }
    if ready_fds[0] {
        wake.clear();
    }
    Some(ready)
}

/// The reaper thread.
fn reap_loop(wake: Wake) {
    let mut watched: Vec<Orphan> = Vec::new();
    loop {
        {
            let mut state = state();
            if state.stop {
                state.inbox.append(&mut watched);
                state.thread = None;
                return;
            }
            watched.append(&mut state.inbox);
            NOTIFIED.store(false, Ordering::Release);
        }
        // Sweep: reap whatever has exited.
        watched.retain(|orphan| match orphan {
            Orphan::Exiting { pid, .. } => !reap(*pid),
            Orphan::Unnamed { .. } => true,
            Orphan::Watched(handle) => !handle.has_ended(),
        });
        if watched.is_empty() {
            if wait_for(&wake, &[], Some(IDLE)).is_none() {
                // Idle: end, unless something arrived meanwhile.
                let mut state = state();
                if state.inbox.is_empty() && !state.stop {
                    state.thread = None;
                    return;
                }
            }
            continue;
        }
        // Still running after a sweep: watch through pidfds.
        for orphan in &mut watched {
            if let Orphan::Exiting {
                pid,
                pidfd: pidfd @ None,
            } = orphan
            {
                *pidfd = pidfd::open(*pid);
            }
        }
        let Some(ready) = wait_for(&wake, &watched, None) else {
            continue;
        };
        let mut still = Vec::with_capacity(watched.len());
        for (orphan, ready) in watched.drain(..).zip(ready) {
            match orphan {
                Orphan::Unnamed { connection } if ready => {
                    let mut replies = proto::ReplyBuffer::default();
                    if let Ok(Some(Reply::Pid(pid))) =
                        replies.next_from(&connection, proto::PID_FRAME_LEN)
                    {
                        still.push(Orphan::Exiting { pid, pidfd: None });
                    }
                    // Anything else: the process never existed, or it is
                    // exiting after saying something else; nothing we can
                    // name to wait for.
                }
                other => still.push(other),
            }
        }
        watched = still;
        // Let more exits accumulate before the next sweep.
        std::thread::sleep(BATCH);
    }
}
/// Stops the reaper thread (keeping what it watches) so the program is
/// single-threaded again; [`resume`] restarts it.
pub(crate) fn pause() {
    let handle = {
        let mut state = state();
        state.stop = true;
        if let Some(wake) = &state.wake {
            wake.notify();
        }
        state.thread.take()
    };
    if let Some(handle) = handle {
        let _ = handle.join();
    }
}

/// Restarts the reaper thread after [`pause`], if it has work.
pub(crate) fn resume() {
    let mut state = state();
    state.stop = false;
    if !state.inbox.is_empty() {
        ensure_running(&mut state);
    }
}

/// In a process just forked from the program: the watched processes are not
/// this process's children and the descriptors are about to be closed, so
/// forget them without closing anything.
pub(crate) fn forget_after_fork() {
    let mut state = state();
    let old = std::mem::take(&mut *state);
    std::mem::forget(old);
}
