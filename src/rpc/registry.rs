//! The registry of RPC functions: what [`rpc!`](crate::rpc) adds, gathered
//! by the linker from every crate like the run functions of
//! [`crate::registry`], and looked up by name in the child.

use super::function::{self, AsyncCall, DoneCall, InitCall, SyncCall};
use crate::args::Args;
use crate::registry::{Lookup, Outcome};

/// An RPC registry entry. Created by [`rpc!`](crate::rpc); not meant to be
/// written by hand.
#[doc(hidden)]
#[derive(Debug)]
pub struct RpcEntry {
    name: &'static str,
    kind: RpcKind,
}

#[derive(Debug, Clone, Copy)]
enum RpcKind {
    Sync(SyncCall),
    Async(AsyncCall),
    Init(InitCall),
    Done(DoneCall),
}

/// Every registered RPC function of the program.
#[doc(hidden)]
#[linkme::distributed_slice]
pub static RPC_REGISTRY: [RpcEntry];

impl RpcEntry {
    /// A synchronous RPC function entry.
    #[doc(hidden)]
    pub const fn rpc_sync<F, Req, Rep>(name: &'static str, f: F) -> Self
    where
        F: Fn(Req) -> Rep + Copy + 'static,
        Req: serde::de::DeserializeOwned,
        Rep: serde::Serialize + 'static,
    {
        let _ = f;
        Self {
            name,
            kind: RpcKind::Sync(function::sync_trampoline::<F, Req, Rep>),
        }
    }

    /// An asynchronous RPC function entry.
    #[doc(hidden)]
    pub const fn rpc_async<F, Req, Fut>(name: &'static str, f: F) -> Self
    where
        F: Fn(Req) -> Fut + Copy + 'static,
        Req: serde::de::DeserializeOwned + 'static,
        Fut: std::future::Future + 'static,
        Fut::Output: serde::Serialize + 'static,
    {
        let _ = f;
        Self {
            name,
            kind: RpcKind::Async(function::async_trampoline::<F, Req, Fut>),
        }
    }

    /// An RPC `init` function entry.
    #[doc(hidden)]
    pub const fn rpc_init<F, R>(name: &'static str, f: F) -> Self
    where
        F: Fn(Args) -> R + Copy + 'static,
        R: Outcome,
    {
        let _ = f;
        Self {
            name,
            kind: RpcKind::Init(function::init_trampoline::<F, R>),
        }
    }

    /// An RPC `done` function entry.
    #[doc(hidden)]
    pub const fn rpc_done<F, Fut>(name: &'static str, f: F) -> Self
    where
        F: Fn() -> Fut + Copy + 'static,
        Fut: std::future::Future<Output = ()> + 'static,
    {
        let _ = f;
        Self {
            name,
            kind: RpcKind::Done(function::done_trampoline::<F, Fut>),
        }
    }
}

/// A registered RPC function: synchronous or asynchronous.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RpcFunctionEntry {
    Sync(SyncCall),
    Async(AsyncCall),
}

fn lookup<T>(name: &str, pick: impl Fn(RpcKind) -> Option<T>) -> Lookup<T> {
    Lookup::unique(
        RPC_REGISTRY
            .iter()
            .filter(|e| e.name == name)
            .filter_map(|e| pick(e.kind)),
    )
}

pub(crate) fn lookup_rpc(name: &str) -> Lookup<RpcFunctionEntry> {
    lookup(name, |k| match k {
        RpcKind::Sync(f) => Some(RpcFunctionEntry::Sync(f)),
        RpcKind::Async(f) => Some(RpcFunctionEntry::Async(f)),
        _ => None,
    })
}

pub(crate) fn lookup_rpc_init(name: &str) -> Lookup<InitCall> {
    lookup(name, |k| match k {
        RpcKind::Init(f) => Some(f),
        _ => None,
    })
}

pub(crate) fn lookup_rpc_done(name: &str) -> Lookup<DoneCall> {
    lookup(name, |k| match k {
        RpcKind::Done(f) => Some(f),
        _ => None,
    })
}

/// Registers an RPC function (or an RPC `init` or `done` function) under
/// `module_path!()::name`, or under a name of your choice with `as`.
///
/// ```
/// use serde::{Deserialize, Serialize};
///
/// fn add((a, b): (i64, i64)) -> i64 {
///     a + b
/// }
/// anyfork::rpc!(add);
///
/// async fn slow_add((a, b): (i64, i64)) -> i64 {
///     a + b
/// }
/// anyfork::rpc!(async slow_add);
///
/// fn setup(_args: anyfork::Args) {}
/// anyfork::rpc!(init setup);
///
/// async fn linger() {}
/// anyfork::rpc!(done linger as "my::linger");
/// ```
#[macro_export]
macro_rules! rpc {
    (async $f:ident) => {
        $crate::rpc!(async $f as ::core::concat!(::core::module_path!(), "::", ::core::stringify!($f)));
    };
    (async $f:ident as $name:expr) => {
        $crate::rpc!(@entry rpc_async $f $name);
    };
    (init $f:ident) => {
        $crate::rpc!(init $f as ::core::concat!(::core::module_path!(), "::", ::core::stringify!($f)));
    };
    (init $f:ident as $name:expr) => {
        $crate::rpc!(@entry rpc_init $f $name);
    };
    (done $f:ident) => {
        $crate::rpc!(done $f as ::core::concat!(::core::module_path!(), "::", ::core::stringify!($f)));
    };
    (done $f:ident as $name:expr) => {
        $crate::rpc!(@entry rpc_done $f $name);
    };
    (@entry $kind:ident $f:ident $name:expr) => {
        const _: () = {
            #[$crate::__private::linkme::distributed_slice($crate::__private::RPC_REGISTRY)]
            #[linkme(crate = $crate::__private::linkme)]
            static ENTRY: $crate::__private::RpcEntry = $crate::__private::RpcEntry::$kind($name, $f);
        };
    };
    ($f:ident) => {
        $crate::rpc!($f as ::core::concat!(::core::module_path!(), "::", ::core::stringify!($f)));
    };
    ($f:ident as $name:expr) => {
        $crate::rpc!(@entry rpc_sync $f $name);
    };
}

/// Whether the child runs `function` one call at a time, in order (the
/// synchronous backend); for a name, as this program registered it.
pub(crate) fn is_sequential(function: &super::function::RpcFunction) -> bool {
    use super::function::Backend;
    match function.backend {
        Backend::Sync => true,
        Backend::Async => false,
        Backend::Unknown => match &function.function.repr {
            crate::registry::FunctionRepr::Name(name) => {
                matches!(lookup_rpc(name), Lookup::Found(RpcFunctionEntry::Sync(_)))
            }
            _ => false,
        },
    }
}
