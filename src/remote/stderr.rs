//! The command's stderr: passed on to this program's stderr as it comes
//! (the far side's panics and logs arrive there), and its last lines kept
//! to explain a failure (ssh's "Permission denied", a shell's "not found").

use std::io::{Read, Write};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How much of the end of stderr is kept.
const KEPT: usize = 2048;

#[derive(Debug, Default)]
struct Tail {
    bytes: Vec<u8>,
    ended: bool,
}

/// The kept end of a command's stderr, filled by a thread.
#[derive(Debug, Clone)]
pub(crate) struct StderrTail {
    tail: Arc<(Mutex<Tail>, Condvar)>,
}

impl StderrTail {
    /// Starts the thread that reads `stderr`; `forward`: also write it to
    /// this program's stderr.
    pub(crate) fn start(mut stderr: impl Read + Send + 'static, forward: bool) -> StderrTail {
        let tail = Arc::new((Mutex::new(Tail::default()), Condvar::new()));
        let filled = tail.clone();
        let reader = move || {
            let mut buf = [0u8; 4096];
            loop {
                let n = match stderr.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if forward {
                    let _ = std::io::stderr().write_all(&buf[..n]);
                }
                let mut tail = filled.0.lock().unwrap_or_else(PoisonError::into_inner);
                tail.bytes.extend_from_slice(&buf[..n]);
                if tail.bytes.len() > KEPT {
                    let cut = tail.bytes.len() - KEPT;
                    tail.bytes.drain(..cut);
                }
            }
            filled
                .0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .ended = true;
            filled.1.notify_all();
        };
        let started = std::thread::Builder::new()
            .name("anyfork-remote-stderr".into())
            .spawn(reader);
        if started.is_err() {
            // Without the thread there is nothing to keep; say it ended.
            tail.0.lock().unwrap_or_else(PoisonError::into_inner).ended = true;
        }
        StderrTail { tail }
    }

    /// Waits up to `timeout` for the end of stderr; returns what was kept.
    pub(crate) fn finish(&self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let (lock, ended) = &*self.tail;
        let mut tail = lock.lock().unwrap_or_else(PoisonError::into_inner);
        while !tail.ended {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            tail = ended
                .wait_timeout(tail, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        String::from_utf8_lossy(&tail.bytes).into_owned()
    }
}
