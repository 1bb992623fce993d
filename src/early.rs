//! [`early`]: a template forked from the program before it does anything,
//! used by every later [`Fork::new_exec`](crate::Fork::new_exec).

use std::sync::{Mutex, PoisonError};

use crate::error::{Error, Origin};
use crate::fork::Fork;
use crate::template;

/// The early template, with the pid of the process that made it (a copy
/// of the program made later does not own it).
static EARLY: Mutex<Option<(u32, Fork)>> = Mutex::new(None);

/// The early template of this process, forgetting one inherited from the
/// program this process is a copy of.
fn own(early: &mut Option<(u32, Fork)>) -> Option<&Fork> {
    let me = std::process::id();
    if let Some(inherited) = early.take_if(|(owner, _)| *owner != me) {
        // Its descriptors are the program's (pointed at /dev/null in this
        // copy): dropping it would touch them.
        std::mem::forget(inherited);
    }
    early.as_ref().map(|(_, template)| template)
}

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
    if own(&mut EARLY.lock().unwrap_or_else(PoisonError::into_inner)).is_some() {
        return Ok(());
    }
    // Not under the lock: the forked copy must find it free.
    let template = template::fork_program("anyfork::early", Origin::Early)?;
    let mut early = EARLY.lock().unwrap_or_else(PoisonError::into_inner);
    if own(&mut early).is_none() {
        *early = Some((std::process::id(), template));
    }
    Ok(())
}

/// A fork of the early template, if there is one.
pub(crate) fn fork_early() -> Option<Result<Fork, Error>> {
    let mut early = EARLY.lock().unwrap_or_else(PoisonError::into_inner);
    own(&mut early).map(Fork::fork)
}
