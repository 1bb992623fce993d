//! Forking the program itself as a template: [`Template::here`] and the
//! machinery [`early`](crate::early) shares with it.
//!
//! A template made this way is a copy of the whole program at the moment of
//! the call: every static, every allocation, every loaded library, shared
//! copy-on-write with all processes forked from it. That is the point, and
//! also the danger the Perl manual warns about: descriptors the program has
//! open leak into it, and objects whose destructors talk to the outside
//! world exist twice. anyfork limits the damage:
//!
//! - the template holds no descriptor of the program's but stdin, stdout
//!   and stderr: every other one is pointed at `/dev/null` (close-on-exec)
//!   in the copy, not closed, because objects of the program (a static
//!   `File`, a logger) still own those numbers there; closed, the numbers
//!   would be reused by descriptors the template receives, and those
//!   objects would write into a worker's socket. Whatever the program had
//!   open stays the program's (send what workers need with
//!   [`send_fh`](Fork::send_fh));
//! - the template and its forks never run the program's exit handlers or
//!   destructors: they end with `_exit`;
//! - anyfork's own state (default template, reaper) is reset in the copy,
//!   and a [`Fork`] made before the call refuses to work there
//!   ([`Error::ForeignFork`]).
//!
//! Forking a program that has more than one thread is refused: another
//! thread may hold a lock (in the allocator, say) that would stay locked
//! forever in the copy.

use crate::error::{Error, Origin};
use crate::fork::Fork;
use crate::sys::clone::{self, Forked};
use crate::sys::fds;
use crate::transport::{self, Transport};
use crate::{reaper, serve};

/// Makes the running program a template: AnyEvent::Fork::Template.
///
/// See [`Template::here`].
#[derive(Debug)]
pub struct Template {
    _private: (),
}

impl Template {
    /// Forks the program as it is now into a template process and returns
    /// it, ready to [`fork`](Fork::fork).
    ///
    /// Call it once everything the workers should share is loaded or built,
    /// and before any thread or async runtime is started.
    ///
    /// ```no_run
    /// use std::os::unix::net::UnixStream;
    ///
    /// static BIG_TABLE: std::sync::OnceLock<Vec<u64>> = std::sync::OnceLock::new();
    ///
    /// fn worker(_socket: UnixStream, _args: anyfork::Args) {
    ///     let _shared = BIG_TABLE.get();
    /// }
    ///
    /// fn main() -> Result<(), anyfork::Error> {
    ///     BIG_TABLE.get_or_init(|| (0..1_000_000).collect());
    ///     let template = anyfork::Template::here()?;
    ///     let workers: Vec<_> = (0..10)
    ///         .map(|id| template.fork()?.send_arg(id.to_string()).run(worker))
    ///         .collect::<Result<_, _>>()?;
    ///     # drop(workers);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Threaded`] if the program has more than one thread (anyfork's
    /// own reaper and `new_exec` spare threads are paused for the call and
    /// do not count);
    /// [`Error::ForkProgram`] if `fork` fails.
    pub fn here() -> Result<Fork, Error> {
        fork_program("Template::here", Origin::Here)
    }
}

/// Forks the program into a serving process and returns its `Fork`.
pub(crate) fn fork_program(what: &'static str, origin: Origin) -> Result<Fork, Error> {
    reaper::pause();
    crate::exec_spare::pause();
    let result = fork_program_paused(what, origin);
    crate::exec_spare::resume();
    reaper::resume();
    result
}

fn fork_program_paused(what: &'static str, origin: Origin) -> Result<Fork, Error> {
    let threads = fds::thread_count().map_err(|source| Error::ForkProgram { what, source })?;
    if threads != 1 {
        return Err(Error::Threaded { what, threads });
    }
    let (ours, theirs) =
        transport::socketpair().map_err(|source| Error::ForkProgram { what, source })?;
    // SAFETY: the process has one thread (checked above, and the reaper is
    // paused), and the child never returns from this function: it serves
    // and ends with _exit.
    match unsafe { clone::fork_child() } {
        Ok(Forked::Child) => {
            drop(ours);
            // Forget anyfork's state of the program before its descriptors
            // go away, so nothing here closes a number twice.
            // (The default and early templates notice by themselves that
            // they belong to another process.)
            reaper::forget_after_fork();
            use std::os::fd::AsRawFd;
            // Not closed: objects of the program still own those numbers.
            if let Err(e) = fds::replace_all_with_null_except(theirs.as_raw_fd()) {
                let _ = std::io::Write::write_all(
                    &mut std::io::stderr(),
                    format!("anyfork: {what}: cannot replace the program's descriptors: {e}\n")
                        .as_bytes(),
                );
                serve::exit(serve::EXIT_SERVE_FAILED);
            }
            serve::serve_forked(theirs)
        }
        Ok(Forked::Parent(pid)) => {
            drop(theirs);
            Ok(Fork::from_transport(
                Transport::Socket(ours),
                Some(pid as u32),
                origin,
            ))
        }
        Err(source) => Err(Error::ForkProgram { what, source }),
    }
}
