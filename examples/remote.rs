//! Seed example: "Compatibility to AnyEvent::Fork::Remote": a run function
//! that works both in a process of this machine and in one on another.
//!
//! ```perl
//! sub run {
//!    my ($rfh, @args) = @_; # @args is your normal arguments
//!    my $wfh = fileno $rfh ? $rfh : *STDOUT;
//!
//!    # now use $rfh for reading and $wfh for writing
//! ```
//!
//! In Rust nothing needs checking: a far process's function gets a unix
//! socket too (the relay on its machine carries it over the connection),
//! so the same function runs here and there; it takes a read half and a
//! write half of it, as the seed asks. The parent gets a socket either way.
//!
//! The "other machine" is this program started by a command in serve mode:
//! `ssh host /path/to/remote --anyfork-serve=mux:1` in real life
//! (`Remote::ssh`), here `/proc/self/exe --anyfork-serve=mux:1` so that
//! the example runs anywhere. Pass `ssh user@host` to use a real host
//! (this example must be installed at the same path there).
//!
//! Run with `cargo run --example remote`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::Command;

use anyfork::remote::{Remote, serve_arg};
use anyfork::{Args, Fork};

/// Reads lines from its read half and answers on its write half, wherever
/// it runs.
fn shout(socket: UnixStream, mut args: Args) -> std::io::Result<()> {
    let (read, mut write) = (socket.try_clone()?, socket);
    let prefix = args.string()?;
    for line in BufReader::new(read).lines() {
        writeln!(
            write,
            "{prefix}: {} (process {})",
            line?.to_uppercase(),
            std::process::id()
        )?;
    }
    Ok(())
}

fn talk(worker: Fork, what: &str) -> Result<(), Box<dyn std::error::Error>> {
    let pid = worker.pid()?;
    let socket = worker.run(shout)?;
    let mut write = socket.try_clone()?;
    writeln!(write, "hello from {what}")?;
    write.shutdown(std::net::Shutdown::Write)?;
    for line in BufReader::new(socket).lines() {
        let line = line?;
        println!("{line}");
        assert!(line.ends_with(&format!("(process {pid})")));
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Here.
    talk(Fork::new()?.send_arg("local"), "this machine")?;

    // There: one connection; a template on the far side; forks of it.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let remote = match args.as_slice() {
        [ssh, host] if ssh == "ssh" => Remote::ssh(host)?,
        _ => {
            let mut command = Command::new(std::env::current_exe()?);
            command.arg(serve_arg());
            Remote::command(command)?
        }
    };
    let template = remote.new_exec()?.send_arg("far");
    for i in 0..3 {
        talk(template.fork()?, &format!("the other side, worker {i}"))?;
    }
    println!(
        "4 workers, one of them local, 3 forked on {} (relay pid {}) over one connection",
        remote.name(),
        remote.far_side().pid
    );
    Ok(())
}
