//! Pools within limits: recycling, a bounded queue, status and events,
//! live resizing, shutdown, descriptors through the pool.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyfork::Fork;
use anyfork::pool::{Error, StopReason, WorkerEvent};
use anyfork::rpc::Fd;

fn nap_pid(ms: u64) -> u32 {
    std::thread::sleep(Duration::from_millis(ms));
    std::process::id()
}

fn hog(mb: usize) -> u32 {
    std::mem::forget(vec![1u8; mb << 20]);
    std::process::id()
}

/// Reads a line from the pipe it is given.
fn read_from(fd: Fd) -> String {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::from(std::os::fd::OwnedFd::from(fd))
        .read_to_string(&mut text)
        .unwrap();
    text
}

#[test]
fn max_calls_with_jitter_recycles_workers_without_a_gap() {
    let pool = Fork::new()
        .unwrap()
        .pool(nap_pid)
        .max(1)
        .max_calls(10, 5)
        .build()
        .unwrap();
    let mut served: Vec<(u32, u32)> = Vec::new();
    for _ in 0..60 {
        let pid = pool.call_blocking(0).unwrap();
        match served.last_mut() {
            Some((last, count)) if *last == pid => *count += 1,
            _ => served.push((pid, 1)),
        }
        // A recycled worker is replaced before it stops: capacity never dips.
        let status = pool.status();
        assert!(
            status.workers.iter().any(|w| !w.leaving) || status.starting > 0,
            "{status:?}"
        );
    }
    // Every worker but the last served between 10 and 15 calls.
    for (_, count) in &served[..served.len() - 1] {
        assert!((10..=15).contains(count), "{served:?}");
    }
    assert!(served.len() >= 4, "{served:?}");
    assert_eq!(pool.status().totals.recycles as usize, served.len() - 1);
}

#[test]
fn max_rss_recycles_a_worker_that_grew() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    let pool = Fork::new()
        .unwrap()
        .pool(hog)
        .max(1)
        .max_rss(40 << 20)
        .on_worker(move |e| seen.lock().unwrap().push(e.clone()))
        .build()
        .unwrap();
    let a = pool.call_blocking(1).unwrap();
    assert_eq!(pool.call_blocking(1).unwrap(), a);
    let b = pool.call_blocking(64).unwrap();
    assert_eq!(a, b, "the call that grew it runs on it");
    let c = pool.call_blocking(1).unwrap();
    assert_ne!(b, c, "then it is recycled");
    assert!(common::wait_until(Duration::from_secs(5), || {
        events.lock().unwrap().iter().any(|e| matches!(e, WorkerEvent::Stopped { pid, reason: Some(StopReason::MaxRss), .. } if *pid == b))
    }));
}

#[test]
fn max_age_recycles_old_workers() {
    let pool = Fork::new()
        .unwrap()
        .pool(nap_pid)
        .max(1)
        .idle(1)
        .max_age(Duration::from_millis(300))
        .build()
        .unwrap();
    let first = pool.call_blocking(0).unwrap();
    std::thread::sleep(Duration::from_millis(600));
    let later = pool.call_blocking(0).unwrap();
    assert_ne!(first, later);
    assert!(pool.status().totals.recycles >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_try_call_and_makes_call_wait() {
    let pool = Fork::new()
        .unwrap()
        .pool(nap_pid)
        .max(1)
        .load(1)
        .queue_limit(2)
        .build()
        .unwrap();
    let running = pool.call(300);
    let queued: Vec<_> = (0..2).map(|_| pool.call(1)).collect();
    assert_eq!(pool.status().queued, 2);
    match pool.try_call(1) {
        Err(Error::Full { limit }) => assert_eq!(limit, 2),
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("the queue was full"),
    }
    // `call` waits for room instead, and gets its turn after the others.
    let waiting = tokio::spawn(pool.call(1));
    let blocking = tokio::task::spawn_blocking({
        let pool = pool.clone();
        move || pool.call_blocking(1)
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(pool.status().waiting_for_room, 2);
    running.await.unwrap();
    for call in queued {
        call.await.unwrap();
    }
    waiting.await.unwrap().unwrap();
    blocking.await.unwrap().unwrap();
    assert_eq!(pool.status().totals.calls, 5);
}

#[test]
fn status_events_and_live_resizing() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    let pool = Fork::new()
        .unwrap()
        .pool(nap_pid)
        .max(1)
        .idle(1)
        .stop_interval(Duration::from_millis(100))
        .on_worker(move |e| seen.lock().unwrap().push(e.clone()))
        .build()
        .unwrap();
    assert!(common::wait_until(Duration::from_secs(5), || pool
        .status()
        .workers
        .first()
        .is_some_and(|w| w.pid.is_some())));
    let status = pool.status();
    assert_eq!((status.max, status.idle, status.workers.len()), (1, 1, 1));
    assert!(status.workers[0].rss.unwrap() > 0);
    pool.set_max(3);
    pool.set_idle(3);
    assert!(common::wait_until(Duration::from_secs(5), || pool
        .status()
        .workers
        .iter()
        .filter(|w| w.pid.is_some())
        .count()
        == 3));
    let started: Vec<u32> = events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            WorkerEvent::Started { pid } => Some(*pid),
            _ => None,
        })
        .collect();
    assert_eq!(started.len(), 3);
    pool.set_idle(1);
    assert!(
        common::wait_until(Duration::from_secs(5), || pool.status().workers.len() == 1),
        "{:?}",
        pool.status()
    );
    pool.set_max(1);
    let stopped: HashMap<u32, Option<StopReason>> = events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            WorkerEvent::Stopped { pid, reason, .. } => Some((*pid, *reason)),
            _ => None,
        })
        .collect();
    assert_eq!(stopped.len(), 2, "{stopped:?}");
    assert!(stopped.values().all(|r| *r == Some(StopReason::Idle)));
}

#[test]
fn graceful_shutdown_lets_calls_finish() {
    let pool = Fork::new().unwrap().pool(nap_pid).max(2).build().unwrap();
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let pool = pool.clone();
            std::thread::spawn(move || pool.call_blocking(200))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    let refused = pool.clone();
    pool.shutdown(Duration::from_secs(5));
    for call in calls {
        assert!(call.join().unwrap().is_ok());
    }
    assert!(matches!(
        refused.call_blocking(1),
        Err(Error::ShutDown { .. })
    ));
}

#[test]
fn immediate_shutdown_fails_running_and_queued_calls() {
    let pool = Fork::new()
        .unwrap()
        .pool(nap_pid)
        .max(1)
        .load(1)
        .build()
        .unwrap();
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let pool = pool.clone();
            std::thread::spawn(move || pool.call_blocking(10_000))
        })
        .collect();
    // One running on the worker (started, pid known), two queued.
    let running = || {
        let status = pool.status();
        let busy = status
            .workers
            .iter()
            .find(|w| w.load == 1)
            .and_then(|w| w.pid);
        busy.filter(|_| status.queued == 2)
    };
    assert!(common::wait_until(Duration::from_secs(5), || running().is_some()));
    let pid = running().unwrap();
    let started = Instant::now();
    pool.shutdown_now();
    assert!(started.elapsed() < Duration::from_secs(3));
    let results: Vec<_> = calls.into_iter().map(|c| c.join().unwrap()).collect();
    let killed = results
        .iter()
        .filter(|r| matches!(r, Err(Error::ShutDown { killed: true, .. })))
        .count();
    let refused = results
        .iter()
        .filter(|r| matches!(r, Err(Error::ShutDown { killed: false, .. })))
        .count();
    assert_eq!((killed, refused), (1, 2), "{results:?}");
    assert!(common::state(pid).is_none());
}

#[test]
fn descriptors_go_through_the_pool() {
    let pool = Fork::new().unwrap().pool(read_from).max(2).build().unwrap();
    for i in 0..10 {
        let (read, write) = std::io::pipe().unwrap();
        std::io::Write::write_all(&mut &write, format!("line {i}").as_bytes()).unwrap();
        drop(write);
        assert_eq!(
            pool.call_blocking(Fd::new(read)).unwrap(),
            format!("line {i}")
        );
    }
}

/// Counts the pairs it is given; answers with its pid.
fn count_pairs(pairs: std::collections::HashMap<(u8, u8), u8>) -> (u32, usize) {
    (std::process::id(), pairs.len())
}

/// A request the codec cannot encode fails that call only: its worker
/// goes on serving.
#[test]
fn a_request_that_cannot_be_encoded_fails_alone() {
    let pool = Fork::new()
        .unwrap()
        .pool(count_pairs)
        .max(1)
        .rpc(|rpc| rpc.codec(anyfork::rpc::Codec::Json))
        .build()
        .unwrap();
    let (pid, _) = pool.call_blocking(HashMap::new()).unwrap();
    // JSON maps need string keys.
    let unencodable = HashMap::from([((1, 2), 3)]);
    match pool.call_blocking(unencodable) {
        Err(Error::Call(e)) => assert!(matches!(*e, anyfork::rpc::Error::Codec { .. }), "{e:?}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(pool.call_blocking(HashMap::new()).unwrap(), (pid, 0));
    assert_eq!(pool.status().totals.restarts, 0);
}
