//! The error type of pool calls, and how a worker died.

use std::fmt;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

/// Why a call through a [`Pool`](super::Pool) failed. Cheap to clone.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The call failed on its worker, which is fine: the function panicked
    /// or could not decode its arguments ([`crate::rpc::Error::Failed`]),
    /// or the request or reply could not be encoded or decoded.
    #[error("the call failed")]
    Call(#[source] Box<crate::rpc::Error>),
    /// The worker running this call died (or broke its connection). Only
    /// the calls it had started fail so; those waiting behind them go to
    /// another worker.
    #[error("worker {pid} running `{function}` {death}{}", if *.started { "" } else { " (the call may not have started)" })]
    WorkerDied {
        /// The pool's function.
        function: String,
        /// The worker's pid (0 if it never said it).
        pid: u32,
        /// How it died.
        death: Death,
        /// `true` if the call was running when it died; `false` when that
        /// cannot be told (the asynchronous backend runs several at once).
        started: bool,
        /// What the RPC layer reported.
        source: Box<crate::rpc::Error>,
    },
    /// The call did not complete within its deadline. If it was running on
    /// a worker of the synchronous backend, that worker was killed (and
    /// replaced), as it would otherwise compute on and hold the calls
    /// behind it.
    #[error("`{function}` did not answer within {timeout:?}{}", match killed { Some(pid) => format!("; its worker {pid} was killed"), None if *queued => "; it was still queued".into(), None => String::new() })]
    Timeout {
        /// The pool's function.
        function: String,
        /// The time allowed.
        timeout: Duration,
        /// It never left the pool's queue.
        queued: bool,
        /// The worker killed because of it.
        killed: Option<u32>,
    },
    /// [`Pool::try_call`](super::Pool::try_call) found the queue full.
    #[error("the pool's queue is full ({limit} calls waiting)")]
    Full {
        /// The queue's bound.
        limit: usize,
    },
    /// New workers kept dying before they answered a call: the pool gave
    /// up after `failures` in a row instead of starting more. Every
    /// queued and later call fails with this until
    /// [`Pool::reset_breaker`](super::Pool::reset_breaker).
    #[error(
        "{failures} worker(s) of `{function}` in a row died before answering a call; the last: {cause}"
    )]
    CrashLoop {
        /// The pool's function.
        function: String,
        /// How many died in a row.
        failures: u32,
        /// What the last one said or how it died.
        cause: Arc<str>,
    },
    /// A worker could not be started at all (the template is gone).
    #[error("cannot start a worker")]
    Start(#[source] Arc<crate::Error>),
    /// The pool was shut down: the call was refused, or given up when the
    /// shutdown's grace ran out.
    #[error("the pool of `{function}` was shut down{}", if *.killed { "; its worker was killed with the call running" } else { "" })]
    ShutDown {
        /// The pool's function.
        function: String,
        /// The call was running on a worker killed by the shutdown.
        killed: bool,
    },
    /// An async call was made outside a tokio runtime.
    #[error("async pool calls need a tokio runtime (use call_blocking outside one)")]
    NoRuntime,
}

impl From<crate::Error> for Error {
    fn from(error: crate::Error) -> Self {
        Error::Start(Arc::new(error))
    }
}

/// How a worker ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Death {
    /// It exited with this status.
    Exited(i32),
    /// A signal killed it.
    Signal(i32),
    /// The kernel's OOM killer killed it (its cgroup's `oom_kill` count
    /// rose while it ran, and it died of `SIGKILL`).
    OutOfMemory,
    /// The pool killed it: `why`.
    KilledByPool(Arc<str>),
    /// Its connection broke, or it ended in a way not known (yet).
    Unknown,
}

impl Death {
    /// From an exit status, if one was read.
    pub(crate) fn from_status(status: Option<ExitStatus>, oom_rose: bool) -> Death {
        use std::os::unix::process::ExitStatusExt;
        match status {
            Some(status) => match (status.code(), status.signal()) {
                (_, Some(9)) if oom_rose => Death::OutOfMemory,
                (Some(code), _) => Death::Exited(code),
                (_, Some(signal)) => Death::Signal(signal),
                _ => Death::Unknown,
            },
            None => Death::Unknown,
        }
    }
}

impl fmt::Display for Death {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Death::Exited(code) if *code == crate::EXIT_PANICKED => {
                write!(f, "exited with status {code} (panicked)")
            }
            Death::Exited(code) => write!(f, "exited with status {code}"),
            Death::Signal(signal) => match signal_name(*signal) {
                Some(name) => write!(f, "was killed by signal {signal} ({name})"),
                None => write!(f, "was killed by signal {signal}"),
            },
            Death::OutOfMemory => write!(f, "was killed by the kernel's OOM killer"),
            Death::KilledByPool(why) => write!(f, "was killed by the pool: {why}"),
            Death::Unknown => write!(f, "ended"),
        }
    }
}

/// The usual name of a signal that kills.
fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::Death;

    #[test]
    fn deaths_read_well() {
        assert_eq!(
            Death::Signal(9).to_string(),
            "was killed by signal 9 (SIGKILL)"
        );
        assert_eq!(Death::Signal(60).to_string(), "was killed by signal 60");
        assert_eq!(Death::Exited(3).to_string(), "exited with status 3");
        assert_eq!(
            Death::OutOfMemory.to_string(),
            "was killed by the kernel's OOM killer"
        );
    }
}
