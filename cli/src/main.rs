//! `anyfork`: what the library does, shown and measured.
//!
//! ```text
//! anyfork                 the tour, then `bench --quick`
//! anyfork tour            the seed manual's scenarios, each saying what happened
//! anyfork bench [spawn | rpc | pool] [--quick] [--json] [--pin] [--no-perl]
//! anyfork bench remote [--host user@host] [--ship] [--quick] [--json]
//!                         processes per second and memory, RPC calls
//!                         against raw socket I/O, worker pools against
//!                         threads and Python's; side by side
//! anyfork bench soak [--quick] [--count N]
//!                         many processes and RPC handles: fails if
//!                         descriptors, zombies or memory are left behind
//! anyfork help            (or --help after any command)
//! ```

mod affinity;
mod bench;
mod cpu_busy;
mod json_report;
mod large_message_bench;
mod large_message_report;
mod malloc_policy;
mod median;
mod memory;
mod perl;
mod pool_bench;
mod pool_tour;
mod raw_socket;
mod remote_bench;
mod remote_tour;
mod rpc_bench;
mod rpc_tour;
mod soak;
mod spawn_scaling;
mod table;
mod tour;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// What anyfork does (the seed manuals' scenarios), and how fast: run with
/// no command for the tour, then a quick benchmark.
#[derive(Debug, Parser)]
#[command(name = "anyfork", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The scenarios of the AnyEvent::Fork and AnyEvent::Fork::RPC manuals,
    /// each saying what happened.
    Tour,
    /// Processes per second and memory (`spawn`), RPC calls against the
    /// same messages sent by hand over a socket (`rpc`), worker pools
    /// against threads and Python's process pool (`pool`); all by default.
    Bench(BenchArgs),
}

#[derive(Debug, Args)]
struct BenchArgs {
    #[command(subcommand)]
    part: Option<BenchPart>,
    #[command(flatten)]
    flags: BenchFlags,
}

#[derive(Debug, Args, Clone, Copy)]
struct BenchFlags {
    /// Short rounds (both parts in under 30 seconds).
    #[arg(long, global = true)]
    quick: bool,
    /// Print the figures as one JSON object on stdout.
    #[arg(long, global = true)]
    json: bool,
    /// Pin to CPU 0 (like `taskset -c 0`).
    #[arg(long, global = true)]
    pin: bool,
    /// Do not measure Perl's AnyEvent::Fork even if it is installed.
    #[arg(long, global = true)]
    no_perl: bool,
}

#[derive(Debug, Subcommand)]
enum BenchPart {
    /// Processes per second for plain fork, Fork::new, new_exec and
    /// template forks with this process grown to 5, 20, 200 and 2000 MB,
    /// and the memory of a template and of an idle child.
    Spawn,
    /// RPC round trips and calls per second (sync and async backends,
    /// every serialiser, 16 B, 1 KiB and 1 MiB payloads) against the same
    /// messages sent by hand over a socket.
    Rpc,
    /// Worker pools: 1 ms CPU jobs on 1, 2 and ncpu workers against a pool
    /// of threads and Python's ProcessPoolExecutor; trivial jobs against
    /// one RPC handle; a blocking call through a pool against one on a
    /// handle; recovery from a worker's SIGKILL.
    Pool,
    /// Processes on another machine over ssh: one ssh session per worker
    /// against forks of a far template over one connection (time to the
    /// first reply), RPC round trips against `ssh host cat`, a pool of far
    /// workers against a local one. Without --host it measures over a
    /// throwaway sshd on 127.0.0.1.
    Remote {
        /// `user@host` to measure (this program must be at the same path
        /// there, unless --ship).
        #[arg(long)]
        host: Option<String>,
        /// Ship this program's executable to the far side first.
        #[arg(long)]
        ship: bool,
    },
    /// N processes and N RPC start/call/drop cycles, sampling descriptors,
    /// zombies and the memory of this process and the template; exits 1 if
    /// anything was left behind or grew.
    Soak {
        /// How many of each (default 10,000; with --quick 1,000).
        #[arg(long)]
        count: Option<usize>,
    },
}

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("tour")]
    Tour(#[from] tour::TourError),
    #[error("bench")]
    Bench(#[from] bench::BenchError),
    #[error("soak")]
    Soak(#[from] soak::SoakError),
    #[error("remote")]
    Remote(#[from] remote_bench::RemoteBenchError),
}

fn bench_options(flags: BenchFlags, spawn: bool, rpc: bool, pool: bool) -> bench::Options {
    bench::Options {
        quick: flags.quick,
        json: flags.json,
        pin: flags.pin,
        perl: !flags.no_perl,
        spawn,
        rpc,
        pool,
    }
}

fn bench(options: bench::Options) -> Result<(), CliError> {
    let report = bench::run(options)?;
    if options.json {
        println!("{}", json_report::render_json(&report));
    } else {
        println!("{}", table::render_table(&report));
    }
    Ok(())
}

fn run(command: Option<Command>) -> Result<(), CliError> {
    match command {
        Some(Command::Tour) => tour::run()?,
        Some(Command::Bench(BenchArgs { part, flags })) => match part {
            None => bench(bench_options(flags, true, true, true))?,
            Some(BenchPart::Spawn) => bench(bench_options(flags, true, false, false))?,
            Some(BenchPart::Rpc) => bench(bench_options(flags, false, true, false))?,
            Some(BenchPart::Pool) => bench(bench_options(flags, false, false, true))?,
            Some(BenchPart::Remote { host, ship }) => {
                let report = remote_bench::run(host.as_deref(), ship, flags.quick, &|text| {
                    eprintln!("anyfork bench: {text}")
                })?;
                if flags.json {
                    println!("{}", remote_bench::render_json(&report));
                } else {
                    println!("{}", remote_bench::render_table(&report));
                }
            }
            Some(BenchPart::Soak { count }) => {
                let count = count.unwrap_or(if flags.quick { 1_000 } else { 10_000 });
                soak::run(soak::Options { count })?
            }
        },
        None => {
            tour::run()?;
            println!(
                "13. How fast: anyfork bench --quick (`anyfork bench` is the full version, about 3 minutes), then anyfork bench remote --quick\n"
            );
            let flags = BenchFlags {
                quick: true,
                json: false,
                pin: false,
                no_perl: false,
            };
            bench(bench_options(flags, true, true, true))?;
            // Over ssh, when a throwaway sshd can be started here.
            match remote_bench::run(None, false, true, &|text| {
                eprintln!("anyfork bench: {text}")
            }) {
                Ok(report) => println!("{}", remote_bench::render_table(&report)),
                Err(remote_bench::RemoteBenchError::NoServer(why)) => {
                    println!("Remote processes over ssh: not measured: {why}\n")
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let malloc = malloc_policy::keep_freed_memory();
    let cli = Cli::parse();
    if matches!(cli.command, Some(Command::Bench(_)) | None) {
        eprintln!("anyfork bench: {malloc}");
    }
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut message = e.to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(inner) = cause {
                message.push_str(&format!(": {inner}"));
                cause = inner.source();
            }
            eprintln!("anyfork: {message}");
            ExitCode::FAILURE
        }
    }
}
