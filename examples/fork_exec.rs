//! Seed example: "use AnyEvent::Fork as a faster fork+exec".
//!
//! Runs `/bin/echo hi` with standard output redirected to a file and
//! standard error redirected to the communication socket. It is usually
//! faster than fork+exec from a big program, but still lets you prepare the
//! environment in the new process before the `exec`.
//!
//! Run with `cargo run --example fork_exec`.

use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::Command;

use anyfork::{Args, Fork};

/// The helper the Perl version compiles with `eval`: point stdout at the
/// file, stderr at the socket, and exec the command.
fn run(fh: UnixStream, mut args: Args) -> std::io::Result<()> {
    let output = args.fd().map_err(std::io::Error::other)?;
    let command: Vec<String> = std::iter::from_fn(|| args.string().ok()).collect();
    let (program, arguments) = command
        .split_first()
        .ok_or_else(|| std::io::Error::other("no command"))?;
    // dup2 clears close-on-exec on the new descriptors 1 and 2.
    rustix::stdio::dup2_stdout(output.as_fd())?;
    rustix::stdio::dup2_stderr(fh.as_fd())?;
    Err(Command::new(program).args(arguments).exec())
}

fn exec_with_output(
    output: &std::path::Path,
    command: &[&str],
) -> Result<String, Box<dyn std::error::Error>> {
    let file = std::fs::File::create(output)?;
    let mut stderr = Fork::new()?.send_fh(file).send_args(command).run(run)?;
    let mut text = String::new();
    stderr.read_to_string(&mut text)?;
    Ok(text)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let log = std::env::temp_dir().join(format!("anyfork-fork-exec-{}.log", std::process::id()));

    let stderr = exec_with_output(&log, &["/bin/echo", "hi"])?;
    println!(
        "/bin/echo hi wrote {:?} to {}",
        std::fs::read_to_string(&log)?,
        log.display()
    );
    println!("and {stderr:?} to its standard error (the socket)");

    let stderr = exec_with_output(&log, &["/bin/ls", "/nonexistent-anyfork-path"])?;
    println!(
        "/bin/ls of a missing path wrote {:?} to its standard error (the socket)",
        stderr.trim()
    );

    std::fs::remove_file(&log)?;
    Ok(())
}
