//! Preparing a process: the commands that only queue (`send_arg`,
//! `send_fh`, `eval`, `require`, the directory, environment and parent
//! death of the function), which is why they cannot fail and chain.

use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::{Fork, lock};
use crate::proto;
use crate::registry::IntoInit;

impl Fork {
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
        {
            let mut link = lock(&self.shared);
            match link.needs_socket("send_fh") {
                Ok(()) => link.outbox.fd(fd.into()),
                Err(error) => link.defer(error),
            }
        }
        self
    }

    /// Queues a call of an initialiser in the process, with byte-string
    /// arguments, before anything else it is later asked to do.
    ///
    /// `init` is a registered name (see [`initialiser!`](crate::initialiser))
    /// or a function value `fn(&[Vec<u8>]) -> impl Outcome`. State it builds
    /// in statics is shared copy-on-write by every process later forked from
    /// this one. If it fails or panics, the process exits and the next
    /// `run`, `pid` or `fork` of it reports [`Error::Refused`](crate::Error::Refused) with the
    /// message.
    ///
    /// An initialiser must not leave threads running if the process is to
    /// be forked: a template forks with a raw `clone` that only a
    /// single-threaded process survives (another thread could hold
    /// `malloc`'s lock), so a template with threads refuses every fork
    /// ([`Error::Refused`](crate::Error::Refused) with
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
    /// then reported by the process as [`Error::Refused`](crate::Error::Refused).
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
            let parent = if link.is_child() {
                link.owner
            } else {
                0 // not ours: whichever parent it has then
            };
            link.outbox.parent_death(die.then_some(parent));
        }
        self
    }

    /// Sets what `ps` shows for the process (its command line, from now on,
    /// also in every process later forked from it), instead of the titles
    /// anyfork gives: `myprog [anyfork template]` while it serves,
    /// `myprog [anyfork worker my_crate::job]` once it runs a function and
    /// `myprog [anyfork rpc my_crate::job]` for an RPC server. Cut to the
    /// room the process's command line and environment had (usually a
    /// few hundred bytes or more); needs glibc.
    ///
    /// ```
    /// fn serve_forever(_socket: std::os::unix::net::UnixStream, _args: anyfork::Args) {
    ///     std::thread::park();
    /// }
    /// let (_socket, process) = anyfork::Fork::new()?
    ///     .process_title("my-service worker 3")
    ///     .run_with_process(serve_forever)?;
    /// # if cfg!(target_env = "gnu") {
    /// let cmdline = std::fs::read(format!("/proc/{}/cmdline", process.id()))?;
    /// assert!(cmdline.starts_with(b"my-service worker 3"));
    /// # }
    /// process.kill(anyfork::Signal::KILL)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn process_title(self, title: impl AsRef<str>) -> Self {
        lock(&self.shared).queue(|outbox| outbox.title(title.as_ref().as_bytes()));
        self
    }

    /// Sets the largest command the process accepts from now on (default
    /// [`DEFAULT_MAX_FRAME_LEN`](crate::DEFAULT_MAX_FRAME_LEN), 1 GiB). A
    /// larger one makes it exit with a protocol error. Inherited by forks.
    pub fn max_frame_len(self, bytes: u64) -> Self {
        lock(&self.shared).outbox.limit(bytes);
        self
    }
}
