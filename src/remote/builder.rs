//! Making a connection: [`Builder`], the handshake from the parent's side,
//! and the ssh command line.

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::command_line::{serve_arg, shell_quote};
use super::connection::{Connected, Remote, wait_at_most};
use super::error::{self, Error};
use super::handshake::{self, Unheard};
use super::pump::Keepalive;
use super::stderr::StderrTail;
use super::wire::Hello;
use crate::transport::Transport;

/// How to make a [`Remote`] connection: timeouts, keepalive, names, and
/// what to run on the far side.
///
/// ```no_run
/// use std::time::Duration;
/// let remote = anyfork::remote::Remote::builder()
///     .keepalive(Duration::from_secs(2), Duration::from_secs(6))
///     .ssh_option("-J")
///     .ssh_option("jump.example.org")
///     .ssh("worker@compute-7")?;
/// # Ok::<(), anyfork::remote::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Builder {
    name: Option<String>,
    keepalive: Option<(Duration, Duration)>,
    handshake_timeout: Duration,
    forward_stderr: bool,
    program: Option<PathBuf>,
    ssh_options: Vec<OsString>,
    ship: bool,
}

impl Default for Builder {
    fn default() -> Builder {
        Builder {
            name: None,
            keepalive: Some((Duration::from_secs(5), Duration::from_secs(20))),
            handshake_timeout: Duration::from_secs(30),
            forward_stderr: true,
            program: None,
            ssh_options: Vec::new(),
            ship: false,
        }
    }
}

impl Remote {
    /// A [`Builder`] with the defaults: keepalive every 5 s, given up after
    /// 20 s of silence; 30 s for the handshake; the far side's stderr
    /// passed on to this program's.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Runs `command`, whose stdin and stdout must reach a program linking
    /// anyfork started with [`serve_arg`] (or `ANYFORK_SERVE=mux:1` in its
    /// environment), and connects to it, with the [default
    /// settings](Remote::builder). Any command works: `ssh host prog
    /// --anyfork-serve=mux:1`, `kubectl exec -i pod -- prog …`, `docker exec
    /// -i box prog …`, `sudo -u nobody prog …`, or simply this program's own
    /// executable, as here:
    ///
    /// ```
    /// use std::process::Command;
    /// use anyfork::remote::{Remote, serve_arg};
    ///
    /// fn double(n: u64) -> u64 {
    ///     n * 2
    /// }
    ///
    /// let mut command = Command::new(std::env::current_exe()?);
    /// command.arg(serve_arg());
    /// let remote = Remote::command(command)?;
    /// let rpc = remote.new_exec()?.rpc(double).start()?;
    /// assert_eq!(rpc.call_blocking(21)?, 42);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// See [`Builder::command`].
    pub fn command(command: Command) -> Result<Remote, Error> {
        Remote::builder().command(command)
    }

    /// Connects over `ssh destination`, running this program's executable
    /// at the same path there; see [`Builder::ssh`].
    ///
    /// # Errors
    ///
    /// See [`Builder::command`].
    pub fn ssh(destination: &str) -> Result<Remote, Error> {
        Remote::builder().ssh(destination)
    }

    /// Connects over a pair of byte streams that reach a relay: `read`
    /// carries what it says, `write` what it is told (a creator of your
    /// own: a socket, a serial line, a pair of pipes); the
    /// `new_from_fh` of AnyEvent::Fork::Remote.
    ///
    /// # Errors
    ///
    /// See [`Builder::command`].
    pub fn from_streams(
        read: impl Into<OwnedFd>,
        write: impl Into<OwnedFd>,
    ) -> Result<Remote, Error> {
        Remote::builder().streams(read, write)
    }
}

impl Builder {
    /// The connection's name in messages (default: the command line).
    pub fn name(mut self, name: impl Into<String>) -> Builder {
        self.name = Some(name.into());
        self
    }

    /// Pings the far side every `interval` and gives the connection up
    /// after `timeout` without a word from it ([`Error::Lost`] for every
    /// process on it). The far side, in turn, exits when this program
    /// falls silent for four intervals and a second.
    pub fn keepalive(mut self, interval: Duration, timeout: Duration) -> Builder {
        self.keepalive = Some((interval.max(Duration::from_millis(1)), timeout));
        self
    }

    /// No keepalive: a silent peer is noticed only when the transport says
    /// the connection ended.
    pub fn no_keepalive(mut self) -> Builder {
        self.keepalive = None;
        self
    }

    /// How long the far side may take to say hello (default 30 s: an ssh
    /// login may be slow).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Builder {
        self.handshake_timeout = timeout;
        self
    }

    /// Whether the command's stderr (the far side's panics and logs) is
    /// passed on to this program's stderr (default: yes). Its last lines
    /// are kept for error messages either way.
    pub fn forward_stderr(mut self, forward: bool) -> Builder {
        self.forward_stderr = forward;
        self
    }

    /// For [`ssh`](Builder::ssh): the program to run on the far side
    /// (default: this program's executable's path here).
    pub fn program(mut self, path: impl Into<PathBuf>) -> Builder {
        self.program = Some(path.into());
        self
    }

    /// Ships this program's executable to the far side if it is not
    /// there yet (see [`ship`](super::ship)): with [`ssh`](Builder::ssh)
    /// the command becomes the bootstrap; with
    /// [`command`](Builder::command) your command must run
    /// [`bootstrap_script`](super::ship::bootstrap_script) in `sh`.
    pub fn ship_executable(mut self, ship: bool) -> Builder {
        self.ship = ship;
        self
    }

    /// For [`ssh`](Builder::ssh): one more argument for ssh before the
    /// destination (`-p`, `2222`, `-i`, a key, `-J`, a jump host, `-o`,
    /// an option).
    pub fn ssh_option(mut self, option: impl Into<OsString>) -> Builder {
        self.ssh_options.push(option.into());
        self
    }

    /// The command [`ssh`](Builder::ssh) runs: `ssh -T -o BatchMode=yes
    /// [options] destination 'program' --anyfork-serve=mux:1`.
    pub fn ssh_command(&self, destination: &str) -> Result<Command, Error> {
        let mut command = Command::new("ssh");
        command
            .arg("-T")
            .arg("-o")
            .arg("BatchMode=yes")
            .args(&self.ssh_options)
            .arg(destination)
            .arg("--");
        match self.ship {
            true => {
                command.arg(super::ship::bootstrap_command());
            }
            false => {
                let program = match &self.program {
                    Some(path) => path.clone(),
                    None => std::env::current_exe().map_err(|source| Error::Io {
                        connection: format!("ssh {destination}"),
                        doing: "finding this program's executable",
                        source,
                    })?,
                };
                let program = program.to_string_lossy().into_owned();
                command.arg(format!("{} {}", shell_quote(&program), serve_arg()));
            }
        }
        Ok(command)
    }

    /// Connects over `ssh destination` (see
    /// [`ssh_command`](Builder::ssh_command)): ssh's own configuration,
    /// keys and agent apply; `BatchMode` makes a login that would ask for a
    /// password fail at once instead of hanging.
    ///
    /// # Errors
    ///
    /// See [`command`](Builder::command).
    pub fn ssh(self, destination: &str) -> Result<Remote, Error> {
        let command = self.ssh_command(destination)?;
        let name = self
            .name
            .clone()
            .unwrap_or_else(|| format!("ssh {destination}"));
        self.name(name).start(command, true)
    }

    /// Runs `command` and connects to it (see [`Remote::command`]).
    ///
    /// # Errors
    ///
    /// - [`Error::Spawn`]: the command cannot start here;
    /// - [`Error::Ended`]: it ended before the handshake (ssh refused,
    ///   the program is missing or not executable there: the hint and its
    ///   stderr say which);
    /// - [`Error::NotAnyfork`]: something else answered;
    /// - [`Error::Skew`]: the far side runs another build or target;
    /// - [`Error::Timeout`]: no answer within the handshake timeout.
    pub fn command(self, command: Command) -> Result<Remote, Error> {
        self.start(command, false)
    }

    fn start(self, mut command: Command, ssh: bool) -> Result<Remote, Error> {
        let name = self.name.clone().unwrap_or_else(|| describe(&command));
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().map_err(|source| Error::Spawn {
            connection: name.clone(),
            source,
        })?;
        let pipes = (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let (Some(stdin), Some(stdout), Some(stderr)) = pipes else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::Io {
                connection: name,
                doing: "taking the command's pipes",
                source: std::io::ErrorKind::BrokenPipe.into(),
            });
        };
        let stderr = StderrTail::start(stderr, self.forward_stderr);
        let conn = match Transport::streams(stdout.into(), stdin.into()) {
            Ok(conn) => conn,
            Err(source) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::Io {
                    connection: name,
                    doing: "making the command's pipes non-blocking",
                    source,
                });
            }
        };
        self.connect(name, conn, Some(child), Some(stderr), ssh)
    }

    /// Connects over a pair of byte streams (see [`Remote::from_streams`]).
    ///
    /// # Errors
    ///
    /// As for [`command`](Builder::command), without a command.
    pub fn streams(
        self,
        read: impl Into<OwnedFd>,
        write: impl Into<OwnedFd>,
    ) -> Result<Remote, Error> {
        let name = self
            .name
            .clone()
            .unwrap_or_else(|| "a pair of streams".to_owned());
        let conn = Transport::streams(read.into(), write.into()).map_err(|source| Error::Io {
            connection: name.clone(),
            doing: "making the streams non-blocking",
            source,
        })?;
        self.connect(name, conn, None, None, false)
    }

    fn connect(
        self,
        name: String,
        conn: Transport,
        mut child: Option<Child>,
        stderr: Option<StderrTail>,
        ssh: bool,
    ) -> Result<Remote, Error> {
        let keepalive = self
            .keepalive
            .map(|(interval, timeout)| Keepalive { interval, timeout });
        let ours = handshake::ours(keepalive.map(|k| k.interval));
        let greeted = self.greet(&name, &conn, &ours, &mut child, stderr.as_ref(), ssh);
        let (far, inbound) = match greeted {
            Ok(heard) => heard,
            Err(error) => {
                // The command is of no use: end it and reap it.
                if let Some(child) = &mut child {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                return Err(error);
            }
        };
        Remote::start(Connected {
            name,
            conn,
            far,
            inbound,
            keepalive,
            child,
            stderr,
        })
    }

    /// The handshake (after the bootstrap, when shipping): `ours` said,
    /// the far side's hello heard and checked; returns it and what came
    /// after it.
    fn greet(
        &self,
        name: &str,
        conn: &Transport,
        ours: &Hello,
        child: &mut Option<Child>,
        stderr: Option<&StderrTail>,
        ssh: bool,
    ) -> Result<(Hello, Vec<u8>), Error> {
        let deadline = Instant::now() + self.handshake_timeout;
        let connection = || name.to_owned();
        let tail = |wait: Duration| stderr.map(|s| s.finish(wait)).unwrap_or_default();
        let say_hello = || {
            handshake::send(conn, ours, deadline).map_err(|source| Error::Io {
                connection: connection(),
                doing: "saying hello",
                source,
            })
        };
        if self.ship {
            super::ship::ship(conn, deadline).map_err(|why| {
                let tail = tail(Duration::from_millis(500));
                let why = match tail.trim() {
                    "" => why,
                    tail => format!("{why}; stderr: {tail}"),
                };
                Error::Ship {
                    connection: connection(),
                    why,
                }
            })?;
            // A bootstrap reads the executable with `head`, which may not
            // stop at its end on every system: then say hello only once
            // the relay has (below).
        } else if let Err(error) = say_hello() {
            match &error {
                // It ended: the read below says how.
                Error::Io { source, .. } if crate::transport::is_peer_gone(source) => {}
                _ => return Err(error),
            }
        }
        let (far, inbound) =
            handshake::receive(conn, deadline).map_err(|unheard| match unheard {
                Unheard::Ended => {
                    let status = child
                        .as_mut()
                        .and_then(|c| wait_at_most(c, Duration::from_secs(5)));
                    Error::Ended {
                        connection: connection(),
                        status,
                        hint: error::hint(status, ssh),
                        stderr: tail(Duration::from_secs(1)),
                    }
                }
                Unheard::NotAnyfork(said) => Error::NotAnyfork {
                    connection: connection(),
                    said: String::from_utf8_lossy(&said[..said.len().min(200)]).into_owned(),
                    stderr: tail(Duration::from_millis(200)),
                },
                Unheard::Fatal(why) => Error::Refused {
                    connection: connection(),
                    why,
                },
                Unheard::TimedOut => Error::Timeout {
                    connection: connection(),
                    after: self.handshake_timeout,
                    stderr: tail(Duration::ZERO),
                },
                Unheard::Io(source) => Error::Io {
                    connection: connection(),
                    doing: "reading the far side's hello",
                    source,
                },
            })?;
        if self.ship {
            say_hello()?;
        }
        if let Some(what) = handshake::mismatch(ours, &far) {
            return Err(Error::Skew {
                connection: connection(),
                what,
                ours: Box::new(ours.clone()),
                theirs: Box::new(far),
            });
        }
        Ok((far, inbound))
    }
}

/// A command line for messages.
fn describe(command: &Command) -> String {
    let mut words = vec![command.get_program().to_string_lossy().into_owned()];
    words.extend(command.get_args().map(|a| a.to_string_lossy().into_owned()));
    words.join(" ")
}
