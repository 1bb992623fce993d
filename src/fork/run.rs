//! Running a process's function, and the calls that wait for the process:
//! its pid, its [`Process`] handle, `run` blocking and async.

use std::os::unix::net::UnixStream;
use std::time::Duration;

#[cfg(feature = "tokio")]
use super::Link;
use super::link::Kin;
use super::{Fork, lock};
use crate::error::{Error, Origin};
use crate::process::Process;
use crate::proto::Reply;
use crate::registry::{FunctionRef, IntoRun};
#[cfg(feature = "tokio")]
use crate::transport::is_peer_gone;

impl Fork {
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
            (Some(pid), false) => {
                // As documented: what was queued goes now.
                if !link.outbox.is_empty() {
                    link.send("sending commands")?;
                }
                return Ok(pid);
            }
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
        link.process.clone().ok_or_else(|| link.no_process())
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
        self.start_run(function.into_run(), crate::default_timeout(), false)
            .map(|(socket, _)| socket)
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
        match self.start_run(function.into_run(), timeout, true)? {
            (socket, Ok(process)) => Ok((socket, process)),
            (_, Err(error)) => Err(error),
        }
    }

    /// `run`, with or without a [`Process`] handle (`need_process`: refused
    /// before anything is sent for a process that has none here).
    fn start_run(
        self,
        function: FunctionRef,
        timeout: Option<Duration>,
        need_process: bool,
    ) -> Result<(UnixStream, Result<Process, Error>), Error> {
        let mut link = self.into_link()?;
        link.wait_at_most(timeout);
        link.needs_socket("run")?;
        if need_process && link.kin == Kin::Remote {
            return Err(link.no_process());
        }
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
    #[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
    pub async fn run_async(self, function: impl IntoRun) -> Result<tokio::net::UnixStream, Error> {
        self.start_run_async(function.into_run(), false)
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
    #[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
    pub async fn run_async_with_process(
        self,
        function: impl IntoRun,
    ) -> Result<(tokio::net::UnixStream, Process), Error> {
        match self.start_run_async(function.into_run(), true).await? {
            (socket, Ok(process)) => Ok((socket, process)),
            (_, Err(error)) => Err(error),
        }
    }

    /// `run_async`, with or without a [`Process`] handle (`need_process`:
    /// refused before anything is sent for a process that has none here).
    #[cfg(feature = "tokio")]
    async fn start_run_async(
        self,
        function: FunctionRef,
        need_process: bool,
    ) -> Result<(tokio::net::UnixStream, Result<Process, Error>), Error> {
        let mut link = self.into_link()?;
        link.needs_socket("run_async")?;
        if need_process && link.kin == Kin::Remote {
            return Err(link.no_process());
        }
        link.queue_run(&function)?;
        let doing = format!("running `{}`", function.label());
        // The link keeps its socket (to explain a failure, and to reap a
        // process that failed like any other); tokio waits on a duplicate.
        let stream = link
            .transport
            .as_ref()
            .ok_or_else(|| link.broken_error())?
            .try_clone()
            .and_then(|copy| match copy.into_socket() {
                Ok(socket) => Ok(UnixStream::from(socket)),
                Err(_) => Err(std::io::ErrorKind::Unsupported.into()),
            })
            .and_then(|socket| {
                socket.set_nonblocking(true)?;
                tokio::net::UnixStream::from_std(socket)
            });
        let stream = match stream {
            Ok(stream) => stream,
            Err(e) => return Err(link.io_error(&doing, e)),
        };
        let timeout = crate::default_timeout();
        let exchange = link.exchange_async(&stream, &doing);
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
        match outcome {
            Ok(()) => {
                let process = link.process.clone().ok_or_else(|| link.no_process());
                if process.is_err() && link.kin != Kin::Remote {
                    return Err(link.no_process());
                }
                // The stream is the caller's; the link's duplicate closes
                // without a word to the process.
                drop(link.transport.take());
                Ok((stream, process))
            }
            Err(failure) => {
                drop(stream);
                if let Some(transport) = &link.transport {
                    let _ = transport.set_blocking();
                }
                Err(match failure {
                    AsyncFailure::Error(e) => e,
                    AsyncFailure::Closed => link.explain_end(&doing),
                })
            }
        }
    }
}

/// Why an asynchronous start failed.
#[cfg(feature = "tokio")]
pub(super) enum AsyncFailure {
    Error(Error),
    /// The process closed the socket before answering.
    Closed,
}

#[cfg(feature = "tokio")]
impl Link {
    /// Sends the queued commands and reads the answer to `run`,
    /// asynchronously; `stream` is a tokio stream on a duplicate of the
    /// link's socket, used to wait for readiness.
    pub(super) async fn exchange_async(
        &mut self,
        stream: &tokio::net::UnixStream,
        doing: &str,
    ) -> Result<(), AsyncFailure> {
        use tokio::io::Interest;

        loop {
            let Some(transport) = &self.transport else {
                return Err(AsyncFailure::Error(self.broken_error()));
            };
            let outbox = &mut self.outbox;
            let sent = stream
                .async_io(Interest::WRITABLE, || outbox.send_some(transport, true))
                .await;
            match sent {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) if is_peer_gone(&e) => return Err(AsyncFailure::Closed),
                Err(e) => return Err(AsyncFailure::Error(self.io_error(doing, e))),
            }
        }
        loop {
            let taken = self
                .replies
                .take_with_sender()
                .map_err(|e| AsyncFailure::Error(self.protocol_error(e)))?;
            if let Some((reply, sender)) = taken {
                match self.note(reply, sender).map_err(AsyncFailure::Error)? {
                    Reply::Pid(_) => continue,
                    Reply::Started(_) => return Ok(()),
                    other => return Err(AsyncFailure::Error(self.unexpected(other))),
                }
            }
            let wanted = self
                .replies
                .wanted(self.reply_budget())
                .map_err(|e| AsyncFailure::Error(self.protocol_error(e)))?;
            let mut chunk = vec![0u8; wanted];
            let mut sender = None;
            let ask = self.kin == Kin::Foreign;
            let Some(transport) = &self.transport else {
                return Err(AsyncFailure::Error(self.broken_error()));
            };
            let read = stream
                .async_io(Interest::READABLE, || {
                    if ask {
                        let mut fds = std::collections::VecDeque::new();
                        transport.recv_from(&mut chunk, &mut fds, true, &mut sender)
                    } else {
                        transport.recv_bytes(&mut chunk)
                    }
                })
                .await;
            match read {
                Ok(0) => {
                    self.replies
                        .at_end()
                        .map_err(|e| AsyncFailure::Error(self.protocol_error(e)))?;
                    return Err(AsyncFailure::Closed);
                }
                Ok(n) => self.replies.extend_from(&chunk[..n], sender),
                Err(e) if is_peer_gone(&e) => return Err(AsyncFailure::Closed),
                Err(e) => return Err(AsyncFailure::Error(self.io_error(doing, e))),
            }
        }
    }
}
