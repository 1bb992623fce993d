//! The far side of a connection: the relay.
//!
//! A program started with the serve marker `mux:VERSION` (in its
//! environment, or as its first argument `--anyfork-serve=mux:VERSION`,
//! since ssh drops the environment) becomes the relay: it says hello on
//! stdout, checks the parent's hello on stdin, then runs the
//! [pump](super::pump). For each `O` it starts a fresh serving process of
//! its own executable on a socket; a template's `fork` reaches it as an
//! `F`, which gets a new socket. Every process it starts, and every process
//! those templates fork (they are forked as siblings), is its child: it
//! reaps them and reports their exit statuses (`W`).
//!
//! When the connection ends (the parent went away, ssh dropped, the
//! keepalive found the parent silent) the relay closes every socket, gives
//! its children a moment to see the end and exit, kills those still there,
//! and exits: nothing is left behind on the far host.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use super::handshake;
use super::pump::{Ended, Keepalive, Pump, Side};
use super::wire::{FAR_CHANNELS, Frame};
use crate::sys::child_exits::ChildExits;
use crate::transport::Transport;

/// How long children get to exit by themselves once the connection ended.
const GRACE: Duration = Duration::from_secs(2);

/// Runs the relay on `conn` (stdin and stdout); returns the exit code.
pub(crate) fn serve(conn: Transport) -> i32 {
    let (parent, inbound) = match handshake::answer(&conn) {
        Ok(hello) => hello,
        Err(why) => {
            log(&why);
            return 2;
        }
    };
    // A parent that pings: if it falls silent for long, it is gone.
    let keepalive = (parent.keepalive_ms > 0).then(|| {
        let interval = Duration::from_millis(u64::from(parent.keepalive_ms));
        Keepalive {
            interval,
            timeout: interval * 4 + Duration::from_secs(1),
        }
    });
    let exits = match ChildExits::new() {
        Ok(exits) => Some(exits),
        Err(e) => {
            // Then children are looked for on a timer.
            log(&format!(
                "cannot watch for SIGCHLD ({e}); looking every 20 ms"
            ));
            None
        }
    };
    let mut relay = Relay {
        next: FAR_CHANNELS,
        exits,
    };
    let mut pump = Pump::new(conn, inbound, keepalive);
    let ended = pump.run(&mut relay);
    drop(pump);
    if let Ended::Lost(why) = &ended {
        tracing::debug!("anyfork relay: {why}");
    }
    relay.end_children();
    0
}

struct Relay {
    /// The last channel number this side gave out.
    next: u32,
    /// Readable when a child exited.
    exits: Option<ChildExits>,
}

impl Side for Relay {
    fn open(&mut self, _channel: u32) -> Result<OwnedFd, String> {
        match spawn_on_socket() {
            Ok(socket) => Ok(socket),
            Err(e) => Err(format!(
                "the far side could not start a serving process: {e}"
            )),
        }
    }

    fn next_channel(&mut self) -> u32 {
        self.next = self.next.wrapping_add(1).max(FAR_CHANNELS);
        self.next
    }

    fn wake_fd(&self) -> Option<BorrowedFd<'_>> {
        self.exits.as_ref().map(|exits| exits.as_fd())
    }

    fn turn(&mut self, out: &mut Vec<Frame>) -> Vec<(u32, OwnedFd)> {
        if let Some(exits) = &self.exits {
            exits.clear();
        }
        for (pid, status) in reap() {
            out.push(Frame::Exited { pid, status });
        }
        Vec::new()
    }

    fn done(&self, _channels: usize) -> bool {
        false
    }

    fn tick(&self) -> Option<Duration> {
        self.exits.is_none().then_some(Duration::from_millis(20))
    }

    fn explains_locally(&self) -> bool {
        false
    }

    fn kill(&mut self, pid: u32, signal: i32) {
        // Only this relay's own children: a pid is not a process of the
        // parent's choosing.
        if children().contains(&pid) {
            // SAFETY: kill has no memory effects; `pid` is a child of this
            // process, not yet reaped (reaping happens on this thread).
            unsafe { libc::kill(pid as libc::pid_t, signal) };
        }
    }
}

impl Relay {
    /// After the connection: waits [`GRACE`] for the children to exit,
    /// then kills the rest.
    fn end_children(&mut self) {
        let deadline = Instant::now() + GRACE;
        loop {
            reap();
            let left = children();
            if left.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                for pid in left {
                    // SAFETY: kill has no memory effects; these are this
                    // process's own children, not yet reaped, so the pids
                    // cannot have been reused.
                    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                }
                std::thread::sleep(Duration::from_millis(50));
                reap();
                if children().is_empty() {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Starts a fresh serving process of this executable on a new socket;
/// returns our end (the process is found again as a child by `reap` and
/// `children`).
fn spawn_on_socket() -> std::io::Result<OwnedFd> {
    use crate::sys::spawn;
    use std::os::fd::AsFd;
    let (ours, theirs) = crate::transport::socketpair()?;
    let marker = crate::proto::marker_entry(&crate::proto::marker_value(spawn::SERVE_FD))?;
    spawn::spawn_self(&[(theirs.as_fd(), spawn::SERVE_FD)], &marker)?;
    Ok(ours)
}

/// Reaps every child that has ended: (pid, wait status).
fn reap() -> Vec<(u32, i32)> {
    let mut ended = Vec::new();
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes the status into the local.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return ended;
        }
        ended.push((pid as u32, status));
    }
}

/// This process's children, from `/proc` (processes forked by its
/// templates are its children too, but it did not start them).
fn children() -> Vec<u32> {
    let me = std::process::id();
    let mut all = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{me}/task")) else {
        return all;
    };
    for task in tasks.flatten() {
        if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
            all.extend(
                list.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    all
}

fn log(message: &str) {
    eprintln!(
        "anyfork: relay {} on the far side: {message}",
        std::process::id()
    );
}
