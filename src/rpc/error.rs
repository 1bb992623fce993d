//! The error type of RPC calls.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use super::codec::CodecError;
use crate::error::{Ending, ProcessName};
use crate::proto::ProtocolError;

/// Why a call (or the whole handle) failed. Cheap to clone: one cause can
/// fail every outstanding call.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The process could not be started or prepared (see the core error).
    #[error("starting the RPC process")]
    Start(#[source] Arc<crate::Error>),
    /// This call failed in the child: the function panicked, or its
    /// arguments could not be decoded there. Other calls are unaffected.
    #[error("`{function}` failed in {process}: {message}")]
    Failed {
        /// The RPC function.
        function: String,
        /// The process.
        process: ProcessName,
        /// The panic message or decoding error.
        message: String,
    },
    /// The RPC server itself gave up (unknown function, failing `init`,
    /// malformed requests); every call fails with this.
    #[error("the RPC server for `{function}` in {process} gave up: {message}")]
    Server {
        /// The RPC function.
        function: String,
        /// The process.
        process: ProcessName,
        /// Its message.
        message: String,
    },
    /// The process ended with calls outstanding (or before this call).
    ///
    /// `delivered` tells a caller whether to retry: `Some(false)` means
    /// this call's request never left this program (it was queued behind
    /// others, or made after the end), so the child cannot have run it;
    /// `Some(true)` means it was written to the child, which may have run
    /// it, or part of it. `None` in the report to `on_error`, which is
    /// about the handle, not one call.
    #[error("{process} ended with {outstanding} call(s) to `{function}` outstanding{ending}{}", match (delivered, started) { (Some(false), _) => "; this call was never sent to it", (_, Some(false)) => "; this call was waiting behind the one it was running", (_, Some(true)) => "; this call was running", _ => "" })]
    Ended {
        /// The RPC function.
        function: String,
        /// The process.
        process: ProcessName,
        /// How it ended, if known.
        ending: Ending,
        /// Calls that were waiting.
        outstanding: usize,
        /// Whether this call's request had been written to the child.
        delivered: Option<bool>,
        /// For a call delivered to a child on the synchronous backend,
        /// which runs one call at a time in order: `Some(true)` if it was
        /// the call running when the child ended, `Some(false)` if it was
        /// still waiting behind that one (so it never ran). `None` where
        /// this cannot be known (the asynchronous backend, a call never
        /// delivered, the report to `on_error`).
        started: Option<bool>,
    },
    /// The child was killed by this program: [`Rpc::kill`](super::Rpc::kill),
    /// a call that timed out on a handle built with
    /// [`kill_on_timeout`](super::RpcBuilder::kill_on_timeout), or a
    /// [`shutdown`](super::Rpc::shutdown) whose grace ran out.
    #[error("{process} running `{function}` was killed: {why}")]
    Killed {
        /// The RPC function.
        function: String,
        /// The process.
        process: ProcessName,
        /// Why it was killed.
        why: String,
    },
    /// The child sent something that is not a valid frame, or a reply to a
    /// call that does not exist; the connection is closed.
    #[error("{process} broke the RPC protocol")]
    Protocol {
        /// The process.
        process: ProcessName,
        /// What was wrong.
        source: ProtocolError,
    },
    /// The request could not be encoded, or the reply or an event decoded.
    #[error("`{function}`: a message could not be encoded or decoded")]
    Codec {
        /// The RPC function.
        function: String,
        /// What was wrong.
        source: CodecError,
    },
    /// Reading or writing the socket failed.
    #[error("{process}: {doing}")]
    Io {
        /// The process.
        process: ProcessName,
        /// What the parent was doing.
        doing: &'static str,
        /// The error.
        source: Arc<io::Error>,
    },
    /// The call did not complete in time; it was cancelled.
    #[error("`{function}` did not answer within {timeout:?}")]
    Timeout {
        /// The RPC function.
        function: String,
        /// The time allowed.
        timeout: Duration,
    },
    /// The handle was shut down ([`Rpc::shutdown`](crate::rpc::Rpc::shutdown)
    /// through another clone): no more calls.
    #[error("the handle of `{function}` in {process} was shut down")]
    ShutDown {
        /// The RPC function.
        function: String,
        /// The process.
        process: ProcessName,
    },
    /// An async call was made outside a tokio runtime.
    #[error("async RPC calls need a tokio runtime (use call_blocking outside one)")]
    NoRuntime,
}

/// A process error met while starting or preparing the process of an RPC
/// handle, so that `?` works on both kinds in one function.
///
/// ```
/// fn double(n: u64) -> u64 {
///     n * 2
/// }
/// fn run() -> Result<u64, anyfork::rpc::Error> {
///     let rpc = anyfork::Fork::new()?.rpc(double).start()?; // anyfork::Error
///     rpc.call_blocking(21) // anyfork::rpc::Error
/// }
/// assert_eq!(run()?, 42);
/// # Ok::<(), anyfork::rpc::Error>(())
/// ```
impl From<crate::Error> for Error {
    fn from(error: crate::Error) -> Self {
        Error::Start(Arc::new(error))
    }
}
