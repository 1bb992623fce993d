//! What errors say: each level of a chain says its own part once (so that
//! anyhow and friends print no cause twice), `?` converts between the
//! process and RPC error types, and an RPC handle knows its pid at once.

mod common;

use std::error::Error as StdError;

use anyfork::rpc::{self, Codec};
use anyfork::{Error, Fork};

fn double(n: u64) -> u64 {
    n * 2
}

fn fail_init(_: anyfork::Args) -> Result<(), String> {
    Err("the init refused".into())
}

/// No error in the chain repeats the text of its source.
fn assert_said_once(error: &(dyn StdError + 'static)) {
    let mut outer: &dyn StdError = error;
    let mut levels = 1;
    while let Some(inner) = outer.source() {
        let (outer_text, inner_text) = (outer.to_string(), inner.to_string());
        assert!(
            !outer_text.contains(&inner_text),
            "{outer_text:?} repeats its source {inner_text:?}"
        );
        outer = inner;
        levels += 1;
    }
    assert!(levels >= 2, "a chain was expected: {error}");
}

#[test]
fn a_failed_start_says_each_cause_once() {
    let rpc = Fork::new()
        .unwrap()
        .rpc(double)
        .codec(Codec::Cbor)
        .init(fail_init)
        .start()
        .unwrap();
    let error = rpc.call_blocking(1).unwrap_err();
    let text = common::chain(&error);
    assert!(text.contains("the init refused"), "{text}");
    // The server gave up: a chain only when the start failed.
    if error.source().is_some() {
        assert_said_once(&error);
    }
}

#[test]
fn io_and_protocol_errors_say_each_cause_once() {
    // An RPC request naming a descriptor on a pair of pipes: Io with a
    // source.
    fn take(fd: rpc::Fd) -> u8 {
        drop(fd);
        0
    }
    let rpc = Fork::new_exec_piped()
        .unwrap()
        .rpc(take)
        .codec(Codec::Cbor)
        .start()
        .unwrap();
    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    let error = rpc
        .call_blocking(rpc::Fd::from(std::os::fd::OwnedFd::from(a)))
        .unwrap_err();
    assert!(matches!(error, rpc::Error::Io { .. }), "{error:?}");
    assert_said_once(&error);

    // Garbage from a "serving process": a protocol error with a source.
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    std::io::Write::write_all(&mut &theirs, b"Zgarbage").unwrap();
    let fork = Fork::new_from_fh(ours);
    let error = fork.pid().unwrap_err();
    assert!(matches!(error, Error::Protocol { .. }), "{error:?}");
    assert_said_once(&error);
    drop(theirs);
}

#[test]
fn question_mark_converts_both_ways() {
    fn as_rpc_error() -> Result<u64, rpc::Error> {
        let rpc = Fork::new()?.rpc(double).start()?;
        rpc.call_blocking(21)
    }
    fn as_process_error() -> Result<u64, Error> {
        let rpc = Fork::new()?.rpc(double).start()?;
        Ok(rpc.call_blocking(21)?)
    }
    assert_eq!(as_rpc_error().unwrap(), 42);
    assert_eq!(as_process_error().unwrap(), 42);

    // A process error inside an RPC error comes back out as itself.
    let process_error = Error::NotAChild { pid: 7 };
    let back = Error::from(rpc::Error::from(process_error));
    assert!(matches!(back, Error::NotAChild { pid: 7 }), "{back:?}");
    // And an RPC error stays one, with its cause.
    let rpc_error = rpc::Error::NoRuntime;
    let wrapped = Error::from(rpc_error);
    assert!(matches!(wrapped, Error::Rpc(_)), "{wrapped:?}");
    assert!(common::chain(&wrapped).contains("tokio runtime"));
}

#[test]
fn an_rpc_handle_knows_its_pid_right_after_start() {
    fn id(_: ()) -> u32 {
        std::process::id()
    }
    let template = Fork::new().unwrap();
    for _ in 0..3 {
        // A fork of a template has not said its pid when start returns.
        let rpc = template
            .fork()
            .unwrap()
            .rpc(id)
            .codec(Codec::Cbor)
            .start()
            .unwrap();
        let pid = rpc.pid().unwrap();
        let process = rpc.process().unwrap();
        assert_eq!(process.id(), pid);
        assert_eq!(rpc.call_blocking(()).unwrap(), pid);
    }
}
