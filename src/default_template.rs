//! The process-wide default template behind [`Fork::new`](crate::Fork::new).
//!
//! Created on first use with [`Fork::new_exec`](crate::Fork::new_exec) and
//! kept for the life of the program; every `Fork::new` sends it one `fork`
//! command under a lock held for that one `sendmsg`. If it has died (someone
//! killed it), the next `Fork::new` starts a new one and retries once.

use std::sync::{Mutex, PoisonError};

use crate::error::Error;
use crate::fork::Fork;

static DEFAULT: Mutex<Option<Fork>> = Mutex::new(None);

/// Forks the default template, creating it first if needed.
pub(crate) fn fork() -> Result<Fork, Error> {
    let mut default = DEFAULT.lock().unwrap_or_else(PoisonError::into_inner);
    let mut retried = false;
    loop {
        let template = match default.take() {
            Some(template) => template,
            None => Fork::new_exec()?,
        };
        match template.fork() {
            Ok(forked) => {
                *default = Some(template);
                return Ok(forked);
            }
            Err(Error::Ended { .. } | Error::Io { .. } | Error::Broken { .. }) if !retried => {
                tracing::warn!("anyfork: the default template is gone; starting a new one");
                retried = true;
                drop(template);
            }
            Err(e) => return Err(e),
        }
    }
}

/// In a process just forked from the program: the default template belongs
/// to the program, not to this copy.
pub(crate) fn forget_after_fork() {
    let mut default = DEFAULT.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(template) = default.take() {
        // Its descriptors are closed or about to be; dropping would touch
        // them. (Fork's drop also refuses to, being owned by another pid.)
        std::mem::forget(template);
    }
}
