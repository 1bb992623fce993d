//! The C ABI between a program and a library it loads with
//! [`require`](crate::Fork::require): the library exports one entry point
//! (expanded by [`library!`](crate::library)), through which the program
//! asks whether it has a function and calls it, so that the library's copy
//! of anyfork and the program's need not agree on Rust layouts.

use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::panic::{AssertUnwindSafe, catch_unwind};

use super::{Lookup, lookup_init, lookup_run, panic_message};
use crate::args::{Arg, Args};
use crate::transport::Transport;

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
                        OwnedFd::from_raw_fd(call.socket),
                        Args::from(raw_args(call.args, call.args_len, true)),
                    )
                };
                let Lookup::Found(f) = lookup_run(&name) else {
                    return Err(format!("no run function `{name}` in this library"));
                };
                f(Transport::Socket(socket), args).map_or(Ok(0), Err)
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
    pub(crate) fn run(&self, name: &str, connection: Transport, args: Args) -> Option<String> {
        let socket = match connection.into_socket() {
            Ok(socket) => socket,
            Err(_) => {
                return Some(format!(
                    "`{name}` is in library {}, whose functions need a unix socket; \
                     this process talks over a pair of byte streams",
                    self.path
                ));
            }
        };
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
