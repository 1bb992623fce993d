//! The parent's side of a connection: [`Remote`], its pump thread, and the
//! command at the other end.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::process::{Child, ExitStatus};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::error::Error;
use super::pump::{Ended, Keepalive, Pump, Side};
use super::stderr::StderrTail;
use super::wire::{FAR_CHANNELS, Frame, Hello};
use crate::fork::{FarSide, Fork};
use crate::sys::wake::Wake;
use crate::transport::{self, Transport};

/// How many exit statuses of far processes are remembered.
const EXITS_KEPT: usize = 4096;

/// A connection to a relay on another machine (or anywhere a command can
/// reach): [`new_exec`](Remote::new_exec) starts serving processes there,
/// and everything else is the [`Fork`] you know.
///
/// Cloning a `Remote` is cheap (one connection, shared). The connection
/// stays up while a `Remote` or a process on it lives; then the far side
/// exits, and the command that made the connection is reaped.
#[derive(Debug, Clone)]
pub struct Remote {
    handle: Arc<Handle>,
}

/// Marks the connection closing when the last `Remote` goes.
#[derive(Debug)]
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.wake.notify();
    }
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) name: String,
    /// The pid of the command at this end, if one was started.
    command: Option<u32>,
    far: Hello,
    wake: Wake,
    next: AtomicU32,
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// Channels to add: number, the pump's end.
    requests: Vec<(u32, OwnedFd)>,
    frames: Vec<Frame>,
    /// No `Remote` is left: end once no channel is.
    closing: bool,
    /// Why the connection is gone, once it is.
    lost: Option<String>,
    finished: bool,
    /// Exit statuses of far processes, by pid (the newest [`EXITS_KEPT`]).
    exits: HashMap<u32, i32>,
    exit_order: std::collections::VecDeque<u32>,
    /// Channels open now.
    channels: usize,
}

impl State {
    /// The wait status of far process `pid`, if the far side reported it.
    fn exit_status(&self, pid: u32) -> Option<ExitStatus> {
        use std::os::unix::process::ExitStatusExt;
        self.exits
            .get(&pid)
            .map(|status| ExitStatus::from_raw(*status))
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl FarSide for Shared {
    fn exe(&self) -> [u64; 4] {
        self.far.exe
    }

    fn gone(&self, pid: u32) -> Option<Option<ExitStatus>> {
        let state = self.lock();
        match state.exit_status(pid) {
            Some(status) => Some(Some(status)),
            None => state.lost.is_some().then_some(None),
        }
    }

    fn kill(&self, pid: u32, signal: i32) {
        self.lock().frames.push(Frame::Kill { pid, signal });
        self.wake.notify();
    }

    fn ending(&self, pid: Option<u32>, wait: Duration) -> (Option<ExitStatus>, String) {
        let deadline = Instant::now() + wait;
        let mut state = self.lock();
        loop {
            let status = pid.and_then(|pid| state.exit_status(pid));
            let left = deadline.saturating_duration_since(Instant::now());
            if status.is_some() || state.lost.is_some() || left.is_zero() {
                let note = match &state.lost {
                    Some(why) => format!("on {}, whose connection is lost: {why}", self.name),
                    None => format!("on {}", self.name),
                };
                return (status, note);
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// What the pump thread needs to start.
pub(crate) struct Connected {
    pub(crate) name: String,
    pub(crate) conn: Transport,
    pub(crate) far: Hello,
    pub(crate) inbound: Vec<u8>,
    pub(crate) keepalive: Option<Keepalive>,
    pub(crate) child: Option<Child>,
    pub(crate) stderr: Option<StderrTail>,
}

impl Remote {
    /// Starts the pump of a connection whose handshake succeeded.
    pub(crate) fn start(connected: Connected) -> Result<Remote, Error> {
        let Connected {
            name,
            conn,
            far,
            inbound,
            keepalive,
            child,
            stderr,
        } = connected;
        let wake = Wake::new().map_err(|source| Error::Io {
            connection: name.clone(),
            doing: "making the pump's wake-up",
            source,
        })?;
        let shared = Arc::new(Shared {
            command: child.as_ref().map(Child::id),
            name: name.clone(),
            far,
            wake,
            next: AtomicU32::new(1),
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        });
        let side = ParentSide {
            shared: shared.clone(),
        };
        let mut pump = Pump::new(conn, inbound, keepalive);
        let thread = std::thread::Builder::new()
            .name("anyfork-remote".into())
            .spawn(move || pump_thread(&mut pump, side, child, stderr));
        if let Err(source) = thread {
            return Err(Error::Io {
                connection: name,
                doing: "starting the pump thread",
                source,
            });
        }
        Ok(Remote {
            handle: Arc::new(Handle { shared }),
        })
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.handle.shared
    }

    /// Starts a fresh serving process on the far side and returns it, empty,
    /// as [`Fork::new_exec`] does here: prepare it (`send_arg`, `eval`,
    /// `require` of libraries there), keep it as a template and
    /// [`fork`](Fork::fork) it (a round trip on the connection, not a new
    /// login), [`run`](Fork::run) a function in it or start
    /// [RPC](mod@crate::rpc) on it. `send_fh` is refused
    /// ([`crate::Error::NoDescriptors`]); [`pid`](Fork::pid) is its pid on
    /// the far side; it has no [`Process`](crate::Process) handle here.
    ///
    /// Does not wait: the process is started when the far side reads the
    /// request.
    ///
    /// ```
    /// use std::io::Read;
    /// use anyfork::remote::{Remote, serve_arg};
    ///
    /// fn hello(mut socket: std::os::unix::net::UnixStream, _: anyfork::Args) -> std::io::Result<()> {
    ///     std::io::Write::write_all(&mut socket, b"hello")
    /// }
    ///
    /// let mut command = std::process::Command::new(std::env::current_exe()?);
    /// command.arg(serve_arg());
    /// let remote = Remote::command(command)?;
    /// let template = remote.new_exec()?;
    /// let mut said = String::new();
    /// template.fork()?.run(hello)?.read_to_string(&mut said)?;
    /// assert_eq!(said, "hello");
    /// assert!(template.process().is_err()); // no handle to a far process here
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Lost`] if the connection is gone; [`Error::Io`] if no
    /// socket can be made.
    pub fn new_exec(&self) -> Result<Fork, Error> {
        let shared = self.shared();
        let (ours, theirs) = transport::socketpair().map_err(|source| Error::Io {
            connection: shared.name.clone(),
            doing: "making the socket of a new process",
            source,
        })?;
        let n = shared.next.fetch_add(1, Ordering::Relaxed);
        {
            let mut state = shared.lock();
            if let Some(why) = &state.lost {
                return Err(Error::Lost {
                    connection: shared.name.clone(),
                    why: why.clone(),
                });
            }
            state.requests.push((n, theirs));
            state.frames.push(Frame::Open(n));
        }
        shared.wake.notify();
        Ok(Fork::remote(ours, shared.clone()))
    }

    /// What the far side said in its hello: its build, target and pid.
    pub fn far_side(&self) -> &Hello {
        &self.shared().far
    }

    /// The connection's name in messages: the command that made it, or the
    /// name given to the [builder](super::Builder::name).
    pub fn name(&self) -> &str {
        &self.shared().name
    }

    /// The pid of the command that made the connection (`ssh`, say), if
    /// this program started one: killing it drops the connection.
    pub fn command_pid(&self) -> Option<u32> {
        self.shared().command
    }

    /// Why the connection is gone, if it is (does not wait).
    pub fn lost(&self) -> Option<String> {
        self.shared().lock().lost.clone()
    }

    /// Waits until the connection is gone and its command reaped, at most
    /// `timeout`; returns why (with the command's exit status if it
    /// failed), or `None` if it is still up.
    ///
    /// ```
    /// use std::time::Duration;
    /// use anyfork::remote::{Remote, serve_arg};
    ///
    /// let mut command = std::process::Command::new(std::env::current_exe()?);
    /// command.arg(serve_arg());
    /// let remote = Remote::command(command)?;
    /// assert_eq!(remote.wait_lost(Duration::from_millis(10)), None);
    /// // The far side goes away: kill the command that reached it.
    /// let pid = remote.command_pid().expect("a command was started");
    /// // SAFETY: a child of this program.
    /// unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    /// let why = remote.wait_lost(Duration::from_secs(10)).expect("lost");
    /// assert!(why.contains("SIGKILL"), "{why}");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_lost(&self, timeout: Duration) -> Option<String> {
        let shared = self.shared();
        let deadline = Instant::now() + timeout;
        let mut state = shared.lock();
        while !state.finished {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            state = shared
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        state.lost.clone()
    }

    /// The wait status of process `pid` on the far side, if it ended and
    /// the far side said so (as `waitpid` gives it: see
    /// [`std::os::unix::process::ExitStatusExt::from_raw`]).
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use anyfork::remote::{Remote, serve_arg};
    ///
    /// fn fail(_: std::os::unix::net::UnixStream, _: anyfork::Args) -> Result<(), String> {
    ///     Err("no".into())
    /// }
    ///
    /// let mut command = std::process::Command::new(std::env::current_exe()?);
    /// command.arg(serve_arg());
    /// let remote = Remote::command(command)?;
    /// let worker = remote.new_exec()?;
    /// let pid = worker.pid()?;
    /// drop(worker.run(fail)?);
    /// let deadline = Instant::now() + Duration::from_secs(10);
    /// while remote.exit_status(pid).is_none() && Instant::now() < deadline {
    ///     std::thread::sleep(Duration::from_millis(5));
    /// }
    /// assert_eq!(remote.exit_status(pid).and_then(|s| s.code()), Some(anyfork::EXIT_FAILED));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn exit_status(&self, pid: u32) -> Option<ExitStatus> {
        self.shared().lock().exit_status(pid)
    }

    /// How many channels (processes, and streams of running functions) are
    /// open on the connection.
    pub fn channels(&self) -> usize {
        self.shared().lock().channels
    }
}

struct ParentSide {
    shared: Arc<Shared>,
}

impl Side for ParentSide {
    fn open(&mut self, _channel: u32) -> Result<OwnedFd, String> {
        Err("the parent starts no processes for the far side".into())
    }

    fn next_channel(&mut self) -> u32 {
        self.shared.next.fetch_add(1, Ordering::Relaxed) % FAR_CHANNELS
    }

    fn wake_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.shared.wake.as_fd())
    }

    fn turn(&mut self, out: &mut Vec<Frame>) -> Vec<(u32, OwnedFd)> {
        self.shared.wake.clear();
        let mut state = self.shared.lock();
        out.append(&mut state.frames);
        std::mem::take(&mut state.requests)
    }

    fn done(&self, channels: usize) -> bool {
        let mut state = self.shared.lock();
        state.channels = channels;
        state.closing && channels == 0 && state.requests.is_empty()
    }

    fn tick(&self) -> Option<Duration> {
        None
    }

    fn exited(&mut self, pid: u32, status: i32) {
        let _notify = Notify(&self.shared.changed);
        let mut state = self.shared.lock();
        if state.exits.insert(pid, status).is_none() {
            state.exit_order.push_back(pid);
            if state.exit_order.len() > EXITS_KEPT {
                if let Some(old) = state.exit_order.pop_front() {
                    state.exits.remove(&old);
                }
            }
        }
    }

    fn explains_locally(&self) -> bool {
        true
    }

    fn lost(&mut self, why: &str) {
        let _notify = Notify(&self.shared.changed);
        self.shared.lock().lost = Some(why.to_owned());
    }
}

/// Wakes the waiters of a condition variable when dropped (after the
/// lock guard taken after it).
struct Notify<'a>(&'a Condvar);

impl Drop for Notify<'_> {
    fn drop(&mut self) {
        self.0.notify_all();
    }
}

fn pump_thread(
    pump: &mut Pump,
    mut side: ParentSide,
    child: Option<Child>,
    stderr: Option<StderrTail>,
) {
    let ended = pump.run(&mut side);
    let shared = side.shared.clone();
    let why = match ended {
        Ended::Done => "closed by this program".to_owned(),
        Ended::Lost(why) => why,
    };
    // The connection's end: the far side sees end of input and exits.
    pump.close();
    let status = child.and_then(reap);
    let why = match (
        &status,
        stderr.map(|s| s.finish(Duration::from_millis(200))),
    ) {
        (Some(status), Some(tail)) if !status.success() && !tail.trim().is_empty() => {
            format!(
                "{why} (the command exited: {status}; its stderr said: {})",
                tail.trim()
            )
        }
        (Some(status), _) if !status.success() => format!("{why} (the command exited: {status})"),
        _ => why,
    };
    tracing::debug!(connection = %shared.name, "anyfork: remote connection ended: {why}");
    let mut state = shared.lock();
    state.lost = Some(why);
    state.finished = true;
    state.channels = 0;
    drop(state);
    shared.changed.notify_all();
}

/// Waits for the command to exit (it does once its input ends), killing
/// it after a few seconds.
fn reap(mut child: Child) -> Option<ExitStatus> {
    wait_at_most(&mut child, Duration::from_secs(5)).or_else(|| {
        let _ = child.kill();
        child.wait().ok()
    })
}

/// Waits up to `limit` for `child` to exit.
pub(super) fn wait_at_most(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => return None,
        }
    }
}
