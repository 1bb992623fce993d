//! # anyfork: everything you wanted to use `fork()` for, but couldn't
//!
//! anyfork creates worker processes without forking your program. A small,
//! clean, single-threaded *template* process does the forking; you pass the
//! new process file descriptors and byte strings, and tell it which function
//! to run, with a socket connected back to you. It is
//! [AnyEvent::Fork](https://metacpan.org/pod/AnyEvent::Fork) for Rust.
//!
//! ```
//! use std::io::{Read, Write};
//! use std::os::unix::net::UnixStream;
//! use anyfork::{Args, Fork};
//!
//! fn worker(mut socket: UnixStream, mut args: Args) -> std::io::Result<()> {
//!     let name = args.string()?;
//!     write!(socket, "hello, {name}, from process {}", std::process::id())
//! }
//!
//! let mut socket = Fork::new()?.send_arg("world").run(worker)?;
//! let mut answer = String::new();
//! socket.read_to_string(&mut answer)?;
//! assert!(answer.starts_with("hello, world, from process "));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Why not just fork?
//!
//! There are two classic ways to get a worker process, and both hurt in a
//! big program:
//!
//! - **`fork` is slow when the program is big.** It copies the page tables
//!   of every page the program has touched: about 36 µs per MB on the
//!   machines this crate was measured on, so a 2000 MB server manages about
//!   13 forks a second. A 1.5 MB template manages thousands, whatever the
//!   size of the program that asks it.
//! - **`fork` shares too much.** The child gets a copy of everything: caches
//!   the parent will free (the child keeps them alive), listening sockets,
//!   database connections, event loops and runtimes whose threads did not
//!   come along. With anyfork you decide what a worker starts with.
//! - **`fork` in a threaded program is unsafe.** Another thread may hold
//!   the allocator's lock at that moment; the child then deadlocks on its
//!   first allocation. A tokio program is always threaded. anyfork forks
//!   only in its single-threaded template, so `Fork::new` is safe from any
//!   thread, concurrently.
//! - **`fork` + `exec` starts from nothing.** Everything must be loaded again,
//!   for every process, and shares nothing. A template can load and build
//!   state once ([`Fork::eval`], [`Fork::require`]) and every fork shares
//!   it copy-on-write.
//!
//! ## How
//!
//! A template is this very program's executable, started with a marker in
//! its environment so that it serves commands on a socket instead of running
//! `main` (nothing to write in `main` for that; see [`init`]). There are
//! three ways to get a process:
//!
//! 1. **[`Fork::new`]** forks the process-wide *default template*, created
//!    on first use. Ideal for one-off workers.
//! 2. **A template of your own**: prepare a process, then
//!    [`fork`](Fork::fork) it as often as you like. Everything it was sent
//!    and everything its initialisers built is in every fork:
//!
//!    ```
//!    # use std::os::unix::net::UnixStream;
//!    # fn worker(_: UnixStream, _: anyfork::Args) {}
//!    let template = anyfork::Fork::new()?.send_arg("shared setting");
//!    for id in 1..=3 {
//!        template.fork()?.send_arg(id.to_string()).run(worker)?;
//!    }
//!    // keep `template` to fork more later, or drop it: it exits.
//!    # Ok::<(), anyfork::Error>(())
//!    ```
//! 3. **[`Fork::new_exec`]** starts a fresh process (with `posix_spawn`,
//!    never by forking the program). Slower, shares nothing, needs no
//!    template.
//!
//! And two ways to make the program itself the template, for programs that
//! must not rely on running their executable again, or want to share what
//! they built before starting: [`early`] (first thing in `main`: `new_exec`
//! then forks this early copy) and [`Template::here`] (fork the program
//! as it is now, before any thread starts).
//!
//! Each process is then prepared by queueing commands, which chain:
//!
//! | method | does |
//! |---|---|
//! | [`send_arg`](Fork::send_arg) | a byte string for the function's [`Args`] |
//! | [`send_fh`](Fork::send_fh) | a file descriptor for the function's [`Args`] (`SCM_RIGHTS`) |
//! | [`eval`](Fork::eval) | call an initialiser in the process now |
//! | [`require`](Fork::require) | `dlopen` a shared library into the process |
//! | [`fork`](Fork::fork) | a new process from this one |
//! | [`run`](Fork::run) | call a function with the socket and the arguments; returns your end |
//!
//! ## Naming functions
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
//!
//! Every name registered in the program: [`registered_names`].
//!
//! ## Processes
//!
//! Every process anyfork creates, also the ones a template forks, is a direct
//! child of your program, with a [`Process`] handle: pid, [`kill`](Process::kill),
//! [`wait`](Process::wait) (blocking or async) and the exit status. Nothing
//! needs to be waited for: processes nobody waits for are reaped in the
//! background, so no zombie is left behind. When your program dies, even by
//! `SIGKILL`, templates and processes that have not run yet see end-of-file
//! on their sockets and exit; RPC workers die too, and so do running
//! workers you asked to ([`Fork::die_with_parent`]).
//!
//! [`Fork::new_exec`] keeps two fresh processes started ahead of time, as
//! `Fork::new`'s template keeps a forked one: the caller does not wait for
//! the `exec`. They are two more children of your program, idle until
//! used; [`keep_exec_spare`] turns them off.
//!
//! ## Async
//!
//! With the default `tokio` feature, [`Fork::run_async`] returns a
//! `tokio::net::UnixStream` and [`Process::wait_async`] waits on the
//! process's pidfd. `Fork::new` and `fork` never wait for the new process, so
//! they are fine to call from async code.
//!
//! ## Calling functions in a process: RPC
//!
//! A socket is enough to build anything, but most workers answer requests.
//! [`Fork::rpc`] turns any `Fork` into an RPC handle (AnyEvent::Fork::RPC in
//! Rust): the child runs a plain `fn` (one call at a time) or an `async fn`
//! (many at once), the parent calls it blocking or with `.await`, and
//! arguments, results and events are any serde values, descriptors
//! included.
//!
//! ```
//! fn square(n: u64) -> u64 {
//!     n * n
//! }
//!
//! let rpc = anyfork::Fork::new()?.rpc(square).start()?;
//! assert_eq!(rpc.call_blocking(12)?, 144);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The [`rpc`](mod@rpc) module explains choosing a backend and a serialiser, events,
//! failures, when the child exits, and what a call costs.
//!
//! ### Large messages
//!
//! Over a socket a message is copied into the kernel and out again, in
//! pieces as large as the socket's buffer, each piece a wake-up. A message
//! larger than 64 KiB ([`rpc::shared_memory::SPILL_AT`]) instead goes
//! through memory both processes map: the encoder writes it straight into
//! a sealed `memfd` region and the socket carries only where it is. A
//! 1 MiB round trip then costs less than the same bytes echoed by hand
//! over the socket (`anyfork bench rpc`). Nothing to set up: the region
//! is made when the first large message is sent, bounded by
//! [`RpcBuilder::shared_memory`](rpc::RpcBuilder::shared_memory), reused,
//! and returned with the handle; processes on pipes or other machines use
//! the socket. [`rpc::shared_memory`] describes the protocol and what
//! each side trusts.
//!
//! A plain `Vec<u8>` (or `&[u8]`) is one byte string on the wire, as
//! `serde_bytes::ByteBuf` is: to serde it is a sequence of numbers, which
//! codecs write and read one number at a time (20 to 190 times slower),
//! so anyfork recognises it on both sides (see the protocol page). One
//! thing is yours to get right: **memory that stays.** The value you send and the value you get back
//! are allocated by your program's `malloc`; glibc gives freed memory
//! back to the kernel depending on what was freed before, and a 1 MiB
//! buffer taken afresh costs 256 page faults (a few hundred µs, more than
//! the transport). A program with steady large messages keeps freed
//! memory (`GLIBC_TUNABLES=glibc.malloc.trim_threshold=…:glibc.malloc.mmap_threshold=…`,
//! `mallopt`, or jemalloc or mimalloc); anyfork's own buffers are reused
//! and never fault after the first call.
//!
//! ## Pools of workers
//!
//! One handle is one worker. A [`Pool`](pool::Pool) (AnyEvent::Fork::Pool in
//! Rust) forks several from one template, sends each call to the
//! least-loaded worker with room, queues the rest, and replaces workers
//! that die, retire or grow too old or too big; a dead worker fails only
//! the call it was running. A [`ServerPool`](pool::ServerPool) keeps N
//! long-running servers alive instead (the manual's pre-forked server
//! pool), with restarts, resizing and graceful reloads.
//!
//! ```
//! fn square(n: u64) -> u64 {
//!     n * n
//! }
//!
//! let pool = anyfork::Fork::new()?.pool(square).max(2).build()?;
//! let results: Vec<u64> = (0..8).map(|n| pool.call_blocking(n)).collect::<Result<_, _>>()?;
//! assert_eq!(results[7], 49);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The [`pool`](mod@pool) module explains dispatch, the manual's recipes for
//! `max`, `idle` and `load`, and what happens when things go wrong.
//!
//! ## Other machines
//!
//! A [`Remote`](remote::Remote) runs a command that reaches this program on
//! another machine (`ssh host`, `kubectl exec -i`, `docker exec -i`, `sudo`)
//! and gives you serving processes there, which you prepare, fork, run and
//! call exactly as here. One connection carries them all: a far template's
//! `fork` costs a round trip, not an ssh login (about 600 times less on
//! loopback, `anyfork bench remote`). A pool can take workers from several
//! machines at once ([`PoolBuilder::source`](pool::PoolBuilder::source)).
//!
//! ```no_run
//! fn double(n: u64) -> u64 {
//!     n * 2
//! }
//!
//! let remote = anyfork::remote::Remote::ssh("worker@compute-7")?;
//! let pool = remote.new_exec()?.pool(double).max(8).build()?;
//! assert_eq!(pool.call_blocking(21)?, 42);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The [`remote`](mod@remote) module covers serve mode on the far side,
//! shipping the executable when it is not installed there, the handshake
//! that refuses another build, and how failures are named.
//!
//! ## Cargo features
//!
//! | feature | default | gives |
//! |---|---|---|
//! | `tokio` | yes | [`Fork::run_async`], [`Process::wait_async`], async RPC calls and the async RPC backend |
//! | `cbor` | yes | the CBOR serialiser for RPC (cbor4ii) |
//! | `json` | yes | the JSON serialiser for RPC (serde_json) |
//! | `postcard` | yes | the postcard serialiser for RPC |
//! | `static-unwinder` | no | links libgcc's unwinder into your program instead of loading `libgcc_s.so.1` (on `*-linux-gnu`): every [`Fork::new_exec`] about 90 µs faster |
//!
//! `static-unwinder` changes how your whole program is linked, which is why
//! it is yours to choose: anyfork's build script points the linker's
//! `-lgcc_s` at gcc's `libgcc_eh.a`, the unwinder Rust itself links into
//! fully static programs. libc stays shared, so [`Fork::require`] and
//! everything else work as before; panics unwind as before. Without gcc's
//! `libgcc_eh.a` (another toolchain, another target) the feature does
//! nothing. The `anyfork` binary and examples are always linked this way.
//!
//! ## The protocol
//!
//! [`protocol`] describes the bytes on a process's connection, what a
//! serving process does with them, and the exit statuses it uses.
//!
//! ## What anyfork trusts
//!
//! - **The peer on a control socket is the parent.** A serving process does
//!   whatever its control socket asks: it runs functions of its executable,
//!   loads any library ([`Fork::require`]) and forks. Whoever holds the
//!   other end of that socket can make the process run code. Never hand a
//!   control socket (or a [`Fork::into_fh`] descriptor) to a less trusted
//!   program.
//! - **A serving process is never a privilege boundary.** It runs with the
//!   credentials of the program that made it. Serve mode is entered from an
//!   environment variable, so it is refused in a program started setuid,
//!   setgid or with file capabilities (`AT_SECURE`): such a program exits
//!   instead of serving when it finds the marker, and its own
//!   [`Fork::new_exec`] reports [`Error::Privileged`]; it can still call
//!   [`early`] first thing in `main` and fork its processes from there.
//! - **A process's word about itself is checked.** The pid a process
//!   received with [`Fork::new_from_fh`] claims for itself is accepted only
//!   when the kernel confirms it (`SCM_CREDENTIALS`), and such a process is
//!   never waited for or reaped here: it belongs to the program that created
//!   it.
//!
//! ## Typical problems
//!
//! - **Templates made from the program copy more than memory.** [`early`]
//!   and [`Template::here`] copy the program as it is. anyfork points every
//!   descriptor but stdin, stdout, stderr and the control socket at
//!   `/dev/null` in the copy (a worker gets nothing of the program's open
//!   files, and a static `File` or logger of the program writes nowhere
//!   instead of into a worker's socket), but objects that stand for
//!   something outside the process (a connection, a GUI toolkit's state) are
//!   copied as they are, and threads are not copied at all. Call `early`
//!   before such things exist, build only plain data before `here`, or prefer
//!   [`Fork::new`].
//! - **A worker inherits from its template, not from you.** A process
//!   forked from a template starts with the template's environment,
//!   working directory, umask, resource limits, signal mask and
//!   dispositions, user and group ids, nice value, cgroup and namespaces,
//!   as they were when the template started (the default template: at
//!   your first [`Fork::new`]), not as your program's are at the moment of
//!   the call. After `std::env::set_current_dir`, `set_var` or
//!   `setrlimit`, workers do not see the change. Pass what matters as
//!   arguments, or ask for it: [`Fork::caller_env_and_dir`] gives the
//!   worker your environment and directory as they are now (as
//!   `std::process::Command` gives a program it starts: what a worker
//!   that `exec`s wants), [`Fork::envs`] and [`Fork::current_dir`] choose
//!   them. [`Fork::new_exec`] starts from your program as it is now.
//! - **For starting programs, `std::process::Command` is as fast.** It uses
//!   `posix_spawn`, which does not copy your program either; the seed's
//!   "faster fork+exec" recipe (`examples/fork_exec.rs`) measured 0.82 to
//!   0.93 times its speed here. The recipe is for code of your own between
//!   fork and exec, which `Command::pre_exec` can only run by forking your
//!   whole program.
//! - **Exiting runs no destructors.** A process anyfork created ends with
//!   `_exit` after flushing stdout: no `atexit` handlers, no destructors of
//!   statics. That protects what the program shares with its copies (an X
//!   connection, a temporary directory); put cleanup that matters in your
//!   function.
//! - **A function value must be in the executable.** Passing a function
//!   that lives in a shared library by value is refused
//!   ([`Error::NotInExecutable`]); register it and run it by name.
//! - **Only one program may use a template.** A `Fork` made in one process
//!   does not work in another (a copy made with `Template::here`): it
//!   reports [`Error::ForeignFork`]. Hand processes over with
//!   [`Fork::into_fh`] instead.

#![doc = include_str!("../docs/failures.md")]
#![doc = include_str!("../docs/architecture.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod args;
mod cpus;
mod deadline;
mod default_template;
mod early;
mod error;
mod exec;
mod exec_spare;
mod fork;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod pool;
mod process;
mod proto;
#[doc = include_str!("../docs/protocol.md")]
pub mod protocol {}
mod reaper;
mod registry;
pub mod remote;
pub mod rpc;
mod sealed;
mod serve;
mod sys;
mod template;
mod transport;

pub use args::{Arg, ArgError, Args};
pub use cpus::ncpu;
pub use deadline::{default_timeout, set_default_timeout};
pub use early::early;
pub use error::{Ending, Error, Origin, ProcessName};
pub use exec_spare::keep_exec_spare;
pub use fork::Fork;
pub use process::{Process, Signal};
pub use proto::{ChildErrorKind, DEFAULT_MAX_FRAME_LEN, ProtocolError, Tag};
pub use registry::{FunctionRef, IntoInit, IntoRun, Outcome, registered_names};
pub use serve::{EXIT_FAILED, EXIT_PANICKED, EXIT_SERVE_FAILED, init};
pub use template::Template;

/// What the registration macros expand to; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::registry::{Entry, LibraryCall, REGISTRY, library_dispatch};
    pub use crate::rpc::registry::{RPC_REGISTRY, RpcEntry};
    pub use linkme;
}

// What the docs promise about threads, checked at compile time.
const _: () = {
    const fn send_and_sync<T: Send + Sync>() {}
    const fn send<T: Send>() {}
    send_and_sync::<Fork>();
    send_and_sync::<Process>();
    send_and_sync::<rpc::Rpc<u32, u32, u32>>();
    send::<rpc::Events<u32>>();
};

/// The README's example, compiled and run as a doctest so that it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
