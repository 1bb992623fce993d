//! The seed's examples, in `examples/`, each run as a program and checked:
//! a single worker; a pool of 10 servers accepting on one socket (1,000
//! connections, every worker served some); anyfork as a faster fork+exec;
//! worker code in the same file as main; a standalone program using
//! `early()` and `Template::here()`; the three ways of CONCEPTS; the same
//! function here and on a far side (Remote). Also shows
//! that `new_exec` works in an example binary and in the `anyfork` binary.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;

/// Builds every example once and returns the path of the named one.
fn example(name: &str) -> PathBuf {
    static BUILT: OnceLock<Vec<PathBuf>> = OnceLock::new();
    let built = BUILT.get_or_init(|| common::cargo_build(&["--examples"]));
    built
        .iter()
        .find(|p| p.file_name().is_some_and(|f| f == name))
        .unwrap_or_else(|| panic!("example {name} was not built: {built:?}"))
        .clone()
}

fn run(program: impl Into<PathBuf>, args: &[&str]) -> String {
    let program = program.into();
    let output: Output = Command::new(&program)
        .args(args)
        .output()
        .expect("run the example");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{} failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        program.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn single_worker() {
    let out = run(example("single_worker"), &[]);
    assert!(
        out.contains("sent \"hello\", got \"HELLO (from worker "),
        "{out}"
    );
    assert!(
        out.contains("sent \"worker\", got \"WORKER (from worker "),
        "{out}"
    );
}

#[test]
fn server_pool_serves_a_thousand_connections_with_every_worker() {
    let out = run(example("server_pool"), &["1000"]);
    assert!(
        out.contains("1000 connections served by 10 workers"),
        "{out}"
    );
    for id in 1..=10 {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("worker {id:2} served ")))
            .unwrap_or_else(|| panic!("no line for worker {id}: {out}"));
        let count: usize = line
            .split(' ')
            .filter_map(|w| w.parse().ok())
            .nth(1)
            .unwrap();
        assert!(count > 0, "worker {id} served nothing: {out}");
    }
}

#[test]
fn fork_exec_redirects_stdout_to_a_file_and_stderr_to_the_socket() {
    let out = run(example("fork_exec"), &[]);
    assert!(out.contains("/bin/echo hi wrote \"hi\\n\" to "), "{out}");
    assert!(
        out.contains("and \"\" to its standard error (the socket)"),
        "{out}"
    );
    assert!(
        out.contains("No such file or directory\" to its standard error (the socket)"),
        "{out}"
    );
}

#[test]
fn stingy_worker_code_in_the_same_file() {
    let out = run(example("stingy"), &[]);
    assert!(
        out.starts_with("Greetings, stingy user, from process "),
        "{out}"
    );
}

#[test]
fn standalone_uses_early_and_template_here_for_ten_workers() {
    let out = run(example("standalone"), &[]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 10, "{out}");
    assert!(
        lines[0].starts_with("worker 1 (process ") && lines[0].ends_with("prime #1 is 2"),
        "{out}"
    );
    assert!(lines[9].ends_with("prime #10 is 29"), "{out}");
}

#[test]
fn concepts_three_ways_including_new_exec_in_an_example() {
    let out = run(example("concepts"), &[]);
    assert!(out.contains("default template: process "), "{out}");
    assert_eq!(out.matches("sees 2 loaded modules").count(), 3, "{out}");
    assert!(out.contains("new_exec (pid "), "{out}");
}

// --- the RPC manual's examples ------------------------------------------------

/// Example 1 and 1a print the same thing: every error, and an event every
/// three requests, in the order the child made them.
fn check_rmdir_worker(out: &str) {
    let expected: Vec<String> = [
        "/tmp/somepath/1: No such file or directory (os error 2)",
        "/tmp/somepath/2: No such file or directory (os error 2)",
        "3 requests handled",
        "/tmp/somepath/3: No such file or directory (os error 2)",
        "/tmp/somepath/4: No such file or directory (os error 2)",
        "/tmp/somepath/5: No such file or directory (os error 2)",
        "6 requests handled",
        "/tmp/somepath/6: No such file or directory (os error 2)",
    ]
    .map(String::from)
    .to_vec();
    assert_eq!(
        out.lines().map(String::from).collect::<Vec<_>>(),
        expected,
        "{out}"
    );
}

#[test]
fn rpc_example_1_synchronous_backend() {
    check_rmdir_worker(&run(example("rpc_sync"), &[]));
}

#[test]
fn rpc_example_1a_asynchronous_backend() {
    check_rmdir_worker(&run(example("rpc_async"), &[]));
}

#[test]
fn rpc_example_2_countdowns_the_last_job_finishes_first() {
    let out = run(example("rpc_countdown"), &["100"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        &lines[..3],
        [
            "starting to count up to 3",
            "starting to count up to 2",
            "starting to count up to 1"
        ]
    );
    let finished: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("job "))
        .collect();
    assert_eq!(
        finished,
        ["job 1 finished", "job 2 finished", "job 3 finished"],
        "{out}"
    );
    // Each job's counts come before it finishes.
    for count in 1..=3 {
        let last = lines
            .iter()
            .position(|l| *l == format!("count {count} of {count}"))
            .unwrap();
        let done = lines
            .iter()
            .position(|l| *l == format!("job {count} finished"))
            .unwrap();
        assert!(last < done, "{out}");
    }
}

#[test]
fn rpc_example_3_dispatcher() {
    let out = run(example("rpc_dispatch"), &[]);
    assert_eq!(out, "4\n6\nno function div\n");
}

#[test]
fn rpc_example_4_log_forwarding() {
    let out = run(example("rpc_log"), &[]);
    // Under the child's own target, with its pid.
    assert!(
        out.contains("INFO rpc_log: starting job=backup pid="),
        "{out}"
    );
    assert!(out.contains("WARN rpc_log: nothing to do pid="), "{out}");
    assert!(!out.contains("filters this out"), "{out}");
}

/// The supervised pre-forked HTTP server: 1,000 requests from curl while a
/// worker is killed and while the pool reloads, none lost.
#[test]
fn http_server_pool_loses_no_request_to_a_killed_worker_or_a_reload() {
    let out = run(example("http_server_pool"), &[]);
    assert!(out.contains("1000 of 1000 requests answered"), "{out}");
    assert!(out.contains("(1 restart)"), "{out}");
    assert!(out.contains("every first worker replaced"), "{out}");
}

#[test]
fn remote_runs_the_same_function_here_and_on_the_far_side() {
    let out = run(example("remote"), &[]);
    assert!(
        out.contains("local: HELLO FROM THIS MACHINE (process "),
        "{out}"
    );
    for i in 0..3 {
        assert!(
            out.contains(&format!(
                "far: HELLO FROM THE OTHER SIDE, WORKER {i} (process "
            )),
            "{out}"
        );
    }
    assert!(out.contains("over one connection"), "{out}");
}
