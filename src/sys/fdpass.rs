//! Byte streams with file descriptors attached (`SCM_RIGHTS`).
//!
//! On a unix stream socket the kernel attaches the descriptors of one
//! `sendmsg` to the first bytes that call sends, and a `recvmsg` that reads
//! those bytes receives them; it never reads past the bytes of a message that
//! carried descriptors. anyfork's framing therefore does not need each
//! descriptor to travel alone: the sender attaches a batch of descriptors to
//! the bytes that contain their marker bytes, and the receiver keeps the
//! descriptors it gets in arrival order until the parser reaches their markers
//! (see [`crate::proto`]).
//!
//! References:
//! - [`sendmsg(2)`](https://man7.org/linux/man-pages/man2/sendmsg.2.html)
//! - [`recvmsg(2)`](https://man7.org/linux/man-pages/man2/recvmsg.2.html)
//! - [`unix(7)`](https://man7.org/linux/man-pages/man7/unix.7.html) (`SCM_RIGHTS`)

use std::collections::VecDeque;
use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

/// The most descriptors one `sendmsg` carries; receivers make room for this
/// many per `recvmsg`.
pub(crate) const MAX_FDS_PER_SEND: usize = 32;

/// `sendmsg(fd, data, SCM_RIGHTS(fds), MSG_NOSIGNAL [| MSG_DONTWAIT])`.
///
/// Returns how many bytes were sent; when it is more than zero, all of `fds`
/// were sent with them. A closed peer is `EPIPE`, never `SIGPIPE`.
pub(crate) fn send_with_fds(
    socket: BorrowedFd<'_>,
    data: &[u8],
    fds: &[BorrowedFd<'_>],
    nonblocking: bool,
) -> io::Result<usize> {
    debug_assert!(fds.len() <= MAX_FDS_PER_SEND);
    let mut flags = SendFlags::NOSIGNAL;
    if nonblocking {
        flags |= SendFlags::DONTWAIT;
    }
    if fds.is_empty() {
        return Ok(rustix::net::send(socket, data, flags)?);
    }
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS_PER_SEND))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "too many file descriptors for one message",
        ));
    }
    let sent = rustix::net::sendmsg(socket, &[IoSlice::new(data)], &mut control, flags)?;
    Ok(sent)
}

/// `recvmsg(fd, buf, MSG_CMSG_CLOEXEC [| MSG_DONTWAIT])`, appending any
/// received descriptors to `fds` in order.
///
/// Returns the number of bytes read (0 at end of stream). Received
/// descriptors are close-on-exec. If the kernel had to drop descriptors
/// because more arrived than fit (`MSG_CTRUNC`), the call fails with
/// `InvalidData` after keeping the ones that did arrive, so nothing is
/// silently lost.
pub(crate) fn recv_with_fds(
    socket: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut VecDeque<OwnedFd>,
    nonblocking: bool,
) -> io::Result<usize> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS_PER_SEND))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut flags = RecvFlags::CMSG_CLOEXEC;
    if nonblocking {
        flags |= RecvFlags::DONTWAIT;
    }
    let msg = rustix::net::recvmsg(socket, &mut [IoSliceMut::new(buf)], &mut control, flags)?;
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    if msg.flags.contains(ReturnFlags::CTRUNC) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "more file descriptors arrived than one message may carry; some were dropped",
        ));
    }
    Ok(msg.bytes)
}
