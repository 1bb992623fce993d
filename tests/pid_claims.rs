//! Hardening item 2: a process this program did not make (received with
//! `Fork::new_from_fh`) cannot make anyfork adopt, reap or signal another
//! child of the program by claiming its pid. Claims are believed only when
//! the kernel confirms the sender (`SCM_CREDENTIALS`).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::Duration;

/// Frames of the serve protocol: tag, u32 length, u32 pid.
fn pid_frame(tag: u8, pid: u32) -> Vec<u8> {
    let mut frame = vec![tag, 0, 0, 0, 4];
    frame.extend_from_slice(&pid.to_be_bytes());
    frame
}

/// A peer that answers whatever it is sent with frames claiming to be
/// `victim`, then reads until the parent closes its end.
fn liar(victim: u32) -> (UnixStream, std::thread::JoinHandle<()>) {
    let (ours, mut peer) = UnixStream::pair().unwrap();
    let thread = std::thread::spawn(move || {
        let mut frames = pid_frame(b'P', victim);
        frames.extend(pid_frame(b'S', victim));
        frames.extend(pid_frame(b'I', victim));
        let _ = peer.write_all(&frames);
        let mut sink = Vec::new();
        let _ = peer.read_to_end(&mut sink);
    });
    (ours, thread)
}

fn assert_lie_refused(result: Result<impl std::fmt::Debug, anyfork::Error>, victim: u32) {
    match result {
        Err(anyfork::Error::Protocol {
            source: anyfork::ProtocolError::WrongPid { claimed, sender },
            ..
        }) => {
            assert_eq!(claimed, victim);
            assert_eq!(
                sender,
                Some(std::process::id()),
                "the kernel names the liar"
            );
        }
        other => panic!("a false pid claim was believed: {other:?}"),
    }
}

#[test]
fn a_received_process_cannot_claim_the_pid_of_another_child() {
    let mut sleeper = Command::new("sleep").arg("60").spawn().unwrap();
    let victim = sleeper.id();

    let (socket, thread) = liar(victim);
    let run = anyfork::Fork::new_from_fh(socket).run_with_process("any::function");
    assert_lie_refused(run.map(|(_, process)| process.id()), victim);
    thread.join().unwrap();

    let (socket, thread) = liar(victim);
    let fork = anyfork::Fork::new_from_fh(socket);
    assert_lie_refused(fork.process().map(|p| p.id()), victim);
    assert!(fork.pid().is_err(), "and stays refused");
    drop(fork);
    thread.join().unwrap();

    // Nobody reaped or signalled the program's own child.
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        matches!(sleeper.try_wait(), Ok(None)),
        "the sleeper still runs and is still ours to wait for"
    );
    sleeper.kill().unwrap();
    assert!(sleeper.wait().is_ok(), "its owner reaps it, not anyfork");
}

#[test]
fn an_honest_received_process_has_its_pid_confirmed_without_being_adopted() {
    let handed = anyfork::Fork::new().unwrap().send_arg("x");
    let pid = handed.pid().unwrap();
    let fd = handed.into_fh().unwrap();
    // The same program receives it: the kernel confirms the pid, but the
    // process stays its creator's to wait for.
    let received = anyfork::Fork::new_from_fh(fd);
    assert_eq!(received.pid().unwrap(), pid);
    let process = received.process().unwrap();
    assert_eq!(process.id(), pid);
    assert!(!process.is_child());
}
