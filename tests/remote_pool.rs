//! Pools with workers on "other machines" (this test binary in serve mode
//! behind a command): a pool forked wholly from a far template over one
//! connection, and a pool across sources (a local template and a far one,
//! each with its own max) that survives the far connection dropping.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyfork::Fork;
use anyfork::pool::{CallOptions, Death, WorkerEvent};

fn whoami(ms: u64) -> u32 {
    std::thread::sleep(Duration::from_millis(ms));
    std::process::id()
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.split(' ').nth(1)?.parse().ok()
}

#[test]
fn a_pool_of_four_far_workers_over_one_connection() {
    let remote = common::local_remote();
    let relay = remote.far_side().pid;
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    let pool = remote
        .new_exec()
        .unwrap()
        .pool(whoami)
        .max(4)
        .idle(4)
        .load(1)
        .on_worker(move |event| seen.lock().unwrap().push(event.clone()))
        .build()
        .unwrap();
    assert!(common::wait_until(Duration::from_secs(10), || {
        let status = pool.status();
        status.workers.len() == 4 && status.workers.iter().all(|w| w.pid.is_some())
    }));
    let pids: Vec<u32> = pool.status().workers.iter().filter_map(|w| w.pid).collect();
    for pid in &pids {
        // Forked by the far template: children of the one relay.
        assert_eq!(parent_of(*pid), Some(relay));
        // No memory reading of a far pid here.
        assert!(pool.status().workers.iter().all(|w| w.rss.is_none()));
    }
    // Four calls at once run on four workers.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let served: Vec<u32> = runtime.block_on(async {
        let calls: Vec<_> = (0..4).map(|_| pool.call(300)).collect();
        let mut served = Vec::new();
        for call in calls {
            served.push(call.await.unwrap());
        }
        served
    });
    let mut distinct = served.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 4, "{served:?}");
    assert!(served.iter().all(|p| pids.contains(p)));
    // An idle far worker dying is noticed (the far side reports it) and
    // replaced.
    let victim = pids[0];
    // SAFETY: a worker of this test.
    unsafe { libc::kill(victim as i32, libc::SIGKILL) };
    assert!(
        common::wait_until(Duration::from_secs(10), || {
            let status = pool.status();
            status.workers.len() == 4
                && status
                    .workers
                    .iter()
                    .all(|w| w.pid.is_some_and(|p| p != victim))
        }),
        "{:?}",
        pool.status()
    );
    let stopped = events.lock().unwrap().iter().any(|e| {
        matches!(e, WorkerEvent::Stopped { pid, death: Death::Signal(9), .. } if *pid == victim)
    });
    assert!(stopped, "{:?}", events.lock().unwrap());
    let served = pool.call_blocking(0).unwrap();
    assert!(pool.status().workers.iter().any(|w| w.pid == Some(served)));
    pool.shutdown(Duration::from_secs(5));
}

#[test]
fn a_pool_across_sources_survives_a_dropped_connection() {
    // A far side whose connection this test can cut.
    let mut far = common::CuttableFarSide::start();
    let remote = far.remote.clone();
    let pool = Fork::new()
        .unwrap()
        .pool(whoami)
        .max(1)
        .source(remote.new_exec().unwrap(), 2)
        .idle(3)
        .load(1)
        .build()
        .unwrap();
    assert!(common::wait_until(Duration::from_secs(10), || {
        let status = pool.status();
        status.workers.len() == 3 && status.workers.iter().all(|w| w.pid.is_some())
    }));
    let status = pool.status();
    assert_eq!(status.max, 3);
    let mut sources: Vec<usize> = status.workers.iter().map(|w| w.source).collect();
    sources.sort();
    assert_eq!(sources, [0, 1, 1]);
    let local_pid = status
        .workers
        .iter()
        .find(|w| w.source == 0)
        .unwrap()
        .pid
        .unwrap();
    // Three long calls: one per worker; idempotent ones are retried
    // elsewhere when their worker goes.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let results = runtime.block_on(async {
        let calls: Vec<_> = (0..3)
            .map(|_| pool.call_with(800, CallOptions::new().idempotent(true)))
            .collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
        far.cut();
        let mut results = Vec::new();
        for call in calls {
            results.push(call.await);
        }
        results
    });
    // Every call was answered, in the end by the local worker.
    for result in &results {
        assert!(result.is_ok(), "{results:?}");
    }
    assert!(results.iter().any(|r| *r.as_ref().unwrap() == local_pid));
    // The far source is down: the pool is its local part now.
    assert!(common::wait_until(Duration::from_secs(10), || pool
        .status()
        .max
        == 1));
    assert_eq!(pool.call_blocking(0).unwrap(), local_pid);
    assert!(remote.wait_lost(Duration::from_secs(10)).is_some());
    // The far side exits, leaving nothing behind.
    assert!(far.relay.wait().unwrap().success());
    pool.shutdown(Duration::from_secs(5));
}
