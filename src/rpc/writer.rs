//! What an RPC child sends its parent, from any thread: replies, events,
//! failures and forwarded log records, queued in one [`Outbox`] in the
//! order they were made and written by the server loop (synchronous
//! backend: at once; asynchronous backend: by its writer task).

use std::io;
use std::os::fd::OwnedFd;
use std::sync::{Mutex, PoisonError};

use serde::Serialize;

use super::codec::{Codec, CodecError};
use super::frame::{self, kind};
use super::shared_memory::LazyRegion;
use crate::proto::Outbox;
use crate::registry::panic_message;
use crate::transport::Transport;

/// How the process's frames reach the parent: shared by the server loop,
/// [`event`], [`flush`] and log forwarding, from any thread.
pub(super) struct Writer {
    pub(super) connection: Transport,
    pub(super) outbox: Outbox,
    pub(super) codec: Codec,
    /// Where large replies and events go (see [`super::shared_memory`]).
    pub(super) region: LazyRegion,
    /// Set for the async backend: the writer task to wake.
    #[cfg(feature = "tokio")]
    pub(super) wake: Option<std::sync::Arc<tokio::sync::Notify>>,
}

static WRITER: Mutex<Option<Writer>> = Mutex::new(None);

/// Why [`event`] could not send.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// Not inside an RPC server (or before it started: `init` cannot send
    /// events, as in the Perl module).
    #[error("events can only be sent by a running RPC server")]
    NotServing,
    /// The event could not be encoded.
    #[error("cannot encode the event")]
    Encode(#[from] CodecError),
    /// Writing to the parent failed.
    #[error("cannot send the event")]
    Io(#[from] io::Error),
}

pub(super) fn lock_writer() -> std::sync::MutexGuard<'static, Option<Writer>> {
    WRITER.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Queues (async backend) or writes (sync backend) one frame.
pub(super) fn write_frame(
    id: u32,
    frame_kind: u8,
    payload: &[u8],
    fds: Vec<OwnedFd>,
) -> Result<(), EventError> {
    let mut guard = lock_writer();
    let writer = guard.as_mut().ok_or(EventError::NotServing)?;
    frame::encode(&mut writer.outbox, id, frame_kind, payload, fds)
        .map_err(|e| EventError::Io(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
    send_queued(writer)
}

/// Queues (and with the sync backend, writes) the reply to call `id`,
/// encoding the result straight into the queue or the shared region; a
/// result that cannot be encoded fails the call instead.
pub(super) fn write_reply(
    id: u32,
    reply: &dyn super::function::EncodeReply,
    codec: super::Codec,
) -> Result<(), EventError> {
    let failure = {
        let mut guard = lock_writer();
        let writer = guard.as_mut().ok_or(EventError::NotServing)?;
        match frame::encode_with(
            &mut writer.outbox,
            Some(&writer.region),
            id,
            kind::REPLY,
            |out| reply.encode_into(codec, out),
        ) {
            Ok(Ok(())) => return send_queued(writer),
            Ok(Err(message)) => message,
            Err(e) => format!("cannot send the result: {e}"),
        }
    };
    fail_call(id, &failure)
}

/// Hands what was queued to the writer task (async backend), or writes it
/// now (sync backend).
fn send_queued(writer: &mut Writer) -> Result<(), EventError> {
    #[cfg(feature = "tokio")]
    if let Some(wake) = &writer.wake {
        wake.notify_one();
        return Ok(());
    }
    write_out(writer)?;
    Ok(())
}

/// Writes everything queued, waiting as needed.
pub(super) fn write_out(writer: &mut Writer) -> io::Result<()> {
    loop {
        match writer.outbox.send_some(&writer.connection, true) {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                writer.connection.wait_writable_until(None)?;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Sends an event to the parent, where it reaches the handle's `on_event`
/// (or its event stream). Any serde value, encoded with the handle's codec.
///
/// Events and replies reach the parent in the order the child made them.
/// With the asynchronous backend the event is queued; call [`flush`] to wait
/// until it is written (for example just before exiting).
///
/// ```no_run
/// fn work(n: u64) -> u64 {
///     let _ = anyfork::rpc::event(&("progress", n));
///     n * 2
/// }
/// anyfork::rpc!(work);
/// ```
///
/// # Errors
///
/// [`EventError::NotServing`] outside a running RPC server; an encoding or
/// write error otherwise.
pub fn event<E: Serialize + ?Sized>(event: &E) -> Result<(), EventError> {
    let mut guard = lock_writer();
    let writer = guard.as_mut().ok_or(EventError::NotServing)?;
    let codec = writer.codec;
    match frame::encode_with(
        &mut writer.outbox,
        Some(&writer.region),
        0,
        kind::EVENT,
        |out| codec.encode_to_sink(event, out),
    ) {
        Ok(Ok(())) => send_queued(writer),
        Ok(Err(e)) => Err(EventError::Encode(e)),
        Err(e) => Err(EventError::Io(io::Error::new(
            io::ErrorKind::InvalidInput,
            e,
        ))),
    }
}

/// Waits until everything queued for the parent has been written. Returns
/// false if it cannot be written (the parent is gone); ignoring that is
/// usually right.
///
/// Only the asynchronous backend queues; with the synchronous one this
/// returns at once. It blocks the child's runtime meanwhile, as in the Perl
/// module.
pub fn flush() -> bool {
    let mut guard = lock_writer();
    match guard.as_mut() {
        Some(writer) => write_out(writer).is_ok(),
        None => true,
    }
}

/// Sends a notice (a word for the process's manager, such as a pool).
pub(crate) fn send_notice(word: &[u8]) -> Result<(), EventError> {
    write_frame(0, kind::NOTICE, word, Vec::new())
}

/// Sends a log record (tracing forwarding).
pub(crate) fn send_log(level: u8, target: &str, message: &str) {
    let target = &target.as_bytes()[..target.len().min(u16::MAX as usize)];
    let mut payload = Vec::with_capacity(3 + target.len() + message.len());
    payload.push(level);
    payload.extend_from_slice(&(target.len() as u16).to_be_bytes());
    payload.extend_from_slice(target);
    payload.extend_from_slice(message.as_bytes());
    let _ = write_frame(0, kind::LOG, &payload, Vec::new());
}

/// Fails call `id` with `message`.
pub(super) fn fail_call(id: u32, message: &str) -> Result<(), EventError> {
    write_frame(id, kind::FAILED, message.as_bytes(), Vec::new())
}

/// Fails call `id` with the message of the panic that ended it.
pub(super) fn fail_panicked(id: u32, panic: &(dyn std::any::Any + Send)) -> Result<(), EventError> {
    fail_call(id, &format!("panicked: {}", panic_message(panic)))
}
