//! A library that anyfork's tests load into a serving process with
//! `Fork::require`, then run by name.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};

/// Set by the initialiser, read by the run function: shows that state built
/// in a library is inherited by forks.
static GREETINGS: AtomicU64 = AtomicU64::new(0);

/// Writes a greeting, the pid and the arguments it got.
fn plugin_worker(mut socket: UnixStream, args: anyfork::Args) -> std::io::Result<()> {
    let args: Vec<String> = args
        .map(|a| match a {
            anyfork::Arg::Bytes(b) => String::from_utf8_lossy(&b).into_owned(),
            anyfork::Arg::Fd(_) => "<fd>".to_owned(),
        })
        .collect();
    write!(
        socket,
        "plugin says hello from {} after {} greetings with [{}]",
        std::process::id(),
        GREETINGS.load(Ordering::Relaxed),
        args.join(",")
    )
}
anyfork::function!(plugin_worker as "plugin::worker");

/// Counts greetings given as its first argument.
fn plugin_init(args: &[Vec<u8>]) -> Result<(), String> {
    let n: u64 = String::from_utf8_lossy(args.first().ok_or("missing count")?)
        .parse()
        .map_err(|e| format!("bad count: {e}"))?;
    GREETINGS.store(n, Ordering::Relaxed);
    Ok(())
}
anyfork::initialiser!(plugin_init as "plugin::init");

/// Panics, to show that a panic in a library does not unwind across its C
/// boundary.
fn plugin_panics(_socket: UnixStream, _args: anyfork::Args) {
    panic!("the plugin panicked on purpose");
}
anyfork::function!(plugin_panics as "plugin::panics");

anyfork::library!();
