//! [`Rpc`]: the handle, and its calls (blocking, with a timeout, async),
//! `kill` and `shutdown`.

use std::future::Future;
use std::marker::PhantomData;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::core::decode_message;
use super::core::{Core, Phase, State};
use super::event_queue::EventQueue;
use super::events::Events;
use super::pending::PendingCall;
use crate::rpc::error::Error;
use crate::rpc::function::Octets;

/// A handle to an RPC server in a child process: call it, blocking or async.
///
/// Cheap to clone: every clone calls the same child, so several threads or
/// tasks can share one worker without wrapping it (it is `Send` and
/// `Sync`). Dropping the last clone lets the child answer every call
/// already made and then exit; `on_destroy` runs after the last reply.
///
/// ```
/// fn double(n: u64) -> u64 {
///     n * 2
/// }
/// let rpc = anyfork::Fork::new()?.rpc(double).start()?;
/// let threads: Vec<_> = (0..4u64)
///     .map(|i| {
///         let rpc = rpc.clone();
///         std::thread::spawn(move || rpc.call_blocking(i))
///     })
///     .collect();
/// for (i, thread) in threads.into_iter().enumerate() {
///     assert_eq!(thread.join().unwrap()?, 2 * i as u64);
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Rpc<Req = Octets, Rep = Octets, Ev = Octets> {
    pub(super) core: Arc<Core>,
    /// Shared by the clones; releases the child when the last one goes.
    pub(super) shared: Arc<Shared>,
    pub(super) _types: PhantomData<fn(Req) -> (Rep, Ev)>,
}

/// What the clones of a handle share.
pub(super) struct Shared {
    pub(super) core: Arc<Core>,
    /// The event stream, until [`Rpc::events`] takes it.
    pub(super) events: std::sync::Mutex<Option<Arc<EventQueue>>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.core.clone().release();
    }
}

impl<Req, Rep, Ev> Clone for Rpc<Req, Rep, Ev> {
    fn clone(&self) -> Self {
        Rpc {
            core: self.core.clone(),
            shared: self.shared.clone(),
            _types: PhantomData,
        }
    }
}

impl<Req, Rep, Ev> std::fmt::Debug for Rpc<Req, Rep, Ev> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rpc")
            .field("function", &self.core.function)
            .finish_non_exhaustive()
    }
}

impl<Req, Rep, Ev> Rpc<Req, Rep, Ev>
where
    Req: Serialize,
    Rep: DeserializeOwned,
    Ev: DeserializeOwned,
{
    /// The child's pid, as [`Fork::pid`](crate::Fork::pid) gives it: at
    /// once if known (a process from [`Fork::new`](crate::Fork::new) or
    /// [`Fork::new_exec`](crate::Fork::new_exec) usually is), otherwise
    /// after waiting for the child to say it, which it does first thing
    /// (at most the [default timeout](crate::set_default_timeout)). Like
    /// the other blocking calls, not for async code on a current-thread
    /// runtime.
    ///
    /// ```
    /// fn id(_: ()) -> u32 {
    ///     std::process::id()
    /// }
    /// let template = anyfork::Fork::new()?;
    /// let rpc = template.fork()?.rpc(id).codec(anyfork::rpc::Codec::Cbor).start()?;
    /// let pid = rpc.pid()?;
    /// assert_eq!(rpc.call_blocking(())?, pid);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Start`] or another error if the child ended (or broke the
    /// protocol) before saying its pid; [`Error::Timeout`] if it did not
    /// say it in time.
    pub fn pid(&self) -> Result<u32, Error> {
        if let Some(pid) = self.core.lock().link.name().pid {
            return Ok(pid);
        }
        self.core.await_pid_or_timeout()?;
        self.core.said_pid()
    }

    /// A handle to the child process (pid, signals, exit status); waits for
    /// the pid as [`pid`](Rpc::pid) does.
    ///
    /// # Errors
    ///
    /// As for [`pid`](Rpc::pid); [`crate::Error::NotLocal`] (inside
    /// [`Error::Start`]) for a process at the other end of a pair of
    /// streams, which has no handle here.
    pub fn process(&self) -> Result<crate::Process, Error> {
        self.pid()?;
        let state = self.core.lock();
        state
            .link
            .process()
            .cloned()
            .ok_or_else(|| Error::Start(Arc::new(state.link.no_process())))
    }

    fn decode(&self, message: (Vec<u8>, Vec<OwnedFd>)) -> Result<Rep, Error> {
        decode_message(&self.core, message)
    }

    /// Calls the function and waits (blocking) for its result.
    ///
    /// Outside a tokio runtime the calling thread reads the reply itself,
    /// so a round trip costs about what a raw socket round trip costs.
    /// Inside one, do not call this from an async task (use
    /// [`call`](Self::call)).
    ///
    /// # Errors
    ///
    /// [`Error::Failed`] if the function panicked or could not decode its
    /// arguments (this call only); [`Error::Ended`], [`Error::Server`],
    /// [`Error::Protocol`] if the process or connection failed; codec and
    /// I/O errors.
    pub fn call_blocking(&self, request: Req) -> Result<Rep, Error> {
        let pending = self.core.submit(&request)?;
        let reply = pending.wait_blocking(None, Duration::ZERO)?;
        self.decode(reply)
    }

    /// [`call_blocking`](Self::call_blocking) that gives up after `timeout`:
    /// the call is cancelled (the child aborts it if it runs on the async
    /// backend; a late reply is ignored).
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`], or as for [`call_blocking`](Self::call_blocking).
    pub fn call_blocking_timeout(&self, request: Req, timeout: Duration) -> Result<Rep, Error> {
        let pending = self.core.submit(&request)?;
        let reply = pending.wait_blocking(Some(Instant::now() + timeout), timeout)?;
        self.decode(reply)
    }

    /// Calls the function (async). The request is queued at once, when
    /// `call` is called, as in the Perl module; the returned future owns
    /// what it needs, so the handle may be dropped while calls are
    /// outstanding (the child answers them first). Dropping the future
    /// cancels the call.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// async fn shout(text: String) -> String {
    ///     text.to_uppercase()
    /// }
    ///
    /// let rpc = anyfork::Fork::new()?.rpc(shout).start()?;
    /// let (a, b) = (rpc.call("a".into()), rpc.call("b".into()));
    /// drop(rpc); // both calls are queued; the child answers them, then exits
    /// assert_eq!((a.await?, b.await?), ("A".to_string(), "B".to_string()));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::NoRuntime`] outside a tokio runtime; otherwise as for
    /// [`call_blocking`](Self::call_blocking).
    pub fn call(&self, request: Req) -> impl Future<Output = Result<Rep, Error>> + Send + 'static
    where
        Rep: Send + 'static,
    {
        let submitted = self.submit_async(&request);
        let core = self.core.clone();
        async move {
            let reply = submitted?.await?;
            decode_message(&core, reply)
        }
    }

    #[cfg(feature = "tokio")]
    fn submit_async(&self, request: &Req) -> Result<PendingCall, Error> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::NoRuntime);
        }
        let pending = self.core.submit(request)?;
        self.core.clone().ensure_driver();
        Ok(pending)
    }

    #[cfg(not(feature = "tokio"))]
    fn submit_async(&self, _: &Req) -> Result<PendingCall, Error> {
        Err(Error::NoRuntime)
    }

    /// [`call`](Self::call) that gives up after `timeout`, cancelling the
    /// call.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`], or as for [`call`](Self::call).
    #[cfg(feature = "tokio")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
    pub fn call_timeout(
        &self,
        request: Req,
        timeout: Duration,
    ) -> impl Future<Output = Result<Rep, Error>> + Send + 'static
    where
        Rep: Send + 'static,
    {
        let call = self.call(request);
        let core = self.core.clone();
        async move {
            match tokio::time::timeout(timeout, call).await {
                Ok(result) => result,
                Err(_) => Err(core.timed_out(timeout, false)),
            }
        }
    }

    /// Kills the child now (`SIGKILL`) and closes the handle: outstanding
    /// calls fail with [`Error::Killed`], later calls too. Waits (at most
    /// a few seconds) for the child's pid if it has not said it yet.
    ///
    /// ```
    /// fn stuck(_: u32) -> u32 {
    ///     loop {
    ///         std::thread::park();
    ///     }
    /// }
    /// let rpc = anyfork::Fork::new()?.rpc(stuck).start()?;
    /// rpc.kill()?;
    /// assert!(matches!(rpc.call_blocking(1), Err(anyfork::rpc::Error::Killed { .. })));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the signal cannot be sent; as for
    /// [`call_blocking`](Self::call_blocking) if the child's pid cannot be
    /// learned (it died first).
    pub fn kill(&self) -> Result<(), Error> {
        self.core.kill_child("killed by Rpc::kill".into())
    }

    /// Ends the child gracefully, within `grace`: every call already made
    /// is answered, then the child exits as when the last handle is
    /// dropped (calls made later through a clone fail with
    /// [`Error::ShutDown`]); if
    /// that takes longer than `grace`, the child is killed and the calls
    /// still outstanding fail with [`Error::Killed`]. Returns the child's
    /// exit status. Blocks: call it outside async tasks (or in
    /// `spawn_blocking`).
    ///
    /// ```
    /// fn double(n: u64) -> u64 {
    ///     n * 2
    /// }
    /// let rpc = anyfork::Fork::new()?.rpc(double).start()?;
    /// assert_eq!(rpc.call_blocking(4)?, 8);
    /// let status = rpc.shutdown(std::time::Duration::from_secs(5))?;
    /// assert!(status.success());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As for [`kill`](Self::kill); [`Error::Io`] if the exit status cannot
    /// be read.
    pub fn shutdown(self, grace: Duration) -> Result<std::process::ExitStatus, Error> {
        let core = self.core.clone();
        let deadline = Instant::now() + grace;
        core.await_pid(deadline)?;
        drop(self);
        // For every clone: no more requests; the child sees the end.
        core.clone().release();
        let closed = |state: &State| matches!(state.phase, Phase::Closed(_));
        let ended = match core.pump_or_wait(Some(deadline), &closed) {
            Ok(()) => closed(&core.lock()),
            Err(_) => true,
        };
        if !ended {
            core.kill_child(format!("still busy when the shutdown's {grace:?} ran out"))?;
        }
        let process = core.lock().link.process().cloned();
        let process = process.ok_or_else(|| core.no_pid_error())?;
        process.wait().map_err(|e| Error::Io {
            process: core.process_name(),
            doing: "waiting for the child to exit",
            source: Arc::new(std::io::Error::other(e)),
        })
    }

    /// The events, if the handle was built with
    /// [`event_stream`](crate::rpc::RpcBuilder::event_stream) (once, for
    /// all clones: later calls return `None`).
    pub fn events(&self) -> Option<Events<Ev>> {
        let queue = self
            .shared
            .events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        queue.map(|queue| Events {
            core: self.core.clone(),
            queue,
            _types: PhantomData,
        })
    }
}
