use std::os::fd::OwnedFd;

use super::*;

/// A region and the peer's view of it.
fn pair(chunks: u64) -> (Outgoing, Incoming) {
    let out = Outgoing::create(chunks * CHUNK as u64).unwrap();
    let incoming = peer_of(&out);
    (out, incoming)
}

/// The peer's view of a region, from its announcement.
fn peer_of(out: &Outgoing) -> Incoming {
    let fd: OwnedFd = out.take_announcement().unwrap();
    assert!(out.take_announcement().is_none(), "announced once");
    Incoming::map(&fd, out.region_len(), 1 << 30).unwrap()
}

#[test]
fn reservations_keep_what_they_filled_until_the_peer_releases_it() {
    let (out, incoming) = pair(8);
    let first = out.reserve(1).unwrap();
    assert_eq!(
        first.capacity(),
        8 * CHUNK,
        "the longest free run: all of it"
    );
    assert!(out.write(&first, 0, &[1; 100_000]));
    let (offset, len) = out.finish(first, 100_000);
    assert_eq!((offset, len), (0, 100_000));
    assert_eq!(out.chunks_in_use(), 2, "the unused tail went back");
    let second = out.reserve(1).unwrap();
    assert_eq!(second.capacity(), 6 * CHUNK);
    let (offset2, len2) = out.finish(second, 10);
    assert_eq!(offset2, 2 * CHUNK as u64);
    // The peer reads and releases the first message.
    let (o, l) = incoming.check(offset, len).unwrap();
    assert!(incoming.payload(o, l).iter().all(|&b| b == 1));
    incoming.release(o, l);
    assert_eq!(out.chunks_in_use(), 3, "taken back only when reserving");
    let third = out.reserve(1).unwrap();
    assert_eq!(out.chunks_in_use(), 1 + 5, "the first two chunks came back");
    out.cancel(third);
    assert_eq!(out.chunks_in_use(), 1);
    out.forget(offset2, len2);
    assert_eq!(out.chunks_in_use(), 0);
}

#[test]
fn a_full_region_reserves_nothing_and_a_reservation_grows_only_into_free_chunks() {
    let (out, _incoming) = pair(4);
    let mut all = out.reserve(4 * CHUNK).unwrap();
    assert!(out.reserve(1).is_none());
    assert!(!out.write(&all, 4 * CHUNK - 1, &[0, 0]), "past the end");
    assert!(!out.extend(&mut all, 5 * CHUNK));
    out.cancel(all);
    let small = out.reserve(1).unwrap();
    let (offset, len) = out.finish(small, 1);
    assert_eq!((offset, len), (0, 1));
    let mut rest = out.reserve(1).unwrap();
    assert!(rest.capacity() == 3 * CHUNK && out.extend(&mut rest, 3 * CHUNK));
    assert!(
        !out.extend(&mut rest, 4 * CHUNK),
        "no chunk after the region's end"
    );
    out.cancel(rest);
}

#[test]
fn a_sink_moves_a_large_message_and_brings_back_one_that_outgrows_the_room() {
    let region = LazyRegion::new(2 * CHUNK as u64);
    let mut inline = b"header".to_vec();
    let mut sink = Sink::spilling(&mut inline, Some(&region), 1000);
    for _ in 0..10 {
        sink.extend_from_slice(&[7; 500]);
    }
    let Placement::Shared {
        region: out,
        offset,
        len,
    } = sink.finish()
    else {
        panic!("a 5000-byte message with a 1000-byte threshold stays inline");
    };
    assert_eq!((offset, len), (0, 5000));
    assert_eq!(inline, b"header", "only the frame's start is left inline");
    assert_eq!(out.chunks_in_use(), 1);

    // Larger than the free room (one chunk): back inline, nothing lost.
    let mut inline = Vec::new();
    let mut sink = Sink::spilling(&mut inline, Some(&region), 1000);
    let message: Vec<u8> = (0..3 * CHUNK).map(|i| (i % 251) as u8).collect();
    for piece in message.chunks(777) {
        sink.extend_from_slice(piece);
    }
    assert!(matches!(sink.finish(), Placement::Inline));
    assert_eq!(inline, message);
    assert_eq!(out.chunks_in_use(), 1, "the reservation went back");

    // An encoder that fails: nothing written, nothing reserved.
    let mut inline = b"keep".to_vec();
    let mut sink = Sink::spilling(&mut inline, Some(&region), 10);
    sink.extend_from_slice(&[1; 100]);
    sink.abandon();
    assert_eq!(inline, b"keep");
    assert_eq!(out.chunks_in_use(), 1);
}

#[test]
fn one_large_write_goes_straight_to_the_region() {
    let region = LazyRegion::new(8 * CHUNK as u64);
    let mut inline = b"header".to_vec();
    let mut sink = Sink::spilling(&mut inline, Some(&region), 1000);
    sink.extend_from_slice(&[1, 2, 3]);
    let big: Vec<u8> = (0..300_000).map(|i| (i % 253) as u8).collect();
    sink.extend_from_slice(&big);
    let Placement::Shared {
        region: out,
        offset,
        len,
    } = sink.finish()
    else {
        panic!("300 kB stayed inline");
    };
    assert_eq!(len, 300_003);
    assert!(
        inline.capacity() < 1000,
        "the piece went through the buffer first"
    );
    let incoming = peer_of(out);
    let (o, l) = incoming.check(offset, len).unwrap();
    let mut copied = Vec::new();
    incoming.copy_to(o, l, &mut copied);
    assert_eq!(&copied[..3], &[1, 2, 3]);
    assert_eq!(&copied[3..], &big[..]);
}

#[test]
fn no_region_when_turned_off() {
    let region = LazyRegion::new(0);
    assert!(region.get().is_none());
    let mut inline = Vec::new();
    let mut sink = Sink::spilling(&mut inline, Some(&region), 10);
    sink.extend_from_slice(&[1; 100]);
    assert!(matches!(sink.finish(), Placement::Inline));
    assert_eq!(inline.len(), 100);
}
