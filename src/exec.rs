//! Starting fresh serving processes: [`Fork::new_exec`] (this program's
//! executable, run again with `posix_spawn` and the serve marker, or a fork
//! of the [`early`](crate::early) template) and [`Fork::new_exec_piped`]
//! (the same, speaking the protocol on its stdin and stdout).

use std::os::fd::{AsFd, BorrowedFd, RawFd};

use crate::error::{Error, Origin};
use crate::fork::Fork;
use crate::proto;
use crate::sys::spawn;
use crate::transport::{self, Transport};

impl Fork {
    /// Starts a fresh process running this program's executable in serve
    /// mode, and returns it empty.
    ///
    /// Slower than [`new`](Fork::new) and shares no memory with anything, but
    /// needs no template. The program is not forked: the process is created
    /// with `posix_spawn`, whose cost does not depend on the program's size.
    /// If [`early`](crate::early) was called, the early template is forked
    /// instead, which is faster still.
    ///
    /// # What it costs
    ///
    /// An `exec` of your program: the kernel maps it, the dynamic loader
    /// loads its shared libraries, and the serving process is ready before
    /// `main` would run (anyfork's own part is about 60 µs). Each shared
    /// library costs: on `*-linux-gnu` every Rust program loads
    /// `libgcc_s.so.1` for unwinding, about 90 µs per exec on the machines
    /// this crate was measured on. The `static-unwinder` feature links that
    /// unwinder into your program instead, as the `anyfork` binary is linked
    /// (see [the crate's features](crate#cargo-features)).
    ///
    /// The caller need not wait for that: a thread of anyfork's keeps two
    /// processes started ahead of time, and a call takes the oldest
    /// (checking that it is alive, and that this program's environment and
    /// working directory are what they were when it started; otherwise it
    /// starts one now). See [`keep_exec_spare`](crate::keep_exec_spare) to
    /// turn that off.
    ///
    /// ```
    /// let fork = anyfork::Fork::new_exec()?;
    /// assert!(fork.pid()? > 0);
    /// # Ok::<(), anyfork::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Spawn`] if the process cannot be created;
    /// [`Error::Privileged`] in a setuid, setgid or file-capability program
    /// without [`early`](crate::early).
    pub fn new_exec() -> Result<Fork, Error> {
        if let Some(forked) = crate::early::fork_early() {
            return forked;
        }
        let fork = match crate::exec_spare::take() {
            Some(spare) => Ok(spare),
            None => Fork::spawn(),
        };
        crate::exec_spare::replenish();
        fork
    }

    /// `new_exec` without its spare (for templates: a program that only
    /// calls `Fork::new` has no use for an idle exec'd process).
    pub(crate) fn new_exec_fresh() -> Result<Fork, Error> {
        if let Some(forked) = crate::early::fork_early() {
            return forked;
        }
        Fork::spawn()
    }

    /// `new_exec` without the early template.
    pub(crate) fn spawn() -> Result<Fork, Error> {
        Fork::spawn_with_marker(&proto::marker_value(spawn::SERVE_FD))
    }

    /// `new_exec` with any serve marker value, for tests of the serving
    /// process's checks.
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn __spawn_with_marker(value: &str) -> Result<Fork, Error> {
        Fork::spawn_with_marker(value)
    }

    fn spawn_with_marker(value: &str) -> Result<Fork, Error> {
        refuse_privileged()?;
        let (ours, theirs) = transport::socketpair().map_err(|source| Error::System {
            call: "socketpair",
            doing: "creating the socket of a new process",
            source,
        })?;
        let pid = spawn_serving(value, &[(theirs.as_fd(), spawn::SERVE_FD)])?;
        drop(theirs);
        tracing::debug!(pid, "anyfork: started a serving process");
        Ok(Fork::from_transport(
            Transport::Socket(ours),
            Some(pid),
            Origin::Exec,
        ))
    }

    /// Starts a fresh serving process, like [`new_exec`](Fork::new_exec),
    /// that speaks the protocol on its stdin and stdout (two pipes) instead
    /// of a unix socket: what a process started by a command (`ssh host
    /// prog`) does. Its stdin then reads `/dev/null` and its stdout goes to
    /// its stderr, so that what it prints cannot mix with the protocol.
    ///
    /// Everything that needs no descriptor passing works as on a socket:
    /// `send_arg`, `eval`, `require`, `pid`, and [RPC](mod@crate::rpc) with
    /// every backend and codec. `send_fh` and `fork` report
    /// [`Error::NeedsSocket`], and so does `run` (whose function takes a
    /// `UnixStream`). The process is a child of this program, so
    /// [`process`](Fork::process) works.
    ///
    /// ```
    /// fn double(n: u64) -> u64 {
    ///     n * 2
    /// }
    /// let rpc = anyfork::Fork::new_exec_piped()?.rpc(double).start()?;
    /// assert_eq!(rpc.call_blocking(21)?, 42);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As for [`new_exec`](Fork::new_exec).
    pub fn new_exec_piped() -> Result<Fork, Error> {
        refuse_privileged()?;
        let pipe = || {
            transport::pipe().map_err(|source| Error::System {
                call: "pipe",
                doing: "creating the pipes of a new process",
                source,
            })
        };
        let (their_read, our_write) = pipe()?;
        let (our_read, their_write) = pipe()?;
        let marker = proto::marker_value("stdio");
        let mapping = [(their_read.as_fd(), 0), (their_write.as_fd(), 1)];
        let pid = spawn_serving(&marker, &mapping)?;
        drop((their_read, their_write));
        let transport =
            Transport::streams(our_read, our_write).map_err(|source| Error::System {
                call: "ioctl(FIONBIO)",
                doing: "making the pipes of a new process non-blocking",
                source,
            })?;
        tracing::debug!(pid, "anyfork: started a serving process on pipes");
        Ok(Fork::from_transport(transport, Some(pid), Origin::Exec))
    }
}

/// The serving process would refuse to serve in a privileged program (see
/// `serve`): say why here, before starting it.
fn refuse_privileged() -> Result<(), Error> {
    if crate::sys::secure::is_secure_exec() {
        Err(Error::Privileged)
    } else {
        Ok(())
    }
}

/// Starts this executable with the serve marker `value` (`FD:VERSION` or
/// `stdio:VERSION`) and the descriptors of `mapping` at their numbers;
/// returns its pid.
fn spawn_serving(value: &str, mapping: &[(BorrowedFd<'_>, RawFd)]) -> Result<u32, Error> {
    let marker = proto::marker_entry(value).map_err(|source| Error::Spawn { source })?;
    let pid = spawn::spawn_self(mapping, &marker).map_err(|source| Error::Spawn { source })?;
    Ok(pid as u32)
}
