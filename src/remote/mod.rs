//! Processes on other machines: the same [`Fork`](crate::Fork) and
//! [RPC](mod@crate::rpc) over ssh, `kubectl exec`, `docker exec`, `sudo`, or
//! any command whose stdin and stdout reach a program linking anyfork
//! (AnyEvent::Fork::Remote for Rust, and more).
//!
//! # Why
//!
//! When one machine is not enough, the machines and tools you already have
//! are enough: anything that runs a command with its stdin and stdout
//! connected to you. [`Remote`] runs such a command, finds your program at
//! the other end (started in *serve mode*), and gives you
//! [`new_exec`](Remote::new_exec): a serving process there, which you
//! prepare, fork and run exactly as one here.
//!
//! AnyEvent::Fork::Remote opens one ssh session per process. Here one
//! connection carries every process: the far end runs a **relay** that
//! starts serving processes and carries each one's socket as a *channel*
//! of the connection, flow-controlled so that a slow process does not stall
//! the others. A remote template's [`fork`](crate::Fork::fork) costs one
//! round trip on that connection, not an ssh login.
//!
//! # How
//!
//! ```
//! use std::io::{Read, Write};
//! use std::os::unix::net::UnixStream;
//! use std::process::Command;
//! use anyfork::remote::{Remote, serve_arg};
//!
//! fn greet(mut socket: UnixStream, mut args: anyfork::Args) -> std::io::Result<()> {
//!     let name = args.string()?;
//!     write!(socket, "hello {name} from {}", std::process::id())
//! }
//!
//! // Any command that reaches the program in serve mode: here this very
//! // executable on this machine; `Remote::ssh("user@host")` for another.
//! let mut command = Command::new(std::env::current_exe()?);
//! command.arg(serve_arg());
//! let remote = Remote::command(command)?;
//!
//! let template = remote.new_exec()?.send_arg("world");
//! for _ in 0..3 {
//!     // A fork of the far template: one round trip, no new connection.
//!     let worker = template.fork()?;
//!     let far_pid = worker.pid()?; // its pid over there, as it says it
//!     let mut socket = worker.run(greet)?;
//!     let mut reply = String::new();
//!     socket.read_to_string(&mut reply)?;
//!     assert_eq!(reply, format!("hello world from {far_pid}"));
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! What is the same as for a process here: `send_arg`, `eval` (function
//! values and registered names both work: the handshake made sure the far
//! side runs the same build), `require` (of libraries *there*), `fork`,
//! `run` and `run_async` (the function gets a unix socket on its machine;
//! you get one here, which the connection's pump carries), every
//! [RPC](mod@crate::rpc) backend and codec, and [pools](mod@crate::pool) (see
//! [`PoolBuilder::source`](crate::pool::PoolBuilder::source)). What differs:
//! `send_fh` is refused ([`crate::Error::NoDescriptors`]); `pid` is the pid
//! on the far machine and there is no [`Process`](crate::Process) handle
//! ([`crate::Error::NotLocal`]); [`Remote::exit_status`] reports how a far
//! process ended.
//!
//! # Serve mode on the far side
//!
//! The far side is your program, started with [`serve_arg`]
//! (`--anyfork-serve=mux:1`) as its first argument, or with
//! `ANYFORK_SERVE=mux:1` in its environment (`env ANYFORK_SERVE=mux:1
//! prog`). Either way it never reaches `main`, so programs that parse their
//! own arguments are not disturbed. It must be the same build: the
//! handshake compares the protocol versions, the [`build_id`] and the
//! target triple, and refuses a mismatch ([`Error::Skew`]) naming both
//! sides. If your program is not installed there,
//! [`Builder::ship_executable`] copies it over (see [`ship`]).
//!
//! The far side exits when its connection ends (the parent exits, ssh
//! drops, or the parent falls silent past its keepalive), and kills what
//! it started that did not exit by itself within two seconds.
//!
//! # Transports
//!
//! - **ssh**: [`Remote::ssh`]`("user@host")` runs `ssh -T -o BatchMode=yes
//!   user@host -- 'prog' --anyfork-serve=mux:1` with your ssh configuration,
//!   keys and agent; [`Builder::ssh_option`] adds options (`-p 2222`, `-i
//!   key`, `-o ServerAliveInterval=5`).
//! - **a jump host**: `.ssh_option("-J").ssh_option("bastion")`, or
//!   `ProxyJump` in `~/.ssh/config`.
//! - **kubectl**: `Command::new("kubectl").args(["exec", "-i", "pod", "--",
//!   "/app/prog", &serve_arg()])` (`-i`, not `-t`: a terminal would mangle
//!   the bytes).
//! - **docker**: `Command::new("docker").args(["exec", "-i", "box",
//!   "/app/prog", &serve_arg()])`.
//! - **sudo**: `Command::new("sudo").args(["-u", "nobody", "/usr/bin/prog",
//!   &serve_arg()])`: processes as another user on this machine.
//! - **chained**: `ssh host sudo -u app /srv/prog --anyfork-serve=mux:1`:
//!   the argument goes through every layer untouched.
//! - **anything else**: [`Remote::from_streams`] on a pair of descriptors
//!   you connected yourself.
//!
//! # The protocol
//!
//! The connection carries the frames described in
//! [the protocol page](crate::protocol#remote-connections): each side's
//! hello first, then data, credit and control frames per channel. The
//! template protocol and RPC run inside the channels unchanged.
//!
//! # Failures are named
//!
//! A connection that cannot be made says why ([`Error`]): ssh refusing
//! (its exit status 255 and its stderr), the program missing (127) or not
//! executable (126) there, something else answering, another build. A
//! connection lost later (the far side died, the network dropped, the
//! keepalive heard nothing) fails the processes on it: a process still
//! being prepared reports it as its answer ([`crate::Error::Refused`] with
//! the reason), a running one sees its socket close.

mod build_id;
mod builder;
mod command_line;
mod connection;
mod error;
mod handshake;
mod pump;
pub(crate) mod relay;
pub mod ship;
mod stderr;
mod wire;

pub use build_id::{TARGET, build_id};
pub use builder::Builder;
pub use command_line::serve_arg;
pub use connection::Remote;
pub use error::Error;
pub use wire::Hello;
