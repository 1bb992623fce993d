//! Waiting for the processes nobody waits for.
//!
//! Every process anyfork creates is a direct child of the program. When the
//! last [`Process`](crate::Process) handle of a process that was not waited
//! for is dropped, or a [`Fork`](crate::Fork) that never ran is dropped
//! before its pid was known, the process is *adopted* here. A single thread,
//! started on first need and ending after a second with nothing to watch,
//! polls the adopted pidfds and reaps each process as it exits.
//!
//! A dropped `Fork` whose pid is unknown arrives as its control socket, on
//! which a pid request was sent before end-of-file; the reaper reads the
//! answer, opens the pidfd and carries on. If the process never existed (its
//! template died first) the socket just ends.
//!
//! [`Template::here`](crate::Template::here) needs a single-threaded program,
//! so it [`pause`]s the reaper thread around its fork.
//!
//! References:
//! - [`poll(2)`](https://man7.org/linux/man-pages/man2/poll.2.html)
//! - [`pidfd_open(2)`](https://man7.org/linux/man-pages/man2/pidfd_open.2.html)
//! - [`waitid(2)`](https://man7.org/linux/man-pages/man2/waitid.2.html) (`P_PIDFD`)
//! - [`eventfd(2)`](https://man7.org/linux/man-pages/man2/eventfd.2.html)

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use rustix::event::{EventfdFlags, PollFd, PollFlags};
use rustix::process::{Pid, PidfdFlags, WaitId, WaitIdOptions};

use crate::proto::{self, Reply};

/// How long the thread lingers with nothing to watch.
const IDLE: Duration = Duration::from_secs(1);

enum Orphan {
    /// A process known by pidfd, waiting to exit.
    Exiting { pidfd: OwnedFd },
    /// A serving process whose pid is on its way (answer to a `p` command).
    Unnamed { socket: OwnedFd },
}

impl Orphan {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Orphan::Exiting { pidfd } => pidfd.as_fd(),
            Orphan::Unnamed { socket } => socket.as_fd(),
        }
    }
}

#[derive(Default)]
struct State {
    inbox: Vec<Orphan>,
    wake: Option<OwnedFd>,
    thread: Option<JoinHandle<()>>,
    stop: bool,
}

static STATE: Mutex<State> = Mutex::new(State {
    inbox: Vec::new(),
    wake: None,
    thread: None,
    stop: false,
});

fn state() -> MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Reaps the process if it has exited; true if it is gone (or not ours).
fn reap_if_exited(pidfd: BorrowedFd<'_>) -> bool {
    loop {
        match rustix::process::waitid(
            WaitId::PidFd(pidfd),
            WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
        ) {
            Ok(Some(_)) => return true,
            Ok(None) => return false,
            Err(rustix::io::Errno::INTR) => {}
            // ECHILD: reaped elsewhere, or not our child. Nothing to do.
            Err(_) => return true,
        }
    }
}

/// Takes over waiting for a process.
pub(crate) fn adopt(_pid: u32, pidfd: OwnedFd) {
    if reap_if_exited(pidfd.as_fd()) {
        return;
    }
    push(Orphan::Exiting { pidfd });
}

/// Takes over a serving process whose pid is not known yet: `socket` is its
/// control socket, on which a pid request has been sent and the write side
/// shut down.
pub(crate) fn adopt_unnamed(socket: OwnedFd) {
    push(Orphan::Unnamed { socket });
}

fn push(orphan: Orphan) {
    let mut state = state();
    state.inbox.push(orphan);
    ensure_running(&mut state);
}

fn ensure_running(state: &mut State) {
    if state.wake.is_none() {
        match rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK) {
            Ok(fd) => state.wake = Some(fd),
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
        match std::thread::Builder::new()
            .name("anyfork-reaper".into())
            .stack_size(64 * 1024)
            .spawn(move || watch(wake))
        {
            Ok(handle) => state.thread = Some(handle),
            Err(e) => tracing::error!("anyfork reaper: cannot start thread: {e}"),
        }
    }
    if let Some(wake) = &state.wake {
        let _ = rustix::io::write(wake, &1u64.to_ne_bytes());
    }
}

/// The reaper thread.
fn watch(wake: OwnedFd) {
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
        }
        let ready: Vec<bool> = {
            let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(watched.len() + 1);
            fds.push(PollFd::new(&wake, PollFlags::IN));
            fds.extend(
                watched
                    .iter()
                    .map(|o| PollFd::from_borrowed_fd(o.fd(), PollFlags::IN)),
            );
            let timeout = rustix::fs::Timespec::try_from(IDLE).ok();
            let timeout = if watched.is_empty() {
                timeout.as_ref()
            } else {
                None
            };
            match rustix::event::poll(&mut fds, timeout) {
                Ok(0) if watched.is_empty() => {
                    // Idle: end, unless something arrived meanwhile.
                    let mut state = state();
                    if state.inbox.is_empty() {
                        state.thread = None;
                        return;
                    }
                    continue;
                }
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    tracing::error!("anyfork reaper: poll failed: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            }
            fds.iter().map(|p| !p.revents().is_empty()).collect()
        };
        if ready[0] {
            let mut buf = [0u8; 8];
            let _ = rustix::io::read(&wake, &mut buf);
        }
        let mut still = Vec::with_capacity(watched.len());
        for (orphan, ready) in watched.drain(..).zip(ready.into_iter().skip(1)) {
            if !ready {
                still.push(orphan);
                continue;
            }
            match orphan {
                Orphan::Exiting { pidfd } => {
                    if !reap_if_exited(pidfd.as_fd()) {
                        still.push(Orphan::Exiting { pidfd });
                    }
                }
                Orphan::Unnamed { socket } => {
                    if let Ok(Some(Reply::Pid(pid))) = proto::read_reply(socket.as_fd()) {
                        let pidfd = i32::try_from(pid)
                            .ok()
                            .and_then(Pid::from_raw)
                            .and_then(|p| rustix::process::pidfd_open(p, PidfdFlags::empty()).ok());
                        if let Some(pidfd) = pidfd {
                            if !reap_if_exited(pidfd.as_fd()) {
                                still.push(Orphan::Exiting { pidfd });
                            }
                        }
                    }
                    // Anything else: the process never existed, or said
                    // something else and is exiting; nothing to wait for
                    // that we can name.
                }
            }
        }
        watched = still;
    }
}

/// Stops the reaper thread (keeping what it watches) so the program is
/// single-threaded again; [`resume`] restarts it.
pub(crate) fn pause() {
    let handle = {
        let mut state = state();
        state.stop = true;
        if let Some(wake) = &state.wake {
            let _ = rustix::io::write(wake, &1u64.to_ne_bytes());
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
