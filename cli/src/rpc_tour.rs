//! The RPC part of `anyfork tour`: the AnyEvent::Fork::RPC manual's
//! scenarios, and what anyfork adds, each saying what happened.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyfork::rpc::{self, Codec, Fd};
use anyfork::{Fork, Signal};

use crate::tour::{InScenario, TourError, heading};

impl<T> InScenario<T> for Result<T, rpc::Error> {
    fn in_scenario(self, scenario: &'static str) -> Result<T, TourError> {
        self.map_err(|source| TourError::Rpc { scenario, source })
    }
}

fn unexpected(scenario: &'static str, what: impl Into<String>) -> TourError {
    TourError::Unexpected {
        scenario,
        what: what.into(),
    }
}

// ---------------------------------------------------------------------------
// What the RPC children run.

static REQUESTS: AtomicU64 = AtomicU64::new(0);

/// The manual's example 1: removes a directory or a file, with an event
/// every three requests.
fn remove((command, path): (String, String)) -> Result<(), String> {
    let count = REQUESTS.fetch_add(1, Ordering::SeqCst) + 1;
    if count % 3 == 0 {
        let _ = rpc::event(&format!("{count} requests handled"));
    }
    let result = match command.as_str() {
        "rmdir" => std::fs::remove_dir(&path),
        "unlink" => std::fs::remove_file(&path),
        other => return Err(format!("illegal command '{other}'")),
    };
    result.map_err(|e| e.to_string())
}

/// The manual's example 2: counts to `count`, one tick at a time, saying
/// so with events.
async fn count_up((count, tick_ms): (u64, u64)) -> u64 {
    let tick = Duration::from_millis(tick_ms);
    for n in 1..=count {
        tokio::time::sleep(tick).await;
        let _ = rpc::event(&format!("job {count}: {n} of {count}"));
    }
    count
}

/// Divides, panicking on a zero like careless code does.
fn divide((a, b): (i64, i64)) -> i64 {
    a / b
}

/// Writes into the descriptor it was given, and returns the read end of a
/// new pipe it has written into.
fn swap_descriptors(socket: Fd) -> Result<Fd, String> {
    let swap = || -> io::Result<Fd> {
        let mut socket = UnixStream::from(socket.into_owned());
        socket.write_all(b"written by the child into the parent's socket")?;
        let (reader, writer) = rustix::pipe::pipe()?;
        std::fs::File::from(writer).write_all(b"read by the parent from the child's pipe")?;
        Ok(Fd::new(reader))
    };
    swap().map_err(|e| e.to_string())
}

/// Sleeps for the given number of milliseconds.
fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

// ---------------------------------------------------------------------------

fn sync_worker() -> Result<(), TourError> {
    const S: &str = "sync worker";
    heading(
        8,
        "RPC, synchronous backend (manual example 1): rmdir/unlink calls, an event every three",
    );
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    let worker = Fork::new()
        .in_scenario(S)?
        .rpc(remove)
        .codec(Codec::Cbor)
        .on_event(move |line: String| {
            seen.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(line)
        })
        .start()
        .in_scenario(S)?;
    let dir = std::env::temp_dir().join(format!("anyfork-tour-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("empty")).in_scenario(S)?;
    std::fs::write(dir.join("file"), b"x").in_scenario(S)?;
    let requests = [
        ("unlink", dir.join("file")),
        ("rmdir", dir.join("empty")),
        ("rmdir", dir.join("no-such-dir")),
        ("rmdir", dir.clone()),
    ];
    for (command, path) in requests {
        let reply = worker
            .call_blocking((command.into(), path.display().to_string()))
            .in_scenario(S)?;
        match reply {
            Ok(()) => println!("   {command} {}: done", path.display()),
            Err(e) => println!("   {command} {}: {e}", path.display()),
        }
    }
    // Dropping the handle lets the child finish and exit; its events have
    // been handled by then.
    let process = worker.process().in_scenario(S)?;
    drop(worker);
    process.wait().in_scenario(S)?;
    for line in events.lock().unwrap_or_else(PoisonError::into_inner).iter() {
        println!("   event: {line}");
    }
    if dir.exists() {
        return Err(unexpected(S, "the directory was not removed"));
    }
    Ok(())
}

fn async_countdowns(runtime: &tokio::runtime::Runtime) -> Result<(), TourError> {
    const S: &str = "async countdowns";
    heading(
        9,
        "RPC, asynchronous backend (manual example 2): three countdowns at once, the last started finishes first",
    );
    runtime.block_on(async {
        let order = Arc::new(Mutex::new(Vec::new()));
        let seen = order.clone();
        let worker = Fork::new()
            .in_scenario(S)?
            .rpc(count_up)
            .on_event(move |line: String| {
                println!("   event: {line}");
                seen.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(line)
            })
            .start()
            .in_scenario(S)?;
        let started = Instant::now();
        let calls: Vec<_> = [3, 2, 1]
            .into_iter()
            .map(|count| {
                let call = worker.call((count, 100));
                tokio::spawn(async move {
                    let result = call.await;
                    if let Ok(count) = &result {
                        println!("   job {count} finished");
                    }
                    result
                })
            })
            .collect();
        for call in calls {
            call.await
                .map_err(|e| unexpected(S, e.to_string()))?
                .in_scenario(S)?;
        }
        println!(
            "   all three finished in {:.0} ms: they ran at once in one child",
            started.elapsed().as_secs_f64() * 1000.0
        );
        Ok(())
    })
}

fn beyond_perl(runtime: &tokio::runtime::Runtime) -> Result<(), TourError> {
    const S: &str = "beyond the Perl module";
    heading(
        10,
        "RPC beyond the Perl module: panics, dead children, timeouts, descriptors",
    );
    let divider = Fork::new()
        .in_scenario(S)?
        .rpc(divide)
        .codec(Codec::Postcard)
        .start()
        .in_scenario(S)?;
    match divider.call_blocking((1, 0)) {
        Err(e) => println!("   1 / 0: the call fails, the child lives on: {e}"),
        Ok(n) => return Err(unexpected(S, format!("1 / 0 = {n}"))),
    }
    println!(
        "   84 / 2 = {} (same child)",
        divider.call_blocking((84, 2)).in_scenario(S)?
    );

    let swapper = Fork::new()
        .in_scenario(S)?
        .rpc(swap_descriptors)
        .codec(Codec::Cbor)
        .start()
        .in_scenario(S)?;
    let (mut ours, theirs) = UnixStream::pair().in_scenario(S)?;
    let pipe = swapper
        .call_blocking(Fd::new(theirs))
        .in_scenario(S)?
        .map_err(|e| unexpected(S, e.to_string()))?;
    let mut text = String::new();
    let mut buf = [0u8; 64];
    let n = ours.read(&mut buf).in_scenario(S)?;
    println!(
        "   a socket sent as an argument: {:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    std::fs::File::from(pipe.into_owned())
        .read_to_string(&mut text)
        .in_scenario(S)?;
    println!("   a pipe returned as a result: {text:?}");

    runtime.block_on(async {
        let sleeper = Fork::new()
            .in_scenario(S)?
            .rpc(sleep_ms)
            .start()
            .in_scenario(S)?;
        match sleeper.call_timeout(5_000, Duration::from_millis(50)).await {
            Err(e) => println!("   a call that takes too long: {e}"),
            Ok(_) => return Err(unexpected(S, "the slow call did not time out")),
        }
        let outstanding = sleeper.call(5_000);
        // Known by now (a call was answered): this does not block.
        let process = sleeper.process().in_scenario(S)?;
        process.kill(Signal::KILL).in_scenario(S)?;
        match outstanding.await {
            Err(e) => println!("   a call whose child was killed: {e}"),
            Ok(_) => return Err(unexpected(S, "a killed child answered")),
        }
        Ok(())
    })
}

/// Runs the RPC scenarios.
pub fn run() -> Result<(), TourError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .in_scenario("RPC")?;
    sync_worker()?;
    async_countdowns(&runtime)?;
    beyond_perl(&runtime)?;
    Ok(())
}
