//! Hardening items 4 and 6: how RPC children end.
//!
//! - Dropping the handle ends the child and reaps it on every runtime
//!   flavour, also when the runtime is not driven again.

mod common;

use std::time::Duration;

use anyfork::Fork;

fn add((a, b): (i64, i64)) -> i64 {
    a + b
}

/// Gone and reaped: no process, not even a zombie.
fn reaped(pid: u32) -> bool {
    common::state(pid).is_none()
}

fn drop_inside_block_on(runtime: tokio::runtime::Runtime, call_first: bool) {
    let fork = Fork::new().unwrap();
    let pid = fork.pid().unwrap();
    runtime.block_on(async move {
        let rpc = fork.rpc(add).start().unwrap();
        if call_first {
            assert_eq!(rpc.call((1, 2)).await.unwrap(), 3);
        }
        drop(rpc);
    });
    // The runtime lives on, but nobody drives it.
    assert!(
        common::wait_until(Duration::from_secs(3), || reaped(pid)),
        "child {pid} is still {:?}",
        common::state(pid)
    );
    drop(runtime);
}

#[test]
fn dropping_the_handle_inside_block_on_ends_the_child_current_thread() {
    for call_first in [false, true] {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        drop_inside_block_on(runtime, call_first);
    }
}

#[test]
fn dropping_the_handle_inside_block_on_ends_the_child_multi_thread() {
    for call_first in [false, true] {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        drop_inside_block_on(runtime, call_first);
    }
}

#[test]
fn dropping_the_handle_without_a_runtime_ends_the_child() {
    let fork = Fork::new().unwrap();
    let pid = fork.pid().unwrap();
    let rpc = fork.rpc(add).start().unwrap();
    assert_eq!(rpc.call_blocking((2, 2)).unwrap(), 4);
    drop(rpc);
    assert!(common::wait_until(Duration::from_secs(3), || reaped(pid)));
}
