//! [`RpcBuilder`]: choosing the function, codec, handlers and buffers,
//! and starting the server in the process.

use std::any::TypeId;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::core::{Core, Handlers, Limits, Rules};
use super::event_queue::EventQueue;
use super::handle::{Rpc, Shared};
use super::{DEFAULT_BUFLEN, DestroyHandler, ErrorHandler, EventHandler, NoticeHandler};
use crate::fork::Fork;
use crate::proto::DEFAULT_MAX_FRAME_LEN;
use crate::registry::{FunctionRef, FunctionRepr, IntoRun, Lookup};
use crate::rpc::codec::Codec;
use crate::rpc::config::Config;
use crate::rpc::error::Error;
use crate::rpc::function::{IntoRpc, IntoRpcDone, IntoRpcInit, Octets, RpcFunction};

/// Prepares an RPC handle: made by [`Fork::rpc`].
///
/// `Req`, `Rep` and `Ev` are the request, reply and event types: inferred
/// from a function value, [`Octets`] for a name until [`types`](Self::types)
/// says otherwise, and set for events by [`on_event`](Self::on_event).
#[must_use = "an RpcBuilder does nothing until start()"]
pub struct RpcBuilder<Req = Octets, Rep = Octets, Ev = Octets> {
    settings: Settings,
    /// The one setting whose type follows the builder's: a change of types
    /// rebuilds the builder around the same `settings`.
    on_event: Option<Box<dyn FnMut(Ev) + Send>>,
    _types: PhantomData<fn(Req) -> Rep>,
}

/// Everything an [`RpcBuilder`] was told that does not depend on its types.
struct Settings {
    fork: Fork,
    function: RpcFunction,
    /// `None`: the default for the function's messages.
    codec: Option<Codec>,
    init: Option<FunctionRef>,
    done: Option<FunctionRef>,
    buflen_req: usize,
    buflen_res: usize,
    max_frame: u64,
    shared_memory: u64,
    on_error: Option<ErrorHandler>,
    on_destroy: Option<DestroyHandler>,
    on_notice: Option<NoticeHandler>,
    event_stream: bool,
    forward_tracing: bool,
    die_with_parent: bool,
    kill_on_timeout: bool,
}

impl<Req, Rep, Ev> RpcBuilder<Req, Rep, Ev> {
    /// The codec [`start`](Self::start) will use.
    fn chosen_codec(&self) -> Codec {
        self.settings
            .codec
            .unwrap_or(if self.settings.function.typed {
                Codec::TYPED_DEFAULT
            } else {
                Codec::Raw
            })
    }
}

impl<Req, Rep, Ev> std::fmt::Debug for RpcBuilder<Req, Rep, Ev> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcBuilder")
            .field("function", &self.settings.function.label())
            .field("codec", &self.chosen_codec())
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
        self.rpc_of(function.into_rpc())
    }

    /// [`rpc`](Fork::rpc) for a function already turned into its parts
    /// (the pool starts every worker with one).
    pub(crate) fn rpc_of<Req, Rep>(self, function: RpcFunction) -> RpcBuilder<Req, Rep, Octets> {
        RpcBuilder {
            settings: Settings {
                fork: self,
                function,
                codec: None,
                init: None,
                done: None,
                buflen_req: DEFAULT_BUFLEN,
                buflen_res: DEFAULT_BUFLEN,
                max_frame: DEFAULT_MAX_FRAME_LEN,
                shared_memory: crate::rpc::shared_memory::DEFAULT_REGION,
                on_error: None,
                on_destroy: None,
                on_notice: None,
                event_stream: false,
                forward_tracing: true,
                die_with_parent: true,
                kill_on_timeout: false,
            },
            on_event: None,
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
    /// The serialiser for arguments, results and events. By default
    /// [`Codec::TYPED_DEFAULT`] (CBOR: any serde value) for a function
    /// value or after [`types`](Self::types), and [`Codec::Raw`] (the Perl
    /// module's list of octet strings) for a function named by string
    /// with [`Octets`] messages.
    pub fn codec(mut self, codec: Codec) -> Self {
        self.settings.codec = Some(codec);
        self
    }

    /// Sets the request and reply types (for a function named by string);
    /// the default codec becomes [`Codec::TYPED_DEFAULT`].
    pub fn types<Req2, Rep2>(self) -> RpcBuilder<Req2, Rep2, Ev> {
        let function = RpcFunction {
            typed: true,
            ..self.settings.function
        };
        RpcBuilder {
            settings: Settings {
                function,
                ..self.settings
            },
            on_event: self.on_event,
            _types: PhantomData,
        }
    }

    /// Calls `handler` for every event the child sends (with
    /// [`rpc::event`](crate::rpc::event)), decoded as `Ev2`. Without it (and
    /// without [`event_stream`](Self::event_stream)) an event is an error,
    /// as in the Perl module.
    ///
    /// It runs on whichever thread reads the socket (or takes the reply it
    /// waited for), in the order described in [the module
    /// docs](mod@crate::rpc#in-what-order-the-parent-sees-replies-and-events); it
    /// must not make blocking calls on this handle.
    pub fn on_event<Ev2, F>(self, handler: F) -> RpcBuilder<Req, Rep, Ev2>
    where
        F: FnMut(Ev2) + Send + 'static,
    {
        RpcBuilder {
            settings: self.settings,
            on_event: Some(Box::new(handler)),
            _types: PhantomData,
        }
    }

    /// Delivers events of type `Ev2` to the stream returned by
    /// [`Rpc::events`] instead of a handler.
    pub fn event_stream<Ev2>(self) -> RpcBuilder<Req, Rep, Ev2> {
        RpcBuilder {
            settings: Settings {
                event_stream: true,
                ..self.settings
            },
            on_event: None,
            _types: PhantomData,
        }
    }

    /// Called on fatal errors: the child died with calls outstanding, broke
    /// the protocol, or its server gave up. Without it, an error is passed
    /// to `on_event` as `["error", message]` if events are raw octet
    /// strings and a handler is set (the Perl module's rule), and logged
    /// with `tracing::error!` otherwise.
    pub fn on_error(mut self, handler: impl FnMut(&Error) + Send + 'static) -> Self {
        self.settings.on_error = Some(Box::new(handler));
        self
    }

    /// Called once the handle has been dropped and every call answered (the
    /// child's end closed with nothing outstanding).
    pub fn on_destroy(mut self, handler: impl FnOnce() + Send + 'static) -> Self {
        self.settings.on_destroy = Some(Box::new(handler));
        self
    }

    /// A function the child calls first, with the arguments sent to the
    /// process (`send_arg`, `send_fh`): a name registered with
    /// `rpc!(init ...)` or a function value `fn(Args) -> impl Outcome`. It
    /// cannot send events yet. If it fails, every call fails with
    /// [`Error::Server`].
    pub fn init(mut self, init: impl IntoRpcInit) -> Self {
        self.settings.init = Some(init.into_rpc_init());
        self
    }

    /// For the asynchronous backend: what the child does once the handle is
    /// gone and every call answered; a name registered with `rpc!(done ...)`
    /// or a function value `async fn()`. The default is to exit. Ignored by
    /// the synchronous backend.
    pub fn done(mut self, done: impl IntoRpcDone) -> Self {
        self.settings.done = Some(done.into_rpc_done());
        self
    }

    /// The first size of both read buffers (default 496 bytes, as in the
    /// manual); they grow as frames need.
    pub fn buflen(mut self, bytes: usize) -> Self {
        self.settings.buflen_req = bytes;
        self.settings.buflen_res = bytes;
        self
    }

    /// The first size of the child's read buffer (requests).
    pub fn buflen_req(mut self, bytes: usize) -> Self {
        self.settings.buflen_req = bytes;
        self
    }

    /// The first size of the parent's read buffer (replies, events).
    pub fn buflen_res(mut self, bytes: usize) -> Self {
        self.settings.buflen_res = bytes;
        self
    }

    /// The largest message either side accepts (default 1 GiB).
    pub fn max_frame_len(mut self, bytes: u64) -> Self {
        self.settings.max_frame = bytes;
        self
    }

    /// How much shared memory each side may use for large messages in
    /// flight (default [`DEFAULT_REGION`](crate::rpc::shared_memory::DEFAULT_REGION),
    /// 64 MiB; 0 turns it off).
    ///
    /// A message longer than [`SPILL_AT`](crate::rpc::shared_memory::SPILL_AT)
    /// is written by its encoder straight into a region both processes map
    /// and the socket carries only where it is: one copy and one wake-up
    /// instead of the socket's two copies and a wake-up per buffer full.
    /// The region is made when the first such message is sent, its pages
    /// when first written; they are reused from call to call and returned
    /// when the handle is dropped. Messages that do not fit in what is free
    /// go through the socket. Processes on another machine, or on a pair of
    /// streams, always use the socket.
    ///
    /// ```
    /// use anyfork::{Fork, rpc::RpcBuilder};
    /// fn echo(bytes: serde_bytes::ByteBuf) -> serde_bytes::ByteBuf {
    ///     bytes
    /// }
    /// # anyfork::early();
    /// let rpc = Fork::new()?
    ///     .rpc(echo)
    ///     .shared_memory(16 << 20)
    ///     .start()?;
    /// let big = serde_bytes::ByteBuf::from(vec![7u8; 4 << 20]);
    /// assert_eq!(rpc.call_blocking(big.clone())?, big);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn shared_memory(mut self, bytes: u64) -> Self {
        self.settings.shared_memory = bytes;
        self
    }

    /// Whether `tracing` events emitted in the child reach this program's
    /// subscriber (default: yes, at the levels the subscriber enables now).
    pub fn forward_tracing(mut self, forward: bool) -> Self {
        self.settings.forward_tracing = forward;
        self
    }

    /// Whether the child dies when this program does, even by `SIGKILL`,
    /// in the middle of a call (default: yes). Turn it off for a worker
    /// that must finish its work alone; see [`Fork::die_with_parent`].
    pub fn die_with_parent(mut self, die: bool) -> Self {
        self.settings.die_with_parent = die;
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
        self.settings.kill_on_timeout = kill;
        self
    }

    /// Where notices (`retire`) go: for whoever manages the process.
    pub(crate) fn on_notice(mut self, handler: NoticeHandler) -> Self {
        self.settings.on_notice = Some(handler);
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
                "RPC function" => crate::rpc::registry::lookup_rpc(name).map(|_| ()),
                "RPC init function" => crate::rpc::registry::lookup_rpc_init(name).map(|_| ()),
                _ => crate::rpc::registry::lookup_rpc_done(name).map(|_| ()),
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
            .map(|target| self.settings.fork.for_its_executable(target))
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
        let check = Some(self.settings.fork.names_checked());
        let function = self.target(&self.settings.function.function, "RPC function", check)?;
        let init = self
            .settings
            .init
            .as_ref()
            .map(|f| self.target(f, "RPC init function", check))
            .transpose()?;
        let done = self
            .settings
            .done
            .as_ref()
            .map(|f| self.target(f, "RPC done function", check))
            .transpose()?;
        let codec = self.chosen_codec();
        let config = Config {
            codec,
            backend: self.settings.function.backend,
            function,
            init,
            done,
            buflen_req: u32::try_from(self.settings.buflen_req).unwrap_or(u32::MAX),
            max_frame: self.settings.max_frame,
            log_level: if self.settings.forward_tracing {
                crate::rpc::trace::current_level_code()
            } else {
                0
            },
            shared_memory: if self.settings.fork.shares_memory() {
                self.settings.shared_memory
            } else {
                0
            },
        };
        let link = self
            .settings
            .fork
            .die_with_parent(self.settings.die_with_parent)
            .send_arg(config.encode())
            .run_pipelined(&IntoRun::into_run(crate::rpc::server::SERVE))?;
        let raw_events = TypeId::of::<Ev>() == TypeId::of::<Octets>();
        let on_event = self.on_event.map(|mut typed| -> EventHandler {
            Box::new(move |bytes, fds| match codec.decode::<Ev>(&bytes, fds) {
                Ok(event) => typed(event),
                Err(e) => tracing::error!("anyfork rpc: cannot decode an event: {e}"),
            })
        });
        let events = self
            .settings
            .event_stream
            .then(|| Arc::new(EventQueue::default()));
        let core = Core::new(
            link,
            self.settings.function.label().to_owned(),
            codec,
            Limits {
                buflen: self.settings.buflen_res,
                max_frame: self.settings.max_frame,
                shared_memory: config.shared_memory,
            },
            Handlers {
                on_event,
                on_error: self.settings.on_error,
                on_destroy: self.settings.on_destroy,
                events: events.clone(),
                on_notice: self.settings.on_notice,
                raw_events,
            },
            Rules {
                kill_on_timeout: self.settings.kill_on_timeout,
                sequential: crate::rpc::registry::is_sequential(&self.settings.function),
            },
        )?;
        let core = Arc::new(core);
        core.send_queued();
        // Inside a runtime, read from the start so events flow.
        #[cfg(feature = "tokio")]
        if tokio::runtime::Handle::try_current().is_ok() {
            core.clone().ensure_driver();
        }
        Ok(Rpc {
            shared: Arc::new(Shared {
                core: core.clone(),
                events: Mutex::new(events),
            }),
            core,
            _types: PhantomData,
        })
    }
}
