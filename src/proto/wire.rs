//! The frame: a tag, a big-endian u32 length and the payload; the tags,
//! the limits, and what can be wrong with a frame.

use std::fmt;

/// The environment variable that starts serve mode; its value is
/// `FD:VERSION`, `stdio:VERSION` or `mux:VERSION`.
pub(crate) const SERVE_MARKER: &str = "ANYFORK_SERVE";

/// The protocol version carried in the serve marker.
pub(crate) const PROTOCOL_VERSION: u32 = 1;

/// The serve marker's value for `connection` (a descriptor number,
/// `stdio` or `mux`): `connection:VERSION`.
pub(crate) fn marker_value(connection: impl fmt::Display) -> String {
    format!("{connection}:{PROTOCOL_VERSION}")
}

/// The environment entry `ANYFORK_SERVE=value` for a new serving process.
pub(crate) fn marker_entry(value: &str) -> std::io::Result<std::ffi::CString> {
    std::ffi::CString::new(format!("{SERVE_MARKER}={value}"))
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
}

/// Length of a frame header: tag and u32 length.
pub(crate) const HEADER_LEN: usize = 5;

/// The byte that carries a descriptor.
pub(crate) const FD_MARKER: u8 = b'!';

/// The largest frame a serving process accepts unless told otherwise: 1 GiB.
pub const DEFAULT_MAX_FRAME_LEN: u64 = 1 << 30;

/// The largest reply frame a parent accepts (pid or error message).
pub(crate) const MAX_REPLY_LEN: u64 = 64 * 1024;

/// Frame tags.
pub(crate) mod tag {
    pub(crate) const ARG: u8 = b'a';
    pub(crate) const FD: u8 = b'h';
    pub(crate) const EVAL: u8 = b'e';
    pub(crate) const REQUIRE: u8 = b'r';
    pub(crate) const FORK: u8 = b'f';
    pub(crate) const LIMIT: u8 = b'l';
    pub(crate) const RUN: u8 = b'x';
    pub(crate) const SYNC: u8 = b'i';
    pub(crate) const PARENT_DEATH: u8 = b'k';
    pub(crate) const CHDIR: u8 = b'c';
    pub(crate) const TITLE: u8 = b't';
    pub(crate) const ENVIRONMENT: u8 = b'v';
    pub(crate) const PID_REPLY: u8 = b'P';
    pub(crate) const IN_SYNC: u8 = b'I';
    pub(crate) const STARTED: u8 = b'S';
    pub(crate) const ERROR: u8 = b'E';
}

/// A frame tag, printed the way the protocol tables write it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Tag(pub(crate) u8);

impl Tag {
    /// The tag's byte.
    pub fn byte(self) -> u8 {
        self.0
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_ascii_graphic() {
            write!(f, "'{}'", self.0 as char)
        } else {
            write!(f, "0x{:02x}", self.0)
        }
    }
}

/// What was wrong with the bytes on a control socket.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The stream ended inside a frame.
    #[error("truncated frame {tag}: expected {expected} bytes, the stream ended after {got}")]
    Truncated {
        /// The frame's tag (0 if the header itself was cut short).
        tag: Tag,
        /// Bytes the frame needed.
        expected: u64,
        /// Bytes that arrived.
        got: u64,
    },
    /// A length prefix exceeds the receiver's limit.
    #[error("frame {tag} announces {len} bytes, more than the limit of {limit}")]
    TooLong {
        /// The frame's tag.
        tag: Tag,
        /// The announced length.
        len: u64,
        /// The receiver's limit.
        limit: u64,
    },
    /// The tag is not one this side understands.
    #[error("unknown frame tag {0}")]
    UnknownTag(Tag),
    /// A descriptor frame arrived without its descriptor.
    #[error("frame {tag} should carry a file descriptor, but none arrived with it")]
    MissingFd {
        /// The frame's tag.
        tag: Tag,
    },
    /// A descriptor arrived where none was announced.
    #[error("a file descriptor arrived that no frame announced")]
    UnexpectedFd,
    /// A process this program did not make claimed a pid that is not its
    /// own (or the kernel could not confirm it).
    #[error("the process claims to be process {claimed}, but the kernel says the sender is {}", match sender { Some(pid) => format!("process {pid}"), None => "unknown".to_owned() })]
    WrongPid {
        /// The pid it claimed.
        claimed: u32,
        /// The sender's pid, as the kernel says (`SCM_CREDENTIALS`).
        sender: Option<u32>,
    },
    /// A payload did not have the documented layout.
    #[error("malformed frame {tag}: {what}")]
    Malformed {
        /// The frame's tag.
        tag: Tag,
        /// What was wrong.
        what: &'static str,
    },
}

/// Why a serving process refused a command, as sent in an `E` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChildErrorKind {
    /// `run` or `eval` named a function the process does not have.
    UnknownFunction,
    /// An initialiser given to `eval` failed or panicked.
    InitialiserFailed,
    /// `require` could not load a library.
    RequireFailed,
    /// The command stream was malformed.
    Protocol,
    /// A template could not fork.
    ForkFailed,
    /// A function value was sent to a process running another executable.
    WrongExecutable,
    /// A template refused to fork because an initialiser or library started
    /// threads in it.
    Threaded,
    /// Anything else (the message says what).
    Other,
}

impl ChildErrorKind {
    pub(crate) fn code(self) -> u8 {
        match self {
            Self::UnknownFunction => 1,
            Self::InitialiserFailed => 2,
            Self::RequireFailed => 3,
            Self::Protocol => 4,
            Self::ForkFailed => 5,
            Self::WrongExecutable => 6,
            Self::Other => 7,
            Self::Threaded => 8,
        }
    }

    pub(crate) fn from_code(code: u8) -> Self {
        match code {
            1 => Self::UnknownFunction,
            2 => Self::InitialiserFailed,
            3 => Self::RequireFailed,
            4 => Self::Protocol,
            5 => Self::ForkFailed,
            6 => Self::WrongExecutable,
            8 => Self::Threaded,
            _ => Self::Other,
        }
    }
}

impl fmt::Display for ChildErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::UnknownFunction => "unknown function",
            Self::InitialiserFailed => "initialiser failed",
            Self::RequireFailed => "library could not be loaded",
            Self::Protocol => "protocol error",
            Self::ForkFailed => "fork failed",
            Self::WrongExecutable => "different executable",
            Self::Threaded => "template has threads",
            Self::Other => "error",
        })
    }
}

pub(super) fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub(super) fn put_len(out: &mut Vec<u8>, len: usize) -> Result<(), ProtocolError> {
    let len = u32::try_from(len).map_err(|_| ProtocolError::TooLong {
        tag: Tag(0),
        len: len as u64,
        limit: u32::MAX as u64,
    })?;
    put_u32(out, len);
    Ok(())
}

/// Takes bytes off the front of a payload.
pub(super) struct Cursor<'a> {
    pub(super) tag: u8,
    pub(super) rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub(super) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], ProtocolError> {
        if self.rest.len() < n {
            return Err(ProtocolError::Malformed {
                tag: Tag(self.tag),
                what,
            });
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    pub(super) fn u32(&mut self, what: &'static str) -> Result<u32, ProtocolError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(super) fn u64(&mut self, what: &'static str) -> Result<u64, ProtocolError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    pub(super) fn string(&mut self, n: usize, what: &'static str) -> Result<String, ProtocolError> {
        String::from_utf8(self.take(n, what)?.to_vec()).map_err(|_| ProtocolError::Malformed {
            tag: Tag(self.tag),
            what,
        })
    }

    pub(super) fn finish(&self, what: &'static str) -> Result<(), ProtocolError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(ProtocolError::Malformed {
                tag: Tag(self.tag),
                what,
            })
        }
    }
}
