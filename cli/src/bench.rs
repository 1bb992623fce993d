//! `anyfork bench`: the PERFORMANCE section of the AnyEvent::Fork manual,
//! measured on this machine, side by side in one run.
//!
//! Processes per second, each created, told to run a function that exits at
//! once, and waited for (end-of-file on its socket), one at a time:
//!
//! - (a) `plain_fork`: socketpair + `fork` of this process, `_exit` in the child;
//! - (b) `new`: `Fork::new()` (a fork of the default template);
//! - (c) `new_exec`: `Fork::new_exec()` (a fresh process of this executable);
//! - (d) `template_fork`: `fork()` of a template made with `Fork::new()`;
//!
//! with this process grown to 5, 20, 200 and 2000 MB of touched memory. The
//! figures are medians over rounds that interleave the methods, so that a
//! noisy moment does not favour one of them; the full run's rounds also
//! sweep the sizes up and down (see `Options::visits`). Perl's
//! AnyEvent::Fork, when installed, is measured in the same rounds at 5 MB
//! (between ours), and compared with that size's figures.
//!
//! Then the RPC part ([`crate::rpc_bench`]): calls against raw socket I/O.

use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use anyfork::{Args, Fork};

use crate::median::median;
use crate::memory::{self, Ballast, Footprint};
use crate::perl::{PerlFigures, PerlRounds};
use crate::rpc_bench::{self, RpcFigure};

/// The sizes this process is grown to, in MB.
pub const SIZES_MB: [u64; 4] = [5, 20, 200, 2000];
/// The parent size at which Perl's rates are measured and compared.
pub const PERL_COMPARED_AT_MB: u64 = SIZES_MB[0];

/// How the benchmark runs.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// A run of under 30 seconds: short cells.
    pub quick: bool,
    /// Print one JSON object on stdout instead of the table.
    pub json: bool,
    /// Pin this process (and so the template and children) to CPU 0.
    pub pin: bool,
    /// Also measure Perl's AnyEvent::Fork, if it is installed.
    pub perl: bool,
    /// Measure process creation and memory.
    pub spawn: bool,
    /// Measure RPC calls.
    pub rpc: bool,
    /// Measure worker pools.
    pub pool: bool,
}

impl Options {
    /// Rounds interleave the methods; figures are medians over rounds. Even
    /// the quick run has three: one short cell is too noisy for ratios.
    /// The full run spends its time on more, shorter rounds: a burst of
    /// noise on these machines lasts seconds, and a median of five outlasts
    /// more of them than a median of three.
    pub fn rounds(&self) -> usize {
        if self.quick { 3 } else { 5 }
    }

    /// The order in which sizes are measured: (round, index into
    /// [`SIZES_MB`]). The full run visits every size in every round, up from
    /// 5 to 2000 MB and the next round back down, so a size's figure is the
    /// median of rounds spread over the whole run, like every other size's:
    /// the ratios between sizes do not measure how the machine drifted
    /// between the first minute and the last (and going up and down cancels
    /// a steady drift). Growing this process to 2000 MB takes seconds here,
    /// so the quick run grows it once: all rounds of a size, then the next.
    fn visits(&self) -> Vec<(usize, usize)> {
        let sizes = 0..SIZES_MB.len();
        if self.quick {
            return sizes
                .flat_map(|size| (0..self.rounds()).map(move |round| (round, size)))
                .collect();
        }
        let last = SIZES_MB.len() - 1;
        (0..self.rounds())
            .flat_map(|round| {
                let down = round % 2 == 1;
                sizes
                    .clone()
                    .map(move |i| (round, if down { last - i } else { i }))
            })
            .collect()
    }

    fn cell_time(&self) -> Duration {
        if self.quick {
            Duration::from_millis(200)
        } else {
            Duration::from_millis(600)
        }
    }

    /// RPC cases are many and short; each round starts new processes, and
    /// where the scheduler puts them changes a round trip by up to 3×, so
    /// the full run takes more rounds.
    pub fn rpc_rounds(&self) -> usize {
        if self.quick { 3 } else { 9 }
    }

    /// Pool cells are long (CPU-bound jobs of 1 ms); few rounds.
    pub fn pool_rounds(&self) -> usize {
        if self.quick { 3 } else { 5 }
    }

    fn pool_cell_time(&self) -> Duration {
        if self.quick {
            Duration::from_millis(250)
        } else {
            Duration::from_millis(800)
        }
    }

    fn rpc_cell_time(&self) -> Duration {
        if self.quick {
            Duration::from_millis(40)
        } else {
            Duration::from_millis(150)
        }
    }
}

/// The ways of creating a process that are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    PlainFork,
    New,
    NewExec,
    TemplateFork,
    /// `posix_spawn` of `/bin/true`, waited for: what a fresh process of
    /// any program costs here, the bar for `new_exec`.
    PosixSpawnTrue,
}

impl Method {
    const ALL: [Method; 5] = [
        Method::PlainFork,
        Method::New,
        Method::NewExec,
        Method::TemplateFork,
        Method::PosixSpawnTrue,
    ];

    /// The name used in `--json`.
    pub fn key(self) -> &'static str {
        match self {
            Method::PlainFork => "plain_fork",
            Method::New => "new",
            Method::NewExec => "new_exec",
            Method::TemplateFork => "template_fork",
            Method::PosixSpawnTrue => "posix_spawn_true",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Method::PlainFork => "(a) plain fork",
            Method::New => "(b) Fork::new",
            Method::NewExec => "(c) new_exec",
            Method::TemplateFork => "(d) template fork",
            Method::PosixSpawnTrue => "(e) posix_spawn /bin/true",
        }
    }
}

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{doing}")]
    Io {
        doing: &'static str,
        source: io::Error,
    },
    #[error("{method}")]
    Anyfork {
        method: &'static str,
        source: anyfork::Error,
    },
    #[error("RPC")]
    Rpc(#[from] rpc_bench::RpcBenchError),
    #[error("pool")]
    Pool(#[from] crate::pool_bench::PoolBenchError),
    #[error("process creation from several threads")]
    Scaling(#[from] crate::spawn_scaling::ScalingError),
}

fn io_error(doing: &'static str) -> impl FnOnce(io::Error) -> BenchError {
    move |source| BenchError::Io { doing, source }
}

/// One figure: a method at a parent size.
#[derive(Debug, Clone)]
pub struct Figure {
    pub method: Method,
    pub parent_mb: u64,
    /// The parent's measured resident size.
    pub parent_rss_kb: u64,
    pub per_sec: f64,
}

/// Everything measured.
#[derive(Debug, Clone)]
pub struct Report {
    pub options: Options,
    pub cpus: usize,
    /// Process creation and memory, if measured.
    pub spawn: Option<SpawnReport>,
    /// RPC calls, if measured.
    pub rpc: Option<Vec<RpcFigure>>,
    /// Large messages against the socket and ipc-channel, with RPC.
    pub rpc_large: Option<Vec<crate::large_message_bench::LargeFigure>>,
    /// Worker pools, if measured.
    pub pool: Option<crate::pool_bench::PoolReport>,
}

/// What the process-creation part measured.
#[derive(Debug, Clone)]
pub struct SpawnReport {
    pub figures: Vec<Figure>,
    /// `Fork::new` from several threads, and its latency.
    pub scaling: crate::spawn_scaling::Scaling,
    pub template: Footprint,
    pub child: Footprint,
    pub perl: Option<PerlFigures>,
}

impl SpawnReport {
    pub fn rate(&self, method: Method, parent_mb: u64) -> Option<f64> {
        self.figures
            .iter()
            .find(|f| f.method == method && f.parent_mb == parent_mb)
            .map(|f| f.per_sec)
    }

    pub fn ratio(&self, (m1, s1): (Method, u64), (m2, s2): (Method, u64)) -> Option<f64> {
        Some(self.rate(m1, s1)? / self.rate(m2, s2)?)
    }
}

/// The function every benchmarked process runs: return, so exit.
fn exit_at_once(_socket: UnixStream, _args: Args) {}

/// Reads until end-of-file.
fn wait_for_eof(mut socket: UnixStream) -> io::Result<()> {
    let mut buf = [0u8; 64];
    while socket.read(&mut buf)? > 0 {}
    Ok(())
}

/// (a): socketpair + fork + `_exit`, waited for by end-of-file, then reaped.
fn plain_fork_once() -> Result<(), BenchError> {
    let (ours, theirs) = UnixStream::pair().map_err(io_error("socketpair"))?;
    // SAFETY: the child calls only _exit, which is async-signal-safe, so it
    // does not matter which locks other threads hold at the fork.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: ends the child at once, running nothing of the parent's.
        unsafe { libc::_exit(0) };
    }
    if pid < 0 {
        return Err(BenchError::Io {
            doing: "fork",
            source: io::Error::last_os_error(),
        });
    }
    drop(OwnedFd::from(theirs));
    wait_for_eof(ours).map_err(io_error("waiting for the child"))?;
    let pid = rustix::process::Pid::from_raw(pid);
    rustix::process::waitpid(pid, rustix::process::WaitOptions::empty())
        .map_err(|e| io_error("reaping the child")(e.into()))?;
    Ok(())
}

/// (e): `posix_spawn("/bin/true")`, then `waitpid`.
fn posix_spawn_true_once() -> Result<(), BenchError> {
    let path = c"/bin/true";
    let argv = [c"true".as_ptr().cast_mut(), std::ptr::null_mut()];
    let mut pid: libc::pid_t = 0;
    // SAFETY: `path` and `argv` are NUL-terminated and outlive the call;
    // null file actions and attributes are allowed; `environ` is the
    // process's environment, which no other thread changes here.
    let ret = unsafe {
        libc::posix_spawn(
            &mut pid,
            path.as_ptr(),
            std::ptr::null(),
            std::ptr::null(),
            argv.as_ptr(),
            environ_ptr(),
        )
    };
    if ret != 0 {
        return Err(BenchError::Io {
            doing: "posix_spawn /bin/true",
            source: io::Error::from_raw_os_error(ret),
        });
    }
    let pid = rustix::process::Pid::from_raw(pid);
    rustix::process::waitpid(pid, rustix::process::WaitOptions::empty())
        .map_err(|e| io_error("reaping /bin/true")(e.into()))?;
    Ok(())
}

/// The C library's `environ`.
fn environ_ptr() -> *const *mut libc::c_char {
    unsafe extern "C" {
        static environ: *const *mut libc::c_char;
    }
    // SAFETY: reading the pointer value of libc's `environ`, which is
    // always defined.
    unsafe { environ }
}

fn anyfork_once(method: Method, template: &Fork) -> Result<(), BenchError> {
    let wrap = |source| BenchError::Anyfork {
        method: method.key(),
        source,
    };
    let fork = match method {
        Method::New => Fork::new().map_err(wrap)?,
        Method::NewExec => Fork::new_exec().map_err(wrap)?,
        Method::TemplateFork => template.fork().map_err(wrap)?,
        Method::PlainFork => return plain_fork_once(),
        Method::PosixSpawnTrue => return posix_spawn_true_once(),
    };
    let socket = fork.run(exit_at_once).map_err(wrap)?;
    wait_for_eof(socket).map_err(io_error("waiting for the process"))
}

/// Processes per second for `method`, over at least `time` and 3 processes.
fn measure(method: Method, template: &Fork, time: Duration) -> Result<f64, BenchError> {
    let start = Instant::now();
    let mut n = 0u32;
    while n < 3 || start.elapsed() < time {
        anyfork_once(method, template)?;
        n += 1;
    }
    Ok(f64::from(n) / start.elapsed().as_secs_f64())
}

fn progress(text: &str) {
    eprintln!("anyfork bench: {text}");
}

/// Runs the benchmark, reporting progress on stderr.
pub fn run(options: Options) -> Result<Report, BenchError> {
    // The machine's CPUs, counted before pinning narrows what we may use.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if options.pin {
        crate::affinity::pin(None, 0).map_err(io_error("pinning to CPU 0"))?;
    }
    progress(&format!(
        "{} rounds of {:?} per process figure, {} rounds of {:?} per RPC figure, {}",
        options.rounds(),
        options.cell_time(),
        options.rpc_rounds(),
        options.rpc_cell_time(),
        if options.pin {
            "pinned to CPU 0"
        } else {
            "unpinned"
        }
    ));
    // RPC first, while this process is small.
    let rpc = if options.rpc {
        // Parent and children on different CPUs, unless everything is
        // pinned to one.
        Some(rpc_bench::run(
            options.rpc_rounds(),
            options.rpc_cell_time(),
            !options.pin && cpus >= 2,
            &progress,
        )?)
    } else {
        None
    };
    let rpc_large = if options.rpc {
        Some(rpc_bench::run_large(
            options.rpc_rounds(),
            options.rpc_cell_time() * 2,
            !options.pin && cpus >= 2,
            &progress,
        )?)
    } else {
        None
    };
    // (The RPC part restored this thread's CPUs: pools use them all.)
    let pool = if options.pool {
        Some(crate::pool_bench::run(
            options.pool_rounds(),
            options.pool_cell_time(),
            &progress,
        )?)
    } else {
        None
    };
    let spawn = if options.spawn {
        Some(run_spawn(options)?)
    } else {
        None
    };
    Ok(Report {
        options,
        cpus,
        spawn,
        rpc,
        rpc_large,
        pool,
    })
}

/// The process-creation part.
fn run_spawn(options: Options) -> Result<SpawnReport, BenchError> {
    let anyfork_error = |method: &'static str| move |source| BenchError::Anyfork { method, source };
    // The default template, and a template of our own forked from it, both
    // made while this process is small, as a program would.
    let custom = Fork::new().map_err(anyfork_error("new"))?;
    custom.pid().map_err(anyfork_error("template"))?;

    // Memory: the default template and an idle process forked from it.
    let idle = Fork::new().map_err(anyfork_error("new"))?;
    let idle_pid = idle.pid().map_err(anyfork_error("new"))?;
    let default_template_pid = idle.template_pid().unwrap_or(idle_pid);
    let template_footprint =
        memory::footprint(default_template_pid).map_err(io_error("reading the template's size"))?;
    let child_footprint =
        memory::footprint(idle_pid).map_err(io_error("reading the child's size"))?;
    drop(idle);

    // While this process is small, as most callers are.
    let scaling = crate::spawn_scaling::measure(
        options.rounds().min(5),
        options.cell_time(),
        if options.quick { 300 } else { 2000 },
        &|text| progress(text),
    )?;

    let mut ballast = Ballast::default();
    let mut rates = vec![vec![Vec::new(); Method::ALL.len()]; SIZES_MB.len()];
    let mut parent_rss_kb = [0u64; SIZES_MB.len()];
    let mut perl = PerlRounds::default();
    for (round, size) in options.visits() {
        let parent_mb = SIZES_MB[size];
        ballast
            .shrink_to(parent_mb)
            .and_then(|()| ballast.grow_to(parent_mb))
            .map_err(io_error("sizing the parent"))?;
        parent_rss_kb[size] =
            memory::resident_kb(std::process::id()).map_err(io_error("reading our size"))?;
        let announce = |what: &str| {
            progress(&format!(
                "round {}/{}, {parent_mb:>4} MB parent: {what}",
                round + 1,
                options.rounds(),
            ))
        };
        for (i, &method) in Method::ALL.iter().enumerate() {
            announce(method.title());
            rates[size][i].push(measure(method, &custom, options.cell_time())?);
        }
        // Perl's rounds go between ours at the size the ratios use, so
        // that both are measured in the same minute.
        if options.perl && parent_mb == PERL_COMPARED_AT_MB {
            announce("Perl's AnyEvent::Fork new and new_exec");
            perl.round(options.cell_time() * 2);
        }
    }
    let mut figures = Vec::new();
    for (size, &parent_mb) in SIZES_MB.iter().enumerate() {
        for (i, &method) in Method::ALL.iter().enumerate() {
            figures.push(Figure {
                method,
                parent_mb,
                parent_rss_kb: parent_rss_kb[size],
                per_sec: median(std::mem::take(&mut rates[size][i])),
            });
        }
    }
    Ok(SpawnReport {
        figures,
        scaling,
        template: template_footprint,
        child: child_footprint,
        perl: perl.figures(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(quick: bool) -> Options {
        Options {
            quick,
            json: false,
            pin: false,
            perl: false,
            spawn: true,
            rpc: false,
            pool: false,
        }
    }

    #[test]
    fn the_full_run_sweeps_every_size_up_and_down_in_turn() {
        let visits = options(false).visits();
        let sizes: Vec<usize> = visits.iter().map(|&(_, size)| size).collect();
        assert_eq!(
            sizes,
            [0, 1, 2, 3, 3, 2, 1, 0, 0, 1, 2, 3, 3, 2, 1, 0, 0, 1, 2, 3]
        );
        assert!(
            visits.windows(2).all(|w| w[0].0 <= w[1].0),
            "rounds in order"
        );
    }

    #[test]
    fn the_quick_run_grows_once() {
        let visits = options(true).visits();
        let sizes: Vec<usize> = visits.iter().map(|&(_, size)| size).collect();
        assert_eq!(sizes, [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]);
    }
}
