//! Issue 12, §1: large RPC messages go through memory both processes map.
//! Every codec and both backends carry messages from just over the
//! threshold to 16 MiB intact; the region is really used (the memfd is
//! mapped in parent and child), bounded, reused and returned; messages
//! that do not fit (many in flight, a small region) go through the socket;
//! processes behind streams never get a region.

mod common;

use std::time::Duration;

use anyfork::Fork;
use anyfork::rpc::{Codec, shared_memory::SPILL_AT};
use serde_bytes::ByteBuf;

fn echo_bytes(bytes: ByteBuf) -> ByteBuf {
    bytes
}

fn echo_string(text: String) -> String {
    text
}

async fn echo_bytes_async(bytes: ByteBuf) -> ByteBuf {
    bytes
}

/// Sends an event as large as the request, then replies with its length.
fn event_back(bytes: ByteBuf) -> usize {
    anyfork::rpc::event(&bytes).unwrap();
    bytes.len()
}

/// A payload whose every byte depends on its position, so that a shifted,
/// truncated or overlapped copy is caught.
fn pattern(len: usize, seed: u8) -> ByteBuf {
    ByteBuf::from(
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 16) as u8)
            .collect::<Vec<u8>>(),
    )
}

/// The RPC regions `pid` maps: (inode, resident kB) of each mapping.
fn regions(pid: u32) -> Vec<(u64, u64)> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut found: Vec<(u64, u64)> = Vec::new();
    let mut current = None;
    for line in smaps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() >= 5 && fields[0].contains('-') && !fields[0].ends_with(':') {
            current = line
                .contains("memfd:anyfork-rpc")
                .then(|| fields[4].parse::<u64>().unwrap_or(0));
            if let Some(inode) = current {
                found.push((inode, 0));
            }
        } else if let (Some(_), Some(kb)) = (current, line.strip_prefix("Rss:")) {
            if let Some(last) = found.last_mut() {
                last.1 += kb
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .unwrap_or(0);
            }
        }
    }
    found
}

/// The region inodes `pid` maps.
fn region_inodes(pid: u32) -> std::collections::BTreeSet<u64> {
    regions(pid).into_iter().map(|(inode, _)| inode).collect()
}

const SIZES: [usize; 5] = [
    SPILL_AT - 1,
    SPILL_AT + 1,
    1 << 20,
    3 * 64 * 1024 + 5,
    16 << 20,
];

#[test]
fn every_codec_carries_large_messages_intact_through_shared_memory() {
    for codec in [Codec::Raw, Codec::Cbor, Codec::Json, Codec::Postcard] {
        let rpc = Fork::new()
            .unwrap()
            .rpc(echo_bytes)
            .codec(codec)
            .start()
            .unwrap();
        let sizes: &[usize] = if codec == Codec::Json {
            // JSON writes each byte as a number: 16 MiB would be 60 MB.
            &SIZES[..4]
        } else {
            &SIZES
        };
        for (n, &size) in sizes.iter().enumerate() {
            let payload = pattern(size, n as u8);
            let back = rpc.call_blocking(payload.clone()).unwrap();
            assert!(back == payload, "{codec:?}, {size} bytes came back changed");
        }
        let child = rpc.pid().unwrap();
        let inodes = region_inodes(child);
        assert_eq!(
            regions(child).len(),
            3,
            "{codec:?}: the child maps its own region and both parts of ours"
        );
        assert_eq!(inodes.len(), 2, "{codec:?}: one region each way");
        let ours = region_inodes(std::process::id());
        assert!(
            inodes.iter().all(|inode| ours.contains(inode)),
            "{codec:?}: the parent maps both"
        );
    }
}

#[test]
fn strings_and_the_async_backend_and_events() {
    let rpc = Fork::new().unwrap().rpc(echo_string).start().unwrap();
    let text: String = (0..(2 << 20))
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    assert_eq!(rpc.call_blocking(text.clone()).unwrap(), text);

    let rpc = Fork::new().unwrap().rpc(echo_bytes_async).start().unwrap();
    let payload = pattern(5 << 20, 9);
    assert!(rpc.call_blocking(payload.clone()).unwrap() == payload);

    let (tx, rx) = std::sync::mpsc::channel();
    let rpc = Fork::new()
        .unwrap()
        .rpc(event_back)
        .on_event(move |event: ByteBuf| {
            let _ = tx.send(event);
        })
        .start()
        .unwrap();
    let payload = pattern(3 << 20, 4);
    assert_eq!(rpc.call_blocking(payload.clone()).unwrap(), payload.len());
    let event = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(event == payload, "the event came back changed");
}

#[test]
fn many_in_flight_beyond_the_region_fall_back_to_the_socket_in_order() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let rpc = Fork::new()
            .unwrap()
            .rpc(echo_bytes_async)
            // Room for three 1 MiB messages: the rest use the socket.
            .shared_memory(3 << 20)
            .start()
            .unwrap();
        let calls: Vec<_> = (0..24u8)
            .map(|n| {
                let payload = pattern((1 << 20) + n as usize * 4099, n);
                let call = rpc.call(payload.clone());
                async move { (call.await.unwrap(), payload) }
            })
            .collect();
        for (back, sent) in futures_join(calls).await {
            assert!(back == sent);
        }
    });
}

/// Awaits every future in order (no extra dependency).
async fn futures_join<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut out = Vec::new();
    let handles: Vec<_> = futures.into_iter().map(Box::pin).collect();
    for handle in handles {
        out.push(handle.await);
    }
    out
}

#[test]
fn the_region_is_bounded_reused_and_returned() {
    let rpc = Fork::new()
        .unwrap()
        .rpc(echo_bytes)
        .shared_memory(8 << 20)
        .start()
        .unwrap();
    let child = rpc.pid().unwrap();
    let payload = pattern(1 << 20, 1);
    for _ in 0..3 {
        assert!(rpc.call_blocking(payload.clone()).unwrap() == payload);
    }
    let rss = || regions(child).iter().map(|(_, kb)| kb).sum::<u64>();
    let settled = rss();
    for _ in 0..200 {
        assert!(rpc.call_blocking(payload.clone()).unwrap() == payload);
    }
    let after = rss();
    // One call at a time reuses the same chunks: the region does not grow.
    assert!(
        settled >= 2 * 1024,
        "both 1 MiB messages pass through the regions: {settled} kB"
    );
    assert_eq!(settled, after, "the regions grew from call to call");
    assert!(
        after <= 2 * (8 << 10) + 8,
        "more than both regions: {after} kB"
    );
    let inodes = region_inodes(child);
    drop(rpc);
    assert!(common::wait_until(Duration::from_secs(5), || {
        common::has_ended(child)
    }));
    assert!(
        common::wait_until(Duration::from_secs(5), || {
            let left = region_inodes(std::process::id());
            inodes.iter().all(|inode| !left.contains(inode))
        }),
        "a region outlived its handle"
    );
}

#[test]
fn turned_off_or_on_a_pair_of_streams_messages_use_the_socket() {
    let rpc = Fork::new()
        .unwrap()
        .rpc(echo_bytes)
        .shared_memory(0)
        .start()
        .unwrap();
    let payload = pattern(2 << 20, 2);
    assert!(rpc.call_blocking(payload.clone()).unwrap() == payload);
    assert!(regions(rpc.pid().unwrap()).is_empty());

    let rpc = Fork::new_exec_piped()
        .unwrap()
        .rpc(echo_bytes)
        .start()
        .unwrap();
    assert!(rpc.call_blocking(payload.clone()).unwrap() == payload);
    assert!(regions(rpc.pid().unwrap()).is_empty());
}

/// An empty message sleeps; any other comes back.
async fn slow_when_empty(bytes: ByteBuf) -> ByteBuf {
    if bytes.is_empty() {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    bytes
}

#[test]
fn a_large_reply_is_not_held_up_by_another_callers_wait() {
    // One thread waits (in a blocking read, for all callers) for a slow
    // call; another's large reply arrives meanwhile and must come back at
    // once, not when the slow one does.
    let rpc = Fork::new().unwrap().rpc(slow_when_empty).start().unwrap();
    let slow = {
        let rpc = rpc.clone();
        std::thread::spawn(move || rpc.call_blocking(ByteBuf::new()))
    };
    std::thread::sleep(Duration::from_millis(200));
    let payload = pattern(2 << 20, 5);
    for _ in 0..3 {
        let started = std::time::Instant::now();
        assert!(rpc.call_blocking(payload.clone()).unwrap() == payload);
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "a large call took {:?} while another waited",
            started.elapsed()
        );
    }
    assert!(slow.join().unwrap().unwrap().is_empty());
}

/// Requests decoded so far in this (child) process.
static DECODED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A byte string whose decoding is counted in [`DECODED`].
struct Counted(ByteBuf);

impl<'de> serde::Deserialize<'de> for Counted {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes = ByteBuf::deserialize(deserializer)?;
        DECODED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(Counted(bytes))
    }
}

impl serde::Serialize for Counted {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// How many requests were decoded when this call started; an empty
/// request first holds the child's thread for a moment.
async fn decoded_before_me(request: Counted) -> usize {
    let decoded = DECODED.load(std::sync::atomic::Ordering::SeqCst);
    if request.0.is_empty() {
        std::thread::sleep(Duration::from_millis(300));
    }
    decoded
}

#[test]
fn the_async_backend_runs_a_large_call_before_decoding_the_next() {
    // Decoding every large request that has arrived before running any
    // would hold them all (with 64 MiB in flight, out of the CPU's caches:
    // 64 calls of 1 MiB in flight ran at a third of one at a time).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let rpc = Fork::new().unwrap().rpc(decoded_before_me).start().unwrap();
        // The first call holds the child, so the next three are all there
        // when it reads again.
        let first = rpc.call(Counted(ByteBuf::new()));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let large: Vec<_> = (0..3u8)
            .map(|n| rpc.call(Counted(pattern(1 << 20, n))))
            .collect();
        assert_eq!(first.await.unwrap(), 1);
        let seen = futures_join(large).await;
        let seen: Vec<usize> = seen.into_iter().map(Result::unwrap).collect();
        assert_eq!(seen, [2, 3, 4], "requests decoded when each call started");
    });
}
