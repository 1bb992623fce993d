//! Handles to the processes anyfork creates: pid, signals, exit status.
//!
//! Every process anyfork creates in a program is that program's direct child,
//! also the ones a template forks (templates fork with `CLONE_PARENT`, see
//! [`crate::sys::clone`]). Signalling through a [`Process`] never hits a
//! recycled pid: a child's pid stays its own until this program reads its
//! exit status, and other processes are named by pidfd.
//! [`wait`](Process::wait) returns the same [`ExitStatus`] type
//! `std::process` uses.
//!
//! Nothing needs to be waited for: when the last handle to a process that has
//! not been waited for goes away, a background reaper thread waits for it, so
//! no zombie is left behind (see [`crate::reaper`]).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use rustix::process::{WaitId, WaitIdOptions, WaitIdStatus};

use crate::error::Error;
use crate::reaper;
use crate::sys::pidfd;

/// A signal to send with [`Process::kill`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signal(i32);

impl Signal {
    /// `SIGTERM`: please exit.
    pub const TERM: Signal = Signal(libc::SIGTERM);
    /// `SIGKILL`: exit now.
    pub const KILL: Signal = Signal(libc::SIGKILL);
    /// `SIGINT`: interrupted.
    pub const INT: Signal = Signal(libc::SIGINT);
    /// `SIGHUP`: hang up.
    pub const HUP: Signal = Signal(libc::SIGHUP);
    /// `SIGUSR1`.
    pub const USR1: Signal = Signal(libc::SIGUSR1);
    /// `SIGUSR2`.
    pub const USR2: Signal = Signal(libc::SIGUSR2);
    /// `SIGSTOP`: stop (cannot be caught).
    pub const STOP: Signal = Signal(libc::SIGSTOP);
    /// `SIGCONT`: continue after a stop.
    pub const CONT: Signal = Signal(libc::SIGCONT);

    /// Any signal by number; `None` unless `1 <= signal <= SIGRTMAX`.
    pub fn from_raw(signal: i32) -> Option<Signal> {
        (1..=libc::SIGRTMAX())
            .contains(&signal)
            .then_some(Signal(signal))
    }

    /// The signal's number.
    pub fn as_raw(self) -> i32 {
        self.0
    }
}

/// A process created by anyfork.
///
/// Cheap to clone; all clones refer to the same process and share its exit
/// status once known.
///
/// ```
/// use anyfork::{Fork, Signal};
///
/// fn sleeper(_socket: std::os::unix::net::UnixStream, _args: anyfork::Args) {
///     std::thread::sleep(std::time::Duration::from_secs(60));
/// }
///
/// let (_socket, process) = Fork::new()?.run_with_process(sleeper)?;
/// process.kill(Signal::TERM)?;
/// let status = process.wait()?;
/// assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGTERM));
/// # Ok::<(), anyfork::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Process {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pid: u32,
    /// Whether this program is the process's parent (and so can wait).
    child: bool,
    /// A pidfd, opened when first needed (a child is named safely by its pid
    /// until this program reaps it; other processes need the pidfd). `None`
    /// inside when it could not be opened: the process is gone.
    pidfd: OnceLock<Option<OwnedFd>>,
    status: Mutex<Option<ExitStatus>>,
}

pub(crate) fn to_exit_status(status: &WaitIdStatus) -> ExitStatus {
    // Rebuild the classic wait status word that ExitStatus wraps.
    let raw = if let Some(code) = status.exit_status() {
        (code & 0xff) << 8
    } else if let Some(signal) = status.terminating_signal() {
        signal | if status.dumped() { 0x80 } else { 0 }
    } else {
        0
    };
    ExitStatus::from_raw(raw)
}

/// What a process is doing, in words, from `/proc/PID/stat`; `None` if it
/// is gone.
pub(crate) fn describe_state(pid: u32) -> Option<&'static str> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let state = stat.rsplit_once(')')?.1.split_whitespace().next()?;
    Some(match state {
        "R" => "running",
        "S" => "sleeping",
        "D" => "in an uninterruptible wait",
        "T" => "stopped (SIGSTOP?)",
        "t" => "stopped by a debugger",
        "Z" => "a zombie",
        _ => "in an unusual state",
    })
}

impl Process {
    fn new(pid: u32, child: bool, pidfd: Option<Option<OwnedFd>>) -> Process {
        let cell = OnceLock::new();
        if let Some(pidfd) = pidfd {
            let _ = cell.set(pidfd);
        }
        Process {
            inner: Arc::new(Inner {
                pid,
                child,
                pidfd: cell,
                status: Mutex::new(None),
            }),
        }
    }

    /// A handle to a process this program created (so its child).
    pub(crate) fn child(pid: u32) -> Process {
        Process::new(pid, true, None)
    }

    /// A handle to a process another program created (received with
    /// `new_from_fh`): never waited for or reaped here, signalled through a
    /// pidfd opened now, while the pid is known to be the process's (the
    /// kernel just confirmed it sent a frame).
    pub(crate) fn foreign(pid: u32) -> Process {
        Process::new(pid, false, Some(pidfd::open(pid)))
    }

    pub(crate) fn pidfd(&self) -> Option<BorrowedFd<'_>> {
        self.inner
            .pidfd
            .get_or_init(|| pidfd::open(self.inner.pid))
            .as_ref()
            .map(|fd| fd.as_fd())
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.inner.pid
    }

    /// True if this program is the process's parent, so that
    /// [`wait`](Process::wait) can report its exit status. True for every
    /// process this program created; false for processes received with
    /// [`Fork::new_from_fh`](crate::Fork::new_from_fh) from another program.
    pub fn is_child(&self) -> bool {
        self.inner.child
    }

    fn lock_status(&self) -> std::sync::MutexGuard<'_, Option<ExitStatus>> {
        self.inner
            .status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends `signal`. A child is signalled by pid, which cannot have been
    /// reused while its exit status is unread; any other process through a
    /// pidfd. Signalling a process that has already exited does nothing.
    ///
    /// # Errors
    ///
    /// [`Error::Kill`] if the kernel refuses (for example `EPERM`).
    pub fn kill(&self, signal: Signal) -> Result<(), Error> {
        // SAFETY: Signal only holds numbers in 1..=SIGRTMAX.
        let sig = unsafe { rustix::process::Signal::from_raw_unchecked(signal.0) };
        let sent = if self.inner.child {
            // Hold the status lock: no wait can reap the process meanwhile.
            let status = self.lock_status();
            match (status.is_some(), pidfd::raw_pid(self.inner.pid)) {
                (false, Some(pid)) => rustix::process::kill_process(pid, sig),
                _ => Ok(()),
            }
        } else {
            match self.pidfd() {
                Some(pidfd) => rustix::process::pidfd_send_signal(pidfd, sig),
                None => Ok(()),
            }
        };
        match sent {
            Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
            Err(e) => Err(Error::Kill {
                pid: self.inner.pid,
                signal: signal.0,
                source: e.into(),
            }),
        }
    }

    fn waitid(&self, options: WaitIdOptions) -> Result<Option<ExitStatus>, Error> {
        let pid = self.inner.pid;
        if !self.inner.child {
            return Err(Error::NotAChild { pid });
        }
        let mut cached = self.lock_status();
        self.waitid_locked(&mut cached, options)
    }

    /// `waitid` for this child, with the status lock held: the cached
    /// status if there is one, else the kernel's, cached.
    fn waitid_locked(
        &self,
        cached: &mut Option<ExitStatus>,
        options: WaitIdOptions,
    ) -> Result<Option<ExitStatus>, Error> {
        let pid = self.inner.pid;
        let Some(raw) = pidfd::raw_pid(pid) else {
            return Err(Error::NotAChild { pid });
        };
        if let Some(status) = *cached {
            return Ok(Some(status));
        }
        loop {
            match rustix::process::waitid(WaitId::Pid(raw), options) {
                Ok(Some(status)) => {
                    let status = to_exit_status(&status);
                    *cached = Some(status);
                    return Ok(Some(status));
                }
                Ok(None) => return Ok(None),
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => {
                    return Err(Error::Wait {
                        pid,
                        source: e.into(),
                    });
                }
            }
        }
    }

    /// Waits until the process exits and returns its exit status. Can be
    /// called any number of times, from any clone.
    ///
    /// # Errors
    ///
    /// [`Error::NotAChild`] for a process this program is not the parent of;
    /// [`Error::Wait`] if another part of the program already reaped it
    /// (with `waitpid(-1)` or by ignoring `SIGCHLD`).
    pub fn wait(&self) -> Result<ExitStatus, Error> {
        match self.waitid(WaitIdOptions::EXITED)? {
            Some(status) => Ok(status),
            None => Err(Error::Wait {
                pid: self.inner.pid,
                source: std::io::Error::other("waitid returned no status"),
            }),
        }
    }

    /// The exit status if the process has exited, without blocking.
    ///
    /// # Errors
    ///
    /// As for [`wait`](Process::wait).
    pub fn try_wait(&self) -> Result<Option<ExitStatus>, Error> {
        self.waitid(WaitIdOptions::EXITED | WaitIdOptions::NOHANG)
    }

    /// For the reaper: whether the process has ended, without waiting and
    /// without waiting for the handle's lock either (a thread blocked in
    /// [`wait`](Process::wait) holds it, and will reap the process itself).
    pub(crate) fn has_ended_nonblocking(&self) -> bool {
        let Ok(mut cached) = self.inner.status.try_lock() else {
            return false;
        };
        if !self.inner.child {
            return true;
        }
        let options = WaitIdOptions::EXITED | WaitIdOptions::NOHANG;
        // An error (ECHILD: reaped elsewhere) means there is nothing to wait for.
        !matches!(self.waitid_locked(&mut cached, options), Ok(None))
    }

    /// Waits at most `timeout` for the exit status; `None` if the process
    /// is still running then (or cannot be waited for).
    pub fn wait_timeout(&self, timeout: std::time::Duration) -> Option<ExitStatus> {
        match self.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            // Not ours to wait for: waiting longer will not change that.
            Err(_) => return None,
        }
        let pidfd = self.pidfd()?;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            // An interrupted wait says `true`: look, and wait again.
            match crate::sys::poll::wait_readable(pidfd, Some(left)) {
                Ok(true) => match self.try_wait() {
                    Ok(Some(status)) => return Some(status),
                    Ok(None) if !left.is_zero() => {}
                    _ => return None,
                },
                Ok(false) | Err(_) => return self.try_wait().ok().flatten(),
            }
        }
    }

    /// Waits asynchronously (on tokio) until the process exits.
    ///
    /// # Errors
    ///
    /// As for [`wait`](Process::wait), and [`Error::Wait`] if the pidfd
    /// cannot be registered with the runtime.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime with I/O enabled, like every tokio I/O type.
    #[cfg(feature = "tokio")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
    pub async fn wait_async(&self) -> Result<ExitStatus, Error> {
        use tokio::io::unix::AsyncFd;
        if let Some(status) = self.try_wait()? {
            return Ok(status);
        }
        let pid = self.inner.pid;
        let wait_error = |e: std::io::Error| Error::Wait { pid, source: e };
        let Some(pidfd) = self.pidfd() else {
            // Gone without a status we could read.
            return self.wait();
        };
        let owned = pidfd.try_clone_to_owned().map_err(wait_error)?;
        // SAFETY: `owned` is an OwnedFd the AsyncFd owns: it stays open and
        // the same descriptor until the AsyncFd is dropped.
        let watched =
            unsafe { AsyncFd::register_with_interest(owned, tokio::io::Interest::READABLE) }
                .map_err(|e| wait_error(e.into()))?;
        loop {
            let mut ready = watched.readable().await.map_err(wait_error)?;
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            ready.clear_ready();
        }
    }
}

/// What the reaper needs of a handle it watches (see
/// [`reaper::watch`]).
impl reaper::Watched for Process {
    fn pidfd(&self) -> Option<BorrowedFd<'_>> {
        Process::pidfd(self)
    }

    fn has_ended(&self) -> bool {
        self.has_ended_nonblocking()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let waited = self
            .status
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some();
        if self.child && !waited {
            let pidfd = self.pidfd.take().flatten();
            reaper::adopt(self.pid, pidfd);
        }
    }
}
