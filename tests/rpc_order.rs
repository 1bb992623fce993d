//! Hardening item 7: replies, events and `on_destroy` reach the parent's
//! code in the order the child made them (the guarantee is written down in
//! the `rpc` module's docs):
//!
//! - on a current-thread runtime exactly: a task awaiting its calls one
//!   after another, the `on_event` handler and `on_destroy` interleave as
//!   the child's messages did, in every one of many runs, also when the
//!   handle is dropped with calls still queued;
//! - on a multi-threaded runtime a handler never runs before the awaited
//!   reply that preceded its event has been taken; a future polled once and
//!   then left aside holds handlers back for at most a second.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use anyfork::Fork;
use anyfork::rpc;

static COUNT: AtomicU64 = AtomicU64::new(0);

/// The manual's example 1: an event every three requests, before the reply.
fn counted(n: u64) -> u64 {
    let count = COUNT.fetch_add(1, Ordering::SeqCst) + 1;
    if count % 3 == 0 {
        let _ = rpc::event(&count);
    }
    n
}
anyfork::rpc!(counted);

async fn counted_async(n: u64) -> u64 {
    counted(n)
}
anyfork::rpc!(async counted_async);

type Log = Arc<Mutex<Vec<String>>>;

fn push(log: &Log, line: String) {
    log.lock().unwrap().push(line);
}

/// One run: six calls awaited in order by one task, handlers logging; with
/// `drop_first` the handle is dropped before the first await.
async fn six_calls(function: &'static str, drop_first: bool) -> Vec<String> {
    let log: Log = Arc::default();
    let (destroyed_tx, destroyed) = tokio::sync::oneshot::channel();
    let events = log.clone();
    let destroy_log = log.clone();
    let rpc = Fork::new()
        .unwrap()
        .rpc(function)
        .types::<u64, u64>()
        .on_event(move |count: u64| push(&events, format!("event {count}")))
        .on_destroy(move || {
            push(&destroy_log, "destroy".into());
            let _ = destroyed_tx.send(());
        })
        .start()
        .unwrap();
    let calls: Vec<_> = (1..=6).map(|n| rpc.call(n)).collect();
    if drop_first {
        drop(rpc);
        for call in calls {
            let n = call.await.unwrap();
            push(&log, format!("reply {n}"));
        }
    } else {
        for call in calls {
            let n = call.await.unwrap();
            push(&log, format!("reply {n}"));
        }
        drop(rpc);
    }
    destroyed.await.unwrap();
    log.lock().unwrap().clone()
}

const EXPECTED: [&str; 9] = [
    "reply 1", "reply 2", "event 3", "reply 3", "reply 4", "reply 5", "event 6", "reply 6",
    "destroy",
];

#[test]
fn on_a_current_thread_runtime_the_order_is_the_childs_in_every_run() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for run in 0..25 {
        for function in ["rpc_order::counted", "rpc_order::counted_async"] {
            for drop_first in [false, true] {
                let seen = runtime.block_on(six_calls(function, drop_first));
                assert_eq!(
                    seen, EXPECTED,
                    "run {run}, {function}, handle dropped first: {drop_first}"
                );
            }
        }
    }
}

/// Records whether it was woken.
struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Sends an event after the reply to `1`, before the reply to `2`.
fn event_after_first(n: u32) -> u32 {
    if n == 2 {
        let _ = rpc::event(&"after reply 1".to_string());
    }
    n
}

/// A handle on `event_after_first` whose `on_event` logs each event.
fn logged_event_after_first() -> (rpc::Rpc<u32, u32, String>, Log) {
    let log: Log = Arc::default();
    let events = log.clone();
    let rpc = Fork::new()
        .unwrap()
        .rpc(event_after_first)
        .on_event(move |e: String| push(&events, e))
        .start()
        .unwrap();
    (rpc, log)
}

fn poll_once<F: Future + Unpin>(future: &mut F, waker: &Waker) -> Poll<F::Output> {
    Pin::new(future).poll(&mut Context::from_waker(waker))
}

#[test]
fn on_a_multi_threaded_runtime_a_handler_waits_for_the_awaited_reply_before_it() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let _inside = runtime.enter();
    for _ in 0..5 {
        let (rpc, log) = logged_event_after_first();
        // The first call is awaited by hand: polled once, so someone waits.
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(flag.clone());
        let mut first = Box::pin(rpc.call(1));
        assert!(poll_once(&mut first, &waker).is_pending());
        let second = runtime.spawn(rpc.call(2));
        // Its reply arrives (the waker says so), then the event...
        let deadline = Instant::now() + Duration::from_secs(5);
        while !flag.0.load(Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "the first reply never came");
            std::thread::sleep(Duration::from_millis(1));
        }
        // ...whose handler must wait until the reply is taken.
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            log.lock().unwrap().is_empty(),
            "on_event ran before the awaited reply before it was taken"
        );
        assert!(
            !second.is_finished(),
            "the reply after the event came first"
        );
        match poll_once(&mut first, &waker) {
            Poll::Ready(Ok(1)) => {}
            other => panic!("the first reply: {other:?}"),
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while log.lock().unwrap().is_empty() {
            assert!(Instant::now() < deadline, "the handler never ran");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(runtime.block_on(second).unwrap().unwrap(), 2);
        assert_eq!(*log.lock().unwrap(), ["after reply 1"]);
    }
}

#[test]
fn a_future_left_aside_holds_handlers_back_for_a_second_at_most() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let _inside = runtime.enter();
    let (rpc, log) = logged_event_after_first();
    let waker = Waker::from(Arc::new(Flag(AtomicBool::new(false))));
    let mut first = Box::pin(rpc.call(1));
    assert!(poll_once(&mut first, &waker).is_pending());
    // Never polled again: the event and the second reply still come.
    let started = Instant::now();
    let second = runtime.block_on(rpc.call(2)).unwrap();
    assert_eq!(second, 2);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(*log.lock().unwrap(), ["after reply 1"]);
    drop(first);
}
