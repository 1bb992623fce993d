//! RPC manual, Example 1a: the same worker on the asynchronous backend.
//!
//! The only changes: the worker is an `async fn`, and the parent uses a
//! tokio runtime (the calls are made all at once; events and replies still
//! arrive in the order the child made them).
//!
//! Run with `cargo run --example rpc_async`.

use std::sync::atomic::{AtomicU64, Ordering};

use anyfork::Fork;
use anyfork::rpc;

static COUNT: AtomicU64 = AtomicU64::new(0);

async fn run((command, path): (String, String)) -> (bool, String) {
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
anyfork::rpc!(async run);

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (done, destroyed) = tokio::sync::oneshot::channel();
    let rpc = Fork::new()?
        .rpc("rpc_async::run")
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

    let calls: Vec<_> = (1..=6)
        .map(|id| {
            let path = format!("/tmp/somepath/{id}");
            let call = rpc.call(("rmdir".into(), path.clone()));
            async move { (path, call.await) }
        })
        .collect();
    for call in calls {
        let (path, result) = call.await;
        let (ok, error) = result?;
        if !ok {
            println!("{path}: {error}");
        }
    }

    drop(rpc);
    destroyed.await?;
    Ok(())
}
