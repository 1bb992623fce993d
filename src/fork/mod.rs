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

mod ending;
mod far;
mod link;
mod prepare;
mod run;

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use crate::error::{Error, Origin, ProcessName};
use crate::registry::FunctionRef;
use crate::transport::{self, Transport};

pub(crate) use far::FarSide;
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
            (_, Origin::Remote, _) => Kin::Remote,
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

    /// A `Fork` for a serving process on another machine, behind a local
    /// socket that a [remote connection](crate::remote)'s pump carries;
    /// `far` is its machine (see [`FarSide`]).
    pub(crate) fn remote(socket: OwnedFd, far: Arc<dyn FarSide>) -> Fork {
        let name = ProcessName {
            pid: None,
            origin: Origin::Remote,
        };
        let mut link = Link::new(
            Transport::Socket(socket),
            name,
            Kin::Remote,
            Weak::new(),
            false,
        );
        link.far = Some(far);
        Fork::from_link(link)
    }

    /// What processes forked from this one share with it.
    #[cfg(test)]
    fn shared(&self) -> &Shared {
        &self.shared
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
            origin: match template.kin {
                Kin::Remote => Origin::Remote,
                _ => Origin::Fork {
                    template: template.name.pid,
                },
            },
        };
        // Made before the new process can send anything (a foreign one's
        // socket must be asking for credentials by then).
        let mut child = Link::new(
            Transport::Socket(ours),
            name,
            template.kin,
            Arc::downgrade(&self.shared),
            template.unchecked_names,
        );
        child.far = template.far.clone();
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
    /// it: [`Process::wait`](crate::Process::wait) reports [`Error::NotAChild`], and the process
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

    /// `target` as this process's executable knows it (see
    /// [`Link::for_its_executable`]).
    pub(crate) fn for_its_executable(&self, target: crate::proto::Target) -> crate::proto::Target {
        lock(&self.shared).for_its_executable(target)
    }

    /// Whether names given to this process can be checked in this program's
    /// registry.
    pub(crate) fn names_checked(&self) -> bool {
        !lock(&self.shared).unchecked_names
    }

    /// Whether the process can map memory this one sends it (see
    /// [`crate::rpc::shared_memory`]).
    pub(crate) fn shares_memory(&self) -> bool {
        lock(&self.shared).shares_memory()
    }

    /// Sends raw bytes on the control socket, for tests of the serving
    /// process's input checks.
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn __send_raw(&self, bytes: &[u8]) -> Result<(), Error> {
        let mut link = self.link()?;
        link.outbox.raw(bytes);
        link.send("sending raw bytes")
    }

    /// Shuts down the sending side of the control socket, for tests of
    /// truncated command streams.
    #[cfg(feature = "test-hooks")]
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
