//! Hardening items 9 and 11: memory that messages and buffers cost.
//!
//! - A huge `buflen` is a limit on reads, not an allocation: the buffers
//!   grow as frames need.
//!
//! Its own test binary: it measures this process's peak memory.

mod common;

use anyfork::Fork;

fn double(n: u64) -> u64 {
    n * 2
}

#[test]
fn a_huge_buflen_is_not_allocated_up_front() {
    let rpc = Fork::new()
        .unwrap()
        .rpc(double)
        .buflen(u32::MAX as usize)
        .start()
        .unwrap();
    assert_eq!(rpc.call_blocking(21).unwrap(), 42);
    assert_eq!(rpc.call_blocking(1 << 40).unwrap(), 1 << 41);
    let pid = rpc.pid().expect("pid after a reply");
    let rss_kb = common::smaps_kb(pid, "Rss");
    assert!(
        rss_kb < 64 * 1024,
        "the child holds {rss_kb} kB with buflen 4 GiB"
    );
}
