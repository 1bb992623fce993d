//! Issue item 7: `run` by registered name and by function value, across
//! `new_exec` and template forks; blocking and async sockets; what the
//! function receives; exit statuses for return, error and panic; unknown
//! names refused in the parent.

mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;

use anyfork::{Arg, Args, Fork};
use common::read_all;

/// Writes its pid and a description of every argument, in order.
fn describe(mut socket: UnixStream, args: Args) -> std::io::Result<()> {
    let parts: Vec<String> = args
        .map(|a| match a {
            Arg::Bytes(b) => format!("bytes:{}", String::from_utf8_lossy(&b)),
            Arg::Fd(_) => "fd".to_owned(),
        })
        .collect();
    write!(socket, "{} {}", std::process::id(), parts.join(","))
}
anyfork::function!(describe);
anyfork::function!(describe as "custom::describe");

fn returns_error(_socket: UnixStream, _args: Args) -> Result<(), String> {
    Err("the function failed".into())
}

fn panics(_socket: UnixStream, _args: Args) {
    panic!("the function panicked");
}

fn returns(_socket: UnixStream, _args: Args) {}

fn check_describe(seen: &str, pid: u32, expected_args: &str) {
    assert_eq!(seen, format!("{pid} {expected_args}"));
}

#[test]
fn by_value_across_new_exec() {
    let (socket, process) = Fork::new_exec()
        .unwrap()
        .send_arg("a")
        .run_with_process(describe)
        .unwrap();
    check_describe(&read_all(socket), process.id(), "bytes:a");
    assert!(process.wait().unwrap().success());
}

#[test]
fn by_name_across_new_exec() {
    let fork = Fork::new_exec().unwrap();
    let pid = fork.pid().unwrap();
    let (socket, process) = fork
        .send_arg("b")
        .run_with_process("run::describe")
        .unwrap();
    assert_eq!(process.id(), pid);
    check_describe(&read_all(socket), pid, "bytes:b");
}

#[test]
fn by_custom_name_and_closure() {
    let socket = Fork::new().unwrap().run("custom::describe").unwrap();
    assert!(read_all(socket).ends_with(' '));
    // A closure that captures nothing is a function value too.
    let socket = Fork::new()
        .unwrap()
        .send_arg("c")
        .run(|mut s: UnixStream, mut a: Args| {
            let arg = a.string().unwrap_or_default();
            let _ = write!(s, "closure got {arg}");
        })
        .unwrap();
    assert_eq!(read_all(socket), "closure got c");
}

#[test]
fn function_gets_socket_then_args_and_fds_in_order() {
    let (left, _right) = UnixStream::pair().unwrap();
    let (socket, process) = Fork::new()
        .unwrap()
        .send_arg("1")
        .send_fh(left)
        .send_args(["2", "3"])
        .run_with_process(describe)
        .unwrap();
    check_describe(
        &read_all(socket),
        process.id(),
        "bytes:1,fd,bytes:2,bytes:3",
    );
}

#[test]
fn returning_exits_zero_and_closes_the_socket() {
    let (socket, process) = Fork::new().unwrap().run_with_process(returns).unwrap();
    assert_eq!(
        read_all(socket),
        "",
        "end-of-file once the function returns"
    );
    assert_eq!(process.wait().unwrap().code(), Some(0));
}

#[test]
fn an_error_exits_with_exit_failed() {
    let (socket, process) = Fork::new()
        .unwrap()
        .run_with_process(returns_error)
        .unwrap();
    assert_eq!(read_all(socket), "");
    assert_eq!(process.wait().unwrap().code(), Some(anyfork::EXIT_FAILED));
}

#[test]
fn a_panic_exits_with_exit_panicked() {
    let (socket, process) = Fork::new().unwrap().run_with_process(panics).unwrap();
    assert_eq!(read_all(socket), "");
    let status = process.wait().unwrap();
    assert_eq!(status.code(), Some(anyfork::EXIT_PANICKED));
    assert_eq!(status.signal(), None);
}

#[test]
fn unknown_name_fails_in_the_parent_before_sending() {
    let fork = Fork::new_exec().unwrap();
    let process = fork.process().unwrap();
    match fork.run("run::no_such_function") {
        Err(anyfork::Error::UnknownFunction { name, kind, .. }) => {
            assert_eq!(name, "run::no_such_function");
            assert_eq!(kind, "function");
        }
        other => panic!("expected UnknownFunction, got {other:?}"),
    }
    // Nothing was sent: the process just saw end-of-file and exited cleanly.
    assert_eq!(process.wait().unwrap().code(), Some(0));
}

#[test]
fn unknown_initialiser_is_reported_by_the_next_sending_call() {
    let fork = Fork::new()
        .unwrap()
        .eval("run::no_such_initialiser", [""; 0]);
    match fork.run(returns) {
        Err(anyfork::Error::UnknownFunction { name, kind, .. }) => {
            assert_eq!(name, "run::no_such_initialiser");
            assert_eq!(kind, "initialiser");
        }
        other => panic!("expected UnknownFunction, got {other:?}"),
    }
}

#[test]
fn the_parent_socket_is_blocking_and_close_on_exec() {
    let socket = Fork::new().unwrap().run(returns).unwrap();
    let flags = rustix::io::fcntl_getfd(&socket).unwrap();
    assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
    let status = rustix::fs::fcntl_getfl(&socket).unwrap();
    assert!(!status.contains(rustix::fs::OFlags::NONBLOCK));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_run_by_value_and_by_name() {
    use tokio::io::AsyncReadExt;
    let (mut socket, process) = Fork::new()
        .unwrap()
        .send_arg("x")
        .run_async_with_process(describe)
        .await
        .unwrap();
    let mut seen = String::new();
    socket.read_to_string(&mut seen).await.unwrap();
    check_describe(&seen, process.id(), "bytes:x");
    assert!(process.wait_async().await.unwrap().success());

    let mut socket = Fork::new_exec()
        .unwrap()
        .run_async("run::describe")
        .await
        .unwrap();
    let mut seen = String::new();
    socket.read_to_string(&mut seen).await.unwrap();
    assert!(seen.ends_with(' '), "{seen}");
}

#[tokio::test]
async fn async_unknown_name_and_async_errors() {
    match Fork::new().unwrap().run_async("run::missing").await {
        Err(anyfork::Error::UnknownFunction { .. }) => {}
        other => panic!("expected UnknownFunction, got {other:?}"),
    }
}
