//! Naming a process by a descriptor: `pidfd_open(2)`.
//!
//! A pid may be reused once its process is reaped; a pidfd always means the
//! process it was opened for, and polls readable when that process exits.

use std::os::fd::OwnedFd;

use rustix::process::{Pid, PidfdFlags};

/// The pid as the kernel's type; `None` for 0 or a value out of range.
pub(crate) fn raw_pid(pid: u32) -> Option<Pid> {
    i32::try_from(pid).ok().and_then(Pid::from_raw)
}

/// A pidfd for `pid`; `None` if the process is gone (or the kernel has no
/// pidfds).
pub(crate) fn open(pid: u32) -> Option<OwnedFd> {
    rustix::process::pidfd_open(raw_pid(pid)?, PidfdFlags::empty()).ok()
}
