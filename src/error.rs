//! The error type of processes and forks.

use std::fmt;
use std::io;
use std::process::ExitStatus;
use std::sync::Arc;

use crate::proto::{ChildErrorKind, ProtocolError};

/// Which process an error is about, for messages: its pid when known, and
/// how it was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessName {
    /// The pid, if it was known when the error happened.
    pub pid: Option<u32>,
    /// How the process was made.
    pub origin: Origin,
}

/// How a process was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Origin {
    /// By [`Fork::new_exec`](crate::Fork::new_exec) (a fresh `exec`).
    Exec,
    /// By forking a template; its pid, when known.
    Fork {
        /// The template's pid.
        template: Option<u32>,
    },
    /// By [`early`](crate::early).
    Early,
    /// By [`Template::here`](crate::Template::here).
    Here,
    /// Received with [`Fork::new_from_fh`](crate::Fork::new_from_fh).
    FromFh,
    /// At the other end of a pair of byte streams
    /// ([`Fork::new_from_streams`](crate::Fork::new_from_streams)).
    Streams,
    /// On another machine, over a [`Remote`](crate::remote::Remote)
    /// connection (a fresh serving process there, or a fork of one).
    Remote,
}

impl fmt::Display for ProcessName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pid {
            Some(pid) => write!(f, "process {pid}")?,
            None => f.write_str("process (pid not yet known)")?,
        }
        match self.origin {
            Origin::Exec => f.write_str(" (new_exec)"),
            Origin::Fork { template: Some(t) } => write!(f, " (forked from template {t})"),
            Origin::Fork { template: None } => f.write_str(" (forked from a template)"),
            Origin::Early => f.write_str(" (early template)"),
            Origin::Here => f.write_str(" (Template::here)"),
            Origin::FromFh => f.write_str(" (received with new_from_fh)"),
            Origin::Streams => f.write_str(" (at the other end of a pair of streams)"),
            Origin::Remote => f.write_str(" (on another machine)"),
        }
    }
}

/// How a process ended, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending(
    pub(crate) Option<ExitStatus>,
    /// For a process on another machine: where, and why its connection
    /// is gone if it is.
    pub(crate) Option<std::sync::Arc<str>>,
);

impl Ending {
    /// The exit status, if the process had ended and was reaped in time.
    pub fn status(&self) -> Option<ExitStatus> {
        self.0
    }
}

impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use std::os::unix::process::ExitStatusExt;
        if let Some(far) = &self.1 {
            write!(f, " ({far})")?;
        }
        match self.0 {
            None => Ok(()),
            Some(status) => match (status.code(), status.signal()) {
                (Some(crate::EXIT_SERVE_FAILED), _) => {
                    write!(
                        f,
                        " (exit status {}: the serving process gave up; see its stderr)",
                        crate::EXIT_SERVE_FAILED
                    )
                }
                (Some(crate::EXIT_PANICKED), _) => {
                    write!(f, " (exit status {}: panicked)", crate::EXIT_PANICKED)
                }
                (Some(code), _) => write!(f, " (exit status {code})"),
                (_, Some(signal)) => write!(f, " (killed by signal {signal})"),
                _ => write!(f, " ({status})"),
            },
        }
    }
}

/// Everything that can go wrong creating, preparing, running and waiting for
/// processes. Each variant names the process or function concerned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A fresh serving process could not be started.
    #[error("cannot start a serving process of this executable")]
    Spawn {
        /// The `posix_spawn` or socket error.
        source: io::Error,
    },
    /// A system call in this program failed while preparing a process (no
    /// descriptors left for a socket, say); the templates involved are
    /// fine.
    #[error("{doing}: {call} failed")]
    System {
        /// The system call.
        call: &'static str,
        /// What anyfork was doing.
        doing: &'static str,
        /// Its error.
        source: io::Error,
    },
    /// This program runs with privileges its caller does not have (setuid,
    /// setgid or file capabilities: `AT_SECURE`), where serve mode is
    /// refused, so [`Fork::new_exec`](crate::Fork::new_exec) cannot start a
    /// serving process. Call [`early`](crate::early) first thing in `main`:
    /// every process is then forked, never started with `exec`.
    #[error(
        "this program runs setuid, setgid or with file capabilities (AT_SECURE), where serve mode is refused: \
         new_exec cannot start a serving process; call anyfork::early() first thing in main to fork processes instead"
    )]
    Privileged,
    /// [`early`](crate::early) or [`Template::here`](crate::Template::here)
    /// was called in a process with more than one thread.
    #[error(
        "{what} must fork the program, which is unsafe with threads: this process has {threads} threads"
    )]
    Threaded {
        /// Which call it was.
        what: &'static str,
        /// How many threads there were.
        threads: usize,
    },
    /// Forking the program itself failed.
    #[error("{what}: cannot fork this program")]
    ForkProgram {
        /// Which call it was.
        what: &'static str,
        /// The error from `fork`.
        source: io::Error,
    },
    /// `run` or `eval` named a function this program has not registered.
    #[error(
        "no {kind} named `{name}` is registered in this program (register it with anyfork::{macro_name}!)"
    )]
    UnknownFunction {
        /// "function" or "initialiser".
        kind: &'static str,
        /// The name.
        name: String,
        /// The macro that registers such a function.
        macro_name: &'static str,
    },
    /// A function value lives outside the main executable (in a shared
    /// library), so it cannot be named across `exec`.
    #[error(
        "`{name}` cannot be sent by value: it is not in the main executable; register it and run it by name"
    )]
    NotInExecutable {
        /// The function's type name.
        name: String,
    },
    /// The serving process refused a command and exited (the process's
    /// stderr has the same message).
    #[error("{process}: {kind}: {message}")]
    Refused {
        /// The process.
        process: ProcessName,
        /// What kind of refusal.
        kind: ChildErrorKind,
        /// Its message.
        message: String,
    },
    /// The process (or the template that was to fork it) ended before it
    /// could do what was asked.
    #[error("{process} ended before {doing}{ending}{}", cause.as_ref().map(|c| format!(": {c}")).unwrap_or_default())]
    Ended {
        /// The process.
        process: ProcessName,
        /// What the parent was doing.
        doing: String,
        /// How it ended, if known.
        ending: Ending,
        /// What the template said, if the process was never created.
        cause: Option<String>,
    },
    /// A process did not answer in time: stopped (`SIGSTOP`, a debugger),
    /// wedged in an initialiser, or its template is. See
    /// [`set_default_timeout`](crate::set_default_timeout).
    #[error("{process}: no answer within {timeout:?} while {doing}{state}")]
    Timeout {
        /// The process.
        process: ProcessName,
        /// What the parent was waiting for.
        doing: String,
        /// How long it waited.
        timeout: std::time::Duration,
        /// What the process and its template were doing then, as the
        /// kernel says (for example "; its template 123 is stopped").
        state: String,
    },
    /// Talking to the process failed.
    #[error("{process}: {doing}")]
    Io {
        /// The process.
        process: ProcessName,
        /// What the parent was doing.
        doing: String,
        /// The error.
        source: io::Error,
    },
    /// The process sent something that is not a valid reply.
    #[error("{process} sent a malformed reply")]
    Protocol {
        /// The process.
        process: ProcessName,
        /// What was wrong.
        source: ProtocolError,
    },
    /// A command could not be encoded (an argument over 4 GiB).
    #[error("{process}: cannot send a command")]
    Encode {
        /// The process.
        process: ProcessName,
        /// What was wrong.
        source: ProtocolError,
    },
    /// An earlier builder call failed; the `Fork` is unusable.
    #[error("{process}: an earlier call failed: {cause}")]
    Broken {
        /// The process.
        process: ProcessName,
        /// The earlier error's message.
        cause: String,
    },
    /// A `Fork` made in one process was used in another (a forked copy of
    /// the program).
    #[error("this Fork belongs to process {owner} and cannot be used in process {current}")]
    ForeignFork {
        /// The process that made the `Fork`.
        owner: u32,
        /// The process that tried to use it.
        current: u32,
    },
    /// An RPC call (or handle) failed; see [`crate::rpc::Error`]. Made by
    /// `?` on an RPC result in a function that returns this error type.
    #[error("an RPC call or handle failed")]
    Rpc(#[source] Box<crate::rpc::Error>),
    /// The process is not a child of this program, so its exit status
    /// cannot be read here.
    #[error("process {pid} is not a child of this program; its exit status is not available here")]
    NotAChild {
        /// The process.
        pid: u32,
    },
    /// The process talks over a pair of byte streams (pipes, a command's
    /// stdin and stdout): the pid it gave is its own, perhaps on another
    /// machine, so there is no handle to signal or wait for it here.
    #[error(
        "{process} talks over a pair of byte streams: there is no handle to signal or wait for it here"
    )]
    NotLocal {
        /// The process.
        process: ProcessName,
    },
    /// The process runs on another machine, where no descriptor of this
    /// one can go.
    #[error("{process}: {what} cannot pass a file descriptor to another machine")]
    NoDescriptors {
        /// The process.
        process: ProcessName,
        /// The call.
        what: &'static str,
    },
    /// The call needs a unix socket (to pass descriptors, or to hand one to
    /// the caller), and the process talks over a pair of byte streams.
    #[error(
        "{process}: {what} needs a unix socket, and this process talks over a pair of byte streams (pipes, or a command's stdin and stdout)"
    )]
    NeedsSocket {
        /// The process.
        process: ProcessName,
        /// The call.
        what: &'static str,
    },
    /// Waiting for a process failed.
    #[error("waiting for process {pid}")]
    Wait {
        /// The process.
        pid: u32,
        /// The error.
        source: io::Error,
    },
    /// Sending a signal failed.
    #[error("sending signal {signal} to process {pid}")]
    Kill {
        /// The process.
        pid: u32,
        /// The signal number.
        signal: i32,
        /// The error.
        source: io::Error,
    },
}

/// An error and its causes in one line, `outer: inner: innermost`, for
/// messages this crate keeps or forwards as text (each error's `Display`
/// says only its own part; `source()` has the rest).
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

/// An RPC error in code that otherwise deals in process errors, so that
/// `?` works on both kinds in one function.
///
/// ```
/// fn double(n: u64) -> u64 {
///     n * 2
/// }
/// fn run() -> Result<u64, anyfork::Error> {
///     let rpc = anyfork::Fork::new()?.rpc(double).start()?;
///     Ok(rpc.call_blocking(21)?) // anyfork::rpc::Error
/// }
/// assert_eq!(run()?, 42);
/// # Ok::<(), anyfork::Error>(())
/// ```
impl From<crate::rpc::Error> for Error {
    fn from(error: crate::rpc::Error) -> Self {
        match error {
            // Unwrap what was a process error to begin with.
            crate::rpc::Error::Start(inner) => Arc::try_unwrap(inner)
                .unwrap_or_else(|shared| Error::Rpc(Box::new(crate::rpc::Error::Start(shared)))),
            other => Error::Rpc(Box::new(other)),
        }
    }
}
