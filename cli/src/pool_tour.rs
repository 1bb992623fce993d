//! The pool part of `anyfork tour`: AnyEvent::Fork::Pool's scenario (a
//! pool fed more calls than it has workers, workers retiring), and what
//! anyfork adds (a dead worker fails only the call it was running).

use std::time::Duration;

use anyfork::Fork;
use anyfork::pool::{Error, Pool};

use crate::tour::{InScenario, TourError, heading};

impl<T> InScenario<T> for Result<T, Error> {
    fn in_scenario(self, scenario: &'static str) -> Result<T, TourError> {
        self.map_err(|source| TourError::Pool { scenario, source })
    }
}

/// Answers with the worker's pid; every tenth call, the worker retires.
fn work(n: u64) -> (u32, u64) {
    if n % 10 == 9 {
        let _ = anyfork::pool::retire();
    }
    (std::process::id(), n * n)
}

/// Sleeps, then answers with the worker's pid.
fn nap(ms: u64) -> u32 {
    std::thread::sleep(Duration::from_millis(ms));
    std::process::id()
}

/// Runs the pool scenarios.
pub fn run() -> Result<(), TourError> {
    const S: &str = "pool";
    heading(
        11,
        "A pool of workers (AnyEvent::Fork::Pool), and a worker that dies in it",
    );
    let pool = Fork::new()
        .in_scenario(S)?
        .pool(work)
        .max(2)
        .load(2)
        .start_interval(Duration::ZERO)
        .build()
        .in_scenario(S)?;
    let mut pids = std::collections::BTreeSet::new();
    let mut sum = 0;
    for n in 0..40 {
        let (pid, square) = pool.call_blocking(n).in_scenario(S)?;
        pids.insert(pid);
        sum += square;
    }
    let status = pool.status();
    println!(
        "   40 calls (max 2, load 2, a retire every 10): sum of squares {sum}, served by {} workers, {} recycled",
        pids.len(),
        status.totals.recycles
    );

    let pool: Pool<u64, u32> = Fork::new()
        .in_scenario(S)?
        .pool(nap)
        .max(1)
        .load(3)
        .build()
        .in_scenario(S)?;
    let calls: Vec<_> = [2_000u64, 10, 10, 10]
        .into_iter()
        .map(|ms| {
            let pool = pool.clone();
            let call = std::thread::spawn(move || pool.call_blocking(ms));
            std::thread::sleep(Duration::from_millis(20));
            call
        })
        .collect();
    let victim = pool.status().workers.iter().find_map(|w| w.pid);
    if let Some(victim) = victim {
        // SAFETY: kill(2) of a worker this pool started.
        unsafe { libc::kill(victim as i32, libc::SIGKILL) };
    }
    let mut answered = 0;
    for call in calls {
        match call.join() {
            Ok(Ok(_)) => answered += 1,
            Ok(Err(e)) => println!("   the call its worker was running: {e}"),
            Err(_) => {
                return Err(TourError::Unexpected {
                    scenario: S,
                    what: "a caller panicked".into(),
                });
            }
        }
    }
    println!("   the {answered} calls queued behind it: answered by its replacement");
    if answered != 3 {
        return Err(TourError::Unexpected {
            scenario: S,
            what: format!("{answered} of 3 calls behind the dead worker answered"),
        });
    }
    pool.shutdown(Duration::from_secs(5));
    Ok(())
}
