//! The first frames: each side sends its [`Hello`], and each refuses a peer
//! that would misunderstand it (another multiplexing or template protocol,
//! another build, another target), naming both sides.

use std::io;
use std::time::{Duration, Instant};

use super::build_id::{TARGET, build_id};
use super::wire::{self, Frame, Hello, MUX_VERSION};
use crate::transport::Transport;

/// This program's hello.
pub(crate) fn ours(keepalive: Option<Duration>) -> Hello {
    Hello {
        mux_version: MUX_VERSION,
        protocol_version: crate::proto::PROTOCOL_VERSION,
        build_id: build_id().to_owned(),
        target: TARGET.to_owned(),
        pid: std::process::id(),
        exe: crate::sys::exe::identity(),
        keepalive_ms: keepalive.map_or(0, |k| k.as_millis().clamp(1, u32::MAX as u128) as u32),
    }
}

/// Why `theirs` cannot talk with `ours`, if it cannot.
pub(crate) fn mismatch(ours: &Hello, theirs: &Hello) -> Option<&'static str> {
    if ours.mux_version != theirs.mux_version {
        Some("multiplexing protocol")
    } else if ours.protocol_version != theirs.protocol_version {
        Some("template protocol")
    } else if ours.target != theirs.target {
        Some("target")
    } else if ours.build_id != theirs.build_id {
        Some("build")
    } else {
        None
    }
}

/// What reading a hello can find instead.
#[derive(Debug)]
pub(crate) enum Unheard {
    /// The stream ended.
    Ended,
    /// The peer said something that is not a hello.
    NotAnyfork(Vec<u8>),
    /// The peer gave up, saying why.
    Fatal(String),
    TimedOut,
    Io(io::Error),
}

/// Sends `hello` on `conn`.
pub(crate) fn send(conn: &Transport, hello: &Hello, deadline: Instant) -> io::Result<()> {
    let mut bytes = Vec::new();
    wire::encode(&Frame::Hello(hello.clone()), &mut bytes);
    conn.send_all_until(&bytes, deadline)
}

/// Reads the peer's hello; returns it and whatever came after it.
pub(crate) fn receive(conn: &Transport, deadline: Instant) -> Result<(Hello, Vec<u8>), Unheard> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match wire::decode(&got) {
            Ok(Some((Frame::Hello(hello), used))) => return Ok((hello, got.split_off(used))),
            Ok(Some((Frame::Fatal(why), _))) => return Err(Unheard::Fatal(why)),
            Ok(Some(_)) | Err(_) => return Err(Unheard::NotAnyfork(got)),
            Ok(None) if !wire::may_be_hello(&got) => return Err(Unheard::NotAnyfork(got)),
            Ok(None) => {}
        }
        match conn.recv_bytes_waiting(&mut buf, Some(deadline)) {
            Ok(0) => return Err(Unheard::Ended),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => return Err(Unheard::TimedOut),
            Err(e) => return Err(Unheard::Io(e)),
        }
    }
}

/// The far side's part: say hello, check the parent's; on a mismatch tell
/// the parent why (`X`) and give up.
pub(crate) fn answer(conn: &Transport) -> Result<(Hello, Vec<u8>), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let ours = ours(None);
    send(conn, &ours, deadline).map_err(|e| format!("saying hello: {e}"))?;
    let (theirs, rest) = receive(conn, deadline).map_err(|unheard| match unheard {
        Unheard::Ended => "the parent left before saying hello".to_owned(),
        Unheard::NotAnyfork(got) => format!(
            "the parent did not say hello; it said {:?}",
            String::from_utf8_lossy(&got[..got.len().min(80)])
        ),
        Unheard::Fatal(why) => format!("the parent gave up: {why}"),
        Unheard::TimedOut => "the parent did not say hello within 60 s".to_owned(),
        Unheard::Io(e) => format!("reading the parent's hello: {e}"),
    })?;
    if let Some(what) = mismatch(&ours, &theirs) {
        let why = format!("{what} mismatch: the parent runs {theirs}, this side runs {ours}");
        let mut bytes = Vec::new();
        wire::encode(&Frame::Fatal(why.clone()), &mut bytes);
        let _ = conn.send(&bytes, &[], false);
        return Err(why);
    }
    Ok((theirs, rest))
}
