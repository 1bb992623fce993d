//! [`Fork::new_exec`](crate::Fork::new_exec)'s spare: a fresh serving
//! process started ahead of time.
//!
//! An `exec` costs what it costs (mapping the program, loading its
//! libraries, starting the runtime): the caller of `new_exec` need not
//! wait for it. A thread of anyfork's keeps two processes started (two,
//! so that one finishes starting while the next is spawned), and a call
//! takes the oldest, checking that it is alive, as
//! [`Fork::new`](crate::Fork::new) does with its template's spare. The
//! spares cost two idle processes (each an exec'd copy of the program's
//! start-up, not shared with anything); measured on 2 CPUs, one spare made
//! `new_exec` 0.84–0.86 times a `posix_spawn` of `/bin/true`, two 0.96–0.99
//! times, three no better.
//!
//! A spare started before this program changed its environment or its
//! working directory would not be the process `new_exec` promises: it is
//! given only if both are what they were when it was started, else it is
//! dropped and a process started now. [`keep_exec_spare(false)`](keep_exec_spare)
//! turns spares off (a program that counts its children, or that must not
//! have an idle process around, says so once).

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

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
    spares: std::collections::VecDeque<Spare>,
    /// The thread that starts spares is running (it ends after [`IDLE`]
    /// with nothing to do).
    thread: bool,
    /// A spare was asked for since the thread last looked.
    wanted: bool,
    /// The thread is asked to end ([`pause`]).
    stopping: bool,
    handle: Option<std::thread::JoinHandle<()>>,
}

static STATE: Mutex<State> = Mutex::new(State {
    keep: true,
    owner: 0,
    spares: std::collections::VecDeque::new(),
    thread: false,
    wanted: false,
    stopping: false,
    handle: None,
});

/// Wakes the thread that starts spares.
static WANTED: Condvar = Condvar::new();

/// How many processes are kept started: two, so that one starts while the
/// other finishes starting (`posix_spawn` returns once the `exec` has
/// begun; the rest of a process's start-up runs on its own).
const SPARES: usize = 2;

/// How long the thread waits for the next request before it ends.
const IDLE: Duration = Duration::from_secs(1);

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
        if keep {
            None
        } else {
            Some(std::mem::take(&mut state.spares))
        }
    };
    drop(dropped);
}

/// The oldest live spare started in the present context; the ones that
/// are not (dead, or from before a change of environment or directory)
/// are dropped on the way.
pub(crate) fn take() -> Option<Fork> {
    let me = std::process::id();
    // Read only if there is a spare to compare with.
    let mut now = None;
    loop {
        let spare = {
            let mut state = lock();
            if state.owner != me {
                // Inherited from the program this copy was forked from:
                // its descriptors are the program's.
                std::mem::forget(std::mem::take(&mut state.spares));
                state.owner = me;
                // Threads are not copied by `fork`.
                state.thread = false;
                state.wanted = false;
            }
            if !state.keep {
                return None;
            }
            state.spares.pop_front()
        }?;
        if spare.started_in == *now.get_or_insert_with(Context::now) && spare.fork.is_spare_alive()
        {
            return Some(spare.fork);
        }
        // Dropped here, outside the lock.
    }
}

/// Asks for the next spare, started on anyfork's spare thread (started
/// now if it is not running), unless there is one or spares are off.
pub(crate) fn replenish() {
    let mut state = lock();
    if !state.keep || state.spares.len() >= SPARES {
        return;
    }
    state.wanted = true;
    if state.thread {
        WANTED.notify_one();
        return;
    }
    if state.stopping {
        return;
    }
    state.thread = true;
    let started = std::thread::Builder::new()
        .name("anyfork-exec-spare".into())
        .spawn(start_spares);
    match started {
        // The thread waits for this lock before it looks at anything.
        Ok(handle) => state.handle = Some(handle),
        Err(_) => state.thread = false,
    }
}

/// Ends the spare thread and waits for it, for a fork of the whole program
/// ([`Template::here`](crate::Template::here), [`early`](crate::early)),
/// which needs a single-threaded program; the spares stay.
pub(crate) fn pause() {
    let handle = {
        let mut state = lock();
        state.stopping = true;
        WANTED.notify_all();
        state.handle.take()
    };
    if let Some(handle) = handle {
        let _ = handle.join();
    }
}

/// Lets the spare thread start again after [`pause`] (at the next
/// `new_exec`).
pub(crate) fn resume() {
    lock().stopping = false;
}

/// The spare thread: starts a spare whenever one is wanted; ends after
/// [`IDLE`] without a request.
fn start_spares() {
    let mut state = lock();
    loop {
        if state.stopping {
            state.thread = false;
            return;
        }
        while !state.wanted && !state.stopping {
            let (next, waited) = WANTED
                .wait_timeout(state, IDLE)
                .unwrap_or_else(PoisonError::into_inner);
            state = next;
            if waited.timed_out() && !state.wanted {
                state.thread = false;
                state.handle = None;
                return;
            }
        }
        if state.stopping {
            continue;
        }
        if !state.keep || state.spares.len() >= SPARES {
            state.wanted = false;
            continue;
        }
        drop(state);
        let started_in = Context::now();
        let fork = Fork::spawn();
        state = lock();
        match fork {
            Ok(fork) if state.keep && state.owner == std::process::id() => {
                state.spares.push_back(Spare { fork, started_in });
            }
            // Spares were turned off meanwhile: dropped, after the lock.
            Ok(fork) => {
                drop(state);
                drop(fork);
                state = lock();
            }
            Err(e) => tracing::debug!("anyfork: cannot start new_exec's spare: {e}"),
        }
    }
}
