//! The state a handle shares with its calls, its reader and its driver:
//! the connection, the calls in flight, the handlers; submitting requests
//! and what happens when the handle is dropped.

use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::event_queue::EventQueue;
use super::{DestroyHandler, ErrorHandler, EventHandler, NoticeHandler};
use crate::error::ProcessName;
use crate::fork::Link;
use crate::rpc::codec::Codec;
use crate::rpc::delivery::{Delivery, Outcome, Slot};
use crate::rpc::error::Error;
use crate::rpc::frame::{self, Decoder, kind};
use crate::rpc::shared_memory::LazyRegion;
use crate::transport::Transport;

pub(super) struct Handlers {
    pub(super) on_event: Option<EventHandler>,
    pub(super) on_error: Option<ErrorHandler>,
    pub(super) on_destroy: Option<DestroyHandler>,
    pub(super) events: Option<Arc<EventQueue>>,
    /// Notices (`retire`) for whoever manages the process: run as they are
    /// read, ahead of the replies and events read before them.
    pub(super) on_notice: Option<NoticeHandler>,
    /// Events are `Octets`, so errors can go to `on_event` as Perl does.
    pub(super) raw_events: bool,
}

/// How the handle treats its child.
pub(super) struct Rules {
    /// Kill the child when a call times out.
    pub(super) kill_on_timeout: bool,
    /// The child runs one call at a time, in order.
    pub(super) sequential: bool,
}

/// What the parent's side of the connection reads and sends.
pub(super) struct Limits {
    /// The first size of the read buffer.
    pub(super) buflen: usize,
    /// The largest frame accepted.
    pub(super) max_frame: u64,
    /// The shared-memory region each side may make (0: none).
    pub(super) shared_memory: u64,
}

/// A request buffer grown past this by one large request is given back.
pub(super) const KEEP_SCRATCH: usize = 8 << 20;

/// How far the connection is.
pub(super) enum Phase {
    /// Waiting for the serve protocol's `S` (pid first).
    Starting,
    Running,
    Closed(Option<Error>),
}

pub(super) struct State {
    pub(super) link: Link,
    pub(super) phase: Phase,
    /// Calls waiting for their reply, each with the stream position just
    /// past its request (sent if the outbox has sent that far).
    pub(super) pending: HashMap<u32, (Arc<Slot>, u64)>,
    /// Calls given up whose reply is still to come, each with its stream
    /// position as in `pending`.
    pub(super) cancelled: HashMap<u32, u64>,
    pub(super) next_id: u32,
    /// Someone holds the reader role.
    pub(super) reading: bool,
    /// A driver task holds it for good.
    pub(super) driver: bool,
    /// Threads asleep on `Core::wake`.
    pub(super) waiters: usize,
    pub(super) handle_dropped: bool,
    pub(super) write_shut: bool,
}

impl State {
    /// For a child that runs calls one at a time in order: the call it is
    /// running, as (stream position past its request, id): the oldest
    /// delivered call without a reply, cancelled or not.
    pub(super) fn running_call(&mut self) -> Option<(u64, u32)> {
        let sent = self.link.outbox().sent_total();
        self.pending
            .iter()
            .map(|(id, (_, end))| (*end, *id))
            .chain(self.cancelled.iter().map(|(id, end)| (*end, *id)))
            .filter(|(end, _)| *end <= sent)
            .min()
    }
}

pub(super) struct Core {
    pub(super) state: Mutex<State>,
    /// Wakes blocking waiters: a reply arrived, or the reader role is free.
    pub(super) wake: Condvar,
    /// The connection (a duplicate of the link's: reading needs no state
    /// lock).
    pub(super) connection: Transport,
    pub(super) decoder: Mutex<Decoder>,
    /// Where requests are encoded.
    pub(super) scratch: Mutex<Vec<u8>>,
    /// Where large requests are encoded (see [`crate::rpc::shared_memory`]).
    pub(super) region: LazyRegion,
    pub(super) handlers: Mutex<Handlers>,
    /// What the parent's code is to see, in the child's order.
    pub(super) delivery: Delivery,
    /// Whether anything waits for what the child sends after the handle is
    /// dropped (fixed at start, so `release` needs no handler lock).
    pub(super) listening: bool,
    pub(super) codec: Codec,
    pub(super) function: String,
    /// Kill the child when a call times out.
    pub(super) kill_on_timeout: bool,
    /// The child runs one call at a time, in order (the synchronous
    /// backend): the oldest unanswered call is the one running.
    pub(super) sequential: bool,
    #[cfg(feature = "tokio")]
    pub(super) driver_wake: tokio::sync::Notify,
}

/// What one read from the socket brought.
pub(super) enum ReadResult {
    Data,
    End,
    Nothing,
}

/// What a frame read from the socket calls for (decided under the state
/// lock, done without it).
pub(super) enum Action {
    Fulfil(Arc<Slot>, Outcome),
    Event(Vec<u8>, Vec<OwnedFd>),
    Log(Vec<u8>),
    Notice(Vec<u8>),
    /// The process said its pid, or the server that it started.
    Started,
    Nothing,
}

impl Core {
    pub(super) fn new(
        link: Link,
        function: String,
        codec: Codec,
        limits: Limits,
        handlers: Handlers,
        rules: Rules,
    ) -> Result<Core, crate::Error> {
        let transport = link.transport().ok_or_else(|| crate::Error::Broken {
            process: link.name().clone(),
            cause: "no connection".into(),
        })?;
        let io = |source: io::Error| crate::Error::Io {
            process: link.name().clone(),
            doing: "preparing the RPC connection".into(),
            source,
        };
        // A socket blocks: every read or write that must not wait says so
        // itself (`MSG_DONTWAIT`), and a blocking reader can sleep in its
        // read. (A pair of streams waits in `poll` instead.)
        transport.set_blocking().map_err(io)?;
        let connection = transport.try_clone().map_err(io)?;
        let mut decoder = Decoder::new(frame::TO_PARENT, limits.max_frame, limits.buflen)
            .after_serve_replies()
            .accepting_shared_memory(limits.shared_memory);
        if link.verifies_pids() {
            decoder = decoder.tracking_senders();
        }
        let listening = handlers.on_destroy.is_some()
            || handlers.on_event.is_some()
            || handlers.events.is_some();
        let ordered = handlers.on_destroy.is_some()
            || handlers.on_event.is_some()
            || handlers.on_error.is_some();
        Ok(Core {
            state: Mutex::new(State {
                link,
                phase: Phase::Starting,
                pending: HashMap::new(),
                cancelled: HashMap::new(),
                next_id: 1,
                reading: false,
                driver: false,
                waiters: 0,
                handle_dropped: false,
                write_shut: false,
            }),
            wake: Condvar::new(),
            connection,
            decoder: Mutex::new(decoder),
            scratch: Mutex::new(Vec::new()),
            region: LazyRegion::new(limits.shared_memory),
            handlers: Mutex::new(handlers),
            delivery: Delivery::new(ordered),
            listening,
            codec,
            function,
            kill_on_timeout: rules.kill_on_timeout,
            sequential: rules.sequential,
            #[cfg(feature = "tokio")]
            driver_wake: tokio::sync::Notify::new(),
        })
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn process_name(&self) -> ProcessName {
        self.lock().link.name().clone()
    }

    pub(super) fn closed_error(&self, state: &State) -> Option<Error> {
        match &state.phase {
            Phase::Closed(Some(error)) => {
                let mut error = error.clone();
                if let Error::Ended {
                    delivered, started, ..
                } = &mut error
                {
                    // A call made after the end was never sent.
                    *delivered = Some(false);
                    *started = None;
                }
                Some(error)
            }
            Phase::Closed(None) => Some(Error::Ended {
                function: self.function.clone(),
                process: state.link.name().clone(),
                ending: state.link.ending(Duration::ZERO),
                outstanding: 0,
                // A call made after the end was never sent.
                delivered: Some(false),
                started: None,
            }),
            _ => None,
        }
    }

    pub(super) fn scratch(&self) -> MutexGuard<'_, Vec<u8>> {
        self.scratch.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends what is queued, without waiting; shuts the socket for writing
    /// once everything is out after the handle was dropped.
    pub(super) fn send_queued(&self) {
        let mut state = self.lock();
        // `connection` is the link's: writing through it needs no borrow
        // of the link.
        loop {
            match state.link.outbox().send_some(&self.connection, true) {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The reader finishes when the socket can take more; a
                // broken socket shows up there as end-of-file.
                Err(_) => return,
            }
        }
        if state.handle_dropped && !state.write_shut {
            state.write_shut = true;
            // Every copy of a pair of streams must end for the child to see
            // the end.
            let _ = self.connection.shutdown_write();
            if let Some(transport) = state.link.transport() {
                let _ = transport.shutdown_write();
            }
        }
    }

    pub(super) fn wants_write(&self) -> bool {
        let mut state = self.lock();
        state.link.outbox().unsent() > 0 || (state.handle_dropped && !state.write_shut)
    }

    /// Marks a call as given up: its reply will be ignored, and the child
    /// is told.
    pub(super) fn cancel(&self, id: u32) {
        let mut state = self.lock();
        if matches!(state.phase, Phase::Closed(_)) {
            return;
        }
        let Some((_, end)) = state.pending.remove(&id) else {
            return;
        };
        state.cancelled.insert(id, end);
        let _ = frame::encode(state.link.outbox(), id, kind::CANCEL, &[], Vec::new());
        let driver = state.driver;
        drop(state);
        self.send_or_wake(driver);
    }

    /// After queueing a frame: the driver task, if one owns the connection,
    /// sends it; otherwise it goes now.
    pub(super) fn send_or_wake(&self, driver: bool) {
        if driver {
            #[cfg(feature = "tokio")]
            self.driver_wake.notify_one();
        } else {
            self.send_queued();
        }
    }

    /// A call gave up after `timeout`: the error for it, after killing the
    /// child if the handle was built to (waiting for its pid only where
    /// blocking is allowed).
    pub(super) fn timed_out(&self, timeout: Duration, may_block: bool) -> Error {
        if self.kill_on_timeout {
            let why = format!("`{}` did not answer within {timeout:?}", self.function);
            if may_block {
                let _ = self.await_pid(Instant::now() + Duration::from_secs(5));
            }
            if let Err(e) = self.kill_child(why) {
                tracing::error!("anyfork rpc: cannot kill the child after a timeout: {e}");
            }
        }
        Error::Timeout {
            function: self.function.clone(),
            timeout,
        }
    }

    pub(super) fn no_pid_error(&self) -> Error {
        Error::Io {
            process: self.process_name(),
            doing: "finding the child",
            source: Arc::new(io::Error::other("the child has not said its pid")),
        }
    }

    /// The pid the child said, or an error saying it has not.
    pub(super) fn said_pid(&self) -> Result<u32, Error> {
        self.lock()
            .link
            .name()
            .pid
            .ok_or_else(|| self.no_pid_error())
    }

    /// Blocking: reads (or waits for the reader) until the child's pid is
    /// known, at most until `deadline`.
    pub(super) fn await_pid(&self, deadline: Instant) -> Result<(), Error> {
        let known = |state: &State| state.link.name().pid.is_some();
        match self.pump_or_wait(Some(deadline), &known) {
            Ok(()) if known(&self.lock()) => Ok(()),
            Ok(()) => Err(self.no_pid_error()),
            // Closed: the pid may have come with the last frames.
            Err(e) => {
                if known(&self.lock()) {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }

    /// [`await_pid`](Core::await_pid) with the default timeout; a
    /// [`Error::Timeout`] (the child is not killed) if the child does not
    /// say its pid in time.
    pub(super) fn await_pid_or_timeout(&self) -> Result<(), Error> {
        let known = |state: &State| state.link.name().pid.is_some();
        let Some(limit) = crate::default_timeout() else {
            return match self.pump_or_wait(None, &known) {
                Err(e) if !known(&self.lock()) => Err(e),
                _ => Ok(()),
            };
        };
        match self.await_pid(Instant::now() + limit) {
            Ok(()) => Ok(()),
            Err(_) if !matches!(self.lock().phase, Phase::Closed(_)) => Err(Error::Timeout {
                function: self.function.clone(),
                timeout: limit,
            }),
            Err(e) => Err(e),
        }
    }

    /// Kills the child (if its pid is known; otherwise the socket is shut,
    /// which ends a child that reads) and closes the handle: outstanding
    /// calls fail with [`Error::Killed`] saying `why`.
    pub(super) fn kill_child(&self, why: String) -> Result<(), Error> {
        let process = self.lock().link.process().cloned();
        let error = Error::Killed {
            function: self.function.clone(),
            process: self.process_name(),
            why,
        };
        // Closed first: a caller reading the child's socket must not see
        // its end (and report a death) before it learns of the kill.
        self.close(Some(error));
        if let Some(process) = &process {
            process.kill(crate::Signal::KILL).map_err(|e| Error::Io {
                process: self.process_name(),
                doing: "killing the child",
                source: Arc::new(io::Error::other(e)),
            })?;
        } else {
            // On another machine: its far side kills it.
            self.lock().link.kill_far(crate::Signal::KILL);
        }
        Ok(())
    }

    /// The handle was dropped.
    pub(super) fn release(self: Arc<Self>) {
        let (driver, needs_reader) = {
            let mut state = self.lock();
            if state.handle_dropped {
                return;
            }
            state.handle_dropped = true;
            let needs = !matches!(state.phase, Phase::Closed(_))
                && (self.listening
                    || !state.pending.is_empty()
                    || state.link.outbox().unsent() > 0);
            (state.driver, needs)
        };
        // Written and shut here, not left to a driver task: on a runtime
        // that is not driven again (a current-thread runtime after
        // `block_on`), the child would never see the end.
        self.send_queued();
        if let Some(process) = self.lock().link.process().cloned() {
            // And reaped when it exits, even if a parked task keeps this
            // state (and so the process handle) forever.
            crate::reaper::watch(process);
        }
        if driver {
            #[cfg(feature = "tokio")]
            self.driver_wake.notify_one();
            return;
        }
        if needs_reader {
            // Nobody else will read what is still to come.
            let core = self.clone();
            let spawned = std::thread::Builder::new()
                .name("anyfork-rpc-drain".into())
                .spawn(move || while core.pump_or_wait(None, &|_| false).is_ok() {});
            if let Err(e) = spawned {
                tracing::error!(
                    "anyfork rpc: cannot start a thread to finish after the handle was dropped: {e}"
                );
            }
        }
    }
}

/// Decodes a reply or an event of the handle; its buffer goes back to the
/// reader (see [`Decoder::recycle`]).
pub(super) fn decode_message<T: DeserializeOwned>(
    core: &Core,
    (bytes, fds): (Vec<u8>, Vec<OwnedFd>),
) -> Result<T, Error> {
    let decoded = core
        .codec
        .decode(&bytes, fds)
        .map_err(|source| Error::Codec {
            function: core.function.clone(),
            source,
        });
    // Only a buffer a shared message was copied into is worth giving back
    // (small ones are not asked for the lock at all). Never waited for: a
    // blocking reader sleeps in its read holding the decoder, and this
    // caller has its reply already; then the buffer is simply freed.
    if bytes.capacity() > crate::rpc::shared_memory::SPILL_AT {
        match core.decoder.try_lock() {
            Ok(mut decoder) => decoder.recycle(bytes),
            Err(std::sync::TryLockError::Poisoned(poisoned)) => {
                poisoned.into_inner().recycle(bytes)
            }
            Err(std::sync::TryLockError::WouldBlock) => {}
        }
    }
    decoded
}
