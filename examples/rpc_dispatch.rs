//! RPC manual, Example 3: an asynchronous dispatcher.
//!
//! The Perl version starts a Coro thread per request that calls a function
//! by name and returns its values; here each request is a task on the
//! child's runtime that does the same: `add` and `mul`.
//!
//! Run with `cargo run --example rpc_dispatch`.

use anyfork::Fork;

// --- My::Arith --------------------------------------------------------------

fn add(a: i64, b: i64) -> i64 {
    a + b
}

fn mul(a: i64, b: i64) -> i64 {
    a * b
}

/// My::Arith::run: the first argument names the function, the rest are its
/// arguments.
async fn run((function, a, b): (String, i64, i64)) -> Result<i64, String> {
    // Any function may await here: calls overlap as needed.
    tokio::task::yield_now().await;
    match function.as_str() {
        "add" => Ok(add(a, b)),
        "mul" => Ok(mul(a, b)),
        other => Err(format!("no function {other}")),
    }
}
anyfork::rpc!(async run as "My::Arith::run");

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rpc = Fork::new()?
        .rpc("My::Arith::run")
        .codec(anyfork::rpc::Codec::Cbor)
        .types::<(String, i64, i64), Result<i64, String>>()
        .start()?;
    println!("{}", rpc.call(("add".into(), 1, 3)).await??);
    println!("{}", rpc.call(("mul".into(), 3, 2)).await??);
    println!("{}", rpc.call(("div".into(), 3, 2)).await?.unwrap_err());
    Ok(())
}
