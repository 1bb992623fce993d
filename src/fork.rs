//! The parent side: [`Fork`], a process being prepared.
//!
//! A `Fork` is the parent's end of one serving process's control socket,
//! plus the commands queued for it. Preparing calls (`send_arg`, `send_fh`,
//! `eval`, `require`) only queue; `fork`, `run`, `pid` and `to_fh` send the
//! queue in one `sendmsg` (descriptors included), which is why preparing
//! calls cannot fail and return the `Fork` for chaining, like
//! `std::process::Command`. A problem found while queueing (an unknown
//! initialiser name) is reported by the next sending call.
//!
//! Creating a process never waits for it: [`Fork::fork`] sends the template
//! one socket end and returns; the commands for the new process wait in the
//! socket until it exists. The first and usually only wait is in `run`, for
//! the process's answer that the function is found and about to be called.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use crate::error::{Ending, Error, Origin, ProcessName};
use crate::process::Process;
use crate::proto::{self, Outbox, Reply, Target};
use crate::reaper;
use crate::registry::{self, FunctionRef, FunctionRepr, IntoInit, IntoRun, Lookup};
use crate::sys::{fdpass, spawn};

/// How long to wait for a process that closed its socket to be reaped, when
/// explaining why it is gone.
const EXIT_GRACE: Duration = Duration::from_secs(2);

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

#[derive(Debug)]
struct Shared {
    link: Mutex<Link>,
}

/// The parent's connection to one serving process.
#[derive(Debug)]
pub(crate) struct Link {
    /// The pid of the process that made this link: only it may use the
    /// socket.
    owner: u32,
    /// `None` once handed over by `run` or `to_fh`.
    socket: Option<OwnedFd>,
    outbox: Outbox,
    name: ProcessName,
    process: Option<Process>,
    /// The template this process was forked from.
    template: Weak<Shared>,
    /// Names cannot be checked in the parent (libraries were loaded, or the
    /// process came from elsewhere).
    unchecked_names: bool,
    /// Whether the process's `P` frame has been read.
    pid_frame_seen: bool,
    /// The process was not made by this program (received with
    /// `new_from_fh`, or forked from such a template): the pid it claims is
    /// believed only when the kernel confirms the sender
    /// (`SCM_CREDENTIALS`), and it is never waited for or reaped here.
    verify_pids: bool,
    /// When the current wait for the process ends, and how long it is
    /// (set by each public call that waits; see [`crate::deadline`]).
    deadline: Option<Instant>,
    timeout: Option<Duration>,
    /// Commands that can fail (`eval`, `require`) were queued since the
    /// process last confirmed it carried everything out; `pid` asks it to
    /// confirm (`i`) before answering.
    unconfirmed: bool,
    /// Reply bytes read but not yet taken.
    replies: proto::ReplyBuffer,
    /// An error found while queueing, reported by the next sending call.
    deferred: Option<Error>,
    /// Why this link is unusable, once an error was reported.
    broken: Option<String>,
    /// Why this (template) process ended, once known.
    death: Option<String>,
}

fn lock(shared: &Shared) -> MutexGuard<'_, Link> {
    shared.link.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Fork {
    fn from_link(link: Link) -> Fork {
        Fork {
            shared: Arc::new(Shared {
                link: Mutex::new(link),
            }),
        }
    }

    /// A `Fork` for a socket whose other end a serving process holds.
    pub(crate) fn from_socket(socket: OwnedFd, pid: Option<u32>, origin: Origin) -> Fork {
        let verify_pids = origin == Origin::FromFh;
        if verify_pids {
            // From now on the kernel says who sent what we read. Failing
            // that, no pid is ever believed: `process` then says so.
            let _ = fdpass::pass_credentials(socket.as_fd());
        }
        let mut link = Link {
            owner: std::process::id(),
            socket: Some(socket),
            outbox: Outbox::default(),
            name: ProcessName { pid: None, origin },
            process: None,
            template: Weak::new(),
            unchecked_names: origin == Origin::FromFh,
            pid_frame_seen: false,
            verify_pids,
            unconfirmed: verify_pids,
            deadline: None,
            timeout: None,
            replies: replies_for(verify_pids),
            deferred: None,
            broken: None,
            death: None,
        };
        if let Some(pid) = pid {
            link.learn_pid(pid);
        }
        Fork::from_link(link)
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
        let (ours, theirs) = socketpair().map_err(|source| Error::System {
            call: "socketpair",
            doing: "creating the socket of a new process",
            source,
        })?;
        let marker = format!("{}={value}", proto::SERVE_MARKER);
        let marker = std::ffi::CString::new(marker).map_err(|e| Error::Spawn {
            source: io::Error::new(io::ErrorKind::InvalidInput, e),
        })?;
        let pid =
            spawn::spawn_self(theirs.as_fd(), &marker).map_err(|source| Error::Spawn { source })?;
        drop(theirs);
        tracing::debug!(pid, "anyfork: started a serving process");
        Ok(Fork::from_socket(ours, Some(pid as u32), Origin::Exec))
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
        let (ours, theirs) = socketpair().map_err(|source| Error::System {
            call: "socketpair",
            doing: "creating the socket of a new process",
            source,
        })?;
        if template.verify_pids {
            // Set before the new process can send anything.
            let _ = fdpass::pass_credentials(ours.as_fd());
        }
        template.outbox.fork(theirs);
        template.send("forking")?;
        let child = Link {
            owner: template.owner,
            socket: Some(ours),
            outbox: Outbox::default(),
            name: ProcessName {
                pid: None,
                origin: Origin::Fork {
                    template: template.name.pid,
                },
            },
            process: None,
            template: Arc::downgrade(&self.shared),
            unchecked_names: template.unchecked_names,
            pid_frame_seen: false,
            verify_pids: template.verify_pids,
            unconfirmed: template.verify_pids,
            deadline: None,
            timeout: None,
            replies: replies_for(template.verify_pids),
            deferred: None,
            broken: None,
            death: None,
        };
        Ok(Fork::from_link(child))
    }

    /// Queues a byte string for the process; the function receives it in
    /// [`Args`](crate::Args), in send order with descriptors.
    ///
    /// Any bytes up to 4 GiB (the serving process's limit, 1 GiB by default,
    /// is set with [`max_frame_len`](Fork::max_frame_len)); meant for ids and
    /// settings rather than bulk data.
    pub fn send_arg(self, arg: impl AsRef<[u8]>) -> Self {
        {
            let mut link = lock(&self.shared);
            link.queue(|outbox| outbox.arg(arg.as_ref()));
        }
        self
    }

    /// Queues several byte strings, like repeated [`send_arg`](Fork::send_arg).
    pub fn send_args<I>(self, args: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        args.into_iter().fold(self, Fork::send_arg)
    }

    /// Queues a file descriptor for the process (any kind: file, pipe,
    /// socket, listening socket). The parent's copy is closed once sent; pass
    /// a [`try_clone`](std::os::fd::OwnedFd::try_clone) to keep one.
    pub fn send_fh(self, fd: impl Into<OwnedFd>) -> Self {
        lock(&self.shared).outbox.fd(fd.into());
        self
    }

    /// Queues a call of an initialiser in the process, with byte-string
    /// arguments, before anything else it is later asked to do.
    ///
    /// `init` is a registered name (see [`initialiser!`](crate::initialiser))
    /// or a function value `fn(&[Vec<u8>]) -> impl Outcome`. State it builds
    /// in statics is shared copy-on-write by every process later forked from
    /// this one. If it fails or panics, the process exits and the next
    /// `run`, `pid` or `fork` of it reports [`Error::Refused`] with the
    /// message.
    ///
    /// An initialiser must not leave threads running if the process is to
    /// be forked: a template forks with a raw `clone` that only a
    /// single-threaded process survives (another thread could hold
    /// `malloc`'s lock), so a template with threads refuses every fork
    /// ([`Error::Refused`] with
    /// [`ChildErrorKind::Threaded`](crate::ChildErrorKind::Threaded),
    /// naming the initialiser) until they have ended. The same holds for a
    /// library loaded with [`require`](Fork::require).
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// static SEED: AtomicU64 = AtomicU64::new(0);
    ///
    /// fn set_seed(args: &[Vec<u8>]) -> Result<(), std::num::ParseIntError> {
    ///     SEED.store(String::from_utf8_lossy(&args[0]).parse()?, Ordering::Relaxed);
    ///     Ok(())
    /// }
    ///
    /// fn show_seed(mut socket: std::os::unix::net::UnixStream, _: anyfork::Args) {
    ///     use std::io::Write;
    ///     let _ = write!(socket, "{}", SEED.load(Ordering::Relaxed));
    /// }
    ///
    /// let template = anyfork::Fork::new()?.eval(set_seed, ["42"]);
    /// let mut socket = template.fork()?.run(show_seed)?;
    /// let mut seen = String::new();
    /// std::io::Read::read_to_string(&mut socket, &mut seen)?;
    /// assert_eq!(seen, "42");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn eval<I>(self, init: impl IntoInit, args: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        let init = init.into_init();
        {
            let mut link = lock(&self.shared);
            match link.target(&init, false) {
                Ok(target) => {
                    let args: Vec<I::Item> = args.into_iter().collect();
                    let args: Vec<&[u8]> = args.iter().map(AsRef::as_ref).collect();
                    link.unconfirmed = true;
                    link.queue(|outbox| outbox.eval(&target, &args));
                }
                Err(e) => link.defer(e),
            }
        }
        self
    }

    /// Queues loading a shared library into the process (`dlopen`), so that
    /// every process forked from it shares the library, and its registered
    /// functions (see [`library!`](crate::library)) can be run by name.
    ///
    /// After `require`, names given to `run` and `eval` are no longer checked
    /// in the parent, which cannot see into the library; an unknown name is
    /// then reported by the process as [`Error::Refused`].
    pub fn require(self, path: impl AsRef<Path>) -> Self {
        {
            let mut link = lock(&self.shared);
            link.unchecked_names = true;
            link.unconfirmed = true;
            link.queue(|outbox| outbox.require(path.as_ref().as_os_str().as_bytes()));
        }
        self
    }

    /// Runs the function in `dir` (the process changes its working
    /// directory just before calling it). Without this, the function runs
    /// where the template was started: see [the crate
    /// docs](crate#typical-problems).
    pub fn current_dir(self, dir: impl AsRef<Path>) -> Self {
        {
            let mut link = lock(&self.shared);
            link.queue(|outbox| outbox.chdir(dir.as_ref().as_os_str().as_bytes()));
        }
        self
    }

    /// Runs the function with exactly these environment variables (the
    /// process replaces its environment just before calling it). Without
    /// this, the function sees the template's environment as it was when
    /// the template started: see [the crate docs](crate#typical-problems).
    pub fn envs<I, K, V>(self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<std::ffi::OsStr>,
        V: AsRef<std::ffi::OsStr>,
    {
        let vars: Vec<Vec<u8>> = vars
            .into_iter()
            .map(|(name, value)| {
                let mut var = name.as_ref().as_bytes().to_vec();
                var.push(b'=');
                var.extend_from_slice(value.as_ref().as_bytes());
                var
            })
            .collect();
        {
            let mut link = lock(&self.shared);
            let malformed = vars
                .iter()
                .any(|var| var.contains(&0) || var.first() == Some(&b'='));
            link.queue(|outbox| {
                if malformed {
                    return Err(proto::ProtocolError::Malformed {
                        tag: proto::Tag(proto::tag::ENVIRONMENT),
                        what: "an environment variable has an empty name or a NUL byte",
                    });
                }
                outbox.environment(&vars)
            });
        }
        self
    }

    /// Runs the function with this program's environment and working
    /// directory as they are now, as `std::process::Command` would give a
    /// program it starts: [`envs`](Fork::envs) of
    /// [`std::env::vars_os`] and [`current_dir`](Fork::current_dir) of
    /// [`std::env::current_dir`] (kept as the template's if this program's
    /// directory is gone). For a worker that `exec`s another program.
    ///
    /// ```
    /// use std::io::Read;
    /// use std::os::unix::process::CommandExt;
    ///
    /// fn exec_pwd(socket: std::os::unix::net::UnixStream, _: anyfork::Args) -> std::io::Error {
    ///     std::process::Command::new("/bin/sh")
    ///         .args(["-c", "pwd"])
    ///         .stdout(std::os::fd::OwnedFd::from(socket))
    ///         .exec()
    /// }
    /// fn run_pwd(socket: std::os::unix::net::UnixStream, args: anyfork::Args) -> Result<(), std::io::Error> {
    ///     Err(exec_pwd(socket, args))
    /// }
    ///
    /// let mut socket = anyfork::Fork::new()?.caller_env_and_dir().run(run_pwd)?;
    /// let mut seen = String::new();
    /// socket.read_to_string(&mut seen)?;
    /// assert_eq!(seen.trim(), std::env::current_dir()?.display().to_string());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn caller_env_and_dir(self) -> Self {
        let fork = self.envs(std::env::vars_os());
        match std::env::current_dir() {
            Ok(dir) => fork.current_dir(dir),
            Err(_) => fork,
        }
    }

    /// Whether the process dies when this program does, even by `SIGKILL`,
    /// once it runs its function (default: no, as in the Perl module: a
    /// `run` worker may outlive the program; RPC workers die with it unless
    /// told otherwise, see [`RpcBuilder::die_with_parent`](crate::rpc::RpcBuilder::die_with_parent)).
    ///
    /// Templates and processes that have not run yet always end with the
    /// program: they see their socket close. A running function, busy or
    /// not, needs this. The process gets `SIGKILL` within moments of the
    /// program's end (through `PR_SET_PDEATHSIG`; it must not block or
    /// handle the highest real-time signal, `SIGRTMAX`, which carries the
    /// news). Inherited by forks of a template it is set on. For a process
    /// received with [`new_from_fh`](Fork::new_from_fh), "the program" is
    /// whichever process is its parent when it starts running.
    ///
    /// ```
    /// fn serve_forever(_socket: std::os::unix::net::UnixStream, _args: anyfork::Args) {
    ///     loop {
    ///         std::thread::sleep(std::time::Duration::from_secs(1));
    ///     }
    /// }
    /// let _socket = anyfork::Fork::new()?.die_with_parent(true).run(serve_forever)?;
    /// // ... when this program ends, so does the worker.
    /// # Ok::<(), anyfork::Error>(())
    /// ```
    pub fn die_with_parent(self, die: bool) -> Self {
        {
            let mut link = lock(&self.shared);
            let parent = if link.verify_pids {
                0 // not ours: whichever parent it has then
            } else {
                link.owner
            };
            link.outbox.parent_death(die.then_some(parent));
        }
        self
    }

    /// Sets the largest command the process accepts from now on (default
    /// [`DEFAULT_MAX_FRAME_LEN`](crate::DEFAULT_MAX_FRAME_LEN), 1 GiB). A
    /// larger one makes it exit with a protocol error. Inherited by forks.
    pub fn max_frame_len(self, bytes: u64) -> Self {
        lock(&self.shared).outbox.limit(bytes);
        self
    }

    /// The process's pid. Sends queued commands, and waits for the process
    /// to exist if it was just forked. If an [`eval`](Fork::eval) or
    /// [`require`](Fork::require) was queued since, it also waits until the
    /// process has carried them out (one round trip), so that a failure is
    /// reported here rather than later.
    ///
    /// Every process anyfork creates is a direct child of the program, so
    /// the pid can be waited for; [`process`](Fork::process) gives a handle
    /// that does it.
    ///
    /// # Errors
    ///
    /// As for [`run`](Fork::run).
    pub fn pid(&self) -> Result<u32, Error> {
        self.pid_timeout(crate::default_timeout())
    }

    /// [`pid`](Fork::pid), waiting at most `timeout` (`None`: forever)
    /// instead of the [default](crate::set_default_timeout).
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] if the process does not answer in time; otherwise
    /// as for [`run`](Fork::run).
    pub fn pid_timeout(&self, timeout: Option<Duration>) -> Result<u32, Error> {
        let mut link = self.link()?;
        link.usable()?;
        link.wait_at_most(timeout);
        match (link.name.pid, link.unconfirmed) {
            (Some(pid), false) => return Ok(pid),
            (None, false) => {
                // A fresh process says its pid unasked.
                link.send("sending commands")?;
                return match link.read("waiting for the pid")? {
                    Reply::Pid(_) => link.name.pid.ok_or_else(|| link.no_pid()),
                    other => Err(link.unexpected(other)),
                };
            }
            _ => {}
        }
        // An initialiser or library may fail, and a process received from
        // elsewhere has not said its pid here: ask it to confirm.
        link.outbox.sync();
        link.send("sending commands")?;
        loop {
            match link.read("waiting for the process to carry out its commands")? {
                Reply::Pid(_) => continue,
                Reply::InSync(_) => {
                    link.unconfirmed = false;
                    return link.name.pid.ok_or_else(|| link.no_pid());
                }
                other => return Err(link.unexpected(other)),
            }
        }
    }

    /// The pid of the template this process was forked from, if it was
    /// forked from a template whose pid is known (the default template's
    /// always is).
    pub fn template_pid(&self) -> Option<u32> {
        match lock(&self.shared).name.origin {
            Origin::Fork { template } => template,
            _ => None,
        }
    }

    /// A handle to the process: pid, signals, exit status.
    ///
    /// # Errors
    ///
    /// As for [`pid`](Fork::pid).
    pub fn process(&self) -> Result<Process, Error> {
        self.pid()?;
        let link = self.link()?;
        link.process.clone().ok_or(Error::NotAChild {
            pid: link.name.pid.unwrap_or(0),
        })
    }

    /// Runs `function` in the process and returns the parent's end of its
    /// socket (blocking, close-on-exec).
    ///
    /// `function` is a registered name (see [`function!`](crate::function))
    /// or a function value `fn(UnixStream, Args) -> impl Outcome` that
    /// captures nothing. It is called with the process's end of the socket
    /// and everything sent with `send_arg`/`send_fh`, in order. When it
    /// returns the process exits: status 0, or
    /// [`EXIT_FAILED`](crate::EXIT_FAILED) for `Err`, or
    /// [`EXIT_PANICKED`](crate::EXIT_PANICKED) for a panic. The parent sees
    /// end-of-file on the socket and can read the status with
    /// [`run_with_process`](Fork::run_with_process).
    ///
    /// `run` returns once the process has confirmed that it found the
    /// function and is calling it.
    ///
    /// # Errors
    ///
    /// - [`Error::UnknownFunction`] for a name this program has not
    ///   registered, before anything is sent;
    /// - [`Error::Refused`] if the process could not find the function or an
    ///   earlier `eval`/`require` failed (with its message);
    /// - [`Error::Ended`] if the process or its template died (with how);
    /// - [`Error::Timeout`] if the process (or its template) did not answer
    ///   within the [default timeout](crate::set_default_timeout): stopped,
    ///   or wedged in an initialiser;
    /// - [`Error::Io`], [`Error::Protocol`] for a broken connection.
    pub fn run(self, function: impl IntoRun) -> Result<UnixStream, Error> {
        self.run_with_process(function).map(|(socket, _)| socket)
    }

    /// [`run`](Fork::run), also returning a handle to the process.
    ///
    /// ```
    /// fn fail(_: std::os::unix::net::UnixStream, _: anyfork::Args) -> Result<(), String> {
    ///     Err("no".into())
    /// }
    /// let (_socket, process) = anyfork::Fork::new()?.run_with_process(fail)?;
    /// assert_eq!(process.wait()?.code(), Some(anyfork::EXIT_FAILED));
    /// # Ok::<(), anyfork::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As for [`run`](Fork::run).
    pub fn run_with_process(self, function: impl IntoRun) -> Result<(UnixStream, Process), Error> {
        self.run_with_process_timeout(function, crate::default_timeout())
    }

    /// [`run_with_process`](Fork::run_with_process), waiting at most
    /// `timeout` for the process (and the initialisers queued before) to
    /// start the function, instead of the
    /// [default](crate::set_default_timeout); `None` waits forever.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] if the process does not answer in time; otherwise
    /// as for [`run`](Fork::run).
    pub fn run_with_process_timeout(
        self,
        function: impl IntoRun,
        timeout: Option<Duration>,
    ) -> Result<(UnixStream, Process), Error> {
        let function = function.into_run();
        let mut link = self.into_link()?;
        link.wait_at_most(timeout);
        link.queue_run(&function)?;
        let doing = format!("running `{}`", function.label());
        link.send(&doing)?;
        loop {
            match link.read(&doing)? {
                Reply::Pid(_) => continue,
                Reply::Started(_) => return link.hand_over(),
                other => return Err(link.unexpected(other)),
            }
        }
    }

    /// [`run`](Fork::run) for async programs: returns a tokio `UnixStream`
    /// (non-blocking) and does not block the runtime while the process
    /// starts.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use tokio::io::AsyncReadExt;
    ///
    /// fn hello(mut socket: std::os::unix::net::UnixStream, _: anyfork::Args) -> std::io::Result<()> {
    ///     std::io::Write::write_all(&mut socket, b"hi")
    /// }
    ///
    /// let mut socket = anyfork::Fork::new()?.run_async(hello).await?;
    /// let mut seen = String::new();
    /// socket.read_to_string(&mut seen).await?;
    /// assert_eq!(seen, "hi");
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As for [`run`](Fork::run).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime with I/O enabled.
    #[cfg(feature = "tokio")]
    pub async fn run_async(self, function: impl IntoRun) -> Result<tokio::net::UnixStream, Error> {
        self.run_async_with_process(function)
            .await
            .map(|(socket, _)| socket)
    }

    /// [`run_async`](Fork::run_async), also returning a handle to the
    /// process.
    ///
    /// # Errors
    ///
    /// As for [`run`](Fork::run).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime with I/O enabled.
    #[cfg(feature = "tokio")]
    pub async fn run_async_with_process(
        self,
        function: impl IntoRun,
    ) -> Result<(tokio::net::UnixStream, Process), Error> {
        let function = function.into_run();
        let mut link = self.into_link()?;
        link.queue_run(&function)?;
        let doing = format!("running `{}`", function.label());
        let Some(socket) = link.socket.take() else {
            return Err(link.broken_error());
        };
        let socket = UnixStream::from(socket);
        let stream = socket
            .set_nonblocking(true)
            .and_then(|()| tokio::net::UnixStream::from_std(socket));
        let mut stream = match stream {
            Ok(stream) => stream,
            Err(e) => return Err(link.io_error(&doing, e)),
        };
        let timeout = crate::default_timeout();
        let exchange = async_exchange(&mut link, &mut stream, &doing);
        let outcome = match timeout {
            Some(limit) => match tokio::time::timeout(limit, exchange).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    link.timeout = timeout;
                    Err(AsyncFailure::Error(link.timeout_error(&doing)))
                }
            },
            None => exchange.await,
        };
        // Give the socket back to the link, so that errors can be explained
        // and a failed process is reaped like any other.
        match outcome {
            Ok(()) => {
                let process = link.process.clone().ok_or_else(|| link.no_pid())?;
                Ok((stream, process))
            }
            Err(AsyncFailure::Error(e)) => {
                link.socket = stream.into_std().ok().map(OwnedFd::from);
                Err(e)
            }
            Err(AsyncFailure::Closed) => {
                link.socket = stream.into_std().ok().map(|s| {
                    let _ = s.set_nonblocking(false);
                    OwnedFd::from(s)
                });
                Err(link.explain_end(&doing))
            }
        }
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
    pub fn to_fh(self) -> Result<OwnedFd, Error> {
        // Learn the pid first, so the receiving program does not get our
        // `P` frame and this program can reap the process.
        self.pid()?;
        let mut link = self.into_link()?;
        link.wait_at_most(crate::default_timeout());
        link.send("sending commands")?;
        link.socket.take().ok_or_else(|| link.broken_error())
    }

    /// Continues preparing a process received from another program (which
    /// called [`to_fh`](Fork::to_fh)). The process keeps everything it was
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
        Fork::from_socket(fd.into(), None, Origin::FromFh)
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
        link.broken.is_some() || link.socket.is_none() || link.death_note().is_some()
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
        let link = self.link()?;
        if let Some(socket) = &link.socket {
            rustix::net::shutdown(socket, rustix::net::Shutdown::Write)
                .map_err(|e| link.io_error("shutting down", e.into()))?;
        }
        Ok(())
    }
}

#[cfg(feature = "tokio")]
enum AsyncFailure {
    Error(Error),
    /// The process closed the socket before answering.
    Closed,
}

/// Sends the queued commands and reads the answer to `run`, asynchronously.
#[cfg(feature = "tokio")]
async fn async_exchange(
    link: &mut Link,
    stream: &mut tokio::net::UnixStream,
    doing: &str,
) -> Result<(), AsyncFailure> {
    use tokio::io::Interest;

    loop {
        let sent = stream
            .async_io(Interest::WRITABLE, || {
                link.outbox.send_some(stream.as_fd(), true)
            })
            .await;
        match sent {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) if is_peer_gone(&e) => return Err(AsyncFailure::Closed),
            Err(e) => return Err(AsyncFailure::Error(link.io_error(doing, e))),
        }
    }
    loop {
        let taken = link
            .replies
            .take_with_sender()
            .map_err(|e| AsyncFailure::Error(link.protocol_error(e)))?;
        if let Some((reply, sender)) = taken {
            match link.note(reply, sender).map_err(AsyncFailure::Error)? {
                Reply::Pid(_) => continue,
                Reply::Started(_) => return Ok(()),
                other => return Err(AsyncFailure::Error(link.unexpected(other))),
            }
        }
        let wanted = link
            .replies
            .wanted(link.reply_budget())
            .map_err(|e| AsyncFailure::Error(link.protocol_error(e)))?;
        let mut chunk = vec![0u8; wanted];
        let mut sender = None;
        let ask = link.verify_pids;
        let read = stream
            .async_io(Interest::READABLE, || {
                if ask {
                    fdpass::recv_with_fds_from(
                        stream.as_fd(),
                        &mut chunk,
                        &mut std::collections::VecDeque::new(),
                        true,
                        &mut sender,
                    )
                } else {
                    let flags = rustix::net::RecvFlags::DONTWAIT;
                    Ok(rustix::net::recv(stream.as_fd(), &mut chunk, flags)?.0)
                }
            })
            .await;
        match read {
            Ok(0) => {
                link.replies
                    .at_end()
                    .map_err(|e| AsyncFailure::Error(link.protocol_error(e)))?;
                return Err(AsyncFailure::Closed);
            }
            Ok(n) => link.replies.extend_from(&chunk[..n], sender),
            Err(e) if is_peer_gone(&e) => return Err(AsyncFailure::Closed),
            Err(e) => return Err(AsyncFailure::Error(link.io_error(doing, e))),
        }
    }
}

/// A reply buffer that asks the kernel who sent each frame when pids must
/// be verified.
fn replies_for(verify_pids: bool) -> proto::ReplyBuffer {
    if verify_pids {
        proto::ReplyBuffer::asking_senders()
    } else {
        proto::ReplyBuffer::default()
    }
}

fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    Ok(rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

/// True for errors meaning the other end has gone.
fn is_peer_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset | io::ErrorKind::NotConnected
    )
}

/// What the RPC client uses of a link.
impl Link {
    pub(crate) fn socket(&self) -> Option<&OwnedFd> {
        self.socket.as_ref()
    }

    pub(crate) fn outbox(&mut self) -> &mut Outbox {
        &mut self.outbox
    }

    pub(crate) fn name(&self) -> &ProcessName {
        &self.name
    }

    pub(crate) fn process(&self) -> Option<&Process> {
        self.process.as_ref()
    }

    /// Takes a reply read by someone else (the RPC client reads replies and
    /// frames together): the pid bookkeeping, and errors for `E` frames.
    pub(crate) fn take_reply(&mut self, reply: Reply, sender: Option<u32>) -> Result<Reply, Error> {
        let reply = self.note(reply, sender)?;
        match reply {
            Reply::Error { .. } => Err(self.unexpected(reply)),
            other => Ok(other),
        }
    }

    /// The process closed its socket before `S`: why.
    pub(crate) fn ended_before_start(&mut self, doing: &str) -> Error {
        self.explain_end(doing)
    }

    /// Whether the kernel must confirm who sends this process's frames.
    pub(crate) fn verifies_pids(&self) -> bool {
        self.verify_pids
    }

    /// The error for a reply that makes no sense here.
    pub(crate) fn protocol(&self, source: proto::ProtocolError) -> Error {
        self.protocol_error(source)
    }
}

impl Link {
    /// An empty link that owns nothing.
    fn detached() -> Link {
        Link {
            owner: std::process::id(),
            socket: None,
            outbox: Outbox::default(),
            name: ProcessName {
                pid: None,
                origin: Origin::FromFh,
            },
            process: None,
            template: Weak::new(),
            unchecked_names: true,
            pid_frame_seen: false,
            verify_pids: true,
            unconfirmed: false,
            deadline: None,
            timeout: None,
            replies: proto::ReplyBuffer::default(),
            deferred: None,
            broken: Some("the Fork was taken apart".into()),
            death: None,
        }
    }

    fn check_owner(&self) -> Result<(), Error> {
        let current = std::process::id();
        if self.owner == current {
            Ok(())
        } else {
            Err(Error::ForeignFork {
                owner: self.owner,
                current,
            })
        }
    }

    fn learn_pid(&mut self, pid: u32) {
        if self.name.pid.is_none() {
            self.name.pid = Some(pid);
            self.process = Some(if self.verify_pids {
                Process::foreign(pid)
            } else {
                Process::child(pid)
            });
        }
    }

    /// Queues a command with `add`; a command that cannot be encoded is
    /// reported by the next sending call.
    fn queue(&mut self, add: impl FnOnce(&mut Outbox) -> Result<(), proto::ProtocolError>) {
        if let Err(source) = add(&mut self.outbox) {
            let process = self.name.clone();
            self.defer(Error::Encode { process, source });
        }
    }

    fn defer(&mut self, error: Error) {
        if self.deferred.is_none() && self.broken.is_none() {
            self.deferred = Some(error);
        }
    }

    fn broken_error(&self) -> Error {
        Error::Broken {
            process: self.name.clone(),
            cause: self
                .broken
                .clone()
                .unwrap_or_else(|| "the process was handed over".into()),
        }
    }

    /// Reports a deferred error once, then stays broken.
    fn usable(&mut self) -> Result<(), Error> {
        if let Some(error) = self.deferred.take() {
            self.broken = Some(error.to_string());
            return Err(error);
        }
        if self.broken.is_some() || self.socket.is_none() {
            return Err(self.broken_error());
        }
        Ok(())
    }

    /// The waits of the next calls end `timeout` from now.
    fn wait_at_most(&mut self, timeout: Option<Duration>) {
        self.timeout = timeout;
        self.deadline = crate::deadline::from_now(timeout);
    }

    /// The process did not answer before the deadline while `doing`: say
    /// what state it (and its template) is in.
    fn timeout_error(&self, doing: &str) -> Error {
        let mut state = String::new();
        if let Some(pid) = self.name.pid {
            match crate::process::describe_state(pid) {
                Some(words) => state.push_str(&format!("; it is {words}")),
                None => state.push_str("; it is gone"),
            }
        }
        if let Origin::Fork {
            template: Some(template),
        } = self.name.origin
        {
            match crate::process::describe_state(template) {
                Some(words) => state.push_str(&format!("; its template {template} is {words}")),
                None => state.push_str(&format!("; its template {template} is gone")),
            }
        }
        Error::Timeout {
            process: self.name.clone(),
            doing: doing.to_owned(),
            timeout: self.timeout.unwrap_or_default(),
            state,
        }
    }

    fn io_error(&self, doing: &str, source: io::Error) -> Error {
        Error::Io {
            process: self.name.clone(),
            doing: doing.to_owned(),
            source,
        }
    }

    fn protocol_error(&self, source: proto::ProtocolError) -> Error {
        Error::Protocol {
            process: self.name.clone(),
            source,
        }
    }

    fn no_pid(&self) -> Error {
        self.protocol_error(proto::ProtocolError::Malformed {
            tag: proto::Tag(proto::tag::STARTED),
            what: "the process started without saying its pid first",
        })
    }

    /// A reply that has no place here (or an error reply).
    fn unexpected(&mut self, reply: Reply) -> Error {
        match reply {
            Reply::Error { kind, message } => {
                self.broken = Some(format!("{kind}: {message}"));
                Error::Refused {
                    process: self.name.clone(),
                    kind,
                    message,
                }
            }
            Reply::Pid(_) => self.protocol_error(proto::ProtocolError::Malformed {
                tag: proto::Tag(proto::tag::PID_REPLY),
                what: "the process sent its pid twice",
            }),
            Reply::Started(_) => self.protocol_error(proto::ProtocolError::Malformed {
                tag: proto::Tag(proto::tag::STARTED),
                what: "the process started a function nobody asked for",
            }),
            Reply::InSync(_) => self.protocol_error(proto::ProtocolError::Malformed {
                tag: proto::Tag(proto::tag::IN_SYNC),
                what: "the process answered a sync nobody asked for",
            }),
        }
    }

    /// The wire form of `function`, checked against this program's registry
    /// where that is meaningful.
    fn target(&self, function: &FunctionRef, run: bool) -> Result<Target, Error> {
        let (kind, macro_name) = if run {
            ("function", "function")
        } else {
            ("initialiser", "initialiser")
        };
        if let FunctionRepr::Name(name) = &function.repr {
            if !self.unchecked_names {
                let found = if run {
                    registry::lookup_run(name).map(|_| ())
                } else {
                    registry::lookup_init(name).map(|_| ())
                };
                if !matches!(found, Lookup::Found(())) {
                    return Err(Error::UnknownFunction {
                        kind,
                        name: name.clone(),
                        macro_name,
                    });
                }
            }
        }
        function.target().ok_or_else(|| Error::NotInExecutable {
            name: function.label().to_owned(),
        })
    }

    fn queue_run(&mut self, function: &FunctionRef) -> Result<(), Error> {
        self.usable()?;
        let target = self.target(function, true)?;
        self.outbox.run(&target).map_err(|source| Error::Encode {
            process: self.name.clone(),
            source,
        })
    }

    /// Sends everything queued.
    fn send(&mut self, doing: &str) -> Result<(), Error> {
        self.usable()?;
        let Some(socket) = &self.socket else {
            return Err(self.broken_error());
        };
        match self.outbox.send_all_until(socket.as_fd(), self.deadline) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                Err(self.timeout_error(&format!("{doing} (its socket is full)")))
            }
            Err(e) if is_peer_gone(&e) => Err(self.explain_end(doing)),
            Err(e) => Err(self.io_error(doing, e)),
        }
    }

    /// Reads one reply, learning the pid on the way.
    fn read(&mut self, doing: &str) -> Result<Reply, Error> {
        let Some(socket) = &self.socket else {
            return Err(self.broken_error());
        };
        let budget = self.reply_budget();
        match self
            .replies
            .next_until(socket.as_fd(), budget, self.deadline)
        {
            Ok(Some((reply, sender))) => self.note(reply, sender),
            Ok(None) => Err(self.explain_end(doing)),
            Err(proto::ReadError::Io(e)) if e.kind() == io::ErrorKind::TimedOut => {
                Err(self.timeout_error(doing))
            }
            Err(proto::ReadError::Io(e)) if is_peer_gone(&e) => Err(self.explain_end(doing)),
            Err(proto::ReadError::Io(e)) => Err(self.io_error(doing, e)),
            Err(proto::ReadError::Protocol(e)) => {
                let error = self.protocol_error(e);
                self.broken = Some(error.to_string());
                Err(error)
            }
        }
    }

    /// See [`Fork::is_spare_alive`]. Only for a process that was sent
    /// nothing: then its only possible frame is `P`.
    fn is_idle_alive(&mut self) -> bool {
        use rustix::net::RecvFlags;
        if !self.pid_frame_seen {
            let Some(socket) = &self.socket else {
                return false;
            };
            let mut frame = [0u8; proto::PID_FRAME_LEN];
            match rustix::net::recv(socket, &mut frame, RecvFlags::DONTWAIT) {
                // Not announced yet: still starting.
                Err(rustix::io::Errno::AGAIN) => return true,
                Ok((0, _)) | Err(_) => return false,
                Ok((n, _)) => {
                    self.replies.extend(&frame[..n]);
                    match self.replies.take() {
                        Ok(Some(reply @ Reply::Pid(_))) => {
                            if self.note(reply, None).is_err() {
                                return false;
                            }
                        }
                        // Part of a frame: let `run` read the rest.
                        Ok(None) => return true,
                        Ok(Some(_)) | Err(_) => return false,
                    }
                }
            }
        }
        let Some(socket) = &self.socket else {
            return false;
        };
        let mut byte = [0u8; 1];
        matches!(
            rustix::net::recv(socket, &mut byte, RecvFlags::PEEK | RecvFlags::DONTWAIT),
            Err(rustix::io::Errno::AGAIN)
        )
    }

    /// How far ahead of a frame boundary a read may go: both `P` and `S`
    /// while `P` is certainly still to come, else one of them (a process
    /// received with `new_from_fh` may have had its `P` read elsewhere).
    fn reply_budget(&self) -> usize {
        if self.pid_frame_seen || self.name.origin == Origin::FromFh {
            proto::PID_FRAME_LEN
        } else {
            2 * proto::PID_FRAME_LEN
        }
    }

    /// Keeps track of the pid frames in replies: the first `P` names the
    /// process, a second is a protocol error; `S` repeats the pid.
    ///
    /// `sender` is the pid the kernel says sent the frame, where known; it
    /// decides whether a process this program did not make is believed.
    fn note(&mut self, reply: Reply, sender: Option<u32>) -> Result<Reply, Error> {
        match reply {
            Reply::Pid(pid) if !self.pid_frame_seen => {
                self.pid_frame_seen = true;
                self.claim(pid, sender, false)?;
                Ok(reply)
            }
            Reply::Started(pid) | Reply::InSync(pid) => {
                self.claim(pid, sender, true)?;
                Ok(reply)
            }
            Reply::Pid(_) => {
                let error = self.unexpected(reply);
                self.broken = Some(error.to_string());
                Err(error)
            }
            Reply::Error { .. } => Ok(reply),
        }
    }

    /// A process says it is `pid`. A process this program made is believed;
    /// any other only when the kernel confirms that `pid` sent the frame.
    /// An unconfirmed `P` (sent before the check could be made) is ignored;
    /// an unconfirmed `S` or `I`, sent after this program asked, is a lie.
    fn claim(&mut self, pid: u32, sender: Option<u32>, checkable: bool) -> Result<(), Error> {
        if !self.verify_pids || sender == Some(pid) {
            self.learn_pid(pid);
            return Ok(());
        }
        if !checkable {
            return Ok(());
        }
        let error = self.protocol_error(proto::ProtocolError::WrongPid {
            claimed: pid,
            sender,
        });
        self.broken = Some(error.to_string());
        Err(error)
    }

    /// The process closed its socket while `doing`: find out why.
    fn explain_end(&mut self, doing: &str) -> Error {
        // What did it say before it went?
        while let Some(socket) = &self.socket {
            let budget = self.reply_budget();
            match self.replies.next_with_sender(socket.as_fd(), budget) {
                Ok(Some((reply, sender))) => match self.note(reply, sender) {
                    Ok(reply @ (Reply::Error { .. } | Reply::Started(_))) => {
                        return self.unexpected(reply);
                    }
                    Ok(Reply::Pid(_) | Reply::InSync(_)) => {}
                    Err(error) => return error,
                },
                Err(proto::ReadError::Protocol(e)) => return self.protocol_error(e),
                Ok(None) | Err(proto::ReadError::Io(_)) => break,
            }
        }
        self.broken = Some(format!("the process ended before {doing}"));
        let ending = Ending(
            self.process
                .as_ref()
                .and_then(|p| p.wait_timeout(EXIT_GRACE)),
        );
        let cause = if self.name.pid.is_none() {
            self.template.upgrade().and_then(|t| lock(&t).death_note())
        } else {
            None
        };
        Error::Ended {
            process: self.name.clone(),
            doing: doing.to_owned(),
            ending,
            cause,
        }
    }

    /// If this (template) process has ended, why; `None` while it lives.
    fn death_note(&mut self) -> Option<String> {
        if let Some(note) = &self.death {
            return Some(note.clone());
        }
        // Read only what is already waiting: a live template has nothing
        // to say but its pid, and must not be waited for.
        let mut said = None;
        let ended = loop {
            let socket = self.socket.as_ref()?;
            let buffered = match self.replies.take_with_sender() {
                Ok(Some(reply)) => Some(reply),
                Ok(None) => None,
                Err(_) => break true,
            };
            if buffered.is_none() {
                let mut fds = [rustix::event::PollFd::new(
                    socket,
                    rustix::event::PollFlags::IN,
                )];
                let zero = rustix::event::Timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                if !matches!(rustix::event::poll(&mut fds, Some(&zero)), Ok(1)) {
                    // Nothing more: alive, unless it said why it is leaving
                    // (a serving process exits after an `E` frame).
                    break said.is_some();
                }
            }
            let budget = self.reply_budget();
            let next = match buffered {
                Some(reply) => Ok(Some(reply)),
                None => self.replies.next_with_sender(socket.as_fd(), budget),
            };
            match next {
                Ok(Some((Reply::Pid(pid), sender))) => {
                    let _ = self.claim(pid, sender, false);
                }
                Ok(Some((Reply::Error { kind, message }, _))) => {
                    said = Some(format!("{kind}: {message}"))
                }
                Ok(Some((Reply::Started(_) | Reply::InSync(_), _))) => {}
                Ok(None) | Err(_) => break true,
            }
        };
        if !ended {
            return None;
        }
        let ending = Ending(
            self.process
                .as_ref()
                .and_then(|p| p.wait_timeout(EXIT_GRACE)),
        );
        let who = ProcessName {
            pid: self.name.pid,
            origin: self.name.origin,
        };
        let note = match said {
            Some(said) => format!("its template, {who}, refused a command: {said}"),
            None => format!("its template, {who}, exited{ending}"),
        };
        self.death = Some(note.clone());
        Some(note)
    }

    /// After `S`: the socket is the caller's now.
    fn hand_over(mut self) -> Result<(UnixStream, Process), Error> {
        let process = self.process.clone().ok_or_else(|| self.no_pid())?;
        let socket = self.socket.take().ok_or_else(|| self.broken_error())?;
        Ok((UnixStream::from(socket), process))
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        let Some(socket) = self.socket.take() else {
            return;
        };
        if self.owner != std::process::id() {
            // A copy inherited through a fork of the program: the descriptor
            // number may mean something else here. Leave it alone.
            std::mem::forget(socket);
            return;
        }
        if self.name.pid.is_some() || self.verify_pids {
            // Closing makes the process exit; its `Process` reaps it (or
            // its creator does, for a process this program did not make).
            return;
        }
        // The pid is on its way: the process sends it before it exits. Let
        // the reaper read it and wait.
        let _ = rustix::net::shutdown(&socket, rustix::net::Shutdown::Write);
        reaper::adopt_unnamed(socket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::mpsc;

    /// A template link whose "process" is the test's end of a socket pair.
    fn fake_template() -> (Fork, UnixStream) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        (
            Fork::from_socket(ours.into(), Some(1), Origin::Exec),
            theirs,
        )
    }

    /// Runs `f` on a thread; fails if it does not return within 5 seconds.
    fn within_seconds<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || tx.send(f()));
        rx.recv_timeout(Duration::from_secs(5)).expect("it blocked")
    }

    #[test]
    fn a_live_template_with_an_unread_pid_has_no_death_note() {
        let (template, mut process_end) = fake_template();
        process_end
            .write_all(&proto::encode_reply(&Reply::Pid(1)))
            .unwrap();
        let note = within_seconds(move || {
            let note = lock(&template.shared).death_note();
            (note, template)
        });
        assert_eq!(note.0, None, "the template is alive");
        drop(process_end);
    }

    #[test]
    fn a_dead_template_says_why() {
        let (template, mut process_end) = fake_template();
        process_end
            .write_all(&proto::encode_reply(&Reply::Pid(1)))
            .unwrap();
        process_end
            .write_all(&proto::encode_reply(&Reply::Error {
                kind: proto::ChildErrorKind::Protocol,
                message: "bad".into(),
            }))
            .unwrap();
        // Still open: the `E` frame alone means it is leaving.
        let (note, template) = within_seconds(move || {
            let note = lock(&template.shared).death_note();
            (note, template)
        });
        assert!(
            note.as_ref()
                .is_some_and(|n| n.contains("refused a command: protocol error: bad")),
            "{note:?}"
        );
        drop(process_end);
        let note = within_seconds(move || lock(&template.shared).death_note());
        assert!(note.is_some(), "the note is kept");
    }
}
