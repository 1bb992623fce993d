//! Hardening item 3: workers do not outlive their program.
//!
//! - An RPC worker in the middle of a long call dies within a second when
//!   its program is killed with `SIGKILL` (by default; `die_with_parent`
//!   on the builder turns it off).
//! - A plain `run` worker keeps the Perl semantics and outlives the
//!   program, unless `Fork::die_with_parent(true)` asks otherwise.
//! - The thread that created a worker may exit: the worker lives on (the
//!   kernel's parent-death signal fires for that too, and must be ignored).

mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use anyfork::Fork;

/// `0`: its pid; else spins for that many milliseconds.
fn spin(ms: u64) -> u64 {
    if ms == 0 {
        return u64::from(std::process::id());
    }
    let end = Instant::now() + Duration::from_millis(ms);
    let mut n = 0u64;
    while Instant::now() < end {
        n = n.wrapping_add(1);
    }
    n
}

fn sleep_long(_socket: UnixStream, _args: anyfork::Args) {
    std::thread::sleep(Duration::from_secs(60));
}

/// Helper mode: when ANYFORK_TEST_PARENT_DEATH is set, this ignored test
/// starts an RPC worker busy in a 60 s call, one that may outlive it, a
/// run worker and one that must die with it; prints the pids and waits to be killed.
#[test]
#[ignore = "helper for the parent death tests"]
fn parent_death_helper() {
    if std::env::var_os("ANYFORK_TEST_PARENT_DEATH").is_none() {
        return;
    }
    let busy = Fork::new().unwrap().rpc(spin).start().unwrap();
    let busy_pid = busy.call_blocking(0).unwrap();
    let free = Fork::new()
        .unwrap()
        .rpc(spin)
        .die_with_parent(false)
        .start()
        .unwrap();
    let free_pid = free.call_blocking(0).unwrap();
    let (_a, outliving) = Fork::new().unwrap().run_with_process(sleep_long).unwrap();
    let (_b, dying) = Fork::new()
        .unwrap()
        .die_with_parent(true)
        .run_with_process(sleep_long)
        .unwrap();
    std::thread::spawn(move || busy.call_blocking(60_000));
    std::thread::spawn(move || free.call_blocking(60_000));
    std::thread::sleep(Duration::from_millis(100));
    println!(
        "PIDS {busy_pid} {free_pid} {} {}",
        outliving.id(),
        dying.id()
    );
    std::io::stdout().flush().unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn workers_die_with_a_killed_program_unless_told_otherwise() {
    let (mut helper, pids) =
        common::start_helper("parent_death_helper", "ANYFORK_TEST_PARENT_DEATH");
    let [busy, free, outliving, dying] = pids[..] else {
        panic!("the helper reports its workers: {pids:?}");
    };
    for pid in [busy, free, outliving, dying] {
        assert!(
            !common::has_ended(pid),
            "{pid} runs before the program dies"
        );
    }
    helper.kill().unwrap(); // SIGKILL
    helper.wait().unwrap();
    let killed_at = Instant::now();
    let ended = common::wait_until(Duration::from_secs(1), || {
        common::has_ended(busy) && common::has_ended(dying)
    });
    assert!(
        ended,
        "busy RPC worker ended: {}, run worker asked to die: {}, after {:?}",
        common::has_ended(busy),
        common::has_ended(dying),
        killed_at.elapsed()
    );
    assert!(
        !common::has_ended(free),
        "die_with_parent(false) outlives it"
    );
    assert!(!common::has_ended(outliving), "a run worker outlives it");
    for pid in [free, outliving] {
        // SAFETY: plain kill of a process this test made (via its helper).
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
}

#[test]
fn a_worker_outlives_the_thread_that_created_it() {
    // new_exec from a thread: the worker's parent thread is that thread.
    let (exec, forked) = std::thread::spawn(|| {
        let exec = Fork::new_exec().unwrap().rpc(spin).start().unwrap();
        let forked = Fork::new().unwrap().rpc(spin).start().unwrap();
        let pids = (
            exec.call_blocking(0).unwrap(),
            forked.call_blocking(0).unwrap(),
        );
        assert!(pids.0 > 0 && pids.1 > 0);
        (exec, forked)
    })
    .join()
    .unwrap();
    // The thread has exited; the kernel told the workers, which ignored it.
    std::thread::sleep(Duration::from_millis(200));
    assert!(exec.call_blocking(1).unwrap() > 0);
    assert!(forked.call_blocking(1).unwrap() > 0);
}
