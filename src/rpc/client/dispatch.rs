//! Handing what was read to its call or handler, in the child's order
//! (see [`crate::rpc::delivery`]), and closing the connection.

use std::os::fd::OwnedFd;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use super::core::{Action, Core, Phase};
use super::event_queue::EventQueue;
use crate::error::Ending;
use crate::proto::{ProtocolError, Reply};
use crate::rpc::delivery::{Handler, Item};
use crate::rpc::error::Error;
use crate::rpc::frame::kind;
use crate::rpc::function::Octets;

impl Core {
    /// Takes every complete buffered frame and hands it over, in order
    /// (see [`super::delivery`]).
    pub(super) fn dispatch(&self) -> Result<(), Error> {
        let mut items = Vec::new();
        let result = loop {
            match self.next_action() {
                Ok(Some(Action::Fulfil(slot, outcome))) => items.push(Item::Fulfil(slot, outcome)),
                Ok(Some(Action::Event(bytes, fds))) => items.push(self.event_item(bytes, fds)),
                Ok(Some(Action::Log(payload))) => self.emit_log(&payload),
                Ok(Some(Action::Notice(word))) => self.notice(&word),
                // Whoever waits for the pid (`Rpc::pid` while a driver
                // reads) learns it now, not with the next reply.
                Ok(Some(Action::Started)) => self.wake_waiters(),
                Ok(Some(Action::Nothing)) => {}
                Ok(None) => break Ok(()),
                Err(error) => break Err(error),
            }
        };
        self.delivery.push(items);
        self.deliver_now();
        result
    }

    /// The event stream, if the handle has one.
    pub(super) fn event_queue(&self) -> Option<Arc<EventQueue>> {
        self.handlers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .events
            .clone()
    }

    /// An event goes to the stream, or to its handler.
    pub(super) fn event_item(&self, bytes: Vec<u8>, fds: Vec<OwnedFd>) -> Item {
        if self.event_queue().is_some() {
            Item::Stream(bytes, fds)
        } else {
            Item::Handler(Handler::Event(bytes, fds))
        }
    }

    /// Hands over what may go now; wakes blocking waiters if anything went.
    pub(super) fn deliver_now(&self) {
        if self.delivery.deliver(&mut |item| self.apply(item)) {
            self.wake_waiters();
        }
    }

    /// Runs a handler, or feeds the event stream.
    pub(super) fn apply(&self, item: Item) {
        match item {
            Item::Fulfil(slot, outcome) => {
                // Done by the delivery itself; kept whole for safety.
                drop((slot, outcome));
            }
            Item::Stream(bytes, fds) => {
                if let Some(queue) = self.event_queue() {
                    queue.push((bytes, fds));
                }
                self.wake_waiters();
            }
            Item::CloseStream => {
                if let Some(queue) = self.event_queue() {
                    queue.close();
                }
                self.wake_waiters();
            }
            Item::Handler(Handler::Event(bytes, fds)) => self.deliver_event(bytes, fds),
            Item::Handler(Handler::Report { error, told }) => self.report(&error, told),
            Item::Handler(Handler::Destroy) => {
                let destroy = self
                    .handlers
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .on_destroy
                    .take();
                if let Some(destroy) = destroy {
                    destroy();
                }
            }
        }
    }

    /// A call took its reply (or was given up): handlers waiting for it may
    /// go ahead. A blocking caller delivers them itself; a future leaves
    /// that to the driver task, so that the task that took the reply runs
    /// on first (on a current-thread runtime) before the handlers do.
    pub(super) fn released(&self, generation: Option<u64>, inline: bool) {
        if !self.delivery.release(generation) {
            return;
        }
        #[cfg(feature = "tokio")]
        if !inline && self.lock().driver {
            self.driver_wake.notify_one();
            return;
        }
        let _ = inline;
        self.deliver_now();
    }

    /// Takes the next buffered frame and decides what it calls for.
    pub(super) fn next_action(&self) -> Result<Option<Action>, Error> {
        let mut state = self.lock();
        let mut decoder = self.decoder.lock().unwrap_or_else(PoisonError::into_inner);
        if let Phase::Starting = state.phase {
            let reply = decoder
                .next_serve_reply()
                .map_err(|e| Error::Start(Arc::new(state.link.protocol(e))))?;
            return match reply {
                None => Ok(None),
                Some((reply, sender)) => match state.link.take_reply(reply, sender) {
                    Ok(Reply::Started(_)) => {
                        state.phase = Phase::Running;
                        Ok(Some(Action::Started))
                    }
                    Ok(_) => Ok(Some(Action::Started)),
                    Err(e) => Err(Error::Start(Arc::new(e))),
                },
            };
        }
        let frame = match decoder.next() {
            Ok(Some(frame)) => frame,
            Ok(None) => return Ok(None),
            Err(source) => {
                return Err(Error::Protocol {
                    process: state.link.name().clone(),
                    source,
                });
            }
        };
        drop(decoder);
        let process = state.link.name().clone();
        match frame.kind {
            kind::REPLY | kind::FAILED if frame.id == 0 => {
                let message = String::from_utf8_lossy(&frame.payload).into_owned();
                Err(Error::Server {
                    function: self.function.clone(),
                    process,
                    message,
                })
            }
            kind::REPLY | kind::FAILED => {
                let Some((slot, _)) = state.pending.remove(&frame.id) else {
                    if state.cancelled.remove(&frame.id).is_some() {
                        return Ok(Some(Action::Nothing));
                    }
                    return Err(Error::Protocol {
                        process,
                        source: ProtocolError::Malformed {
                            tag: crate::proto::Tag(frame.kind),
                            what: "a reply to a call that was never made",
                        },
                    });
                };
                let outcome = if frame.kind == kind::REPLY {
                    Ok((frame.payload, frame.fds))
                } else {
                    Err(Error::Failed {
                        function: self.function.clone(),
                        process,
                        message: String::from_utf8_lossy(&frame.payload).into_owned(),
                    })
                };
                Ok(Some(Action::Fulfil(slot, outcome)))
            }
            kind::EVENT => Ok(Some(Action::Event(frame.payload, frame.fds))),
            kind::LOG => Ok(Some(Action::Log(frame.payload))),
            kind::NOTICE => Ok(Some(Action::Notice(frame.payload))),
            _ => Ok(Some(Action::Nothing)),
        }
    }

    /// A notice goes to the process's manager, if it listens.
    fn notice(&self, word: &[u8]) {
        let mut handlers = self.handlers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(handler) = handlers.on_notice.as_mut() {
            handler(word);
        }
    }

    pub(super) fn deliver_event(&self, bytes: Vec<u8>, fds: Vec<OwnedFd>) {
        let mut handlers = self.handlers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(handler) = handlers.on_event.as_mut() {
            handler(bytes, fds);
        } else {
            drop(handlers);
            self.report(
                &Error::Server {
                    function: self.function.clone(),
                    process: self.process_name(),
                    message: "event received, but no on_event handler".into(),
                },
                false,
            );
        }
    }

    /// `on_error`, or its defaults.
    /// Reports an error that closed the connection: to `on_error`, else
    /// (as in Perl) to a raw `on_event`, else to the log: at debug level
    /// when every call it ended was given it (the callers know), as an
    /// error when nobody was told.
    pub(super) fn report(&self, error: &Error, told: bool) {
        let mut handlers = self.handlers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(handler) = handlers.on_error.as_mut() {
            handler(error);
        } else if let (true, Some(handler)) = (handlers.raw_events, handlers.on_event.as_mut()) {
            // The Perl module's rule: errors go to on_event as
            // ("error", message) when there is no on_error.
            // In the handle's codec, as Octets: what a raw handler decodes.
            let event: Octets = vec![b"error".to_vec(), crate::error::chain(error).into_bytes()];
            if let Ok(encoded) = self.codec.encode(&event) {
                handler(encoded.bytes, encoded.fds);
            }
        } else if told {
            tracing::debug!("anyfork rpc: {}", crate::error::chain(error));
        } else {
            tracing::error!(
                "anyfork rpc: an error no call was waiting for: {}",
                crate::error::chain(error)
            );
        }
    }

    /// The child's end closed.
    pub(super) fn end_of_stream(&self) {
        let (outstanding, starting) = {
            let state = self.lock();
            (state.pending.len(), matches!(state.phase, Phase::Starting))
        };
        if starting {
            let error = {
                let mut state = self.lock();
                Error::Start(Arc::new(
                    state.link.ended_before_start("starting the RPC server"),
                ))
            };
            self.close(Some(error));
        } else if outstanding > 0 {
            let error = {
                let state = self.lock();
                Error::Ended {
                    function: self.function.clone(),
                    process: state.link.name().clone(),
                    ending: state.link.ending(Duration::from_secs(2)),
                    outstanding,
                    delivered: None,
                    started: None,
                }
            };
            self.close(Some(error));
        } else {
            self.close(None);
        }
    }

    /// Closes the connection: fails every outstanding call with `error`
    /// (and reports it), or, on a clean end, runs `on_destroy`; in order,
    /// after what came before (see [`super::delivery`]).
    pub(super) fn close(&self, error: Option<Error>) {
        let pending = {
            let mut state = self.lock();
            if let Phase::Closed(_) = state.phase {
                return;
            }
            state.phase = Phase::Closed(error.clone());
            if let Some(transport) = state.link.transport() {
                transport.shutdown_both();
            }
            self.connection.shutdown_both();
            let running = self
                .sequential
                .then(|| state.running_call())
                .flatten()
                .map(|(end, _)| end);
            state.cancelled.clear();
            (
                std::mem::take(&mut state.pending),
                state.link.outbox().sent_total(),
                running,
            )
        };
        let (pending, sent, running) = pending;
        let failure = error.clone().unwrap_or_else(|| Error::Ended {
            function: self.function.clone(),
            process: self.process_name(),
            ending: Ending(None, None),
            outstanding: 0,
            delivered: None,
            started: None,
        });
        let told = !pending.is_empty();
        let mut items: Vec<Item> = pending
            .into_values()
            .map(|(slot, end)| {
                let mut failure = failure.clone();
                if let Error::Ended {
                    delivered, started, ..
                } = &mut failure
                {
                    // Whether this request had left this program, and
                    // whether a child that runs calls in order had begun it.
                    *delivered = Some(sent >= end);
                    *started = running.filter(|_| sent >= end).map(|first| first == end);
                }
                Item::Fulfil(slot, Err(failure))
            })
            .collect();
        items.push(Item::Handler(match error {
            Some(error) => Handler::Report { error, told },
            None => Handler::Destroy,
        }));
        items.push(Item::CloseStream);
        self.delivery.push(items);
        self.deliver_now();
        self.wake_waiters();
        #[cfg(feature = "tokio")]
        self.driver_wake.notify_one();
    }
}
