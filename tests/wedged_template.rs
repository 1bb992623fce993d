//! Hardening item 5: a stopped (or wedged) template does not hang its
//! callers. `run`, `pid` and `fork` wait at most the default timeout and
//! then fail with `Error::Timeout`, which names the process, what was
//! awaited and that the template is stopped; when it continues, so does
//! everything.
//!
//! Its own test binary: it stops the default template and changes the
//! process-wide default timeout.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use anyfork::Fork;

fn hello(mut socket: UnixStream, _args: anyfork::Args) -> std::io::Result<()> {
    std::io::Write::write_all(&mut socket, b"hi")
}

fn run_hello(fork: Fork) -> Result<String, anyfork::Error> {
    let mut socket = fork.run(hello)?;
    // The greeting, not end-of-file: a template stopped just after forking
    // the process, before it closed its own copy of the process's socket,
    // keeps that copy open until it continues (a full test run hung here
    // once).
    let mut seen = [0u8; 2];
    socket.read_exact(&mut seen).expect("read");
    Ok(String::from_utf8_lossy(&seen).into_owned())
}

fn signal(pid: u32, signal: i32) {
    // SAFETY: kill has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(pid as i32, signal) }, 0);
}

#[test]
fn a_stopped_template_makes_calls_time_out_saying_so() {
    let limit = Duration::from_millis(300);
    anyfork::set_default_timeout(Some(limit));
    let first = Fork::new().unwrap();
    let template = first.template_pid().unwrap();
    assert_eq!(run_hello(first).unwrap(), "hi");

    signal(template, libc::SIGSTOP);
    // A spare forked before the stop may still serve; after it, every call
    // times out instead of hanging.
    let mut timeouts = 0;
    for _ in 0..3 {
        let started = Instant::now();
        let result = Fork::new().and_then(run_hello);
        let took = started.elapsed();
        match result {
            Ok(said) => assert_eq!(said, "hi"),
            Err(anyfork::Error::Timeout {
                doing,
                state,
                timeout,
                ..
            }) => {
                timeouts += 1;
                assert_eq!(timeout, limit);
                assert!(doing.contains("running `"), "{doing}");
                assert!(
                    state.contains(&format!("its template {template} is stopped")),
                    "{state}"
                );
                assert!(took < limit * 5, "gave up after {took:?}");
            }
            Err(other) => panic!("unexpected: {other}"),
        }
    }
    assert!(timeouts >= 2, "only {timeouts} of 3 calls timed out");

    // pid() too, with its own limit.
    let fork = Fork::new().unwrap();
    match fork.pid_timeout(Some(Duration::from_millis(100))) {
        Ok(_) => {} // the spare, if one was forked in time
        Err(anyfork::Error::Timeout { timeout, .. }) => {
            assert_eq!(timeout, Duration::from_millis(100))
        }
        Err(other) => panic!("unexpected: {other}"),
    }
    let message = Fork::new()
        .unwrap()
        .pid()
        .expect_err("the template is stopped")
        .to_string();
    assert!(message.contains("no answer within 300ms"), "{message}");

    // When the template continues, everything works again.
    signal(template, libc::SIGCONT);
    anyfork::set_default_timeout(Some(Duration::from_secs(30)));
    let fork = Fork::new().unwrap();
    assert_eq!(fork.template_pid(), Some(template));
    assert_eq!(run_hello(fork).unwrap(), "hi");
}
