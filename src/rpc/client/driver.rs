//! The driver task: inside a tokio runtime it owns the connection for
//! good, writing queued requests and reading continuously.

use std::sync::Arc;

use super::core::{Core, Phase, ReadResult};
#[cfg(feature = "tokio")]
use crate::rpc::delivery::STALL;

impl Core {
    /// Starts the driver task if none runs (needs a tokio runtime).
    #[cfg(feature = "tokio")]
    pub(super) fn ensure_driver(self: Arc<Self>) {
        {
            let mut state = self.lock();
            if state.driver || matches!(state.phase, Phase::Closed(_)) {
                return;
            }
            state.driver = true;
        }
        tokio::spawn(self.drive());
    }

    /// The driver: owns the socket for good, reading and writing, and
    /// hands over what it read (see [`super::delivery`]) until everything
    /// is handed over, also after the connection closed.
    #[cfg(feature = "tokio")]
    pub(super) async fn drive(self: Arc<Self>) {
        self.clone().drive_until_done().await;
        // Whoever takes a reply from now on delivers what waits for it.
        self.lock().driver = false;
        self.deliver_now();
    }

    #[cfg(feature = "tokio")]
    pub(super) async fn drive_until_done(self: Arc<Self>) {
        // Wait for a blocking reader to finish its round.
        loop {
            let notified = self.driver_wake.notified();
            {
                let mut state = self.lock();
                if !state.reading {
                    state.reading = true;
                    break;
                }
            }
            notified.await;
        }
        self.wake_waiters();
        let fd = match crate::transport::AsyncReadiness::new(&self.connection) {
            Ok(fd) => fd,
            Err(e) => return self.close(Some(self.io_error("watching the connection", e))),
        };
        loop {
            let wake = self.driver_wake.notified();
            self.deliver_now();
            let closed = matches!(self.lock().phase, Phase::Closed(_));
            if closed && self.delivery.is_idle() {
                return;
            }
            if !closed {
                self.send_queued();
            }
            let want_write = !closed && self.wants_write();
            // While a handler waits for replies to be taken, reading more
            // would only queue it up behind: wait for the takes instead.
            let want_read = !closed && !self.delivery.is_blocked();
            let stalled = self.delivery.blocked_since();
            let stall = async move {
                match stalled {
                    Some(since) => tokio::time::sleep_until((since + STALL).into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                ready = fd.readable(), if want_read => match ready {
                    Ok(mut ready) => {
                        // Readiness is edge-triggered: it is cleared only
                        // when a read found nothing, never after a read
                        // that may have left data behind.
                        let read = match self.read_once(false) {
                            Ok(ReadResult::Nothing) => {
                                ready.clear_ready();
                                continue;
                            }
                            Ok(read) => read,
                            Err(error) => {
                                self.close(Some(error));
                                continue;
                            }
                        };
                        drop(ready);
                        let result = match self.dispatch() {
                            Ok(()) if matches!(read, ReadResult::End) => self.finish_end(),
                            other => other,
                        };
                        if let Err(error) = result {
                            self.close(Some(error));
                        }
                    }
                    Err(e) => self.close(Some(self.io_error("waiting for the socket", e))),
                },
                ready = fd.writable(), if want_write => {
                    if let Ok(mut ready) = ready {
                        ready.clear_ready();
                    }
                }
                () = wake => {}
                () = stall => self.delivery.force(),
            }
        }
    }
}
