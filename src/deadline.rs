//! How long anyfork waits for another process before giving up.
//!
//! Creating and preparing a process waits for it in a few places: `run`
//! for the process's word that it calls the function, `pid` for its pid
//! (and for its initialisers), a send for room in its socket. A process
//! that answers in microseconds normally can still be stopped (`SIGSTOP`,
//! a debugger) or wedged in an initialiser; then these waits end after a
//! deadline with [`Error::Timeout`](crate::Error::Timeout), which names the
//! process, what was awaited, and what state the process (or its
//! template) is in. The default, one minute, is set process-wide with
//! [`set_default_timeout`]; `*_timeout` methods take their own.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The default in milliseconds; `u64::MAX` is no limit.
static DEFAULT_MS: AtomicU64 = AtomicU64::new(60_000);

/// Sets how long `run`, `pid`, `fork` and the like wait for a process
/// before failing with [`Error::Timeout`](crate::Error::Timeout); `None`
/// waits forever. The default is one minute; raise it if your initialisers
/// ([`Fork::eval`](crate::Fork::eval)) take longer.
///
/// ```
/// anyfork::set_default_timeout(Some(std::time::Duration::from_secs(10)));
/// assert_eq!(anyfork::default_timeout(), Some(std::time::Duration::from_secs(10)));
/// # anyfork::set_default_timeout(Some(std::time::Duration::from_secs(60)));
/// ```
pub fn set_default_timeout(timeout: Option<Duration>) {
    let ms = timeout.map_or(u64::MAX, |t| {
        u64::try_from(t.as_millis()).unwrap_or(u64::MAX - 1)
    });
    DEFAULT_MS.store(ms, Ordering::Relaxed);
}

/// The timeout set with [`set_default_timeout`] (one minute unless changed).
pub fn default_timeout() -> Option<Duration> {
    match DEFAULT_MS.load(Ordering::Relaxed) {
        u64::MAX => None,
        ms => Some(Duration::from_millis(ms)),
    }
}

/// When a wait of `timeout` that starts now ends.
pub(crate) fn from_now(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| Instant::now().checked_add(t))
}
