use super::*;
use proptest::prelude::*;

fn bytes_of(out: &mut Outbox) -> Vec<u8> {
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    out.send_all(&crate::transport::Transport::Socket(
        a.try_clone().unwrap().into(),
    ))
    .unwrap();
    drop(a);
    let mut all = Vec::new();
    std::io::Read::read_to_end(&mut &b, &mut all).unwrap();
    all
}

proptest! {
    /// Frames survive any split of the byte stream.
    #[test]
    fn frames_round_trip_under_any_split(
        frames in proptest::collection::vec((1u32.., prop::sample::select(TO_PARENT.iter().copied().filter(|k| *k != kind::MEMORY).collect::<Vec<_>>()), proptest::collection::vec(any::<u8>(), 0..300)), 0..20),
        cuts in proptest::collection::vec(0usize..4000, 0..30),
    ) {
        let mut out = Outbox::default();
        for (id, kind, payload) in &frames {
            encode(&mut out, *id, *kind, payload, Vec::new()).unwrap();
        }
        let bytes = bytes_of(&mut out);
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.push(bytes.len());
        cuts.sort();
        let mut decoder = Decoder::new(TO_PARENT, 1 << 20, 16);
        let mut seen = Vec::new();
        let mut from = 0;
        for cut in cuts {
            decoder.feed(&bytes[from..cut], std::iter::empty());
            from = cut;
            while let Some(frame) = decoder.next().unwrap() {
                seen.push((frame.id, frame.kind, frame.payload));
            }
        }
        decoder.at_end().unwrap();
        prop_assert_eq!(seen, frames);
    }

    /// Raw-codec messages survive encoding and decoding.
    #[test]
    fn raw_messages_round_trip(parts in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..10)) {
        let encoded = super::super::Codec::Raw.encode(&parts).unwrap();
        let back: Vec<Vec<u8>> = super::super::Codec::Raw.decode(&encoded.bytes, encoded.fds).unwrap();
        prop_assert_eq!(back, parts);
    }

    /// Shared frames with any offset and length are read from within
    /// the region or refused; garbage around them never panics.
    #[test]
    fn shared_frames_stay_within_the_region(
        frames in proptest::collection::vec((any::<u64>(), any::<u64>(), any::<bool>()), 1..20),
        garbage in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let (mut decoder, _region) = Decoder::new(TO_PARENT, 1 << 30, 16).with_test_region();
        let region_len = 4 * super::super::shared_memory::CHUNK as u64;
        for (offset, len, small) in frames {
            let (offset, len) = if small { (offset % (region_len + 1), len % (region_len + 1)) } else { (offset, len) };
            let mut bytes = Vec::new();
            put_header(&mut bytes, 1, kind::REPLY | SHARED_FLAG, REFERENCE_LEN as u32, 0);
            bytes.extend_from_slice(&reference(offset, len));
            decoder.feed(&bytes, std::iter::empty());
            let valid = offset % super::super::shared_memory::CHUNK as u64 == 0
                && len > 0
                && offset.checked_add(len).is_some_and(|end| end <= region_len);
            match decoder.next() {
                Ok(Some(frame)) => {
                    prop_assert!(valid);
                    prop_assert_eq!(frame.payload.len() as u64, len);
                }
                Ok(None) => prop_assert!(false, "a whole frame was not read"),
                Err(ProtocolError::Malformed { .. } | ProtocolError::TooLong { .. }) => {
                    prop_assert!(!valid);
                    // A refused frame ends the connection: start again.
                    decoder = Decoder::new(TO_PARENT, 1 << 30, 16).with_test_region().0;
                }
                Err(other) => prop_assert!(false, "unexpected error {other}"),
            }
        }
        decoder.feed(&garbage, std::iter::empty());
        while let Ok(Some(_)) = decoder.next() {}
    }

    /// Garbage never panics the decoder.
    #[test]
    fn garbage_is_an_error_or_a_frame(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut decoder = Decoder::new(TO_PARENT, 1024, 16);
        decoder.feed(&bytes, std::iter::empty());
        while let Ok(Some(_)) = decoder.next() {}
    }
}

#[test]
fn frames_encoded_in_place_read_back_and_a_failed_encoding_leaves_nothing() {
    let mut out = Outbox::default();
    encode(&mut out, 1, kind::REPLY, b"before", Vec::new()).unwrap();
    let written = encode_with(&mut out, None, 2, kind::REPLY, |buf: &mut Sink<'_, '_>| {
        buf.extend_from_slice(b"in place");
        Ok::<_, String>(Vec::new())
    });
    assert_eq!(written.unwrap(), Ok(()));
    let failed = encode_with(&mut out, None, 3, kind::REPLY, |buf: &mut Sink<'_, '_>| {
        buf.extend_from_slice(b"half a message");
        Err::<Vec<OwnedFd>, _>("cannot encode".to_owned())
    });
    assert_eq!(failed.unwrap(), Err("cannot encode".to_owned()));
    encode(&mut out, 4, kind::EVENT, b"after", Vec::new()).unwrap();
    let bytes = bytes_of(&mut out);
    let mut decoder = Decoder::new(TO_PARENT, 1 << 20, 16);
    decoder.feed(&bytes, std::iter::empty());
    let mut seen = Vec::new();
    while let Some(frame) = decoder.next().unwrap() {
        seen.push((frame.id, frame.payload));
    }
    decoder.at_end().unwrap();
    assert_eq!(
        seen,
        [
            (1, b"before".to_vec()),
            (2, b"in place".to_vec()),
            (4, b"after".to_vec())
        ]
    );
}

#[test]
fn limits_and_kinds_are_checked() {
    let mut decoder = Decoder::new(TO_CHILD, 100, 16);
    decoder.feed(&[0, 0, 0, 1, 0, 0, 1, 0, b'q', 0], std::iter::empty());
    assert!(matches!(
        decoder.next(),
        Err(ProtocolError::TooLong {
            len: 256,
            limit: 100,
            ..
        })
    ));
    let mut decoder = Decoder::new(TO_CHILD, 100, 16);
    decoder.feed(&[0, 0, 0, 1, 0, 0, 0, 0, b'r', 0], std::iter::empty());
    assert!(matches!(decoder.next(), Err(ProtocolError::UnknownTag(_))));
    let mut decoder = Decoder::new(TO_CHILD, 100, 16);
    decoder.feed(&[0, 0, 0, 1, 0, 0, 0, 0, b'q', 2], std::iter::empty());
    assert!(matches!(
        decoder.next(),
        Err(ProtocolError::MissingFd { .. })
    ));
    let mut decoder = Decoder::new(TO_CHILD, 100, 16);
    decoder.feed(&[0, 0, 0, 1, 0, 0, 0, 9, b'q', 0, 1], std::iter::empty());
    assert!(matches!(decoder.next(), Ok(None)));
    assert!(matches!(
        decoder.at_end(),
        Err(ProtocolError::Truncated {
            expected: 19,
            got: 11,
            ..
        })
    ));
}

#[test]
fn a_frame_encoded_elsewhere_becomes_the_empty_queue_or_is_copied_after_what_waits() {
    let with_room = |payload: &[u8]| {
        let mut buffer = vec![0u8; HEADER_LEN];
        buffer.extend_from_slice(payload);
        buffer
    };
    // Nothing waits: the buffer is the queue, and the caller gets the
    // queue's old (empty) buffer back.
    let mut out = Outbox::default();
    let mut buffer = with_room(b"first");
    encode_adopting(&mut out, 1, kind::REQUEST, &mut buffer, Vec::new()).unwrap();
    assert!(buffer.is_empty(), "the queue's old buffer comes back empty");
    assert_eq!(out.unsent(), HEADER_LEN + 5);
    // Something waits: copied after it; the buffer stays the caller's.
    let mut second = with_room(b"second");
    encode_adopting(&mut out, 2, kind::REQUEST, &mut second, Vec::new()).unwrap();
    assert_eq!(second, with_room(b"second"));
    // With a descriptor: copied (the descriptor's place is recorded).
    let (fd, _other) = std::os::unix::net::UnixStream::pair().unwrap();
    let mut out_with_fd = Outbox::default();
    let mut third = with_room(b"third");
    encode_adopting(
        &mut out_with_fd,
        3,
        kind::REQUEST,
        &mut third,
        vec![fd.into()],
    )
    .unwrap();
    assert_eq!(third, with_room(b"third"));

    let mut decoder = Decoder::new(TO_CHILD, 1 << 20, 16);
    decoder.feed(&bytes_of(&mut out), std::iter::empty());
    let mut seen = Vec::new();
    while let Some(frame) = decoder.next().unwrap() {
        seen.push((frame.id, frame.payload));
    }
    assert_eq!(seen, [(1, b"first".to_vec()), (2, b"second".to_vec())]);
}
