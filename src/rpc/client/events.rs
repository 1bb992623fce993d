//! [`Events`]: the child's events as a stream, and the queue behind it.

use std::marker::PhantomData;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use serde::de::DeserializeOwned;

#[cfg(doc)]
use super::RpcBuilder;
use super::core::Core;
use super::core::decode_message;
use super::event_queue::EventQueue;
use crate::rpc::error::Error;

/// Events from the child, in order; see [`RpcBuilder::event_stream`].
pub struct Events<Ev> {
    pub(super) core: Arc<Core>,
    pub(super) queue: Arc<EventQueue>,
    pub(super) _types: PhantomData<fn() -> Ev>,
}

impl<Ev> std::fmt::Debug for Events<Ev> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("function", &self.core.function)
            .finish_non_exhaustive()
    }
}

impl<Ev: DeserializeOwned> Events<Ev> {
    pub(super) fn decode(&self, message: (Vec<u8>, Vec<OwnedFd>)) -> Result<Ev, Error> {
        decode_message(&self.core, message)
    }

    /// The next event, waiting (blocking) for it; `None` once the child's
    /// end has closed and every event was taken.
    pub fn next_blocking(&mut self) -> Option<Result<Ev, Error>> {
        loop {
            if let Some(event) = self.queue.pop() {
                return Some(self.decode(event));
            }
            if self.queue.is_closed() {
                return None;
            }
            if let Err(e) = self
                .core
                .pump_or_wait(None, &|_| !self.queue.is_empty() || self.queue.is_closed())
            {
                return Some(Err(e));
            }
        }
    }

    /// The next event (async); `None` once the child's end has closed and
    /// every event was taken.
    #[cfg(feature = "tokio")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
    pub async fn next(&mut self) -> Option<Result<Ev, Error>> {
        self.core.clone().ensure_driver();
        let queue = self.queue.clone();
        let event = std::future::poll_fn(move |cx| queue.poll_next(cx)).await?;
        Some(self.decode(event))
    }
}
