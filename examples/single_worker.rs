//! Seed example: "Create a single new process, tell it to run your worker
//! function."
//!
//! ```perl
//! AnyEvent::Fork
//!    ->new
//!    ->require ("MyModule")
//!    ->run ("MyModule::worker", sub {
//!       my ($master_filehandle) = @_;
//!    });
//! ```
//!
//! Run with `cargo run --example single_worker`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;

use anyfork::{Args, Fork};

/// The worker: its socket is connected to the parent's. It answers each
/// line with the line in capitals and its own pid.
fn worker(slave: UnixStream, _args: Args) -> std::io::Result<()> {
    let mut writer = slave.try_clone()?;
    for line in BufReader::new(slave).lines() {
        writeln!(
            writer,
            "{} (from worker {})",
            line?.to_uppercase(),
            std::process::id()
        )?;
    }
    Ok(())
}
// Registered under its full name, like Perl's "MyModule::worker".
anyfork::function!(worker);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let master = Fork::new()?.run("single_worker::worker")?;
    // Now `master` is connected to the worker's socket. Have fun!
    let mut writer = master.try_clone()?;
    let mut answers = BufReader::new(master).lines();
    for word in ["hello", "worker"] {
        writeln!(writer, "{word}")?;
        let answer = answers.next().ok_or("the worker went away")??;
        println!("sent {word:?}, got {answer:?}");
    }
    Ok(())
}
