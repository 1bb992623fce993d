//! The parent side of RPC: [`RpcBuilder`], [`Rpc`], [`Events`].
//!
//! # Who reads the socket
//!
//! One reader at a time takes replies, events and log records off the
//! socket, in order, and hands each to its call or handler:
//!
//! - In a program without a tokio runtime, the reader is a caller: a
//!   blocking call that finds nobody reading reads itself until its reply
//!   has come, then passes the role on. A round trip thus costs what a raw
//!   socket round trip costs, with no extra thread wake-up.
//! - Inside a tokio runtime (or after the first async call), a driver task
//!   owns the socket: it writes queued requests in batches and reads
//!   continuously, so events arrive even when no call is waiting. Blocking
//!   calls then wait for the driver.
//!
//! # Ending
//!
//! Dropping the [`Rpc`] handle sends every queued request and then shuts
//! the socket for writing: the child answers what it has and exits. When
//! the child's end closes with no call outstanding, `on_destroy` runs; with
//! calls outstanding, they fail with [`Error::Ended`] naming how the process
//! ended, and `on_error` runs. Without a runtime, a short-lived thread
//! reads the remaining replies and events after the drop when anything
//! still needs them.

mod builder;
mod core;
mod dispatch;
#[cfg(feature = "tokio")]
mod driver;
mod event_queue;
mod events;
mod handle;
mod pending;
mod reading;
mod untyped;

use std::os::fd::OwnedFd;

use crate::rpc::error::Error;

pub use builder::RpcBuilder;
pub use events::Events;
pub use handle::Rpc;
pub(crate) use untyped::{RpcWatch, SubmittedCall, UntypedRpc};

/// The manual's default buffer length: `512 - 16`.
pub const DEFAULT_BUFLEN: usize = 512 - 16;

pub(super) type EventHandler = Box<dyn FnMut(Vec<u8>, Vec<OwnedFd>) + Send>;
pub(super) type ErrorHandler = Box<dyn FnMut(&Error) + Send>;
pub(super) type DestroyHandler = Box<dyn FnOnce() + Send>;
pub(crate) type NoticeHandler = Box<dyn FnMut(&[u8]) + Send>;
