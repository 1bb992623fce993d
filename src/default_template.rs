//! The process-wide default template behind [`Fork::new`](crate::Fork::new).
//!
//! Created on first use with [`Fork::new_exec`](crate::Fork::new_exec) and
//! kept for the life of the program. It also keeps one *spare*: a process it
//! forked in advance, idle in its serving loop. `Fork::new` hands out the
//! spare (after checking that it is still alive) and sends the template one
//! `fork` command for the next spare, so the fork of the next process
//! overlaps with the caller's use of this one. A program that creates
//! processes one after another gets each one already running; measured on
//! 2 vCPUs that raises the sequential rate by about a third. The spare costs
//! one idle process (about 0.2 MB PSS).
//!
//! Because the default template never changes after it starts (nobody can
//! send it commands but `fork`), a spare is indistinguishable from a process
//! forked at the moment of the call.
//!
//! If the template has died (someone killed it), the next `Fork::new` starts
//! a new one and retries once.

use std::sync::{Mutex, PoisonError};

use crate::error::Error;
use crate::fork::Fork;

impl Fork {
    /// Forks the process-wide default template and returns the new, empty
    /// process.
    ///
    /// The default template is created on first use by
    /// [`new_exec`](Fork::new_exec) and lives as long as the program. It is
    /// small and single-threaded, so forking it is fast whatever the size of
    /// the program. Safe to call from any thread, concurrently.
    ///
    /// # Errors
    ///
    /// [`Error::Spawn`] if the default template cannot be started;
    /// [`Error::System`] if this program cannot make the new process's
    /// socket (no descriptors left: the template is kept for the next
    /// call); I/O errors if the template cannot be reached (a template that
    /// is gone is replaced once, transparently).
    pub fn new() -> Result<Fork, Error> {
        fork()
    }
}

struct DefaultTemplate {
    /// The process that made it: in a copy of the program (made by
    /// [`early`](crate::early) or [`Template::here`](crate::Template::here))
    /// the template is the program's, not the copy's.
    owner: u32,
    template: Fork,
    spare: Option<Fork>,
}

static DEFAULT: Mutex<Option<DefaultTemplate>> = Mutex::new(None);

/// A process forked from the default template, creating it first if
/// needed.
///
/// A template that is really gone (its socket closed, or its link broken) is
/// replaced, once per call. Any other failure (no descriptors left for a
/// socket pair, say) is the caller's: the template and its spare are kept.
fn fork() -> Result<Fork, Error> {
    let mut default = DEFAULT.lock().unwrap_or_else(PoisonError::into_inner);
    let me = std::process::id();
    if let Some(inherited) = default.take_if(|state| state.owner != me) {
        // Its descriptors are the program's (pointed at /dev/null in this
        // copy): dropping it would touch them.
        std::mem::forget(inherited);
    }
    let mut replaced = false;
    loop {
        let mut state = match default.take() {
            Some(state) => state,
            None => DefaultTemplate {
                owner: me,
                template: Fork::new_exec()?,
                spare: None,
            },
        };
        let handed = match state.spare.take().filter(Fork::is_spare_alive) {
            Some(spare) => Ok(spare),
            None => state.template.fork(),
        };
        match handed {
            Ok(forked) => {
                // The next spare: a command queued now, forked while the
                // caller uses this one. A failure shows at the next call.
                state.spare = state.template.fork().ok();
                *default = Some(state);
                return Ok(forked);
            }
            Err(_) if !replaced && state.template.is_gone() => {
                tracing::warn!("anyfork: the default template is gone; starting a new one");
                replaced = true;
            }
            Err(e) => {
                *default = Some(state);
                return Err(e);
            }
        }
    }
}
