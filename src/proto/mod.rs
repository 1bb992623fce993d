//! The template protocol: the bytes between a parent and a serving
//! process, described for users in `docs/protocol.md` (the public
//! [`crate::protocol`] page).
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
pub(crate) use wire::{
    HEADER_LEN, MAX_REPLY_LEN, PROTOCOL_VERSION, marker_entry, marker_value, tag,
};
