//! `anyfork`: what the library does, shown and measured.
//!
//! ```text
//! anyfork                 the tour, then `bench --quick`
//! anyfork tour            the seed manual's scenarios, each saying what happened
//! anyfork bench [spawn | rpc] [--quick] [--json] [--pin] [--no-perl]
//!                         processes per second and memory, RPC calls
//!                         against raw socket I/O; side by side
//! anyfork bench soak [--quick] [--count N]
//!                         many processes and RPC handles: fails if
//!                         descriptors, zombies or memory are left behind
//! anyfork help
//! ```

mod affinity;
mod bench;
mod json;
mod median;
mod memory;
mod perl;
mod rpc_bench;
mod rpc_tour;
mod soak;
mod tour;

use std::process::ExitCode;

const USAGE: &str = "\
usage: anyfork [tour | bench [spawn | rpc] [--quick] [--json] [--pin] [--no-perl]
               | bench soak [--quick] [--count N] | help]

  (no command)  the tour, then bench --quick
  tour          the scenarios of the AnyEvent::Fork and AnyEvent::Fork::RPC
                manuals, each saying what happened
  bench         both parts below
  bench spawn   processes per second for plain fork, Fork::new, new_exec and
                template forks with this process grown to 5, 20, 200 and 2000 MB,
                and the memory of a template and of an idle child
  bench rpc     RPC round trips and calls per second (sync and async backends,
                every serialiser, 16 B, 1 KiB and 1 MiB payloads) against the
                same messages sent by hand over a socket
      --quick   short rounds (both parts in under 30 seconds)
      --json    print the figures as one JSON object on stdout
      --pin     pin to CPU 0 (like taskset -c 0)
      --no-perl do not measure Perl's AnyEvent::Fork even if it is installed
  bench soak    N processes and N RPC start/call/drop cycles (10,000 each;
                --quick 1,000; --count N), sampling descriptors, zombies and
                the memory of this process and the template; exits 1 if
                anything was left behind or grew
";

/// What the command line asked for.
#[derive(Debug)]
enum Command {
    Default,
    Tour,
    Bench(bench::Options),
    Soak(soak::Options),
    Help,
}

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("unknown argument {argument:?}\n\n{USAGE}")]
    UnknownArgument { argument: String },
    #[error("tour: {0}")]
    Tour(#[from] tour::TourError),
    #[error("bench: {0}")]
    Bench(#[from] bench::BenchError),
    #[error("soak: {0}")]
    Soak(#[from] soak::SoakError),
    #[error("--count needs a number, got {0:?}")]
    Count(String),
}

fn parse(args: &[String]) -> Result<Command, CliError> {
    let unknown = |a: &String| CliError::UnknownArgument {
        argument: a.clone(),
    };
    match args.split_first() {
        None => Ok(Command::Default),
        Some((first, rest)) => match first.as_str() {
            "tour" => match rest.first() {
                None => Ok(Command::Tour),
                Some(a) => Err(unknown(a)),
            },
            "help" | "--help" | "-h" => Ok(Command::Help),
            "bench" if rest.first().is_some_and(|part| part == "soak") => {
                let mut options = soak::Options { count: 10_000 };
                let mut args = rest[1..].iter();
                while let Some(arg) = args.next() {
                    match arg.as_str() {
                        "--quick" => options.count = 1_000,
                        "--count" => {
                            let value = args.next().cloned().unwrap_or_default();
                            options.count = value.parse().map_err(|_| CliError::Count(value))?;
                        }
                        _ => return Err(unknown(arg)),
                    }
                }
                Ok(Command::Soak(options))
            }
            "bench" => {
                let mut options = bench::Options {
                    quick: false,
                    json: false,
                    pin: false,
                    perl: true,
                    spawn: true,
                    rpc: true,
                };
                let rest = match rest.split_first() {
                    Some((part, rest)) if part == "spawn" || part == "rpc" => {
                        options.spawn = part == "spawn";
                        options.rpc = part == "rpc";
                        rest
                    }
                    _ => rest,
                };
                for arg in rest {
                    match arg.as_str() {
                        "--quick" => options.quick = true,
                        "--json" => options.json = true,
                        "--pin" => options.pin = true,
                        "--no-perl" => options.perl = false,
                        _ => return Err(unknown(arg)),
                    }
                }
                Ok(Command::Bench(options))
            }
            _ => Err(unknown(first)),
        },
    }
}

fn bench(options: bench::Options) -> Result<(), CliError> {
    let report = bench::run(options)?;
    if options.json {
        println!("{}", bench::render_json(&report));
    } else {
        println!("{}", bench::render_table(&report));
    }
    Ok(())
}

fn run(command: Command) -> Result<(), CliError> {
    match command {
        Command::Help => print!("{USAGE}"),
        Command::Tour => tour::run()?,
        Command::Bench(options) => bench(options)?,
        Command::Soak(options) => soak::run(options)?,
        Command::Default => {
            tour::run()?;
            println!(
                "11. How fast: anyfork bench --quick (`anyfork bench` is the full version, about 3 minutes)\n"
            );
            bench(bench::Options {
                quick: true,
                json: false,
                pin: false,
                perl: true,
                spawn: true,
                rpc: true,
            })?;
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match parse(&args).and_then(run) {
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
