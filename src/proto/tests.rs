//! Round trips of commands and replies over real sockets.

use super::*;
use crate::transport::Transport;
use std::collections::VecDeque;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;

/// A transport on (a duplicate of) one end of a socket pair.
fn t(socket: &UnixStream) -> Transport {
    Transport::Socket(socket.try_clone().unwrap().into())
}

/// Two pipes: (the parent's transport, the serving side's transport).
fn streams() -> (Transport, Transport) {
    let (child_read, parent_write) = crate::transport::pipe().unwrap();
    let (parent_read, child_write) = crate::transport::pipe().unwrap();
    (
        Transport::streams(parent_read, parent_write).unwrap(),
        Transport::streams(child_read, child_write).unwrap(),
    )
}

#[test]
fn on_streams_the_reader_stops_at_run_and_descriptors_are_refused() {
    let (parent, child) = streams();
    let mut out = Outbox::default();
    out.arg(b"one").unwrap();
    out.eval(&Target::Name("init".into()), &[b"x"]).unwrap();
    out.run(&Target::Name("f".into())).unwrap();
    out.send_all(&parent).unwrap();
    parent.send(b"user data", &[], false).unwrap();
    let mut reader = FrameReader::new();
    let mut tags = Vec::new();
    loop {
        let frame = reader
            .read_frame(&child, COMMAND_TAGS, 1024, &mut || {})
            .unwrap()
            .unwrap();
        tags.push(frame.tag);
        if frame.tag == tag::RUN {
            break;
        }
    }
    assert_eq!(tags, [tag::ARG, tag::EVAL, tag::RUN]);
    let mut rest = [0u8; 32];
    let n = child.recv(&mut rest, &mut VecDeque::new(), false).unwrap();
    assert_eq!(&rest[..n], b"user data", "nothing past run was read");

    let mut out = Outbox::default();
    let (x, _y) = UnixStream::pair().unwrap();
    out.fd(x.into());
    let error = out.send_all(&parent).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::Unsupported);
    assert!(
        !child.is_readable_now(),
        "nothing of the refused frame was sent"
    );
}

#[test]
fn on_streams_a_truncated_frame_is_an_error() {
    let (parent, child) = streams();
    parent
        .send(&[b'a', 0, 0, 0, 10, 1, 2, 3], &[], false)
        .unwrap();
    parent.shutdown_write().unwrap();
    let mut reader = FrameReader::new();
    let error = reader
        .read_frame(&child, COMMAND_TAGS, 1024, &mut || {})
        .unwrap_err();
    assert!(error.to_string().contains("truncated"), "{error}");
}

#[test]
fn header_limit_is_checked_before_allocation() {
    let err = parse_header([b'a', 0xff, 0xff, 0xff, 0xff], COMMAND_TAGS, 1024).unwrap_err();
    assert_eq!(
        err,
        ProtocolError::TooLong {
            tag: Tag(b'a'),
            len: u32::MAX as u64,
            limit: 1024
        }
    );
}

#[test]
fn commands_round_trip_with_fds_in_order() {
    let (a, b) = UnixStream::pair().unwrap();
    let mut out = Outbox::default();
    out.arg(b"one").unwrap();
    let (p1, _p1b) = UnixStream::pair().unwrap();
    out.fd(p1.into());
    out.eval(&Target::Name("init".into()), &[b"x", b""])
        .unwrap();
    out.limit(99);
    out.run(&Target::Name("m::f".into())).unwrap();
    out.send_all(&t(&a)).unwrap();
    let mut reader = FrameReader::new();
    let mut seen = Vec::new();
    for _ in 0..5 {
        let frame = reader
            .read_frame(&t(&b), COMMAND_TAGS, 1 << 20, &mut || {})
            .unwrap()
            .unwrap();
        seen.push(decode_command(frame).unwrap());
    }
    assert!(matches!(&seen[0], Command::Arg(v) if v == b"one"));
    assert!(matches!(&seen[1], Command::Fd(_)));
    assert!(
        matches!(&seen[2], Command::Eval { target: Target::Name(n), args } if n == "init" && args == &[b"x".to_vec(), vec![]])
    );
    assert!(matches!(&seen[3], Command::Limit(99)));
    assert!(matches!(&seen[4], Command::Run(Target::Name(n)) if n == "m::f"));
}

#[test]
fn a_queue_sent_while_it_grows_stays_as_large_as_its_unsent_part() {
    use std::io::Read;
    let (a, mut b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    let mut out = Outbox::default();
    let mut expected = Vec::new();
    let mut received = Vec::new();
    let mut fds_received = 0;
    let mut chunk = vec![0u8; 100_000];
    for i in 0..200u32 {
        chunk.fill(i as u8);
        // A descriptor with every tenth chunk, which must arrive no
        // later than the chunk's last byte.
        let fds: Vec<OwnedFd> = if i % 10 == 0 {
            vec![UnixStream::pair().unwrap().0.into()]
        } else {
            Vec::new()
        };
        out.append_with(|data| {
            data.extend_from_slice(&chunk);
            Ok::<_, ()>(((), fds))
        })
        .unwrap();
        expected.extend_from_slice(&chunk);
        loop {
            match out.send_some(&t(&a), true) {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(
            out.data.len() <= 2 * out.unsent() + 200_000,
            "queue of {} bytes for {} unsent",
            out.data.len(),
            out.unsent()
        );
        // The reader takes less than is written, so the queue stays
        // busy.
        let mut buf = vec![0u8; 60_000];
        let mut fds = std::collections::VecDeque::new();
        let n = t(&b).recv(&mut buf, &mut fds, false).unwrap();
        received.extend_from_slice(&buf[..n]);
        fds_received += fds.len();
    }
    a.set_nonblocking(false).unwrap();
    let sender = std::thread::spawn(move || {
        out.send_all(&t(&a)).unwrap();
    });
    let mut fds = std::collections::VecDeque::new();
    loop {
        let mut buf = vec![0u8; 1 << 20];
        let n = t(&b).recv(&mut buf, &mut fds, false).unwrap();
        received.extend_from_slice(&buf[..n]);
        if received.len() == expected.len() {
            break;
        }
    }
    sender.join().unwrap();
    fds_received += fds.len();
    assert!(received == expected, "the bytes arrived changed");
    assert_eq!(fds_received, 20);
    let mut rest = Vec::new();
    b.set_nonblocking(true).unwrap();
    let _ = b.read_to_end(&mut rest);
    assert!(rest.is_empty());
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
    /// A command stream arriving in arbitrary pieces (a pause after
    /// each, so that the reader mostly sees them one by one) reads back
    /// as it was sent, and the reader stops at `run`.
    #[test]
    fn commands_round_trip_under_any_split(
        args in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300), 0..8),
        cuts in proptest::collection::vec(0usize..3000, 0..12),
    ) {
        let mut out = Outbox::default();
        for arg in &args {
            out.arg(arg).unwrap();
        }
        out.limit(77);
        out.run(&Target::Name("m::f".into())).unwrap();
        let bytes = out.data.clone();
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.push(0);
        cuts.push(bytes.len());
        cuts.sort();
        cuts.dedup();
        let pieces: Vec<Vec<u8>> = cuts.windows(2).map(|w| bytes[w[0]..w[1]].to_vec()).collect();
        let (mut a, b) = UnixStream::pair().unwrap();
        let writer = std::thread::spawn(move || {
            for piece in pieces {
                a.write_all(&piece).unwrap();
                std::thread::sleep(std::time::Duration::from_micros(300));
            }
        });
        let mut reader = FrameReader::new();
        let mut seen = Vec::new();
        let mut limit = None;
        loop {
            let frame = reader
                .read_frame(&t(&b), COMMAND_TAGS, 1 << 20, &mut || {})
                .unwrap()
                .expect("the stream ended before run");
            match decode_command(frame).unwrap() {
                Command::Arg(arg) => seen.push(arg),
                Command::Limit(l) => limit = Some(l),
                Command::Run(Target::Name(name)) => {
                    proptest::prop_assert_eq!(name, "m::f");
                    break;
                }
                _ => proptest::prop_assert!(false, "an unexpected command"),
            }
        }
        writer.join().unwrap();
        proptest::prop_assert_eq!(seen, args);
        proptest::prop_assert_eq!(limit, Some(77));
    }
}

#[test]
fn reader_stops_at_frame_end() {
    let (mut a, b) = UnixStream::pair().unwrap();
    let mut out = Outbox::default();
    out.run(&Target::Name("f".into())).unwrap();
    out.send_all(&t(&a)).unwrap();
    a.write_all(b"user data").unwrap();
    let mut reader = FrameReader::new();
    reader
        .read_frame(&t(&b), COMMAND_TAGS, 1024, &mut || {})
        .unwrap()
        .unwrap();
    let mut rest = [0u8; 9];
    std::io::Read::read_exact(&mut &b, &mut rest).unwrap();
    assert_eq!(&rest, b"user data");
}

#[test]
fn truncated_and_fdless_frames_are_errors() {
    let (mut a, b) = UnixStream::pair().unwrap();
    a.write_all(&[b'a', 0, 0, 0, 10, 1, 2, 3]).unwrap();
    drop(a);
    let err = FrameReader::new()
        .read_frame(&t(&b), COMMAND_TAGS, 1024, &mut || {})
        .unwrap_err();
    assert!(matches!(
        err,
        ReadError::Protocol(ProtocolError::Truncated {
            expected: 15,
            got: 8,
            ..
        })
    ));

    let (mut a, b) = UnixStream::pair().unwrap();
    a.write_all(&[b'h', 0, 0, 0, 1, b'!']).unwrap();
    let err = FrameReader::new()
        .read_frame(&t(&b), COMMAND_TAGS, 1024, &mut || {})
        .unwrap_err();
    assert!(matches!(
        err,
        ReadError::Protocol(ProtocolError::MissingFd { .. })
    ));
}

#[test]
fn reply_buffer_never_reads_past_started() {
    let (mut a, b) = UnixStream::pair().unwrap();
    let mut bytes = encode_reply(&Reply::Pid(7));
    bytes.extend(encode_reply(&Reply::Started(7)));
    bytes.extend_from_slice(b"user data");
    a.write_all(&bytes).unwrap();
    let mut buffer = ReplyBuffer::default();
    assert_eq!(
        buffer.next_from(&t(&b), 2 * PID_FRAME_LEN).unwrap(),
        Some(Reply::Pid(7))
    );
    assert_eq!(
        buffer.next_from(&t(&b), PID_FRAME_LEN).unwrap(),
        Some(Reply::Started(7))
    );
    let mut rest = [0u8; 9];
    std::io::Read::read_exact(&mut &b, &mut rest).unwrap();
    assert_eq!(&rest, b"user data");
}

#[test]
fn reply_buffer_reads_long_errors_whole() {
    let (mut a, b) = UnixStream::pair().unwrap();
    let message = "x".repeat(5000);
    let mut bytes = encode_reply(&Reply::Pid(1));
    bytes.extend(encode_reply(&Reply::Error {
        kind: ChildErrorKind::Other,
        message: message.clone(),
    }));
    a.write_all(&bytes).unwrap();
    drop(a);
    let mut buffer = ReplyBuffer::default();
    assert_eq!(
        buffer.next_from(&t(&b), 2 * PID_FRAME_LEN).unwrap(),
        Some(Reply::Pid(1))
    );
    assert_eq!(
        buffer.next_from(&t(&b), PID_FRAME_LEN).unwrap(),
        Some(Reply::Error {
            kind: ChildErrorKind::Other,
            message
        })
    );
    assert_eq!(buffer.next_from(&t(&b), PID_FRAME_LEN).unwrap(), None);
}

#[test]
fn replies_round_trip() {
    for reply in [
        Reply::Pid(7),
        Reply::Started(u32::MAX),
        Reply::Error {
            kind: ChildErrorKind::UnknownFunction,
            message: "no such thing".into(),
        },
    ] {
        let bytes = encode_reply(&reply);
        let (tag, len) =
            parse_header(bytes[..5].try_into().unwrap(), REPLY_TAGS, MAX_REPLY_LEN).unwrap();
        assert_eq!(len as usize, bytes.len() - 5);
        assert_eq!(decode_reply(tag, &bytes[5..]).unwrap(), reply);
    }
}
