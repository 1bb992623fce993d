//! [`Fd`]: a file descriptor inside an RPC message, with any codec.
//!
//! While a codec encodes, every `Fd` it meets is duplicated into a list and
//! written as its index in that list; the list travels beside the bytes
//! (`SCM_RIGHTS`). While a codec decodes, the descriptors that came with the
//! message are offered by index, each taken at most once.

use std::cell::RefCell;
use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use serde::de::{self, Deserializer, Visitor};
use serde::ser::{self, Serialize, Serializer};

/// The serde newtype name that marks an [`Fd`] (the raw codec gives it one
/// string of its own).
pub(crate) const FD_NAME: &str = "anyfork::rpc::Fd";

thread_local! {
    /// Descriptors collected while encoding.
    static FDS_OUT: RefCell<Option<Vec<OwnedFd>>> = const { RefCell::new(None) };
    /// Descriptors available while decoding, taken by index.
    static FDS_IN: RefCell<Option<Vec<Option<OwnedFd>>>> = const { RefCell::new(None) };
}

/// Runs `encode`, collecting the descriptors of the `Fd`s it encodes.
pub(crate) fn collecting<T>(encode: impl FnOnce() -> T) -> (T, Vec<OwnedFd>) {
    let previous = FDS_OUT.with(|slot| slot.replace(Some(Vec::new())));
    let result = encode();
    let fds = FDS_OUT
        .with(|slot| slot.replace(previous))
        .unwrap_or_default();
    (result, fds)
}

/// Runs `decode` with `fds` offered to the `Fd`s it decodes.
pub(crate) fn providing<T>(fds: Vec<OwnedFd>, decode: impl FnOnce() -> T) -> T {
    let previous = FDS_IN.with(|slot| slot.replace(Some(fds.into_iter().map(Some).collect())));
    let result = decode();
    FDS_IN.with(|slot| slot.replace(previous));
    result
}

/// A file descriptor inside an RPC message (argument, result or event).
///
/// It is encoded as an index into the descriptors that travel with the
/// message (`SCM_RIGHTS`); the receiving side gets its own copy. Encoding
/// duplicates the descriptor, so the sender keeps its own until the value is
/// dropped.
///
/// ```
/// use anyfork::rpc::{Codec, Fd};
/// let (a, _b) = std::os::unix::net::UnixStream::pair()?;
/// let encoded = Codec::Raw.encode(&("here is a socket", Fd::new(a)))?;
/// assert_eq!(encoded.fds.len(), 1);
/// let (_text, fd): (String, Fd) = Codec::Raw.decode(&encoded.bytes, encoded.fds)?;
/// let _socket = std::os::unix::net::UnixStream::from(fd.into_owned());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Fd(OwnedFd);

impl Fd {
    /// Wraps a descriptor to send.
    pub fn new(fd: impl Into<OwnedFd>) -> Fd {
        Fd(fd.into())
    }

    /// The descriptor.
    pub fn into_owned(self) -> OwnedFd {
        self.0
    }
}

impl From<OwnedFd> for Fd {
    fn from(fd: OwnedFd) -> Fd {
        Fd(fd)
    }
}

impl From<Fd> for OwnedFd {
    fn from(fd: Fd) -> OwnedFd {
        fd.0
    }
}

impl AsFd for Fd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl Serialize for Fd {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let copy = self.0.try_clone().map_err(ser::Error::custom)?;
        let index = FDS_OUT.with(|slot| {
            slot.borrow_mut().as_mut().map(|fds| {
                fds.push(copy);
                fds.len() - 1
            })
        });
        let index = index
            .ok_or_else(|| ser::Error::custom("an Fd can only be encoded by an anyfork codec"))?;
        serializer.serialize_newtype_struct(FD_NAME, &(index as u32))
    }
}

impl<'de> de::Deserialize<'de> for Fd {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Fd, D::Error> {
        struct FdVisitor;
        impl<'de> Visitor<'de> for FdVisitor {
            type Value = Fd;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("the index of a file descriptor")
            }
            fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Fd, D::Error> {
                let index = <u32 as de::Deserialize>::deserialize(d)?;
                take_fd::<D::Error>(index)
            }
            fn visit_u64<E: de::Error>(self, index: u64) -> Result<Fd, E> {
                take_fd(u32::try_from(index).map_err(E::custom)?)
            }
        }
        deserializer.deserialize_newtype_struct(FD_NAME, FdVisitor)
    }
}

fn take_fd<E: de::Error>(index: u32) -> Result<Fd, E> {
    FDS_IN.with(|slot| {
        let mut slot = slot.borrow_mut();
        let fds = slot
            .as_mut()
            .ok_or_else(|| E::custom("an Fd can only be decoded by an anyfork codec"))?;
        fds.get_mut(index as usize)
            .and_then(Option::take)
            .map(Fd)
            .ok_or_else(|| {
                E::custom(format!(
                    "descriptor {index} did not arrive with the message, or is named twice"
                ))
            })
    })
}
