//! RPC manual, Example 2: the asynchronous backend with timers.
//!
//! Three countdowns in the child, from 3, 2 and 1, ticking once a second:
//! the job started last finishes first, and events and replies arrive in
//! the order the child made them. The first argument sets the tick in
//! milliseconds (default 1000).
//!
//! Run with `cargo run --example rpc_countdown`.

use std::time::Duration;

use anyfork::Fork;
use anyfork::rpc;

/// In the child: counts up to `count`, one tick at a time.
async fn run((count, tick_ms): (u64, u64)) -> u64 {
    let _ = rpc::event(&format!("starting to count up to {count}"));
    let tick = Duration::from_millis(tick_ms);
    let mut timer = tokio::time::interval_at(tokio::time::Instant::now() + tick, tick);
    for n in 1..=count {
        timer.tick().await;
        let _ = rpc::event(&format!("count {n} of {count}"));
    }
    count
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tick_ms: u64 = std::env::args()
        .nth(1)
        .map(|t| t.parse())
        .transpose()?
        .unwrap_or(1000);
    let (done, destroyed) = tokio::sync::oneshot::channel();
    let rpc = Fork::new()?
        .rpc(run)
        .on_error(|e| {
            eprintln!("ERROR: {e}");
            std::process::exit(1)
        })
        .on_event(|line: String| println!("{line}"))
        .on_destroy(move || {
            let _ = done.send(());
        })
        .start()?;

    let mut jobs = Vec::new();
    for count in [3, 2, 1] {
        let call = rpc.call((count, tick_ms));
        jobs.push(tokio::spawn(async move {
            if let Ok(count) = call.await {
                println!("job {count} finished");
            }
        }));
    }
    drop(rpc);
    for job in jobs {
        job.await?;
    }
    destroyed.await?;
    Ok(())
}
