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
//!
//! # Many threads, many cores
//!
//! One template forks one process at a time, and its lock serialises the
//! callers. So there is one default template per CPU this program may use
//! ([`ncpu`](crate::ncpu)), at most 64: threads are numbered in the order
//! of their first `Fork::new` and take the templates in turn, each
//! created on the first call of a thread whose turn it is. A program that
//! calls `Fork::new` from one thread has one template; one that calls it
//! from T threads on C CPUs has min(T, C), each with its own spare, and
//! creates processes on all of them at once: on 2 CPUs, 2 threads create
//! 1.2 to 1.3 times as many processes a second as one (`anyfork bench
//! spawn`, six runs), where one template for both gave 0.93 times. That is
//! all two CPUs have: one thread with its spare already keeps about 1.6 of
//! them busy (the caller, its template forking the next spare, the last
//! process exiting, mostly kernel work: `fork`, page faults, `exit`), two
//! threads 1.9 to 1.95, and the rate per busy CPU is the same (the bench
//! prints both). On 64 cores, 64 threads get 64 templates (about 1 MB of memory
//! each, mostly shared), and the rate grows until the kernel's own `clone`
//! and `exit` work, not a template, is the limit.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

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

/// One default template's place.
type Slot = Mutex<Option<DefaultTemplate>>;

/// The default templates: one per CPU at most, each created when a thread
/// whose turn it is first calls `Fork::new`.
fn slots() -> &'static [Slot] {
    static SLOTS: OnceLock<Vec<Slot>> = OnceLock::new();
    SLOTS.get_or_init(|| {
        (0..crate::ncpu().clamp(1, MAX_TEMPLATES))
            .map(|_| Mutex::new(None))
            .collect()
    })
}

/// The most default templates, whatever the number of CPUs.
const MAX_TEMPLATES: usize = 64;

/// The template slot of the calling thread: threads are numbered in the
/// order of their first `Fork::new`, and take the slots in turn.
fn my_slot(count: usize) -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static MINE: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    MINE.with(|mine| *mine % count)
}

/// A process forked from the calling thread's default template, creating
/// it first if needed.
fn fork() -> Result<Fork, Error> {
    let slots = slots();
    let slot = &slots[my_slot(slots.len())];
    let mut default = slot.lock().unwrap_or_else(PoisonError::into_inner);
    fork_from(&mut default)
}

/// A process forked from the default template in `default`.
///
/// A template that is really gone (its socket closed, or its link broken) is
/// replaced, once per call. Any other failure (no descriptors left for a
/// socket pair, say) is the caller's: the template and its spare are kept.
fn fork_from(default: &mut Option<DefaultTemplate>) -> Result<Fork, Error> {
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
                template: Fork::new_exec_fresh()?,
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
