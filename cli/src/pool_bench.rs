//! `anyfork bench pool`: what a pool of workers delivers, against the
//! other ways of running the same jobs, side by side in one run.
//!
//! - `cpu_1ms`: a job that spins the CPU for about 1 ms, 64 in flight, on a
//!   pool with `max` 1, 2 and [`anyfork::ncpu`]; on a pool of as many
//!   threads in this process; and on Python's
//!   `concurrent.futures.ProcessPoolExecutor` (forkserver) when `python3`
//!   is installed (its own loop, calibrated to 1 ms in Python).
//! - `trivial`: a job that returns its argument, 64 in flight, through a
//!   pool of 2 (`load` 32) against one RPC handle.
//! - `sync_rtt`: one blocking call at a time through a pool of 1 against
//!   the same call on an RPC handle, in alternating blocks.
//! - recovery: from a worker's `SIGKILL` to the pool running at full width
//!   again (every worker started and said its pid).
//!
//! Figures are medians over rounds that interleave the runners.

use std::collections::VecDeque;
use std::io;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyfork::Fork;
use anyfork::pool::Pool;

use crate::median::median;

/// Calls in flight in the pipelined cases.
pub const IN_FLIGHT: usize = 64;

/// Who runs the jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runner {
    Pool,
    Rpc,
    Threads,
    Python,
}

impl Runner {
    /// The name in `--json`.
    pub fn key(self) -> &'static str {
        match self {
            Runner::Pool => "pool",
            Runner::Rpc => "rpc",
            Runner::Threads => "threads",
            Runner::Python => "python",
        }
    }
}

/// One measured figure.
#[derive(Debug, Clone)]
pub struct PoolFigure {
    /// `cpu_1ms`, `trivial` or `sync_rtt`.
    pub case: &'static str,
    pub runner: Runner,
    /// Workers (or threads).
    pub max: usize,
    pub in_flight: usize,
    pub calls_per_sec: f64,
    pub median_rtt_us: f64,
}

/// The pool part of the report.
#[derive(Debug, Clone)]
pub struct PoolReport {
    pub figures: Vec<PoolFigure>,
    /// Median time from a worker's SIGKILL to full width again.
    pub recovery_ms: f64,
    /// The CPUs this process may use.
    pub ncpu: usize,
}

impl PoolReport {
    /// The figure of a case and runner with `max` workers.
    pub fn find(&self, case: &str, runner: Runner, max: usize) -> Option<&PoolFigure> {
        self.figures
            .iter()
            .find(|f| f.case == case && f.runner == runner && f.max == max)
    }

    /// Rate of one figure over another.
    pub fn rate_ratio(&self, a: (&str, Runner, usize), b: (&str, Runner, usize)) -> Option<f64> {
        Some(self.find(a.0, a.1, a.2)?.calls_per_sec / self.find(b.0, b.1, b.2)?.calls_per_sec)
    }

    /// Round trip of one figure over another.
    pub fn rtt_ratio(&self, a: (&str, Runner, usize), b: (&str, Runner, usize)) -> Option<f64> {
        Some(self.find(a.0, a.1, a.2)?.median_rtt_us / self.find(b.0, b.1, b.2)?.median_rtt_us)
    }
}

/// The ratios the issue set goals for, by name.
pub fn ratios(report: &PoolReport) -> Vec<(&'static str, Option<f64>)> {
    let n = report.ncpu;
    vec![
        (
            "cpu_max2_over_max1",
            report.rate_ratio(("cpu_1ms", Runner::Pool, 2), ("cpu_1ms", Runner::Pool, 1)),
        ),
        (
            "cpu_pool_over_threads",
            report.rate_ratio(
                ("cpu_1ms", Runner::Pool, n),
                ("cpu_1ms", Runner::Threads, n),
            ),
        ),
        (
            "cpu_pool_over_python",
            report.rate_ratio(("cpu_1ms", Runner::Pool, n), ("cpu_1ms", Runner::Python, n)),
        ),
        (
            "trivial_pool_over_rpc",
            report.rate_ratio(("trivial", Runner::Pool, 2), ("trivial", Runner::Rpc, 1)),
        ),
        (
            "sync_rtt_pool_over_rpc",
            report.rtt_ratio(("sync_rtt", Runner::Pool, 1), ("sync_rtt", Runner::Rpc, 1)),
        ),
    ]
}

/// Why the pool benchmark failed.
#[derive(Debug, thiserror::Error)]
pub enum PoolBenchError {
    #[error("starting the {what}")]
    Start {
        what: &'static str,
        #[source]
        source: anyfork::Error,
    },
    #[error("a pool call failed")]
    Pool(#[from] anyfork::pool::Error),
    #[error("an RPC call failed")]
    Rpc(#[from] anyfork::rpc::Error),
    #[error("{doing}")]
    Io {
        doing: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Spins the CPU for `iterations` rounds of xorshift.
pub fn spin(iterations: u64) -> u64 {
    let mut x = iterations | 1;
    for _ in 0..iterations {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    std::hint::black_box(x)
}

pub fn echo(n: u64) -> u64 {
    n
}

/// Iterations of [`spin`] that take about 1 ms here.
pub fn calibrate() -> u64 {
    let mut iterations = 100_000u64;
    for _ in 0..20 {
        let times: Vec<f64> = (0..5)
            .map(|_| {
                let t = Instant::now();
                spin(iterations);
                t.elapsed().as_secs_f64()
            })
            .collect();
        let took = median(times);
        if (0.0009..0.0011).contains(&took) {
            break;
        }
        iterations = ((iterations as f64) * 0.001 / took.max(1e-6)) as u64;
    }
    iterations
}

/// (calls per second, median round trip in µs) of `count` calls over
/// `elapsed`.
fn figure(latencies: Vec<f64>, elapsed: Duration) -> (f64, f64) {
    let count = latencies.len() as f64;
    (count / elapsed.as_secs_f64(), median(latencies) * 1e6)
}

/// Keeps [`IN_FLIGHT`] async calls of `call` going for `time`.
pub fn windowed<F, Fut, E>(
    runtime: &tokio::runtime::Runtime,
    time: Duration,
    call: F,
) -> Result<(f64, f64), E>
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = Result<u64, E>>,
{
    runtime.block_on(async {
        let start = Instant::now();
        let mut window = futures_window::Window::new();
        let mut latencies = Vec::new();
        let mut n = 0u64;
        while window.len() < IN_FLIGHT {
            window.push(Instant::now(), call(n));
            n += 1;
        }
        while let Some((began, result)) = window.next().await {
            result?;
            latencies.push(began.elapsed().as_secs_f64());
            if start.elapsed() < time {
                window.push(Instant::now(), call(n));
                n += 1;
            }
        }
        Ok(figure(latencies, start.elapsed()))
    })
}

/// A tiny ordered-completion window of futures, polled together.
mod futures_window {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::Poll;
    use std::time::Instant;

    type Boxed<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

    pub struct Window<'a, T> {
        calls: Vec<(Instant, Boxed<'a, T>)>,
    }

    impl<'a, T> Window<'a, T> {
        pub fn new() -> Self {
            Window { calls: Vec::new() }
        }

        pub fn len(&self) -> usize {
            self.calls.len()
        }

        pub fn push(&mut self, began: Instant, call: impl Future<Output = T> + 'a) {
            self.calls.push((began, Box::pin(call)));
        }

        /// The next call to finish, with when it began.
        pub async fn next(&mut self) -> Option<(Instant, T)> {
            if self.calls.is_empty() {
                return None;
            }
            std::future::poll_fn(|cx| {
                for i in 0..self.calls.len() {
                    if let Poll::Ready(out) = self.calls[i].1.as_mut().poll(cx) {
                        let (began, _) = self.calls.swap_remove(i);
                        return Poll::Ready(Some((began, out)));
                    }
                }
                Poll::Pending
            })
            .await
        }
    }
}

/// The same jobs on `threads` threads of this process, [`IN_FLIGHT`] in
/// flight through one queue.
fn threads_cpu(threads: usize, iterations: u64, time: Duration) -> (f64, f64) {
    let (job_tx, job_rx) = mpsc::channel::<Instant>();
    let job_rx = Arc::new(Mutex::new(job_rx));
    let (done_tx, done_rx) = mpsc::channel::<Instant>();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (jobs, done) = (job_rx.clone(), done_tx.clone());
            std::thread::spawn(move || {
                loop {
                    let job = jobs.lock().map(|rx| rx.recv());
                    let Ok(Ok(began)) = job else { break };
                    spin(iterations);
                    if done.send(began).is_err() {
                        break;
                    }
                }
            })
        })
        .collect();
    drop(done_tx);
    let start = Instant::now();
    let mut latencies = Vec::new();
    let mut outstanding = 0;
    for _ in 0..IN_FLIGHT {
        let _ = job_tx.send(Instant::now());
        outstanding += 1;
    }
    while outstanding > 0 {
        let Ok(began) = done_rx.recv() else { break };
        outstanding -= 1;
        latencies.push(began.elapsed().as_secs_f64());
        if start.elapsed() < time {
            let _ = job_tx.send(Instant::now());
            outstanding += 1;
        }
    }
    let elapsed = start.elapsed();
    drop(job_tx);
    for worker in workers {
        let _ = worker.join();
    }
    figure(latencies, elapsed)
}

/// Python's ProcessPoolExecutor (forkserver) with `workers` processes,
/// 64 jobs of 1 ms in flight for `time`; `None` without python3.
fn python_cpu(workers: usize, time: Duration) -> Option<(f64, f64)> {
    // A file, not `-c`: forkserver workers import the main module.
    let script = std::env::temp_dir().join(format!("anyfork-pool-bench-{}.py", std::process::id()));
    std::fs::write(&script, PYTHON_POOL).ok()?;
    let output = std::process::Command::new("python3")
        .arg(&script)
        .args([workers.to_string(), time.as_secs_f64().to_string()])
        .stderr(std::process::Stdio::null())
        .output();
    let _ = std::fs::remove_file(&script);
    let text = String::from_utf8(output.ok()?.stdout).ok()?;
    let value: serde_json::Value = serde_json::from_str(text.trim()).ok()?;
    Some((
        value["calls_per_sec"].as_f64()?,
        value["median_rtt_us"].as_f64()?,
    ))
}

/// The Python side: calibrates a 1 ms loop, warms the pool up, then keeps
/// 64 jobs in flight.
const PYTHON_POOL: &str = r#"
import concurrent.futures as cf, json, multiprocessing as mp, sys, time, statistics
def spin(n):
    x = 0
    for i in range(n):
        x = (x * 31 + i) & 0xFFFFFFFF
    return x
def calibrate():
    n = 20000
    for _ in range(20):
        t = time.perf_counter(); spin(n); took = time.perf_counter() - t
        if 0.0009 < took < 0.0011: break
        n = max(1, int(n * 0.001 / took))
    return n
if __name__ == "__main__":
    workers, seconds = int(sys.argv[1]), float(sys.argv[2])
    n = calibrate()
    with cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("forkserver")) as pool:
        list(pool.map(spin, [n] * workers * 4))
        start = time.perf_counter(); began = {}; rtts = []; pending = set()
        for _ in range(64):
            f = pool.submit(spin, n); began[f] = time.perf_counter(); pending.add(f)
        while pending:
            done, pending = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
            for f in done:
                rtts.append(time.perf_counter() - began.pop(f))
                if time.perf_counter() - start < seconds:
                    g = pool.submit(spin, n); began[g] = time.perf_counter(); pending.add(g)
        elapsed = time.perf_counter() - start
    print(json.dumps({"calls_per_sec": len(rtts) / elapsed, "median_rtt_us": statistics.median(rtts) * 1e6}))
"#;

fn start_error(what: &'static str) -> impl FnOnce(anyfork::Error) -> PoolBenchError {
    move |source| PoolBenchError::Start { what, source }
}

/// A pool of `max` workers of `function`, all started and ready.
fn ready_pool<M, F>(max: usize, load: usize, function: F) -> Result<Pool<u64, u64>, PoolBenchError>
where
    F: anyfork::rpc::IntoRpc<M, Req = u64, Rep = u64>,
{
    let template = Fork::new().map_err(start_error("pool template"))?;
    ready_pool_from(template, max, load, function)
}

/// [`ready_pool`] forked from `template`.
pub fn ready_pool_from<M, F>(
    template: Fork,
    max: usize,
    load: usize,
    function: F,
) -> Result<Pool<u64, u64>, PoolBenchError>
where
    F: anyfork::rpc::IntoRpc<M, Req = u64, Rep = u64>,
{
    let pool = template
        .pool(function)
        .max(max)
        .idle(max)
        .load(load)
        .build()?;
    // Every worker answered once: started, pid known.
    let deadline = Instant::now() + Duration::from_secs(10);
    while pool
        .status()
        .workers
        .iter()
        .filter(|w| w.pid.is_some())
        .count()
        < max
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(pool)
}

/// Runs the pool benchmark: `rounds` rounds of `time` per cell.
pub fn run(
    rounds: usize,
    time: Duration,
    progress: &dyn Fn(&str),
) -> Result<PoolReport, PoolBenchError> {
    let ncpu = anyfork::ncpu();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| PoolBenchError::Io {
            doing: "starting a tokio runtime",
            source,
        })?;
    let iterations = calibrate();
    progress(&format!(
        "pool: a 1 ms job is {iterations} rounds of xorshift here"
    ));
    let mut maxes = vec![1, 2, ncpu];
    maxes.dedup();
    let mut samples: Vec<(PoolFigure, Vec<(f64, f64)>)> = Vec::new();
    let mut record = |case, runner, max, in_flight, sample: (f64, f64)| match samples
        .iter_mut()
        .find(|(f, _)| f.case == case && f.runner == runner && f.max == max)
    {
        Some((_, list)) => list.push(sample),
        None => samples.push((
            PoolFigure {
                case,
                runner,
                max,
                in_flight,
                calls_per_sec: 0.0,
                median_rtt_us: 0.0,
            },
            vec![sample],
        )),
    };
    // The pools live across rounds, as a service's would.
    let cpu_pools: Vec<(usize, Pool<u64, u64>)> = maxes
        .iter()
        .map(|&max| Ok((max, ready_pool(max, 2, spin)?)))
        .collect::<Result<_, PoolBenchError>>()?;
    let trivial_pool = ready_pool(2, IN_FLIGHT / 2, echo)?;
    let rpc = Fork::new()
        .map_err(start_error("RPC process"))?
        .rpc(echo)
        .start()
        .map_err(start_error("RPC process"))?;
    // Its own handle: one whose driver task lives in a runtime that is not
    // running would not answer blocking calls.
    let sync_rpc = Fork::new()
        .map_err(start_error("RPC process"))?
        .rpc(echo)
        .start()
        .map_err(start_error("RPC process"))?;
    let sync_pool = ready_pool(1, 1, echo)?;
    let python = python_cpu(1, Duration::from_millis(10)).is_some();
    for round in 0..rounds {
        progress(&format!("pool: round {} of {rounds}", round + 1));
        for (max, pool) in &cpu_pools {
            let sample = windowed(&runtime, time, |_| pool.call(iterations))?;
            record("cpu_1ms", Runner::Pool, *max, IN_FLIGHT, sample);
        }
        record(
            "cpu_1ms",
            Runner::Threads,
            ncpu,
            IN_FLIGHT,
            threads_cpu(ncpu, iterations, time),
        );
        if python {
            if let Some(sample) = python_cpu(ncpu, time) {
                record("cpu_1ms", Runner::Python, ncpu, IN_FLIGHT, sample);
            }
        }
        let sample = windowed(&runtime, time, |n| trivial_pool.call(n))?;
        record("trivial", Runner::Pool, 2, IN_FLIGHT, sample);
        let sample = windowed(&runtime, time, |n| rpc.call(n))?;
        record("trivial", Runner::Rpc, 1, IN_FLIGHT, sample);
        // Blocking round trips, in alternating blocks; this thread on CPU
        // 0 and both children on CPU 1 (where there are two), so that
        // neither is favoured by where the scheduler put it.
        let placed = place_for_round_trips(&sync_rpc, &sync_pool, ncpu)?;
        let (mut through_pool, mut direct) = (Vec::new(), Vec::new());
        let (mut pool_time, mut rpc_time) = (Duration::ZERO, Duration::ZERO);
        while pool_time + rpc_time < time {
            for n in 0..200u64 {
                let t = Instant::now();
                sync_pool.call_blocking(n)?;
                through_pool.push(t.elapsed().as_secs_f64());
                pool_time += t.elapsed();
            }
            for n in 0..200u64 {
                let t = Instant::now();
                sync_rpc.call_blocking(n)?;
                direct.push(t.elapsed().as_secs_f64());
                rpc_time += t.elapsed();
            }
        }
        if let Some(before) = placed {
            let _ = rustix::thread::sched_setaffinity(None, &before);
        }
        record(
            "sync_rtt",
            Runner::Pool,
            1,
            1,
            figure(through_pool, pool_time),
        );
        record("sync_rtt", Runner::Rpc, 1, 1, figure(direct, rpc_time));
    }
    let figures = samples
        .into_iter()
        .map(|(mut figure, list)| {
            figure.calls_per_sec = median(list.iter().map(|s| s.0).collect());
            figure.median_rtt_us = median(list.iter().map(|s| s.1).collect());
            figure
        })
        .collect();
    drop((cpu_pools, trivial_pool, sync_pool, rpc, sync_rpc));
    let recovery_ms = recovery(rounds.max(3), progress)?;
    Ok(PoolReport {
        figures,
        recovery_ms,
        ncpu,
    })
}

/// Pins this thread to CPU 0 and the two children to CPU 1; returns the
/// CPUs to restore (`None` on one CPU: nothing moved).
fn place_for_round_trips(
    rpc: &anyfork::rpc::Rpc<u64, u64>,
    pool: &Pool<u64, u64>,
    ncpu: usize,
) -> Result<Option<rustix::thread::CpuSet>, PoolBenchError> {
    if ncpu < 2 {
        return Ok(None);
    }
    let io = |source: io::Error| PoolBenchError::Io {
        doing: "setting CPU affinity",
        source,
    };
    let before = rustix::thread::sched_getaffinity(None).map_err(|e| io(e.into()))?;
    let worker = pool.status().workers.iter().find_map(|w| w.pid);
    for pid in [Some(rpc.pid()?), worker].into_iter().flatten() {
        crate::affinity::pin(Some(pid), 1).map_err(io)?;
    }
    crate::affinity::pin(None, 0).map_err(io)?;
    Ok(Some(before))
}

/// Median time from a worker's SIGKILL to the pool at full width again.
fn recovery(times: usize, progress: &dyn Fn(&str)) -> Result<f64, PoolBenchError> {
    progress("pool: recovery from a worker's SIGKILL");
    let pool = ready_pool(2, 1, echo)?;
    let mut took = VecDeque::new();
    for _ in 0..times {
        // The oldest worker, once it has run a while: a worker killed
        // younger than a second, before answering anything, counts as one
        // that failed to start (the crash-loop breaker's rule).
        let oldest = pool
            .status()
            .workers
            .into_iter()
            .filter(|w| w.pid.is_some())
            .max_by_key(|w| w.age);
        let Some(oldest) = oldest else { continue };
        std::thread::sleep(Duration::from_millis(1100).saturating_sub(oldest.age));
        let Some(victim) = oldest.pid else { continue };
        let killed_at = Instant::now();
        // SAFETY: kill(2) of a worker this pool started.
        unsafe { libc::kill(victim as i32, libc::SIGKILL) };
        let deadline = killed_at + Duration::from_secs(10);
        loop {
            let status = pool.status();
            let ready = status
                .workers
                .iter()
                .filter(|w| !w.leaving && w.pid.is_some_and(|p| p != victim))
                .count();
            if ready >= 2 || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        took.push_back(killed_at.elapsed().as_secs_f64() * 1e3);
        pool.call_blocking(1)?;
    }
    Ok(median(took.into_iter().collect()))
}
