//! Seed example: "For stingy users: put the worker code into a DATA
//! section."
//!
//! Perl evaluates code read from the program's `__DATA__` section in the
//! child. A Rust program already carries all its code, so the stingy version
//! is simply this: the worker lives in the same file as `main`, registered by
//! name, with an initialiser that `eval` runs in the child first.
//!
//! Run with `cargo run --example stingy`.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::OnceLock;

use anyfork::{Args, Fork};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut socket = Fork::new()?
        .eval("stingy::setup", ["Greetings"])
        .run("stingy::doit")?;
    socket.write_all(b"stingy user")?;
    socket.shutdown(std::net::Shutdown::Write)?;
    let mut answer = String::new();
    socket.read_to_string(&mut answer)?;
    println!("{answer}");
    Ok(())
}

// ---------------------------------------------------------------------------
// What the Perl version keeps after __DATA__.

static GREETING: OnceLock<String> = OnceLock::new();

/// Runs in the child through `eval`, before `doit`.
fn setup(args: &[Vec<u8>]) {
    let greeting = args
        .first()
        .map(|a| String::from_utf8_lossy(a).into_owned());
    GREETING.get_or_init(|| greeting.unwrap_or_default());
}
anyfork::initialiser!(setup);

/// Does something!
fn doit(mut socket: UnixStream, _args: Args) -> std::io::Result<()> {
    let mut name = String::new();
    socket.read_to_string(&mut name)?;
    let greeting = GREETING.get().map(String::as_str).unwrap_or("Hello");
    write!(
        socket,
        "{greeting}, {name}, from process {}",
        std::process::id()
    )
}
anyfork::function!(doit);
