//! Issue item 10: `into_fh` / `new_from_fh`: an unrun `Fork` handed to another
//! process, which prepares it further and runs it.

mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use anyfork::{Arg, Args, Fork};
use common::read_all;

/// The final worker: reports its arguments.
fn worker(mut socket: UnixStream, args: Args) -> std::io::Result<()> {
    let args: Vec<String> = args
        .map(|a| match a {
            Arg::Bytes(b) => String::from_utf8_lossy(&b).into_owned(),
            Arg::Fd(_) => "fd".into(),
        })
        .collect();
    write!(
        socket,
        "worker {} got {}",
        std::process::id(),
        args.join(",")
    )
}
anyfork::function!(worker);

/// Runs in another process: takes the handed-over Fork, adds an argument,
/// runs `worker` in it, and relays what the worker said, with what it can
/// know about the worker's process.
fn relay(_socket: UnixStream, mut args: Args) -> std::io::Result<()> {
    let err = std::io::Error::other;
    let handed = args.fd().map_err(err)?;
    let mut out = UnixStream::from(args.fd().map_err(err)?);
    let (socket, process) = Fork::new_from_fh(handed)
        .send_arg("added by the receiver")
        .run_with_process("into_fh::worker")
        .map_err(std::io::Error::other)?;
    let said = read_all(socket);
    let wait = match process.wait() {
        Err(anyfork::Error::NotAChild { .. }) => "not my child",
        _ => "my child?!",
    };
    write!(out, "{said} | {} | {wait}", process.id())
}

#[test]
fn an_unrun_fork_runs_in_another_process() {
    let me = std::process::id();
    let handed = Fork::new().unwrap().send_arg("sent by the creator");
    let worker_pid = handed.pid().unwrap();
    let fd = handed.into_fh().unwrap();
    let (ours, theirs) = UnixStream::pair().unwrap();
    let (_socket, relay_process) = Fork::new()
        .unwrap()
        .send_fh(fd)
        .send_fh(theirs)
        .run_with_process(relay)
        .unwrap();
    ours.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let said = read_all(ours);
    assert_eq!(
        said,
        format!(
            "worker {worker_pid} got sent by the creator,added by the receiver | {worker_pid} | not my child"
        )
    );
    assert!(relay_process.wait().unwrap().success());
    // The creator stays the parent and reaps the worker.
    assert!(
        common::wait_until(Duration::from_secs(5), || !common::children_of(me)
            .iter()
            .any(|(p, _)| *p == worker_pid)),
        "the worker {worker_pid} must be reaped by its creator"
    );
}

#[test]
fn names_are_checked_by_the_process_after_new_from_fh() {
    let fd = Fork::new().unwrap().into_fh().unwrap();
    match Fork::new_from_fh(fd).run("into_fh::unknown") {
        Err(anyfork::Error::Refused { kind, .. }) => {
            assert_eq!(kind, anyfork::ChildErrorKind::UnknownFunction)
        }
        other => panic!("expected Refused, got {other:?}"),
    }
}
