//! Issue 3, item 8: bad input from the child (malformed or truncated
//! frames, a length over the limit, a reply to no call, undecodable
//! payloads, missing descriptors) becomes a clear `Error` through
//! `on_error` and to the affected calls; the parent never panics or hangs.
//! The "child" here is the test itself, on the other end of the socket.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyfork::Fork;
use anyfork::ProtocolError;
use anyfork::rpc::{Codec, Error, Rpc};

/// An RPC handle whose child is a thread that drains what the parent sends
/// and writes `script` (after the serve protocol's `S`), then `close`s or
/// keeps the socket open.
fn fake(script: Vec<u8>, close: bool, max_frame: u64) -> (Rpc<u32, u32>, Arc<Mutex<Vec<String>>>) {
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    let errors = Arc::new(Mutex::new(Vec::new()));
    let seen = errors.clone();
    let rpc = Fork::new_from_fh(ours)
        .rpc("fake::function")
        .types::<u32, u32>()
        .codec(Codec::Raw)
        .max_frame_len(max_frame)
        .on_error(move |e| seen.lock().unwrap().push(common::chain(e)))
        .start()
        .unwrap();
    std::thread::spawn(move || {
        let mut started = vec![b'S', 0, 0, 0, 4];
        started.extend_from_slice(&std::process::id().to_be_bytes());
        theirs.write_all(&started).unwrap();
        theirs.write_all(&script).unwrap();
        if close {
            theirs.shutdown(std::net::Shutdown::Write).unwrap();
        }
        // Drain until the parent closes; stay open meanwhile.
        let mut buf = [0u8; 4096];
        while matches!(theirs.read(&mut buf), Ok(n) if n > 0) {}
    });
    (rpc, errors)
}

fn frame(id: u32, kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = id.to_be_bytes().to_vec();
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.push(kind);
    out.push(0);
    out.extend_from_slice(payload);
    out
}

fn raw(value: u32) -> Vec<u8> {
    Codec::Raw.encode(&value).unwrap().bytes
}

/// Runs a call on another thread so that a hang fails the test.
fn call(rpc: Rpc<u32, u32>, value: u32) -> (Result<u32, Error>, Rpc<u32, u32>) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let result = rpc.call_blocking(value);
        let _ = tx.send((result, rpc));
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the call must not hang")
}

fn expect_protocol(result: Result<u32, Error>, check: impl Fn(&ProtocolError) -> bool) {
    match result {
        Err(Error::Protocol { source, .. }) => {
            assert!(check(&source), "unexpected detail: {source}")
        }
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

#[test]
fn a_malformed_frame() {
    let (rpc, errors) = fake(frame(1, b'z', b""), false, 1 << 20);
    let (result, _rpc) = call(rpc, 1);
    expect_protocol(result, |e| matches!(e, ProtocolError::UnknownTag(_)));
    assert!(errors.lock().unwrap()[0].contains("unknown frame tag 'z'"));
}

#[test]
fn a_truncated_frame() {
    let mut script = frame(1, b'r', &raw(5));
    script.truncate(script.len() - 1);
    let (rpc, errors) = fake(script, true, 1 << 20);
    let (result, _rpc) = call(rpc, 1);
    expect_protocol(result, |e| matches!(e, ProtocolError::Truncated { .. }));
    assert!(errors.lock().unwrap()[0].contains("truncated"));
}

#[test]
fn a_length_over_the_limit() {
    let mut script = 1u32.to_be_bytes().to_vec();
    script.extend_from_slice(&u32::MAX.to_be_bytes());
    script.extend_from_slice(&[b'r', 0]);
    let (rpc, errors) = fake(script, false, 1000);
    let (result, _rpc) = call(rpc, 1);
    expect_protocol(result, |e| {
        matches!(e, ProtocolError::TooLong { limit: 1000, .. })
    });
    assert!(errors.lock().unwrap()[0].contains("more than the limit of 1000"));
}

#[test]
fn a_reply_to_a_call_never_made() {
    let (rpc, errors) = fake(frame(999, b'r', &raw(5)), false, 1 << 20);
    let (result, _rpc) = call(rpc, 1);
    expect_protocol(result, |e| e.to_string().contains("never made"));
    assert_eq!(errors.lock().unwrap().len(), 1);
}

/// A fake child that answers each request as it arrives with
/// `respond(id)`: it reads the serve commands (up to `run`), then RPC
/// frames.
fn responding_fake(
    mut respond: impl FnMut(u32) -> Vec<u8> + Send + 'static,
) -> (Rpc<u32, u32>, Arc<Mutex<Vec<String>>>) {
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    let errors = Arc::new(Mutex::new(Vec::new()));
    let seen = errors.clone();
    let rpc = Fork::new_from_fh(ours)
        .rpc("fake::function")
        .types::<u32, u32>()
        .codec(Codec::Raw)
        .on_error(move |e| seen.lock().unwrap().push(common::chain(e)))
        .start()
        .unwrap();
    std::thread::spawn(move || {
        let mut reader = theirs.try_clone().unwrap();
        let mut read_exact = move |n: usize| {
            let mut buf = vec![0u8; n];
            reader.read_exact(&mut buf).map(|_| buf)
        };
        // Serve commands: tag, u32 length, payload; the last is `x` (run).
        loop {
            let Ok(header) = read_exact(5) else { return };
            let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
            if read_exact(len).is_err() {
                return;
            }
            if header[0] == b'x' {
                break;
            }
        }
        let mut replies = vec![b'S', 0, 0, 0, 4];
        replies.extend_from_slice(&std::process::id().to_be_bytes());
        // RPC frames: id, length, kind, nfds, payload.
        loop {
            let Ok(header) = read_exact(10) else { return };
            let id = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
            let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
            if read_exact(len).is_err() {
                return;
            }
            replies.extend(respond(id));
            if theirs.write_all(&replies).is_err() {
                return;
            }
            replies.clear();
        }
    });
    (rpc, errors)
}

#[test]
fn an_undecodable_reply_fails_that_call_only() {
    let (rpc, errors) = responding_fake(|id| match id {
        1 => frame(1, b'r', &Codec::Raw.encode(&"not a number").unwrap().bytes),
        _ => frame(id, b'r', &raw(7)),
    });
    let (result, rpc) = call(rpc, 1);
    match result {
        Err(Error::Codec { source, .. }) => {
            assert!(source.message().contains("not a number"), "{source}")
        }
        other => panic!("expected a codec error, got {other:?}"),
    }
    let (result, _rpc) = call(rpc, 2);
    assert_eq!(result.unwrap(), 7, "the connection goes on");
    assert!(errors.lock().unwrap().is_empty(), "not a fatal error");
}

#[test]
fn descriptors_announced_but_missing() {
    let mut script = frame(1, b'r', &raw(5));
    script[9] = 2; // two descriptors that never come
    let (rpc, _errors) = fake(script, false, 1 << 20);
    let (result, _rpc) = call(rpc, 1);
    expect_protocol(result, |e| matches!(e, ProtocolError::MissingFd { .. }));
}

#[test]
fn the_server_giving_up() {
    let (rpc, errors) = fake(frame(0, b'x', b"no such thing"), false, 1 << 20);
    let (result, _rpc) = call(rpc, 1);
    match result {
        Err(Error::Server { message, .. }) => assert_eq!(message, "no such thing"),
        other => panic!("expected Server, got {other:?}"),
    }
    assert!(errors.lock().unwrap()[0].contains("gave up: no such thing"));
}

#[test]
fn silence_then_end_of_file() {
    let (rpc, errors) = fake(Vec::new(), true, 1 << 20);
    let (result, _rpc) = call(rpc, 1);
    assert!(
        matches!(result, Err(Error::Ended { outstanding: 1, .. })),
        "{result:?}"
    );
    assert_eq!(errors.lock().unwrap().len(), 1);
}

#[test]
fn a_refusal_instead_of_started() {
    // An `E` frame where `S` should be: the process refused to run.
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    let rpc = Fork::new_from_fh(ours)
        .rpc("fake::f")
        .types::<u32, u32>()
        .codec(Codec::Raw)
        .on_error(|_| {})
        .start()
        .unwrap();
    let mut refusal = vec![b'E', 0, 0, 0, 8, 1];
    refusal.extend_from_slice(b"nope!!!");
    theirs.write_all(&refusal).unwrap();
    let (result, _rpc) = call(rpc, 1);
    match result {
        Err(Error::Start(e)) => assert!(e.to_string().contains("nope!!!"), "{e}"),
        other => panic!("expected Start, got {other:?}"),
    }
}
