//! The functions an RPC child runs, and how the parent names them.
//!
//! A *synchronous* RPC function is a plain `fn(Req) -> Rep`: the child calls
//! it for one request at a time. An *asynchronous* one is an
//! `async fn(Req) -> Rep` (any `fn(Req) -> impl Future<Output = Rep>`): the
//! child runs many calls at once on a single-threaded tokio runtime. `Req`
//! and `Rep` are any serde types (with the default raw codec: lists of
//! strings, see [`Codec`]).
//!
//! As for [`run`](crate::Fork::run), a function is named by value (a
//! function item, whose request and reply types the parent then knows) or
//! by the name [`rpc!`](crate::rpc!) registered it under.

use std::future::Future;
use std::os::fd::OwnedFd;
use std::pin::Pin;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::codec::Codec;
use super::shared_memory::Sink;
use crate::args::Args;
use crate::registry::{FunctionRef, Outcome, conjure};

/// The default message type: a list of octet strings.
pub type Octets = Vec<Vec<u8>>;

/// Why a call failed in the child, as reported back.
pub(crate) type CallFailure = String;

/// A synchronous RPC function as the server calls it: decodes the request
/// and calls the function, returning its result to be encoded (straight
/// into what the server sends, once the request's bytes are released).
pub(crate) type SyncCall =
    fn(Codec, &[u8], Vec<OwnedFd>) -> Result<Box<dyn EncodeReply>, CallFailure>;

/// A call's result, kept as a value until the server encodes it straight
/// into what it sends.
pub(crate) trait EncodeReply {
    /// Writes the encoded result to `out`; returns its descriptors.
    fn encode_into(
        &self,
        codec: Codec,
        out: &mut Sink<'_, '_>,
    ) -> Result<Vec<OwnedFd>, CallFailure>;
}

struct Reply<R>(R);

impl<R: Serialize> EncodeReply for Reply<R> {
    fn encode_into(
        &self,
        codec: Codec,
        out: &mut Sink<'_, '_>,
    ) -> Result<Vec<OwnedFd>, CallFailure> {
        codec
            .encode_to_sink(&self.0, out)
            .map_err(|e| format!("cannot encode the result: {e}"))
    }
}

/// A future the async server runs for one call.
pub(crate) type CallFuture =
    Pin<Box<dyn Future<Output = Result<Box<dyn EncodeReply>, CallFailure>>>>;

/// An asynchronous RPC function as the server calls it: decodes the request
/// where it was read (so the request's bytes need not be copied) and
/// returns the call to run.
pub(crate) type AsyncCall = fn(Codec, &[u8], Vec<OwnedFd>) -> CallFuture;

/// An `init` function as the server calls it.
pub(crate) type InitCall = fn(Args) -> Option<String>;

/// A `done` function as the async server calls it.
pub(crate) type DoneCall = fn() -> Pin<Box<dyn Future<Output = ()>>>;

fn decode_request<Req: DeserializeOwned>(
    codec: Codec,
    bytes: &[u8],
    fds: Vec<OwnedFd>,
) -> Result<Req, CallFailure> {
    codec
        .decode(bytes, fds)
        .map_err(|e| format!("cannot decode the arguments: {e}"))
}

pub(crate) fn sync_trampoline<F, Req, Rep>(
    codec: Codec,
    bytes: &[u8],
    fds: Vec<OwnedFd>,
) -> Result<Box<dyn EncodeReply>, CallFailure>
where
    F: Fn(Req) -> Rep + Copy + 'static,
    Req: DeserializeOwned,
    Rep: Serialize + 'static,
{
    let request = decode_request(codec, bytes, fds)?;
    Ok(Box::new(Reply(conjure::<F>()(request))))
}

pub(crate) fn async_trampoline<F, Req, Fut>(
    codec: Codec,
    bytes: &[u8],
    fds: Vec<OwnedFd>,
) -> CallFuture
where
    F: Fn(Req) -> Fut + Copy + 'static,
    Req: DeserializeOwned + 'static,
    Fut: Future + 'static,
    Fut::Output: Serialize + 'static,
{
    let request = decode_request(codec, bytes, fds);
    Box::pin(async move {
        let reply = conjure::<F>()(request?).await;
        Ok(Box::new(Reply(reply)) as Box<dyn EncodeReply>)
    })
}

pub(crate) fn init_trampoline<F, R>(args: Args) -> Option<String>
where
    F: Fn(Args) -> R + Copy + 'static,
    R: Outcome,
{
    conjure::<F>()(args).into_failure()
}

pub(crate) fn done_trampoline<F, Fut>() -> Pin<Box<dyn Future<Output = ()>>>
where
    F: Fn() -> Fut + Copy + 'static,
    Fut: Future<Output = ()> + 'static,
{
    Box::pin(conjure::<F>()())
}

/// Which server a function needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    /// Named: the child looks it up and knows.
    Unknown,
    Sync,
    Async,
}

impl Backend {
    pub(crate) fn code(self) -> u8 {
        match self {
            Backend::Unknown => 0,
            Backend::Sync => 1,
            Backend::Async => 2,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<Backend> {
        match code {
            0 => Some(Backend::Unknown),
            1 => Some(Backend::Sync),
            2 => Some(Backend::Async),
            _ => None,
        }
    }
}

/// An RPC function as the parent names it.
#[derive(Debug, Clone)]
pub struct RpcFunction {
    pub(crate) function: FunctionRef,
    pub(crate) backend: Backend,
    /// Its messages are typed (a function value): the default codec is
    /// then one that carries any serde value.
    pub(crate) typed: bool,
}

impl RpcFunction {
    /// How the function is named in messages.
    pub fn label(&self) -> &str {
        self.function.label()
    }
}

/// Marks [`IntoRpc`] for registered names.
#[derive(Debug)]
pub enum ByName {}
/// Marks [`IntoRpc`] for synchronous function values.
#[derive(Debug)]
pub enum SyncFn {}
/// Marks [`IntoRpc`] for asynchronous function values.
#[derive(Debug)]
pub enum AsyncFn {}

/// Something [`Fork::rpc`](crate::Fork::rpc) can serve: a registered name
/// (request and reply types are then [`Octets`] until you say otherwise
/// with [`RpcBuilder::types`](super::RpcBuilder::types)), or a function value
/// `fn(Req) -> Rep` or `async fn(Req) -> Rep` that captures nothing.
///
/// Sealed: implemented for names (`&str`, `String`) and such functions.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be served over RPC",
    label = "not an RPC function",
    note = "pass `fn(Req) -> Rep` or `async fn(Req) -> Rep` (a function item, or a closure that captures nothing) taking one argument, whose request and reply types implement serde's `Serialize` and `Deserialize` (add `#[derive(Serialize, Deserialize)]`; several values go in a tuple), or the name of one registered with `anyfork::rpc!`"
)]
pub trait IntoRpc<Marker>: crate::sealed::Sealed<crate::sealed::Rpc<Marker>> {
    /// The request type.
    type Req;
    /// The reply type.
    type Rep;
    /// Names the function.
    fn into_rpc(self) -> RpcFunction;
}

impl crate::sealed::Sealed<crate::sealed::Rpc<ByName>> for &str {}

impl IntoRpc<ByName> for &str {
    type Req = Octets;
    type Rep = Octets;
    fn into_rpc(self) -> RpcFunction {
        RpcFunction {
            function: crate::registry::IntoRun::into_run(self),
            backend: Backend::Unknown,
            typed: false,
        }
    }
}

impl crate::sealed::Sealed<crate::sealed::Rpc<ByName>> for String {}

impl IntoRpc<ByName> for String {
    type Req = Octets;
    type Rep = Octets;
    fn into_rpc(self) -> RpcFunction {
        self.as_str().into_rpc()
    }
}

impl<F, Req, Rep> crate::sealed::Sealed<crate::sealed::Rpc<(SyncFn, Req, Rep)>> for F
where
    F: Fn(Req) -> Rep + Copy + 'static,
    Req: Serialize + DeserializeOwned,
    Rep: Serialize + DeserializeOwned + 'static,
{
}

impl<F, Req, Rep> IntoRpc<(SyncFn, Req, Rep)> for F
where
    F: Fn(Req) -> Rep + Copy + 'static,
    Req: Serialize + DeserializeOwned,
    Rep: Serialize + DeserializeOwned + 'static,
{
    type Req = Req;
    type Rep = Rep;
    fn into_rpc(self) -> RpcFunction {
        const { crate::registry::captures_nothing::<F>() };
        let trampoline: SyncCall = sync_trampoline::<F, Req, Rep>;
        RpcFunction {
            function: FunctionRef::value(trampoline as usize, std::any::type_name::<F>()),
            backend: Backend::Sync,
            typed: true,
        }
    }
}

impl<F, Req, Fut> crate::sealed::Sealed<crate::sealed::Rpc<(AsyncFn, Req, Fut)>> for F
where
    F: Fn(Req) -> Fut + Copy + 'static,
    Req: Serialize + DeserializeOwned + 'static,
    Fut: Future + 'static,
    Fut::Output: Serialize + DeserializeOwned + 'static,
{
}

impl<F, Req, Fut> IntoRpc<(AsyncFn, Req, Fut)> for F
where
    F: Fn(Req) -> Fut + Copy + 'static,
    Req: Serialize + DeserializeOwned + 'static,
    Fut: Future + 'static,
    Fut::Output: Serialize + DeserializeOwned + 'static,
{
    type Req = Req;
    type Rep = Fut::Output;
    fn into_rpc(self) -> RpcFunction {
        const { crate::registry::captures_nothing::<F>() };
        let trampoline: AsyncCall = async_trampoline::<F, Req, Fut>;
        RpcFunction {
            function: FunctionRef::value(trampoline as usize, std::any::type_name::<F>()),
            backend: Backend::Async,
            typed: true,
        }
    }
}

/// An `init` function for [`RpcBuilder::init`](super::RpcBuilder::init): a
/// registered name, or a function value `fn(Args) -> impl Outcome`.
///
/// Sealed: implemented for names and such functions.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be an RPC `init` function",
    label = "not an RPC init function",
    note = "pass `fn(anyfork::Args)` returning `()` or `Result<(), E: Display>` (a function item, or a closure that captures nothing), or the name of one registered with `anyfork::rpc!(init ...)`"
)]
pub trait IntoRpcInit: crate::sealed::Sealed<crate::sealed::RpcInit> {
    /// Names the function.
    fn into_rpc_init(self) -> FunctionRef;
}

impl crate::sealed::Sealed<crate::sealed::RpcInit> for &str {}

impl IntoRpcInit for &str {
    fn into_rpc_init(self) -> FunctionRef {
        crate::registry::IntoRun::into_run(self)
    }
}

impl<F, R> crate::sealed::Sealed<crate::sealed::RpcInit> for F
where
    F: Fn(Args) -> R + Copy + 'static,
    R: Outcome,
{
}

impl<F, R> IntoRpcInit for F
where
    F: Fn(Args) -> R + Copy + 'static,
    R: Outcome,
{
    fn into_rpc_init(self) -> FunctionRef {
        const { crate::registry::captures_nothing::<F>() };
        let trampoline: InitCall = init_trampoline::<F, R>;
        FunctionRef::value(trampoline as usize, std::any::type_name::<F>())
    }
}

/// A `done` function for [`RpcBuilder::done`](super::RpcBuilder::done): a
/// registered name, or a function value `async fn()`.
///
/// Sealed: implemented for names and such functions.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be an RPC `done` function",
    label = "not an RPC done function",
    note = "pass `async fn()` (a function item, or a closure that captures nothing), or the name of one registered with `anyfork::rpc!(done ...)`"
)]
pub trait IntoRpcDone: crate::sealed::Sealed<crate::sealed::RpcDone> {
    /// Names the function.
    fn into_rpc_done(self) -> FunctionRef;
}

impl crate::sealed::Sealed<crate::sealed::RpcDone> for &str {}

impl IntoRpcDone for &str {
    fn into_rpc_done(self) -> FunctionRef {
        crate::registry::IntoRun::into_run(self)
    }
}

impl<F, Fut> crate::sealed::Sealed<crate::sealed::RpcDone> for F
where
    F: Fn() -> Fut + Copy + 'static,
    Fut: Future<Output = ()> + 'static,
{
}

impl<F, Fut> IntoRpcDone for F
where
    F: Fn() -> Fut + Copy + 'static,
    Fut: Future<Output = ()> + 'static,
{
    fn into_rpc_done(self) -> FunctionRef {
        const { crate::registry::captures_nothing::<F>() };
        let trampoline: DoneCall = done_trampoline::<F, Fut>;
        FunctionRef::value(trampoline as usize, std::any::type_name::<F>())
    }
}
