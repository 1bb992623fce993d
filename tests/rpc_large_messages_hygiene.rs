//! Issue 12, §1: shared memory leaves nothing behind. Its own test binary
//! (one test), so that the descriptors counted are this test's alone.

mod common;

use std::time::Duration;

use anyfork::Fork;
use serde_bytes::ByteBuf;

fn echo(bytes: ByteBuf) -> ByteBuf {
    bytes
}

/// Descriptors `pid` holds.
fn fds_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |dir| dir.count())
}

#[test]
fn regions_hold_no_descriptor_and_go_with_their_handle() {
    // The default templates (and their sockets) stay: made first.
    drop(Fork::new().unwrap());
    let before = common::own_fds_above_stderr();
    for round in 0..20u8 {
        let rpc = Fork::new().unwrap().rpc(echo).start().unwrap();
        let child = rpc.pid().unwrap();
        let small = ByteBuf::from(vec![round; 10]);
        assert!(rpc.call_blocking(small.clone()).unwrap() == small);
        let small_only = fds_of(child);
        let payload = ByteBuf::from(vec![round; 3 << 20]);
        assert!(rpc.call_blocking(payload.clone()).unwrap() == payload);
        // Both regions are mapped in the child; their descriptors are gone
        // (its own right after the `sendmsg` that carried it, which the
        // reply may overtake by a moment).
        assert!(
            common::wait_until(Duration::from_secs(2), || fds_of(child) == small_only),
            "round {round}: the child kept a region's descriptor: {} against {small_only}",
            fds_of(child)
        );
        drop(rpc);
        assert!(common::wait_until(Duration::from_secs(5), || {
            common::has_ended(child)
        }));
    }
    // The default template keeps a spare process (two sockets and an
    // eventfd, or not yet): no more than before, and no region.
    assert!(
        common::wait_until(Duration::from_secs(5), || {
            let now = common::own_fds_above_stderr();
            now.len() <= before.len() && !now.iter().any(|fd| fd.contains("memfd:"))
        }),
        "descriptors left: {:?} (before: {before:?})",
        common::own_fds_above_stderr()
    );
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    assert!(
        !maps.contains("memfd:anyfork-rpc"),
        "a region is still mapped"
    );
    // Exited children are reaped in batches (see the reaper).
    assert!(common::wait_until(Duration::from_secs(5), || {
        common::zombies_of(std::process::id()).is_empty()
    }));
}
