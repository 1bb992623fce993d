//! What went wrong in a CBOR message, in words.
//!
//! cbor4ii's errors print as their `Debug` form
//! (`Core(Mismatch { name: "bytes", found: 131 })`); a [`CodecError`]
//! should say what the message held and what was expected instead.
//!
//! [`CodecError`]: super::CodecError

use std::convert::Infallible;
use std::fmt;

use cbor4ii::core::error::{DecodeError as CoreError, Len};
use cbor4ii::serde::{DecodeError, EncodeError};

/// A decoding error, described.
pub(crate) struct Decoding(pub(crate) DecodeError<Infallible>);

/// An encoding error, described.
pub(crate) struct Encoding(pub(crate) EncodeError<Infallible>);

impl fmt::Display for Decoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            DecodeError::Custom(message) => f.write_str(message),
            DecodeError::Core(core) => describe(core, f),
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            EncodeError::Custom(message) => f.write_str(message),
            // Writing to a sink cannot fail.
            EncodeError::Core(core) => write!(f, "{core:?}"),
        }
    }
}

fn describe(error: &CoreError<Infallible>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    match error {
        CoreError::Mismatch { name, found } => write!(
            f,
            "expected {name}, found {} (initial byte {found:#04x})",
            item(*found)
        ),
        CoreError::Unsupported { name, found } => write!(
            f,
            "{} (initial byte {found:#04x}) cannot be read as {name}",
            item(*found)
        ),
        CoreError::Eof { name, expect } => {
            write!(f, "the message ends inside {name}")?;
            match expect {
                Len::Small(n) => write!(f, " ({n} more bytes expected)"),
                Len::Big => f.write_str(" (more than 65535 bytes expected)"),
                Len::Indefinite => Ok(()),
            }
        }
        CoreError::RequireLength { name, found } => match found {
            Len::Indefinite => write!(f, "{name} has an indefinite length, which is not accepted"),
            Len::Small(n) => write!(f, "{name} has the wrong number of items ({n})"),
            Len::Big => write!(f, "{name} has the wrong number of items (over 65535)"),
        },
        CoreError::RequireBorrowed { name } => {
            write!(f, "{name} cannot be borrowed from the message")
        }
        CoreError::RequireUtf8 { name } => write!(f, "{name} is not valid UTF-8"),
        CoreError::LengthOverflow { name, .. } => {
            write!(f, "{name} announces more items than the message holds")
        }
        CoreError::CastOverflow { name } => write!(f, "{name} is out of the type's range"),
        CoreError::ArithmeticOverflow { name, .. } => {
            write!(f, "{name} is out of the type's range")
        }
        CoreError::DepthOverflow { name } => {
            write!(f, "the message is nested too deeply (at {name})")
        }
        other => write!(f, "{other:?}"),
    }
}

/// The kind of CBOR item an initial byte starts.
fn item(initial: u8) -> &'static str {
    match initial >> 5 {
        0 => "an unsigned integer",
        1 => "a negative integer",
        2 => "a byte string",
        3 => "a text string",
        4 => "an array",
        5 => "a map",
        6 => "a tag",
        _ => match initial {
            0xf4 | 0xf5 => "a boolean",
            0xf6 | 0xf7 => "null",
            0xf9..=0xfb => "a float",
            0xff => "a break",
            _ => "a simple value",
        },
    }
}

#[cfg(test)]
mod tests {
    use crate::rpc::Codec;

    #[test]
    fn errors_say_what_was_found_and_what_was_expected() {
        // An array of one number where a string was expected.
        let error = Codec::Cbor
            .decode::<String>(&[0x81, 0x01], Vec::new())
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("found an array (initial byte 0x81)"),
            "{error}"
        );
        // A text string of 5 bytes with 2 of them there.
        let error = Codec::Cbor
            .decode::<String>(&[0x65, b'a', b'b'], Vec::new())
            .unwrap_err();
        assert!(
            error.to_string().contains("the message ends inside"),
            "{error}"
        );
        // Not UTF-8.
        let error = Codec::Cbor
            .decode::<String>(&[0x62, 0xff, 0xfe], Vec::new())
            .unwrap_err();
        assert!(error.to_string().contains("not valid UTF-8"), "{error}");
        // A pair that has one item.
        let error = Codec::Cbor
            .decode::<(u8, u8)>(&[0x81, 0x01], Vec::new())
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("tuple has the wrong number of items (1)"),
            "{error}"
        );
        // serde's own words come through as they are.
        let error = Codec::Cbor
            .decode::<std::time::Duration>(&[0xa0], Vec::new())
            .unwrap_err();
        assert!(
            error.to_string().contains("missing field `secs`"),
            "{error}"
        );
    }
}
