//! What a process on another machine's link knows of its machine: the
//! [remote connection](crate::remote) that carries it implements
//! [`FarSide`], so that the link can name function values in the far
//! executable and say how a far process ended (the far side reports exit
//! statuses; a lost connection explains every end).

use std::process::ExitStatus;
use std::time::Duration;

/// The machine a remote process runs on, as its link sees it.
pub(crate) trait FarSide: Send + Sync + std::fmt::Debug {
    /// The identity of the executable there (see `sys::exe::identity`).
    fn exe(&self) -> [u64; 4];
    /// How process `pid` there ended, waiting up to `wait` for the far
    /// side's report: its wait status, and a note (which connection, and
    /// why it is lost if it is).
    fn ending(&self, pid: Option<u32>, wait: Duration) -> (Option<ExitStatus>, String);
}
