//! Hardening item 15: a worker inherits its environment and working
//! directory from its template, as they were when the template started,
//! not from the caller at the moment of the call; `caller_env_and_dir`
//! (and `envs`, `current_dir`) give it the caller's, for a worker that
//! execs a program.
//!
//! Its own test binary: it changes this process's environment and
//! directory.

mod common;

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::Command;

use anyfork::Fork;
use common::read_all;

/// Execs a shell that prints a variable and its directory into the socket.
fn exec_report(socket: UnixStream, _args: anyfork::Args) -> Result<(), std::io::Error> {
    Err(Command::new("/bin/sh")
        .args(["-c", "echo \"${ANYFORK_TEST_VAR-unset}\"; pwd -P"])
        .stdout(OwnedFd::from(socket))
        .exec())
}

#[test]
fn a_worker_takes_the_callers_environment_and_directory_when_asked() {
    let started_in = std::env::current_dir().unwrap().canonicalize().unwrap();
    // The default template starts here and now.
    drop(Fork::new().unwrap());

    let dir = std::env::temp_dir().join(format!("anyfork-caller-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let dir = dir.canonicalize().unwrap();
    // SAFETY: no other thread of this test binary reads the environment now
    // (one test; anyfork's reaper thread never does).
    unsafe { std::env::set_var("ANYFORK_TEST_VAR", "set after the template started") };
    std::env::set_current_dir(&dir).unwrap();

    // Not asked: the template's environment and directory.
    let seen = read_all(Fork::new().unwrap().run(exec_report).unwrap());
    assert_eq!(seen, format!("unset\n{}\n", started_in.display()));

    // Asked: the caller's, as std::process::Command would give.
    let seen = read_all(
        Fork::new()
            .unwrap()
            .caller_env_and_dir()
            .run(exec_report)
            .unwrap(),
    );
    assert_eq!(
        seen,
        format!("set after the template started\n{}\n", dir.display())
    );

    // Or chosen one by one.
    let seen = read_all(
        Fork::new()
            .unwrap()
            .envs([("ANYFORK_TEST_VAR", "chosen")])
            .current_dir("/")
            .run(exec_report)
            .unwrap(),
    );
    assert_eq!(seen, "chosen\n/\n");

    // A directory that does not exist: the process says so and exits.
    match Fork::new()
        .unwrap()
        .current_dir("/nonexistent/anyfork")
        .run(exec_report)
    {
        Err(anyfork::Error::Refused { message, .. }) => {
            assert!(message.contains("/nonexistent/anyfork"), "{message}")
        }
        other => panic!("a missing directory: {other:?}"),
    }
    std::env::set_current_dir(&started_in).unwrap();
    let _ = std::fs::remove_dir(&dir);
}
