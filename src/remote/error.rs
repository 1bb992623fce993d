//! What can go wrong with a connection to another machine.

use std::process::ExitStatus;

use super::wire::Hello;

/// A remote connection's error: what went wrong, and with which
/// connection (the command that made it, or the name it was given).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The command could not be started here (`ssh` not installed, say).
    #[error("{connection}: cannot start the command: {source}")]
    Spawn {
        /// The connection.
        connection: String,
        /// Why.
        source: std::io::Error,
    },
    /// The far side ended before the handshake: the command failed. `hint`
    /// says what its exit status usually means (ssh could not connect or
    /// log in, the program is missing or not executable there).
    #[error(
        "{connection}: the far side ended before saying hello{}{hint}{}",
        status_text(status),
        stderr_text(stderr)
    )]
    Ended {
        /// The connection.
        connection: String,
        /// The command's exit status, if it was reaped.
        status: Option<ExitStatus>,
        /// What the exit status usually means (may be empty).
        hint: &'static str,
        /// The last lines the command wrote to its stderr.
        stderr: String,
    },
    /// The far side said something that is not anyfork's hello: the
    /// command started another program, or a login script printed on
    /// stdout.
    #[error(
        "{connection}: the far side does not speak anyfork: it said {said:?} (is the program started in serve mode, with `--anyfork-serve=mux:1`, and does nothing print on stdout before it?){}",
        stderr_text(stderr)
    )]
    NotAnyfork {
        /// The connection.
        connection: String,
        /// The first bytes it said.
        said: String,
        /// The last lines the command wrote to its stderr.
        stderr: String,
    },
    /// The far side runs another build, target or protocol: nothing it
    /// says could be trusted to mean the same.
    #[error("{connection}: {what} mismatch: this program runs {ours}, the far side runs {theirs}")]
    Skew {
        /// The connection.
        connection: String,
        /// What differs: `build`, `target`, `template protocol`,
        /// `multiplexing protocol`.
        what: &'static str,
        /// This side's hello.
        ours: Box<Hello>,
        /// The far side's hello.
        theirs: Box<Hello>,
    },
    /// The far side refused the connection, saying why.
    #[error("{connection}: the far side refused: {why}")]
    Refused {
        /// The connection.
        connection: String,
        /// Its reason.
        why: String,
    },
    /// No hello within the handshake timeout.
    #[error("{connection}: no hello from the far side within {} ms{}", after.as_millis(), stderr_text(stderr))]
    Timeout {
        /// The connection.
        connection: String,
        /// The timeout.
        after: std::time::Duration,
        /// The last lines the command wrote to its stderr.
        stderr: String,
    },
    /// The connection is gone (the far side died, the network dropped, the
    /// keepalive found it silent): every process on it is gone too.
    #[error("{connection}: the connection is lost: {why}")]
    Lost {
        /// The connection.
        connection: String,
        /// Why.
        why: String,
    },
    /// Shipping this program's executable to the far side failed.
    #[error("{connection}: cannot ship the executable: {why}")]
    Ship {
        /// The connection.
        connection: String,
        /// Why.
        why: String,
    },
    /// A system call failed.
    #[error("{connection}: {doing}: {source}")]
    Io {
        /// The connection.
        connection: String,
        /// What was being done.
        doing: &'static str,
        /// Why.
        source: std::io::Error,
    },
}

fn status_text(status: &Option<ExitStatus>) -> String {
    match status {
        Some(status) => format!(" ({status})"),
        None => String::new(),
    }
}

fn stderr_text(stderr: &str) -> String {
    let stderr = stderr.trim();
    if stderr.is_empty() {
        String::new()
    } else {
        format!("; its stderr said: {stderr}")
    }
}

/// What an exit status of the command usually means.
pub(crate) fn hint(status: Option<ExitStatus>, ssh: bool) -> &'static str {
    match status.and_then(|s| s.code()) {
        Some(127) => ": the program was not found on the far side",
        Some(126) => ": the program is not executable on the far side",
        Some(255) if ssh => ": ssh could not connect or log in",
        _ => "",
    }
}
