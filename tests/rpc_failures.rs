//! Issue 3, item 7: what the Perl module lacks. A panic fails one call; a
//! child that dies fails every outstanding call, naming how it died;
//! timeouts and cancelling; `tracing` events from the child reach the
//! parent's subscriber.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyfork::rpc::{Codec, Error};
use anyfork::{Fork, Signal};

fn panicky(n: u32) -> u32 {
    if n == 13 {
        panic!("unlucky {n}");
    }
    n
}

async fn panicky_async(n: u32) -> u32 {
    if n == 13 {
        panic!("unlucky {n}");
    }
    n
}

fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

async fn sleep_ms_async(ms: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    ms
}

fn exit_with(code: i32) -> i32 {
    std::process::exit(code)
}

fn check_panic(result: Result<u32, Error>) {
    match result {
        Err(Error::Failed {
            message,
            function,
            process,
        }) => {
            assert!(message.contains("unlucky 13"), "{message}");
            assert!(function.contains("panicky"), "{function}");
            assert!(process.pid.is_some());
        }
        other => panic!("expected Failed, got {other:?}"),
    }
}

#[test]
fn a_panic_fails_that_call_only_sync() {
    let rpc = Fork::new().unwrap().rpc(panicky).start().unwrap();
    assert_eq!(rpc.call_blocking(1).unwrap(), 1);
    check_panic(rpc.call_blocking(13));
    assert_eq!(rpc.call_blocking(2).unwrap(), 2, "the next call works");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_fails_that_call_only_async() {
    let rpc = Fork::new().unwrap().rpc(panicky_async).start().unwrap();
    let (a, b, c) = tokio::join!(rpc.call(1), rpc.call(13), rpc.call(3));
    assert_eq!(a.unwrap(), 1);
    check_panic(b);
    assert_eq!(c.unwrap(), 3);
    assert_eq!(rpc.call(4).await.unwrap(), 4);
}

#[test]
fn a_child_that_exits_fails_every_outstanding_call_with_its_status() {
    let errors = Arc::new(Mutex::new(Vec::new()));
    let seen = errors.clone();
    let rpc = Arc::new(
        Fork::new()
            .unwrap()
            .rpc(exit_with)
            .on_error(move |e| seen.lock().unwrap().push(e.to_string()))
            .start()
            .unwrap(),
    );
    match rpc.call_blocking(3) {
        Err(Error::Ended {
            ending,
            outstanding,
            ..
        }) => {
            assert_eq!(ending.status().and_then(|s| s.code()), Some(3));
            assert_eq!(outstanding, 1);
        }
        other => panic!("expected Ended, got {other:?}"),
    }
    assert!(errors.lock().unwrap()[0].contains("exit status 3"));
    // Later calls fail at once, naming the same end.
    assert!(matches!(rpc.call_blocking(0), Err(Error::Ended { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_child_fails_every_outstanding_call_and_nothing_hangs() {
    let rpc = Arc::new(
        Fork::new()
            .unwrap()
            .rpc(sleep_ms_async)
            .on_error(|_| {})
            .start()
            .unwrap(),
    );
    // Make sure the child is running and its pid known.
    assert_eq!(rpc.call(1).await.unwrap(), 1);
    let process = rpc.process().unwrap();
    let calls: Vec<_> = (0..5)
        .map(|_| {
            let rpc = rpc.clone();
            tokio::spawn(async move { rpc.call(60_000).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    process.kill(Signal::KILL).unwrap();
    for call in calls {
        let result = tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .expect("no call hangs")
            .unwrap();
        match result {
            Err(Error::Ended { ending, .. }) => {
                assert_eq!(
                    std::os::unix::process::ExitStatusExt::signal(&ending.status().unwrap()),
                    Some(libc::SIGKILL)
                );
            }
            other => panic!("expected Ended, got {other:?}"),
        }
    }
}

#[test]
fn a_blocking_timeout_gives_up_and_the_handle_goes_on() {
    let rpc = Fork::new().unwrap().rpc(sleep_ms_async).start().unwrap();
    let start = Instant::now();
    match rpc.call_blocking_timeout(10_000, Duration::from_millis(100)) {
        Err(Error::Timeout { timeout, .. }) => assert_eq!(timeout, Duration::from_millis(100)),
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(start.elapsed() < Duration::from_secs(2));
    // The async backend aborted the call: the next one answers at once.
    let start = Instant::now();
    assert_eq!(rpc.call_blocking(1).unwrap(), 1);
    assert!(start.elapsed() < Duration::from_secs(2));
    // With the sync backend the late reply is ignored when it comes.
    let rpc = Fork::new().unwrap().rpc(sleep_ms).start().unwrap();
    assert!(matches!(
        rpc.call_blocking_timeout(300, Duration::from_millis(50)),
        Err(Error::Timeout { .. })
    ));
    assert_eq!(rpc.call_blocking(5).unwrap(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_call_cancels_it_and_async_timeouts() {
    let rpc = Fork::new().unwrap().rpc(sleep_ms_async).start().unwrap();
    tokio::select! {
        _ = rpc.call(10_000) => panic!("cannot finish"),
        () = tokio::time::sleep(Duration::from_millis(50)) => {}
    }
    match rpc.call_timeout(10_000, Duration::from_millis(50)).await {
        Err(Error::Timeout { .. }) => {}
        other => panic!("expected Timeout, got {other:?}"),
    }
    let start = Instant::now();
    assert_eq!(rpc.call(2).await.unwrap(), 2);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "cancelled calls do not hold up others"
    );
}

// --- tracing across processes ----------------------------------------------

/// A subscriber that records events' targets, levels and fields.
#[derive(Default, Clone)]
struct Recorder {
    events: Arc<Mutex<Vec<String>>>,
}

impl tracing::Subscriber for Recorder {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        struct Fields(String);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.push_str(&format!(" {}={value:?}", field.name()));
            }
        }
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        let m = event.metadata();
        self.events
            .lock()
            .unwrap()
            .push(format!("{} {}{}", m.level(), m.target(), fields.0));
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

fn logs(n: u32) -> u32 {
    tracing::info!(n, "working on {n}");
    tracing::warn!("careful");
    tracing::trace!("too fine to forward");
    n
}

#[test]
fn tracing_events_in_the_child_reach_the_parents_subscriber() {
    let recorder = Recorder::default();
    let events = recorder.events.clone();
    let subscriber = RecorderAtInfo(recorder);
    let pid = tracing::subscriber::with_default(subscriber, || {
        let rpc = Fork::new().unwrap().rpc(logs).start().unwrap();
        assert_eq!(rpc.call_blocking(5).unwrap(), 5);
        rpc.pid().unwrap()
    });
    let events = events.lock().unwrap();
    // Under the child's own target (this test binary's crate), with its pid.
    let forwarded: Vec<&String> = events
        .iter()
        .filter(|e| e.contains(&format!("pid={pid}")))
        .collect();
    assert_eq!(forwarded.len(), 2, "info and warn, not trace: {events:?}");
    assert!(
        forwarded[0].starts_with("INFO rpc_failures "),
        "{forwarded:?}"
    );
    assert!(forwarded[0].contains("working on 5 n=5"), "{forwarded:?}");
    assert!(
        forwarded[1].starts_with("WARN rpc_failures ") && forwarded[1].contains("careful"),
        "{forwarded:?}"
    );
}

/// The recorder, enabling INFO and above (so the child forwards those).
struct RecorderAtInfo(Recorder);

impl tracing::Subscriber for RecorderAtInfo {
    fn enabled(&self, m: &tracing::Metadata<'_>) -> bool {
        *m.level() <= tracing::Level::INFO
    }
    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::INFO)
    }
    fn new_span(&self, a: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        self.0.new_span(a)
    }
    fn record(&self, i: &tracing::span::Id, r: &tracing::span::Record<'_>) {
        self.0.record(i, r)
    }
    fn record_follows_from(&self, a: &tracing::span::Id, b: &tracing::span::Id) {
        self.0.record_follows_from(a, b)
    }
    fn event(&self, e: &tracing::Event<'_>) {
        self.0.event(e)
    }
    fn enter(&self, i: &tracing::span::Id) {
        self.0.enter(i)
    }
    fn exit(&self, i: &tracing::span::Id) {
        self.0.exit(i)
    }
}

fn add((a, b): (i64, i64)) -> i64 {
    a + b
}
anyfork::rpc!(add);

#[test]
fn arguments_the_child_cannot_decode_fail_that_call() {
    let rpc = Fork::new()
        .unwrap()
        .rpc("rpc_failures::add")
        .types::<String, i64>()
        .start()
        .unwrap();
    match rpc.call_blocking("not a pair".into()) {
        Err(Error::Failed { message, .. }) => {
            assert!(message.contains("cannot decode the arguments"), "{message}")
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    let rpc = Fork::new()
        .unwrap()
        .rpc("rpc_failures::add")
        .types::<(i64, i64), i64>()
        .start()
        .unwrap();
    assert_eq!(rpc.call_blocking((1, 2)).unwrap(), 3);
}

/// Half of its results are something the raw codec cannot carry.
fn maybe(n: u32) -> Option<u32> {
    (n % 2 == 0).then_some(n)
}

async fn maybe_async(n: u32) -> Option<u32> {
    maybe(n)
}

fn check_unencodable(result: Result<Option<u32>, Error>) {
    match result {
        Err(Error::Failed { message, .. }) => {
            assert!(message.contains("cannot encode the result"), "{message}")
        }
        other => panic!("expected Failed, got {other:?}"),
    }
}

#[test]
fn a_result_the_child_cannot_encode_fails_that_call_sync() {
    let rpc = Fork::new()
        .unwrap()
        .rpc(maybe)
        .codec(Codec::Raw)
        .start()
        .unwrap();
    check_unencodable(rpc.call_blocking(1));
    assert_eq!(rpc.call_blocking(2).unwrap(), Some(2));
}

#[tokio::test(flavor = "current_thread")]
async fn a_result_the_child_cannot_encode_fails_that_call_async() {
    let rpc = Fork::new()
        .unwrap()
        .rpc(maybe_async)
        .codec(Codec::Raw)
        .start()
        .unwrap();
    let (odd, even) = (rpc.call(1), rpc.call(4));
    check_unencodable(odd.await);
    assert_eq!(even.await.unwrap(), Some(4));
}

#[test]
fn a_request_over_the_childs_limit_stops_its_server() {
    fn length(bytes: Vec<u8>) -> usize {
        bytes.len()
    }
    let rpc = Fork::new()
        .unwrap()
        .rpc(length)
        .max_frame_len(100)
        .on_error(|_| {})
        .start()
        .unwrap();
    assert_eq!(rpc.call_blocking(vec![0; 10]).unwrap(), 10);
    match rpc.call_blocking(vec![0; 1000]) {
        Err(Error::Server { message, .. }) => {
            assert!(message.contains("more than the limit of 100"), "{message}")
        }
        other => panic!("expected Server, got {other:?}"),
    }
}

/// Sends an event though the parent has no handler for it, then answers.
fn event_nobody_handles(n: u32) -> u32 {
    let _ = anyfork::rpc::event(&n);
    n
}

#[test]
fn without_on_error_an_error_its_callers_got_is_logged_quietly() {
    let recorder = Recorder::default();
    let events = recorder.events.clone();
    let ours = |events: &[String], level: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e.starts_with(&format!("{level} anyfork::rpc")))
            .cloned()
            .collect()
    };
    tracing::subscriber::with_default(recorder, || {
        // The child exits in the middle of the call: the caller is told, so
        // the log only mentions it at debug level.
        let rpc = Fork::new()
            .unwrap()
            .rpc(exit_with)
            .codec(Codec::Cbor)
            .start()
            .unwrap();
        assert!(matches!(rpc.call_blocking(3), Err(Error::Ended { .. })));
    });
    {
        let events = events.lock().unwrap();
        assert_eq!(ours(&events, "ERROR"), Vec::<String>::new(), "{events:?}");
        assert_eq!(ours(&events, "DEBUG").len(), 1, "{events:?}");
    }
    events.lock().unwrap().clear();
    tracing::subscriber::with_default(
        Recorder {
            events: events.clone(),
        },
        || {
            // An event with no handler concerns no call: nobody else is told.
            let rpc = Fork::new()
                .unwrap()
                .rpc(event_nobody_handles)
                .codec(Codec::Cbor)
                .start()
                .unwrap();
            assert_eq!(rpc.call_blocking(5).unwrap(), 5);
        },
    );
    let events = events.lock().unwrap();
    let errors = ours(&events, "ERROR");
    assert_eq!(errors.len(), 1, "{events:?}");
    assert!(errors[0].contains("no on_event handler"), "{errors:?}");
}
