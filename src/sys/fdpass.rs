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
//! - [`unix(7)`](https://man7.org/linux/man-pages/man7/unix.7.html) (`SCM_RIGHTS`, `SCM_CREDENTIALS`, `SO_PASSCRED`)

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

/// [`recv_with_fds`], also telling who sent the bytes: with `SO_PASSCRED`
/// set on `socket` (see [`pass_credentials`]) the kernel attaches the
/// sending process's pid to what it delivers (`SCM_CREDENTIALS`), and one
/// `recvmsg` never returns bytes of two senders. `sender` is set to that
/// pid, or to `None` when the kernel vouched for nobody (the option was off
/// when the bytes were sent, or the sender is in another pid namespace).
///
/// Written with libc's `recvmsg` because a pid of 0 is possible here, which
/// rustix's credentials type cannot hold.
pub(crate) fn recv_with_fds_from(
    socket: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut VecDeque<OwnedFd>,
    nonblocking: bool,
    sender: &mut Option<u32>,
) -> io::Result<usize> {
    use std::os::fd::{AsRawFd, FromRawFd};
    const FD_SIZE: usize = size_of::<libc::c_int>();
    // Room for both control messages, aligned as cmsghdr needs.
    let mut space = [0u64; 48];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = space.as_mut_ptr().cast();
    msg.msg_controllen = size_of_val(&space) as _;
    let mut flags = libc::MSG_CMSG_CLOEXEC;
    if nonblocking {
        flags |= libc::MSG_DONTWAIT;
    }
    // SAFETY: `msg` points at `iov` (which points into `buf`) and at
    // `space`, all alive and writable for the call, with their lengths.
    let got = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, flags) };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    *sender = None;
    // SAFETY: the kernel filled `msg` (control length included); the cmsg
    // macros walk only within msg_control..msg_controllen.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !cmsg.is_null() {
        // SAFETY: CMSG_FIRSTHDR/NXTHDR return headers inside the buffer.
        let header = unsafe { &*cmsg };
        // SAFETY: CMSG_DATA points just after a valid header.
        let data = unsafe { libc::CMSG_DATA(cmsg) };
        // SAFETY: CMSG_LEN is arithmetic.
        let payload = header.cmsg_len as usize - unsafe { libc::CMSG_LEN(0) } as usize;
        match (header.cmsg_level, header.cmsg_type) {
            (libc::SOL_SOCKET, libc::SCM_RIGHTS) => {
                for i in 0..payload / FD_SIZE {
                    // SAFETY: the payload holds `payload / FD_SIZE` ints.
                    let raw =
                        unsafe { data.add(i * FD_SIZE).cast::<libc::c_int>().read_unaligned() };
                    // SAFETY: the kernel installed this descriptor for us
                    // just now; nothing else owns it.
                    fds.push_back(unsafe { OwnedFd::from_raw_fd(raw) });
                }
            }
            (libc::SOL_SOCKET, libc::SCM_CREDENTIALS) if payload >= size_of::<libc::ucred>() => {
                // SAFETY: the payload holds one ucred.
                let credentials = unsafe { data.cast::<libc::ucred>().read_unaligned() };
                *sender = u32::try_from(credentials.pid).ok().filter(|&pid| pid != 0);
            }
            _ => {}
        }
        // SAFETY: as for CMSG_FIRSTHDR.
        cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "more file descriptors arrived than one message may carry; some were dropped",
        ));
    }
    Ok(got as usize)
}

/// `setsockopt(SO_PASSCRED)`: from now on the kernel tells, with every
/// message `socket` receives, which process sent it; see
/// [`recv_with_fds_from`]. Only bytes sent after this call carry a sender.
pub(crate) fn pass_credentials(socket: BorrowedFd<'_>) -> io::Result<()> {
    Ok(rustix::net::sockopt::set_socket_passcred(socket, true)?)
}
