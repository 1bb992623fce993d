//! Issue item 12: bad input to a serving process (a corrupt or truncated
//! command stream, a descriptor frame without its descriptor, a length over
//! the limit, a bad serve marker) makes it exit with a logged reason, and the
//! parent gets an `Error` naming it. Never a hang, never a panic in the
//! parent.

mod common;

use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};

use anyfork::{ChildErrorKind, Error, Fork};

fn never_runs(_socket: UnixStream, _args: anyfork::Args) {
    unreachable!("a serving process given bad input must not run anything");
}

/// Sends `bytes` raw, then asks to run: expects the process to refuse with
/// a protocol error whose message contains `expected`, and to exit with
/// EXIT_SERVE_FAILED.
fn expect_refusal(fork: Fork, bytes: &[u8], shutdown: bool, expected: &str) {
    let process = fork.process().unwrap();
    fork.__send_raw(bytes).unwrap();
    if shutdown {
        fork.__shutdown_write().unwrap();
    }
    match fork.run(never_runs) {
        Err(Error::Refused {
            kind,
            message,
            process: name,
        }) => {
            assert_eq!(kind, ChildErrorKind::Protocol);
            assert!(
                message.contains(expected),
                "message {message:?} should contain {expected:?}"
            );
            assert_eq!(name.pid, Some(process.id()), "the error names the process");
        }
        other => panic!("expected a protocol refusal, got {other:?}"),
    }
    assert_eq!(
        process.wait().unwrap().code(),
        Some(anyfork::EXIT_SERVE_FAILED)
    );
}

#[test]
fn corrupt_command_stream() {
    expect_refusal(
        Fork::new().unwrap(),
        b"\x07garbage",
        false,
        "unknown frame tag 0x07",
    );
    expect_refusal(
        Fork::new_exec().unwrap(),
        b"zzzzzzzz",
        false,
        "unknown frame tag 'z'",
    );
}

#[test]
fn malformed_payloads() {
    // An eval whose target length runs past the payload.
    expect_refusal(
        Fork::new().unwrap(),
        b"e\0\0\0\x04\0\0\0\x09",
        false,
        "eval: target is cut short",
    );
    // A run with an unknown target kind.
    expect_refusal(
        Fork::new().unwrap(),
        b"x\0\0\0\x01\x05",
        false,
        "unknown target kind",
    );
    // A descriptor frame whose payload is not the marker byte.
    expect_refusal(
        Fork::new().unwrap(),
        b"h\0\0\0\x02ab",
        false,
        "single marker byte",
    );
}

#[test]
fn truncated_command_stream() {
    // A header announcing 100 bytes, then 10, then end of stream.
    let mut bytes = b"a\0\0\0\x64".to_vec();
    bytes.extend_from_slice(&[1u8; 10]);
    expect_refusal(
        Fork::new().unwrap(),
        &bytes,
        true,
        "expected 105 bytes, the stream ended after 15",
    );
    // A header cut short.
    expect_refusal(Fork::new().unwrap(), b"a\0\0", true, "truncated frame");
}

#[test]
fn descriptor_frame_without_a_descriptor() {
    expect_refusal(
        Fork::new().unwrap(),
        b"h\0\0\0\x01!",
        false,
        "should carry a file descriptor",
    );
    expect_refusal(
        Fork::new().unwrap(),
        b"f\0\0\0\x01!",
        false,
        "should carry a file descriptor",
    );
}

#[test]
fn length_prefix_over_the_limit() {
    // The default limit (1 GiB) against a 4 GiB prefix, with no data: no
    // allocation, no wait for the data.
    expect_refusal(
        Fork::new().unwrap(),
        b"a\xff\xff\xff\xff",
        false,
        "more than the limit of 1073741824",
    );
    // A configured limit, inherited by forks of the template.
    let template = Fork::new().unwrap().max_frame_len(1024);
    expect_refusal(
        template.fork().unwrap(),
        b"a\0\0\x08\0",
        false,
        "announces 2048 bytes, more than the limit of 1024",
    );
    // Within the limit is fine.
    let socket = template
        .fork()
        .unwrap()
        .send_arg(vec![0u8; 1000])
        .run(|_: UnixStream, _: anyfork::Args| {})
        .unwrap();
    drop(socket);
}

#[test]
fn a_template_that_refuses_explains_why_its_forks_never_existed() {
    let template = Fork::new().unwrap();
    let template_pid = template.pid().unwrap();
    template.__send_raw(b"\x01bad").unwrap();
    // The template exits; a fork queued afterwards never exists, and the
    // error says what the template said.
    let child = match template.fork() {
        Ok(child) => child,
        // The template may already be gone when the fork command is sent.
        Err(Error::Refused { kind, .. }) => {
            assert_eq!(kind, ChildErrorKind::Protocol);
            return;
        }
        Err(other) => panic!("unexpected {other:?}"),
    };
    match child.run(never_runs) {
        Err(Error::Ended {
            cause: Some(cause),
            process,
            ..
        }) => {
            assert!(cause.contains("unknown frame tag 0x01"), "{cause}");
            assert!(cause.contains(&template_pid.to_string()), "{cause}");
            assert_eq!(process.pid, None, "the process never existed");
        }
        other => panic!("expected Ended with the template's cause, got {other:?}"),
    }
}

#[test]
fn a_bad_serve_marker_version_is_reported_to_the_parent() {
    let fork = Fork::__spawn_with_marker("3:999").unwrap();
    let process = fork.process().unwrap();
    match fork.run(never_runs) {
        Err(Error::Refused { kind, message, .. }) => {
            assert_eq!(kind, ChildErrorKind::Protocol);
            assert!(message.contains("protocol 999"), "{message}");
        }
        other => panic!("expected Refused, got {other:?}"),
    }
    assert_eq!(
        process.wait().unwrap().code(),
        Some(anyfork::EXIT_SERVE_FAILED)
    );
}

#[test]
fn a_serve_marker_naming_a_bad_descriptor_ends_the_process_with_a_reason() {
    // The parent's view: the process ends at once with the status that says
    // the serving process gave up.
    let fork = Fork::__spawn_with_marker("77:1").unwrap();
    match fork.run(never_runs) {
        Err(error @ Error::Ended { .. }) => {
            let text = error.to_string();
            assert!(text.contains("125"), "{text}");
            assert!(text.contains("gave up"), "{text}");
        }
        other => panic!("expected Ended, got {other:?}"),
    }
    // The process's own view, on stderr, for each kind of bad marker.
    let exe = std::env::current_exe().unwrap();
    for (marker, reason) in [
        ("77:1", "descriptor 77 is not open"),
        ("0:1", "descriptor 0 is not a unix stream socket"),
        ("3", "is not FD:VERSION"),
        ("x:1", "does not name a descriptor"),
    ] {
        let output = Command::new(&exe)
            .env("ANYFORK_SERVE", marker)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(
            output.status.code(),
            Some(anyfork::EXIT_SERVE_FAILED),
            "marker {marker}"
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("bad serve marker") && stderr.contains(reason),
            "marker {marker}: {stderr}"
        );
    }
}

/// A fake serving process: the test holds the other end of the socket and
/// answers `run` with `reply`.
fn run_against_fake(reply: &[u8], close: bool) -> Result<UnixStream, Error> {
    use std::io::Write;
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    theirs.write_all(reply).unwrap();
    if close {
        drop(theirs);
    } else {
        std::mem::forget(theirs); // keep it open: the parent must not hang waiting
    }
    Fork::new_from_fh(ours).run(never_runs)
}

#[test]
fn malformed_replies_are_errors_in_the_parent() {
    let protocol = |reply: &[u8], close: bool, expected: &str| match run_against_fake(reply, close)
    {
        Err(Error::Protocol { source, .. }) => {
            assert!(
                source.to_string().contains(expected),
                "{source} should contain {expected:?}"
            )
        }
        other => panic!("reply {reply:?}: expected a protocol error, got {other:?}"),
    };
    protocol(b"Q\0\0\0\0", false, "unknown frame tag 'Q'");
    protocol(b"E\xff\xff\xff\xff", false, "more than the limit of 65536");
    protocol(b"S\0\0\0\x02ab", false, "payload must be a u32 pid");
    protocol(
        b"P\0\0\0\x04\0\0\0\x01P\0\0\0\x04\0\0\0\x02",
        false,
        "sent its pid twice",
    );
    // Truncated, then the fake goes away.
    protocol(b"S\0\0\0\x04\0\0", true, "expected 9 bytes");
    // An error frame is the process's refusal.
    match run_against_fake(b"E\0\0\0\x05\x01oops", true) {
        Err(Error::Refused { kind, message, .. }) => {
            assert_eq!(kind, ChildErrorKind::UnknownFunction);
            assert_eq!(message, "oops");
        }
        other => panic!("expected Refused, got {other:?}"),
    }
    // Silence, then end-of-file: the process ended.
    assert!(matches!(
        run_against_fake(b"", true),
        Err(Error::Ended { .. })
    ));
}

/// A function passed by value is named by its offset in this executable; a
/// serving process that runs another executable (here an example program,
/// reached through `new_from_fh`) must refuse rather than jump there.
#[test]
fn a_function_value_sent_to_another_executable_is_refused() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;

    let (ours, theirs) = UnixStream::pair().unwrap();
    let theirs_fd = theirs.as_raw_fd();
    let built = common::cargo_build(&["--example", "concepts"]);
    let other_program = built
        .iter()
        .find(|p| p.file_name().is_some_and(|f| f == "concepts"))
        .expect("the example was built");
    let mut command = Command::new(other_program);
    command.env("ANYFORK_SERVE", "3:1").stdin(Stdio::null());
    // SAFETY: dup2 is async-signal-safe; the closure touches nothing else.
    unsafe {
        command.pre_exec(move || {
            if libc::dup2(theirs_fd, 3) == 3 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let mut other = command.spawn().unwrap();
    drop(theirs);

    match Fork::new_from_fh(std::os::fd::OwnedFd::from(ours)).run(never_runs) {
        Err(Error::Refused { kind, message, .. }) => {
            assert_eq!(kind, ChildErrorKind::WrongExecutable);
            assert!(message.contains("different executable"), "{message}");
        }
        other => panic!("expected WrongExecutable, got {other:?}"),
    }
    assert_eq!(
        other.wait().unwrap().code(),
        Some(anyfork::EXIT_SERVE_FAILED)
    );
}
