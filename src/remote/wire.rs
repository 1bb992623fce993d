//! The multiplexing protocol's frames, both directions.
//!
//! A connection to another machine carries many channels, one per remote
//! process, in frames:
//!
//! ```text
//! kind: u8 | channel: u32 BE | length: u32 BE | payload (length bytes)
//! ```
//!
//! | kind | channel | payload | meaning |
//! | --- | --- | --- | --- |
//! | `H` | 0 | [`Hello`] | the first frame each side sends |
//! | `D` | n | bytes | bytes of channel n, at most [`MAX_DATA`]; only as many as the receiver granted |
//! | `C` | n | u32 | the receiver of channel n took that many more bytes: the sender may send as many more |
//! | `E` | n | none | the sender will send no more on channel n (its local end read end-of-file) |
//! | `R` | n | text | channel n is gone, and why (its process could not be started, its socket failed) |
//! | `O` | n | none | (to the far side only) start a fresh serving process on channel n |
//! | `F` | m | u32 n | at this point of channel m's bytes its sender attached a socket: channel n is the other end's new socket, to be attached to the next bytes of m delivered |
//! | `W` | 0 | u32 pid, i32 status | (to the parent only) a process of the far side ended: its wait status |
//! | `K` | 0 | u32 pid, i32 signal | (to the far side only) send a signal to one of its processes (one it started or that its templates forked; any other pid is ignored) |
//! | `P` / `Q` | 0 | u64 | keepalive: ping, and the pong that echoes it |
//! | `X` | 0 | text | the sender gives up on the connection, and why |
//!
//! Flow control is per channel: a sender starts with [`WINDOW`] bytes of
//! credit per channel and spends it with `D` frames; the receiver buffers
//! what it has not yet written to the channel's local socket, and grants
//! credit (`C`) as it writes. A slow process therefore fills only its own
//! window: the connection never waits for it, and the other channels go on.
//!
//! Channel numbers: the parent numbers the channels it opens (`O`, and `F`
//! it sends) below 2³¹; the far side numbers its `F` channels from 2³¹ up.
//!
//! Every decoder bounds what it accepts: a frame longer than
//! [`MAX_PAYLOAD`] is an error before any of it is buffered.

use std::fmt;

/// Bytes of credit per channel and direction at the start.
pub(crate) const WINDOW: u32 = 512 * 1024;
/// The most bytes one `D` frame carries.
pub(crate) const MAX_DATA: usize = 64 * 1024;
/// The largest payload of any frame.
pub(crate) const MAX_PAYLOAD: u32 = MAX_DATA as u32;
/// The length of a frame's header.
pub(crate) const HEADER: usize = 9;
/// The first channel number the far side gives out.
pub(crate) const FAR_CHANNELS: u32 = 1 << 31;
/// The version of this protocol (the hello's), independent of the
/// template protocol's.
pub(crate) const MUX_VERSION: u32 = 1;
/// What a hello starts with: a peer that says anything else is not
/// anyfork.
pub(crate) const MAGIC: &[u8; 12] = b"anyfork-mux\n";

/// The kinds of frames.
pub(crate) mod kind {
    pub(crate) const HELLO: u8 = b'H';
    pub(crate) const DATA: u8 = b'D';
    pub(crate) const CREDIT: u8 = b'C';
    pub(crate) const END: u8 = b'E';
    pub(crate) const RESET: u8 = b'R';
    pub(crate) const OPEN: u8 = b'O';
    pub(crate) const SOCKET: u8 = b'F';
    pub(crate) const EXITED: u8 = b'W';
    pub(crate) const KILL: u8 = b'K';
    pub(crate) const PING: u8 = b'P';
    pub(crate) const PONG: u8 = b'Q';
    pub(crate) const FATAL: u8 = b'X';
}

/// One decoded frame.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    Hello(Hello),
    Data(u32, Vec<u8>),
    Credit(u32, u32),
    End(u32),
    Reset(u32, String),
    Open(u32),
    Socket { on: u32, new: u32 },
    Exited { pid: u32, status: i32 },
    Kill { pid: u32, signal: i32 },
    Ping(u64),
    Pong(u64),
    Fatal(String),
}

/// What each side says first: enough to refuse a peer that would
/// misunderstand us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The multiplexing protocol's version.
    pub mux_version: u32,
    /// The template protocol's version.
    pub protocol_version: u32,
    /// The build: a hash of the executable file (see
    /// [`build_id`](super::build_id)).
    pub build_id: String,
    /// The target triple the program was built for.
    pub target: String,
    /// The sender's pid, in its own pid namespace.
    pub pid: u32,
    /// Identifies the executable file on its machine (device, inode, size,
    /// modification time): function values are named by offset in it.
    pub(crate) exe: [u64; 4],
    /// How often the sender pings (milliseconds; 0: never): the other side
    /// may give up on a connection silent for much longer.
    pub keepalive_ms: u32,
}

impl fmt::Display for Hello {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "build {} for {} (protocol {}, multiplexing {})",
            self.build_id, self.target, self.protocol_version, self.mux_version
        )
    }
}

/// Why bytes are not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum WireError {
    #[error(
        "a frame of kind {kind:?} on channel {channel} is {len} bytes long, more than the {MAX_PAYLOAD} allowed"
    )]
    TooLong { kind: char, channel: u32, len: u32 },
    #[error("unknown frame kind {0:?}")]
    UnknownKind(char),
    #[error("a frame of kind {kind:?} is malformed: {what}")]
    Malformed { kind: char, what: &'static str },
}

/// Appends the encoding of `frame` to `out`.
pub(crate) fn encode(frame: &Frame, out: &mut Vec<u8>) {
    let mut header = |kind: u8, channel: u32, len: usize| {
        out.push(kind);
        out.extend_from_slice(&channel.to_be_bytes());
        out.extend_from_slice(&(len as u32).to_be_bytes());
    };
    match frame {
        Frame::Hello(hello) => {
            let payload = encode_hello(hello);
            header(kind::HELLO, 0, payload.len());
            out.extend_from_slice(&payload);
        }
        Frame::Data(channel, bytes) => {
            header(kind::DATA, *channel, bytes.len());
            out.extend_from_slice(bytes);
        }
        Frame::Credit(channel, n) => {
            header(kind::CREDIT, *channel, 4);
            out.extend_from_slice(&n.to_be_bytes());
        }
        Frame::End(channel) => header(kind::END, *channel, 0),
        Frame::Reset(channel, why) => {
            let why = clip(why);
            header(kind::RESET, *channel, why.len());
            out.extend_from_slice(why);
        }
        Frame::Open(channel) => header(kind::OPEN, *channel, 0),
        Frame::Socket { on, new } => {
            header(kind::SOCKET, *on, 4);
            out.extend_from_slice(&new.to_be_bytes());
        }
        Frame::Exited { pid, status } => {
            header(kind::EXITED, 0, 8);
            out.extend_from_slice(&pid.to_be_bytes());
            out.extend_from_slice(&status.to_be_bytes());
        }
        Frame::Kill { pid, signal } => {
            header(kind::KILL, 0, 8);
            out.extend_from_slice(&pid.to_be_bytes());
            out.extend_from_slice(&signal.to_be_bytes());
        }
        Frame::Ping(n) => {
            header(kind::PING, 0, 8);
            out.extend_from_slice(&n.to_be_bytes());
        }
        Frame::Pong(n) => {
            header(kind::PONG, 0, 8);
            out.extend_from_slice(&n.to_be_bytes());
        }
        Frame::Fatal(why) => {
            let why = clip(why);
            header(kind::FATAL, 0, why.len());
            out.extend_from_slice(why);
        }
    }
}

/// A message's bytes, cut to fit in a frame.
fn clip(text: &str) -> &[u8] {
    let bytes = text.as_bytes();
    &bytes[..bytes.len().min(MAX_DATA)]
}

/// Decodes the frame at the start of `buf`: `Ok(None)` if it is not all
/// there yet, else the frame and how many bytes it took.
pub(crate) fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, WireError> {
    if buf.len() < HEADER {
        return Ok(None);
    }
    let kind = buf[0];
    let channel = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    let len = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]);
    let known = b"HDCEROFWKPQX".contains(&kind);
    if !known {
        return Err(WireError::UnknownKind(kind as char));
    }
    if len > MAX_PAYLOAD {
        return Err(WireError::TooLong {
            kind: kind as char,
            channel,
            len,
        });
    }
    let end = HEADER + len as usize;
    if buf.len() < end {
        return Ok(None);
    }
    let payload = &buf[HEADER..end];
    let malformed = |what| WireError::Malformed {
        kind: kind as char,
        what,
    };
    let u32_at = |at: usize| -> Result<u32, WireError> {
        payload
            .get(at..at + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| malformed("too short"))
    };
    let u64_at = || -> Result<u64, WireError> {
        let b: [u8; 8] = payload
            .try_into()
            .map_err(|_| malformed("not 8 bytes long"))?;
        Ok(u64::from_be_bytes(b))
    };
    let text = || String::from_utf8_lossy(payload).into_owned();
    let frame = match kind {
        kind::HELLO => Frame::Hello(decode_hello(payload).ok_or_else(|| malformed("bad hello"))?),
        kind::DATA => Frame::Data(channel, payload.to_vec()),
        kind::CREDIT => Frame::Credit(channel, u32_at(0)?),
        kind::END => Frame::End(channel),
        kind::RESET => Frame::Reset(channel, text()),
        kind::OPEN => Frame::Open(channel),
        kind::SOCKET => Frame::Socket {
            on: channel,
            new: u32_at(0)?,
        },
        kind::EXITED => Frame::Exited {
            pid: u32_at(0)?,
            status: u32_at(4)? as i32,
        },
        kind::KILL => Frame::Kill {
            pid: u32_at(0)?,
            signal: u32_at(4)? as i32,
        },
        kind::PING => Frame::Ping(u64_at()?),
        kind::PONG => Frame::Pong(u64_at()?),
        _ => Frame::Fatal(text()),
    };
    Ok(Some((frame, end)))
}

fn encode_hello(hello: &Hello) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&hello.mux_version.to_be_bytes());
    out.extend_from_slice(&hello.protocol_version.to_be_bytes());
    for text in [&hello.build_id, &hello.target] {
        let bytes = &text.as_bytes()[..text.len().min(255)];
        out.push(bytes.len() as u8);
        out.extend_from_slice(bytes);
    }
    out.extend_from_slice(&hello.pid.to_be_bytes());
    for part in hello.exe {
        out.extend_from_slice(&part.to_be_bytes());
    }
    out.extend_from_slice(&hello.keepalive_ms.to_be_bytes());
    out
}

fn decode_hello(payload: &[u8]) -> Option<Hello> {
    let mut rest = payload.strip_prefix(MAGIC.as_slice())?;
    let mut take = |n: usize| -> Option<&[u8]> {
        let (head, tail) = rest.split_at_checked(n)?;
        rest = tail;
        Some(head)
    };
    let u32_of = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let mux_version = u32_of(take(4)?);
    let protocol_version = u32_of(take(4)?);
    let mut text = || -> Option<String> {
        let len = take(1)?[0] as usize;
        Some(String::from_utf8_lossy(take(len)?).into_owned())
    };
    let build_id = text()?;
    let target = text()?;
    let pid = u32_of(take(4)?);
    let mut exe = [0u64; 4];
    for part in &mut exe {
        let b = take(8)?;
        *part = u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
    }
    let keepalive_ms = u32_of(take(4)?);
    Some(Hello {
        mux_version,
        protocol_version,
        build_id,
        target,
        pid,
        exe,
        keepalive_ms,
    })
}

/// Whether `bytes` (the first a peer sent) can still become a hello: for
/// telling "not anyfork at all" from "not all there yet".
pub(crate) fn may_be_hello(bytes: &[u8]) -> bool {
    let header = [kind::HELLO, 0, 0, 0, 0];
    let n = bytes.len().min(header.len());
    if bytes[..n] != header[..n] {
        return false;
    }
    let after = bytes.get(HEADER..).unwrap_or_default();
    let m = after.len().min(MAGIC.len());
    after[..m] == MAGIC[..m]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> Hello {
        Hello {
            mux_version: MUX_VERSION,
            protocol_version: 1,
            build_id: "abc".into(),
            target: "x86_64-unknown-linux-gnu".into(),
            pid: 42,
            exe: [1, 2, 3, 4],
            keepalive_ms: 500,
        }
    }

    #[test]
    fn every_frame_survives_a_round_trip() {
        let frames = vec![
            Frame::Hello(hello()),
            Frame::Data(7, b"bytes".to_vec()),
            Frame::Credit(7, 1000),
            Frame::End(7),
            Frame::Reset(3, "gone".into()),
            Frame::Open(9),
            Frame::Socket { on: 9, new: 10 },
            Frame::Exited { pid: 5, status: -1 },
            Frame::Kill { pid: 5, signal: 9 },
            Frame::Ping(77),
            Frame::Pong(77),
            Frame::Fatal("no".into()),
        ];
        let mut bytes = Vec::new();
        for frame in &frames {
            encode(frame, &mut bytes);
        }
        let mut decoded = Vec::new();
        let mut at = 0;
        while let Some((frame, used)) = decode(&bytes[at..]).unwrap() {
            decoded.push(frame);
            at += used;
        }
        assert_eq!(decoded, frames);
        // Every prefix short of a frame is "not yet".
        let mut one = Vec::new();
        encode(&Frame::Hello(hello()), &mut one);
        for n in 0..one.len() {
            assert_eq!(decode(&one[..n]).unwrap(), None);
            assert!(may_be_hello(&one[..n]));
        }
    }

    #[test]
    fn bad_input_is_an_error_not_an_allocation() {
        let mut huge = vec![kind::DATA, 0, 0, 0, 1];
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(decode(&huge), Err(WireError::TooLong { .. })));
        assert!(matches!(
            decode(b"Z\0\0\0\0\0\0\0\0"),
            Err(WireError::UnknownKind('Z'))
        ));
        assert!(matches!(
            decode(b"C\0\0\0\x01\0\0\0\x01x"),
            Err(WireError::Malformed { .. })
        ));
        assert!(matches!(
            decode(b"H\0\0\0\0\0\0\0\x03abc"),
            Err(WireError::Malformed { .. })
        ));
        assert!(!may_be_hello(b"bash: prog: command not found"));
    }
}
