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

fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

async fn sleep_ms_async(ms: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    ms
}

fn killed_by_sigkill(status: std::process::ExitStatus) -> bool {
    std::os::unix::process::ExitStatusExt::signal(&status) == Some(libc::SIGKILL)
}

#[test]
fn kill_ends_the_child_and_fails_every_call_saying_so() {
    let rpc = std::sync::Arc::new(Fork::new().unwrap().rpc(sleep_ms).start().unwrap());
    assert_eq!(rpc.call_blocking(1).unwrap(), 1);
    let process = rpc.process().unwrap();
    let waiting = {
        let rpc = rpc.clone();
        std::thread::spawn(move || rpc.call_blocking(60_000))
    };
    std::thread::sleep(Duration::from_millis(100));
    let started = std::time::Instant::now();
    rpc.kill().unwrap();
    let outstanding = waiting.join().unwrap();
    assert!(
        matches!(&outstanding, Err(anyfork::rpc::Error::Killed { why, .. }) if why.contains("Rpc::kill")),
        "{outstanding:?}"
    );
    assert!(matches!(
        rpc.call_blocking(1),
        Err(anyfork::rpc::Error::Killed { .. })
    ));
    assert!(killed_by_sigkill(process.wait().unwrap()));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_timed_out_call_kills_the_child_when_asked_sync_backend() {
    // Without the option, the child computes on and the next call waits
    // behind it: it times out too.
    let patient = Fork::new().unwrap().rpc(sleep_ms).start().unwrap();
    let timeout = Duration::from_millis(100);
    assert!(matches!(
        patient.call_blocking_timeout(2_000, timeout),
        Err(anyfork::rpc::Error::Timeout { .. })
    ));
    assert!(matches!(
        patient.call_blocking_timeout(1, timeout),
        Err(anyfork::rpc::Error::Timeout { .. })
    ));

    // With it, the stuck child is killed and the caller learns why at once.
    let strict = Fork::new()
        .unwrap()
        .rpc(sleep_ms)
        .kill_on_timeout(true)
        .start()
        .unwrap();
    assert_eq!(strict.call_blocking(1).unwrap(), 1);
    let process = strict.process().unwrap();
    assert!(matches!(
        strict.call_blocking_timeout(60_000, timeout),
        Err(anyfork::rpc::Error::Timeout { .. })
    ));
    match strict.call_blocking(1) {
        Err(anyfork::rpc::Error::Killed { why, .. }) => {
            assert!(why.contains("did not answer within 100ms"), "{why}")
        }
        other => panic!("after a fatal timeout: {other:?}"),
    }
    assert!(killed_by_sigkill(process.wait().unwrap()));
}

#[tokio::test]
async fn a_timed_out_call_kills_the_child_when_asked_async() {
    let rpc = Fork::new()
        .unwrap()
        .rpc(sleep_ms_async)
        .kill_on_timeout(true)
        .start()
        .unwrap();
    assert_eq!(rpc.call(1).await.unwrap(), 1);
    let process = rpc.process().unwrap();
    let other = rpc.call(60_000);
    assert!(matches!(
        rpc.call_timeout(60_000, Duration::from_millis(100)).await,
        Err(anyfork::rpc::Error::Timeout { .. })
    ));
    assert!(matches!(
        other.await,
        Err(anyfork::rpc::Error::Killed { .. })
    ));
    assert!(killed_by_sigkill(process.wait_async().await.unwrap()));
}

#[test]
fn shutdown_lets_calls_finish_or_kills_after_the_grace() {
    // The calls are async (their futures own what they need, so the
    // handle can be given to shutdown); shutdown blocks this thread, which
    // is not one of the runtime's.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let _inside = runtime.enter();

    // Calls that finish in time: answered, and the child exits normally.
    let rpc = Fork::new().unwrap().rpc(sleep_ms).start().unwrap();
    let calls: Vec<_> = (0..3).map(|_| runtime.spawn(rpc.call(50))).collect();
    let status = rpc.shutdown(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "{status:?}");
    for call in calls {
        assert_eq!(runtime.block_on(call).unwrap().unwrap(), 50);
    }

    // A call that would take a minute: killed once the grace runs out.
    let rpc = Fork::new().unwrap().rpc(sleep_ms).start().unwrap();
    let slow = runtime.spawn(rpc.call(60_000));
    std::thread::sleep(Duration::from_millis(100));
    let started = std::time::Instant::now();
    let status = rpc.shutdown(Duration::from_millis(200)).unwrap();
    assert!(killed_by_sigkill(status), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    match runtime.block_on(slow).unwrap() {
        Err(anyfork::rpc::Error::Killed { why, .. }) => assert!(why.contains("200ms"), "{why}"),
        other => panic!("the slow call: {other:?}"),
    }
}

async fn linger() {
    tokio::time::sleep(Duration::from_secs(3)).await;
}

#[test]
fn waiting_on_a_dropped_rpcs_child_does_not_stall_the_reaper() {
    // A child that lives on for a while after its handle is dropped, which
    // the reaper watches; a thread blocks in wait() on it meanwhile.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let process = runtime.block_on(async {
        let rpc = Fork::new()
            .unwrap()
            .rpc(sleep_ms_async)
            .done(linger)
            .start()
            .unwrap();
        assert_eq!(rpc.call(1).await.unwrap(), 1);
        rpc.process().unwrap()
    });
    let waiter = std::thread::spawn(move || process.wait());
    std::thread::sleep(Duration::from_millis(100));
    // Other processes come and go: none may stay a zombie.
    let pids: Vec<u32> = (0..20)
        .map(|_| {
            let fork = Fork::new().unwrap();
            fork.pid().unwrap()
        })
        .collect();
    assert!(
        common::wait_until(Duration::from_secs(2), || pids.iter().all(|&p| reaped(p))),
        "zombies while a thread waits: {:?}",
        pids.iter().filter(|&&p| !reaped(p)).collect::<Vec<_>>()
    );
    assert!(waiter.join().unwrap().unwrap().success());
}

/// Sleeps far longer than the test: the call never returns by itself.
fn stuck(payload: Vec<u8>) -> usize {
    std::thread::sleep(std::time::Duration::from_secs(600));
    payload.len()
}

#[test]
fn a_call_that_never_reached_the_child_says_so_and_can_be_retried() {
    use anyfork::rpc::{Codec, Error};
    let rpc = Fork::new()
        .unwrap()
        .rpc(stuck)
        .codec(Codec::Raw)
        // The socket path: a large message stays partly here (through
        // shared memory it would leave whole, as a 26-byte frame).
        .shared_memory(0)
        .on_error(|_| {})
        .start()
        .unwrap();
    let process = rpc.process().unwrap();
    let call = |size: usize| {
        let rpc = rpc.clone();
        std::thread::spawn(move || rpc.call_blocking(vec![7u8; size]))
    };
    // The child takes the first call and never reads again.
    let running = call(10);
    std::thread::sleep(std::time::Duration::from_millis(200));
    // Larger than the socket holds: most of it stays here.
    let large = call(8 << 20);
    std::thread::sleep(std::time::Duration::from_millis(500));
    // Queued behind it: never sent.
    let queued = call(10);
    std::thread::sleep(std::time::Duration::from_millis(300));
    process.kill(anyfork::Signal::KILL).unwrap();
    let delivered = |result: Result<usize, Error>| match result {
        Err(Error::Ended { delivered, .. }) => delivered,
        other => panic!("expected Ended, got {other:?}"),
    };
    assert_eq!(delivered(running.join().unwrap()), Some(true));
    assert_eq!(delivered(large.join().unwrap()), Some(false));
    let queued = queued.join().unwrap();
    assert!(
        common::chain(queued.as_ref().unwrap_err()).contains("never sent"),
        "{queued:?}"
    );
    assert_eq!(delivered(queued), Some(false));
    // And a call made after the end was never sent either.
    assert_eq!(delivered(rpc.call_blocking(vec![1])), Some(false));
}

/// A synchronous child runs one call at a time, in order: when it dies,
/// the call it was running says `started: Some(true)`, the calls
/// delivered behind it `Some(false)` (they never ran: safe to send again);
/// an asynchronous child's say `None` (any may have run).
#[test]
fn a_dead_synchronous_child_tells_the_running_call_from_those_behind_it() {
    let rpc = Fork::new().unwrap().rpc(sleep_ms).start().unwrap();
    let pid = rpc.pid().unwrap();
    let calls: Vec<_> = [5_000u64, 1, 1]
        .into_iter()
        .map(|ms| {
            let rpc = rpc.clone();
            let call = std::thread::spawn(move || rpc.call_blocking(ms));
            std::thread::sleep(Duration::from_millis(50));
            call
        })
        .collect();
    // SAFETY: kill(2) of this test's child.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let started: Vec<Option<bool>> = calls
        .into_iter()
        .map(|call| match call.join().unwrap() {
            Err(anyfork::rpc::Error::Ended {
                started, delivered, ..
            }) => {
                assert_eq!(delivered, Some(true));
                started
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(started, [Some(true), Some(false), Some(false)]);

    let rpc = Fork::new().unwrap().rpc(sleep_ms_async).start().unwrap();
    let pid = rpc.pid().unwrap();
    let call = {
        let rpc = rpc.clone();
        std::thread::spawn(move || rpc.call_blocking(5_000))
    };
    std::thread::sleep(Duration::from_millis(50));
    // SAFETY: kill(2) of this test's child.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    assert!(matches!(
        call.join().unwrap(),
        Err(anyfork::rpc::Error::Ended { started: None, .. })
    ));
}
