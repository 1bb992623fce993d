//! Issue 12, §1: a peer cannot make the other side read outside its
//! shared-memory region. A fake child (this test, on the other end of the
//! socket) announces regions that are unsealed, too large or not the size
//! it says, and points at messages outside them: each is a protocol error
//! naming the cause, through `on_error` and to the call; the parent never
//! faults or hangs. A well-formed region made here works.

mod common;

use std::io::{IoSlice, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyfork::Fork;
use anyfork::rpc::{Codec, Error, Rpc};
use rustix::fs::{MemfdFlags, SealFlags};
use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};

const HEADER: u64 = 4096;
const CHUNK: u64 = 64 * 1024;

/// An RPC handle whose "child" writes `S`, then `script` with `fds`
/// attached, then drains what the parent sends.
fn fake(
    script: Vec<u8>,
    fds: Vec<OwnedFd>,
    shared_memory: u64,
) -> (Rpc<u32, u32>, Arc<Mutex<Vec<String>>>) {
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    let errors = Arc::new(Mutex::new(Vec::new()));
    let seen = errors.clone();
    let rpc = Fork::new_from_fh(ours)
        .rpc("fake::function")
        .types::<u32, u32>()
        .codec(Codec::Raw)
        .shared_memory(shared_memory)
        .on_error(move |e| seen.lock().unwrap().push(common::chain(e)))
        .start()
        .unwrap();
    std::thread::spawn(move || {
        let mut started = vec![b'S', 0, 0, 0, 4];
        started.extend_from_slice(&std::process::id().to_be_bytes());
        theirs.write_all(&started).unwrap();
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        let borrowed = fds.iter().map(|fd| fd.as_fd()).collect::<Vec<_>>();
        if !borrowed.is_empty() {
            assert!(control.push(SendAncillaryMessage::ScmRights(&borrowed)));
        }
        rustix::net::sendmsg(
            &theirs,
            &[IoSlice::new(&script)],
            &mut control,
            SendFlags::empty(),
        )
        .unwrap();
        let mut buf = [0u8; 4096];
        while matches!(theirs.read(&mut buf), Ok(n) if n > 0) {}
    });
    (rpc, errors)
}

fn header(id: u32, len: u32, kind: u8, nfds: u8) -> Vec<u8> {
    let mut out = id.to_be_bytes().to_vec();
    out.extend_from_slice(&len.to_be_bytes());
    out.push(kind);
    out.push(nfds);
    out
}

/// The `m` frame announcing a region of `size` bytes.
fn announce(size: u64) -> Vec<u8> {
    let mut out = header(0, 8, b'm', 1);
    out.extend_from_slice(&size.to_be_bytes());
    out
}

/// A reply to call 1 whose payload is at `offset`, `len` in the region.
fn shared_reply(offset: u64, len: u64) -> Vec<u8> {
    let mut out = header(1, 16, b'r' | 0x80, 0);
    out.extend_from_slice(&offset.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out
}

/// A memfd of `len` bytes, with `seals`.
fn region(len: u64, seals: SealFlags) -> OwnedFd {
    let fd = rustix::fs::memfd_create("hostile", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
        .unwrap();
    rustix::fs::ftruncate(&fd, len).unwrap();
    if !seals.is_empty() {
        rustix::fs::fcntl_add_seals(&fd, seals).unwrap();
    }
    fd
}

fn sealed(len: u64) -> OwnedFd {
    region(len, SealFlags::SHRINK | SealFlags::GROW)
}

/// Calls on another thread so that a hang fails the test, expecting a
/// protocol error whose text contains `cause`, also seen by `on_error`.
fn expect_refused(rpc: Rpc<u32, u32>, errors: Arc<Mutex<Vec<String>>>, cause: &str) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(rpc.call_blocking(1));
    });
    let result = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the call must not hang");
    match result {
        Err(error @ Error::Protocol { .. }) => {
            let text = common::chain(&error);
            assert!(text.contains(cause), "expected {cause:?} in {text:?}");
        }
        other => panic!("expected a protocol error ({cause}), got {other:?}"),
    }
    assert!(common::wait_until(Duration::from_secs(5), || !errors
        .lock()
        .unwrap()
        .is_empty()));
    assert!(
        errors.lock().unwrap()[0].contains(cause),
        "{:?}",
        errors.lock().unwrap()
    );
}

#[test]
fn a_shared_frame_before_any_region() {
    let (rpc, errors) = fake(shared_reply(0, 10), Vec::new(), 1 << 20);
    expect_refused(rpc, errors, "a shared-memory frame before its region");
}

#[test]
fn a_region_when_none_was_offered() {
    let size = HEADER + CHUNK;
    let (rpc, errors) = fake(announce(size), vec![sealed(size)], 0);
    expect_refused(rpc, errors, "shared memory was not offered to this side");
}

#[test]
fn a_region_whose_size_is_not_sealed() {
    // It could shrink it under the parent's reads (SIGBUS).
    let size = HEADER + CHUNK;
    let (rpc, errors) = fake(announce(size), vec![region(size, SealFlags::GROW)], 1 << 20);
    expect_refused(rpc, errors, "size is not sealed");
}

#[test]
fn a_region_larger_than_accepted() {
    let size = HEADER + 64 * CHUNK;
    let (rpc, errors) = fake(announce(size), vec![sealed(size)], 1 << 20);
    expect_refused(rpc, errors, "larger than this side accepts");
}

#[test]
fn a_region_that_is_not_the_size_announced() {
    let (rpc, errors) = fake(
        announce(HEADER + 4 * CHUNK),
        vec![sealed(HEADER + CHUNK)],
        1 << 20,
    );
    expect_refused(rpc, errors, "not the size announced");
}

#[test]
fn a_region_that_is_not_whole_chunks() {
    let size = HEADER + CHUNK + 1;
    let (rpc, errors) = fake(announce(size), vec![sealed(size)], 1 << 20);
    expect_refused(rpc, errors, "not a header and whole chunks");
}

#[test]
fn an_announcement_without_its_descriptor() {
    let (rpc, errors) = fake(announce(HEADER + CHUNK), Vec::new(), 1 << 20);
    expect_refused(rpc, errors, "should carry a file descriptor");
}

#[test]
fn a_second_region() {
    let size = HEADER + CHUNK;
    let mut script = announce(size);
    script.extend(announce(size));
    // Both frames, one descriptor each: sent as one message with two.
    let (ours, theirs) = (sealed(size), sealed(size));
    let (rpc, errors) = fake(script, vec![ours, theirs], 1 << 20);
    expect_refused(rpc, errors, "a second shared-memory region");
}

#[test]
fn messages_outside_the_region_or_off_a_chunk() {
    let size = HEADER + 2 * CHUNK;
    for (offset, len, cause) in [
        (CHUNK, CHUNK + 1, "lies outside the region"),
        (2 * CHUNK, 1, "lies outside the region"),
        (0, 0, "lies outside the region"),
        (u64::MAX - CHUNK + 1, CHUNK, "end overflows"),
        (0, u64::MAX, "more than the limit"),
        (5, 10, "does not start on a chunk"),
    ] {
        let mut script = announce(size);
        script.extend(shared_reply(offset, len));
        let (rpc, errors) = fake(script, vec![sealed(size)], 1 << 20);
        expect_refused(rpc, errors, cause);
    }
}

#[test]
fn a_well_formed_region_from_elsewhere_is_read() {
    let size = HEADER + 2 * CHUNK;
    let fd = sealed(size);
    // The reply (raw codec: one octet string "42") at the second chunk.
    let message = Codec::Raw.encode(&42u32).unwrap().bytes;
    let file = std::fs::File::from(fd.try_clone().unwrap());
    std::os::unix::fs::FileExt::write_all_at(&file, &message, HEADER + CHUNK).unwrap();
    let mut script = announce(size);
    script.extend(shared_reply(CHUNK, message.len() as u64));
    let (rpc, errors) = fake(script, vec![fd], 1 << 20);
    assert_eq!(rpc.call_blocking(1).unwrap(), 42);
    assert!(errors.lock().unwrap().is_empty());
}
