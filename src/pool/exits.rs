//! Waiting for workers to exit: what both supervisors (of a [`Pool`] and of
//! a [`ServerPool`]) sleep in.
//!
//! [`Pool`]: super::Pool
//! [`ServerPool`]: super::ServerPool

use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use crate::Process;
use crate::sys::wake::Wake;

/// How often processes without a pidfd are looked at.
pub(super) const POLL_WITHOUT_PIDFD: Duration = Duration::from_millis(50);

/// Sleeps until one of `processes` may have exited (its pidfd became
/// readable), `wake` was notified, or `until` comes (`None`: no limit);
/// processes without a pidfd (old kernels) are looked at every
/// [`POLL_WITHOUT_PIDFD`], and so are processes on other machines when
/// `far` is set. Clears `wake`. Which process exited is for the caller to
/// ask (`try_wait`, or the far side's report).
pub(super) fn wait_for_exits(
    processes: &[&Process],
    far: bool,
    wake: &Wake,
    until: Option<Instant>,
) {
    let mut fds: Vec<BorrowedFd<'_>> = processes.iter().filter_map(|p| p.pidfd()).collect();
    let blind = far || fds.len() < processes.len();
    fds.push(wake.as_fd());
    let mut timeout = until.map(|at| at.saturating_duration_since(Instant::now()));
    if blind {
        timeout = Some(timeout.map_or(POLL_WITHOUT_PIDFD, |t| t.min(POLL_WITHOUT_PIDFD)));
    }
    if let Err(e) = crate::sys::poll::wait_readable_any(&fds, timeout) {
        tracing::error!("anyfork pool: a supervisor cannot wait: {e}");
        std::thread::sleep(POLL_WITHOUT_PIDFD);
    }
    wake.clear();
}
