//! The queue of a handle's events for [`super::Events`]: filled by
//! whoever reads, emptied by the stream, blocking or async.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::Waker;
#[cfg(feature = "tokio")]
use std::task::{Context, Poll};

#[derive(Default)]
pub(super) struct EventQueue {
    pub(super) inner: Mutex<EventQueueInner>,
}

#[derive(Default)]
pub(super) struct EventQueueInner {
    pub(super) events: VecDeque<(Vec<u8>, Vec<OwnedFd>)>,
    pub(super) closed: bool,
    pub(super) waker: Option<Waker>,
}

impl EventQueue {
    pub(super) fn lock(&self) -> MutexGuard<'_, EventQueueInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn push(&self, event: (Vec<u8>, Vec<OwnedFd>)) {
        let mut inner = self.lock();
        inner.events.push_back(event);
        if let Some(waker) = inner.waker.take() {
            waker.wake();
        }
    }

    pub(super) fn close(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        if let Some(waker) = inner.waker.take() {
            waker.wake();
        }
    }

    pub(super) fn pop(&self) -> Option<(Vec<u8>, Vec<OwnedFd>)> {
        self.lock().events.pop_front()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.lock().events.is_empty()
    }

    pub(super) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    #[cfg(feature = "tokio")]
    pub(super) fn poll_next(&self, cx: &mut Context<'_>) -> Poll<Option<(Vec<u8>, Vec<OwnedFd>)>> {
        let mut inner = self.lock();
        if let Some(event) = inner.events.pop_front() {
            return Poll::Ready(Some(event));
        }
        if inner.closed {
            return Poll::Ready(None);
        }
        inner.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}
