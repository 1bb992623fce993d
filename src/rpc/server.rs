//! The child side of RPC: the server a forked process runs, and the child's
//! API ([`event`], [`flush`]).
//!
//! The parent sends a configuration (see [`super::config`]) and runs
//! `anyfork::rpc::serve`. The server finds the function, calls `init` with
//! the process's arguments, and then answers requests:
//!
//! - **synchronous backend** (the function is a plain `fn`): reads a
//!   request, calls the function, writes the reply, one at a time. Events
//!   are written at once, so they and the replies reach the parent in the
//!   order they were made. At end-of-file (the parent dropped its handle, or
//!   died) the process exits normally.
//! - **asynchronous backend** (the function is an `async fn`): a
//!   single-threaded tokio runtime in the child starts every request as its
//!   own task as soon as it arrives (after a large request, over
//!   `SPILL_AT`, the task runs before the next request is decoded, so
//!   that large requests are not all held at once); replies and events go
//!   through one queue, written in the order they were queued. A cancelled
//!   call's task
//!   is aborted. At end-of-file the server stops reading, waits for the
//!   calls it has, writes everything out, and then runs `done` (if given)
//!   or exits.
//!
//! A call whose function panics, or whose arguments cannot be decoded, fails
//! alone: the parent gets a `failed` frame with the message and the server
//! goes on. A failure of the server itself (no such function, a failing
//! `init`) is a `failed` frame with id 0, after which the process exits.

#[cfg(feature = "tokio")]
use std::collections::HashMap;
#[cfg(feature = "tokio")]
use std::future::Future;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
#[cfg(feature = "tokio")]
use std::pin::Pin;
#[cfg(feature = "tokio")]
use std::task::{Context, Poll};
use std::time::Duration;

use super::codec::Codec;
use super::config::Config;
use super::frame::{self, Decoder, kind};
use super::function::{AsyncCall, Backend, DoneCall, InitCall, SyncCall};
use super::registry::{self, RpcFunctionEntry as RpcEntry};
use super::shared_memory::LazyRegion;
use super::writer::write_reply;
use super::writer::{Writer, fail_call, fail_panicked, flush, lock_writer, write_frame};
use crate::args::{Arg, Args};
use crate::proto::{Outbox, Target};
use crate::registry::{Lookup, panic_message};
use crate::transport::Transport;

/// A failure of the server itself: tell the parent (id 0) and give up.
fn fatal(message: String) -> String {
    let _ = write_frame(0, kind::FAILED, message.as_bytes(), Vec::new());
    let _ = flush();
    // A unix socket closed with unread input (requests the parent sent
    // ahead) resets the connection, and the parent may then never read the
    // message above. So: the end of our output, then what the parent sends
    // is read and dropped until it closes, having read the message (it
    // does at once), or a second passes.
    if let Some(writer) = lock_writer().as_ref() {
        let _ = writer.connection.shutdown_write();
        discard_until_closed(&writer.connection, Duration::from_secs(1));
    }
    message
}

/// Reads and drops what comes on `connection` until its end, or until
/// `patience` has passed.
fn discard_until_closed(connection: &Transport, patience: Duration) {
    let deadline = std::time::Instant::now() + patience;
    let mut buffer = [0u8; 4096];
    let mut fds = std::collections::VecDeque::new();
    loop {
        match connection.recv(&mut buffer, &mut fds, true) {
            Ok(0) => return,
            Ok(_) => fds.clear(),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero()
                    || crate::sys::poll::wait_readable(connection.read_fd(), Some(left)).is_err()
                {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

fn resolve<T: Copy>(
    target: &Target,
    what: &str,
    lookup: impl Fn(&str) -> Lookup<T>,
    cast: impl Fn(usize) -> T,
) -> Result<T, String> {
    match target {
        Target::Name(name) => match lookup(name) {
            Lookup::Found(f) => Ok(f),
            Lookup::Missing => Err(format!(
                "no {what} named `{name}` is registered in this program (register it with anyfork::rpc!)"
            )),
            Lookup::Ambiguous => Err(format!("more than one {what} is registered as `{name}`")),
        },
        Target::Offset { offset, exe, label } => crate::registry::resolve_offset(*offset, *exe)
            .map(cast)
            .ok_or_else(|| {
                format!("cannot call `{label}` by value: this process runs a different executable")
            }),
    }
}

/// Never called: a name is never cast to an address.
fn unreachable_value() -> RpcEntry {
    RpcEntry::Sync(|_, _, _| Err("an RPC function name was taken for an address".into()))
}

fn sync_at(addr: usize) -> SyncCall {
    // SAFETY: the parent computed this offset from a `SyncCall` trampoline
    // in this same executable (identity checked by `resolve_offset`) and
    // said so in the config (backend 1).
    unsafe { std::mem::transmute::<usize, SyncCall>(addr) }
}

fn async_at(addr: usize) -> AsyncCall {
    // SAFETY: as for `sync_at`, for an `AsyncCall` trampoline (backend 2).
    unsafe { std::mem::transmute::<usize, AsyncCall>(addr) }
}

fn init_at(addr: usize) -> InitCall {
    // SAFETY: as for `sync_at`, for an `InitCall` trampoline: the parent
    // only sends init offsets made by `IntoRpcInit`.
    unsafe { std::mem::transmute::<usize, InitCall>(addr) }
}

fn done_at(addr: usize) -> DoneCall {
    // SAFETY: as for `sync_at`, for a `DoneCall` trampoline made by
    // `IntoRpcDone`.
    unsafe { std::mem::transmute::<usize, DoneCall>(addr) }
}

/// The RPC server: the run function every RPC child runs.
fn serve(connection: Transport, args: Args) -> Result<(), String> {
    let mut items = args.into_vec();
    let config = match items.pop() {
        Some(Arg::Bytes(bytes)) => Config::decode(&bytes).map_err(|e| e.to_string()),
        _ => Err("the rpc server was started without its configuration".to_owned()),
    };
    let writer_connection = connection.try_clone().map_err(|e| e.to_string())?;
    *lock_writer() = Some(Writer {
        outbox: Outbox::for_transport(&writer_connection),
        connection: writer_connection,
        codec: config.as_ref().map_or(Codec::Raw, |c| c.codec),
        region: LazyRegion::new(config.as_ref().map_or(0, |c| c.shared_memory)),
        #[cfg(feature = "tokio")]
        wake: None,
    });
    let config = config.map_err(fatal)?;
    let function = match (&config.function, config.backend) {
        (Target::Name(_), _) => resolve(
            &config.function,
            "RPC function",
            registry::lookup_rpc,
            |_| unreachable_value(),
        ),
        (Target::Offset { .. }, Backend::Sync) => resolve(
            &config.function,
            "RPC function",
            |_| Lookup::Missing,
            |a| RpcEntry::Sync(sync_at(a)),
        ),
        (Target::Offset { .. }, Backend::Async) => resolve(
            &config.function,
            "RPC function",
            |_| Lookup::Missing,
            |a| RpcEntry::Async(async_at(a)),
        ),
        (Target::Offset { label, .. }, Backend::Unknown) => Err(format!(
            "the function value `{label}` came without its backend"
        )),
    }
    .map_err(fatal)?;
    let init = config
        .init
        .as_ref()
        .map(|t| resolve(t, "RPC init function", registry::lookup_rpc_init, init_at))
        .transpose()
        .map_err(fatal)?;
    let done = config
        .done
        .as_ref()
        .map(|t| resolve(t, "RPC done function", registry::lookup_rpc_done, done_at))
        .transpose()
        .map_err(fatal)?;
    super::trace::forward_to_parent(config.log_level);
    crate::sys::title::set(&format!("anyfork rpc {}", config.function.label()));
    // `init` runs first, with the process's arguments; it cannot send
    // events yet, as in the Perl module.
    if let Some(init) = init {
        let writer = lock_writer().take();
        let outcome = catch_unwind(AssertUnwindSafe(|| init(Args::from(items))));
        *lock_writer() = writer;
        let failure = match outcome {
            Ok(failure) => failure,
            Err(panic) => Some(format!("panicked: {}", panic_message(&*panic))),
        };
        if let Some(message) = failure {
            return Err(fatal(format!(
                "init `{}` failed: {message}",
                config.init.as_ref().map_or("", |t| t.label())
            )));
        }
    }
    match function {
        RpcEntry::Sync(call) => serve_sync(&config, call, connection),
        RpcEntry::Async(call) => serve_async(&config, call, done, connection),
    }
}

/// The server's run function, on whatever transport the process has.
fn serve_entry(connection: Transport, args: Args) -> Option<String> {
    serve(connection, args).err()
}

const _: () = {
    #[linkme::distributed_slice(crate::registry::REGISTRY)]
    static ENTRY: crate::registry::Entry =
        crate::registry::Entry::run_on_any_transport(SERVE, serve_entry);
};

/// The registered name of the server.
pub(crate) const SERVE: &str = "anyfork::rpc::serve";

fn serve_sync(config: &Config, call: SyncCall, connection: Transport) -> Result<(), String> {
    let mut decoder = Decoder::new(
        frame::TO_CHILD,
        config.max_frame,
        config.buflen_req as usize,
    )
    .accepting_shared_memory(config.shared_memory);
    loop {
        loop {
            // The request is decoded where it was read (in the buffer, or
            // in the parent's shared memory), and the result encoded
            // straight into the send queue or this side's shared memory.
            let frame = match decoder.next_borrowed() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => return Err(fatal(format!("bad request: {e}"))),
            };
            if frame.kind != kind::REQUEST {
                // A cancel arrives after its request, which this backend has
                // answered already; the parent ignores the reply.
                continue;
            }
            let (id, codec) = (frame.id, config.codec);
            let result = catch_unwind(AssertUnwindSafe(|| call(codec, frame.payload, frame.fds)));
            // The request's shared memory goes back before the reply
            // leaves, so that the parent finds it free for the next call.
            decoder.release_borrowed();
            let written = match result {
                Ok(Ok(reply)) => write_reply(id, &*reply, codec),
                Ok(Err(message)) => fail_call(id, &message),
                Err(panic) => fail_panicked(id, &*panic),
            };
            if let Err(e) = written {
                // The parent is gone: nobody to answer.
                return Err(format!("cannot reply: {}", crate::error::chain(&e)));
            }
        }
        match decoder.read_from(&connection, false) {
            Ok(0) => {
                return decoder
                    .at_end()
                    .map_err(|e| fatal(format!("bad request: {e}")));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(()),
            Err(e) => return Err(fatal(format!("reading requests: {e}"))),
        }
    }
}

/// A future that turns a panic into an `Err`.
#[cfg(feature = "tokio")]
struct CatchUnwind<F: ?Sized>(Pin<Box<F>>);

#[cfg(feature = "tokio")]
impl<F: Future + ?Sized> Future for CatchUnwind<F> {
    type Output = std::thread::Result<F::Output>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match catch_unwind(AssertUnwindSafe(|| self.0.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

#[cfg(not(feature = "tokio"))]
fn serve_async(_: &Config, _: AsyncCall, _: Option<DoneCall>, _: Transport) -> Result<(), String> {
    Err(fatal(
        "this program was built without the `tokio` feature, which the asynchronous backend needs"
            .into(),
    ))
}

#[cfg(feature = "tokio")]
fn serve_async(
    config: &Config,
    call: AsyncCall,
    done: Option<DoneCall>,
    connection: Transport,
) -> Result<(), String> {
    use std::cell::RefCell;
    use std::rc::Rc;
    use std::sync::Arc;
    use tokio::sync::Notify;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fatal(format!("cannot start a tokio runtime: {e}")))?;
    let wake = Arc::new(Notify::new());
    if let Some(writer) = lock_writer().as_mut() {
        writer.wake = Some(wake.clone());
    }
    let local = tokio::task::LocalSet::new();
    let codec = config.codec;
    let (max_frame, buflen) = (config.max_frame, config.buflen_req as usize);
    let shared_memory = config.shared_memory;
    local.block_on(&runtime, async move {
        let readiness = crate::transport::AsyncReadiness::new(&connection)
            .map_err(|e| fatal(format!("cannot watch the connection: {e}")))?;

        // The writer task: writes whatever is queued, in order.
        let writer_ready = readiness.clone();
        let writer_wake = wake.clone();
        let writer = tokio::task::spawn_local(async move {
            loop {
                let sent = {
                    let mut guard = lock_writer();
                    let Some(writer) = guard.as_mut() else { return };
                    if writer.outbox.is_empty() {
                        None
                    } else {
                        let connection = &writer.connection;
                        Some(writer.outbox.send_some(connection, true))
                    }
                };
                match sent {
                    None => writer_wake.notified().await,
                    Some(Ok(_)) => {}
                    Some(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                        if let Ok(mut ready) = writer_ready.writable().await {
                            ready.clear_ready();
                        }
                    }
                    Some(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                    Some(Err(e)) => {
                        tracing::debug!("anyfork rpc server: cannot write to the parent: {e}");
                        return;
                    }
                }
            }
        });

        // Calls in progress, for cancelling, and a count for the end.
        let calls: Rc<RefCell<HashMap<u32, tokio::task::AbortHandle>>> = Rc::default();
        let idle = Rc::new(Notify::new());
        let mut decoder =
            Decoder::new(frame::TO_CHILD, max_frame, buflen).accepting_shared_memory(shared_memory);
        'read: loop {
            loop {
                let frame = match decoder.next_borrowed() {
                    Ok(Some(frame)) => frame,
                    Ok(None) => break,
                    Err(e) => return Err(fatal(format!("bad request: {e}"))),
                };
                let id = frame.id;
                if frame.kind == kind::CANCEL {
                    // Every request is answered once: an aborted call with
                    // `failed`, so the parent can forget it.
                    if let Some(task) = calls.borrow_mut().remove(&id) {
                        task.abort();
                        let _ = write_frame(id, kind::FAILED, b"cancelled", Vec::new());
                        idle.notify_one();
                    }
                    continue;
                }
                // The request is decoded here, where it was read; the call
                // runs as a task of its own.
                let large = frame.payload.len() > crate::rpc::shared_memory::SPILL_AT;
                let future = match catch_unwind(AssertUnwindSafe(|| {
                    call(codec, frame.payload, frame.fds)
                })) {
                    Ok(future) => future,
                    Err(panic) => {
                        let _ = fail_panicked(id, &*panic);
                        continue;
                    }
                };
                let (calls_done, idle_done) = (calls.clone(), idle.clone());
                let task = tokio::task::spawn_local(async move {
                    let result = CatchUnwind(future).await;
                    calls_done.borrow_mut().remove(&id);
                    let _ = match result {
                        Ok(Ok(reply)) => write_reply(id, &*reply, codec),
                        Ok(Err(message)) => fail_call(id, &message),
                        Err(panic) => fail_panicked(id, &*panic),
                    };
                    idle_done.notify_one();
                });
                // The task runs only once this loop yields, so it is in the
                // map before it can remove itself.
                calls.borrow_mut().insert(id, task.abort_handle());
                if large {
                    // Let it run before the next request is decoded: many
                    // large requests decoded at once would hold them all
                    // (out of the CPU's caches) before the first reply.
                    tokio::task::yield_now().await;
                }
            }
            let mut ready = match readiness.readable().await {
                Ok(ready) => ready,
                Err(e) => return Err(fatal(format!("reading requests: {e}"))),
            };
            match ready.try_io(|_| decoder.read_from(&connection, true)) {
                Ok(Ok(0)) => break 'read,
                Ok(Ok(_)) => {}
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionReset => break 'read,
                Ok(Err(e)) => return Err(fatal(format!("reading requests: {e}"))),
                Err(_would_block) => {}
            }
        }
        decoder
            .at_end()
            .map_err(|e| fatal(format!("bad request: {e}")))?;
        // End of requests: finish the calls we have, write everything out.
        while !calls.borrow().is_empty() {
            idle.notified().await;
        }
        loop {
            let empty = lock_writer().as_ref().is_none_or(|w| w.outbox.is_empty());
            if empty || writer.is_finished() {
                break;
            }
            tokio::task::yield_now().await;
        }
        if let Some(done) = done {
            done().await;
        }
        Ok(())
    })
}
