//! [`Link`]: the parent's side of the template protocol with one serving
//! process, on any [`Transport`]: sending queued commands, reading replies
//! without reading past `S`, learning (and checking) the pid, explaining
//! why a process is gone, and what happens to the process when the link is
//! dropped.

use std::io;
use std::os::unix::net::UnixStream;
use std::sync::{Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use crate::error::{Error, Origin, ProcessName};
use crate::process::Process;
use crate::proto::{self, Outbox, Reply, Target};
use crate::reaper;
use crate::registry::{self, FunctionRef, FunctionRepr, Lookup};
use crate::transport::{Transport, is_peer_gone};

/// How long to wait for a process that closed its socket to be reaped, when
/// explaining why it is gone.
pub(super) const EXIT_GRACE: Duration = Duration::from_secs(2);

/// What a `Fork` shares with the processes forked from it: its link.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) link: Mutex<Link>,
}

pub(crate) fn lock(shared: &Shared) -> MutexGuard<'_, Link> {
    shared.link.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Where a process's pids come from and what they mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kin {
    /// A child of this program: its pid is believed, waited for and reaped.
    Child,
    /// A process of this machine that another program made (received with
    /// `new_from_fh`): its pid is believed only when the kernel confirms
    /// the sender, and it is never waited for or reaped here.
    Foreign,
    /// A process at the other end of a pair of byte streams: its pid is
    /// what it says, in its own pid namespace (another machine, perhaps);
    /// it has no [`Process`] handle here.
    Remote,
}

/// The parent's connection to one serving process.
#[derive(Debug)]
pub(crate) struct Link {
    /// The pid of the process that made this link: only it may use the
    /// socket.
    pub(super) owner: u32,
    /// `None` once handed over by `run` or `into_fh`.
    pub(super) transport: Option<Transport>,
    pub(super) outbox: Outbox,
    pub(super) name: ProcessName,
    pub(super) process: Option<Process>,
    /// The template this process was forked from.
    pub(super) template: Weak<Shared>,
    /// Names cannot be checked in the parent (libraries were loaded, or the
    /// process came from elsewhere).
    pub(super) unchecked_names: bool,
    /// Whether the process's `P` frame has been read.
    pub(super) pid_frame_seen: bool,
    /// What the process's pid means here; with [`Kin::Foreign`] the pid it
    /// claims is believed only when the kernel confirms the sender
    /// (`SCM_CREDENTIALS`).
    pub(super) kin: Kin,
    /// When the current wait for the process ends, and how long it is
    /// (set by each public call that waits; see [`crate::deadline`]).
    pub(super) deadline: Option<Instant>,
    pub(super) timeout: Option<Duration>,
    /// Commands that can fail (`eval`, `require`) were queued since the
    /// process last confirmed it carried everything out; `pid` asks it to
    /// confirm (`i`) before answering.
    pub(super) unconfirmed: bool,
    /// Reply bytes read but not yet taken.
    pub(super) replies: proto::ReplyBuffer,
    /// An error found while queueing, reported by the next sending call.
    pub(super) deferred: Option<Error>,
    /// Why this link is unusable, once an error was reported.
    pub(super) broken: Option<String>,
    /// Why this (template) process ended, once known.
    pub(super) death: Option<String>,
    /// For a process on another machine: its machine (the identity of the
    /// executable there, which function values are checked against, and
    /// how its processes ended).
    pub(super) far: Option<std::sync::Arc<dyn super::far::FarSide>>,
}

impl Link {
    /// A link to a process on `transport` that has not said anything yet.
    ///
    /// `template` is the link of the template it was forked from, if any;
    /// `unchecked_names`: names cannot be checked in this program's
    /// registry (libraries were loaded, or the process came from
    /// elsewhere).
    pub(super) fn new(
        transport: Transport,
        name: ProcessName,
        kin: Kin,
        template: Weak<Shared>,
        unchecked_names: bool,
    ) -> Link {
        if kin == Kin::Foreign {
            // From now on the kernel says who sent what we read. Failing
            // that, no pid is ever believed: `process` then says so.
            let _ = transport.pass_credentials();
        }
        Link::build(Some(transport), name, kin, template, unchecked_names)
    }

    fn build(
        transport: Option<Transport>,
        name: ProcessName,
        kin: Kin,
        template: Weak<Shared>,
        unchecked_names: bool,
    ) -> Link {
        Link {
            owner: std::process::id(),
            outbox: transport
                .as_ref()
                .map_or_else(Outbox::default, Outbox::for_transport),
            transport,
            name,
            process: None,
            template,
            unchecked_names,
            pid_frame_seen: false,
            kin,
            // A process from elsewhere has not said its pid here, and may
            // have been sent commands that can fail: `pid` asks it.
            unconfirmed: kin != Kin::Child,
            deadline: None,
            timeout: None,
            replies: if kin == Kin::Foreign {
                // Ask the kernel who sent each frame.
                proto::ReplyBuffer::asking_senders()
            } else {
                proto::ReplyBuffer::default()
            },
            deferred: None,
            broken: None,
            death: None,
            far: None,
        }
    }
}

/// What the RPC client uses of a link.
impl Link {
    pub(crate) fn transport(&self) -> Option<&Transport> {
        self.transport.as_ref()
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
        self.kin == Kin::Foreign
    }

    /// The error for a reply that makes no sense here.
    pub(crate) fn protocol(&self, source: proto::ProtocolError) -> Error {
        self.protocol_error(source)
    }
}

impl Link {
    /// An empty link that owns nothing.
    pub(super) fn detached() -> Link {
        let name = ProcessName {
            pid: None,
            origin: Origin::FromFh,
        };
        let mut link = Link::build(None, name, Kin::Foreign, Weak::new(), true);
        link.broken = Some("the Fork was taken apart".into());
        link
    }

    pub(super) fn check_owner(&self) -> Result<(), Error> {
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

    pub(super) fn learn_pid(&mut self, pid: u32) {
        if self.name.pid.is_none() {
            self.name.pid = Some(pid);
            self.process = match self.kin {
                Kin::Child => Some(Process::child(pid)),
                Kin::Foreign => Some(Process::foreign(pid)),
                Kin::Remote => None,
            };
        }
    }

    /// Queues a command with `add`; a command that cannot be encoded is
    /// reported by the next sending call.
    pub(super) fn queue(
        &mut self,
        add: impl FnOnce(&mut Outbox) -> Result<(), proto::ProtocolError>,
    ) {
        if let Err(source) = add(&mut self.outbox) {
            let process = self.name.clone();
            self.defer(Error::Encode { process, source });
        }
    }

    pub(super) fn defer(&mut self, error: Error) {
        if self.deferred.is_none() && self.broken.is_none() {
            self.deferred = Some(error);
        }
    }

    pub(super) fn broken_error(&self) -> Error {
        Error::Broken {
            process: self.name.clone(),
            cause: self
                .broken
                .clone()
                .unwrap_or_else(|| "the process was handed over".into()),
        }
    }

    /// Reports a deferred error once, then stays broken.
    pub(super) fn usable(&mut self) -> Result<(), Error> {
        if let Some(error) = self.deferred.take() {
            self.broken = Some(crate::error::chain(&error));
            return Err(error);
        }
        if self.broken.is_some() || self.transport.is_none() {
            return Err(self.broken_error());
        }
        Ok(())
    }

    /// The waits of the next calls end `timeout` from now.
    pub(super) fn wait_at_most(&mut self, timeout: Option<Duration>) {
        self.timeout = timeout;
        self.deadline = crate::deadline::from_now(timeout);
    }

    pub(super) fn io_error(&self, doing: &str, source: io::Error) -> Error {
        Error::Io {
            process: self.name.clone(),
            doing: doing.to_owned(),
            source,
        }
    }

    pub(super) fn protocol_error(&self, source: proto::ProtocolError) -> Error {
        Error::Protocol {
            process: self.name.clone(),
            source,
        }
    }

    pub(super) fn no_pid(&self) -> Error {
        self.protocol_error(proto::ProtocolError::Malformed {
            tag: proto::Tag(proto::tag::STARTED),
            what: "the process started without saying its pid first",
        })
    }

    /// Whether the process is a child of this program.
    /// Whether the process can map memory this one sends it: a local
    /// process on a socket (not behind a remote connection's pump, not on
    /// a pair of streams).
    pub(crate) fn shares_memory(&self) -> bool {
        self.kin != Kin::Remote && self.transport.as_ref().is_some_and(Transport::carries_fds)
    }

    pub(super) fn is_child(&self) -> bool {
        self.kin == Kin::Child
    }

    /// `what` hands the caller a unix socket: refused, before anything is
    /// sent, on a transport that is not one.
    pub(super) fn needs_socket(&mut self, what: &'static str) -> Result<(), Error> {
        if self.kin == Kin::Remote && matches!(what, "send_fh" | "into_fh") {
            // Its socket leads to this program's pump, which carries bytes
            // (and the sockets of forks) to the other machine, nothing else.
            return Err(Error::NoDescriptors {
                process: self.name.clone(),
                what,
            });
        }
        match &self.transport {
            Some(transport) if !transport.carries_fds() => Err(Error::NeedsSocket {
                process: self.name.clone(),
                what,
            }),
            _ => Ok(()),
        }
    }

    /// How the process ended, waiting up to `wait` to learn it (zero: if
    /// it is known now).
    pub(crate) fn ending(&self, wait: Duration) -> crate::error::Ending {
        match &self.far {
            Some(far) => {
                let (status, note) = far.ending(self.name.pid, wait);
                crate::error::Ending(status, Some(note.into()))
            }
            None => crate::error::Ending(
                self.process.as_ref().and_then(|p| p.wait_timeout(wait)),
                None,
            ),
        }
    }

    /// For a process on another machine: whether it is gone (see
    /// [`FarSide::gone`](super::far::FarSide::gone)); `None` also for a
    /// process of this machine.
    pub(crate) fn far_gone(&self) -> Option<Option<std::process::ExitStatus>> {
        self.far.as_ref()?.gone(self.name.pid?)
    }

    /// For a process on another machine whose pid is known: asks its far
    /// side to send it `signal`; false if it cannot be asked.
    pub(crate) fn kill_far(&self, signal: crate::Signal) -> bool {
        match (&self.far, self.name.pid) {
            (Some(far), Some(pid)) => {
                far.kill(pid, signal.as_raw());
                true
            }
            _ => false,
        }
    }

    /// The error for a process without a [`Process`] handle here.
    pub(crate) fn no_process(&self) -> Error {
        match (self.kin, self.name.pid) {
            (Kin::Remote, _) => Error::NotLocal {
                process: self.name.clone(),
            },
            (_, None) => self.no_pid(),
            (_, Some(pid)) => Error::NotAChild { pid },
        }
    }

    /// A reply that has no place here (or an error reply).
    pub(super) fn unexpected(&mut self, reply: Reply) -> Error {
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
    pub(super) fn target(&self, function: &FunctionRef, run: bool) -> Result<Target, Error> {
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
        let target = function.target().ok_or_else(|| Error::NotInExecutable {
            name: function.label().to_owned(),
        })?;
        Ok(self.for_its_executable(target))
    }

    /// `target` as the process's executable knows it: a function value of
    /// a process on another machine is an offset in the executable there
    /// (the same build, its hello said, as another file).
    pub(crate) fn for_its_executable(&self, mut target: Target) -> Target {
        if let (Target::Offset { exe, .. }, Some(far)) = (&mut target, &self.far) {
            *exe = far.exe();
        }
        target
    }

    pub(super) fn queue_run(&mut self, function: &FunctionRef) -> Result<(), Error> {
        self.usable()?;
        let target = self.target(function, true)?;
        self.outbox.run(&target).map_err(|source| Error::Encode {
            process: self.name.clone(),
            source,
        })
    }

    /// Sends everything queued.
    pub(super) fn send(&mut self, doing: &str) -> Result<(), Error> {
        self.usable()?;
        let Some(transport) = &self.transport else {
            return Err(self.broken_error());
        };
        match self.outbox.send_all_until(transport, self.deadline) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                Err(self.timeout_error(&format!("{doing} (its socket is full)")))
            }
            Err(e) if is_peer_gone(&e) => Err(self.explain_end(doing)),
            Err(e) => Err(self.io_error(doing, e)),
        }
    }

    /// Reads one reply, learning the pid on the way.
    pub(super) fn read(&mut self, doing: &str) -> Result<Reply, Error> {
        let Some(transport) = &self.transport else {
            return Err(self.broken_error());
        };
        let budget = self.reply_budget();
        match self.replies.next_until(transport, budget, self.deadline) {
            Ok(Some((reply, sender))) => self.note(reply, sender),
            Ok(None) => Err(self.explain_end(doing)),
            Err(proto::ReadError::Io(e)) if e.kind() == io::ErrorKind::TimedOut => {
                Err(self.timeout_error(doing))
            }
            Err(proto::ReadError::Io(e)) if is_peer_gone(&e) => Err(self.explain_end(doing)),
            Err(proto::ReadError::Io(e)) => Err(self.io_error(doing, e)),
            Err(proto::ReadError::Protocol(e)) => {
                let error = self.protocol_error(e);
                self.broken = Some(crate::error::chain(&error));
                Err(error)
            }
        }
    }

    /// See [`Fork::is_spare_alive`]. Only for a process that was sent
    /// nothing: then its only possible frame is `P`.
    pub(super) fn is_idle_alive(&mut self) -> bool {
        if !self.pid_frame_seen {
            let Some(transport) = &self.transport else {
                return false;
            };
            let mut frame = [0u8; proto::PID_FRAME_LEN];
            match transport.recv_bytes(&mut frame) {
                // Not announced yet: still starting.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Ok(0) | Err(_) => return false,
                Ok(n) => {
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
        // An idle process says nothing after its pid: anything to read
        // now is its end (or a breach of the protocol).
        self.transport
            .as_ref()
            .is_some_and(|transport| !transport.is_readable_now())
    }

    /// How far ahead of a frame boundary a read may go: both `P` and `S`
    /// while `P` is certainly still to come, else one of them (a process
    /// received with `new_from_fh` may have had its `P` read elsewhere).
    pub(super) fn reply_budget(&self) -> usize {
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
    pub(super) fn note(&mut self, reply: Reply, sender: Option<u32>) -> Result<Reply, Error> {
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
                self.broken = Some(crate::error::chain(&error));
                Err(error)
            }
            Reply::Error { .. } => Ok(reply),
        }
    }

    /// A process says it is `pid`. A process this program made is believed;
    /// any other only when the kernel confirms that `pid` sent the frame.
    /// An unconfirmed `P` (sent before the check could be made) is ignored;
    /// an unconfirmed `S` or `I`, sent after this program asked, is a lie.
    pub(super) fn claim(
        &mut self,
        pid: u32,
        sender: Option<u32>,
        checkable: bool,
    ) -> Result<(), Error> {
        if self.kin != Kin::Foreign || sender == Some(pid) {
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
        self.broken = Some(crate::error::chain(&error));
        Err(error)
    }

    /// After `S`: the socket is the caller's now.
    /// The process handle is an error for a process on another machine
    /// (which `run` does not need).
    pub(super) fn hand_over(mut self) -> Result<(UnixStream, Result<Process, Error>), Error> {
        let process = self.process.clone().ok_or_else(|| self.no_process());
        if process.is_err() && self.kin != Kin::Remote {
            return Err(self.no_process());
        }
        let transport = self.transport.take().ok_or_else(|| self.broken_error())?;
        match transport.into_socket() {
            Ok(socket) => Ok((UnixStream::from(socket), process)),
            // `queue_run` refuses this before anything is sent.
            Err(_) => Err(self.broken_error()),
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        let Some(transport) = self.transport.take() else {
            return;
        };
        if self.owner != std::process::id() {
            // A copy inherited through a fork of the program: the descriptor
            // numbers may mean something else here. Leave them alone.
            std::mem::forget(transport);
            return;
        }
        if self.name.pid.is_some() || self.kin != Kin::Child {
            // Closing makes the process exit; its `Process` reaps it (or
            // its creator does, for a process this program did not make).
            return;
        }
        // The pid is on its way: the process sends it before it exits. Let
        // the reaper read it and wait.
        let _ = transport.shutdown_write();
        reaper::adopt_unnamed(transport);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Fork;
    use std::io::Write;
    use std::sync::mpsc;

    /// A template link whose "process" is the test's end of a socket pair.
    fn fake_template() -> (Fork, UnixStream) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        (
            Fork::from_transport(Transport::Socket(ours.into()), Some(1), Origin::Exec),
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
            let note = lock(template.shared()).death_note();
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
            let note = lock(template.shared()).death_note();
            (note, template)
        });
        assert!(
            note.as_ref()
                .is_some_and(|n| n.contains("refused a command: protocol error: bad")),
            "{note:?}"
        );
        drop(process_end);
        let note = within_seconds(move || lock(template.shared()).death_note());
        assert!(note.is_some(), "the note is kept");
    }
}
