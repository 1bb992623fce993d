//! `anyfork bench remote`: processes on another machine, side by side in
//! one run.
//!
//! - **first reply**: from nothing to a worker's first RPC reply, (a) with
//!   one ssh session per worker, as AnyEvent::Fork::Remote does, and (b)
//!   with a fork of a far template over one connection (goal: b at least
//!   20 times faster);
//! - **round trip**: one blocking RPC call at a time over ssh, against the
//!   same 8 bytes echoed by a plain `ssh host cat`;
//! - **pools**: a pool of 2 far workers against a local pool of 2 on the
//!   1 ms job, 64 calls in flight.
//!
//! With no `--host` it starts a throwaway sshd on 127.0.0.1 (as the tests
//! do) and says so; with `--host user@host` it measures that machine (this
//! program must be at the same path there, or use `--ship`). Figures are
//! medians over rounds that interleave the methods.

include!("../../support/throwaway_sshd.rs");

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyfork::remote::{Builder, Remote};
use serde_json::{Value, json};

use crate::median::median;
use crate::pool_bench::{self, PoolBenchError};

/// Why the remote benchmark failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteBenchError {
    #[error("no ssh server to measure: {0}")]
    NoServer(String),
    #[error("connecting")]
    Connect(#[from] anyfork::remote::Error),
    #[error("starting a process")]
    Start(#[from] anyfork::Error),
    #[error("an RPC call failed")]
    Rpc(#[from] anyfork::rpc::Error),
    #[error("the pools")]
    Pool(#[from] PoolBenchError),
    #[error("a pool call failed")]
    PoolCall(#[from] anyfork::pool::Error),
    #[error("{doing}")]
    Io {
        doing: &'static str,
        #[source]
        source: std::io::Error,
    },
}

fn io(doing: &'static str) -> impl FnOnce(std::io::Error) -> RemoteBenchError {
    move |source| RemoteBenchError::Io { doing, source }
}

/// What was measured.
#[derive(Debug, Clone)]
pub struct RemoteReport {
    /// Where: `throwaway sshd on 127.0.0.1:PORT` or the host.
    pub target: String,
    pub session_per_worker_ms: f64,
    pub template_fork_ms: f64,
    pub rpc_rtt_us: f64,
    pub cat_rtt_us: f64,
    pub remote_pool_per_sec: f64,
    pub local_pool_per_sec: f64,
}

/// How hard to measure.
#[derive(Debug, Clone, Copy)]
struct Plan {
    rounds: usize,
    forks_per_round: usize,
    rtts_per_round: usize,
    pool_time: Duration,
}

/// Runs it: against `host`, or a throwaway sshd if `None`.
pub fn run(
    host: Option<&str>,
    ship: bool,
    quick: bool,
    progress: &dyn Fn(&str),
) -> Result<RemoteReport, RemoteBenchError> {
    let plan = if quick {
        Plan {
            rounds: 3,
            forks_per_round: 10,
            rtts_per_round: 300,
            pool_time: Duration::from_millis(700),
        }
    } else {
        Plan {
            rounds: 7,
            forks_per_round: 30,
            rtts_per_round: 2000,
            pool_time: Duration::from_secs(2),
        }
    };
    let server;
    let (destination, options, target) = match host {
        Some(host) => (host.to_owned(), Vec::new(), host.to_owned()),
        None => {
            server = ThrowawaySshd::start(Duration::from_secs(600))
                .map_err(RemoteBenchError::NoServer)?;
            let target = format!("throwaway sshd on 127.0.0.1:{}", server.port);
            progress(&format!("remote: no --host: measuring over a {target}"));
            (server.destination(), server.ssh_options(), target)
        }
    };
    let builder = || {
        let mut builder = Remote::builder().ship_executable(ship);
        for option in &options {
            builder = builder.ssh_option(option);
        }
        builder
    };
    let remote = builder().ssh(&destination)?;
    progress(&format!(
        "remote: connected to {} (far pid {})",
        remote.name(),
        remote.far_side().pid
    ));
    let template = remote.new_exec()?;
    template.pid()?;
    let rpc = remote.new_exec()?.rpc(pool_bench::echo).start()?;
    let mut cat = SshCat::start(&destination, &options)?;
    let iterations = pool_bench::calibrate();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io("starting a tokio runtime"))?;
    let far_pool = pool_bench::ready_pool_from(remote.new_exec()?, 2, 2, pool_bench::spin)?;
    let local_pool = pool_bench::ready_pool_from(anyfork::Fork::new()?, 2, 2, pool_bench::spin)?;
    let (mut sessions, mut forks, mut rpc_rtts, mut cat_rtts) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut far_rates, mut local_rates) = (Vec::new(), Vec::new());
    for round in 0..plan.rounds {
        progress(&format!("remote: round {} of {}", round + 1, plan.rounds));
        sessions.push(first_reply_over_new_session(&builder, &destination)?);
        let mut these = Vec::new();
        for _ in 0..plan.forks_per_round {
            these.push(first_reply_of_fork(&template)?);
        }
        forks.push(median(these));
        let mut these = Vec::new();
        for n in 0..plan.rtts_per_round {
            let start = Instant::now();
            rpc.call_blocking(n as u64)?;
            these.push(start.elapsed().as_secs_f64());
        }
        rpc_rtts.push(median(these));
        cat_rtts.push(cat.round_trips(plan.rtts_per_round)?);
        let (far, _) =
            pool_bench::windowed(&runtime, plan.pool_time, |_| far_pool.call(iterations))?;
        far_rates.push(far);
        let (local, _) =
            pool_bench::windowed(&runtime, plan.pool_time, |_| local_pool.call(iterations))?;
        local_rates.push(local);
    }
    Ok(RemoteReport {
        target,
        session_per_worker_ms: median(sessions) * 1e3,
        template_fork_ms: median(forks) * 1e3,
        rpc_rtt_us: median(rpc_rtts) * 1e6,
        cat_rtt_us: median(cat_rtts) * 1e6,
        remote_pool_per_sec: median(far_rates),
        local_pool_per_sec: median(local_rates),
    })
}

/// Seconds from nothing to the first reply of a worker on its own ssh
/// session.
fn first_reply_over_new_session(
    builder: &dyn Fn() -> Builder,
    destination: &str,
) -> Result<f64, RemoteBenchError> {
    let start = Instant::now();
    let remote = builder().ssh(destination)?;
    let rpc = remote.new_exec()?.rpc(pool_bench::echo).start()?;
    rpc.call_blocking(1)?;
    Ok(start.elapsed().as_secs_f64())
}

/// Seconds from nothing to the first reply of a worker forked from a far
/// template over the open connection.
fn first_reply_of_fork(template: &anyfork::Fork) -> Result<f64, RemoteBenchError> {
    let start = Instant::now();
    let rpc = template.fork()?.rpc(pool_bench::echo).start()?;
    rpc.call_blocking(1)?;
    Ok(start.elapsed().as_secs_f64())
}

/// `ssh host cat`, for round trips of raw bytes.
struct SshCat {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: std::process::ChildStdout,
}

impl SshCat {
    fn start(destination: &str, options: &[String]) -> Result<SshCat, RemoteBenchError> {
        let mut child = Command::new("ssh")
            .args(["-T", "-o", "BatchMode=yes"])
            .args(options)
            .arg(destination)
            .arg("cat")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(io("starting ssh cat"))?;
        let stdin = child.stdin.take().ok_or_else(|| RemoteBenchError::Io {
            doing: "taking ssh cat's stdin",
            source: std::io::ErrorKind::BrokenPipe.into(),
        })?;
        let stdout = child.stdout.take().ok_or_else(|| RemoteBenchError::Io {
            doing: "taking ssh cat's stdout",
            source: std::io::ErrorKind::BrokenPipe.into(),
        })?;
        Ok(SshCat {
            child,
            stdin,
            stdout,
        })
    }

    /// The median seconds of `n` echoes of 8 bytes.
    fn round_trips(&mut self, n: usize) -> Result<f64, RemoteBenchError> {
        let mut times = Vec::with_capacity(n);
        let mut back = [0u8; 8];
        for i in 0..n as u64 {
            let start = Instant::now();
            self.stdin
                .write_all(&i.to_be_bytes())
                .map_err(io("writing to ssh cat"))?;
            self.stdin.flush().map_err(io("writing to ssh cat"))?;
            self.stdout
                .read_exact(&mut back)
                .map_err(io("reading from ssh cat"))?;
            times.push(start.elapsed().as_secs_f64());
        }
        Ok(median(times))
    }
}

impl Drop for SshCat {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The ratios the report leads with.
pub fn ratios(report: &RemoteReport) -> Vec<(&'static str, f64)> {
    vec![
        (
            "session_per_worker_over_template_fork",
            report.session_per_worker_ms / report.template_fork_ms,
        ),
        (
            "rpc_over_ssh_over_ssh_cat_echo",
            report.rpc_rtt_us / report.cat_rtt_us,
        ),
        (
            "remote_pool_over_local_pool",
            report.remote_pool_per_sec / report.local_pool_per_sec,
        ),
    ]
}

/// `{"remote": [...], "remote_ratios": {...}, "remote_target": ...}`.
pub fn render_json(report: &RemoteReport) -> String {
    let r = |v: f64| (v * 1000.0).round() / 1000.0;
    let rows = json!([
        {"method": "ssh_session_per_worker", "first_reply_ms": r(report.session_per_worker_ms)},
        {"method": "remote_template_fork", "first_reply_ms": r(report.template_fork_ms)},
        {"method": "rpc_over_ssh", "median_rtt_us": r(report.rpc_rtt_us)},
        {"method": "ssh_cat_echo", "median_rtt_us": r(report.cat_rtt_us)},
        {"method": "remote_pool", "calls_per_sec": r(report.remote_pool_per_sec)},
        {"method": "local_pool", "calls_per_sec": r(report.local_pool_per_sec)},
    ]);
    let ratios: serde_json::Map<String, Value> = ratios(report)
        .into_iter()
        .map(|(name, ratio)| (name.to_owned(), json!(r(ratio))))
        .collect();
    json!({"remote": rows, "remote_ratios": ratios, "remote_target": report.target}).to_string()
}

/// The report as a table.
pub fn render_table(report: &RemoteReport) -> String {
    let mut out = format!("Remote processes over ssh ({})\n\n", report.target);
    out.push_str(&format!(
        "  from nothing to a worker's first reply:\n    one ssh session per worker (AnyEvent::Fork::Remote's way)  {:>9.2} ms\n    fork of a far template over one connection                 {:>9.2} ms\n",
        report.session_per_worker_ms, report.template_fork_ms
    ));
    out.push_str(&format!(
        "  round trip of a small message:\n    RPC call over ssh                                          {:>9.1} µs\n    8 bytes through `ssh host cat`                             {:>9.1} µs\n",
        report.rpc_rtt_us, report.cat_rtt_us
    ));
    out.push_str(&format!(
        "  1 ms jobs, 64 in flight, 2 workers:\n    pool of far workers                                        {:>9.0} calls/s\n    pool of local workers                                      {:>9.0} calls/s\n\n",
        report.remote_pool_per_sec, report.local_pool_per_sec
    ));
    for (name, ratio) in ratios(report) {
        out.push_str(&format!("  {name:<42} {ratio:>8.2}x\n"));
    }
    out
}
