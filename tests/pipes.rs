//! The template protocol and RPC over a pair of pipes (the transport a
//! process started by a command has: its stdin and stdout), side by side
//! with the same scenario over a unix socket. Everything but descriptor
//! passing behaves the same; descriptor passing is a clear error.

mod common;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyfork::rpc::{self, Codec, Fd};
use anyfork::{Error, Fork};
use serde::{Deserialize, Serialize};

/// Starts a fresh serving process.
type Start = fn() -> Result<Fork, Error>;

/// The two transports every scenario runs on.
fn both() -> [(&'static str, Start); 2] {
    [
        ("socket", Fork::new_exec as Start),
        ("pipes", Fork::new_exec_piped),
    ]
}

// --- functions the children run -------------------------------------------

fn add((a, b): (i64, i64)) -> i64 {
    a + b
}
anyfork::rpc!(add);

/// What the serving process was sent and what its initialiser built.
static SETTING: OnceLock<String> = OnceLock::new();

fn set_setting(args: &[Vec<u8>]) -> Result<(), String> {
    let value = String::from_utf8(args[0].clone()).map_err(|e| e.to_string())?;
    SETTING.set(value).map_err(|_| "set twice".to_owned())
}
anyfork::initialiser!(set_setting);

fn fail_init(_: &[Vec<u8>]) -> Result<(), String> {
    Err("this initialiser always fails".into())
}

/// The process's arguments and the initialiser's setting, joined.
static ARGS: OnceLock<Vec<String>> = OnceLock::new();

fn keep_args(args: anyfork::Args) -> Result<(), anyfork::ArgError> {
    let mut seen = Vec::new();
    for arg in args {
        match arg {
            anyfork::Arg::Bytes(b) => seen.push(String::from_utf8_lossy(&b).into_owned()),
            anyfork::Arg::Fd(_) => seen.push("fd".into()),
        }
    }
    ARGS.set(seen).ok();
    Ok(())
}

fn describe(_: ()) -> (Vec<String>, Option<String>, u32) {
    (
        ARGS.get().cloned().unwrap_or_default(),
        SETTING.get().cloned(),
        std::process::id(),
    )
}

fn tick(n: u32) -> u32 {
    for i in 0..n {
        rpc::event(&("tick", i)).expect("event");
    }
    // What the function prints goes to stderr, never into the protocol.
    println!("tick printed this on stdout");
    n
}

async fn sleep_then((ms, tag): (u64, String)) -> String {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    let _ = rpc::event(&("finished", tag.clone()));
    tag
}

fn fails(_: u8) -> u8 {
    panic!("no such luck")
}

fn exits(code: i32) -> i32 {
    std::process::exit(code)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Job {
    name: String,
    sizes: Vec<u64>,
    urgent: bool,
}

fn rename(mut job: Job) -> Job {
    job.name = job.name.to_uppercase();
    job
}

fn take_fd(fd: Fd) -> u32 {
    drop(fd);
    1
}

// --- the template protocol -------------------------------------------------

#[test]
fn arguments_initialisers_and_pid_reach_the_process_on_both_transports() {
    for (transport, start) in both() {
        let fork = start()
            .unwrap()
            .send_arg("one")
            .send_arg(vec![0u8, 255])
            .eval(set_setting, ["from eval"]);
        let pid = fork.pid().unwrap();
        let process = fork.process().unwrap();
        assert_eq!(process.id(), pid, "{transport}");
        let rpc = fork
            .rpc(describe)
            .codec(Codec::Cbor)
            .init(keep_args)
            .start()
            .unwrap();
        let (args, setting, child) = rpc.call_blocking(()).unwrap();
        assert_eq!(args, ["one", "\0\u{fffd}"], "{transport}");
        assert_eq!(setting.as_deref(), Some("from eval"), "{transport}");
        assert_eq!(
            child, pid,
            "{transport}: the pid the process said is its own"
        );
        assert_eq!(rpc.pid().unwrap(), pid, "{transport}");
        drop(rpc);
        assert!(process.wait().unwrap().success(), "{transport}");
    }
}

#[test]
fn a_failing_initialiser_is_reported_with_its_message_on_both_transports() {
    for (transport, start) in both() {
        let fork = start().unwrap().eval(fail_init, Vec::<Vec<u8>>::new());
        let error = fork.pid().unwrap_err();
        assert!(
            matches!(error, Error::Refused { .. })
                && error.to_string().contains("this initialiser always fails"),
            "{transport}: {error}"
        );
    }
}

/// Sends `bytes` as they are (then ends the command stream if
/// `end_after`), then a command whose answer `pid` waits for, on both
/// transports: the process must refuse with a message containing
/// `expected` and exit with `EXIT_SERVE_FAILED`.
fn assert_refused(bytes: &[u8], end_after: bool, expected: &str) {
    for (transport, start) in both() {
        let fork = start().unwrap();
        let process = fork.process().unwrap();
        fork.__send_raw(bytes).unwrap();
        if end_after {
            fork.__shutdown_write().unwrap();
        }
        let error = fork.eval(set_setting, ["never"]).pid().unwrap_err();
        assert!(error.to_string().contains(expected), "{transport}: {error}");
        assert_eq!(
            process.wait().unwrap().code(),
            Some(anyfork::EXIT_SERVE_FAILED),
            "{transport}"
        );
    }
}

#[test]
fn garbage_on_the_command_stream_is_refused_on_both_transports() {
    // A tag no serving process knows.
    assert_refused(&[b'Z', 0, 0, 0, 0], false, "unknown frame tag 'Z'");
}

#[test]
fn a_command_stream_cut_short_is_an_error_and_the_process_exits() {
    // An argument frame announcing 10 bytes, 3 sent, then the end.
    assert_refused(&[b'a', 0, 0, 0, 10, 1, 2, 3], true, "truncated");
}

#[test]
fn descriptors_fork_and_run_need_a_socket_and_say_so() {
    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    let fork = Fork::new_exec_piped().unwrap().send_fh(a);
    let error = fork.pid().unwrap_err();
    assert!(
        matches!(
            error,
            Error::NeedsSocket {
                what: "send_fh",
                ..
            }
        ),
        "{error}"
    );

    let template = Fork::new_exec_piped().unwrap();
    let error = template.fork().unwrap_err();
    assert!(
        matches!(error, Error::NeedsSocket { what: "fork", .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains("pair of byte streams"),
        "{error}"
    );

    fn hello(_: std::os::unix::net::UnixStream, _: anyfork::Args) {}
    let error = Fork::new_exec_piped().unwrap().run(hello).unwrap_err();
    assert!(
        matches!(error, Error::NeedsSocket { what: "run", .. }),
        "{error}"
    );
    let error = Fork::new_exec_piped().unwrap().into_fh().unwrap_err();
    assert!(matches!(error, Error::NeedsSocket { .. }), "{error}");
}

// --- RPC -------------------------------------------------------------------

#[test]
fn rpc_with_every_codec_on_both_transports() {
    let job = Job {
        name: "report".into(),
        sizes: vec![1, 2, 3],
        urgent: true,
    };
    for (transport, start) in both() {
        for codec in [Codec::Cbor, Codec::Json, Codec::Postcard] {
            let rpc = start().unwrap().rpc(rename).codec(codec).start().unwrap();
            let back = rpc.call_blocking(job.clone()).unwrap();
            assert_eq!(back.name, "REPORT", "{transport} {codec:?}");
            assert_eq!(back.sizes, job.sizes, "{transport} {codec:?}");
        }
        let rpc = start().unwrap().rpc("pipes::echo_raw").start();
        assert!(rpc.is_err(), "{transport}: an unregistered name");
        let rpc = start()
            .unwrap()
            .rpc(add)
            .codec(Codec::Cbor)
            .start()
            .unwrap();
        // Large messages cross a pipe in pieces.
        let rpc_big = start()
            .unwrap()
            .rpc(|v: Vec<u8>| v.len())
            .codec(Codec::Postcard)
            .start()
            .unwrap();
        assert_eq!(rpc.call_blocking((40, 2)).unwrap(), 42, "{transport}");
        assert_eq!(
            rpc_big.call_blocking(vec![7u8; 3 << 20]).unwrap(),
            3 << 20,
            "{transport}"
        );
    }
}

#[test]
fn raw_messages_by_name_on_pipes() {
    fn echo(parts: rpc::Octets) -> rpc::Octets {
        parts
    }
    let rpc = Fork::new_exec_piped().unwrap().rpc(echo).start().unwrap();
    let parts = vec![b"a".to_vec(), vec![0u8; 100_000]];
    assert_eq!(rpc.call_blocking(parts.clone()).unwrap(), parts);
}

#[tokio::test]
async fn the_async_backend_and_async_calls_on_both_transports() {
    for (transport, start) in both() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let rpc = start()
            .unwrap()
            .rpc(sleep_then)
            .codec(Codec::Cbor)
            .on_event(move |(_, tag): (String, String)| record.lock().unwrap().push(tag))
            .start()
            .unwrap();
        let slow = rpc.call((200, "slow".to_owned()));
        let fast = rpc.call((10, "fast".to_owned()));
        let (slow, fast) = tokio::join!(slow, fast);
        assert_eq!(
            (slow.unwrap(), fast.unwrap()),
            ("slow".into(), "fast".into())
        );
        drop(rpc);
        assert!(
            common::wait_until(Duration::from_secs(5), || seen.lock().unwrap().len() == 2),
            "{transport}"
        );
        assert_eq!(*seen.lock().unwrap(), ["fast", "slow"], "{transport}");
    }
}

#[tokio::test]
async fn events_as_a_stream_on_both_transports() {
    for (transport, start) in both() {
        let rpc = start()
            .unwrap()
            .rpc(tick)
            .codec(Codec::Json)
            .event_stream::<(String, u32)>()
            .start()
            .unwrap();
        let mut events = rpc.events().unwrap();
        assert_eq!(rpc.call(3).await.unwrap(), 3, "{transport}");
        for i in 0..3 {
            let (name, n) = events.next().await.unwrap().unwrap();
            assert_eq!((name.as_str(), n), ("tick", i), "{transport}");
        }
    }
}

#[test]
fn failures_reach_the_caller_on_both_transports() {
    for (transport, start) in both() {
        let rpc = start()
            .unwrap()
            .rpc(fails)
            .codec(Codec::Cbor)
            .start()
            .unwrap();
        let error = rpc.call_blocking(1).unwrap_err();
        assert!(
            matches!(error, rpc::Error::Failed { .. })
                && error.to_string().contains("no such luck"),
            "{transport}: {error}"
        );

        // The child exits in the middle of a call: the call fails with how.
        let rpc = start()
            .unwrap()
            .rpc(exits)
            .codec(Codec::Cbor)
            .on_error(|_| {})
            .start()
            .unwrap();
        let error = rpc.call_blocking(7).unwrap_err();
        assert!(
            matches!(error, rpc::Error::Ended { .. })
                && error.to_string().contains("exit status 7"),
            "{transport}: {error}"
        );
    }
}

#[test]
fn a_descriptor_in_an_rpc_message_on_pipes_is_a_clear_error() {
    let rpc = Fork::new_exec_piped()
        .unwrap()
        .rpc(take_fd)
        .codec(Codec::Cbor)
        .on_error(|_| {})
        .start()
        .unwrap();
    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    let error = rpc
        .call_blocking(Fd::from(std::os::fd::OwnedFd::from(a)))
        .unwrap_err();
    assert!(
        common::chain(&error).contains("cannot carry file descriptors"),
        "{error}"
    );
}

#[test]
fn end_of_stream_lets_the_child_finish_and_exit_cleanly() {
    for (transport, start) in both() {
        let fork = start().unwrap();
        let process = fork.process().unwrap();
        let destroyed = Arc::new(Mutex::new(false));
        let flag = destroyed.clone();
        let rpc = fork
            .rpc(add)
            .codec(Codec::Postcard)
            .on_destroy(move || *flag.lock().unwrap() = true)
            .start()
            .unwrap();
        assert_eq!(rpc.call_blocking((1, 2)).unwrap(), 3);
        drop(rpc);
        let status = process.wait().unwrap();
        assert!(status.success(), "{transport}: {status:?}");
        assert!(
            common::wait_until(Duration::from_secs(5), || *destroyed.lock().unwrap()),
            "{transport}: on_destroy ran"
        );
    }
}

// --- a process at the other end of streams this program did not make -----

/// This test program started by a command of the test's own, serving on
/// its stdin and stdout with the serve marker `marker`.
fn command_over_stdio(marker: &str) -> (std::process::Child, Fork) {
    use std::process::{Command, Stdio};
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env("ANYFORK_SERVE", marker)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    (child, Fork::new_from_streams(stdout, stdin).unwrap())
}

#[test]
fn a_process_started_by_a_command_of_yours_over_its_stdin_and_stdout() {
    let (mut child, fork) = command_over_stdio("stdio:1");
    let pid = fork.pid().unwrap();
    assert_eq!(pid, child.id(), "the pid it says (here, the same machine)");
    let error = fork.process().unwrap_err();
    assert!(matches!(error, Error::NotLocal { .. }), "{error}");
    let rpc = fork.rpc(add).codec(Codec::Cbor).start().unwrap();
    assert_eq!(rpc.call_blocking((20, 22)).unwrap(), 42);
    assert_eq!(rpc.pid().unwrap(), pid);
    drop(rpc);
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_command_whose_marker_speaks_another_protocol_version_says_so() {
    let (mut child, fork) = command_over_stdio("stdio:99");
    let error = fork.pid().unwrap_err();
    assert!(error.to_string().contains("protocol 99"), "{error}");
    assert_eq!(
        child.wait().unwrap().code(),
        Some(anyfork::EXIT_SERVE_FAILED)
    );
}

#[test]
fn a_descriptor_in_an_rpc_reply_on_pipes_fails_that_call_only() {
    fn give_fd(_: u8) -> Fd {
        Fd::from(std::os::fd::OwnedFd::from(
            std::fs::File::open("/dev/null").expect("/dev/null"),
        ))
    }
    let rpc = Fork::new_exec_piped()
        .unwrap()
        .rpc(give_fd)
        .codec(Codec::Cbor)
        .start()
        .unwrap();
    let error = rpc.call_blocking(1).unwrap_err();
    assert!(
        matches!(error, rpc::Error::Failed { .. })
            && error.to_string().contains("cannot carry file descriptors"),
        "{error}"
    );
    // The server lives on.
    let error = rpc.call_blocking(2).unwrap_err();
    assert!(matches!(error, rpc::Error::Failed { .. }), "{error}");
}

#[tokio::test]
async fn dropping_a_driven_handle_on_pipes_ends_the_child() {
    // Inside a runtime a driver task owns the connection; dropping the
    // handle must still end the child's input.
    let fork = Fork::new_exec_piped().unwrap();
    let process = fork.process().unwrap();
    let rpc = fork.rpc(add).codec(Codec::Cbor).start().unwrap();
    assert_eq!(rpc.call((1, 2)).await.unwrap(), 3);
    drop(rpc);
    let status = tokio::task::spawn_blocking(move || process.wait_timeout(Duration::from_secs(5)))
        .await
        .unwrap();
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}
