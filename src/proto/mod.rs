//! The command protocol between a parent and a serving process.
//!
//! Every process anyfork creates starts by *serving*: it reads commands from
//! its control socket (a unix stream socket whose other end the parent holds)
//! and carries them out, until a `run` command hands the socket over to a user
//! function. This module owns the bytes on that socket.
//!
//! # Frames
//!
//! Both directions use the same frame:
//!
//! ```text
//!  0        1                 5
//! +--------+-----------------+---------------------------+
//! |  tag   | length (u32 BE) | payload (length bytes)    |
//! +--------+-----------------+---------------------------+
//! ```
//!
//! Parent → serving process:
//!
//! | tag | command      | payload                                                      |
//! |-----|--------------|--------------------------------------------------------------|
//! | `a` | send_arg     | the bytes                                                    |
//! | `h` | send_fh      | one marker byte `!`; the descriptor is attached (SCM_RIGHTS) |
//! | `e` | eval         | target: u32 len + target; count: u32; each arg: u32 len + bytes |
//! | `r` | require      | the library path                                             |
//! | `f` | fork         | one marker byte `!`; the new process's socket is attached    |
//! | `l` | limit        | u64: the largest frame the process accepts from now on       |
//! | `x` | run          | target (below); answered by `S`, then the socket is the function's |
//! | `i` | sync         | empty; answered by `I` once every earlier command was carried out |
//! | `c` | current dir  | the directory the function runs in (applied just before `run` calls it) |
//! | `v` | environment  | count: u32; each `NAME=value`: u32 len + bytes; replaces the environment just before `run` calls the function |
//! | `k` | parent death | u32: die when this pid stops being the parent (0: the parent now; `u32::MAX`: never), from `run` on |
//!
//! A target (what `eval` and `run` call) is either `0` followed by the
//! function's registered name, or `1`, a u64 offset of the function's
//! trampoline in the executable, four u64 identifying the executable file,
//! then the function's type name (for error messages).
//!
//! Serving process → parent:
//!
//! | tag | reply   | payload                                    |
//! |-----|---------|--------------------------------------------|
//! | `P` | pid     | u32 pid                                    |
//! | `S` | started | u32 pid: the function is about to be called; every later byte is the function's |
//! | `I` | in sync | u32 pid: the answer to `i`                 |
//! | `E` | error   | u8 [`ChildErrorKind`], then a UTF-8 message; the process exits |
//!
//! `P` is always a process's first frame (`S` repeats the pid for a parent
//! that received the process with `new_from_fh`, after `P` was read). It is sent unasked, before the
//! process first waits for a command, runs an initialiser, loads a library,
//! forks, replies or exits — in the common case in the same `send` as `S`,
//! so it costs no extra wake-up. The parent thus learns the pid of every
//! process it must reap, even of one that fails before it runs anything.
//! (The only frame that does not follow `P` is a template's `E` written into
//! the socket of a process it could not fork: there is no process.)
//!
//! # Descriptors
//!
//! A descriptor travels with the bytes of the frame that names it, as in
//! IO::FDPass: the sender attaches a batch of descriptors (at most 32) to
//! one `sendmsg` whose bytes contain their marker bytes, and the reader keeps
//! received descriptors in arrival order and takes one for each `h` or `f`
//! frame it parses. A marker frame whose descriptor has not arrived is an
//! error ([`ProtocolError::MissingFd`]), never a hang.
//!
//! # Never reading past `run`
//!
//! The parent may queue its own data right behind the run command (an RPC
//! client does). A serving process therefore never consumes a byte past the
//! `run` frame: it *peeks* at what is waiting (a peek without room for
//! control messages installs no descriptors), finds the complete frames in
//! it, stopping after `run`, and takes exactly those bytes, with their
//! descriptors, in one `recvmsg`. A frame too large to peek at is read on
//! its own, header then payload. When the `run` frame has been read, every
//! later byte is still in the socket for the function.
//!
//! Likewise a parent never reads past `S`: it asks for at most the bytes of
//! the `P` and `S` frames it still expects.
//!
//! # Bounds
//!
//! A length prefix is checked against the receiver's limit before anything is
//! allocated, and a payload buffer grows only as data arrives, so a huge
//! prefix followed by nothing costs nothing. Errors name the frame's tag.

//!
//! # Where it lives
//!
//! `wire` has the frame header, the tags and the errors; `commands` the
//! parent's queue of commands and their decoding; `reader` how a serving
//! process reads commands without reading past `run`; `replies` the
//! serving process's answers and how a parent reads them without reading
//! past `S`. The bytes move through a transport (`crate::transport`): a unix socket or a pair of byte streams.

mod commands;
mod reader;
mod replies;
#[cfg(test)]
mod tests;
pub(crate) mod wire;

pub(crate) use commands::{Command, Outbox, Target, decode_command, decode_target, encode_target};
pub(crate) use reader::{COMMAND_TAGS, FrameReader, REPLY_TAGS, ReadError, parse_header};
pub(crate) use replies::{PID_FRAME_LEN, Reply, ReplyBuffer, decode_reply, encode_reply};
pub use wire::{ChildErrorKind, DEFAULT_MAX_FRAME_LEN, ProtocolError, Tag};
pub(crate) use wire::{HEADER_LEN, MAX_REPLY_LEN, PROTOCOL_VERSION, SERVE_MARKER, tag};
