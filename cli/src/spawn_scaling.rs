//! `bench spawn`'s rows on how process creation behaves beyond one caller:
//! `Fork::new` from 1 and 2 threads at once (does it scale with cores, or
//! is it capped by one template's fork rate?), and the latency from
//! `Fork::new` to the first byte back from the new process (median and
//! 99th percentile).

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use anyfork::{Args, Fork};

use crate::cpu_busy::CpuTime;
use crate::median::median;

/// The thread counts measured.
pub const THREADS: [usize; 2] = [1, 2];

/// What was measured.
#[derive(Debug, Clone)]
pub struct Scaling {
    /// (threads, processes per second in all).
    pub concurrent: Vec<(usize, f64)>,
    /// For each thread count (as in `concurrent`): the CPUs the machine
    /// kept busy meanwhile (median of the rounds), if `/proc/stat` says.
    pub busy_cpus: Vec<Option<f64>>,
    /// The machine's CPUs.
    pub cpus: usize,
    pub first_byte_p50_us: f64,
    pub first_byte_p99_us: f64,
    pub samples: usize,
}

impl Scaling {
    /// The CPUs the machine kept busy with `threads` callers.
    pub fn busy(&self, threads: usize) -> Option<f64> {
        let i = self.concurrent.iter().position(|(t, _)| *t == threads)?;
        self.busy_cpus.get(i).copied().flatten()
    }

    /// Processes per second with `threads` callers.
    pub fn rate(&self, threads: usize) -> Option<f64> {
        self.concurrent
            .iter()
            .find(|(t, _)| *t == threads)
            .map(|(_, rate)| *rate)
    }
}

/// Why it could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum ScalingError {
    #[error("creating a process")]
    Anyfork(#[from] anyfork::Error),
    #[error("reading from a process")]
    Io(#[from] io::Error),
}

fn exit_at_once(_: UnixStream, _: Args) {}

fn first_byte(mut socket: UnixStream, _: Args) -> io::Result<()> {
    socket.write_all(b"!")
}

/// One process: created, run, waited for (end of file).
fn one() -> Result<(), ScalingError> {
    let mut socket = Fork::new()?.run(exit_at_once)?;
    let mut buf = [0u8; 8];
    while socket.read(&mut buf)? > 0 {}
    Ok(())
}

/// Processes per second from `threads` threads creating them at once for
/// `time`.
fn concurrent(threads: usize, time: Duration) -> Result<f64, ScalingError> {
    let start = Instant::now();
    let counts = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> Result<u64, ScalingError> {
                    let mut n = 0;
                    while n < 3 || start.elapsed() < time {
                        one()?;
                        n += 1;
                    }
                    Ok(n)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or(Ok(0)))
            .collect::<Result<Vec<u64>, _>>()
    })?;
    Ok(counts.iter().sum::<u64>() as f64 / start.elapsed().as_secs_f64())
}

/// Measures it: `rounds` rounds of every thread count, `samples` latencies.
pub fn measure(
    rounds: usize,
    time: Duration,
    samples: usize,
    progress: &dyn Fn(&str),
) -> Result<Scaling, ScalingError> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut rates = vec![Vec::new(); THREADS.len()];
    let mut busy = vec![Vec::new(); THREADS.len()];
    for round in 0..rounds {
        progress(&format!(
            "round {}/{rounds}: Fork::new from 1 and 2 threads at once",
            round + 1
        ));
        for (i, &threads) in THREADS.iter().enumerate() {
            let before = CpuTime::now();
            rates[i].push(concurrent(threads, time)?);
            if let Some(cpus_busy) = before
                .zip(CpuTime::now())
                .and_then(|(before, after)| before.busy_cpus_until(&after, cpus))
            {
                busy[i].push(cpus_busy);
            }
        }
    }
    progress(&format!(
        "Fork::new to the first byte back, {samples} times"
    ));
    let mut latencies = Vec::with_capacity(samples);
    for _ in 0..samples {
        let start = Instant::now();
        let mut socket = Fork::new()?.run(first_byte)?;
        let mut byte = [0u8; 1];
        socket.read_exact(&mut byte)?;
        latencies.push(start.elapsed().as_secs_f64() * 1e6);
        drop(socket);
    }
    latencies.sort_by(f64::total_cmp);
    let p99 = latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)];
    Ok(Scaling {
        concurrent: THREADS
            .iter()
            .zip(rates)
            .map(|(&t, r)| (t, median(r)))
            .collect(),
        busy_cpus: busy
            .into_iter()
            .map(|b| (!b.is_empty()).then(|| median(b)))
            .collect(),
        cpus,
        first_byte_p50_us: median(latencies.clone()),
        first_byte_p99_us: p99,
        samples,
    })
}
