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
//! noisy moment does not favour one of them.

use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use anyfork::{Args, Fork};

use crate::json::Json;
use crate::memory::{self, Ballast, Footprint};
use crate::perl::{self, PerlFigures};

/// The sizes this process is grown to, in MB.
const SIZES_MB: [u64; 4] = [5, 20, 200, 2000];

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
}

impl Options {
    /// Rounds interleave the methods; figures are medians over rounds. Even
    /// the quick run has three: one 250 ms cell is too noisy for ratios.
    fn rounds(&self) -> usize {
        3
    }

    fn cell_time(&self) -> Duration {
        if self.quick {
            Duration::from_millis(300)
        } else {
            Duration::from_millis(1000)
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
}

impl Method {
    const ALL: [Method; 4] = [
        Method::PlainFork,
        Method::New,
        Method::NewExec,
        Method::TemplateFork,
    ];

    /// The name used in `--json`.
    fn key(self) -> &'static str {
        match self {
            Method::PlainFork => "plain_fork",
            Method::New => "new",
            Method::NewExec => "new_exec",
            Method::TemplateFork => "template_fork",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Method::PlainFork => "(a) plain fork",
            Method::New => "(b) Fork::new",
            Method::NewExec => "(c) new_exec",
            Method::TemplateFork => "(d) template fork",
        }
    }
}

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{doing}: {source}")]
    Io {
        doing: &'static str,
        source: io::Error,
    },
    #[error("{method}: {source}")]
    Anyfork {
        method: &'static str,
        source: anyfork::Error,
    },
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
    pub figures: Vec<Figure>,
    pub template: Footprint,
    pub child: Footprint,
    pub perl: Option<PerlFigures>,
}

impl Report {
    fn rate(&self, method: Method, parent_mb: u64) -> Option<f64> {
        self.figures
            .iter()
            .find(|f| f.method == method && f.parent_mb == parent_mb)
            .map(|f| f.per_sec)
    }

    fn ratio(&self, (m1, s1): (Method, u64), (m2, s2): (Method, u64)) -> Option<f64> {
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

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn pin_to_cpu0() -> io::Result<()> {
    let mut set = rustix::thread::CpuSet::new();
    set.set(0);
    rustix::thread::sched_setaffinity(None, &set)?;
    Ok(())
}

/// Runs the benchmark, reporting progress on stderr.
pub fn run(options: Options) -> Result<Report, BenchError> {
    // The machine's CPUs, counted before pinning narrows what we may use.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if options.pin {
        pin_to_cpu0().map_err(io_error("pinning to CPU 0"))?;
    }
    let progress = |text: &str| eprintln!("anyfork bench: {text}");
    progress(&format!(
        "{} rounds, {:?} per figure, {}",
        options.rounds(),
        options.cell_time(),
        if options.pin {
            "pinned to CPU 0"
        } else {
            "unpinned"
        }
    ));

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

    let mut ballast = Ballast::default();
    let mut figures = Vec::new();
    for &parent_mb in &SIZES_MB {
        ballast
            .grow_to(parent_mb)
            .map_err(io_error("growing the parent"))?;
        let parent_rss_kb =
            memory::resident_kb(std::process::id()).map_err(io_error("reading our size"))?;
        let mut rates: Vec<Vec<f64>> = vec![Vec::new(); Method::ALL.len()];
        for round in 0..options.rounds() {
            for (i, &method) in Method::ALL.iter().enumerate() {
                progress(&format!(
                    "{:>4} MB parent, round {}/{}: {}",
                    parent_mb,
                    round + 1,
                    options.rounds(),
                    method.title()
                ));
                rates[i].push(measure(method, &custom, options.cell_time())?);
            }
        }
        for (i, &method) in Method::ALL.iter().enumerate() {
            figures.push(Figure {
                method,
                parent_mb,
                parent_rss_kb,
                per_sec: median(std::mem::take(&mut rates[i])),
            });
        }
    }
    drop(ballast);

    let perl = if options.perl {
        progress("Perl's AnyEvent::Fork, for comparison");
        perl::measure(options.rounds(), options.cell_time() * 2)
    } else {
        None
    };
    Ok(Report {
        options,
        cpus,
        figures,
        template: template_footprint,
        child: child_footprint,
        perl,
    })
}

fn thousands(n: f64) -> String {
    let n = n.round() as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn times(ratio: Option<f64>) -> String {
    ratio.map_or("-".into(), |r| format!("{r:.2}×"))
}

/// The report as a table for people.
pub fn render_table(report: &Report) -> String {
    let mut out = String::new();
    let pin = if report.options.pin {
        "pinned to CPU 0"
    } else {
        "unpinned"
    };
    out.push_str(&format!(
        "Processes per second, created one at a time and waited for (socket EOF)\n{} CPUs, {pin}, median of {} round(s)\n\n",
        report.cpus,
        report.options.rounds()
    ));
    out.push_str(
        "| parent | (a) plain fork | (b) Fork::new | (c) new_exec | (d) template fork | b/a |\n",
    );
    out.push_str("|---:|---:|---:|---:|---:|---:|\n");
    for &mb in &SIZES_MB {
        let cell = |m| report.rate(m, mb).map_or("-".into(), thousands);
        out.push_str(&format!(
            "| {mb} MB | {} | {} | {} | {} | {} |\n",
            cell(Method::PlainFork),
            cell(Method::New),
            cell(Method::NewExec),
            cell(Method::TemplateFork),
            times(report.ratio((Method::New, mb), (Method::PlainFork, mb)))
        ));
    }
    out.push_str(&format!(
        "\nFork::new with a 2000 MB parent / with a 5 MB parent: {}\n",
        times(report.ratio((Method::New, 2000), (Method::New, 5)))
    ));
    out.push_str(&format!(
        "Memory: default template RSS {} kB, PSS {} kB; idle forked child RSS {} kB, PSS {} kB\n",
        report.template.rss_kb, report.template.pss_kb, report.child.rss_kb, report.child.pss_kb
    ));
    match &report.perl {
        Some(perl) => out.push_str(&format!(
            "Perl AnyEvent::Fork {} on this machine: new {}/s, new_exec {}/s; Fork::new (5 MB) is {}, new_exec is {}\n",
            perl.version,
            thousands(perl.new_per_sec),
            thousands(perl.new_exec_per_sec),
            times(report.rate(Method::New, 5).map(|r| r / perl.new_per_sec)),
            times(report.rate(Method::NewExec, 5).map(|r| r / perl.new_exec_per_sec)),
        )),
        None => out.push_str("Perl AnyEvent::Fork: not measured (not installed, or --no-perl)\n"),
    }
    out
}

/// The report as one JSON object.
pub fn render_json(report: &Report) -> String {
    let spawn = report
        .figures
        .iter()
        .map(|f| {
            Json::object([
                ("method", Json::Text(f.method.key().into())),
                ("parent_mb", Json::Number(f.parent_mb as f64)),
                ("parent_rss_kb", Json::Number(f.parent_rss_kb as f64)),
                ("per_sec", Json::Number((f.per_sec * 10.0).round() / 10.0)),
            ])
        })
        .collect();
    let number =
        |v: Option<f64>| v.map_or(Json::Null, |v| Json::Number((v * 1000.0).round() / 1000.0));
    let b_over_a = SIZES_MB
        .iter()
        .map(|&mb| {
            (
                mb.to_string(),
                number(report.ratio((Method::New, mb), (Method::PlainFork, mb))),
            )
        })
        .collect::<Vec<_>>();
    let perl = match &report.perl {
        Some(p) => Json::object([
            ("version", Json::Text(p.version.clone())),
            (
                "new_per_sec",
                Json::Number((p.new_per_sec * 10.0).round() / 10.0),
            ),
            (
                "new_exec_per_sec",
                Json::Number((p.new_exec_per_sec * 10.0).round() / 10.0),
            ),
        ]),
        None => Json::Null,
    };
    let perl_ratio = |m: Method, theirs: fn(&PerlFigures) -> f64| {
        number(
            report
                .perl
                .as_ref()
                .and_then(|p| Some(report.rate(m, 5)? / theirs(p))),
        )
    };
    Json::object([
        (
            "machine",
            Json::object([
                ("cpus", Json::Number(report.cpus as f64)),
                ("pinned", Json::Bool(report.options.pin)),
                ("rounds", Json::Number(report.options.rounds() as f64)),
            ]),
        ),
        ("spawn", Json::List(spawn)),
        (
            "memory",
            Json::object([
                (
                    "template_rss_kb",
                    Json::Number(report.template.rss_kb as f64),
                ),
                (
                    "template_pss_kb",
                    Json::Number(report.template.pss_kb as f64),
                ),
                ("child_rss_kb", Json::Number(report.child.rss_kb as f64)),
                ("child_pss_kb", Json::Number(report.child.pss_kb as f64)),
            ]),
        ),
        (
            "ratios",
            Json::object([
                ("new_over_plain_fork", Json::Object(b_over_a)),
                (
                    "new_2000mb_over_new_5mb",
                    number(report.ratio((Method::New, 2000), (Method::New, 5))),
                ),
                (
                    "new_over_perl_new",
                    perl_ratio(Method::New, |p| p.new_per_sec),
                ),
                (
                    "new_exec_over_perl_new_exec",
                    perl_ratio(Method::NewExec, |p| p.new_exec_per_sec),
                ),
            ]),
        ),
        ("perl", perl),
    ])
    .render()
}
