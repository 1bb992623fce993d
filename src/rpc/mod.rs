//! RPC over a forked process: call a function in the child and get its
//! result, with events from the child to the parent (AnyEvent::Fork::RPC).
//!
//! # An example
//!
//! The child's function is a plain Rust function; the parent gets a handle
//! from any [`Fork`](crate::Fork) and calls it:
//!
//! ```
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! enum Command {
//!     Rmdir(String),
//!     Unlink(String),
//! }
//!
//! // Runs in the child, one call at a time.
//! fn run(command: Command) -> Result<(), String> {
//!     let result = match &command {
//!         Command::Rmdir(path) => std::fs::remove_dir(path),
//!         Command::Unlink(path) => std::fs::remove_file(path),
//!     };
//!     result.map_err(|e| e.to_string())
//! }
//!
//! let rpc = anyfork::Fork::new()?
//!     .rpc(run)
//!     .codec(anyfork::rpc::Codec::Cbor)
//!     .start()?;
//! let reply = rpc.call_blocking(Command::Rmdir("/nonexistent/1".into()))?;
//! assert!(reply.unwrap_err().contains("No such file"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The handle is [`Rpc`]; its builder [`RpcBuilder`] sets the serialiser,
//! the `init` and `done` functions, the buffer sizes and the handlers
//! (`on_event`, `on_error`, `on_destroy`), as the Perl module's `run`
//! arguments do. Calls made before the child is even running are queued and
//! never lost.
//!
//! # Choosing a backend
//!
//! The backend follows from the child's function.
//!
//! **Synchronous**: a plain `fn(Req) -> Rep`. The child reads a request,
//! calls the function, writes the reply, one call at a time. It needs
//! nothing but the function, keeps the child small (the worker above is an
//! idle forked process of a few hundred kilobytes), and reads requests
//! efficiently. A slow call holds up the ones behind it; if the parent is
//! slow to read replies, the child waits rather than piling them up.
//!
//! **Asynchronous**: an `async fn(Req) -> Rep`. The child runs a
//! single-threaded tokio runtime and starts every request as its own task
//! as soon as it arrives, so slow calls overlap, and the function can wait
//! for timers, sockets or other processes. Replies come back in whatever
//! order the calls finish, matched by id. The runtime costs memory in the
//! child, and every queued call runs at once: limit them in the child (a
//! semaphore) or in the parent (how many you call at once) if that matters.
//!
//! Both keep the manual's guarantee that events and replies reach the
//! parent in the order the child made them; see the next section for what
//! that means exactly.
//!
//! # In what order the parent sees replies and events
//!
//! The child's messages are read in the order it wrote them. A reply lands
//! in its call, and the task awaiting it (or the thread in
//! `call_blocking`) *takes* it when it runs; handlers (`on_event`,
//! `on_error`, `on_destroy`) are called by anyfork. Precisely:
//!
//! 1. Handlers run one at a time, in the order of the child's messages.
//! 2. A handler runs only after every earlier reply to a call someone was
//!    waiting for has been taken: the awaited future has returned it, or
//!    `call_blocking` has it. So `on_destroy` runs after the last reply has
//!    reached its caller, and the Perl idiom (wait for `on_destroy`, then
//!    exit) loses nothing.
//! 3. A reply the child sent after an event reaches its call only after
//!    that event's handler has returned.
//!
//! On a **current-thread** runtime this is the child's order exactly: a
//! task that awaits its calls one after another runs its code between two
//! awaits before the handler of an event the child sent between the two
//! replies, and the handler before the task gets the next reply. On a
//! **multi-threaded** runtime a handler may run on another thread while
//! the task goes on after its `await` (that is what such a runtime does);
//! it never runs before the `await` returned. If the task's work after the
//! await must finish first, wait for the task (its `JoinHandle`) rather
//! than for `on_destroy`.
//!
//! A call whose future nobody polls yet when its reply comes holds nothing
//! back. A future that was polled and then left aside (after a `select!`)
//! would hold handlers back: after a second they go ahead without it. The
//! [`Events`] stream yields events in the child's order; it does not wait
//! for replies (its reader pulls when it likes).
//!
//! # Choosing a serialiser
//!
//! Arguments, results and events are any serde types; the [`Codec`] turns
//! them into bytes. A function value gets [`Codec::Cbor`] unless you choose
//! ([`Codec::TYPED_DEFAULT`]): compact, fast, and it carries any serde
//! value, so a `#[derive(Serialize, Deserialize)]` struct just works. A
//! function named by string, whose messages are [`Octets`], gets
//! [`Codec::Raw`], the Perl module's: a flat list of octet strings, enough
//! for commands like `("rmdir", path)`; strings, byte vectors, numbers (as
//! decimal text) and unit enum variants work, nested data does not.
//! [`Codec::Json`] (readable) and [`Codec::Postcard`] (the most compact)
//! carry any serde value too.
//!
//! # Events, errors and the end
//!
//! The child calls [`event`] at any time; the parent gets the event through
//! `on_event` or, with [`RpcBuilder::event_stream`], from [`Rpc::events`].
//! [`flush`] waits until everything queued has been written.
//!
//! A panic in the child's function fails that call only, with the panic
//! message ([`Error::Failed`]); the next calls work. A child that dies fails
//! every outstanding call with [`Error::Ended`], which says how it died.
//! Dropping a call's future cancels it; [`Rpc::call_timeout`] and
//! [`Rpc::call_blocking_timeout`] give up after a time. A synchronous child
//! cannot abort a call it is computing: it computes on, and the calls
//! behind it wait. When an overrun means the child is stuck, build the
//! handle with [`RpcBuilder::kill_on_timeout`]: the child is then killed
//! and the other calls fail with [`Error::Killed`]. [`Rpc::kill`] kills it
//! at any time, and [`Rpc::shutdown`] lets the calls already made finish
//! within a grace period, then kills. Fatal errors also go to `on_error`.
//!
//! `tracing` events the child emits arrive in the parent's subscriber under
//! their own target (a filter such as `RUST_LOG=my_crate=debug` applies to
//! workers too), with the child's pid as the field `pid`.
//!
//! # When the child exits
//!
//! Dropping the [`Rpc`] handle sends what is queued and closes the socket
//! for writing. The **synchronous** backend then answers what it has and
//! exits normally, as a program reaching its end; if the parent dies, the
//! child exits the same way (or fails writing a reply nobody reads). The
//! **asynchronous** backend stops reading, finishes the calls it has,
//! writes everything out, and then runs the `done` function if one was
//! given (to keep a process alive for background work), or exits. Either
//! way `on_destroy` runs in the parent after the last reply.
//!
//! If the program itself ends, even by `SIGKILL`, the child dies with it,
//! also in the middle of a call (unlike the Perl module, whose busy
//! workers run on as orphans); [`RpcBuilder::die_with_parent`] turns that
//! off for a worker that must finish alone.
//!
//! # Passing file descriptors
//!
//! Unlike the Perl module, descriptors are part of calls: put an [`Fd`] in
//! the arguments, the result or an event, and the descriptor travels with
//! the message (`SCM_RIGHTS`), whatever the codec.
//!
//! ```
//! use std::io::Write;
//! use anyfork::rpc::Fd;
//!
//! // The child writes a greeting into whatever socket it is given.
//! fn greet((name, socket): (String, Fd)) -> usize {
//!     let mut socket = std::os::unix::net::UnixStream::from(socket.into_owned());
//!     socket.write(format!("hello {name}").as_bytes()).unwrap_or(0)
//! }
//!
//! let rpc = anyfork::Fork::new()?.rpc(greet).start()?;
//! let (mut ours, theirs) = std::os::unix::net::UnixStream::pair()?;
//! assert_eq!(rpc.call_blocking(("you".into(), Fd::new(theirs)))?, 9);
//! let mut said = [0u8; 9];
//! std::io::Read::read_exact(&mut ours, &mut said)?;
//! assert_eq!(&said, b"hello you");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # What a call costs
//!
//! `anyfork bench rpc` measures it against the same messages sent by hand
//! over a socket between two processes. A small blocking call on the
//! synchronous backend is two system calls in the parent (`sendto`,
//! `recvmsg`) and two in the child, as a hand-written round trip is; on a
//! 2-vCPU machine it takes about 10 µs when parent and child share a CPU
//! (8–10 µs by hand) and 40–50 µs across CPUs, the same as by hand,
//! because the cross-CPU wake-up dominates. With many calls in flight on
//! the asynchronous backend, requests and replies that are queued together
//! go out together, so small calls run at 360,000–480,000 a second, more
//! than a hand-written echo that writes each message on its own.
//!
//! A message larger than 64 KiB goes through shared memory (see
//! [`shared_memory`]): the encoder writes it into a region both processes
//! map and the socket carries 26 bytes. A 1 MiB byte string
//! (`serde_bytes::ByteBuf`, or a plain `Vec<u8>`, which anyfork moves the
//! same way) then makes its round trip in 0.45 to 0.65 times what the
//! same bytes echoed by hand over the socket take (raw codec to CBOR),
//! ahead of `ipc-channel`; a string costs more, because both sides check
//! its UTF-8, and JSON much more (it writes every byte as a number). The parent copies a child's
//! message out of the region before decoding it (so a child cannot change
//! bytes under the parent's decoder); the child reads its parent's
//! messages in place. Very large messages (16 MiB) are bound by memory
//! bandwidth: the socket's small pieces stay in the cache, a whole message
//! does not, and the hand-written echo wins there (about 1.4 times
//! faster), while anyfork still beats `ipc-channel`.
//!
//! Your program's `malloc` matters as much: glibc gives freed memory back
//! to the kernel depending on what was freed before, and faulting a 1 MiB
//! value in again costs more than moving it. Raising its thresholds
//! (`GLIBC_TUNABLES=glibc.malloc.trim_threshold=...:glibc.malloc.mmap_threshold=...`)
//! or using another allocator helps when large messages are the norm
//! (`anyfork bench` does the former). For bulk data that need not be
//! copied at all, pass a descriptor ([`Fd`]: a pipe, a memfd) instead.

mod budget;
mod byte_sequences;
#[cfg(feature = "cbor")]
mod cbor_errors;
mod client;
mod codec;
pub(crate) mod config;
mod delivery;
mod error;
mod fd;
pub(crate) mod frame;
pub(crate) mod function;
pub mod raw;
pub(crate) mod registry;
mod server;
pub mod shared_memory;
mod trace;
mod writer;

pub use client::{DEFAULT_BUFLEN, Events, Rpc, RpcBuilder};
pub(crate) use client::{NoticeHandler, RpcWatch, SubmittedCall, UntypedRpc};
pub use codec::{Codec, CodecError, Encoded, UnknownCodec};
pub(crate) use delivery::{Settled, SettledHook};
pub use error::Error;
pub use fd::Fd;
pub use function::{
    AsyncFn, ByName, IntoRpc, IntoRpcDone, IntoRpcInit, Octets, RpcFunction, SyncFn,
};
pub(crate) use writer::send_notice;
pub use writer::{EventError, event, flush};
