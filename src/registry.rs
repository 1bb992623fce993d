//! Functions a serving process can run: by name, by value, or from a library.
//!
//! Rust has no `eval`, so a child cannot be told to run arbitrary code; it can
//! be told to run a function that its executable already contains. There are
//! three ways to name one:
//!
//! 1. **By registered name.** [`function!`](crate::function) (run functions)
//!    and [`initialiser!`](crate::initialiser) (for
//!    [`eval`](crate::Fork::eval)) add a function to a registry that the
//!    linker gathers from every crate of the program, under the name
//!    `crate::module::function` (like Perl's fully qualified names). The
//!    parent checks the name in its own registry before it sends anything.
//! 2. **By value.** Pass the function item (or a closure that captures
//!    nothing) itself. anyfork sends the offset of a small trampoline for it
//!    within the executable, which is the same file in every serving process,
//!    with the file's identity so a mismatch is refused rather than jumped
//!    into.
//! 3. **From a library.** A `cdylib` that registers functions and expands
//!    [`library!`](crate::library) once can be loaded into a process with
//!    [`require`](crate::Fork::require); its functions are then found by name
//!    in the child (the parent does not have them, so it cannot check).
//!
//! A run function takes the process's end of the socket and its
//! [`Args`], and returns `()` or `Result<(), E>` with
//! `E: Display`. An initialiser takes its byte-string arguments:
//!
//! ```
//! use std::os::unix::net::UnixStream;
//! use anyfork::Args;
//!
//! fn worker(socket: UnixStream, mut args: Args) -> std::io::Result<()> {
//!     let _id = args.bytes();
//!     drop(socket);
//!     Ok(())
//! }
//! anyfork::function!(worker); // registered as "<crate>::worker"
//!
//! fn load_table(args: &[Vec<u8>]) {
//!     let _ = args;
//! }
//! anyfork::initialiser!(load_table);
//! ```

use std::any::type_name;
use std::fmt::Display;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::args::{Arg, Args};
use crate::proto::Target;
use crate::rpc::function as rpc_fn;
use crate::sys::exe;

/// What a run function or initialiser may return.
///
/// `()` always succeeds; `Err(e)` fails with `e`'s message: a failing run
/// function exits with status 1 after printing the message to stderr, a
/// failing initialiser stops its process and the parent gets the message.
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
pub(crate) type RunFn = fn(UnixStream, Args) -> Option<String>;

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
    RpcSync(rpc_fn::SyncCall),
    RpcAsync(rpc_fn::AsyncCall),
    RpcInit(rpc_fn::InitCall),
    RpcDone(rpc_fn::DoneCall),
}

/// Produces a value of a zero-sized, `Copy`, `'static` function type.
///
/// Such a type is a function item or a closure that captures nothing (or only
/// zero-sized `Copy` values): it has exactly one value, which safe code could
/// copy freely, so producing it here is the same as copying the one the
/// caller named.
pub(crate) fn conjure<F: Copy + 'static>() -> F {
    const {
        assert!(
            size_of::<F>() == 0,
            "anyfork: a function value must not capture anything"
        )
    };
    // SAFETY: F is zero-sized (checked at compile time above), so reading it
    // from a dangling, well-aligned pointer reads no memory; F is Copy and
    // 'static, so duplicating its only value breaks no ownership or lifetime
    // invariant (see the function docs).
    unsafe { std::ptr::NonNull::<F>::dangling().as_ptr().read() }
}

fn run_trampoline<F, R>(socket: UnixStream, args: Args) -> Option<String>
where
    F: Fn(UnixStream, Args) -> R + Copy + 'static,
    R: Outcome,
{
    conjure::<F>()(socket, args).into_failure()
}

fn init_trampoline<F, R>(args: &[Vec<u8>]) -> Option<String>
where
    F: Fn(&[Vec<u8>]) -> R + Copy + 'static,
    R: Outcome,
{
    conjure::<F>()(args).into_failure()
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

impl Entry {
    /// A synchronous RPC function entry.
    #[doc(hidden)]
    pub const fn rpc_sync<F, Req, Rep>(name: &'static str, f: F) -> Self
    where
        F: Fn(Req) -> Rep + Copy + 'static,
        Req: serde::de::DeserializeOwned,
        Rep: serde::Serialize,
    {
        let _ = f;
        Self {
            name,
            kind: EntryKind::RpcSync(rpc_fn::sync_trampoline::<F, Req, Rep>),
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
            kind: EntryKind::RpcAsync(rpc_fn::async_trampoline::<F, Req, Fut>),
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
            kind: EntryKind::RpcInit(rpc_fn::init_trampoline::<F, R>),
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
            kind: EntryKind::RpcDone(rpc_fn::done_trampoline::<F, Fut>),
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

fn lookup<T>(name: &str, pick: impl Fn(EntryKind) -> Option<T>) -> Lookup<T> {
    let mut found = None;
    for entry in REGISTRY.iter().filter(|e| e.name == name) {
        if let Some(f) = pick(entry.kind) {
            if found.is_some() {
                return Lookup::Ambiguous;
            }
            found = Some(f);
        }
    }
    match found {
        Some(f) => Lookup::Found(f),
        None => Lookup::Missing,
    }
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

/// A registered RPC function: synchronous or asynchronous.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RpcEntry {
    Sync(rpc_fn::SyncCall),
    Async(rpc_fn::AsyncCall),
}

pub(crate) fn lookup_rpc(name: &str) -> Lookup<RpcEntry> {
    lookup(name, |k| match k {
        EntryKind::RpcSync(f) => Some(RpcEntry::Sync(f)),
        EntryKind::RpcAsync(f) => Some(RpcEntry::Async(f)),
        _ => None,
    })
}

pub(crate) fn lookup_rpc_init(name: &str) -> Lookup<rpc_fn::InitCall> {
    lookup(name, |k| match k {
        EntryKind::RpcInit(f) => Some(f),
        _ => None,
    })
}

pub(crate) fn lookup_rpc_done(name: &str) -> Lookup<rpc_fn::DoneCall> {
    lookup(name, |k| match k {
        EntryKind::RpcDone(f) => Some(f),
        _ => None,
    })
}

/// Every registered name, for error messages and `anyfork` tooling.
pub fn registered_names() -> impl Iterator<Item = &'static str> {
    REGISTRY.iter().map(|e| e.name)
}

// ---------------------------------------------------------------------------
// Naming a function from the parent

/// A function to run or an initialiser to call, as named by the parent.
///
/// Made from a `&str`/`String` (a registered name) or from a function value
/// through [`IntoRun`] and [`IntoInit`]; you do not build it yourself.
#[derive(Debug, Clone)]
pub struct FunctionRef {
    pub(crate) repr: FunctionRepr,
}

#[derive(Debug, Clone)]
pub(crate) enum FunctionRepr {
    Name(String),
    Value {
        /// Offset in the main executable, or `None` if the function is not
        /// in it.
        offset: Option<u64>,
        label: &'static str,
    },
}

impl FunctionRef {
    fn name(name: String) -> Self {
        Self {
            repr: FunctionRepr::Name(name),
        }
    }

    pub(crate) fn value(addr: usize, label: &'static str) -> Self {
        Self {
            repr: FunctionRepr::Value {
                offset: exe::offset_in_main(addr),
                label,
            },
        }
    }

    /// How the function is named in messages.
    pub fn label(&self) -> &str {
        match &self.repr {
            FunctionRepr::Name(name) => name,
            FunctionRepr::Value { label, .. } => label,
        }
    }

    /// The wire form; `None` if a function value is not in the main
    /// executable.
    pub(crate) fn target(&self) -> Option<Target> {
        Some(match &self.repr {
            FunctionRepr::Name(name) => Target::Name(name.clone()),
            FunctionRepr::Value { offset, label } => Target::Offset {
                offset: (*offset)?,
                exe: exe::identity(),
                label: (*label).to_owned(),
            },
        })
    }
}

/// Something [`Fork::run`](crate::Fork::run) can run: a registered name, or a
/// function value `fn(UnixStream, Args) -> impl Outcome` that captures
/// nothing.
pub trait IntoRun {
    /// Names the function.
    fn into_run(self) -> FunctionRef;
}

impl IntoRun for &str {
    fn into_run(self) -> FunctionRef {
        FunctionRef::name(self.to_owned())
    }
}

impl IntoRun for String {
    fn into_run(self) -> FunctionRef {
        FunctionRef::name(self)
    }
}

impl<F, R> IntoRun for F
where
    F: Fn(UnixStream, Args) -> R + Copy + 'static,
    R: Outcome,
{
    fn into_run(self) -> FunctionRef {
        let trampoline: RunFn = run_trampoline::<F, R>;
        FunctionRef::value(trampoline as usize, type_name::<F>())
    }
}

/// Something [`Fork::eval`](crate::Fork::eval) can call: a registered name,
/// or a function value `fn(&[Vec<u8>]) -> impl Outcome` that captures
/// nothing.
pub trait IntoInit {
    /// Names the initialiser.
    fn into_init(self) -> FunctionRef;
}

impl IntoInit for &str {
    fn into_init(self) -> FunctionRef {
        FunctionRef::name(self.to_owned())
    }
}

impl IntoInit for String {
    fn into_init(self) -> FunctionRef {
        FunctionRef::name(self)
    }
}

impl<F, R> IntoInit for F
where
    F: Fn(&[Vec<u8>]) -> R + Copy + 'static,
    R: Outcome,
{
    fn into_init(self) -> FunctionRef {
        let trampoline: InitFn = init_trampoline::<F, R>;
        FunctionRef::value(trampoline as usize, type_name::<F>())
    }
}

/// The address of a function value's trampoline in this process, if `exe_id`
/// identifies this executable.
pub(crate) fn resolve_offset(offset: u64, exe_id: [u64; 4]) -> Option<usize> {
    if exe_id != exe::identity() {
        return None;
    }
    exe::address_in_main(offset)
}

// ---------------------------------------------------------------------------
// Functions in libraries

/// The symbol a library exports through [`library!`](crate::library).
pub(crate) const LIBRARY_SYMBOL: &[u8] = b"anyfork_library_v1\0";

/// The version of [`LibraryCall`]'s layout.
pub(crate) const LIBRARY_ABI: u32 = 1;

/// What a [`LibraryCall`] asks for.
#[doc(hidden)]
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LibraryOp {
    /// Is there a run function of this name? Returns 1 or 0.
    HasRun = 0,
    /// Is there an initialiser of this name? Returns 1 or 0.
    HasInit = 1,
    /// Call the run function. Returns 0, 1 with a failure message, or 2
    /// with a panic message.
    Run = 2,
    /// Call the initialiser. Returns 0, 1 with a failure message, or 2 with
    /// a panic message.
    Init = 3,
}

/// One argument crossing into a library.
#[doc(hidden)]
#[repr(C)]
#[derive(Debug)]
pub struct RawArg {
    /// 0: bytes at `ptr`/`len`; 1: the descriptor `fd`, whose ownership
    /// passes to the library.
    pub kind: u32,
    /// The descriptor, for kind 1.
    pub fd: RawFd,
    /// The bytes, for kind 0.
    pub ptr: *const u8,
    /// Their length.
    pub len: usize,
}

/// A call into a library's registry, across a C ABI so that the library's
/// copy of anyfork and the executable's need not agree on Rust layouts.
#[doc(hidden)]
#[repr(C)]
#[derive(Debug)]
pub struct LibraryCall {
    /// [`LIBRARY_ABI`].
    pub abi: u32,
    /// A [`LibraryOp`] value.
    pub op: u32,
    /// The function's name.
    pub name: *const u8,
    /// Its length.
    pub name_len: usize,
    /// The socket for `Run` (ownership passes to the library).
    pub socket: RawFd,
    /// Arguments.
    pub args: *const RawArg,
    /// Their number.
    pub args_len: usize,
    /// Where the library writes a failure message.
    pub message: *mut u8,
    /// Room there.
    pub message_cap: usize,
    /// Bytes the library wrote there.
    pub message_len: usize,
}

/// Exports the library's registered functions so that a process that loaded
/// it with [`require`](crate::Fork::require) can run them by name.
///
/// Expand it once in the library's crate root; the crate must be built as a
/// `cdylib` and depend on anyfork.
///
/// ```ignore
/// // in a cdylib
/// fn plugin_worker(socket: std::os::unix::net::UnixStream, _args: anyfork::Args) {}
/// anyfork::function!(plugin_worker);
/// anyfork::library!();
/// ```
#[macro_export]
macro_rules! library {
    () => {
        /// anyfork's entry point into this library's registry.
        ///
        /// # Safety
        ///
        /// `call` must point to a valid `LibraryCall` built by anyfork.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn anyfork_library_v1(
            call: *mut $crate::__private::LibraryCall,
        ) -> i32 {
            // SAFETY: forwarded from the caller's contract.
            unsafe { $crate::__private::library_dispatch(call) }
        }
    };
}

/// The library side of a [`LibraryCall`]: runs in the library's copy of
/// anyfork, against the library's registry. Never unwinds.
///
/// # Safety
///
/// `call` must point to a valid [`LibraryCall`] whose pointers are valid for
/// the lengths given, and whose descriptors the caller gives up.
#[doc(hidden)]
pub unsafe fn library_dispatch(call: *mut LibraryCall) -> i32 {
    // SAFETY: the caller's contract.
    let call = unsafe { &mut *call };
    if call.abi != LIBRARY_ABI {
        return -1;
    }
    // SAFETY: the caller's contract: `name` is valid for `name_len` bytes.
    let name = unsafe { std::slice::from_raw_parts(call.name, call.name_len) };
    let name = String::from_utf8_lossy(name).into_owned();
    let outcome = catch_unwind(AssertUnwindSafe(|| -> Result<i32, String> {
        match call.op {
            op if op == LibraryOp::HasRun as u32 => {
                Ok(matches!(lookup_run(&name), Lookup::Found(_)) as i32)
            }
            op if op == LibraryOp::HasInit as u32 => {
                Ok(matches!(lookup_init(&name), Lookup::Found(_)) as i32)
            }
            op if op == LibraryOp::Run as u32 => {
                // SAFETY: the caller gives up `socket` and every descriptor
                // in `args`; byte arguments are valid for their lengths.
                let (socket, args) = unsafe {
                    (
                        UnixStream::from_raw_fd(call.socket),
                        Args::from(raw_args(call.args, call.args_len, true)),
                    )
                };
                let Lookup::Found(f) = lookup_run(&name) else {
                    return Err(format!("no run function `{name}` in this library"));
                };
                f(socket, args).map_or(Ok(0), Err)
            }
            op if op == LibraryOp::Init as u32 => {
                // SAFETY: byte arguments are valid for their lengths.
                let args: Vec<Vec<u8>> = unsafe { raw_args(call.args, call.args_len, false) }
                    .into_iter()
                    .filter_map(|a| match a {
                        Arg::Bytes(b) => Some(b),
                        Arg::Fd(_) => None,
                    })
                    .collect();
                let Lookup::Found(f) = lookup_init(&name) else {
                    return Err(format!("no initialiser `{name}` in this library"));
                };
                f(&args).map_or(Ok(0), Err)
            }
            other => Err(format!("unknown library operation {other}")),
        }
    }));
    let (code, message) = match outcome {
        Ok(Ok(code)) => return code,
        Ok(Err(message)) => (1, message),
        Err(panic) => (2, panic_message(&*panic)),
    };
    let n = message.len().min(call.message_cap);
    // SAFETY: `message` is valid for `message_cap` bytes (caller's contract).
    unsafe { std::ptr::copy_nonoverlapping(message.as_ptr(), call.message, n) };
    call.message_len = n;
    code
}

/// Rebuilds arguments from their raw form.
///
/// # Safety
///
/// `args` must be valid for `len` elements, byte pointers for their lengths,
/// and, when `own_fds`, the caller gives up every descriptor.
unsafe fn raw_args(args: *const RawArg, len: usize, own_fds: bool) -> Vec<Arg> {
    if len == 0 {
        return Vec::new();
    }
    // SAFETY: the caller's contract.
    let raw = unsafe { std::slice::from_raw_parts(args, len) };
    raw.iter()
        .filter_map(|a| match a.kind {
            // SAFETY: the caller's contract.
            0 => Some(Arg::Bytes(
                unsafe { std::slice::from_raw_parts(a.ptr, a.len) }.to_vec(),
            )),
            // SAFETY: the caller's contract: the descriptor is ours now.
            1 if own_fds => Some(Arg::Fd(unsafe { OwnedFd::from_raw_fd(a.fd) })),
            _ => None,
        })
        .collect()
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

/// The executable side: a library loaded with `require`.
pub(crate) struct Library {
    pub(crate) path: String,
    entry: Option<unsafe extern "C" fn(*mut LibraryCall) -> i32>,
    _handle: libloading::Library,
}

impl Library {
    /// `dlopen`s the library and finds its registry, if it exports one.
    pub(crate) fn load(path: &[u8]) -> Result<Self, libloading::Error> {
        let os_path = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(path);
        // SAFETY: loading a library runs its initialisers; that is exactly
        // what `require` asks for, in a process that exists to do it.
        let handle = unsafe { libloading::Library::new(os_path) }?;
        // SAFETY: the symbol, when present, has the signature `library!`
        // gives it.
        let entry =
            unsafe { handle.get::<unsafe extern "C" fn(*mut LibraryCall) -> i32>(LIBRARY_SYMBOL) }
                .ok()
                .map(|sym| *sym);
        Ok(Self {
            path: String::from_utf8_lossy(path).into_owned(),
            entry,
            _handle: handle,
        })
    }

    fn call(
        &self,
        op: LibraryOp,
        name: &str,
        socket: RawFd,
        args: &[RawArg],
    ) -> Result<i32, String> {
        let Some(entry) = self.entry else {
            return Ok(0);
        };
        let mut message = vec![0u8; 16 * 1024];
        let mut call = LibraryCall {
            abi: LIBRARY_ABI,
            op: op as u32,
            name: name.as_ptr(),
            name_len: name.len(),
            socket,
            args: args.as_ptr(),
            args_len: args.len(),
            message: message.as_mut_ptr(),
            message_cap: message.len(),
            message_len: 0,
        };
        // SAFETY: `call` is valid and its pointers outlive the call; the
        // library's entry point never unwinds.
        let ret = unsafe { entry(&mut call) };
        match ret {
            0 | 1 if matches!(op, LibraryOp::HasRun | LibraryOp::HasInit) => Ok(ret),
            0 => Ok(0),
            1 | 2 => {
                message.truncate(call.message_len);
                let message = String::from_utf8_lossy(&message).into_owned();
                if ret == 2 {
                    std::panic::resume_unwind(Box::new(message));
                }
                Err(message)
            }
            other => Err(format!(
                "library {} refused the call (code {other})",
                self.path
            )),
        }
    }

    /// True if the library has a run function (`run`) or an initialiser of
    /// this name.
    pub(crate) fn has(&self, name: &str, run: bool) -> bool {
        let op = if run {
            LibraryOp::HasRun
        } else {
            LibraryOp::HasInit
        };
        matches!(self.call(op, name, -1, &[]), Ok(1))
    }

    /// Runs a run function; the socket and descriptors pass to the library.
    pub(crate) fn run(&self, name: &str, socket: UnixStream, args: Args) -> Option<String> {
        let items = args.into_vec();
        let raw: Vec<RawArg> = items
            .iter()
            .map(|a| match a {
                Arg::Bytes(b) => RawArg {
                    kind: 0,
                    fd: -1,
                    ptr: b.as_ptr(),
                    len: b.len(),
                },
                Arg::Fd(_) => RawArg {
                    kind: 1,
                    fd: -1,
                    ptr: std::ptr::null(),
                    len: 0,
                },
            })
            .collect();
        // Give the descriptors away only now that the raw list is built.
        let mut raw = raw;
        let mut keep = Vec::new();
        for (slot, item) in raw.iter_mut().zip(items) {
            match item {
                Arg::Fd(fd) => slot.fd = fd.into_raw_fd(),
                bytes => keep.push(bytes),
            }
        }
        let result = self.call(LibraryOp::Run, name, socket.into_raw_fd(), &raw);
        drop(keep);
        result.err()
    }

    /// Calls an initialiser.
    pub(crate) fn init(&self, name: &str, args: &[Vec<u8>]) -> Option<String> {
        let raw: Vec<RawArg> = args
            .iter()
            .map(|b| RawArg {
                kind: 0,
                fd: -1,
                ptr: b.as_ptr(),
                len: b.len(),
            })
            .collect();
        self.call(LibraryOp::Init, name, -1, &raw).err()
    }
}
