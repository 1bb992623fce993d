//! Seed example: "Create a pool of server processes all accepting on the
//! same socket."
//!
//! A template gets the listening socket; ten workers are forked from it,
//! each with its id, and all accept on the one socket. The parent then
//! connects (1,000 times by default, or the number given as the first
//! argument) and counts which worker answered.
//!
//! Run with `cargo run --release --example server_pool -- 1000`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;

use anyfork::{Args, Fork, Signal};

/// My::Server::run: accepts forever, answering every connection with the
/// worker's id.
fn run(slave: UnixStream, mut args: Args) -> std::io::Result<()> {
    let listener = TcpListener::from(args.fd().map_err(std::io::Error::other)?);
    let id = args.string().map_err(std::io::Error::other)?;
    // We do not use the socket, so close it to save resources.
    drop(slave);
    loop {
        let (mut connection, _) = listener.accept()?;
        connection.write_all(id.as_bytes())?;
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let connections: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(1000);

    // Create the listener socket.
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?;

    // Create a pool template and give it the socket.
    let pool = Fork::new()?.send_fh(listener);

    // Now create 10 identical workers.
    let mut workers = Vec::new();
    for id in 1..=10 {
        let (_socket, process) = pool
            .fork()?
            .send_arg(id.to_string())
            .run_with_process(run)?;
        workers.push(process);
    }
    // The template is not needed any more.
    drop(pool);

    let mut served: BTreeMap<u32, usize> = (1..=10).map(|id| (id, 0)).collect();
    for _ in 0..connections {
        let mut answer = String::new();
        TcpStream::connect(address)?.read_to_string(&mut answer)?;
        *served.entry(answer.parse()?).or_default() += 1;
    }
    for (id, count) in &served {
        println!("worker {id:2} served {count} connections");
    }
    for worker in &workers {
        worker.kill(Signal::TERM)?;
        worker.wait()?;
    }
    let idle: Vec<_> = served
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(id, _)| id)
        .collect();
    if !idle.is_empty() {
        return Err(format!("workers {idle:?} served nothing").into());
    }
    println!(
        "{connections} connections served by {} workers",
        served.len()
    );
    Ok(())
}
