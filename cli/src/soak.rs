//! `anyfork bench soak`: many processes and RPC handles, looking for what
//! they might leave behind.
//!
//! Creates N processes (`Fork::new`, `run`, read to the end) and N RPC
//! handles (start, one call, drop), sampling as it goes: this program's
//! descriptors, its zombie children, its resident memory, and the default
//! template's. After a warm-up (the default template, its spare, the
//! reaper, allocator arenas), nothing may grow with N: the run fails if
//! descriptors or zombies are left at the end, or if memory grew in the
//! second half of a phase more than a small allowance.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use anyfork::{Args, Fork};

use crate::memory;

/// How big a run is.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Processes, and RPC cycles, each.
    pub count: usize,
}

/// Why the soak could not run, or what grew.
#[derive(Debug, thiserror::Error)]
pub enum SoakError {
    #[error("creating process {n}")]
    Process { n: usize, source: anyfork::Error },
    #[error("RPC cycle {n}")]
    Rpc {
        n: usize,
        source: anyfork::rpc::Error,
    },
    #[error("reading {what}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("leaked: {0}")]
    Grew(String),
}

fn io(what: &'static str) -> impl Fn(std::io::Error) -> SoakError {
    move |source| SoakError::Io { what, source }
}

fn one_byte(mut socket: UnixStream, _args: Args) -> std::io::Result<()> {
    socket.write_all(b"x")
}

fn double(n: u64) -> u64 {
    n * 2
}

/// One look at what the program holds.
#[derive(Debug, Clone, Copy)]
struct Sample {
    done: usize,
    fds: usize,
    zombies: usize,
    rss_kb: u64,
    template_rss_kb: u64,
}

fn open_fds() -> Result<usize, SoakError> {
    Ok(std::fs::read_dir("/proc/self/fd")
        .map_err(io("/proc/self/fd"))?
        .count()
        .saturating_sub(1))
}

/// Zombie children of this process.
fn zombies() -> usize {
    let me = std::process::id().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|entry| std::fs::read_to_string(entry.path().join("stat")).ok())
        .filter(|stat| {
            let Some((_, after)) = stat.rsplit_once(')') else {
                return false;
            };
            let mut fields = after.split_whitespace();
            fields.next() == Some("Z") && fields.next() == Some(me.as_str())
        })
        .count()
}

fn sample(done: usize, template: u32) -> Result<Sample, SoakError> {
    Ok(Sample {
        done,
        fds: open_fds()?,
        zombies: zombies(),
        rss_kb: memory::resident_kb(std::process::id()).map_err(io("this process's size"))?,
        template_rss_kb: memory::resident_kb(template).map_err(io("the template's size"))?,
    })
}

fn process(n: usize) -> Result<(), SoakError> {
    let wrap = |source| SoakError::Process { n, source };
    let mut socket = Fork::new().map_err(wrap)?.run(one_byte).map_err(wrap)?;
    let mut got = Vec::new();
    socket
        .read_to_end(&mut got)
        .map_err(io("a worker's socket"))?;
    Ok(())
}

fn rpc_cycle(n: usize) -> Result<(), SoakError> {
    let rpc = Fork::new()
        .map_err(|source| SoakError::Process { n, source })?
        .rpc(double)
        .start()
        .map_err(|source| SoakError::Process { n, source })?;
    let doubled = rpc
        .call_blocking(n as u64)
        .map_err(|source| SoakError::Rpc { n, source })?;
    debug_assert_eq!(doubled, 2 * n as u64);
    Ok(())
}

fn echo_bytes(bytes: serde_bytes::ByteBuf) -> serde_bytes::ByteBuf {
    bytes
}

/// An RPC handle started, called once with 1 MiB (through shared memory:
/// both regions made, mapped and unmapped), dropped.
fn large_rpc_cycle(n: usize) -> Result<(), SoakError> {
    static PAYLOAD: std::sync::OnceLock<serde_bytes::ByteBuf> = std::sync::OnceLock::new();
    let payload = PAYLOAD.get_or_init(|| serde_bytes::ByteBuf::from(vec![7u8; 1 << 20]));
    let rpc = Fork::new()
        .map_err(|source| SoakError::Process { n, source })?
        .rpc(echo_bytes)
        .start()
        .map_err(|source| SoakError::Process { n, source })?;
    let back = rpc
        .call_blocking(payload.clone())
        .map_err(|source| SoakError::Rpc { n, source })?;
    debug_assert_eq!(back.len(), payload.len());
    Ok(())
}

/// Runs `step` `count` times, sampling ten times; returns the samples.
fn phase(
    name: &str,
    count: usize,
    template: u32,
    step: impl Fn(usize) -> Result<(), SoakError>,
) -> Result<Vec<Sample>, SoakError> {
    let started = Instant::now();
    let mut samples = vec![sample(0, template)?];
    let every = (count / 10).max(1);
    for n in 1..=count {
        step(n)?;
        if n % every == 0 || n == count {
            samples.push(sample(n, template)?);
        }
    }
    eprintln!(
        "anyfork soak: {count} {name} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(samples)
}

/// Samples once the reaper has had time to reap (at most 2 s).
fn settled(done: usize, template: u32, baseline_fds: usize) -> Result<Sample, SoakError> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let now = sample(done, template)?;
        if (now.zombies == 0 && now.fds <= baseline_fds) || Instant::now() >= deadline {
            return Ok(now);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What grew in the second half of a phase, beyond the allowance.
fn second_half_growth(name: &str, samples: &[Sample], problems: &mut Vec<String>) {
    /// Memory may move by this much in steady state (allocator noise).
    const RSS_ALLOWANCE_KB: u64 = 4 * 1024;
    const TEMPLATE_ALLOWANCE_KB: u64 = 256;
    let (Some(mid), Some(last)) = (samples.get(samples.len() / 2), samples.last()) else {
        return;
    };
    let grew = last.rss_kb.saturating_sub(mid.rss_kb);
    if grew > RSS_ALLOWANCE_KB {
        problems.push(format!(
            "{name}: this process grew by {grew} kB from {} to {} done",
            mid.done, last.done
        ));
    }
    let grew = last.template_rss_kb.saturating_sub(mid.template_rss_kb);
    if grew > TEMPLATE_ALLOWANCE_KB {
        problems.push(format!(
            "{name}: the template grew by {grew} kB from {} to {} done",
            mid.done, last.done
        ));
    }
}

fn table(name: &str, samples: &[Sample]) -> String {
    let mut out = format!(
        "\n{name}\n\n| done | descriptors | zombies | this process RSS | template RSS |\n|---:|---:|---:|---:|---:|\n"
    );
    for s in samples {
        out.push_str(&format!(
            "| {} | {} | {} | {} kB | {} kB |\n",
            s.done, s.fds, s.zombies, s.rss_kb, s.template_rss_kb
        ));
    }
    out
}

/// Runs the soak and prints its samples; an error if anything grew.
pub fn run(options: Options) -> Result<(), SoakError> {
    // Warm up: the default template, its spare, the reaper, allocators.
    for n in 0..200 {
        process(n)?;
    }
    for n in 0..20 {
        rpc_cycle(n)?;
        large_rpc_cycle(n)?;
    }
    let template = Fork::new()
        .map_err(|source| SoakError::Process { n: 0, source })?
        .template_pid()
        .unwrap_or_else(std::process::id);
    let baseline = settled(0, template, usize::MAX)?;

    let processes = phase("processes", options.count, template, process)?;
    let after_processes = settled(options.count, template, baseline.fds)?;
    let rpcs = phase("RPC cycles", options.count, template, rpc_cycle)?;
    let after_rpcs = settled(options.count, template, baseline.fds)?;
    let large_count = (options.count / 10).max(20);
    let large = phase(
        "RPC cycles with a 1 MiB call",
        large_count,
        template,
        large_rpc_cycle,
    )?;
    let after_large = settled(large_count, template, baseline.fds)?;

    print!("{}", table("Fork::new + run, read to the end", &processes));
    print!("{}", table("RPC start, one call, drop", &rpcs));
    print!(
        "{}",
        table(
            "RPC start, one 1 MiB call through shared memory, drop",
            &large
        )
    );
    println!(
        "\nsettled: descriptors {} (before {}), zombies {}, this process {} kB (before {} kB), template {} kB (before {} kB)",
        after_large.fds,
        baseline.fds,
        after_large.zombies,
        after_large.rss_kb,
        baseline.rss_kb,
        after_large.template_rss_kb,
        baseline.template_rss_kb
    );

    let mut problems = Vec::new();
    for (name, after) in [
        ("processes", after_processes),
        ("RPC cycles", after_rpcs),
        ("large RPC cycles", after_large),
    ] {
        if after.fds > baseline.fds {
            problems.push(format!(
                "{name}: {} descriptors left open (before: {})",
                after.fds, baseline.fds
            ));
        }
        if after.zombies > 0 {
            problems.push(format!("{name}: {} zombies left", after.zombies));
        }
    }
    second_half_growth("processes", &processes, &mut problems);
    second_half_growth("RPC cycles", &rpcs, &mut problems);
    second_half_growth("large RPC cycles", &large, &mut problems);
    if problems.is_empty() {
        println!("nothing grew: no descriptor, zombie or memory left behind");
        Ok(())
    } else {
        Err(SoakError::Grew(problems.join("; ")))
    }
}
