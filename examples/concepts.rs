//! Seed section CONCEPTS: the three ways to create processes.
//!
//! 1. Fork the default template, prepare, run: for one extra process now and
//!    then.
//! 2. Prepare a template of your own, then fork workers from it: they share
//!    everything the template loaded.
//! 3. Start a fresh process with `new_exec`: no template around, nothing
//!    shared.
//!
//! Run with `cargo run --example concepts`.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyfork::{Args, Fork};

/// Set by `load`, in the process it runs in and every fork of that process.
static LOADED: AtomicUsize = AtomicUsize::new(0);

/// An initialiser: what Perl's `require ("Some::Module")` would load.
fn load(args: &[Vec<u8>]) {
    LOADED.store(args.len(), Ordering::SeqCst);
}

/// Some::Module::run
fn module_run(mut fork_fh: UnixStream, _args: Args) -> std::io::Result<()> {
    write!(
        fork_fh,
        "process {} sees {} loaded modules",
        std::process::id(),
        LOADED.load(Ordering::SeqCst)
    )
}

fn answer(mut socket: UnixStream) -> std::io::Result<String> {
    let mut text = String::new();
    socket.read_to_string(&mut text)?;
    Ok(text)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // 1. fork a new process from the "default" template process, load code,
    // run it.
    let socket = Fork::new()?.eval(load, ["Some::Module"]).run(module_run)?;
    println!("default template: {}", answer(socket)?);

    // 2. fork a new template process, load code, then fork processes off of
    // it and run the code.
    let template = Fork::new()?.eval(load, ["Some::Module", "Other::Module"]);
    for _ in 1..=3 {
        let socket = template.fork()?.run(module_run)?;
        println!("custom template {}: {}", template.pid()?, answer(socket)?);
    }
    // Keep `template` to fork more later, or drop it, which makes it vanish.
    drop(template);

    // 3. execute a new process, load some code, run it.
    let fresh = Fork::new_exec()?;
    let pid = fresh.pid()?;
    let socket = fresh.eval(load, ["Some::Module"]).run(module_run)?;
    println!("new_exec (pid {pid}, a direct child): {}", answer(socket)?);
    Ok(())
}
