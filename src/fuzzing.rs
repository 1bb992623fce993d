//! Entry points for fuzzing the decoders with arbitrary bytes (feature
//! `fuzzing`, off by default; `fuzz/` has the `cargo fuzz` targets, and the
//! same functions run as `proptest` properties in the unit tests).
//!
//! Each takes bytes as they could arrive from a peer and runs them through
//! one decoder to its end. They return nothing: a fuzzer looks for panics,
//! hangs and runaway memory, and each decoder must turn any input into
//! frames or a clear error.

use std::os::unix::net::UnixStream;

use crate::proto::{self, FrameReader, ReadError};
use crate::rpc::frame::{self, Decoder};

/// The most bytes a target feeds through a socket pair (what its buffer
/// holds without a reader).
const SOCKET_INPUT: usize = 64 * 1024;

/// The template command reader (serving-process side) and the command
/// decoder, over a real socket: bytes in, commands out until the end or
/// an error.
pub fn commands(data: &[u8]) {
    let data = &data[..data.len().min(SOCKET_INPUT)];
    let Ok((mut parent, child)) = UnixStream::pair() else {
        return;
    };
    if std::io::Write::write_all(&mut parent, data).is_err() {
        return;
    }
    drop(parent);
    let child = crate::transport::Transport::Socket(child.into());
    let mut reader = FrameReader::new();
    loop {
        match reader.read_frame(&child, proto::COMMAND_TAGS, 1 << 20, &mut || {}) {
            Ok(Some(frame)) => {
                if proto::decode_command(frame).is_err() {
                    return;
                }
            }
            Ok(None) | Err(ReadError::Io(_) | ReadError::Protocol(_)) => return,
        }
    }
}

/// The parent's reply reader of the template protocol (`P`, `S`, `I`, `E`).
pub fn replies(data: &[u8]) {
    let mut buffer = proto::ReplyBuffer::default();
    buffer.extend(data);
    while let Ok(Some(_)) = buffer.take() {}
    let _ = buffer.at_end();
}

/// The RPC frame decoder, both directions, as the bytes come in pieces.
pub fn rpc_frames(data: &[u8]) {
    for kinds in [frame::TO_PARENT, frame::TO_CHILD] {
        let mut decoder = Decoder::new(kinds, 1 << 20, 16);
        for piece in data.chunks(97) {
            decoder.feed(piece, std::iter::empty());
            loop {
                match decoder.next() {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(_) => return,
                }
            }
        }
        let _ = decoder.at_end();
    }
}

/// The RPC frame decoder with the peer's shared-memory region mapped:
/// shared frames with whatever offsets and lengths the input holds.
pub fn rpc_shared_frames(data: &[u8]) {
    for kinds in [frame::TO_PARENT, frame::TO_CHILD] {
        let (mut decoder, _region) = Decoder::new(kinds, 1 << 20, 16).with_test_region();
        for piece in data.chunks(61) {
            decoder.feed(piece, std::iter::empty());
            loop {
                match decoder.next_borrowed() {
                    Ok(Some(frame)) => {
                        std::hint::black_box(frame.payload.iter().fold(0u8, |a, b| a ^ b));
                    }
                    Ok(None) => break,
                    Err(_) => return,
                }
            }
        }
    }
}

/// The RPC server's configuration (the last argument before `run`).
pub fn rpc_config(data: &[u8]) {
    let _ = crate::rpc::config::Config::decode(data);
}

/// Every codec, decoding into flat and nested types.
pub fn codecs(data: &[u8]) {
    use crate::rpc::Codec;
    /// A job: id, path, tags, a limit, some blobs (nested and optional).
    type Job = (u32, String, Vec<String>, Option<u64>, Vec<Vec<u8>>);
    for codec in [Codec::Raw, Codec::Cbor, Codec::Json, Codec::Postcard] {
        let _ = codec.decode::<Vec<Vec<u8>>>(data, Vec::new());
        let _ = codec.decode::<(String, u64, bool, char)>(data, Vec::new());
        let _ = codec.decode::<u32>(data, Vec::new());
        let _ = codec.decode::<Job>(data, Vec::new());
        let _ = codec.decode::<(crate::rpc::Fd, String)>(data, Vec::new());
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// The fuzz targets' inputs on stable: any bytes, no panic.
        #[test]
        fn the_decoders_survive_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            super::commands(&data);
            super::replies(&data);
            super::rpc_frames(&data);
            super::rpc_shared_frames(&data);
            super::rpc_config(&data);
            super::codecs(&data);
        }

        /// Bytes that start like real frames reach deeper.
        #[test]
        fn the_decoders_survive_bytes_that_look_like_frames(
            tag in prop::sample::select(b"ahefrlxick vm\xf2\xf1\xf6".to_vec()),
            len in 0u32..64,
            rest in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let mut data = vec![tag];
            data.extend_from_slice(&len.to_be_bytes());
            data.extend_from_slice(&rest);
            super::commands(&data);
            super::replies(&data);
            let mut rpc = vec![0, 0, 0, 1];
            rpc.extend_from_slice(&len.to_be_bytes());
            rpc.push(tag);
            rpc.push(0);
            rpc.extend_from_slice(&rest);
            super::rpc_frames(&rpc);
            super::rpc_shared_frames(&rpc);
            super::codecs(&rest);
        }
    }
}
