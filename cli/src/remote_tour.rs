//! The remote part of `anyfork tour`: AnyEvent::Fork::Remote's scenario
//! (the same run function on another machine), and what anyfork adds: one
//! connection for many processes, forks of a far template, a pool across
//! machines. "Another machine" is this program behind a command here
//! (`anyfork --anyfork-serve=mux:1`); `Remote::ssh("host")` is the same.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::Instant;

use anyfork::remote::{Remote, serve_arg};
use anyfork::{Args, Fork};

use crate::tour::{InScenario, TourError, heading};

impl<T> InScenario<T> for Result<T, anyfork::remote::Error> {
    fn in_scenario(self, scenario: &'static str) -> Result<T, TourError> {
        self.map_err(|source| TourError::Remote { scenario, source })
    }
}

/// Answers each line in capitals with its pid, wherever it runs.
fn shout(socket: UnixStream, _: Args) -> std::io::Result<()> {
    let (read, mut write) = (socket.try_clone()?, socket);
    for line in BufReader::new(read).lines() {
        writeln!(
            write,
            "{} (pid {})",
            line?.to_uppercase(),
            std::process::id()
        )?;
    }
    Ok(())
}

fn square(n: u64) -> u64 {
    n * n
}

/// Runs the remote scenario.
pub fn run() -> Result<(), TourError> {
    const S: &str = "remote";
    heading(
        12,
        "Processes on another machine (AnyEvent::Fork::Remote): one connection, many processes",
    );
    let exe = std::env::current_exe().in_scenario(S)?;
    let mut command = Command::new(exe);
    command.arg(serve_arg());
    let started = Instant::now();
    let remote = Remote::command(command).in_scenario(S)?;
    let template = remote.new_exec().in_scenario(S)?;
    template.pid().in_scenario(S)?;
    let connected = started.elapsed();
    println!(
        "   connected to `{}` (relay pid {}, build {}) and started a far template in {:.1} ms",
        remote.name(),
        remote.far_side().pid,
        remote.far_side().build_id,
        connected.as_secs_f64() * 1e3
    );
    let started = Instant::now();
    let socket = template.fork().in_scenario(S)?.run(shout).in_scenario(S)?;
    let mut write = socket.try_clone().in_scenario(S)?;
    writeln!(write, "hello from the other side").in_scenario(S)?;
    let mut line = String::new();
    BufReader::new(socket).read_line(&mut line).in_scenario(S)?;
    println!(
        "   a fork of it ran the seed's run function and answered {:?} in {:.2} ms",
        line.trim(),
        started.elapsed().as_secs_f64() * 1e3
    );
    let pool = Fork::new()
        .in_scenario(S)?
        .pool(square)
        .max(1)
        .source(template, 2)
        .idle(3)
        .build()
        .in_scenario(S)?;
    let sum: u64 = (0..30)
        .map(|n| pool.call_blocking(n))
        .sum::<Result<u64, _>>()
        .in_scenario(S)?;
    let status = pool.status();
    let far = status.workers.iter().filter(|w| w.source == 1).count();
    println!(
        "   a pool with 1 local and up to 2 far workers: sum of squares {sum}, {} workers of which {far} far, {} channels on the one connection",
        status.workers.len(),
        remote.channels()
    );
    if sum != (0..30u64).map(|n| n * n).sum::<u64>() {
        return Err(TourError::Unexpected {
            scenario: S,
            what: format!("wrong sum {sum}"),
        });
    }
    Ok(())
}
