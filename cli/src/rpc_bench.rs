//! `anyfork bench rpc`: what an RPC call costs, against the same bytes moved
//! by hand between the same two kinds of process.
//!
//! Every call sends a string of the payload's size and gets it back (the
//! child's function returns its argument). Measured, side by side and
//! interleaved over rounds:
//!
//! - `raw`: no RPC at all. A process forked with `Fork::new()` reads a
//!   message of the known size from its socket and writes it back; the
//!   parent writes and reads with plain blocking I/O (one in flight), or
//!   with a writer and a reader task on a current-thread tokio runtime (64
//!   in flight). This is the floor any RPC layer stands on.
//! - `sync`: the synchronous backend, one call at a time with
//!   `call_blocking` from a thread without a runtime.
//! - `async`: the asynchronous backend, called with `call(..).await` on a
//!   current-thread runtime, 1 or 64 calls in flight;
//!
//! each RPC case for every serialiser, each case for 16-byte, 1 KiB and
//! 1 MiB payloads. A figure is the median over rounds of the calls per
//! second, and the median round trip (from making the call to having its
//! result) of the calls in them.
//!
//! The one-at-a-time cases of a payload (raw ping-pong and the sync
//! backend with each serialiser) run together, their processes taking
//! turns in short blocks of calls. Unless everything is pinned to one CPU
//! (`--pin`), this process runs on CPU 0 and the children on CPU 1 while
//! RPC is measured (see [`Placement`]).

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyfork::Fork;
use anyfork::rpc::Codec;

use crate::affinity::pin;
use crate::median::median;
use crate::raw_socket::{raw_pipelined, raw_round_trip};

/// The payload sizes, in bytes: a small call, 1 KiB and 1 MiB.
pub const PAYLOADS: [usize; 3] = [16, 1024, 1 << 20];

/// How many calls the pipelined cases keep in flight.
pub const WINDOW: usize = 64;

/// The serialisers, with their names in the report.
pub const SERIALISERS: [(Codec, &str); 4] = [
    (Codec::Raw, "raw"),
    (Codec::Cbor, "cbor"),
    (Codec::Json, "json"),
    (Codec::Postcard, "postcard"),
];

/// Who moves the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Plain socket I/O, no RPC.
    Raw,
    /// The synchronous backend.
    Sync,
    /// The asynchronous backend.
    Async,
}

impl Backend {
    /// The name used in `--json`.
    pub fn key(self) -> &'static str {
        match self {
            Backend::Raw => "raw",
            Backend::Sync => "sync",
            Backend::Async => "async",
        }
    }
}

/// One case: a backend, a serialiser (`None` for raw), a payload size and
/// how many calls are in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Case {
    pub backend: Backend,
    pub serialiser: Option<(Codec, &'static str)>,
    pub payload_bytes: usize,
    pub in_flight: usize,
}

impl Case {
    /// The serialiser's name in the report (`"none"` for raw).
    pub fn serialiser_name(&self) -> &'static str {
        self.serialiser.map_or("none", |(_, name)| name)
    }

    pub(crate) fn describe(&self) -> String {
        format!(
            "{} {} {} B x{}",
            self.backend.key(),
            self.serialiser_name(),
            self.payload_bytes,
            self.in_flight
        )
    }

    /// Every case, in the order they are measured and shown.
    pub fn all() -> Vec<Case> {
        let mut cases = Vec::new();
        for payload_bytes in PAYLOADS {
            let raw = |in_flight| Case {
                backend: Backend::Raw,
                serialiser: None,
                payload_bytes,
                in_flight,
            };
            cases.push(raw(1));
            cases.push(raw(WINDOW));
            for serialiser in SERIALISERS {
                for (backend, in_flight) in [
                    (Backend::Sync, 1),
                    (Backend::Async, 1),
                    (Backend::Async, WINDOW),
                ] {
                    cases.push(Case {
                        backend,
                        serialiser: Some(serialiser),
                        payload_bytes,
                        in_flight,
                    });
                }
            }
        }
        cases
    }
}

/// One measured case.
#[derive(Debug, Clone)]
pub struct RpcFigure {
    pub case: Case,
    pub calls_per_sec: f64,
    pub median_rtt_us: f64,
}

/// Why a case could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum RpcBenchError {
    #[error("{case}: {doing}")]
    Io {
        case: String,
        doing: &'static str,
        source: io::Error,
    },
    #[error("{case}")]
    Start {
        case: String,
        source: anyfork::Error,
    },
    #[error("{case}")]
    Call {
        case: String,
        source: anyfork::rpc::Error,
    },
    #[error("{case}: the reply differs from the request")]
    WrongReply { case: String },
}

// ---------------------------------------------------------------------------
// What the children run.

/// The RPC function of the synchronous cases.
fn echo(text: String) -> String {
    text
}

/// The RPC function of the asynchronous cases.
async fn echo_async(text: String) -> String {
    text
}

// ---------------------------------------------------------------------------
// The measurements.

/// What one round of a case gave.
pub(crate) struct Sample {
    pub(crate) calls: u64,
    pub(crate) elapsed: Duration,
    pub(crate) rtts: Vec<Duration>,
}

impl Sample {
    pub(crate) fn new() -> Sample {
        Sample {
            calls: 0,
            elapsed: Duration::ZERO,
            rtts: Vec::new(),
        }
    }
}

/// Calls made before the clock starts, so buffers are grown and pages
/// touched.
const WARM_UP: usize = 3;

/// At least this many calls per round, however slow.
pub(crate) const MIN_CALLS: u64 = 5;

pub(crate) fn payload(size: usize) -> String {
    "x".repeat(size)
}

pub(crate) fn runtime(case: &Case) -> Result<tokio::runtime::Runtime, RpcBenchError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| RpcBenchError::Io {
            case: case.describe(),
            doing: "starting a tokio runtime",
            source,
        })
}

/// Whether a case is one of the one-call-at-a-time cases that are measured
/// together (see [`measure_round_trips`]).
pub(crate) fn is_round_trip(case: &Case) -> bool {
    case.in_flight == 1 && matches!(case.backend, Backend::Raw | Backend::Sync)
}

/// Measures one of the other cases for about `time`.
fn measure(case: &Case, time: Duration) -> Result<Sample, RpcBenchError> {
    match case.backend {
        Backend::Async => async_calls(case, time),
        Backend::Raw | Backend::Sync => raw_pipelined(case, time),
    }
}

/// One call, one at a time, to a process that was started for it.
pub(crate) type RoundTrip<'a> = Box<dyn FnMut() -> Result<(), RpcBenchError> + 'a>;

/// A call to the synchronous backend, blocking, from a thread without a
/// runtime.
fn sync_round_trip(case: &Case) -> Result<RoundTrip<'_>, RpcBenchError> {
    let rpc = new_fork(case)?
        .rpc(echo)
        .codec(codec(case))
        .start()
        .map_err(start_error(case))?;
    let message = payload(case.payload_bytes);
    Ok(Box::new(move || {
        let back = rpc
            .call_blocking(message.clone())
            .map_err(|source| RpcBenchError::Call {
                case: case.describe(),
                source,
            })?;
        if back == message {
            Ok(())
        } else {
            Err(RpcBenchError::WrongReply {
                case: case.describe(),
            })
        }
    }))
}

/// The one-at-a-time cases of one payload (raw ping-pong, and the sync
/// backend with every serialiser) measured together, for about `time`
/// each: every process in turn gets a short block of calls, so that all
/// see the same machine. Where the scheduler puts two processes that wake
/// each other (the same CPU or not) changes a round trip by up to 3× on
/// these machines, and it changes from moment to moment.
fn measure_round_trips(cases: &[&Case], time: Duration) -> Result<Vec<Sample>, RpcBenchError> {
    let mut partners = cases
        .iter()
        .map(|&case| match case.backend {
            Backend::Raw => raw_round_trip(case),
            _ => sync_round_trip(case),
        })
        .collect::<Result<Vec<_>, _>>()?;
    for partner in &mut partners {
        for _ in 0..WARM_UP {
            partner()?;
        }
    }
    // Long enough blocks that each case runs with its own buffers in the
    // CPUs' caches, as a program making calls in a row does (with blocks
    // of 2 at 1 MiB, every other call found the caches full of another
    // case's megabytes: that measured the switch between processes).
    let block = 32;
    let mut samples: Vec<Sample> = cases.iter().map(|_| Sample::new()).collect();
    let total = time * cases.len() as u32;
    let start = Instant::now();
    while start.elapsed() < total || samples.iter().any(|s| s.calls < MIN_CALLS) {
        for (partner, sample) in partners.iter_mut().zip(&mut samples) {
            let block_start = Instant::now();
            for _ in 0..block {
                let sent = Instant::now();
                partner()?;
                sample.rtts.push(sent.elapsed());
            }
            sample.calls += block;
            sample.elapsed += block_start.elapsed();
        }
    }
    Ok(samples)
}

/// Wraps an error starting a process for `case`.
pub(crate) fn start_error(case: &Case) -> impl Fn(anyfork::Error) -> RpcBenchError + '_ {
    move |source| RpcBenchError::Start {
        case: case.describe(),
        source,
    }
}

/// The CPU the measured children run on, or `usize::MAX`: they go where
/// the scheduler puts them. Set by [`run`] for its duration.
static CHILD_CPU: AtomicUsize = AtomicUsize::new(usize::MAX);

/// A fork of the default template for one case, moved to the children's
/// CPU if there is one.
pub(crate) fn new_fork(case: &Case) -> Result<Fork, RpcBenchError> {
    let fork = Fork::new().map_err(start_error(case))?;
    let cpu = CHILD_CPU.load(Ordering::Relaxed);
    if cpu != usize::MAX {
        let pid = fork.pid().map_err(start_error(case))?;
        pin(Some(pid), cpu).map_err(|source| RpcBenchError::Io {
            case: case.describe(),
            doing: "moving the process to its CPU",
            source,
        })?;
    }
    Ok(fork)
}

fn codec(case: &Case) -> Codec {
    case.serialiser.map_or(Codec::Raw, |(codec, _)| codec)
}

fn async_calls(case: &Case, time: Duration) -> Result<Sample, RpcBenchError> {
    let call_error = |source| RpcBenchError::Call {
        case: case.describe(),
        source,
    };
    runtime(case)?.block_on(async {
        let rpc = new_fork(case)?
            .rpc(echo_async)
            .codec(codec(case))
            .start()
            .map_err(start_error(case))?;
        let message = payload(case.payload_bytes);
        let check = |back: String| {
            if back.len() == message.len() {
                Ok(())
            } else {
                Err(RpcBenchError::WrongReply {
                    case: case.describe(),
                })
            }
        };
        // A window of calls, each made (and so sent) when it enters. The
        // clock starts once a whole window has gone round, so that what is
        // measured is the steady state, not the first call's latency.
        let mut window = VecDeque::with_capacity(case.in_flight);
        let warm_up = case.in_flight.max(WARM_UP);
        let min_calls = MIN_CALLS.max(case.in_flight as u64);
        let mut sample = Sample::new();
        let mut start = Instant::now();
        let mut completed = 0;
        loop {
            let measuring =
                completed < warm_up || sample.calls < min_calls || start.elapsed() < time;
            if measuring {
                while window.len() < case.in_flight {
                    window.push_back((Instant::now(), rpc.call(message.clone())));
                }
            }
            let Some((sent, call)) = window.pop_front() else {
                break;
            };
            check(call.await.map_err(call_error)?)?;
            completed += 1;
            if completed == warm_up {
                start = Instant::now();
            } else if completed > warm_up && measuring {
                sample.rtts.push(sent.elapsed());
                sample.calls += 1;
                sample.elapsed = start.elapsed();
            }
        }
        Ok(sample)
    })
}

/// A permutation of `0..n` for round `round`: the first round in order,
/// the others shuffled (Fisher-Yates with a fixed-seed generator, so runs
/// are comparable).
fn round_order(n: usize, round: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    if round == 0 {
        return order;
    }
    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ (round as u64).wrapping_mul(0x2545_f491_4f6c_dd1d);
    for i in (1..n).rev() {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let r = state.wrapping_mul(0x2545_f491_4f6c_dd1d);
        order.swap(i, (r % (i as u64 + 1)) as usize);
    }
    order
}

/// Measures every case `rounds` times, interleaved, each for about
/// `time`; `progress` hears about each round.
pub fn run(
    rounds: usize,
    time: Duration,
    split: bool,
    progress: &dyn Fn(&str),
) -> Result<Vec<RpcFigure>, RpcBenchError> {
    let placement = Placement::new(split)?;
    let result = run_cases(rounds, time, progress);
    drop(placement);
    result
}

/// The large-message cases (see [`crate::large_message_bench`]), placed
/// as [`run`] places its cases.
pub fn run_large(
    rounds: usize,
    time: Duration,
    split: bool,
    progress: &dyn Fn(&str),
) -> Result<Vec<crate::large_message_bench::LargeFigure>, RpcBenchError> {
    let placement = Placement::new(split)?;
    let result = crate::large_message_bench::run(rounds, time, progress);
    drop(placement);
    result
}

/// How a case's messages travel: through shared memory above the
/// threshold (the default), else the socket.
pub fn transport(case: &Case) -> &'static str {
    if case.backend != Backend::Raw && case.payload_bytes > anyfork::rpc::shared_memory::SPILL_AT {
        "shared_memory"
    } else {
        "socket"
    }
}

/// With `split`, this thread runs on CPU 0 and the measured children on
/// CPU 1 until dropped, so that every case sees the same kind of wake-up:
/// a round trip between two processes on these machines is 11–15 µs when
/// the scheduler keeps them on one CPU and 30–40 µs across CPUs, and which
/// one a process gets differs from process to process and moment to
/// moment. Measured unplaced, the ratio of two cases says more about luck
/// than about the code.
struct Placement {
    /// The CPUs this thread may use, to restore.
    before: Option<rustix::thread::CpuSet>,
}

impl Placement {
    fn new(split: bool) -> Result<Placement, RpcBenchError> {
        let io = |source| RpcBenchError::Io {
            case: "placing the processes".into(),
            doing: "setting CPU affinity",
            source,
        };
        if !split {
            return Ok(Placement { before: None });
        }
        // The default template must exist before this thread is pinned, or
        // it (and every process it forks) would inherit CPU 0 for good.
        Fork::new()
            .and_then(|fork| fork.pid())
            .map_err(|source| RpcBenchError::Start {
                case: "the default template".into(),
                source,
            })?;
        let before = rustix::thread::sched_getaffinity(None).map_err(|e| io(e.into()))?;
        pin(None, 0).map_err(io)?;
        CHILD_CPU.store(1, Ordering::Relaxed);
        Ok(Placement {
            before: Some(before),
        })
    }
}

impl Drop for Placement {
    fn drop(&mut self) {
        if let Some(before) = &self.before {
            CHILD_CPU.store(usize::MAX, Ordering::Relaxed);
            let _ = rustix::thread::sched_setaffinity(None, before);
        }
    }
}

fn run_cases(
    rounds: usize,
    time: Duration,
    progress: &dyn Fn(&str),
) -> Result<Vec<RpcFigure>, RpcBenchError> {
    let cases = Case::all();
    // The jobs of a round: per payload, its round-trip cases together;
    // every other case on its own.
    let mut jobs: Vec<Vec<usize>> = Vec::new();
    for payload in PAYLOADS {
        jobs.push(
            (0..cases.len())
                .filter(|&i| cases[i].payload_bytes == payload && is_round_trip(&cases[i]))
                .collect(),
        );
    }
    jobs.extend(
        (0..cases.len())
            .filter(|&i| !is_round_trip(&cases[i]))
            .map(|i| vec![i]),
    );
    let mut rates = vec![Vec::new(); cases.len()];
    let mut rtts = vec![Vec::new(); cases.len()];
    for round in 0..rounds {
        progress(&format!(
            "RPC, round {}/{rounds}: {} cases",
            round + 1,
            cases.len()
        ));
        // Each round in its own order: where a case falls in the sequence
        // (after a busy one, after an idle one) changes its latency.
        for j in round_order(jobs.len(), round) {
            let job = &jobs[j];
            let samples = if job.len() == 1 && !is_round_trip(&cases[job[0]]) {
                vec![measure(&cases[job[0]], time)?]
            } else {
                let group: Vec<&Case> = job.iter().map(|&i| &cases[i]).collect();
                measure_round_trips(&group, time)?
            };
            for (&i, sample) in job.iter().zip(samples) {
                rates[i].push(sample.calls as f64 / sample.elapsed.as_secs_f64());
                rtts[i].push(median(
                    sample
                        .rtts
                        .iter()
                        .map(|rtt| rtt.as_secs_f64() * 1e6)
                        .collect(),
                ));
            }
        }
    }
    Ok(cases
        .into_iter()
        .zip(rates.into_iter().zip(rtts))
        .map(|(case, (rates, rtts))| RpcFigure {
            case,
            calls_per_sec: median(rates),
            median_rtt_us: median(rtts),
        })
        .collect())
}

/// Looks up one figure.
pub fn find<'a>(
    figures: &'a [RpcFigure],
    backend: Backend,
    serialiser: &str,
    payload_bytes: usize,
    in_flight: usize,
) -> Option<&'a RpcFigure> {
    figures.iter().find(|f| {
        f.case.backend == backend
            && f.case.serialiser_name() == serialiser
            && f.case.payload_bytes == payload_bytes
            && f.case.in_flight == in_flight
    })
}

/// The two ratios the RPC layer is judged by, for one serialiser and
/// payload: sync round trip / raw ping-pong round trip, and async calls per
/// second with a full window / raw messages per second with a full window.
pub fn ratios(
    figures: &[RpcFigure],
    serialiser: &str,
    payload_bytes: usize,
) -> (Option<f64>, Option<f64>) {
    let rtt_ratio = find(figures, Backend::Sync, serialiser, payload_bytes, 1)
        .zip(find(figures, Backend::Raw, "none", payload_bytes, 1))
        .map(|(sync, raw)| sync.median_rtt_us / raw.median_rtt_us);
    let rate_ratio = find(figures, Backend::Async, serialiser, payload_bytes, WINDOW)
        .zip(find(figures, Backend::Raw, "none", payload_bytes, WINDOW))
        .map(|(rpc, raw)| rpc.calls_per_sec / raw.calls_per_sec);
    (rtt_ratio, rate_ratio)
}
