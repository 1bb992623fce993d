//! The raw codec: a flat list of octet strings, as Perl's
//! `$AnyEvent::Fork::RPC::STRING_SERIALISER` (`pack "(w/a*)*"`).
//!
//! Each string is written as its length in BER compressed-integer form (seven
//! bits a byte, most significant first, the high bit set on all but the last
//! byte) followed by its bytes, and the strings are concatenated.
//!
//! It is a serde data format so that the same Rust types work with every
//! codec, but it carries only what a list of octet strings can:
//!
//! - a message is a *list*: a tuple, a tuple struct, a struct (its fields in
//!   order), a `Vec`, or a single scalar (a list of one), or `()` (no strings);
//!   a `Vec<u8>` (any sequence of bytes only) is one octet string, not a list
//!   of numbers;
//! - each element is one octet string: `String`/`&str`, `Vec<u8>`/bytes,
//!   `char`, a bool (`"1"` or `""`), a number in decimal (as Perl would
//!   stringify it), a unit enum variant (its name), or an [`Fd`](super::Fd);
//! - anything nested deeper, maps, and `None` are refused with a clear error:
//!   use CBOR, JSON or postcard for those.

use std::fmt::Display;

use serde::de;
use serde::ser::{self, Serialize};

mod decode;
mod encode;
#[cfg(test)]
mod tests;

use super::shared_memory::Sink;
use decode::ListDeserializer;
use encode::ListSerializer;

/// Why a value could not be written or read as octet strings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("raw codec: {0}")]
pub struct RawError(String);

impl RawError {
    /// What went wrong.
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl ser::Error for RawError {
    fn custom<T: Display>(msg: T) -> Self {
        RawError(msg.to_string())
    }
}

impl de::Error for RawError {
    fn custom<T: Display>(msg: T) -> Self {
        RawError(msg.to_string())
    }
}

pub(super) fn unsupported<T>(what: &str) -> Result<T, RawError> {
    Err(RawError(format!(
        "{what} cannot be carried by a list of octet strings; use the CBOR, JSON or postcard codec"
    )))
}

// ---------------------------------------------------------------------------
// Framing: BER lengths.

fn put_ber(out: &mut dyn Output, mut n: u64) {
    let mut tmp = [0u8; 10];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            break;
        }
    }
    let last = tmp.len() - 1;
    for byte in &mut tmp[i..last] {
        *byte |= 0x80;
    }
    out.extend_from_slice(&tmp[i..]);
}

fn take_ber(input: &mut &[u8]) -> Result<u64, RawError> {
    let mut n: u64 = 0;
    for (i, &byte) in input.iter().enumerate() {
        if i >= 10 || n > (u64::MAX >> 7) {
            return Err(RawError("a length is too large".into()));
        }
        n = (n << 7) | u64::from(byte & 0x7f);
        if byte & 0x80 == 0 {
            *input = &input[i + 1..];
            return Ok(n);
        }
    }
    Err(RawError("a length is cut short".into()))
}

/// Writes octet strings in the `(w/a*)*` layout.
pub fn encode_strings<S: AsRef<[u8]>>(strings: &[S], out: &mut Vec<u8>) {
    for s in strings {
        put_string(out, s.as_ref());
    }
}

/// Reads octet strings in the `(w/a*)*` layout.
pub fn decode_strings(mut input: &[u8]) -> Result<Vec<Vec<u8>>, RawError> {
    let mut strings = Vec::new();
    while !input.is_empty() {
        let len = take_ber(&mut input)?;
        let len = usize::try_from(len).map_err(|_| RawError("a length is too large".into()))?;
        if len > input.len() {
            return Err(RawError(format!(
                "a string of {len} bytes is cut short after {} bytes",
                input.len()
            )));
        }
        let (s, rest) = input.split_at(len);
        strings.push(s.to_vec());
        input = rest;
    }
    Ok(strings)
}

/// Serializes `value` as a list of octet strings, appended to `out`.
///
/// # Errors
///
/// When the value holds something a list of strings cannot carry; `out`
/// may then hold the strings written before it.
pub fn to_bytes<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), RawError> {
    value.serialize(ListSerializer { out })
}

/// [`to_bytes`] into any output (the RPC frame's [`Sink`]).
pub(crate) fn to_output<T: Serialize + ?Sized>(
    value: &T,
    out: &mut dyn Output,
) -> Result<(), RawError> {
    value.serialize(ListSerializer { out })
}

/// Where the encoder appends.
pub(crate) trait Output {
    /// Appends bytes.
    fn extend_from_slice(&mut self, bytes: &[u8]);
}

impl Output for Vec<u8> {
    fn extend_from_slice(&mut self, bytes: &[u8]) {
        Vec::extend_from_slice(self, bytes);
    }
}

impl Output for Sink<'_, '_> {
    fn extend_from_slice(&mut self, bytes: &[u8]) {
        Sink::extend_from_slice(self, bytes);
    }
}

/// Appends one octet string: its BER length, then its bytes.
pub(super) fn put_string(out: &mut dyn Output, bytes: &[u8]) {
    put_ber(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Deserializes a value from a list of octet strings.
///
/// The strings are read in place, one at a time, as the type asks for
/// them: nothing is copied that the type does not keep, so a message of
/// millions of empty strings costs nothing to refuse when one number was
/// expected (decoding is bounded by what the value itself holds).
pub fn from_bytes<'de, T: de::Deserialize<'de>>(input: &'de [u8]) -> Result<T, RawError> {
    T::deserialize(ListDeserializer {
        strings: Strings { rest: input },
    })
}

/// The octet strings of a message, read one at a time, borrowed.
#[derive(Clone, Copy)]
pub(super) struct Strings<'de> {
    pub(super) rest: &'de [u8],
}

impl<'de> Strings<'de> {
    /// The next string, or `None` at the end.
    pub(super) fn next(&mut self) -> Result<Option<&'de [u8]>, RawError> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        let len = take_ber(&mut self.rest)?;
        let len = usize::try_from(len).map_err(|_| RawError("a length is too large".into()))?;
        if len > self.rest.len() {
            return Err(RawError(format!(
                "a string of {len} bytes is cut short after {} bytes",
                self.rest.len()
            )));
        }
        let (string, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(Some(string))
    }

    /// How many strings are left (for error messages): counts without
    /// copying anything.
    pub(super) fn count(mut self) -> usize {
        let mut n = 0;
        while let Ok(Some(_)) = self.next() {
            n += 1;
        }
        n
    }
}
