//! Issue item 9: a process handle for every process (also those forked by
//! a template): pid, kill, wait (blocking and async), exit status or signal.

mod common;

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use anyfork::{Fork, Signal};

/// Waits for the parent to close the socket, then exits with the code it was
/// sent.
fn wait_then_exit(mut socket: UnixStream, mut args: anyfork::Args) {
    let code: i32 = args.string().ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut buf = [0u8; 1];
    let _ = socket.read(&mut buf);
    std::process::exit(code);
}

fn sleep_forever(_socket: UnixStream, _args: anyfork::Args) {
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

#[test]
fn every_kind_of_process_is_a_child_with_a_handle() {
    let exec = Fork::new_exec().unwrap();
    let default_fork = Fork::new().unwrap();
    let template = Fork::new().unwrap().send_arg("3");
    let template_fork = template.fork().unwrap();
    let me = std::process::id();
    for (what, fork) in [
        ("new_exec", &exec),
        ("default", &default_fork),
        ("template", &template),
        ("template fork", &template_fork),
    ] {
        let process = fork.process().unwrap();
        assert_eq!(process.id(), fork.pid().unwrap(), "{what}");
        assert!(process.is_child(), "{what} must be a direct child");
        let parent: Vec<u32> = common::children_of(me).iter().map(|(p, _)| *p).collect();
        assert!(
            parent.contains(&process.id()),
            "{what}: {} is a child of {me}",
            process.id()
        );
        assert_eq!(process.try_wait().unwrap(), None, "{what} is still running");
    }
    // The template fork runs; its exit status is its own.
    let (socket, process) = template_fork.run_with_process(wait_then_exit).unwrap();
    drop(socket);
    assert_eq!(process.wait().unwrap().code(), Some(3));
    // Repeated and concurrent waits agree.
    assert_eq!(process.wait().unwrap().code(), Some(3));
    assert_eq!(
        process.clone().try_wait().unwrap().and_then(|s| s.code()),
        Some(3)
    );
}

#[test]
fn kill_and_wait_report_the_signal() {
    let (_socket, process) = Fork::new()
        .unwrap()
        .run_with_process(sleep_forever)
        .unwrap();
    process.kill(Signal::KILL).unwrap();
    let status = process.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert_eq!(status.code(), None);
    // Signalling a process that is gone does nothing.
    process.kill(Signal::TERM).unwrap();
}

#[test]
fn kill_an_unrun_template_fork() {
    let fork = Fork::new().unwrap();
    let process = fork.process().unwrap();
    process.kill(Signal::TERM).unwrap();
    assert_eq!(process.wait().unwrap().signal(), Some(libc::SIGTERM));
    // The Fork notices: running in it fails and names the signal.
    match fork.run(wait_then_exit) {
        Err(anyfork::Error::Ended {
            ending,
            process: name,
            ..
        }) => {
            assert_eq!(name.pid, Some(process.id()));
            assert_eq!(
                ending.status().and_then(|s| s.signal()),
                Some(libc::SIGTERM)
            );
        }
        other => panic!("expected Ended, got {other:?}"),
    }
}

#[test]
fn wait_timeout_returns_none_while_running() {
    let (socket, process) = Fork::new()
        .unwrap()
        .send_arg("5")
        .run_with_process(wait_then_exit)
        .unwrap();
    assert_eq!(process.wait_timeout(Duration::from_millis(50)), None);
    drop(socket);
    assert_eq!(
        process
            .wait_timeout(Duration::from_secs(5))
            .and_then(|s| s.code()),
        Some(5)
    );
}

#[test]
fn signals_are_checked() {
    assert!(Signal::from_raw(0).is_none());
    assert!(Signal::from_raw(-1).is_none());
    assert_eq!(Signal::from_raw(libc::SIGUSR1), Some(Signal::USR1));
    assert_eq!(Signal::HUP.as_raw(), libc::SIGHUP);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_wait() {
    let (socket, process) = Fork::new()
        .unwrap()
        .send_arg("7")
        .run_async_with_process(wait_then_exit)
        .await
        .unwrap();
    let waiter = {
        let process = process.clone();
        tokio::spawn(async move { process.wait_async().await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!waiter.is_finished(), "wait_async must wait");
    drop(socket);
    let status = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(7));
    // Blocking wait after async wait sees the same status.
    assert_eq!(process.wait().unwrap().code(), Some(7));
}

#[tokio::test]
async fn async_wait_for_a_killed_process() {
    let (_socket, process) = Fork::new_exec()
        .unwrap()
        .run_async_with_process(sleep_forever)
        .await
        .unwrap();
    process.kill(Signal::INT).unwrap();
    let status = process.wait_async().await.unwrap();
    assert_eq!(status.signal(), Some(libc::SIGINT));
}
