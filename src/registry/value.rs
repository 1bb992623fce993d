//! Naming a function by value: a function item (or a closure that captures
//! nothing) is sent as the offset of a small trampoline for it in the
//! executable, which is the same file in every serving process, with the
//! file's identity so that a mismatch is refused rather than jumped into.

use std::any::type_name;
use std::os::unix::net::UnixStream;

use super::{InitFn, Outcome, RunFn};
use crate::args::Args;
use crate::proto::Target;
use crate::sys::exe;
use crate::transport::Transport;

/// Produces a value of a zero-sized, `Copy`, `'static` function type.
///
/// Such a type is a function item or a closure that captures nothing (or only
/// zero-sized `Copy` values): it has exactly one value, which safe code could
/// copy freely, so producing it here is the same as copying the one the
/// caller named.
pub(crate) fn conjure<F: Copy + 'static>() -> F {
    const { captures_nothing::<F>() };
    // SAFETY: F is zero-sized (checked at compile time above), so reading it
    // from a dangling, well-aligned pointer reads no memory; F is Copy and
    // 'static, so duplicating its only value breaks no ownership or lifetime
    // invariant (see the function docs).
    unsafe { std::ptr::NonNull::<F>::dangling().as_ptr().read() }
}

/// Refuses, at compile time, a function value that captures something: it
/// would run in another process, where the captured values do not exist.
/// Called (in a `const` block) by every `into_*` for function values, so
/// that the error names the caller's line.
pub(crate) const fn captures_nothing<F>() {
    assert!(
        size_of::<F>() == 0,
        "anyfork: this closure captures variables, so it cannot run in another process. \
         Pass a function item or a closure that captures nothing, and send the data instead: \
         as the RPC request, or with send_arg/send_fh for run"
    )
}

/// Calls a run function written for a unix socket: the process's
/// connection must be one.
pub(super) fn run_trampoline<F, R>(connection: Transport, args: Args) -> Option<String>
where
    F: Fn(UnixStream, Args) -> R + Copy + 'static,
    R: Outcome,
{
    match connection.into_socket() {
        Ok(socket) => conjure::<F>()(UnixStream::from(socket), args).into_failure(),
        Err(_) => Some(format!(
            "`{}` takes a UnixStream, but this process talks over a pair of byte streams \
             (pipes or a command's stdin and stdout), not a unix socket",
            type_name::<F>()
        )),
    }
}

pub(super) fn init_trampoline<F, R>(args: &[Vec<u8>]) -> Option<String>
where
    F: Fn(&[Vec<u8>]) -> R + Copy + 'static,
    R: Outcome,
{
    conjure::<F>()(args).into_failure()
}

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
///
/// Sealed: implemented for names (`&str`, `String`) and such functions.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not something a process can run",
    label = "not a run function",
    note = "pass a function `fn(std::os::unix::net::UnixStream, anyfork::Args)` returning `()` or `Result<(), E: Display>` (a function item, or a closure that captures nothing), or the name of one registered with `anyfork::function!`",
    note = "to give the function data, send it with `send_arg`/`send_fh` and read it from its `Args`"
)]
pub trait IntoRun: crate::sealed::Sealed<crate::sealed::Run> {
    /// Names the function.
    fn into_run(self) -> FunctionRef;
}

impl crate::sealed::Sealed<crate::sealed::Run> for &str {}

impl IntoRun for &str {
    fn into_run(self) -> FunctionRef {
        FunctionRef::name(self.to_owned())
    }
}

impl crate::sealed::Sealed<crate::sealed::Run> for String {}

impl IntoRun for String {
    fn into_run(self) -> FunctionRef {
        FunctionRef::name(self)
    }
}

impl crate::sealed::Sealed<crate::sealed::Run> for FunctionRef {}

/// A function already named (kept by a server pool to run it again).
impl IntoRun for FunctionRef {
    fn into_run(self) -> FunctionRef {
        self
    }
}

impl<F, R> crate::sealed::Sealed<crate::sealed::Run> for F
where
    F: Fn(UnixStream, Args) -> R + Copy + 'static,
    R: Outcome,
{
}

impl<F, R> IntoRun for F
where
    F: Fn(UnixStream, Args) -> R + Copy + 'static,
    R: Outcome,
{
    fn into_run(self) -> FunctionRef {
        const { captures_nothing::<F>() };
        let trampoline: RunFn = run_trampoline::<F, R>;
        FunctionRef::value(trampoline as usize, type_name::<F>())
    }
}

/// Something [`Fork::eval`](crate::Fork::eval) can call: a registered name,
/// or a function value `fn(&[Vec<u8>]) -> impl Outcome` that captures
/// nothing.
///
/// Sealed: implemented for names (`&str`, `String`) and such functions.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an initialiser",
    label = "not an initialiser",
    note = "pass a function `fn(&[Vec<u8>])` returning `()` or `Result<(), E: Display>` (a function item, or a closure that captures nothing), or the name of one registered with `anyfork::initialiser!`"
)]
pub trait IntoInit: crate::sealed::Sealed<crate::sealed::Init> {
    /// Names the initialiser.
    fn into_init(self) -> FunctionRef;
}

impl crate::sealed::Sealed<crate::sealed::Init> for &str {}

impl IntoInit for &str {
    fn into_init(self) -> FunctionRef {
        FunctionRef::name(self.to_owned())
    }
}

impl crate::sealed::Sealed<crate::sealed::Init> for String {}

impl IntoInit for String {
    fn into_init(self) -> FunctionRef {
        FunctionRef::name(self)
    }
}

impl<F, R> crate::sealed::Sealed<crate::sealed::Init> for F
where
    F: Fn(&[Vec<u8>]) -> R + Copy + 'static,
    R: Outcome,
{
}

impl<F, R> IntoInit for F
where
    F: Fn(&[Vec<u8>]) -> R + Copy + 'static,
    R: Outcome,
{
    fn into_init(self) -> FunctionRef {
        const { captures_nothing::<F>() };
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
