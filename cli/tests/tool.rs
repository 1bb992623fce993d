//! The `anyfork` tool itself: the tour runs every scenario, the tool is
//! linked with the static unwinder, and its command line says what it takes.

use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_anyfork"))
        .args(args)
        .output()
        .expect("run the anyfork tool")
}

fn stdout_of(args: &[&str]) -> String {
    let output = run(args);
    assert!(
        output.status.success(),
        "anyfork {args:?} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn new_exec_in_the_anyfork_binary() {
    let out = stdout_of(&["tour"]);
    assert!(out.contains("new_exec"), "{out}");
    // The RPC part: replies, events, order, failures and descriptors.
    for expected in [
        "rmdir /tmp/anyfork-tour-",
        "No such file or directory",
        "event: 3 requests handled",
        "84 / 2 = 42 (same child)",
        "panicked: attempt to divide by zero",
        "a socket sent as an argument: \"written by the child into the parent's socket\"",
        "a pipe returned as a result: \"read by the parent from the child's pipe\"",
        "did not answer within 50ms",
        "killed by signal 9",
        // The pool part: retired workers replaced, a dead worker's
        // queued calls answered.
        "sum of squares 20540, served by",
        "was killed by signal 9 (SIGKILL)",
        "the 3 calls queued behind it: answered by its replacement",
    ] {
        assert!(out.contains(expected), "{expected:?} missing from:\n{out}");
    }
    let position = |text: &str| out.find(text).unwrap_or_else(|| panic!("{text:?} missing"));
    assert!(position("job 1 finished") < position("job 2 finished"));
    assert!(position("job 2 finished") < position("job 3 finished"));
}

#[test]
fn the_anyfork_binary_does_not_load_libgcc_s() {
    let output = Command::new(env!("CARGO_BIN_EXE_anyfork"))
        .env("LD_TRACE_LOADED_OBJECTS", "1")
        .output()
        .expect("run the loader's listing");
    assert!(output.status.success(), "{output:?}");
    let objects = String::from_utf8_lossy(&output.stdout);
    assert!(objects.contains("libc.so"), "libc stays shared: {objects}");
    assert!(!objects.contains("libgcc_s"), "{objects}");
}

#[test]
fn help_and_bad_arguments_are_answered() {
    let help = stdout_of(&["--help"]);
    for expected in ["tour", "bench"] {
        assert!(help.contains(expected), "{help}");
    }
    let bench_help = stdout_of(&["bench", "--help"]);
    for expected in [
        "spawn",
        "rpc",
        "pool",
        "soak",
        "--quick",
        "--json",
        "--pin",
        "--no-perl",
    ] {
        assert!(bench_help.contains(expected), "{bench_help}");
    }
    let wrong = run(&["bench", "--fast"]);
    assert!(!wrong.status.success());
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(stderr.contains("--fast"), "{stderr}");
}
