//! [`early`]: a template forked from the program before it does anything,
//! used by every later [`Fork::new_exec`](crate::Fork::new_exec).

use std::sync::{Mutex, PoisonError};

use crate::error::{Error, Origin};
use crate::fork::Fork;
use crate::template;

static EARLY: Mutex<Option<Fork>> = Mutex::new(None);

/// Forks the program, first thing in `main`, into a template for all later
/// [`Fork::new_exec`](crate::Fork::new_exec) calls: AnyEvent::Fork::Early.
///
/// Afterwards `new_exec` forks this early template instead of executing the
/// program again: faster, and it works even where the executable cannot be
/// run again (deleted, or in a sandbox without `/proc`). The default
/// template behind [`Fork::new`](crate::Fork::new) is then also a fork of it.
///
/// Call it before anything else, in particular before any thread or async
/// runtime exists and before the program opens files or builds state that
/// processes should not inherit. Calling it again does nothing.
///
/// ```no_run
/// fn main() -> Result<(), anyfork::Error> {
///     anyfork::early()?;
///     // ... the program; every new_exec is now a fork of the early template
///     Ok(())
/// }
/// ```
///
/// # Errors
///
/// [`Error::Threaded`] if the program already has more than one thread;
/// [`Error::ForkProgram`] if `fork` fails.
pub fn early() -> Result<(), Error> {
    if EARLY
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .is_some()
    {
        return Ok(());
    }
    // Not under the lock: the forked copy must find it free.
    let template = template::fork_program("anyfork::early", Origin::Early)?;
    let mut early = EARLY.lock().unwrap_or_else(PoisonError::into_inner);
    if early.is_none() {
        *early = Some(template);
    }
    Ok(())
}

/// A fork of the early template, if there is one.
pub(crate) fn fork_early() -> Option<Result<Fork, Error>> {
    let early = EARLY.lock().unwrap_or_else(PoisonError::into_inner);
    early.as_ref().map(Fork::fork)
}

/// In a process just forked from the program: the early template belongs to
/// the program.
pub(crate) fn forget_after_fork() {
    let mut early = EARLY.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(template) = early.take() {
        std::mem::forget(template);
    }
}
