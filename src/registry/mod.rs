//! The registry of functions a serving process can run, by name, by
//! value or from a library (the user's view is in the crate docs,
//! "Naming functions").
//!
//! # Where it lives
//!
//! This module has the registry (the entries the macros add, and looking
//! names up); `value` names functions by value (trampolines and the offset
//! sent to the child); `library` is the C ABI between a program and the
//! libraries it loads with `require`. RPC keeps its own registry of RPC
//! functions ([`crate::rpc`](mod@crate::rpc)), built the same way.

mod library;
mod value;

use std::fmt::Display;
use std::os::unix::net::UnixStream;

use crate::args::Args;
use crate::transport::Transport;

pub(crate) use library::Library;
#[doc(hidden)]
pub use library::{LibraryCall, library_dispatch};
pub use value::{FunctionRef, IntoInit, IntoRun};
pub(crate) use value::{FunctionRepr, captures_nothing, conjure, resolve_offset};
use value::{init_trampoline, run_trampoline};

/// What a run function or initialiser may return.
///
/// `()` always succeeds; `Err(e)` fails with `e`'s message: a failing run
/// function exits with status 1 after printing the message to stderr, a
/// failing initialiser stops its process and the parent gets the message.
#[diagnostic::on_unimplemented(
    message = "a run function or initialiser cannot return `{Self}`",
    label = "not `()` or `Result<(), E>`",
    note = "return `()` or `Result<(), E>` where `E: std::fmt::Display`; results go back through the socket (or use `Fork::rpc`, whose functions return values)"
)]
pub trait Outcome {
    /// The failure message, if any.
    fn into_failure(self) -> Option<String>;
}

impl Outcome for () {
    fn into_failure(self) -> Option<String> {
        None
    }
}

impl<E: Display> Outcome for Result<(), E> {
    fn into_failure(self) -> Option<String> {
        self.err().map(|e| e.to_string())
    }
}

/// A run function as the serving process calls it.
///
/// It gets the process's end of its connection; a function written for a
/// unix socket refuses a transport that is not one (see
/// [`value::run_trampoline`]).
pub(crate) type RunFn = fn(Transport, Args) -> Option<String>;

/// An initialiser as the serving process calls it.
pub(crate) type InitFn = fn(&[Vec<u8>]) -> Option<String>;

/// A registry entry. Created by [`function!`](crate::function) and
/// [`initialiser!`](crate::initialiser); not meant to be written by hand.
#[doc(hidden)]
#[derive(Debug)]
pub struct Entry {
    name: &'static str,
    kind: EntryKind,
}

#[derive(Debug, Clone, Copy)]
enum EntryKind {
    Run(RunFn),
    Init(InitFn),
}

impl Entry {
    /// A run function entry.
    #[doc(hidden)]
    pub const fn run<F, R>(name: &'static str, f: F) -> Self
    where
        F: Fn(UnixStream, Args) -> R + Copy + 'static,
        R: Outcome,
    {
        let _ = f;
        Self {
            name,
            kind: EntryKind::Run(run_trampoline::<F, R>),
        }
    }

    /// A run function of this crate that takes the connection as it is
    /// (the RPC server, which speaks over any transport).
    pub(crate) const fn run_on_any_transport(name: &'static str, f: RunFn) -> Self {
        Self {
            name,
            kind: EntryKind::Run(f),
        }
    }

    /// An initialiser entry.
    #[doc(hidden)]
    pub const fn init<F, R>(name: &'static str, f: F) -> Self
    where
        F: Fn(&[Vec<u8>]) -> R + Copy + 'static,
        R: Outcome,
    {
        let _ = f;
        Self {
            name,
            kind: EntryKind::Init(init_trampoline::<F, R>),
        }
    }
}

/// Every registered function of the program (or of one library).
#[doc(hidden)]
#[linkme::distributed_slice]
pub static REGISTRY: [Entry];

/// Registers a run function under `module_path!()::name`, or under a name of
/// your choice with `as`.
///
/// The function takes the child's end of the socket and its
/// [`Args`](crate::Args), and returns `()` or `Result<(), E: Display>`.
///
/// ```
/// use std::io::Write;
/// use std::os::unix::net::UnixStream;
///
/// fn greeter(mut socket: UnixStream, _args: anyfork::Args) -> std::io::Result<()> {
///     socket.write_all(b"hello\n")
/// }
/// anyfork::function!(greeter);
/// anyfork::function!(greeter as "greeting::v2");
/// ```
#[macro_export]
macro_rules! function {
    ($f:ident) => {
        $crate::function!(
            $f as ::core::concat!(::core::module_path!(), "::", ::core::stringify!($f))
        );
    };
    ($f:ident as $name:expr) => {
        const _: () = {
            #[$crate::__private::linkme::distributed_slice($crate::__private::REGISTRY)]
            #[linkme(crate = $crate::__private::linkme)]
            static ENTRY: $crate::__private::Entry = $crate::__private::Entry::run($name, $f);
        };
    };
}

/// Registers an initialiser for [`Fork::eval`](crate::Fork::eval) under
/// `module_path!()::name`, or under a name of your choice with `as`.
///
/// The function takes the byte strings given to `eval` and returns `()` or
/// `Result<(), E: Display>`. State it builds (in statics) is inherited by
/// every process later forked from the template it ran in.
///
/// ```
/// use std::sync::OnceLock;
///
/// static TABLE: OnceLock<Vec<u64>> = OnceLock::new();
///
/// fn build_table(args: &[Vec<u8>]) -> Result<(), std::num::ParseIntError> {
///     let n: u64 = String::from_utf8_lossy(&args[0]).parse()?;
///     TABLE.get_or_init(|| (0..n).map(|i| i * i).collect());
///     Ok(())
/// }
/// anyfork::initialiser!(build_table);
/// ```
#[macro_export]
macro_rules! initialiser {
    ($f:ident) => {
        $crate::initialiser!(
            $f as ::core::concat!(::core::module_path!(), "::", ::core::stringify!($f))
        );
    };
    ($f:ident as $name:expr) => {
        const _: () = {
            #[$crate::__private::linkme::distributed_slice($crate::__private::REGISTRY)]
            #[linkme(crate = $crate::__private::linkme)]
            static ENTRY: $crate::__private::Entry = $crate::__private::Entry::init($name, $f);
        };
    };
}

/// Looking a name up in the registry.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Lookup<T> {
    Found(T),
    Missing,
    /// More than one function was registered under the name.
    Ambiguous,
}

impl<T> Lookup<T> {
    pub(crate) fn map<U>(self, f: impl FnOnce(T) -> U) -> Lookup<U> {
        match self {
            Lookup::Found(t) => Lookup::Found(f(t)),
            Lookup::Missing => Lookup::Missing,
            Lookup::Ambiguous => Lookup::Ambiguous,
        }
    }
}

impl<T> Lookup<T> {
    /// The one candidate, if there is exactly one.
    pub(crate) fn unique(mut candidates: impl Iterator<Item = T>) -> Lookup<T> {
        match (candidates.next(), candidates.next()) {
            (Some(found), None) => Lookup::Found(found),
            (None, _) => Lookup::Missing,
            (Some(_), Some(_)) => Lookup::Ambiguous,
        }
    }
}

fn lookup<T>(name: &str, pick: impl Fn(EntryKind) -> Option<T>) -> Lookup<T> {
    Lookup::unique(
        REGISTRY
            .iter()
            .filter(|e| e.name == name)
            .filter_map(|e| pick(e.kind)),
    )
}

pub(crate) fn lookup_run(name: &str) -> Lookup<RunFn> {
    lookup(name, |k| match k {
        EntryKind::Run(f) => Some(f),
        _ => None,
    })
}

pub(crate) fn lookup_init(name: &str) -> Lookup<InitFn> {
    lookup(name, |k| match k {
        EntryKind::Init(f) => Some(f),
        _ => None,
    })
}

/// Every registered name, for error messages and `anyfork` tooling.
pub fn registered_names() -> impl Iterator<Item = &'static str> {
    REGISTRY.iter().map(|e| e.name)
}

/// The text of a panic payload.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
