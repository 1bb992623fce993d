//! The parent side: [`Fork`], a process being prepared.
//!
//! A `Fork` is the parent's end of one serving process's control socket,
//! plus the commands queued for it. Preparing calls (`send_arg`, `send_fh`,
//! `eval`, `require`) only queue; `fork`, `run`, `pid` and `into_fh` send the
//! queue in one `sendmsg` (descriptors included), which is why preparing
//! calls cannot fail and return the `Fork` for chaining, like
//! `std::process::Command`. A problem found while queueing (an unknown
//! initialiser name) is reported by the next sending call.
//!
//! Creating a process never waits for it: [`Fork::fork`] sends the template
//! one socket end and returns; the commands for the new process wait in the
//! socket until it exists. The first and usually only wait is in `run`, for
//! the process's answer that the function is found and about to be called.

mod link;
mod prepare;
mod run;

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use crate::error::{Error, Origin, ProcessName};
use crate::proto;
use crate::registry::FunctionRef;
use crate::sys::spawn;
use crate::transport::{self, Transport};

pub(crate) use link::Link;
use link::{Kin, Shared, lock};

/// A process being prepared: created, not yet running its function.
///
/// Made by [`Fork::new`] (a fork of the default template), [`Fork::new_exec`]
/// (a fresh process), [`Fork::fork`] (a fork of a prepared template),
/// [`early`](crate::early) and [`Template::here`](crate::Template::here)
/// (forks of the program), or [`Fork::new_from_fh`].
///
/// Prepare it with [`send_arg`](Fork::send_arg), [`send_fh`](Fork::send_fh),
/// [`eval`](Fork::eval) and [`require`](Fork::require), then either
/// [`run`](Fork::run) a function in it, or keep it as a template and
/// [`fork`](Fork::fork) it as often as you like: every fork starts with
/// everything the template was sent and everything its initialisers built.
///
/// Dropping a `Fork` that has not run makes its process exit.
///
/// `Fork` is `Send` and `Sync`: a template can be forked from many threads.
///
/// ```
/// use std::io::{Read, Write};
/// use std::os::unix::net::UnixStream;
/// use anyfork::{Args, Fork};
///
/// fn shout(mut socket: UnixStream, mut args: Args) -> std::io::Result<()> {
///     let word = args.string()?;
///     socket.write_all(word.to_uppercase().as_bytes())
/// }
///
/// let mut socket = Fork::new()?.send_arg("hello").run(shout)?;
/// let mut reply = String::new();
/// socket.read_to_string(&mut reply)?;
/// assert_eq!(reply, "HELLO");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Fork {
    shared: Arc<Shared>,
}

impl Fork {
    fn from_link(link: Link) -> Fork {
        Fork {
            shared: Arc::new(Shared {
                link: Mutex::new(link),
            }),
        }
    }

    /// A `Fork` for a transport whose other end a serving process holds;
    /// `pid` if this program made the process and knows it.
    pub(crate) fn from_transport(transport: Transport, pid: Option<u32>, origin: Origin) -> Fork {
        let kin = match (&transport, origin, pid) {
            (_, Origin::FromFh, _) => Kin::Foreign,
            // A process this program started: its pid is its own.
            (_, _, Some(_)) | (Transport::Socket(_), _, None) => Kin::Child,
            (Transport::Streams { .. }, _, None) => Kin::Remote,
        };
        let name = ProcessName { pid: None, origin };
        let unchecked = matches!(origin, Origin::FromFh | Origin::Streams);
        let mut link = Link::new(transport, name, kin, Weak::new(), unchecked);
        if let Some(pid) = pid {
            link.learn_pid(pid);
        }
        Fork::from_link(link)
    }

    /// What processes forked from this one share with it.
    #[cfg(test)]
    fn shared(&self) -> &Shared {
        &self.shared
    }

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
        crate::default_template::fork()
    }

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
        Fork::spawn()
    }

    /// `new_exec` without the early template.
    pub(crate) fn spawn() -> Result<Fork, Error> {
        Fork::spawn_with_marker(&format!("{}:{}", spawn::SERVE_FD, proto::PROTOCOL_VERSION))
    }

    /// `new_exec` with any serve marker value, for tests of the serving
    /// process's checks.
    #[doc(hidden)]
    pub fn __spawn_with_marker(value: &str) -> Result<Fork, Error> {
        Fork::spawn_with_marker(value)
    }

    fn spawn_with_marker(value: &str) -> Result<Fork, Error> {
        if crate::sys::secure::is_secure_exec() {
            // The serving process would refuse (see `serve`): say why here.
            return Err(Error::Privileged);
        }
        let (ours, theirs) = transport::socketpair().map_err(|source| Error::System {
            call: "socketpair",
            doing: "creating the socket of a new process",
            source,
        })?;
        let marker = format!("{}={value}", proto::SERVE_MARKER);
        let marker = std::ffi::CString::new(marker).map_err(|e| Error::Spawn {
            source: io::Error::new(io::ErrorKind::InvalidInput, e),
        })?;
        let pid = spawn::spawn_self(&[(theirs.as_fd(), spawn::SERVE_FD)], &marker)
            .map_err(|source| Error::Spawn { source })?;
        drop(theirs);
        tracing::debug!(pid, "anyfork: started a serving process");
        Ok(Fork::from_transport(
            Transport::Socket(ours),
            Some(pid as u32),
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
    /// `send_arg`, `eval`, `require`, `pid`, and [RPC](crate::rpc) with
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
        if crate::sys::secure::is_secure_exec() {
            return Err(Error::Privileged);
        }
        let pipe = || {
            transport::pipe().map_err(|source| Error::System {
                call: "pipe",
                doing: "creating the pipes of a new process",
                source,
            })
        };
        let (their_read, our_write) = pipe()?;
        let (our_read, their_write) = pipe()?;
        let marker = format!("{}=stdio:{}", proto::SERVE_MARKER, proto::PROTOCOL_VERSION);
        let marker = std::ffi::CString::new(marker).map_err(|e| Error::Spawn {
            source: io::Error::new(io::ErrorKind::InvalidInput, e),
        })?;
        let mapping = [(their_read.as_fd(), 0), (their_write.as_fd(), 1)];
        let pid = spawn::spawn_self(&mapping, &marker).map_err(|source| Error::Spawn { source })?;
        drop((their_read, their_write));
        let transport =
            Transport::streams(our_read, our_write).map_err(|source| Error::System {
                call: "ioctl(FIONBIO)",
                doing: "making the pipes of a new process non-blocking",
                source,
            })?;
        tracing::debug!(pid, "anyfork: started a serving process on pipes");
        Ok(Fork::from_transport(
            transport,
            Some(pid as u32),
            Origin::Exec,
        ))
    }

    /// Continues preparing a serving process at the other end of a pair of
    /// byte streams: `read` carries what it says, `write` what it is told
    /// (its stdin and stdout, say, when it was started with
    /// `ANYFORK_SERVE=stdio:1` in its environment by a command of yours).
    ///
    /// The process may be anywhere (another machine, another pid
    /// namespace): its [`pid`](Fork::pid) is what it says, and it has no
    /// [`Process`](crate::Process) handle here
    /// ([`process`](Fork::process) reports [`Error::NotLocal`]); reap or
    /// wait for whatever command you started yourself. Function names are
    /// not checked here. Otherwise as for
    /// [`new_exec_piped`](Fork::new_exec_piped).
    ///
    /// # Errors
    ///
    /// [`Error::System`] if the descriptors cannot be made non-blocking.
    pub fn new_from_streams(
        read: impl Into<OwnedFd>,
        write: impl Into<OwnedFd>,
    ) -> Result<Fork, Error> {
        let transport =
            Transport::streams(read.into(), write.into()).map_err(|source| Error::System {
                call: "ioctl(FIONBIO)",
                doing: "making a pair of streams non-blocking",
                source,
            })?;
        Ok(Fork::from_transport(transport, None, Origin::Streams))
    }

    fn link(&self) -> Result<MutexGuard<'_, Link>, Error> {
        let link = lock(&self.shared);
        link.check_owner()?;
        Ok(link)
    }

    /// Takes the link out of this `Fork` (which is being consumed).
    fn into_link(self) -> Result<Link, Error> {
        let shared = self.shared;
        let link = match Arc::try_unwrap(shared) {
            Ok(shared) => shared
                .link
                .into_inner()
                .unwrap_or_else(PoisonError::into_inner),
            // Fork is not Clone, so nobody else holds it strongly; if that
            // ever changes, take the contents out instead.
            Err(shared) => std::mem::replace(&mut *lock(&shared), Link::detached()),
        };
        link.check_owner()?;
        Ok(link)
    }

    /// Forks this process (used as a template) and returns the new process.
    ///
    /// The new process starts with every argument and descriptor this one was
    /// sent, every library it loaded and every initialiser's state; they
    /// stay in the template for its next fork. Commands queued on this `Fork`
    /// are sent first. The call does not wait for the new process.
    ///
    /// ```
    /// use std::io::Read;
    /// use std::os::unix::net::UnixStream;
    ///
    /// fn report(mut socket: UnixStream, args: anyfork::Args) {
    ///     use std::io::Write;
    ///     let all: Vec<String> = args
    ///         .map(|a| match a {
    ///             anyfork::Arg::Bytes(b) => String::from_utf8_lossy(&b).into_owned(),
    ///             anyfork::Arg::Fd(_) => "fd".into(),
    ///         })
    ///         .collect();
    ///     let _ = socket.write_all(all.join(",").as_bytes());
    /// }
    ///
    /// let template = anyfork::Fork::new()?.send_arg("shared");
    /// for i in 0..3 {
    ///     let mut socket = template.fork()?.send_arg(i.to_string()).run(report)?;
    ///     let mut seen = String::new();
    ///     socket.read_to_string(&mut seen)?;
    ///     assert_eq!(seen, format!("shared,{i}"));
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Ended`] if the template is gone (with its reason), an
    /// earlier queueing error, or an I/O error.
    pub fn fork(&self) -> Result<Fork, Error> {
        let mut template = self.link()?;
        template.usable()?;
        template.wait_at_most(crate::default_timeout());
        template.needs_socket("fork")?;
        let (ours, theirs) = transport::socketpair().map_err(|source| Error::System {
            call: "socketpair",
            doing: "creating the socket of a new process",
            source,
        })?;
        let name = ProcessName {
            pid: None,
            origin: Origin::Fork {
                template: template.name.pid,
            },
        };
        // Made before the new process can send anything (a foreign one's
        // socket must be asking for credentials by then).
        let child = Link::new(
            Transport::Socket(ours),
            name,
            template.kin,
            Arc::downgrade(&self.shared),
            template.unchecked_names,
        );
        template.outbox.fork(theirs);
        template.send("forking")?;
        Ok(Fork::from_link(child))
    }

    /// Sends all queued commands and returns the control socket, to hand the
    /// unrun process to another program, which continues with
    /// [`new_from_fh`](Fork::new_from_fh). *Experimental, as in the Perl
    /// module.*
    ///
    /// This program stays the process's parent: it reaps it when it exits.
    ///
    /// # Errors
    ///
    /// As for [`pid`](Fork::pid).
    pub fn into_fh(self) -> Result<OwnedFd, Error> {
        // Learn the pid first, so the receiving program does not get our
        // `P` frame and this program can reap the process.
        self.pid()?;
        let mut link = self.into_link()?;
        link.wait_at_most(crate::default_timeout());
        link.send("sending commands")?;
        link.needs_socket("into_fh")?;
        let transport = link.transport.take().ok_or_else(|| link.broken_error())?;
        transport.into_socket().map_err(|_| link.broken_error())
    }

    /// Continues preparing a process received from another program (which
    /// called [`into_fh`](Fork::into_fh)). The process keeps everything it was
    /// sent. *Experimental, as in the Perl module.*
    ///
    /// Function names cannot be checked here (the process may run another
    /// executable), and its exit status belongs to the program that created
    /// it: [`Process::wait`] reports [`Error::NotAChild`], and the process
    /// is never reaped here. The pid it claims is believed only when the
    /// kernel confirms that it sent the claim (`SCM_CREDENTIALS`); a false
    /// claim is [`Error::Protocol`] with
    /// [`ProtocolError::WrongPid`](crate::ProtocolError::WrongPid), so a peer
    /// cannot make this program signal or reap another of its children.
    pub fn new_from_fh(fd: impl Into<OwnedFd>) -> Fork {
        Fork::from_transport(Transport::Socket(fd.into()), None, Origin::FromFh)
    }

    /// Whether an idle process (a spare kept by the default template) is
    /// still alive, without waiting: reads its pid if it has sent it, then
    /// looks for end-of-file behind it.
    pub(crate) fn is_spare_alive(&self) -> bool {
        let mut link = lock(&self.shared);
        if !link.is_idle_alive() {
            return false;
        }
        if link.pid_frame_seen {
            return true;
        }
        // Not announced yet: it exists only if its template is still there
        // (a process queued just before the template died never will).
        let template = link.template.upgrade();
        drop(link);
        template.is_none_or(|t| lock(&t).death_note().is_none())
    }

    /// Whether this (template) process is gone: its socket has closed, or
    /// the link broke. Does not wait.
    pub(crate) fn is_gone(&self) -> bool {
        let mut link = lock(&self.shared);
        link.broken.is_some() || link.transport.is_none() || link.death_note().is_some()
    }

    /// Queues `run` of `function` without sending anything or waiting: the
    /// RPC client takes the link over and queues its requests behind it.
    pub(crate) fn run_pipelined(self, function: &FunctionRef) -> Result<Link, Error> {
        let mut link = self.into_link()?;
        link.queue_run(function)?;
        Ok(link)
    }

    /// Whether names given to this process can be checked in this program's
    /// registry.
    pub(crate) fn names_checked(&self) -> bool {
        !lock(&self.shared).unchecked_names
    }

    /// Sends raw bytes on the control socket, for tests of the serving
    /// process's input checks.
    #[doc(hidden)]
    pub fn __send_raw(&self, bytes: &[u8]) -> Result<(), Error> {
        let mut link = self.link()?;
        link.outbox.raw(bytes);
        link.send("sending raw bytes")
    }

    /// Shuts down the sending side of the control socket, for tests of
    /// truncated command streams.
    #[doc(hidden)]
    pub fn __shutdown_write(&self) -> Result<(), Error> {
        let mut link = self.link()?;
        let shut = match link.transport.as_mut() {
            Some(transport) => transport.shutdown_write(),
            None => Ok(()),
        };
        shut.map_err(|e| link.io_error("shutting down", e))
    }
}
