//! [`Fork::new_exec`](crate::Fork::new_exec)'s spare: a fresh serving
//! process started ahead of time.
//!
//! An `exec` costs what it costs (mapping the program, loading its
//! libraries, starting the runtime): the caller of `new_exec` need not
//! wait for it. After each call a thread of anyfork's starts the next
//! process, so that the next call finds one already running and only
//! checks that it is alive, as [`Fork::new`](crate::Fork::new) does with
//! its template's spare. The spare costs one idle process (its memory is
//! an exec'd copy of the program's start-up, not shared with anything).
//!
//! A spare started before this program changed its environment or its
//! working directory would not be the process `new_exec` promises: it is
//! given only if both are what they were when it was started, else it is
//! dropped and a process started now. [`keep_exec_spare(false)`](keep_exec_spare)
//! turns spares off (a program that counts its children, or that must not
//! have an idle process around, says so once).

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::fork::Fork;

/// What a spare was started with.
#[derive(Debug, PartialEq, Eq)]
struct Context {
    cwd: Option<PathBuf>,
    /// A hash of every environment variable, names and values.
    environment: u64,
}

impl Context {
    fn now() -> Context {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        for (name, value) in std::env::vars_os() {
            name.hash(&mut hasher);
            value.hash(&mut hasher);
        }
        Context {
            cwd: std::env::current_dir().ok(),
            environment: hasher.finish(),
        }
    }
}

struct Spare {
    fork: Fork,
    started_in: Context,
}

struct State {
    keep: bool,
    /// The process whose spare it is: a copy of the program made by
    /// `fork` must not use its parent's.
    owner: u32,
    spare: Option<Spare>,
    /// A thread is starting the next spare.
    starting: bool,
}

static STATE: Mutex<State> = Mutex::new(State {
    keep: true,
    owner: 0,
    spare: None,
    starting: false,
});

fn lock() -> MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether [`Fork::new_exec`](crate::Fork::new_exec) keeps a process
/// started ahead of time (default: yes). Turning it off drops the spare
/// there is.
///
/// ```
/// // A test that counts this program's children:
/// anyfork::keep_exec_spare(false);
/// let fork = anyfork::Fork::new_exec()?;
/// # drop(fork);
/// # anyfork::keep_exec_spare(true);
/// # Ok::<(), anyfork::Error>(())
/// ```
pub fn keep_exec_spare(keep: bool) {
    let dropped = {
        let mut state = lock();
        state.keep = keep;
        if keep { None } else { state.spare.take() }
    };
    drop(dropped);
}

/// The spare, if there is a live one started in the present context.
pub(crate) fn take() -> Option<Fork> {
    let me = std::process::id();
    let spare = {
        let mut state = lock();
        if state.owner != me {
            // Inherited from the program this copy was forked from: its
            // descriptors are the program's.
            if let Some(inherited) = state.spare.take() {
                std::mem::forget(inherited);
            }
            state.owner = me;
            state.starting = false;
        }
        if !state.keep {
            return None;
        }
        state.spare.take()
    }?;
    if spare.started_in != Context::now() {
        return None;
    }
    let fork = spare.fork;
    fork.is_spare_alive().then_some(fork)
}

/// Starts the next spare on a thread of its own, unless one is there or
/// being started, or spares are off.
pub(crate) fn replenish() {
    {
        let mut state = lock();
        if !state.keep || state.spare.is_some() || state.starting {
            return;
        }
        state.starting = true;
    }
    let started = std::thread::Builder::new()
        .name("anyfork-exec-spare".into())
        .spawn(|| {
            let started_in = Context::now();
            let fork = Fork::spawn();
            let mut state = lock();
            state.starting = false;
            match fork {
                Ok(fork) if state.keep && state.owner == std::process::id() => {
                    state.spare = Some(Spare { fork, started_in });
                }
                // Spares were turned off meanwhile: dropped, after the lock.
                Ok(fork) => {
                    drop(state);
                    drop(fork);
                }
                Err(e) => tracing::debug!("anyfork: cannot start new_exec's spare: {e}"),
            }
        });
    if started.is_err() {
        lock().starting = false;
    }
}
