//! Processes on pipes leave nothing behind: no descriptor, no zombie, no
//! process (its own binary: the test looks at the whole process).

mod common;

use std::time::Duration;

use anyfork::Fork;
use anyfork::rpc::{Codec, Rpc};

fn add((a, b): (i64, i64)) -> i64 {
    a + b
}

fn start_piped_rpc() -> Rpc<(i64, i64), i64> {
    Fork::new_exec_piped()
        .unwrap()
        .rpc(add)
        .codec(Codec::Cbor)
        .start()
        .unwrap()
}

#[test]
fn processes_and_rpc_on_pipes_leave_nothing_behind() {
    // Warm up: the reaper's and the RPC client's process-wide descriptors
    // (eventfds) stay open for the program's life.
    drop(Fork::new_exec_piped().unwrap());
    let rpc = start_piped_rpc();
    assert_eq!(rpc.call_blocking((0, 0)).unwrap(), 0);
    drop(rpc);
    std::thread::sleep(Duration::from_millis(100));
    let before = common::own_fds_above_stderr();
    let mut pids = Vec::new();
    for _ in 0..5 {
        let fork = Fork::new_exec_piped().unwrap();
        pids.push(fork.pid().unwrap());
    }
    for _ in 0..5 {
        // Dropped before its pid was read: the reaper reads it.
        drop(Fork::new_exec_piped().unwrap());
    }
    for _ in 0..5 {
        let rpc = start_piped_rpc();
        assert_eq!(rpc.call_blocking((1, 1)).unwrap(), 2);
        pids.push(rpc.pid().unwrap());
    }
    let me = std::process::id();
    assert!(
        common::wait_until(Duration::from_secs(10), || {
            pids.iter().all(|&p| common::state(p).is_none()) && common::children_of(me).is_empty()
        }),
        "processes left: {:?}",
        common::children_of(me)
    );
    assert_eq!(common::own_fds_above_stderr(), before, "descriptors left");
}
