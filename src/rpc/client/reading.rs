//! Reading without a runtime: one blocking caller at a time is the
//! reader (see the module docs of [`super`]).

use std::io;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use super::core::{Core, Phase, ReadResult, State};
use crate::rpc::error::Error;

impl Core {
    /// Blocking: reads if nobody else does, else waits, until `done()` or
    /// the connection closes or `deadline` passes. Returns an error once the
    /// connection is closed.
    pub(super) fn pump_or_wait(
        &self,
        deadline: Option<Instant>,
        done: &dyn Fn(&State) -> bool,
    ) -> Result<(), Error> {
        loop {
            let mut state = self.lock();
            if done(&state) {
                return Ok(());
            }
            if let Phase::Closed(_) = state.phase {
                return Err(self.closed_error(&state).unwrap_or(Error::NoRuntime));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(());
            }
            if state.reading && !state.driver && state.link.outbox().unsent() > 0 {
                // Another thread reads, perhaps asleep in a read that
                // nothing ends until what is queued is out (a request
                // larger than the socket holds): write it from here.
                drop(state);
                self.wait_writable(deadline);
                self.send_queued();
                continue;
            }
            if state.reading || state.driver || self.delivery.is_blocked() {
                // Someone else reads; or a handler waits for a reply to be
                // taken, and reading more would only queue up behind it.
                state.waiters += 1;
                state = match deadline {
                    Some(d) => {
                        self.wake
                            .wait_timeout(state, d.saturating_duration_since(Instant::now()))
                            .unwrap_or_else(PoisonError::into_inner)
                            .0
                    }
                    None => self
                        .wake
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner),
                };
                state.waiters -= 1;
                drop(state);
                continue;
            }
            state.reading = true;
            drop(state);
            let result = self.read_blocking(deadline);
            {
                let mut state = self.lock();
                state.reading = false;
                if state.waiters > 0 {
                    self.wake.notify_all();
                }
            }
            #[cfg(feature = "tokio")]
            self.driver_wake.notify_one();
            if let Err(error) = result {
                self.close(Some(error));
            }
        }
    }

    /// Waits until the socket can take more, or `deadline` passes, or the
    /// connection fails (the reader reports that), or 10 ms pass, so that
    /// a caller whose own reply came meanwhile does not wait on for
    /// someone else's request.
    pub(super) fn wait_writable(&self, deadline: Option<Instant>) {
        const RECHECK: Duration = Duration::from_millis(10);
        let recheck = Instant::now() + RECHECK;
        let until = deadline.map_or(recheck, |d| d.min(recheck));
        let _ = self.connection.wait_writable_until(Some(until));
    }

    /// One round of reading (and writing) for a blocking reader.
    pub(super) fn read_blocking(&self, deadline: Option<Instant>) -> Result<(), Error> {
        let want_write = self.wants_write();
        if !want_write && deadline.is_none() {
            // Nothing to send and no time limit: sleep in the read itself,
            // one system call instead of a poll and a read. Whatever is
            // queued later by another thread waits at most for the reply
            // to a request sent in full, which comes.
            return self.read_and_dispatch(true);
        }
        let ready = self
            .connection
            .wait_ready(want_write, deadline)
            .map_err(|e| self.io_error("waiting for the connection", e))?;
        if ready.writable {
            self.send_queued();
        }
        if ready.readable {
            self.read_and_dispatch(false)?;
        }
        Ok(())
    }

    pub(super) fn io_error(&self, doing: &'static str, source: io::Error) -> Error {
        Error::Io {
            process: self.process_name(),
            doing,
            source: Arc::new(source),
        }
    }

    /// Reads once: what is there, or with `wait` until something arrives.
    pub(super) fn read_once(&self, wait: bool) -> Result<ReadResult, Error> {
        let read = {
            let mut decoder = self.decoder.lock().unwrap_or_else(PoisonError::into_inner);
            decoder.read_from(&self.connection, !wait)
        };
        match read {
            Ok(0) => Ok(ReadResult::End),
            Ok(_) => Ok(ReadResult::Data),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(ReadResult::Nothing)
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(ReadResult::End),
            Err(e) => Err(self.io_error("reading replies", e)),
        }
    }

    /// After the last frame: a frame cut short is a protocol error;
    /// otherwise the connection ends.
    pub(super) fn finish_end(&self) -> Result<(), Error> {
        let cut = self
            .decoder
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .at_end();
        if let Err(source) = cut {
            return Err(Error::Protocol {
                process: self.process_name(),
                source,
            });
        }
        self.end_of_stream();
        Ok(())
    }

    /// Reads once and hands every complete frame on (blocking readers).
    pub(super) fn read_and_dispatch(&self, wait: bool) -> Result<(), Error> {
        let read = self.read_once(wait)?;
        self.dispatch()?;
        if let ReadResult::End = read {
            self.finish_end()?;
        }
        Ok(())
    }

    /// Wakes the blocking waiters, if there are any (a notify is a system
    /// call even when nobody waits). Through the state lock, so that a
    /// waiter that looked before the change is asleep by now and hears
    /// this.
    pub(super) fn wake_waiters(&self) {
        if self.lock().waiters > 0 {
            self.wake.notify_all();
        }
    }

    pub(super) fn emit_log(&self, payload: &[u8]) {
        let pid = self.lock().link.name().pid;
        crate::rpc::trace::emit(pid, payload);
    }
}
