//! Server pools: resizing, restarts with back-off, reloads, and stops that
//! end in a kill when a worker does not listen.

mod common;

use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyfork::Fork;
use anyfork::pool::ServerEvent;

/// Serves until told to stop (end-of-file on its socket).
fn polite(control: UnixStream, _: anyfork::Args) {
    let _ = std::io::Read::read(&mut &control, &mut [0u8; 1]);
}

/// Never looks at its socket.
fn stubborn(_control: UnixStream, _: anyfork::Args) {
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

/// Dies at once.
fn crashes(_control: UnixStream, _: anyfork::Args) {
    std::process::abort();
}

#[test]
fn resizing_starts_and_stops_workers() {
    let servers = Fork::new()
        .unwrap()
        .server_pool(polite)
        .workers(2)
        .start()
        .unwrap();
    assert_eq!(servers.status().serving.len(), 2);
    servers.set_workers(4);
    assert!(common::wait_until(Duration::from_secs(5), || servers
        .status()
        .serving
        .len()
        == 4));
    let before = servers.status().serving;
    servers.set_workers(1);
    assert!(common::wait_until(Duration::from_secs(5), || {
        let status = servers.status();
        status.serving.len() == 1 && status.stopping.is_empty()
    }));
    for pid in before
        .iter()
        .filter(|p| !servers.status().serving.contains(p))
    {
        assert!(common::wait_until(Duration::from_secs(5), || {
            common::state(*pid).is_none()
        }));
    }
    servers.shutdown(Duration::from_secs(5));
}

#[test]
fn a_dead_worker_is_restarted() {
    let servers = Fork::new()
        .unwrap()
        .server_pool(polite)
        .workers(2)
        .start()
        .unwrap();
    let victim = servers.status().serving[0];
    // SAFETY: kill(2) of a worker of this pool.
    unsafe { libc::kill(victim as i32, libc::SIGKILL) };
    assert!(common::wait_until(Duration::from_secs(5), || {
        let status = servers.status();
        status.restarts == 1 && status.serving.len() == 2 && !status.serving.contains(&victim)
    }));
    servers.shutdown(Duration::from_secs(5));
}

#[test]
fn workers_that_die_at_once_are_restarted_with_back_off() {
    let servers = Fork::new()
        .unwrap()
        .server_pool(crashes)
        .workers(1)
        .backoff(Duration::from_millis(50), Duration::from_secs(5))
        .start()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    // 50, 100, 200, 400, 800 ms: about six starts in 1.5 s, not hundreds.
    let restarts = servers.status().restarts;
    assert!((3..=8).contains(&restarts), "{restarts}");
    servers.shutdown(Duration::from_secs(5));
}

#[test]
fn a_reload_replaces_every_worker_after_the_new_ones_started() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    let servers = Fork::new()
        .unwrap()
        .server_pool(polite)
        .workers(2)
        .on_worker(move |e| seen.lock().unwrap().push(e.clone()))
        .start()
        .unwrap();
    let old = servers.status().serving;
    servers.reload(Fork::new().unwrap());
    assert!(common::wait_until(Duration::from_secs(5), || {
        let status = servers.status();
        status.generation == 1
            && status.serving.len() == 2
            && status.serving.iter().all(|p| !old.contains(p))
            && status.stopping.is_empty()
    }));
    let events = events.lock().unwrap().clone();
    // The new workers started before the old ones stopped.
    let first_stop = events
        .iter()
        .position(|e| matches!(e, ServerEvent::Stopped { .. }))
        .unwrap();
    let new_starts = events[..first_stop]
        .iter()
        .filter(|e| matches!(e, ServerEvent::Started { generation: 1, .. }))
        .count();
    assert_eq!(new_starts, 2, "{events:?}");
    assert!(
        events
            .iter()
            .all(|e| !matches!(e, ServerEvent::Stopped { planned: false, .. }))
    );
    servers.shutdown(Duration::from_secs(5));
}

#[test]
fn a_worker_that_ignores_the_stop_is_killed_after_the_grace() {
    let servers = Fork::new()
        .unwrap()
        .server_pool(stubborn)
        .workers(1)
        .start()
        .unwrap();
    let pid = servers.status().serving[0];
    let started = Instant::now();
    servers.shutdown(Duration::from_millis(300));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert!(common::wait_until(Duration::from_secs(5), || {
        common::state(pid).is_none()
    }));
}
