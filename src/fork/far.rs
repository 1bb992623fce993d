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
    /// Whether process `pid` there is gone, without waiting: `Some` with
    /// its wait status if the far side reported it, `Some(None)` if the
    /// connection is lost; `None` while it may live.
    fn gone(&self, pid: u32) -> Option<Option<ExitStatus>>;
    /// Asks the far side to send `signal` to process `pid` (one of the
    /// processes it started, or forked from them). Does not wait.
    fn kill(&self, pid: u32, signal: i32);
}
