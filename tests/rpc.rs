//! Issue 3: RPC calls, backends, events, handlers, serialisers and buffers,
//! each shown with real child processes.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyfork::Fork;
use anyfork::rpc::{self, Codec, Error, Fd, Octets};
use serde::{Deserialize, Serialize};

// --- functions the children run -------------------------------------------

fn add((a, b): (i64, i64)) -> i64 {
    a + b
}
anyfork::rpc!(add);

/// Echoes a list of octet strings (the raw default, by name).
fn echo(parts: Octets) -> Octets {
    parts
}
anyfork::rpc!(echo);

/// Sends `n` events, then answers `n`.
fn tick(n: u32) -> u32 {
    for i in 0..n {
        rpc::event(&("tick", i)).expect("event");
    }
    n
}

async fn sleep_then((ms, tag): (u64, String)) -> String {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    let _ = rpc::event(&("finished", tag.clone()));
    tag
}
anyfork::rpc!(async sleep_then);

/// Remembered by `init` from the process's arguments.
static GREETING: OnceLock<(String, usize)> = OnceLock::new();

fn remember(mut args: anyfork::Args) -> Result<(), anyfork::ArgError> {
    let word = args.string()?;
    let fd = args.fd()?;
    // Keep the descriptor open: `done` writes into it.
    let raw = std::os::fd::IntoRawFd::into_raw_fd(fd);
    GREETING.set((word, raw as usize)).ok();
    Ok(())
}
anyfork::rpc!(init remember);

fn greet(name: String) -> String {
    let (word, _) = GREETING.get().cloned().unwrap_or_default();
    format!("{word}, {name}")
}

async fn greet_async(name: String) -> String {
    greet(name)
}

/// Writes "done" into the descriptor `init` kept, after the last call.
async fn say_done() {
    if let Some((_, raw)) = GREETING.get() {
        // SAFETY: the descriptor was given up by `remember` for this use.
        let mut file =
            unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(*raw as i32) };
        let _ = file.write_all(b"done");
    }
}
anyfork::rpc!(done say_done);

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
struct Job {
    id: u32,
    name: String,
    weights: Vec<f64>,
    parent: Option<Box<Job>>,
}

fn rename(mut job: Job) -> Job {
    job.name = job.name.to_uppercase();
    job.id += 1;
    job
}

fn size(bytes: Vec<u8>) -> (usize, Vec<u8>) {
    (bytes.len(), bytes)
}

// --- 1. handles from every kind of fork, blocking and async ---------------

#[test]
fn calls_through_every_kind_of_fork() {
    let template = Fork::new().unwrap().send_arg("template");
    for (what, fork) in [
        ("new_exec", Fork::new_exec().unwrap()),
        ("default template", Fork::new().unwrap()),
        ("custom template", template.fork().unwrap()),
    ] {
        let rpc = fork.rpc(add).start().unwrap();
        assert_eq!(rpc.call_blocking((40, 2)).unwrap(), 42, "{what}");
        assert_eq!(rpc.call_blocking((-1, 1)).unwrap(), 0, "{what}");
    }
}

#[test]
fn calls_by_name_with_the_raw_default() {
    let rpc = Fork::new().unwrap().rpc("rpc::echo").start().unwrap();
    let reply = rpc
        .call_blocking(vec![b"a".to_vec(), vec![], vec![0, 1, 2]])
        .unwrap();
    assert_eq!(reply, vec![b"a".to_vec(), vec![], vec![0, 1, 2]]);
    // Typed by name too.
    let rpc = Fork::new()
        .unwrap()
        .rpc("rpc::add")
        .types::<(i64, i64), i64>()
        .start()
        .unwrap();
    assert_eq!(rpc.call_blocking((1, 2)).unwrap(), 3);
}

#[test]
fn an_unknown_name_fails_before_anything_starts() {
    match Fork::new().unwrap().rpc("rpc::no_such_function").start() {
        Err(anyfork::Error::UnknownFunction { name, .. }) => {
            assert_eq!(name, "rpc::no_such_function")
        }
        other => panic!("expected UnknownFunction, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_made_before_the_child_runs_are_queued_not_lost() {
    // Issued at once after start, before the child exists: all answered.
    let rpc = Fork::new_exec().unwrap().rpc(add).start().unwrap();
    let calls: Vec<_> = (0..200).map(|i| rpc.call((i, i))).collect();
    let mut results = Vec::new();
    for call in calls {
        results.push(call.await.unwrap());
    }
    assert_eq!(results, (0..200).map(|i| 2 * i).collect::<Vec<i64>>());
}

#[test]
fn blocking_calls_from_many_threads() {
    let rpc = Arc::new(Fork::new().unwrap().rpc(add).start().unwrap());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let rpc = rpc.clone();
            std::thread::spawn(move || {
                for i in 0..100 {
                    assert_eq!(rpc.call_blocking((t, i)).unwrap(), t + i);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

// --- 2. backends ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_async_backend_runs_calls_at_once_and_matches_replies_by_id() {
    let finished = Arc::new(Mutex::new(Vec::new()));
    let seen = finished.clone();
    let rpc = Fork::new()
        .unwrap()
        .rpc(sleep_then)
        .on_event(move |(_, tag): (String, String)| seen.lock().unwrap().push(tag))
        .start()
        .unwrap();
    let start = Instant::now();
    let (a, b, c) = tokio::join!(
        rpc.call((300, "slow".into())),
        rpc.call((200, "middle".into())),
        rpc.call((100, "fast".into()))
    );
    let elapsed = start.elapsed();
    assert_eq!(
        (a.unwrap(), b.unwrap(), c.unwrap()),
        ("slow".into(), "middle".into(), "fast".into())
    );
    assert!(
        elapsed < Duration::from_millis(550),
        "calls overlapped: {elapsed:?}"
    );
    // The job started last finished first.
    assert_eq!(*finished.lock().unwrap(), ["fast", "middle", "slow"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sync_backend_answers_one_at_a_time_in_order() {
    fn slow(ms: u64) -> u64 {
        std::thread::sleep(Duration::from_millis(ms));
        ms
    }
    let rpc = Fork::new().unwrap().rpc(slow).start().unwrap();
    let start = Instant::now();
    let (a, b) = tokio::join!(rpc.call(150), rpc.call(10));
    assert_eq!((a.unwrap(), b.unwrap()), (150, 10));
    assert!(
        start.elapsed() >= Duration::from_millis(160),
        "one at a time"
    );
}

#[test]
fn events_and_replies_arrive_in_the_order_the_child_made_them() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let seen = log.clone();
    let rpc = Fork::new()
        .unwrap()
        .rpc(tick)
        .on_event(move |(_, i): (String, u32)| seen.lock().unwrap().push(i))
        .start()
        .unwrap();
    for n in [3, 0, 5] {
        let before = log.lock().unwrap().len();
        assert_eq!(rpc.call_blocking(n).unwrap(), n);
        // Every event of this call was handled before its reply returned.
        let events: Vec<u32> = log.lock().unwrap()[before..].to_vec();
        assert_eq!(events, (0..n).collect::<Vec<_>>());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_as_a_stream_blocking_and_async() {
    let rpc = Fork::new()
        .unwrap()
        .rpc(tick)
        .event_stream::<(String, u32)>()
        .start()
        .unwrap();
    let mut events = rpc.events().unwrap();
    assert!(rpc.events().is_none(), "only once");
    assert_eq!(rpc.call(4).await.unwrap(), 4);
    for i in 0..4 {
        assert_eq!(events.next().await.unwrap().unwrap(), ("tick".into(), i));
    }
    drop(rpc);
    assert!(
        events.next().await.is_none(),
        "the stream ends with the child"
    );

    let rpc = Fork::new()
        .unwrap()
        .rpc(tick)
        .event_stream::<(String, u32)>()
        .start()
        .unwrap();
    let mut events = rpc.events().unwrap();
    let result = tokio::task::spawn_blocking(move || {
        let n = rpc.call_blocking(2).unwrap();
        let got: Vec<_> = (0..2)
            .map(|_| events.next_blocking().unwrap().unwrap().1)
            .collect();
        (n, got)
    })
    .await
    .unwrap();
    assert_eq!(result, (2, vec![0, 1]));
}

#[test]
fn flush_writes_queued_events_before_the_child_exits() {
    async fn event_flush_exit(code: i32) -> i32 {
        let _ = rpc::event(&("last words", code));
        rpc::flush();
        std::process::exit(code)
    }
    let words = Arc::new(Mutex::new(None));
    let seen = words.clone();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let result = runtime.block_on(async {
        let rpc = Fork::new()
            .unwrap()
            .rpc(event_flush_exit)
            .on_event(move |e: (String, i32)| *seen.lock().unwrap() = Some(e))
            .on_error(|_| {})
            .start()
            .unwrap();
        rpc.call(7).await
    });
    assert_eq!(*words.lock().unwrap(), Some(("last words".into(), 7)));
    match result {
        Err(Error::Ended { ending, .. }) => {
            assert_eq!(ending.status().and_then(|s| s.code()), Some(7))
        }
        other => panic!("expected Ended, got {other:?}"),
    }
}

// --- 4. handlers, init, done, the end -------------------------------------

#[test]
fn init_gets_the_process_arguments_first() {
    let (_keep, theirs) = UnixStream::pair().unwrap();
    let rpc = Fork::new()
        .unwrap()
        .send_arg("Hello")
        .send_fh(theirs)
        .rpc(greet)
        .init("rpc::remember")
        .start()
        .unwrap();
    assert_eq!(rpc.call_blocking("you".into()).unwrap(), "Hello, you");
    // And by value.
    let (_keep, theirs) = UnixStream::pair().unwrap();
    let rpc = Fork::new()
        .unwrap()
        .send_arg("Hi")
        .send_fh(theirs)
        .rpc(greet)
        .init(remember)
        .start()
        .unwrap();
    assert_eq!(rpc.call_blocking("me".into()).unwrap(), "Hi, me");
}

#[test]
fn a_failing_init_fails_every_call_with_its_message() {
    let errors = Arc::new(AtomicUsize::new(0));
    let counted = errors.clone();
    let rpc = Fork::new()
        .unwrap()
        .rpc(greet)
        .init(remember) // no arguments sent: it fails
        .on_error(move |_| {
            counted.fetch_add(1, Ordering::SeqCst);
        })
        .start()
        .unwrap();
    match rpc.call_blocking("x".into()) {
        Err(Error::Server { message, .. }) => {
            assert!(message.contains("argument 0 is missing"), "{message}")
        }
        other => panic!("expected Server, got {other:?}"),
    }
    assert_eq!(errors.load(Ordering::SeqCst), 1, "on_error ran once");
    assert!(matches!(
        rpc.call_blocking("y".into()),
        Err(Error::Server { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn done_runs_after_the_handle_is_gone_and_every_call_answered() {
    let (mut ours, theirs) = UnixStream::pair().unwrap();
    let destroyed = Arc::new(AtomicUsize::new(0));
    let flag = destroyed.clone();
    let rpc = Fork::new()
        .unwrap()
        .send_arg("Hey")
        .send_fh(theirs)
        .rpc(greet_async)
        .init(remember)
        .done("rpc::say_done")
        .on_destroy(move || {
            flag.fetch_add(1, Ordering::SeqCst);
        })
        .start()
        .unwrap();
    let pending = rpc.call("later".into());
    let answer = pending.await.unwrap();
    assert_eq!(answer, "Hey, later");
    drop(rpc);
    ours.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut said = [0u8; 4];
    ours.read_exact(&mut said).unwrap();
    assert_eq!(&said, b"done");
    assert!(common::wait_until(Duration::from_secs(5), || destroyed
        .load(Ordering::SeqCst)
        == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_handle_lets_the_child_finish_queued_calls_then_on_destroy() {
    let order = Arc::new(Mutex::new(Vec::new()));
    let destroyed = order.clone();
    let rpc = Arc::new(
        Fork::new()
            .unwrap()
            .rpc(sleep_then)
            .on_event(|_: (String, String)| {})
            .on_destroy(move || destroyed.lock().unwrap().push("destroy".to_string()))
            .start()
            .unwrap(),
    );
    let mut calls = Vec::new();
    for (ms, tag) in [(150u64, "a"), (50, "b")] {
        let (rpc, order) = (rpc.clone(), order.clone());
        calls.push(tokio::spawn(async move {
            let tag = rpc.call((ms, tag.into())).await.unwrap();
            order.lock().unwrap().push(tag);
        }));
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    drop(rpc); // the spawned calls still hold clones; the last one drops it
    for call in calls {
        call.await.unwrap();
    }
    assert!(common::wait_until(Duration::from_secs(5), || order
        .lock()
        .unwrap()
        .len()
        == 3));
    assert_eq!(*order.lock().unwrap(), ["b", "a", "destroy"]);
}

#[test]
fn on_destroy_without_a_runtime() {
    let (tx, rx) = std::sync::mpsc::channel();
    let rpc = Fork::new()
        .unwrap()
        .rpc(add)
        .on_destroy(move || tx.send(()).unwrap())
        .start()
        .unwrap();
    assert_eq!(rpc.call_blocking((1, 1)).unwrap(), 2);
    let process = rpc.process().unwrap();
    drop(rpc);
    rx.recv_timeout(Duration::from_secs(5))
        .expect("on_destroy ran");
    assert!(
        process.wait().unwrap().success(),
        "the sync backend exits normally at end-of-file"
    );
}

#[test]
fn without_on_error_errors_go_to_a_raw_on_event_as_in_perl() {
    fn die(_: u8) -> u8 {
        std::process::exit(9)
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let events = seen.clone();
    let rpc = Fork::new()
        .unwrap()
        .rpc(die)
        .on_event(move |event: Octets| events.lock().unwrap().push(event))
        .start()
        .unwrap();
    assert!(rpc.call_blocking(1).is_err());
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0][0], b"error");
    assert!(String::from_utf8_lossy(&seen[0][1]).contains("exit status 9"));
}

#[test]
fn an_event_without_a_handler_is_an_error() {
    let errors = Arc::new(Mutex::new(Vec::new()));
    let seen = errors.clone();
    let rpc = Fork::new()
        .unwrap()
        .rpc(tick)
        .on_error(move |e| seen.lock().unwrap().push(e.to_string()))
        .start()
        .unwrap();
    assert_eq!(rpc.call_blocking(1).unwrap(), 1);
    assert!(errors.lock().unwrap()[0].contains("no on_event handler"));
}

// --- 5. serialisers and typed messages -----------------------------------

#[test]
fn every_codec_carries_typed_messages() {
    let job = Job {
        id: 1,
        name: "nested".into(),
        weights: vec![0.5, 1.5],
        parent: Some(Box::new(Job {
            id: 0,
            name: "root".into(),
            weights: vec![],
            parent: None,
        })),
    };
    for codec in [Codec::Cbor, Codec::Json, Codec::Postcard] {
        let rpc = Fork::new()
            .unwrap()
            .rpc(rename)
            .codec(codec)
            .start()
            .unwrap();
        let back = rpc.call_blocking(job.clone()).unwrap();
        assert_eq!(back.name, "NESTED", "{codec}");
        assert_eq!(back.id, 2);
        assert_eq!(back.parent, job.parent);
    }
    // The raw codec refuses nested data in the parent, before sending.
    let rpc = Fork::new()
        .unwrap()
        .rpc(rename)
        .codec(Codec::Raw)
        .start()
        .unwrap();
    match rpc.call_blocking(job) {
        Err(Error::Codec { source, .. }) => assert_eq!(source.codec(), "raw"),
        other => panic!("expected a codec error, got {other:?}"),
    }
    // ... and carries strings and numbers.
    let rpc = Fork::new()
        .unwrap()
        .rpc(add)
        .codec(Codec::Raw)
        .start()
        .unwrap();
    assert_eq!(rpc.call_blocking((2, 3)).unwrap(), 5);
}

// --- 6. buffers -----------------------------------------------------------

#[test]
fn buffers_grow_from_the_smallest_sizes() {
    for (req, res) in [(10usize, 10usize), (1, 100_000), (100_000, 1)] {
        let rpc = Fork::new()
            .unwrap()
            .rpc(size)
            .buflen_req(req)
            .buflen_res(res)
            .start()
            .unwrap();
        for len in [0usize, 1, 1000, 1 << 20] {
            let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            let (n, back) = rpc.call_blocking(data.clone()).unwrap();
            assert_eq!((n, back), (len, data), "buflen_req {req}, buflen_res {res}");
        }
    }
    let rpc = Fork::new().unwrap().rpc(size).buflen(7).start().unwrap();
    assert_eq!(rpc.call_blocking(vec![1; 5000]).unwrap().0, 5000);
}

#[tokio::test(flavor = "current_thread")]
async fn the_async_reader_drains_replies_that_arrive_together() {
    // Many replies land at once while a small read buffer takes them a few
    // at a time: the driver must keep reading without a new wake-up.
    let rpc = Fork::new()
        .unwrap()
        .rpc(add)
        .buflen_res(16)
        .start()
        .unwrap();
    let calls: Vec<_> = (0..500).map(|i| rpc.call((i, 1))).collect();
    // Let the child answer them all before anything is awaited.
    std::thread::sleep(std::time::Duration::from_millis(200));
    for (i, call) in calls.into_iter().enumerate() {
        let i = i64::try_from(i).unwrap();
        let reply = tokio::time::timeout(std::time::Duration::from_secs(20), call)
            .await
            .expect("the reply was left unread");
        assert_eq!(reply.unwrap(), i + 1);
    }
}

/// Says how long its argument was, as an event and as the result.
fn announce_size(bytes: Vec<u8>) -> usize {
    let _ = anyfork::rpc::event(&bytes.len());
    bytes.len()
}

#[test]
fn a_large_request_goes_out_while_another_thread_waits_for_events() {
    // One thread waits (blocking) for an event; another sends a request
    // larger than the socket holds, which the child must read whole before
    // it can send that event. The waiting reader must not keep the rest of
    // the request from going out.
    let rpc = Fork::new()
        .unwrap()
        .rpc(announce_size)
        .codec(Codec::Postcard)
        .event_stream::<usize>()
        .start()
        .unwrap();
    let mut events = rpc.events().unwrap();
    rpc.call_blocking(vec![1]).unwrap();
    assert_eq!(events.next_blocking().unwrap().unwrap(), 1);
    let (done, finished) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let event = events.next_blocking();
        let _ = done.send(());
        event
    });
    // Let the waiter start reading first.
    std::thread::sleep(std::time::Duration::from_millis(100));
    let size = 8 << 20;
    let caller = std::thread::spawn(move || rpc.call_blocking(vec![7; size]));
    finished
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("the large request never got out");
    assert_eq!(waiter.join().unwrap().unwrap().unwrap(), size);
    assert_eq!(caller.join().unwrap().unwrap(), size);
}

// --- descriptors in calls ---------------------------------------------------

#[test]
fn descriptors_as_arguments_and_results() {
    /// Writes into the socket it gets, and returns the read end of a new pipe
    /// it has written into.
    fn swap(socket: Fd) -> (String, Fd) {
        let mut socket = UnixStream::from(socket.into_owned());
        let _ = socket.write_all(b"from the child");
        let (read, write) = rustix::pipe::pipe().unwrap();
        let _ = rustix::io::write(&write, b"through a pipe");
        ("ok".into(), Fd::new(read))
    }
    for codec in [Codec::Raw, Codec::Cbor, Codec::Json, Codec::Postcard] {
        let rpc = Fork::new().unwrap().rpc(swap).codec(codec).start().unwrap();
        let (mut ours, theirs) = UnixStream::pair().unwrap();
        let (ok, pipe) = rpc.call_blocking(Fd::new(theirs)).unwrap();
        assert_eq!(ok, "ok");
        let mut said = [0u8; 14];
        ours.read_exact(&mut said).unwrap();
        assert_eq!(&said, b"from the child", "{codec}");
        let mut text = String::new();
        std::fs::File::from(pipe.into_owned())
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "through a pipe", "{codec}");
    }
}

/// A new user's first typed call: a derived struct, no codec chosen.
#[test]
fn a_derived_struct_works_with_the_default_codec() {
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Order {
        id: u64,
        items: Vec<String>,
        note: Option<String>,
    }
    fn total(order: Order) -> (u64, usize) {
        (order.id, order.items.len())
    }
    let rpc = Fork::new().unwrap().rpc(total).start().unwrap();
    let order = Order {
        id: 7,
        items: vec!["a".into(), "b".into()],
        note: None,
    };
    assert_eq!(rpc.call_blocking(order).unwrap(), (7, 2));
    assert_eq!(format!("{:?}", Codec::TYPED_DEFAULT), "Cbor");
}

/// A blocking `pid()` while a driver task reads learns the pid when the
/// child says it, not with the next reply (it used to wait out the whole
/// timeout when no call was made).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pid_is_learned_at_once_while_a_driver_reads() {
    let template = Fork::new().unwrap();
    let rpc = template.fork().unwrap().rpc(add).start().unwrap();
    let started = std::time::Instant::now();
    let pid = tokio::task::spawn_blocking(move || rpc.pid())
        .await
        .unwrap()
        .unwrap();
    assert!(pid > 0);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}
