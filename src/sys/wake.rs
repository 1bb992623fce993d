//! A wake-up a thread can wait for in `poll` beside other descriptors: an
//! `eventfd(2)`, non-blocking and close-on-exec.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// An eventfd; [`notify`](Wake::notify) makes it readable until
/// [`clear`](Wake::clear).
#[derive(Debug)]
pub(crate) struct Wake(OwnedFd);

impl Wake {
    pub(crate) fn new() -> io::Result<Wake> {
        use rustix::event::{EventfdFlags, eventfd};
        Ok(Wake(eventfd(
            0,
            EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK,
        )?))
    }

    /// Another handle to the same wake-up.
    pub(crate) fn try_clone(&self) -> io::Result<Wake> {
        Ok(Wake(self.0.try_clone()?))
    }

    /// Makes it readable (a write that would overflow the counter is
    /// dropped: it is readable anyway).
    pub(crate) fn notify(&self) {
        let _ = rustix::io::write(&self.0, &1u64.to_ne_bytes());
    }

    /// Makes it unreadable again.
    pub(crate) fn clear(&self) {
        let mut buf = [0u8; 8];
        let _ = rustix::io::read(&self.0, &mut buf);
    }
}

impl AsFd for Wake {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}
