//! A pre-forked HTTP/1.1 server, supervised: the manual's "pool of server
//! processes all accepting on the same socket", kept alive by
//! [`anyfork::pool::ServerPool`].
//!
//! With no arguments it serves 1,000 requests from `curl` (keep-alive, in
//! batches) while one worker is killed with SIGKILL and while the pool is
//! reloaded from a new template, and fails unless every request got its
//! answer. Only a request running on the killed worker is lost with it;
//! curl sends such a GET again (`--retry-all-errors`), as any client of a
//! pre-forked server must.
//!
//! For a load generator (`wrk`, `oha`), it serves on 127.0.0.1 for a while:
//!
//! ```text
//! cargo run --release --example http_server_pool -- pool 2 8080 20     # 2 workers, port 8080, 20 s
//! cargo run --release --example http_server_pool -- threads 2 8080 20  # one process, 2 accept threads
//! wrk -t2 -c64 -d10s http://127.0.0.1:8080/
//! ```

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyfork::pool::stop_requested;
use anyfork::{Args, Fork};

/// How long an idle keep-alive connection waits between checks for a stop.
const IDLE_CHECK: Duration = Duration::from_millis(100);

/// Answers one connection's requests until the client closes, or (between
/// requests) the server is stopping.
fn serve_connection(stream: TcpStream, stopping: &AtomicBool) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IDLE_CHECK))?;
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut line = String::new();
    loop {
        // The request line, waiting (and checking for a stop) while idle.
        line.clear();
        loop {
            match reader.read_line(&mut line) {
                Ok(0) => return Ok(()),
                Ok(_) => break,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if stopping.load(Ordering::Relaxed) && line.is_empty() {
                        return Ok(());
                    }
                }
                Err(e) => return Err(e),
            }
        }
        let mut close = false;
        // The headers, to the empty line.
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 {
                return Ok(());
            }
            if header.eq_ignore_ascii_case("connection: close\r\n") {
                close = true;
            }
            if header == "\r\n" || header == "\n" {
                break;
            }
        }
        // A server asked to stop finishes this request, then closes.
        close |= stopping.load(Ordering::Relaxed);
        let body = format!("hello from {}\n", std::process::id());
        // One write: pieces would meet Nagle's algorithm and the client's
        // delayed ACK (40 ms a response).
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n{body}",
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        );
        writer.write_all(response.as_bytes())?;
        if close {
            return Ok(());
        }
    }
}

/// Accepts on `listener` until `stop()` says so, a thread per connection;
/// then waits for the connections to finish.
fn accept_until(listener: &TcpListener, stop: &dyn Fn() -> bool) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let stopping = Arc::new(AtomicBool::new(false));
    let mut connections = Vec::new();
    while !stop() {
        let mut fds = [rustix::event::PollFd::new(
            listener,
            rustix::event::PollFlags::IN,
        )];
        let timeout = rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: 50_000_000,
        };
        let _ = rustix::event::poll(&mut fds, Some(&timeout));
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false)?;
                let stopping = stopping.clone();
                connections.push(std::thread::spawn(move || {
                    let _ = serve_connection(stream, &stopping);
                }));
            }
            // Another worker took it, or nothing came.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        connections.retain(|c| !c.is_finished());
    }
    stopping.store(true, Ordering::Relaxed);
    for connection in connections {
        let _ = connection.join();
    }
    Ok(())
}

/// A worker: serves the template's listener until the pool closes its
/// socket, then finishes its connections and returns.
fn serve_http(control: UnixStream, mut args: Args) -> std::io::Result<()> {
    let listener = TcpListener::from(args.fd().map_err(std::io::Error::other)?);
    accept_until(&listener, &|| stop_requested(&control))
}

/// `requests` GETs from curl, keep-alive, retried if a connection dies;
/// the number answered 200.
fn curl(url: &str, requests: usize) -> std::io::Result<usize> {
    let mut command = Command::new("curl");
    command.args([
        "-s",
        "--retry",
        "3",
        "--retry-all-errors",
        "--retry-delay",
        "0",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}\n",
    ]);
    for _ in 0..requests {
        command.arg(url);
    }
    let output = command.output()?;
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|code| *code == "200")
        .count())
}

fn template(listener: &TcpListener) -> Result<Fork, Box<dyn std::error::Error>> {
    Ok(Fork::new()?.send_fh(listener.try_clone()?))
}

/// 1,000 requests through a pool of 3, a worker killed and a reload on the
/// way.
fn scenario() -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}/", listener.local_addr()?);
    let servers = template(&listener)?
        .server_pool(serve_http)
        .workers(3)
        .stop_grace(Duration::from_secs(5))
        .start()?;
    let first = servers.status().serving;
    let (batches, per_batch) = (20, 50);
    let mut answered = 0;
    let mut killed = None;
    for batch in 0..batches {
        let client = {
            let url = url.clone();
            std::thread::spawn(move || curl(&url, per_batch))
        };
        std::thread::sleep(Duration::from_millis(5));
        if batch == 5 {
            let victim = servers.status().serving[0];
            // SAFETY: kill(2) of a worker of this pool.
            if unsafe { libc::kill(victim as i32, libc::SIGKILL) } != 0 {
                return Err(std::io::Error::last_os_error().into());
            }
            killed = Some(victim);
        }
        if batch == 12 {
            servers.reload(template(&listener)?);
        }
        answered += client.join().map_err(|_| "the client thread panicked")??;
    }
    let status = servers.status();
    let reloaded = first.iter().all(|pid| !status.serving.contains(pid));
    println!(
        "{answered} of {} requests answered; worker {} killed and restarted ({} restart); reloaded to generation {} ({})",
        batches * per_batch,
        killed.unwrap_or(0),
        status.restarts,
        status.generation,
        if reloaded {
            "every first worker replaced"
        } else {
            "first workers still serving"
        }
    );
    servers.shutdown(Duration::from_secs(5));
    if answered != batches * per_batch || status.restarts != 1 || !reloaded {
        return Err("requests were lost, or the pool did not recover".into());
    }
    Ok(())
}

/// Serves for a load generator: `pool N PORT SECONDS` or `threads N PORT
/// SECONDS`.
fn serve_for_benchmark(
    mode: &str,
    workers: usize,
    port: u16,
    seconds: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind(("127.0.0.1", port))?;
    println!(
        "serving on http://{} for {seconds} s ({mode}, {workers})",
        listener.local_addr()?
    );
    let until = std::time::Instant::now() + Duration::from_secs(seconds);
    match mode {
        "pool" => {
            let servers = template(&listener)?
                .server_pool(serve_http)
                .workers(workers)
                .start()?;
            std::thread::sleep(until - std::time::Instant::now());
            servers.shutdown(Duration::from_secs(5));
        }
        _ => {
            let listener = Arc::new(listener);
            let threads: Vec<_> = (0..workers)
                .map(|_| {
                    let listener = listener.clone();
                    std::thread::spawn(move || {
                        accept_until(&listener, &|| std::time::Instant::now() >= until)
                    })
                })
                .collect();
            for thread in threads {
                thread.join().map_err(|_| "a server thread panicked")??;
            }
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => scenario(),
        [mode, workers, port, seconds] if mode == "pool" || mode == "threads" => {
            serve_for_benchmark(mode, workers.parse()?, port.parse()?, seconds.parse()?)
        }
        _ => Err("usage: http_server_pool [pool|threads WORKERS PORT SECONDS]".into()),
    }
}
