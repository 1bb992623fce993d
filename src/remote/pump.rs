//! The multiplexer: one thread that carries many local sockets over one
//! connection, in the frames of [`super::wire`].
//!
//! Both ends run the same pump. Each channel has a local unix socket: on the
//! parent's side the other end of it is a [`Fork`](crate::Fork)'s link (or
//! the stream `run` returned); on the far side it is a serving process's
//! control socket. The pump reads what a local socket says and sends it as
//! `D` frames while the channel has credit; it writes what arrives for a
//! channel to its socket, buffering at most one window, and grants credit
//! back as the socket takes it.
//!
//! Descriptors cannot cross machines, but one kind can be recreated: a
//! socket sent on a channel (the end a template's new process gets, with
//! `fork`) becomes a new channel (`F`), and the far side attaches its own
//! new socket to the same place in the channel's bytes. Any other
//! descriptor resets the channel, saying why.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};

use super::wire::{self, Frame, MAX_DATA, WINDOW};
use crate::proto::{self, ChildErrorKind, Reply};
use crate::sys::{fdpass, fds};
use crate::transport::{self, Transport};

/// What one end of the pump does that the other does not.
pub(crate) trait Side {
    /// Opens channel `n` for the peer's `O`: a local socket whose other end
    /// a new serving process holds.
    fn open(&mut self, channel: u32) -> Result<OwnedFd, String>;
    /// A fresh channel number for an `F` this side sends.
    fn next_channel(&mut self) -> u32;
    /// A descriptor to wait on beside the sockets, and what to do when it
    /// is readable or on every turn: new channels to add (number, local
    /// socket), frames to send.
    fn wake_fd(&self) -> Option<BorrowedFd<'_>>;
    fn turn(&mut self, out: &mut Vec<Frame>) -> Vec<(u32, OwnedFd)>;
    /// Whether the pump is done (asked after each turn).
    fn done(&self, channels: usize) -> bool;
    /// The longest the pump sleeps without a turn.
    fn tick(&self) -> Option<Duration>;
    /// A process of the far side ended.
    fn exited(&mut self, _pid: u32, _status: i32) {}
    /// The peer asks for `signal` to be sent to process `pid`.
    fn kill(&mut self, _pid: u32, _signal: i32) {}
    /// The connection is lost (called before any channel's socket is
    /// closed, so that whoever sees a socket close can learn why).
    fn lost(&mut self, _why: &str) {}
    /// Whether a channel's local end speaks the template protocol as a
    /// parent (and so can be told why its process never answered).
    fn explains_locally(&self) -> bool;
}

/// How a pump ended.
#[derive(Debug)]
pub(crate) enum Ended {
    /// The side was done.
    Done,
    /// The connection ended or failed: why.
    Lost(String),
}

/// Keepalive settings: ping every `interval`; give up after `timeout`
/// without a frame.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Keepalive {
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
}

/// What arrives for a local socket and has not been written to it.
#[derive(Debug)]
enum Piece {
    Bytes(Vec<u8>, usize),
    Socket(OwnedFd),
}

#[derive(Debug)]
struct Channel {
    socket: OwnedFd,
    /// Bytes this side may still send on the channel.
    credit: u32,
    to_local: VecDeque<Piece>,
    /// Bytes written to the socket and not yet granted back.
    ungranted: u32,
    /// Bytes the peer may still send before we grant more.
    peer_credit: u32,
    /// Whether anything arrived from the peer yet.
    heard: bool,
    /// The local socket said end of stream (and `E` went out).
    local_eof: bool,
    /// The peer sent `E`.
    peer_eof: bool,
    /// The socket's writing direction is shut.
    shut: bool,
}

impl Channel {
    fn new(socket: OwnedFd) -> io::Result<Channel> {
        rustix::io::ioctl_fionbio(&socket, true)?;
        Ok(Channel {
            socket,
            credit: WINDOW,
            to_local: VecDeque::new(),
            ungranted: 0,
            peer_credit: WINDOW,
            heard: false,
            local_eof: false,
            peer_eof: false,
            shut: false,
        })
    }

    fn finished(&self) -> bool {
        self.local_eof && self.shut
    }
}

/// Stop reading local sockets while this much waits for the connection.
const OUT_HIGH: usize = 1 << 20;

/// The multiplexer over one connection.
pub(crate) struct Pump {
    conn: Transport,
    channels: HashMap<u32, Channel>,
    inbound: Vec<u8>,
    out: Vec<u8>,
    out_at: usize,
    keepalive: Option<Keepalive>,
    last_heard: Instant,
    last_ping: Instant,
    pings: u64,
    scratch: Vec<u8>,
}

impl Pump {
    /// A pump over `conn`; `inbound` is what was read past the hello.
    pub(crate) fn new(conn: Transport, inbound: Vec<u8>, keepalive: Option<Keepalive>) -> Pump {
        Pump {
            conn,
            channels: HashMap::new(),
            inbound,
            out: Vec::new(),
            out_at: 0,
            keepalive,
            last_heard: Instant::now(),
            last_ping: Instant::now(),
            pings: 0,
            scratch: vec![0; MAX_DATA],
        }
    }

    fn send(&mut self, frame: &Frame) {
        wire::encode(frame, &mut self.out);
    }

    /// Runs until the side is done or the connection ends; every local
    /// socket is closed when it returns (their processes see the end).
    pub(crate) fn run(&mut self, side: &mut dyn Side) -> Ended {
        let ended = self.pump(side);
        if let Ended::Lost(why) = &ended {
            side.lost(why);
            self.lose_all(why, side.explains_locally());
        }
        ended
    }

    /// Ends the connection (the peer reads its end).
    pub(crate) fn close(&mut self) {
        self.conn.shutdown_both();
    }

    fn pump(&mut self, side: &mut dyn Side) -> Ended {
        // Frames that came with the hello.
        if let Err(why) = self.take_inbound(side) {
            return Ended::Lost(why);
        }
        loop {
            let mut frames = Vec::new();
            for (n, socket) in side.turn(&mut frames) {
                self.add(n, socket);
            }
            for frame in &frames {
                self.send(frame);
            }
            if let Some(why) = self.keep_alive() {
                return Ended::Lost(why);
            }
            if let Err(e) = self.flush() {
                return Ended::Lost(format!("writing to the connection: {e}"));
            }
            if side.done(self.channels.len()) {
                let _ = self.flush_for(Duration::from_secs(5));
                return Ended::Done;
            }
            match self.wait(side) {
                Ok(Some(why)) => return Ended::Lost(why),
                Ok(None) => {}
                Err(e) => return Ended::Lost(format!("waiting: {e}")),
            }
        }
    }

    /// Adds channel `n` on `socket`.
    pub(crate) fn add(&mut self, n: u32, socket: OwnedFd) {
        match Channel::new(socket) {
            Ok(channel) => {
                self.channels.insert(n, channel);
            }
            Err(e) => self.send(&Frame::Reset(n, format!("cannot use its socket: {e}"))),
        }
    }

    /// Pings when due; says why the connection is dead when it is.
    fn keep_alive(&mut self) -> Option<String> {
        let keepalive = self.keepalive?;
        let now = Instant::now();
        let silent = now.duration_since(self.last_heard);
        if silent >= keepalive.timeout {
            return Some(format!(
                "no word from the far side for {} ms (keepalive timeout {} ms)",
                silent.as_millis(),
                keepalive.timeout.as_millis()
            ));
        }
        if now.duration_since(self.last_ping) >= keepalive.interval {
            self.pings += 1;
            let n = self.pings;
            self.send(&Frame::Ping(n));
            self.last_ping = now;
        }
        None
    }

    /// Writes what it can of the outgoing bytes without waiting.
    fn flush(&mut self) -> io::Result<()> {
        while self.out_at < self.out.len() {
            match self.conn.send(&self.out[self.out_at..], &[], true) {
                Ok(n) => self.out_at += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.out_at == self.out.len() {
            self.out.clear();
            self.out_at = 0;
        } else if self.out_at > OUT_HIGH {
            self.out.drain(..self.out_at);
            self.out_at = 0;
        }
        Ok(())
    }

    /// Flushes, waiting up to `limit`.
    fn flush_for(&mut self, limit: Duration) -> io::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            self.flush()?;
            if self.out.is_empty() || !self.conn.wait_writable_until(Some(deadline))? {
                return Ok(());
            }
        }
    }

    /// One `poll` of everything, then the work it found.
    fn wait(&mut self, side: &mut dyn Side) -> io::Result<Option<String>> {
        let room = self.out.len() - self.out_at < OUT_HIGH;
        // Which sockets to watch, for what. A socket that said end-of-file
        // is still watched for its closing (`POLLHUP` comes without being
        // asked for); one that only waits for credit is not (it would keep
        // reporting its end).
        let mut watched: Vec<(u32, PollFlags)> = Vec::with_capacity(self.channels.len());
        for (n, channel) in &self.channels {
            let mut flags = PollFlags::empty();
            if room && channel.credit > 0 && !channel.local_eof {
                flags |= PollFlags::IN;
            }
            if writable_piece(&channel.to_local) {
                flags |= PollFlags::OUT;
            }
            if !flags.is_empty() || channel.local_eof {
                watched.push((*n, flags));
            }
        }
        let mut timeout = side.tick();
        if let Some(keepalive) = self.keepalive {
            let next = keepalive.interval.min(keepalive.timeout / 2);
            timeout = Some(timeout.map_or(next, |t| t.min(next)));
        }
        let ready = {
            let mut polled = Vec::with_capacity(watched.len() + 3);
            let (read_fd, write_fd) = (self.conn.read_fd(), self.conn.write_fd());
            polled.push(PollFd::new(&read_fd, PollFlags::IN));
            let want_out = if self.out_at < self.out.len() {
                PollFlags::OUT
            } else {
                PollFlags::empty()
            };
            polled.push(PollFd::new(&write_fd, want_out));
            let wake = side.wake_fd();
            let wake_flags = if wake.is_some() {
                PollFlags::IN
            } else {
                PollFlags::empty()
            };
            polled.push(PollFd::new(wake.as_ref().unwrap_or(&read_fd), wake_flags));
            for (n, flags) in &watched {
                polled.push(PollFd::new(&self.channels[n].socket, *flags));
            }
            let timeout = timeout.and_then(|t| rustix::fs::Timespec::try_from(t).ok());
            match rustix::event::poll(&mut polled, timeout.as_ref()) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => return Ok(None),
                Err(e) => return Err(e.into()),
            }
            polled.iter().map(|p| p.revents()).collect::<Vec<_>>()
        };
        if !ready[0].is_empty() {
            if let Some(why) = self.read_connection(side) {
                return Ok(Some(why));
            }
        }
        for ((n, asked), events) in watched.iter().zip(&ready[3..]) {
            if events.is_empty() {
                continue;
            }
            if !asked.is_empty() {
                self.serve_channel(*n, *asked, *events, side);
            } else if events.contains(PollFlags::HUP) {
                // Its end was closed, not just shut for writing: nobody
                // reads what the far side still says.
                self.reset(*n, "its socket was closed");
            }
        }
        self.channels.retain(|_, c| !c.finished());
        self.flush()?;
        Ok(None)
    }

    /// Reads from the connection and handles every whole frame.
    fn read_connection(&mut self, side: &mut dyn Side) -> Option<String> {
        let mut fds = VecDeque::new();
        for _ in 0..64 {
            let read = self.conn.recv(&mut self.scratch, &mut fds, true);
            match read {
                Ok(0) => return Some("the far side closed the connection".into()),
                Ok(n) => {
                    self.inbound.extend_from_slice(&self.scratch[..n]);
                    self.last_heard = Instant::now();
                    if let Err(why) = self.take_inbound(side) {
                        return Some(why);
                    }
                }
                Err(e) => {
                    return match e.kind() {
                        io::ErrorKind::WouldBlock => None,
                        io::ErrorKind::Interrupted => continue,
                        _ => Some(format!("reading from the connection: {e}")),
                    };
                }
            }
        }
        None
    }

    /// Handles every whole frame in `inbound`.
    fn take_inbound(&mut self, side: &mut dyn Side) -> Result<(), String> {
        let mut at = 0;
        let result = loop {
            match wire::decode(&self.inbound[at..]) {
                Ok(Some((frame, used))) => {
                    at += used;
                    if let Err(why) = self.handle(frame, side) {
                        break Err(why);
                    }
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(format!("the far side sent a bad frame: {e}")),
            }
        };
        self.inbound.drain(..at);
        result
    }

    fn handle(&mut self, frame: Frame, side: &mut dyn Side) -> Result<(), String> {
        match frame {
            Frame::Data(n, bytes) => {
                let Some(channel) = self.channels.get_mut(&n) else {
                    // A channel this side reset: its bytes have no place.
                    return Ok(());
                };
                let len = bytes.len() as u32;
                if len > channel.peer_credit {
                    return Err(format!(
                        "the far side sent {len} bytes on channel {n} with only {} of credit",
                        channel.peer_credit
                    ));
                }
                channel.peer_credit -= len;
                channel.heard = true;
                if !channel.shut && !bytes.is_empty() {
                    channel.to_local.push_back(Piece::Bytes(bytes, 0));
                }
                self.write_local(n);
            }
            Frame::Credit(n, more) => {
                if let Some(channel) = self.channels.get_mut(&n) {
                    channel.credit = channel.credit.saturating_add(more);
                }
            }
            Frame::End(n) => {
                if let Some(channel) = self.channels.get_mut(&n) {
                    channel.peer_eof = true;
                    channel.heard = true;
                }
                self.write_local(n);
            }
            Frame::Reset(n, why) => {
                if let Some(channel) = self.channels.remove(&n) {
                    if !channel.heard && side.explains_locally() {
                        // Still in the template protocol: say why as a
                        // serving process would have.
                        refuse(&channel.socket, &why);
                    }
                }
            }
            Frame::Open(n) => match side.open(n) {
                Ok(socket) => self.add(n, socket),
                Err(why) => self.send(&Frame::Reset(n, why)),
            },
            Frame::Socket { on, new } => {
                let (ours, theirs) = transport::socketpair()
                    .map_err(|e| format!("cannot make a socket for channel {new}: {e}"))?;
                match self.channels.get_mut(&on) {
                    Some(channel) if !channel.shut => {
                        channel.to_local.push_back(Piece::Socket(theirs));
                        self.add(new, ours);
                    }
                    _ => self.send(&Frame::Reset(new, format!("channel {on} is gone"))),
                }
            }
            Frame::Exited { pid, status } => side.exited(pid, status),
            Frame::Kill { pid, signal } => side.kill(pid, signal),
            Frame::Ping(n) => self.send(&Frame::Pong(n)),
            Frame::Pong(_) => {}
            Frame::Hello(_) => return Err("the far side said hello twice".into()),
            Frame::Fatal(why) => return Err(format!("the far side gave up: {why}")),
        }
        Ok(())
    }

    /// Local socket `n` is ready for `events` (asked: `asked`).
    fn serve_channel(&mut self, n: u32, asked: PollFlags, events: PollFlags, side: &mut dyn Side) {
        let trouble = events.intersects(PollFlags::HUP | PollFlags::ERR);
        if asked.contains(PollFlags::OUT) && (events.contains(PollFlags::OUT) || trouble) {
            self.write_local(n);
        }
        if asked.contains(PollFlags::IN) && (events.contains(PollFlags::IN) || trouble) {
            self.read_local(n, side);
        }
    }

    /// Reads what local socket `n` says, within its credit.
    fn read_local(&mut self, n: u32, side: &mut dyn Side) {
        let Some(channel) = self.channels.get_mut(&n) else {
            return;
        };
        let want = (channel.credit as usize).min(MAX_DATA);
        let mut fds = VecDeque::new();
        let read = fdpass::recv_with_fds(
            channel.socket.as_fd(),
            &mut self.scratch[..want],
            &mut fds,
            true,
        );
        let mut frames = Vec::new();
        for fd in fds {
            if fds::check_unix_stream(fd.as_fd()).is_ok() {
                let new = side.next_channel();
                frames.push(Frame::Socket { on: n, new });
                self.add(new, fd);
            } else {
                let why = "a descriptor that is not a socket cannot travel to another machine";
                self.reset(n, why);
                for frame in &frames {
                    self.send(frame);
                }
                return;
            }
        }
        for frame in &frames {
            self.send(frame);
        }
        let Some(channel) = self.channels.get_mut(&n) else {
            return;
        };
        match read {
            Ok(0) => {
                channel.local_eof = true;
                self.send(&Frame::End(n));
            }
            Ok(got) => {
                channel.credit -= got as u32;
                let frame = Frame::Data(n, self.scratch[..got].to_vec());
                self.send(&frame);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(e) if transport::is_peer_gone(&e) => {
                channel.local_eof = true;
                self.send(&Frame::End(n));
            }
            Err(e) => self.reset(n, &format!("reading its socket: {e}")),
        }
    }

    /// Writes what is waiting for local socket `n`; shuts its writing
    /// direction once the peer's end has been written.
    fn write_local(&mut self, n: u32) {
        let Some(channel) = self.channels.get_mut(&n) else {
            return;
        };
        let mut written = 0u32;
        let mut failed = None;
        while !channel.to_local.is_empty() {
            // Sockets travel with the next bytes.
            let sockets = channel
                .to_local
                .iter()
                .take_while(|p| matches!(p, Piece::Socket(_)))
                .count()
                .min(fdpass::MAX_FDS_PER_SEND);
            let bytes = match channel.to_local.get(sockets) {
                Some(Piece::Bytes(bytes, at)) => &bytes[*at..],
                _ => break,
            };
            let fds: Vec<BorrowedFd<'_>> = channel
                .to_local
                .iter()
                .take(sockets)
                .filter_map(|p| match p {
                    Piece::Socket(fd) => Some(fd.as_fd()),
                    Piece::Bytes(..) => None,
                })
                .collect();
            match fdpass::send_with_fds(channel.socket.as_fd(), bytes, &fds, true) {
                Ok(sent) => {
                    drop(fds);
                    channel.to_local.drain(..sockets);
                    written += sent as u32;
                    if let Some(Piece::Bytes(bytes, at)) = channel.to_local.front_mut() {
                        *at += sent;
                        if *at == bytes.len() {
                            channel.to_local.pop_front();
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = failed {
            let why = if transport::is_peer_gone(&e) {
                // The process closed its end: it reads no more.
                "its process closed its socket".to_owned()
            } else {
                format!("writing to its socket: {e}")
            };
            self.reset(n, &why);
            return;
        }
        channel.ungranted += written;
        if channel.ungranted >= WINDOW / 4
            || (channel.to_local.is_empty() && channel.peer_credit < WINDOW / 2)
        {
            let more = channel.ungranted;
            channel.ungranted = 0;
            channel.peer_credit += more;
            if more > 0 {
                self.send(&Frame::Credit(n, more));
            }
        }
        let Some(channel) = self.channels.get_mut(&n) else {
            return;
        };
        if channel.peer_eof && !channel.shut && !channel.to_local.iter().any(is_bytes) {
            channel.to_local.clear();
            channel.shut = true;
            let _ = rustix::net::shutdown(&channel.socket, rustix::net::Shutdown::Write);
        }
    }

    /// Drops channel `n`, telling the peer why.
    fn reset(&mut self, n: u32, why: &str) {
        self.channels.remove(&n);
        self.send(&Frame::Reset(n, why.to_owned()));
    }

    /// The connection is gone: every channel's process hears why where it
    /// can (a channel still in the template protocol gets an error frame),
    /// and sees its socket close.
    fn lose_all(&mut self, why: &str, explain: bool) {
        for (_, channel) in self.channels.drain() {
            if explain && !channel.heard {
                refuse(&channel.socket, why);
            }
        }
    }
}

fn is_bytes(piece: &Piece) -> bool {
    matches!(piece, Piece::Bytes(..))
}

fn writable_piece(pieces: &VecDeque<Piece>) -> bool {
    pieces.iter().any(is_bytes)
}

/// Writes a serving process's refusal into a local socket whose channel
/// never carried a byte from the far side: the parent's link reads it as
/// the process's answer.
fn refuse(socket: &OwnedFd, why: &str) {
    let reply = Reply::Error {
        kind: ChildErrorKind::Other,
        message: why.to_owned(),
    };
    let _ = fdpass::send_with_fds(socket.as_fd(), &proto::encode_reply(&reply), &[], true);
}
