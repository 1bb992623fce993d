//! RPC manual, Example 4: forwarding the child's log messages to the parent.
//!
//! The Perl version reconfigures AnyEvent::Log in the child to send its
//! messages as events, and the parent's `on_event` logs them. With anyfork
//! that is built in: `tracing` events the child emits arrive in the parent's
//! subscriber under the child's own target (here `rpc_log`, so a filter
//! such as `RUST_LOG=rpc_log=info` applies to workers too), with the
//! child's pid as the field `pid`.
//!
//! Run with `cargo run --example rpc_log`.

use anyfork::Fork;

/// In the child: logs at several levels while it works.
fn work(job: String) -> usize {
    tracing::info!(job = %job, "starting");
    if job.is_empty() {
        tracing::warn!("nothing to do");
    }
    tracing::debug!("the subscriber in the parent filters this out");
    job.len()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The parent's subscriber: INFO and above, on stdout.
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(std::io::stdout)
        .without_time()
        .with_ansi(false)
        .init();

    let rpc = Fork::new()?.rpc(work).start()?;
    tracing::info!(pid = rpc.pid()?, "calling the child");
    let n = rpc.call_blocking("backup".into())?;
    let _ = rpc.call_blocking(String::new())?;
    tracing::info!(n, "the child answered");
    Ok(())
}
