//! Seed example: "For stingy standalone programs: do not rely on external
//! files at all."
//!
//! `anyfork::early()` first thing in `main` makes a template for all later
//! `new_exec` calls by forking the program before it does anything;
//! `Template::here()` then forks the program as a template once it has built
//! what the workers share, and ten workers are forked from it.
//!
//! Run with `cargo run --example standalone`.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::OnceLock;

use anyfork::{Args, Template};

/// Built before the template is made: shared by every worker, copy-on-write.
static PRIMES: OnceLock<Vec<u64>> = OnceLock::new();

/// worker_run: answers with the n-th prime, n being its argument.
fn worker_run(mut fh: UnixStream, mut args: Args) -> std::io::Result<()> {
    let n: usize = args
        .string()
        .map_err(std::io::Error::other)?
        .parse()
        .map_err(std::io::Error::other)?;
    let prime = PRIMES
        .get()
        .and_then(|p| p.get(n - 1))
        .copied()
        .unwrap_or(0);
    write!(
        fh,
        "worker {n} (process {}): prime #{n} is {prime}",
        std::process::id()
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Optional, as the very first thing, in case libraries want to create
    // their own processes with new_exec.
    anyfork::early()?;

    // Next, everything the template should have.
    PRIMES.get_or_init(|| {
        let mut primes = Vec::new();
        let mut n = 2u64;
        while primes.len() < 100_000 {
            if primes
                .iter()
                .take_while(|&&p| p * p <= n)
                .all(|&p| n % p != 0)
            {
                primes.push(n);
            }
            n += 1;
        }
        primes
    });

    // Now preserve everything so far as a template.
    let template = Template::here()?;

    // For example: create 10 worker processes.
    let mut workers = Vec::new();
    for n in 1..=10 {
        workers.push(template.fork()?.send_arg(n.to_string()).run(worker_run)?);
    }
    for mut worker in workers {
        let mut line = String::new();
        worker.read_to_string(&mut line)?;
        println!("{line}");
    }
    Ok(())
}
