//! Every failure of a remote connection is named, never a hang: a command
//! that fails (missing or non-executable program), something else
//! answering, another build, bad frames from the far side, the far side or
//! a far process dying, the connection dropping mid-call, a silent peer
//! caught by the keepalive. And a slow far process does not stall the
//! others on its connection.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::{Duration, Instant};

use anyfork::Args;
use anyfork::remote::{Error, Remote, serve_arg};

fn sh(script: &str) -> Command {
    let mut command = Command::new("sh");
    command.arg("-c").arg(script);
    command
}

fn quiet() -> anyfork::remote::Builder {
    Remote::builder().forward_stderr(false)
}

#[test]
fn a_missing_program_is_named() {
    let error = quiet()
        .command(sh("exec /nonexistent/prog --anyfork-serve=mux:1"))
        .unwrap_err();
    let text = error.to_string();
    assert!(matches!(error, Error::Ended { .. }), "{text}");
    assert!(text.contains("was not found on the far side"), "{text}");
    assert!(text.contains("/nonexistent/prog"), "stderr kept: {text}");
}

#[test]
fn a_program_that_is_not_executable_is_named() {
    let dir = std::env::temp_dir().join(format!("anyfork-noexec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("prog");
    std::fs::write(&file, b"not a program").unwrap();
    let error = quiet()
        .command(sh(&format!(
            "exec {} --anyfork-serve=mux:1",
            file.display()
        )))
        .unwrap_err();
    let text = error.to_string();
    assert!(text.contains("is not executable on the far side"), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn something_else_answering_is_named() {
    let error = quiet()
        .command(sh("echo 'Welcome to the machine'; sleep 5"))
        .unwrap_err();
    let text = error.to_string();
    assert!(matches!(error, Error::NotAnyfork { .. }), "{text}");
    assert!(text.contains("Welcome to the machine"), "{text}");
}

#[test]
fn silence_is_a_handshake_timeout() {
    let started = Instant::now();
    let error = quiet()
        .handshake_timeout(Duration::from_millis(300))
        .command(sh("sleep 30"))
        .unwrap_err();
    assert!(matches!(error, Error::Timeout { .. }), "{error}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn another_build_is_refused_naming_both_sides() {
    let mut command = Command::new(common::example_binary("concepts"));
    command.arg(serve_arg());
    let error = quiet().command(command).unwrap_err();
    let text = error.to_string();
    let Error::Skew {
        what, ours, theirs, ..
    } = &error
    else {
        panic!("not a skew: {text}");
    };
    assert_eq!(*what, "build");
    assert_ne!(ours.build_id, theirs.build_id);
    assert!(
        text.contains(&ours.build_id) && text.contains(&theirs.build_id),
        "{text}"
    );
}

/// A far side of the test's own making: says a proper hello, then `then`.
fn fake_far_side(then: &'static [u8]) -> Result<Remote, String> {
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    let hello = hello_bytes();
    std::thread::spawn(move || {
        let _ = theirs.write_all(&hello);
        let _ = theirs.write_all(then);
        // Keep reading what the parent says until it gives up.
        let _ = std::io::copy(&mut theirs, &mut std::io::sink());
    });
    let remote = quiet()
        .no_keepalive()
        .streams(ours.try_clone().unwrap(), ours)
        .map_err(|e| e.to_string())?;
    Ok(remote)
}

fn hello_bytes() -> Vec<u8> {
    let mut payload = b"anyfork-mux\n".to_vec();
    payload.extend_from_slice(&1u32.to_be_bytes());
    payload.extend_from_slice(&1u32.to_be_bytes());
    for text in [anyfork::remote::build_id(), anyfork::remote::TARGET] {
        payload.push(text.len() as u8);
        payload.extend_from_slice(text.as_bytes());
    }
    payload.extend_from_slice(&4242u32.to_be_bytes());
    payload.extend_from_slice(&[0u8; 32]);
    payload.extend_from_slice(&0u32.to_be_bytes());
    let mut frame = vec![b'H', 0, 0, 0, 0];
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&payload);
    frame
}

#[test]
fn bad_frames_from_the_far_side_end_the_connection_with_a_reason() {
    let cases: [(&[u8], &str); 3] = [
        (b"Z\0\0\0\0\0\0\0\0", "unknown frame kind 'Z'"),
        (
            b"D\0\0\0\x01\xff\xff\xff\xff",
            "more than the 65536 allowed",
        ),
        (b"X\0\0\0\0\0\0\0\x05nope!", "the far side gave up: nope!"),
    ];
    for (bytes, expected) in cases {
        let remote = fake_far_side(bytes).unwrap();
        assert_eq!(remote.far_side().pid, 4242);
        let why = remote
            .wait_lost(Duration::from_secs(10))
            .expect("the connection ends");
        assert!(why.contains(expected), "{why}");
        // A process asked for afterwards is refused by name.
        let error = remote.new_exec().unwrap_err();
        assert!(error.to_string().contains(expected), "{error}");
    }
    // A process being prepared when the connection goes hears why.
    let remote = fake_far_side(b"").unwrap();
    let fork = remote.new_exec().unwrap();
    drop(remote);
    let _ = fork;
}

fn sleepy(n: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(n));
    n
}

#[test]
fn a_far_process_dying_mid_call_fails_that_call_and_says_how() {
    let remote = common::local_remote();
    let fork = remote.new_exec().unwrap();
    let pid = fork.pid().unwrap();
    let rpc = fork.rpc(sleepy).start().unwrap();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: signalling a process of this test (on "the far side").
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    });
    let error = rpc.call_blocking(10_000).unwrap_err();
    killer.join().unwrap();
    let text = common::chain(&error);
    assert!(text.contains(&pid.to_string()), "{text}");
    // How it ended, as the far side reported it, and where.
    assert!(text.contains("signal 9"), "{text}");
    assert!(
        text.contains(&common::exe()),
        "names the connection: {text}"
    );
    assert!(
        common::wait_until(Duration::from_secs(5), || remote.exit_status(pid).is_some()),
        "the far side reports the exit"
    );
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        remote.exit_status(pid).unwrap().signal(),
        Some(libc::SIGKILL)
    );
    // The connection is fine: another process works.
    let rpc = remote.new_exec().unwrap().rpc(sleepy).start().unwrap();
    assert_eq!(rpc.call_blocking(1).unwrap(), 1);
}

#[test]
fn the_far_side_dying_fails_everything_on_it_by_name() {
    let remote = common::local_remote();
    let relay = remote.far_side().pid;
    let rpc = remote.new_exec().unwrap().rpc(sleepy).start().unwrap();
    let waiting = remote.new_exec().unwrap();
    assert_eq!(rpc.call_blocking(1).unwrap(), 1);
    // SAFETY: signalling the relay this test started.
    unsafe { libc::kill(relay as i32, libc::SIGKILL) };
    let error = rpc.call_blocking(1).unwrap_err();
    let why = remote.wait_lost(Duration::from_secs(10)).expect("lost");
    assert!(why.contains("closed the connection"), "{why}");
    assert!(why.contains("SIGKILL"), "the command's status: {why}");
    let text = common::chain(&error);
    assert!(text.contains("connection is lost"), "{text}");
    // A process still being prepared reports the reason as its answer.
    let error = waiting.pid().unwrap_err();
    assert!(
        common::chain(&error).contains("closed the connection"),
        "{error}"
    );
}

#[test]
fn a_dropped_connection_fails_calls_on_it_and_the_far_side_exits() {
    let mut far = common::CuttableFarSide::start();
    let remote = far.remote.clone();
    let fork = remote.new_exec().unwrap();
    let far_pid = fork.pid().unwrap();
    let rpc = fork.rpc(sleepy).start().unwrap();
    assert_eq!(rpc.call_blocking(1).unwrap(), 1);
    let started = Instant::now();
    let error = std::thread::scope(|scope| {
        scope.spawn(|| {
            std::thread::sleep(Duration::from_millis(300));
            far.cut();
        });
        rpc.call_blocking(60_000).unwrap_err()
    });
    assert!(started.elapsed() < Duration::from_secs(10), "no hang");
    let text = common::chain(&error);
    assert!(text.contains("connection is lost"), "{text}");
    let why = remote.wait_lost(Duration::from_secs(10)).expect("lost");
    assert!(why.contains("closed the connection"), "{why}");
    // No orphans: the relay and its worker exit (the worker is killed
    // after the grace period).
    let status = far.relay.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(common::wait_until(Duration::from_secs(10), || {
        common::has_ended(far_pid)
    }));
}

#[test]
fn the_keepalive_catches_a_silent_far_side() {
    let mut command = Command::new(common::exe());
    command.arg(serve_arg());
    let remote = Remote::builder()
        .keepalive(Duration::from_millis(100), Duration::from_millis(600))
        .command(command)
        .unwrap();
    let relay = remote.far_side().pid;
    let rpc = remote.new_exec().unwrap().rpc(sleepy).start().unwrap();
    assert_eq!(rpc.call_blocking(1).unwrap(), 1);
    // SAFETY: stopping the relay this test started (it is killed when the
    // connection is given up).
    unsafe { libc::kill(relay as i32, libc::SIGSTOP) };
    let started = Instant::now();
    let error = rpc.call_blocking(1).unwrap_err();
    let waited = started.elapsed();
    let why = remote.wait_lost(Duration::from_secs(10)).expect("lost");
    assert!(why.contains("no word from the far side"), "{why}");
    assert!(waited < Duration::from_secs(5), "{waited:?}: {error}");
    let text = common::chain(&error);
    assert!(text.contains("no word from the far side"), "{text}");
    // SAFETY: as above.
    unsafe { libc::kill(relay as i32, libc::SIGKILL) };
}

fn hog(socket: UnixStream, _: Args) {
    // Never reads: whatever is sent to it fills its window and stops there.
    std::thread::sleep(Duration::from_secs(30));
    drop(socket);
}

fn echo(mut socket: UnixStream, _: Args) -> std::io::Result<()> {
    let mut buf = [0u8; 1024];
    loop {
        let n = socket.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        socket.write_all(&buf[..n])?;
    }
}

#[test]
fn a_slow_far_process_does_not_stall_the_others() {
    let remote = common::local_remote();
    let template = remote.new_exec().unwrap();
    let mut stuck = template.fork().unwrap().run(hog).unwrap();
    let flooder = std::thread::spawn(move || {
        // Far more than the connection's buffers and the hog's window.
        let chunk = vec![7u8; 1 << 20];
        for _ in 0..64 {
            if stuck.write_all(&chunk).is_err() {
                return;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let mut socket = template.fork().unwrap().run(echo).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    for i in 0..200u32 {
        socket.write_all(&i.to_be_bytes()).unwrap();
        let mut back = [0u8; 4];
        socket.read_exact(&mut back).unwrap();
        assert_eq!(u32::from_be_bytes(back), i);
    }
    assert!(
        !flooder.is_finished(),
        "the hog never read, so its writer waits"
    );
    drop(remote);
    drop(template);
}

/// The bootstrap run by `sh -c` here, with `env` set (a fake `uname`
/// first in `PATH`, a cache directory).
fn bootstrap(env: &[(&str, String)]) -> Command {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(anyfork::remote::ship::bootstrap_script());
    for (name, value) in env {
        command.env(name, value);
    }
    command
}

#[test]
fn shipping_checks_the_far_machine_and_says_what_is_wrong() {
    let dir = std::env::temp_dir().join(format!("anyfork-ship-{}", std::process::id()));
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    // Another architecture: a `uname` that says so.
    let uname = bin.join("uname");
    std::fs::write(&uname, "#!/bin/sh\necho sparc64\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&uname, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let error = quiet()
        .ship_executable(true)
        .command(bootstrap(&[("PATH", path)]))
        .unwrap_err();
    let text = error.to_string();
    assert!(matches!(error, Error::Ship { .. }), "{text}");
    assert!(
        text.contains("sparc64") && text.contains(anyfork::remote::TARGET),
        "{text}"
    );
    // Nowhere to store it.
    let error = quiet()
        .ship_executable(true)
        .command(bootstrap(&[(
            "XDG_CACHE_HOME",
            "/proc/no-such-place".into(),
        )]))
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("cannot write to /proc/no-such-place"),
        "{error}"
    );
    // Shipped, then found in the cache.
    let cache = dir.join("cache");
    for _ in 0..2 {
        let remote = quiet()
            .ship_executable(true)
            .command(bootstrap(&[(
                "XDG_CACHE_HOME",
                cache.display().to_string(),
            )]))
            .unwrap();
        let rpc = remote.new_exec().unwrap().rpc(sleepy).start().unwrap();
        assert_eq!(rpc.call_blocking(1).unwrap(), 1);
        let relay = remote.far_side().pid;
        let exe = std::fs::read_link(format!("/proc/{relay}/exe")).unwrap();
        assert_eq!(exe, cache.join("anyfork").join(anyfork::remote::build_id()));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
