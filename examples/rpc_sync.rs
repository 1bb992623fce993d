//! RPC manual, Example 1: the synchronous backend.
//!
//! A worker that executes `rmdir` and `unlink` calls and reports their
//! status, and, every three requests, sends an event with the number of
//! requests it has handled. The parent queues six requests, forgets the
//! handle so the child exits once it has handled them, and waits for
//! `on_destroy`.
//!
//! Run with `cargo run --example rpc_sync`.

use std::sync::atomic::{AtomicU64, Ordering};

use anyfork::Fork;
use anyfork::rpc;

// --- MyWorker -----------------------------------------------------------

static COUNT: AtomicU64 = AtomicU64::new(0);

/// MyWorker::run: `(command, path)` → `(status, error message)`.
fn run((command, path): (String, String)) -> (bool, String) {
    let count = COUNT.fetch_add(1, Ordering::SeqCst) + 1;
    if count % 3 == 0 {
        let _ = rpc::event(&count);
    }
    let status = match command.as_str() {
        "rmdir" => std::fs::remove_dir(&path),
        "unlink" => std::fs::remove_file(&path),
        _ => panic!("fatal error, illegal command '{command}'"),
    };
    match status {
        Ok(()) => (true, String::new()),
        Err(e) => (false, e.to_string()),
    }
}
anyfork::rpc!(run);

// --- the parent --------------------------------------------------------

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (done, destroyed) = std::sync::mpsc::channel();
    let rpc = Fork::new()?
        .rpc("rpc_sync::run")
        .types::<(String, String), (bool, String)>()
        .on_error(|e| {
            eprintln!("ERROR: {e}");
            std::process::exit(1)
        })
        .on_event(|count: u64| println!("{count} requests handled"))
        .on_destroy(move || {
            let _ = done.send(());
        })
        .start()?;

    for id in 1..=6 {
        let path = format!("/tmp/somepath/{id}");
        let (ok, error) = rpc.call_blocking(("rmdir".into(), path.clone()))?;
        if !ok {
            println!("{path}: {error}");
        }
    }

    drop(rpc);
    destroyed.recv()?;
    Ok(())
}
