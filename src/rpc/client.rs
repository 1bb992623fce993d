//! The parent side of RPC: [`RpcBuilder`], [`Rpc`], [`Events`].
//!
//! # Who reads the socket
//!
//! One reader at a time takes replies, events and log records off the
//! socket, in order, and hands each to its call or handler:
//!
//! - In a program without a tokio runtime, the reader is a caller: a
//!   blocking call that finds nobody reading reads itself until its reply
//!   has come, then passes the role on. A round trip thus costs what a raw
//!   socket round trip costs, with no extra thread wake-up.
//! - Inside a tokio runtime (or after the first async call), a driver task
//!   owns the socket: it writes queued requests in batches and reads
//!   continuously, so events arrive even when no call is waiting. Blocking
//!   calls then wait for the driver.
//!
//! # Ending
//!
//! Dropping the [`Rpc`] handle sends every queued request and then shuts
//! the socket for writing: the child answers what it has and exits. When
//! the child's end closes with no call outstanding, `on_destroy` runs; with
//! calls outstanding, they fail with [`Error::Ended`] naming how the process
//! ended, and `on_error` runs. Without a runtime, a short-lived thread
//! reads the remaining replies and events after the drop when anything
//! still needs them.

use std::any::TypeId;
use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::codec::Codec;
use super::config::Config;
#[cfg(feature = "tokio")]
use super::delivery::STALL;
use super::delivery::{Delivery, Handler, Item, Outcome, Slot};
use super::error::Error;
use super::frame::{self, Decoder, kind};
use super::function::{IntoRpc, IntoRpcDone, IntoRpcInit, Octets, RpcFunction};
use crate::error::{Ending, ProcessName};
use crate::fork::{Fork, Link};
use crate::proto::{DEFAULT_MAX_FRAME_LEN, ProtocolError, Reply};
use crate::registry::{FunctionRef, FunctionRepr, IntoRun, Lookup};
use crate::transport::Transport;

/// The manual's default buffer length: `512 - 16`.
pub const DEFAULT_BUFLEN: usize = 512 - 16;

type EventHandler = Box<dyn FnMut(Vec<u8>, Vec<OwnedFd>) + Send>;
type ErrorHandler = Box<dyn FnMut(&Error) + Send>;
type DestroyHandler = Box<dyn FnOnce() + Send>;

/// Prepares an RPC handle: made by [`Fork::rpc`].
///
/// `Req`, `Rep` and `Ev` are the request, reply and event types: inferred
/// from a function value, [`Octets`] for a name until [`types`](Self::types)
/// says otherwise, and set for events by [`on_event`](Self::on_event).
#[must_use = "an RpcBuilder does nothing until start()"]
pub struct RpcBuilder<Req = Octets, Rep = Octets, Ev = Octets> {
    fork: Fork,
    function: RpcFunction,
    codec: Codec,
    init: Option<FunctionRef>,
    done: Option<FunctionRef>,
    buflen_req: usize,
    buflen_res: usize,
    max_frame: u64,
    on_event: Option<Box<dyn FnMut(Ev) + Send>>,
    on_error: Option<ErrorHandler>,
    on_destroy: Option<DestroyHandler>,
    event_stream: bool,
    forward_tracing: bool,
    die_with_parent: bool,
    kill_on_timeout: bool,
    _types: PhantomData<fn(Req) -> Rep>,
}

impl<Req, Rep, Ev> std::fmt::Debug for RpcBuilder<Req, Rep, Ev> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcBuilder")
            .field("function", &self.function.label())
            .field("codec", &self.codec)
            .finish_non_exhaustive()
    }
}

impl Fork {
    /// Turns this process into an RPC server for `function` (the Perl
    /// module's `AnyEvent::Fork::RPC::run`); see [the `rpc` module](mod@crate::rpc).
    ///
    /// `function` is a name registered with [`rpc!`](crate::rpc!), or a
    /// function value: `fn(Req) -> Rep` for the synchronous backend,
    /// `async fn(Req) -> Rep` for the asynchronous one.
    ///
    /// ```
    /// fn double(n: u64) -> u64 {
    ///     n * 2
    /// }
    ///
    /// let rpc = anyfork::Fork::new()?.rpc(double).start()?;
    /// assert_eq!(rpc.call_blocking(21)?, 42);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn rpc<M, F: IntoRpc<M>>(self, function: F) -> RpcBuilder<F::Req, F::Rep, Octets> {
        RpcBuilder {
            fork: self,
            function: function.into_rpc(),
            codec: Codec::Raw,
            init: None,
            done: None,
            buflen_req: DEFAULT_BUFLEN,
            buflen_res: DEFAULT_BUFLEN,
            max_frame: DEFAULT_MAX_FRAME_LEN,
            on_event: None,
            on_error: None,
            on_destroy: None,
            event_stream: false,
            forward_tracing: true,
            die_with_parent: true,
            kill_on_timeout: false,
            _types: PhantomData,
        }
    }
}

impl<Req, Rep, Ev> RpcBuilder<Req, Rep, Ev>
where
    Req: Serialize,
    Rep: DeserializeOwned,
    Ev: DeserializeOwned + 'static,
{
    /// The serialiser for arguments, results and events (default
    /// [`Codec::Raw`]).
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// Sets the request and reply types (for a function named by string).
    pub fn types<Req2, Rep2>(self) -> RpcBuilder<Req2, Rep2, Ev> {
        RpcBuilder {
            fork: self.fork,
            function: self.function,
            codec: self.codec,
            init: self.init,
            done: self.done,
            buflen_req: self.buflen_req,
            buflen_res: self.buflen_res,
            max_frame: self.max_frame,
            on_event: self.on_event,
            on_error: self.on_error,
            on_destroy: self.on_destroy,
            event_stream: self.event_stream,
            forward_tracing: self.forward_tracing,
            die_with_parent: self.die_with_parent,
            kill_on_timeout: self.kill_on_timeout,
            _types: PhantomData,
        }
    }

    /// Calls `handler` for every event the child sends (with
    /// [`rpc::event`](super::event)), decoded as `Ev2`. Without it (and
    /// without [`event_stream`](Self::event_stream)) an event is an error,
    /// as in the Perl module.
    ///
    /// It runs on whichever thread reads the socket (or takes the reply it
    /// waited for), in the order described in [the module
    /// docs](super#in-what-order-the-parent-sees-replies-and-events); it
    /// must not make blocking calls on this handle.
    pub fn on_event<Ev2, F>(self, handler: F) -> RpcBuilder<Req, Rep, Ev2>
    where
        F: FnMut(Ev2) + Send + 'static,
    {
        RpcBuilder {
            fork: self.fork,
            function: self.function,
            codec: self.codec,
            init: self.init,
            done: self.done,
            buflen_req: self.buflen_req,
            buflen_res: self.buflen_res,
            max_frame: self.max_frame,
            on_event: Some(Box::new(handler)),
            on_error: self.on_error,
            on_destroy: self.on_destroy,
            event_stream: self.event_stream,
            forward_tracing: self.forward_tracing,
            die_with_parent: self.die_with_parent,
            kill_on_timeout: self.kill_on_timeout,
            _types: PhantomData,
        }
    }

    /// Delivers events of type `Ev2` to the stream returned by
    /// [`Rpc::events`] instead of a handler.
    pub fn event_stream<Ev2>(self) -> RpcBuilder<Req, Rep, Ev2> {
        RpcBuilder {
            fork: self.fork,
            function: self.function,
            codec: self.codec,
            init: self.init,
            done: self.done,
            buflen_req: self.buflen_req,
            buflen_res: self.buflen_res,
            max_frame: self.max_frame,
            on_event: None,
            on_error: self.on_error,
            on_destroy: self.on_destroy,
            event_stream: true,
            forward_tracing: self.forward_tracing,
            die_with_parent: self.die_with_parent,
            kill_on_timeout: self.kill_on_timeout,
            _types: PhantomData,
        }
    }

    /// Called on fatal errors: the child died with calls outstanding, broke
    /// the protocol, or its server gave up. Without it, an error is passed
    /// to `on_event` as `["error", message]` if events are raw octet
    /// strings and a handler is set (the Perl module's rule), and logged
    /// with `tracing::error!` otherwise.
    pub fn on_error(mut self, handler: impl FnMut(&Error) + Send + 'static) -> Self {
        self.on_error = Some(Box::new(handler));
        self
    }

    /// Called once the handle has been dropped and every call answered (the
    /// child's end closed with nothing outstanding).
    pub fn on_destroy(mut self, handler: impl FnOnce() + Send + 'static) -> Self {
        self.on_destroy = Some(Box::new(handler));
        self
    }

    /// A function the child calls first, with the arguments sent to the
    /// process (`send_arg`, `send_fh`): a name registered with
    /// `rpc!(init ...)` or a function value `fn(Args) -> impl Outcome`. It
    /// cannot send events yet. If it fails, every call fails with
    /// [`Error::Server`].
    pub fn init(mut self, init: impl IntoRpcInit) -> Self {
        self.init = Some(init.into_rpc_init());
        self
    }

    /// For the asynchronous backend: what the child does once the handle is
    /// gone and every call answered; a name registered with `rpc!(done ...)`
    /// or a function value `async fn()`. The default is to exit. Ignored by
    /// the synchronous backend.
    pub fn done(mut self, done: impl IntoRpcDone) -> Self {
        self.done = Some(done.into_rpc_done());
        self
    }

    /// The first size of both read buffers (default 496 bytes, as in the
    /// manual); they grow as frames need.
    pub fn buflen(mut self, bytes: usize) -> Self {
        self.buflen_req = bytes;
        self.buflen_res = bytes;
        self
    }

    /// The first size of the child's read buffer (requests).
    pub fn buflen_req(mut self, bytes: usize) -> Self {
        self.buflen_req = bytes;
        self
    }

    /// The first size of the parent's read buffer (replies, events).
    pub fn buflen_res(mut self, bytes: usize) -> Self {
        self.buflen_res = bytes;
        self
    }

    /// The largest message either side accepts (default 1 GiB).
    pub fn max_frame_len(mut self, bytes: u64) -> Self {
        self.max_frame = bytes;
        self
    }

    /// Whether `tracing` events emitted in the child reach this program's
    /// subscriber (default: yes, at the levels the subscriber enables now).
    pub fn forward_tracing(mut self, forward: bool) -> Self {
        self.forward_tracing = forward;
        self
    }

    /// Whether the child dies when this program does, even by `SIGKILL`,
    /// in the middle of a call (default: yes). Turn it off for a worker
    /// that must finish its work alone; see [`Fork::die_with_parent`].
    pub fn die_with_parent(mut self, die: bool) -> Self {
        self.die_with_parent = die;
        self
    }

    /// What a call that times out ([`Rpc::call_blocking_timeout`],
    /// [`Rpc::call_timeout`]) does to the child: with `true`, the child is
    /// killed (`SIGKILL`) and the handle closed, every other outstanding
    /// call failing with [`Error::Killed`], which says why. The default,
    /// `false`, only cancels the call: an asynchronous child aborts it, but
    /// a synchronous child computes on, and the calls queued behind it wait
    /// for it (and may time out in turn). Choose `true` when a call that
    /// overruns means the child is stuck.
    pub fn kill_on_timeout(mut self, kill: bool) -> Self {
        self.kill_on_timeout = kill;
        self
    }

    fn target(
        &self,
        function: &FunctionRef,
        kind: &'static str,
        lookup: Option<bool>,
    ) -> Result<crate::proto::Target, crate::Error> {
        if let (FunctionRepr::Name(name), Some(true)) = (&function.repr, lookup) {
            let found = match kind {
                "RPC function" => super::registry::lookup_rpc(name).map(|_| ()),
                "RPC init function" => super::registry::lookup_rpc_init(name).map(|_| ()),
                _ => super::registry::lookup_rpc_done(name).map(|_| ()),
            };
            if !matches!(found, Lookup::Found(())) {
                return Err(crate::Error::UnknownFunction {
                    kind,
                    name: name.clone(),
                    macro_name: "rpc",
                });
            }
        }
        function
            .target()
            .ok_or_else(|| crate::Error::NotInExecutable {
                name: function.label().to_owned(),
            })
    }

    /// Starts the server in the process and returns the handle. Nothing is
    /// waited for: calls made at once are queued behind the start and
    /// never lost.
    ///
    /// # Errors
    ///
    /// [`crate::Error::UnknownFunction`] for a name this program has not
    /// registered; otherwise as for [`Fork::run`]. Errors the process
    /// reports later reach the calls and `on_error`.
    pub fn start(self) -> Result<Rpc<Req, Rep, Ev>, crate::Error> {
        let check = Some(self.fork.names_checked());
        let function = self.target(&self.function.function, "RPC function", check)?;
        let init = self
            .init
            .as_ref()
            .map(|f| self.target(f, "RPC init function", check))
            .transpose()?;
        let done = self
            .done
            .as_ref()
            .map(|f| self.target(f, "RPC done function", check))
            .transpose()?;
        let config = Config {
            codec: self.codec,
            backend: self.function.backend,
            function,
            init,
            done,
            buflen_req: u32::try_from(self.buflen_req).unwrap_or(u32::MAX),
            max_frame: self.max_frame,
            log_level: if self.forward_tracing {
                super::trace::current_level_code()
            } else {
                0
            },
        };
        let link = self
            .fork
            .die_with_parent(self.die_with_parent)
            .send_arg(config.encode())
            .run_pipelined(&IntoRun::into_run(super::server::SERVE))?;
        let codec = self.codec;
        let raw_events = TypeId::of::<Ev>() == TypeId::of::<Octets>();
        let on_event = self.on_event.map(|mut typed| -> EventHandler {
            Box::new(move |bytes, fds| match codec.decode::<Ev>(&bytes, fds) {
                Ok(event) => typed(event),
                Err(e) => tracing::error!("anyfork rpc: cannot decode an event: {e}"),
            })
        });
        let events = self.event_stream.then(|| Arc::new(EventQueue::default()));
        let core = Core::new(
            link,
            self.function.label().to_owned(),
            codec,
            self.buflen_res,
            self.max_frame,
            Handlers {
                on_event,
                on_error: self.on_error,
                on_destroy: self.on_destroy,
                events: events.clone(),
                raw_events,
            },
            self.kill_on_timeout,
        )?;
        let core = Arc::new(core);
        core.send_queued();
        // Inside a runtime, read from the start so events flow.
        #[cfg(feature = "tokio")]
        if tokio::runtime::Handle::try_current().is_ok() {
            core.clone().ensure_driver();
        }
        Ok(Rpc {
            core,
            events,
            _types: PhantomData,
        })
    }
}

/// A handle to an RPC server in a child process: call it, blocking or async.
///
/// Dropping it lets the child answer every call already made and then
/// exit; `on_destroy` runs after the last reply.
pub struct Rpc<Req = Octets, Rep = Octets, Ev = Octets> {
    core: Arc<Core>,
    events: Option<Arc<EventQueue>>,
    _types: PhantomData<fn(Req) -> (Rep, Ev)>,
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
    /// The child's pid, once it has said it (`None` before the first reply
    /// when the process came from a template).
    pub fn pid(&self) -> Option<u32> {
        self.core.lock().link.name().pid
    }

    /// A handle to the child process, once its pid is known.
    pub fn process(&self) -> Option<crate::Process> {
        self.core.lock().link.process().cloned()
    }

    fn decode(&self, message: (Vec<u8>, Vec<OwnedFd>)) -> Result<Rep, Error> {
        decode_message(self.core.codec, &self.core.function, message)
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
        let (codec, function) = (self.core.codec, self.core.function.clone());
        async move {
            let reply = submitted?.await?;
            decode_message(codec, &function, reply)
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
    /// is answered, then the child exits as when the handle is dropped; if
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
    /// [`event_stream`](RpcBuilder::event_stream) (once: later calls return
    /// `None`).
    pub fn events(&mut self) -> Option<Events<Ev>> {
        self.events.take().map(|queue| Events {
            core: self.core.clone(),
            queue,
            _types: PhantomData,
        })
    }
}

/// Decodes a reply or an event of the handle for `function`.
fn decode_message<T: DeserializeOwned>(
    codec: Codec,
    function: &str,
    (bytes, fds): (Vec<u8>, Vec<OwnedFd>),
) -> Result<T, Error> {
    codec.decode(&bytes, fds).map_err(|source| Error::Codec {
        function: function.to_owned(),
        source,
    })
}

impl<Req, Rep, Ev> Drop for Rpc<Req, Rep, Ev> {
    fn drop(&mut self) {
        self.core.clone().release();
    }
}

/// Events from the child, in order; see [`RpcBuilder::event_stream`].
pub struct Events<Ev> {
    core: Arc<Core>,
    queue: Arc<EventQueue>,
    _types: PhantomData<fn() -> Ev>,
}

impl<Ev> std::fmt::Debug for Events<Ev> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("function", &self.core.function)
            .finish_non_exhaustive()
    }
}

impl<Ev: DeserializeOwned> Events<Ev> {
    fn decode(&self, message: (Vec<u8>, Vec<OwnedFd>)) -> Result<Ev, Error> {
        decode_message(self.core.codec, &self.core.function, message)
    }

    /// The next event, waiting (blocking) for it; `None` once the child's
    /// end has closed and every event was taken.
    pub fn next_blocking(&mut self) -> Option<Result<Ev, Error>> {
        loop {
            if let Some(event) = self.queue.pop() {
                return Some(self.decode(event));
            }
            if self.queue.is_closed() {
                return None;
            }
            if let Err(e) = self
                .core
                .pump_or_wait(None, &|_| !self.queue.is_empty() || self.queue.is_closed())
            {
                return Some(Err(e));
            }
        }
    }

    /// The next event (async); `None` once the child's end has closed and
    /// every event was taken.
    #[cfg(feature = "tokio")]
    pub async fn next(&mut self) -> Option<Result<Ev, Error>> {
        self.core.clone().ensure_driver();
        let queue = self.queue.clone();
        let event = std::future::poll_fn(move |cx| queue.poll_next(cx)).await?;
        Some(self.decode(event))
    }
}

// ---------------------------------------------------------------------------
// The shared core.

#[derive(Default)]
struct EventQueue {
    inner: Mutex<EventQueueInner>,
}

#[derive(Default)]
struct EventQueueInner {
    events: VecDeque<(Vec<u8>, Vec<OwnedFd>)>,
    closed: bool,
    waker: Option<Waker>,
}

impl EventQueue {
    fn lock(&self) -> MutexGuard<'_, EventQueueInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, event: (Vec<u8>, Vec<OwnedFd>)) {
        let mut inner = self.lock();
        inner.events.push_back(event);
        if let Some(waker) = inner.waker.take() {
            waker.wake();
        }
    }

    fn close(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        if let Some(waker) = inner.waker.take() {
            waker.wake();
        }
    }

    fn pop(&self) -> Option<(Vec<u8>, Vec<OwnedFd>)> {
        self.lock().events.pop_front()
    }

    fn is_empty(&self) -> bool {
        self.lock().events.is_empty()
    }

    fn is_closed(&self) -> bool {
        self.lock().closed
    }

    #[cfg(feature = "tokio")]
    fn poll_next(&self, cx: &mut Context<'_>) -> Poll<Option<(Vec<u8>, Vec<OwnedFd>)>> {
        let mut inner = self.lock();
        if let Some(event) = inner.events.pop_front() {
            return Poll::Ready(Some(event));
        }
        if inner.closed {
            return Poll::Ready(None);
        }
        inner.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

struct Handlers {
    on_event: Option<EventHandler>,
    on_error: Option<ErrorHandler>,
    on_destroy: Option<DestroyHandler>,
    events: Option<Arc<EventQueue>>,
    /// Events are `Octets`, so errors can go to `on_event` as Perl does.
    raw_events: bool,
}

/// A request buffer grown past this by one large request is given back.
const KEEP_SCRATCH: usize = 8 << 20;

/// How far the connection is.
enum Phase {
    /// Waiting for the serve protocol's `S` (pid first).
    Starting,
    Running,
    Closed(Option<Error>),
}

struct State {
    link: Link,
    phase: Phase,
    pending: HashMap<u32, Arc<Slot>>,
    cancelled: HashSet<u32>,
    next_id: u32,
    /// Someone holds the reader role.
    reading: bool,
    /// A driver task holds it for good.
    driver: bool,
    /// Threads asleep on `Core::wake`.
    waiters: usize,
    handle_dropped: bool,
    write_shut: bool,
}

struct Core {
    state: Mutex<State>,
    /// Wakes blocking waiters: a reply arrived, or the reader role is free.
    wake: Condvar,
    /// The connection (a duplicate of the link's: reading needs no state
    /// lock).
    connection: Transport,
    decoder: Mutex<Decoder>,
    /// Where requests are encoded.
    scratch: Mutex<Vec<u8>>,
    handlers: Mutex<Handlers>,
    /// What the parent's code is to see, in the child's order.
    delivery: Delivery,
    /// Whether anything waits for what the child sends after the handle is
    /// dropped (fixed at start, so `release` needs no handler lock).
    listening: bool,
    codec: Codec,
    function: String,
    /// Kill the child when a call times out.
    kill_on_timeout: bool,
    #[cfg(feature = "tokio")]
    driver_wake: tokio::sync::Notify,
}

/// What one read from the socket brought.
enum ReadResult {
    Data,
    End,
    Nothing,
}

/// What a frame read from the socket calls for (decided under the state
/// lock, done without it).
enum Action {
    Fulfil(Arc<Slot>, Outcome),
    Event(Vec<u8>, Vec<OwnedFd>),
    Log(Vec<u8>),
    Nothing,
}

impl Core {
    fn new(
        link: Link,
        function: String,
        codec: Codec,
        buflen: usize,
        max_frame: u64,
        handlers: Handlers,
        kill_on_timeout: bool,
    ) -> Result<Core, crate::Error> {
        let transport = link.transport().ok_or_else(|| crate::Error::Broken {
            process: link.name().clone(),
            cause: "no connection".into(),
        })?;
        let io = |source: io::Error| crate::Error::Io {
            process: link.name().clone(),
            doing: "preparing the RPC connection".into(),
            source,
        };
        // A socket blocks: every read or write that must not wait says so
        // itself (`MSG_DONTWAIT`), and a blocking reader can sleep in its
        // read. (A pair of streams waits in `poll` instead.)
        transport.set_blocking().map_err(io)?;
        let connection = transport.try_clone().map_err(io)?;
        let mut decoder = Decoder::new(frame::TO_PARENT, max_frame, buflen).after_serve_replies();
        if link.verifies_pids() {
            decoder = decoder.tracking_senders();
        }
        let listening = handlers.on_destroy.is_some()
            || handlers.on_event.is_some()
            || handlers.events.is_some();
        let ordered = handlers.on_destroy.is_some()
            || handlers.on_event.is_some()
            || handlers.on_error.is_some();
        Ok(Core {
            state: Mutex::new(State {
                link,
                phase: Phase::Starting,
                pending: HashMap::new(),
                cancelled: HashSet::new(),
                next_id: 1,
                reading: false,
                driver: false,
                waiters: 0,
                handle_dropped: false,
                write_shut: false,
            }),
            wake: Condvar::new(),
            connection,
            decoder: Mutex::new(decoder),
            scratch: Mutex::new(Vec::new()),
            handlers: Mutex::new(handlers),
            delivery: Delivery::new(ordered),
            listening,
            codec,
            function,
            kill_on_timeout,
            #[cfg(feature = "tokio")]
            driver_wake: tokio::sync::Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn process_name(&self) -> ProcessName {
        self.lock().link.name().clone()
    }

    fn closed_error(&self, state: &State) -> Option<Error> {
        match &state.phase {
            Phase::Closed(Some(error)) => Some(error.clone()),
            Phase::Closed(None) => Some(Error::Ended {
                function: self.function.clone(),
                process: state.link.name().clone(),
                ending: Ending(
                    state
                        .link
                        .process()
                        .and_then(|p| p.try_wait().ok().flatten()),
                ),
                outstanding: 0,
            }),
            _ => None,
        }
    }

    /// Queues a request and returns its pending call.
    fn submit<Req: Serialize>(self: &Arc<Self>, request: &Req) -> Result<PendingCall, Error> {
        // Encoded outside the state lock, into a buffer kept from call to
        // call (a concurrent caller finds it taken and uses a new one).
        let mut encoded = std::mem::take(&mut *self.scratch());
        encoded.clear();
        let fds = self
            .codec
            .encode_appending(request, &mut encoded)
            .map_err(|source| Error::Codec {
                function: self.function.clone(),
                source,
            })?;
        let result = self.submit_encoded(&encoded, fds);
        if encoded.capacity() <= KEEP_SCRATCH {
            *self.scratch() = encoded;
        }
        result
    }

    fn scratch(&self) -> MutexGuard<'_, Vec<u8>> {
        self.scratch.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn submit_encoded(
        self: &Arc<Self>,
        encoded: &[u8],
        fds: Vec<OwnedFd>,
    ) -> Result<PendingCall, Error> {
        let mut state = self.lock();
        if let Some(error) = self.closed_error(&state) {
            return Err(error);
        }
        // After four billion calls ids come round again: skip those still
        // in use (it rarely loops, as in the Perl module).
        let mut id = state.next_id;
        while state.pending.contains_key(&id) || state.cancelled.contains(&id) {
            id = id.wrapping_add(1).max(1);
        }
        state.next_id = id.wrapping_add(1).max(1);
        let process = state.link.name().clone();
        if !fds.is_empty() && !self.connection.carries_fds() {
            return Err(Error::Io {
                process,
                doing: "sending a request",
                source: Arc::new(io::Error::new(
                    io::ErrorKind::Unsupported,
                    crate::transport::NO_FDS,
                )),
            });
        }
        frame::encode(state.link.outbox(), id, kind::REQUEST, encoded, fds)
            .map_err(|source| Error::Protocol { process, source })?;
        let slot = Arc::new(Slot::default());
        state.pending.insert(id, slot.clone());
        let driver = state.driver;
        drop(state);
        if driver {
            #[cfg(feature = "tokio")]
            self.driver_wake.notify_one();
        } else {
            self.send_queued();
        }
        Ok(PendingCall {
            core: self.clone(),
            id,
            slot,
        })
    }

    /// Sends what is queued, without waiting; shuts the socket for writing
    /// once everything is out after the handle was dropped.
    fn send_queued(&self) {
        let mut state = self.lock();
        // `connection` is the link's: writing through it needs no borrow
        // of the link.
        loop {
            match state.link.outbox().send_some(&self.connection, true) {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The reader finishes when the socket can take more; a
                // broken socket shows up there as end-of-file.
                Err(_) => return,
            }
        }
        if state.handle_dropped && !state.write_shut {
            state.write_shut = true;
            // Every copy of a pair of streams must end for the child to see
            // the end.
            let _ = self.connection.shutdown_write();
            if let Some(transport) = state.link.transport() {
                let _ = transport.shutdown_write();
            }
        }
    }

    fn wants_write(&self) -> bool {
        let mut state = self.lock();
        state.link.outbox().unsent() > 0 || (state.handle_dropped && !state.write_shut)
    }

    /// Marks a call as given up: its reply will be ignored, and the child
    /// is told.
    fn cancel(&self, id: u32) {
        let mut state = self.lock();
        if state.pending.remove(&id).is_none() || matches!(state.phase, Phase::Closed(_)) {
            return;
        }
        state.cancelled.insert(id);
        let _ = frame::encode(state.link.outbox(), id, kind::CANCEL, &[], Vec::new());
        let driver = state.driver;
        drop(state);
        if driver {
            #[cfg(feature = "tokio")]
            self.driver_wake.notify_one();
        } else {
            self.send_queued();
        }
    }

    /// A call gave up after `timeout`: the error for it, after killing the
    /// child if the handle was built to (waiting for its pid only where
    /// blocking is allowed).
    fn timed_out(&self, timeout: Duration, may_block: bool) -> Error {
        if self.kill_on_timeout {
            let why = format!("`{}` did not answer within {timeout:?}", self.function);
            if may_block {
                let _ = self.await_pid(Instant::now() + Duration::from_secs(5));
            }
            if let Err(e) = self.kill_child(why) {
                tracing::error!("anyfork rpc: cannot kill the child after a timeout: {e}");
            }
        }
        Error::Timeout {
            function: self.function.clone(),
            timeout,
        }
    }

    fn no_pid_error(&self) -> Error {
        Error::Io {
            process: self.process_name(),
            doing: "finding the child",
            source: Arc::new(io::Error::other("the child has not said its pid")),
        }
    }

    /// Blocking: reads (or waits for the reader) until the child's pid is
    /// known, at most until `deadline`.
    fn await_pid(&self, deadline: Instant) -> Result<(), Error> {
        let known = |state: &State| state.link.process().is_some();
        match self.pump_or_wait(Some(deadline), &known) {
            Ok(()) if known(&self.lock()) => Ok(()),
            Ok(()) => Err(self.no_pid_error()),
            // Closed: the pid may have come with the last frames.
            Err(e) => {
                if known(&self.lock()) {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Kills the child (if its pid is known; otherwise the socket is shut,
    /// which ends a child that reads) and closes the handle: outstanding
    /// calls fail with [`Error::Killed`] saying `why`.
    fn kill_child(&self, why: String) -> Result<(), Error> {
        let process = self.lock().link.process().cloned();
        let error = Error::Killed {
            function: self.function.clone(),
            process: self.process_name(),
            why,
        };
        if let Some(process) = &process {
            process.kill(crate::Signal::KILL).map_err(|e| Error::Io {
                process: self.process_name(),
                doing: "killing the child",
                source: Arc::new(io::Error::other(e)),
            })?;
        }
        self.close(Some(error));
        Ok(())
    }

    /// The handle was dropped.
    fn release(self: Arc<Self>) {
        let (driver, needs_reader) = {
            let mut state = self.lock();
            state.handle_dropped = true;
            let needs = !matches!(state.phase, Phase::Closed(_))
                && (self.listening
                    || !state.pending.is_empty()
                    || state.link.outbox().unsent() > 0);
            (state.driver, needs)
        };
        // Written and shut here, not left to a driver task: on a runtime
        // that is not driven again (a current-thread runtime after
        // `block_on`), the child would never see the end.
        self.send_queued();
        if let Some(process) = self.lock().link.process().cloned() {
            // And reaped when it exits, even if a parked task keeps this
            // state (and so the process handle) forever.
            crate::reaper::watch(process);
        }
        if driver {
            #[cfg(feature = "tokio")]
            self.driver_wake.notify_one();
            return;
        }
        if needs_reader {
            // Nobody else will read what is still to come.
            let core = self.clone();
            let spawned = std::thread::Builder::new()
                .name("anyfork-rpc-drain".into())
                .spawn(move || while core.pump_or_wait(None, &|_| false).is_ok() {});
            if let Err(e) = spawned {
                tracing::error!(
                    "anyfork rpc: cannot start a thread to finish after the handle was dropped: {e}"
                );
            }
        }
    }

    /// Blocking: reads if nobody else does, else waits, until `done()` or
    /// the connection closes or `deadline` passes. Returns an error once the
    /// connection is closed.
    fn pump_or_wait(
        &self,
        deadline: Option<Instant>,
        done: &dyn Fn(&State) -> bool,
    ) -> Result<(), Error> {
        loop {
            let mut state = self.lock();
            if done(&state) {
                return Ok(());
            }
            if let Phase::Closed(_) = state.phase {
                return Err(self.closed_error(&state).unwrap_or(Error::NoRuntime));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(());
            }
            if state.reading && !state.driver && state.link.outbox().unsent() > 0 {
                // Another thread reads, perhaps asleep in a read that
                // nothing ends until what is queued is out (a request
                // larger than the socket holds): write it from here.
                drop(state);
                self.wait_writable(deadline);
                self.send_queued();
                continue;
            }
            if state.reading || state.driver || self.delivery.is_blocked() {
                // Someone else reads; or a handler waits for a reply to be
                // taken, and reading more would only queue up behind it.
                state.waiters += 1;
                state = match deadline {
                    Some(d) => {
                        self.wake
                            .wait_timeout(state, d.saturating_duration_since(Instant::now()))
                            .unwrap_or_else(PoisonError::into_inner)
                            .0
                    }
                    None => self
                        .wake
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner),
                };
                state.waiters -= 1;
                drop(state);
                continue;
            }
            state.reading = true;
            drop(state);
            let result = self.read_blocking(deadline);
            {
                let mut state = self.lock();
                state.reading = false;
                if state.waiters > 0 {
                    self.wake.notify_all();
                }
            }
            #[cfg(feature = "tokio")]
            self.driver_wake.notify_one();
            if let Err(error) = result {
                self.close(Some(error));
            }
        }
    }

    /// Waits until the socket can take more, or `deadline` passes, or the
    /// connection fails (the reader reports that), or 10 ms pass, so that
    /// a caller whose own reply came meanwhile does not wait on for
    /// someone else's request.
    fn wait_writable(&self, deadline: Option<Instant>) {
        const RECHECK: Duration = Duration::from_millis(10);
        let recheck = Instant::now() + RECHECK;
        let until = deadline.map_or(recheck, |d| d.min(recheck));
        let _ = self.connection.wait_writable_until(Some(until));
    }

    /// One round of reading (and writing) for a blocking reader.
    fn read_blocking(&self, deadline: Option<Instant>) -> Result<(), Error> {
        let want_write = self.wants_write();
        if !want_write && deadline.is_none() {
            // Nothing to send and no time limit: sleep in the read itself,
            // one system call instead of a poll and a read. Whatever is
            // queued later by another thread waits at most for the reply
            // to a request sent in full, which comes.
            return self.read_and_dispatch(true);
        }
        let ready = self
            .connection
            .wait_ready(want_write, deadline)
            .map_err(|e| self.io_error("waiting for the connection", e))?;
        if ready.writable {
            self.send_queued();
        }
        if ready.readable {
            self.read_and_dispatch(false)?;
        }
        Ok(())
    }

    fn io_error(&self, doing: &'static str, source: io::Error) -> Error {
        Error::Io {
            process: self.process_name(),
            doing,
            source: Arc::new(source),
        }
    }

    /// Reads once: what is there, or with `wait` until something arrives.
    fn read_once(&self, wait: bool) -> Result<ReadResult, Error> {
        let read = {
            let mut decoder = self.decoder.lock().unwrap_or_else(PoisonError::into_inner);
            decoder.read_from(&self.connection, !wait)
        };
        match read {
            Ok(0) => Ok(ReadResult::End),
            Ok(_) => Ok(ReadResult::Data),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(ReadResult::Nothing)
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(ReadResult::End),
            Err(e) => Err(self.io_error("reading replies", e)),
        }
    }

    /// After the last frame: a frame cut short is a protocol error;
    /// otherwise the connection ends.
    fn finish_end(&self) -> Result<(), Error> {
        let cut = self
            .decoder
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .at_end();
        if let Err(source) = cut {
            return Err(Error::Protocol {
                process: self.process_name(),
                source,
            });
        }
        self.end_of_stream();
        Ok(())
    }

    /// Reads once and hands every complete frame on (blocking readers).
    fn read_and_dispatch(&self, wait: bool) -> Result<(), Error> {
        let read = self.read_once(wait)?;
        self.dispatch()?;
        if let ReadResult::End = read {
            self.finish_end()?;
        }
        Ok(())
    }

    /// Wakes the blocking waiters, if there are any (a notify is a system
    /// call even when nobody waits). Through the state lock, so that a
    /// waiter that looked before the change is asleep by now and hears
    /// this.
    fn wake_waiters(&self) {
        if self.lock().waiters > 0 {
            self.wake.notify_all();
        }
    }

    fn emit_log(&self, payload: &[u8]) {
        let pid = self.lock().link.name().pid;
        super::trace::emit(pid, payload);
    }

    /// Takes every complete buffered frame and hands it over, in order
    /// (see [`super::delivery`]).
    fn dispatch(&self) -> Result<(), Error> {
        let mut items = Vec::new();
        let result = loop {
            match self.next_action() {
                Ok(Some(Action::Fulfil(slot, outcome))) => items.push(Item::Fulfil(slot, outcome)),
                Ok(Some(Action::Event(bytes, fds))) => items.push(self.event_item(bytes, fds)),
                Ok(Some(Action::Log(payload))) => self.emit_log(&payload),
                Ok(Some(Action::Nothing)) => {}
                Ok(None) => break Ok(()),
                Err(error) => break Err(error),
            }
        };
        self.delivery.push(items);
        self.deliver_now();
        result
    }

    /// The event stream, if the handle has one.
    fn event_queue(&self) -> Option<Arc<EventQueue>> {
        self.handlers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .events
            .clone()
    }

    /// An event goes to the stream, or to its handler.
    fn event_item(&self, bytes: Vec<u8>, fds: Vec<OwnedFd>) -> Item {
        if self.event_queue().is_some() {
            Item::Stream(bytes, fds)
        } else {
            Item::Handler(Handler::Event(bytes, fds))
        }
    }

    /// Hands over what may go now; wakes blocking waiters if anything went.
    fn deliver_now(&self) {
        if self.delivery.deliver(&mut |item| self.apply(item)) {
            self.wake_waiters();
        }
    }

    /// Runs a handler, or feeds the event stream.
    fn apply(&self, item: Item) {
        match item {
            Item::Fulfil(slot, outcome) => {
                // Done by the delivery itself; kept whole for safety.
                drop((slot, outcome));
            }
            Item::Stream(bytes, fds) => {
                if let Some(queue) = self.event_queue() {
                    queue.push((bytes, fds));
                }
                self.wake_waiters();
            }
            Item::CloseStream => {
                if let Some(queue) = self.event_queue() {
                    queue.close();
                }
                self.wake_waiters();
            }
            Item::Handler(Handler::Event(bytes, fds)) => self.deliver_event(bytes, fds),
            Item::Handler(Handler::Report(error)) => self.report(&error),
            Item::Handler(Handler::Destroy) => {
                let destroy = self
                    .handlers
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .on_destroy
                    .take();
                if let Some(destroy) = destroy {
                    destroy();
                }
            }
        }
    }

    /// A call took its reply (or was given up): handlers waiting for it may
    /// go ahead. A blocking caller delivers them itself; a future leaves
    /// that to the driver task, so that the task that took the reply runs
    /// on first (on a current-thread runtime) before the handlers do.
    fn released(&self, generation: Option<u64>, inline: bool) {
        if !self.delivery.release(generation) {
            return;
        }
        #[cfg(feature = "tokio")]
        if !inline && self.lock().driver {
            self.driver_wake.notify_one();
            return;
        }
        let _ = inline;
        self.deliver_now();
    }

    /// Takes the next buffered frame and decides what it calls for.
    fn next_action(&self) -> Result<Option<Action>, Error> {
        let mut state = self.lock();
        let mut decoder = self.decoder.lock().unwrap_or_else(PoisonError::into_inner);
        if let Phase::Starting = state.phase {
            let reply = decoder
                .next_serve_reply()
                .map_err(|e| Error::Start(Arc::new(state.link.protocol(e))))?;
            return match reply {
                None => Ok(None),
                Some((reply, sender)) => match state.link.take_reply(reply, sender) {
                    Ok(Reply::Started(_)) => {
                        state.phase = Phase::Running;
                        Ok(Some(Action::Nothing))
                    }
                    Ok(_) => Ok(Some(Action::Nothing)),
                    Err(e) => Err(Error::Start(Arc::new(e))),
                },
            };
        }
        let frame = match decoder.next() {
            Ok(Some(frame)) => frame,
            Ok(None) => return Ok(None),
            Err(source) => {
                return Err(Error::Protocol {
                    process: state.link.name().clone(),
                    source,
                });
            }
        };
        drop(decoder);
        let process = state.link.name().clone();
        match frame.kind {
            kind::REPLY | kind::FAILED if frame.id == 0 => {
                let message = String::from_utf8_lossy(&frame.payload).into_owned();
                Err(Error::Server {
                    function: self.function.clone(),
                    process,
                    message,
                })
            }
            kind::REPLY | kind::FAILED => {
                let Some(slot) = state.pending.remove(&frame.id) else {
                    if state.cancelled.remove(&frame.id) {
                        return Ok(Some(Action::Nothing));
                    }
                    return Err(Error::Protocol {
                        process,
                        source: ProtocolError::Malformed {
                            tag: crate::proto::Tag(frame.kind),
                            what: "a reply to a call that was never made",
                        },
                    });
                };
                let outcome = if frame.kind == kind::REPLY {
                    Ok((frame.payload, frame.fds))
                } else {
                    Err(Error::Failed {
                        function: self.function.clone(),
                        process,
                        message: String::from_utf8_lossy(&frame.payload).into_owned(),
                    })
                };
                Ok(Some(Action::Fulfil(slot, outcome)))
            }
            kind::EVENT => Ok(Some(Action::Event(frame.payload, frame.fds))),
            kind::LOG => Ok(Some(Action::Log(frame.payload))),
            _ => Ok(Some(Action::Nothing)),
        }
    }

    fn deliver_event(&self, bytes: Vec<u8>, fds: Vec<OwnedFd>) {
        let mut handlers = self.handlers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(handler) = handlers.on_event.as_mut() {
            handler(bytes, fds);
        } else {
            drop(handlers);
            self.report(&Error::Server {
                function: self.function.clone(),
                process: self.process_name(),
                message: "event received, but no on_event handler".into(),
            });
        }
    }

    /// `on_error`, or its defaults.
    fn report(&self, error: &Error) {
        let mut handlers = self.handlers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(handler) = handlers.on_error.as_mut() {
            handler(error);
        } else if let (true, Some(handler)) = (handlers.raw_events, handlers.on_event.as_mut()) {
            // The Perl module's rule: errors go to on_event as
            // ("error", message) when there is no on_error.
            if let Ok(encoded) = Codec::Raw.encode(&("error", error.to_string())) {
                handler(encoded.bytes, encoded.fds);
            }
        } else {
            tracing::error!("anyfork rpc: uncaught error: {error}");
        }
    }

    /// The child's end closed.
    fn end_of_stream(&self) {
        let (outstanding, starting) = {
            let state = self.lock();
            (state.pending.len(), matches!(state.phase, Phase::Starting))
        };
        if starting {
            let error = {
                let mut state = self.lock();
                Error::Start(Arc::new(
                    state.link.ended_before_start("starting the RPC server"),
                ))
            };
            self.close(Some(error));
        } else if outstanding > 0 {
            let error = {
                let state = self.lock();
                Error::Ended {
                    function: self.function.clone(),
                    process: state.link.name().clone(),
                    ending: Ending(
                        state
                            .link
                            .process()
                            .and_then(|p| p.wait_timeout(Duration::from_secs(2))),
                    ),
                    outstanding,
                }
            };
            self.close(Some(error));
        } else {
            self.close(None);
        }
    }

    /// Closes the connection: fails every outstanding call with `error`
    /// (and reports it), or, on a clean end, runs `on_destroy`; in order,
    /// after what came before (see [`super::delivery`]).
    fn close(&self, error: Option<Error>) {
        let pending = {
            let mut state = self.lock();
            if let Phase::Closed(_) = state.phase {
                return;
            }
            state.phase = Phase::Closed(error.clone());
            if let Some(transport) = state.link.transport() {
                transport.shutdown_both();
            }
            self.connection.shutdown_both();
            std::mem::take(&mut state.pending)
        };
        let failure = error.clone().unwrap_or_else(|| Error::Ended {
            function: self.function.clone(),
            process: self.process_name(),
            ending: Ending(None),
            outstanding: 0,
        });
        let mut items: Vec<Item> = pending
            .into_values()
            .map(|slot| Item::Fulfil(slot, Err(failure.clone())))
            .collect();
        items.push(Item::Handler(match error {
            Some(error) => Handler::Report(error),
            None => Handler::Destroy,
        }));
        items.push(Item::CloseStream);
        self.delivery.push(items);
        self.deliver_now();
        self.wake_waiters();
        #[cfg(feature = "tokio")]
        self.driver_wake.notify_one();
    }

    /// Starts the driver task if none runs (needs a tokio runtime).
    #[cfg(feature = "tokio")]
    fn ensure_driver(self: Arc<Self>) {
        {
            let mut state = self.lock();
            if state.driver || matches!(state.phase, Phase::Closed(_)) {
                return;
            }
            state.driver = true;
        }
        tokio::spawn(self.drive());
    }

    /// The driver: owns the socket for good, reading and writing, and
    /// hands over what it read (see [`super::delivery`]) until everything
    /// is handed over, also after the connection closed.
    #[cfg(feature = "tokio")]
    async fn drive(self: Arc<Self>) {
        self.clone().drive_until_done().await;
        // Whoever takes a reply from now on delivers what waits for it.
        self.lock().driver = false;
        self.deliver_now();
    }

    #[cfg(feature = "tokio")]
    async fn drive_until_done(self: Arc<Self>) {
        // Wait for a blocking reader to finish its round.
        loop {
            let notified = self.driver_wake.notified();
            {
                let mut state = self.lock();
                if !state.reading {
                    state.reading = true;
                    break;
                }
            }
            notified.await;
        }
        self.wake_waiters();
        let fd = match crate::transport::AsyncReadiness::new(&self.connection) {
            Ok(fd) => fd,
            Err(e) => return self.close(Some(self.io_error("watching the connection", e))),
        };
        loop {
            let wake = self.driver_wake.notified();
            self.deliver_now();
            let closed = matches!(self.lock().phase, Phase::Closed(_));
            if closed && self.delivery.is_idle() {
                return;
            }
            if !closed {
                self.send_queued();
            }
            let want_write = !closed && self.wants_write();
            // While a handler waits for replies to be taken, reading more
            // would only queue it up behind: wait for the takes instead.
            let want_read = !closed && !self.delivery.is_blocked();
            let stalled = self.delivery.blocked_since();
            let stall = async move {
                match stalled {
                    Some(since) => tokio::time::sleep_until((since + STALL).into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                ready = fd.readable(), if want_read => match ready {
                    Ok(mut ready) => {
                        // Readiness is edge-triggered: it is cleared only
                        // when a read found nothing, never after a read
                        // that may have left data behind.
                        let read = match self.read_once(false) {
                            Ok(ReadResult::Nothing) => {
                                ready.clear_ready();
                                continue;
                            }
                            Ok(read) => read,
                            Err(error) => {
                                self.close(Some(error));
                                continue;
                            }
                        };
                        drop(ready);
                        let result = match self.dispatch() {
                            Ok(()) if matches!(read, ReadResult::End) => self.finish_end(),
                            other => other,
                        };
                        if let Err(error) = result {
                            self.close(Some(error));
                        }
                    }
                    Err(e) => self.close(Some(self.io_error("waiting for the socket", e))),
                },
                ready = fd.writable(), if want_write => {
                    if let Ok(mut ready) = ready {
                        ready.clear_ready();
                    }
                }
                () = wake => {}
                () = stall => self.delivery.force(),
            }
        }
    }
}

/// A call waiting for its reply; dropping it cancels the call.
struct PendingCall {
    core: Arc<Core>,
    id: u32,
    slot: Arc<Slot>,
}

impl PendingCall {
    /// Takes the result if it is there, releasing what waited for the take.
    fn take(&self) -> Option<Outcome> {
        let (outcome, generation) = self.slot.take()?;
        self.core.released(generation, true);
        Some(outcome)
    }

    fn wait_blocking(&self, deadline: Option<Instant>, timeout: Duration) -> Outcome {
        self.slot.wait_blocking();
        loop {
            if let Some(outcome) = self.take() {
                return outcome;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                self.core.cancel(self.id);
                return Err(self.core.timed_out(timeout, true));
            }
            let slot = self.slot.clone();
            if let Err(error) = self.core.pump_or_wait(deadline, &move |_| slot.is_done()) {
                return self.take().unwrap_or(Err(error));
            }
        }
    }
}

impl Future for PendingCall {
    type Output = Outcome;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        match self.slot.poll_take(cx) {
            Poll::Ready((outcome, generation)) => {
                self.core.released(generation, false);
                Poll::Ready(outcome)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for PendingCall {
    fn drop(&mut self) {
        if !self.slot.is_done() {
            self.core.cancel(self.id);
        }
        // A reply that came but was not taken holds nothing back.
        let generation = self.slot.abandon();
        self.core.released(generation, false);
    }
}
