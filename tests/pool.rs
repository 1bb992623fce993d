//! Pools: dispatch, growth and shrinking, the queue's order, retire, drop,
//! and the Perl Pool test suite's scenario.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyfork::Fork;
use anyfork::pool::{Pool, StopReason, WorkerEvent};

fn pid_and_double(n: u64) -> (u32, u64) {
    (std::process::id(), n * 2)
}

fn nap_pid(ms: u64) -> u32 {
    std::thread::sleep(Duration::from_millis(ms));
    std::process::id()
}

fn retire_every_100(n: u64) -> (u32, u64) {
    if n % 100 == 99 {
        anyfork::pool::retire().expect("retire");
    }
    (std::process::id(), n)
}

#[test]
fn blocking_calls_are_answered() {
    let pool = Fork::new()
        .unwrap()
        .pool(pid_and_double)
        .max(2)
        .build()
        .unwrap();
    for n in 0..20 {
        assert_eq!(pool.call_blocking(n).unwrap().1, n * 2);
    }
    let status = pool.status();
    assert_eq!(status.totals.calls, 20);
    // One caller at a time: one worker was enough.
    assert_eq!(status.workers.len(), 1, "{status:?}");
}

#[test]
fn the_pool_grows_to_max_under_load_and_shrinks_to_idle() {
    let pool: Pool<u64, u32> = Fork::new()
        .unwrap()
        .pool(nap_pid)
        .max(3)
        .idle(1)
        .load(1)
        .start_interval(Duration::ZERO)
        .stop_interval(Duration::from_millis(200))
        .build()
        .unwrap();
    assert!(common::wait_until(Duration::from_secs(5), || pool
        .status()
        .workers
        .iter()
        .all(|w| w.pid.is_some())
        && pool.status().workers.len() == 1));
    let threads: Vec<_> = (0..6)
        .map(|_| {
            let pool = pool.clone();
            std::thread::spawn(move || pool.call_blocking(300).unwrap())
        })
        .collect();
    let pids: std::collections::HashSet<u32> =
        threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(pids.len(), 3, "{pids:?}");
    assert!(pool.status().workers.len() <= 3);
    // Quiet: back to one, one stop per interval.
    assert!(
        common::wait_until(Duration::from_secs(5), || pool.status().workers.len() == 1),
        "{:?}",
        pool.status()
    );
}

#[tokio::test(flavor = "current_thread")]
async fn async_calls_spread_over_workers() {
    let pool = Fork::new()
        .unwrap()
        .pool(pid_and_double)
        .max(2)
        .idle(2)
        .build()
        .unwrap();
    let calls: Vec<_> = (0..200).map(|n| pool.call(n)).collect();
    let mut pids = std::collections::HashSet::new();
    for (n, call) in calls.into_iter().enumerate() {
        let (pid, doubled) = call.await.unwrap();
        assert_eq!(doubled, 2 * n as u64);
        pids.insert(pid);
    }
    assert_eq!(pids.len(), 2);
}

/// The Perl Pool test suite's scenario: a pool of 2 fed 1,000 calls with
/// load 2 and a retire every 100 calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn perl_pool_scenario_every_call_answered_once() {
    let destroyed = Arc::new(Mutex::new(false));
    let flag = destroyed.clone();
    let pool = Fork::new()
        .unwrap()
        .pool(retire_every_100)
        .max(2)
        .load(2)
        .start_interval(Duration::ZERO)
        .on_destroy(move || *flag.lock().unwrap() = true)
        .build()
        .unwrap();
    let calls: Vec<_> = (0..1000u64).map(|n| pool.call(n)).collect();
    let mut pids = std::collections::HashSet::new();
    for (n, call) in calls.into_iter().enumerate() {
        let (pid, echoed) = call.await.unwrap();
        assert_eq!(echoed, n as u64);
        pids.insert(pid);
    }
    let status = pool.status();
    assert_eq!(status.totals.calls, 1000);
    assert_eq!(status.totals.failures, 0);
    assert!(
        pids.len() >= 10,
        "retired workers were replaced: {} pids",
        pids.len()
    );
    drop(pool);
    assert!(common::wait_until(Duration::from_secs(10), || *destroyed
        .lock()
        .unwrap()));
}

#[test]
fn retire_replaces_the_worker() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    let pool = Fork::new()
        .unwrap()
        .pool(retire_every_100)
        .max(1)
        .on_worker(move |e| seen.lock().unwrap().push(e.clone()))
        .build()
        .unwrap();
    let (first, _) = pool.call_blocking(99).unwrap();
    let (second, _) = pool.call_blocking(1).unwrap();
    assert_ne!(first, second);
    assert!(common::wait_until(Duration::from_secs(5), || {
        common::has_ended(first)
    }));
    assert!(
        common::wait_until(Duration::from_secs(5), || {
            events.lock().unwrap().iter().any(|e| matches!(e, WorkerEvent::Stopped { pid, reason: Some(StopReason::Retired), .. } if *pid == first))
        }),
        "{:?}",
        events.lock().unwrap()
    );
}

#[test]
fn dropping_the_pool_finishes_calls_then_ends_workers() {
    let destroyed = Arc::new(Mutex::new(None));
    let flag = destroyed.clone();
    let pool = Fork::new()
        .unwrap()
        .pool(nap_pid)
        .max(1)
        .on_destroy(move || *flag.lock().unwrap() = Some(Instant::now()))
        .build()
        .unwrap();
    let caller = {
        let pool = pool.clone();
        std::thread::spawn(move || pool.call_blocking(200))
    };
    // The call running on its worker, whose pid is known.
    let busy = || {
        pool.status()
            .workers
            .iter()
            .find(|w| w.load == 1)
            .and_then(|w| w.pid)
    };
    assert!(common::wait_until(Duration::from_secs(5), || busy().is_some()));
    let pid = busy().unwrap();
    drop(pool);
    let answered = caller.join().unwrap().unwrap();
    assert_eq!(answered, pid);
    assert!(common::wait_until(Duration::from_secs(5), || destroyed
        .lock()
        .unwrap()
        .is_some()));
    // Exited and reaped: no zombie left.
    assert!(common::wait_until(Duration::from_secs(5), || {
        common::state(pid).is_none()
    }));
}

/// How many calls this worker has run before this one.
fn count_calls(_: u64) -> u64 {
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// One worker taking one call at a time: calls run in the order they were
/// made, through the queue.
#[tokio::test(flavor = "current_thread")]
async fn queued_calls_run_in_the_order_they_were_made() {
    let pool = Fork::new()
        .unwrap()
        .pool(count_calls)
        .max(1)
        .load(1)
        .build()
        .unwrap();
    let calls: Vec<_> = (0..50).map(|n| pool.call(n)).collect();
    assert!(pool.status().queued >= 48, "{:?}", pool.status());
    // Awaited in reverse: the order they run in is the queue's, not ours.
    let mut ran = Vec::new();
    for call in calls.into_iter().rev() {
        ran.push(call.await.unwrap());
    }
    ran.reverse();
    assert_eq!(ran, (0..50).collect::<Vec<u64>>());
}

/// Each call goes to the least-loaded worker with room.
#[test]
fn calls_go_to_the_least_loaded_worker() {
    let pool = Fork::new()
        .unwrap()
        .pool(nap_pid)
        .max(2)
        .idle(2)
        .load(3)
        .build()
        .unwrap();
    assert!(common::wait_until(Duration::from_secs(5), || {
        pool.status()
            .workers
            .iter()
            .filter(|w| w.pid.is_some())
            .count()
            == 2
    }));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let pool = pool.clone();
            let thread = std::thread::spawn(move || pool.call_blocking(300).unwrap());
            std::thread::sleep(Duration::from_millis(20));
            thread
        })
        .collect();
    let loads: Vec<usize> = pool.status().workers.iter().map(|w| w.load).collect();
    assert_eq!(loads, [2, 2], "two each, not three on one");
    let mut pids: Vec<u32> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    pids.sort();
    pids.dedup();
    assert_eq!(pids.len(), 2);
}
