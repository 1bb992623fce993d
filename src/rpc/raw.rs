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

use serde::de::{self, DeserializeSeed, IntoDeserializer, SeqAccess, Visitor};
use serde::ser::{self, Impossible, Serialize};

/// Why a value could not be written or read as octet strings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("raw codec: {0}")]
pub struct RawError(pub String);

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

fn unsupported<T>(what: &str) -> Result<T, RawError> {
    Err(RawError(format!(
        "{what} cannot be carried by a list of octet strings; use the CBOR, JSON or postcard codec"
    )))
}

// ---------------------------------------------------------------------------
// Framing: BER lengths.

fn put_ber(out: &mut Vec<u8>, mut n: u64) {
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

/// Appends one octet string: its BER length, then its bytes.
fn put_string(out: &mut Vec<u8>, bytes: &[u8]) {
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
struct Strings<'de> {
    rest: &'de [u8],
}

impl<'de> Strings<'de> {
    /// The next string, or `None` at the end.
    fn next(&mut self) -> Result<Option<&'de [u8]>, RawError> {
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
    fn count(mut self) -> usize {
        let mut n = 0;
        while let Ok(Some(_)) = self.next() {
            n += 1;
        }
        n
    }
}

// ---------------------------------------------------------------------------
// Serializing: the top level is a list, each element one string.

struct ListSerializer<'a> {
    out: &'a mut Vec<u8>,
}

/// Serializes one element into the list.
struct ElementSerializer<'a> {
    out: &'a mut Vec<u8>,
}

macro_rules! scalar_as_list {
    ($($method:ident: $ty:ty),*) => {
        $(fn $method(self, v: $ty) -> Result<(), RawError> {
            ElementSerializer { out: self.out }.$method(v)
        })*
    };
}

impl<'a> ser::Serializer for ListSerializer<'a> {
    type Ok = ();
    type Error = RawError;
    type SerializeSeq = Elements<'a>;
    type SerializeTuple = Elements<'a>;
    type SerializeTupleStruct = Elements<'a>;
    type SerializeTupleVariant = Impossible<(), RawError>;
    type SerializeMap = Impossible<(), RawError>;
    type SerializeStruct = Elements<'a>;
    type SerializeStructVariant = Impossible<(), RawError>;

    scalar_as_list!(serialize_bool: bool, serialize_i8: i8, serialize_i16: i16, serialize_i32: i32,
        serialize_i64: i64, serialize_i128: i128, serialize_u8: u8, serialize_u16: u16,
        serialize_u32: u32, serialize_u64: u64, serialize_u128: u128, serialize_f32: f32,
        serialize_f64: f64, serialize_char: char, serialize_str: &str, serialize_bytes: &[u8]);

    fn serialize_none(self) -> Result<(), RawError> {
        unsupported("None")
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), RawError> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), RawError> {
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), RawError> {
        Ok(())
    }
    fn serialize_unit_variant(
        self,
        n: &'static str,
        i: u32,
        v: &'static str,
    ) -> Result<(), RawError> {
        ElementSerializer { out: self.out }.serialize_unit_variant(n, i, v)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<(), RawError> {
        if name == super::fd::FD_NAME {
            return ElementSerializer { out: self.out }.serialize_newtype_struct(name, value);
        }
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), RawError> {
        unsupported("an enum variant with data")
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Elements<'a>, RawError> {
        Ok(Elements::new(self.out, true))
    }
    fn serialize_tuple(self, _: usize) -> Result<Elements<'a>, RawError> {
        Ok(Elements::new(self.out, true))
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Elements<'a>, RawError> {
        Ok(Elements::new(self.out, false))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, RawError> {
        unsupported("an enum variant with data")
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, RawError> {
        unsupported("a map")
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Elements<'a>, RawError> {
        Ok(Elements::new(self.out, false))
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, RawError> {
        unsupported("an enum variant with data")
    }
}

/// The elements of the top-level list.
///
/// A sequence or tuple made only of `u8`s (a `Vec<u8>`, `[u8; N]`) is one
/// octet string, not a list of numbers: bytes are kept aside until an
/// element that is not a byte shows they were numbers after all.
struct Elements<'a> {
    out: &'a mut Vec<u8>,
    /// Whether all-`u8` content becomes one string (sequences and tuples,
    /// not structs).
    bytes_as_string: bool,
    bytes: Vec<u8>,
}

impl<'a> Elements<'a> {
    fn new(out: &'a mut Vec<u8>, bytes_as_string: bool) -> Self {
        Elements {
            out,
            bytes_as_string,
            bytes: Vec::new(),
        }
    }

    fn push<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), RawError> {
        if self.bytes_as_string {
            if let Ok(byte) = value.serialize(ByteSerializer) {
                self.bytes.push(byte);
                return Ok(());
            }
            // Not a byte: the bytes so far were numbers.
            self.bytes_as_string = false;
            for byte in std::mem::take(&mut self.bytes) {
                put_string(self.out, &byte.to_string().into_bytes());
            }
        }
        value.serialize(ElementSerializer { out: self.out })
    }

    fn finish(self) -> Result<(), RawError> {
        if !self.bytes.is_empty() {
            put_string(self.out, &self.bytes);
        }
        Ok(())
    }
}

impl ser::SerializeSeq for Elements<'_> {
    type Ok = ();
    type Error = RawError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), RawError> {
        self.push(value)
    }
    fn end(self) -> Result<(), RawError> {
        self.finish()
    }
}

impl ser::SerializeTuple for Elements<'_> {
    type Ok = ();
    type Error = RawError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), RawError> {
        self.push(value)
    }
    fn end(self) -> Result<(), RawError> {
        self.finish()
    }
}

impl ser::SerializeTupleStruct for Elements<'_> {
    type Ok = ();
    type Error = RawError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), RawError> {
        self.push(value)
    }
    fn end(self) -> Result<(), RawError> {
        Ok(())
    }
}

impl ser::SerializeStruct for Elements<'_> {
    type Ok = ();
    type Error = RawError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        _: &'static str,
        value: &T,
    ) -> Result<(), RawError> {
        self.push(value)
    }
    fn end(self) -> Result<(), RawError> {
        Ok(())
    }
}

impl ElementSerializer<'_> {
    fn string(self, bytes: impl AsRef<[u8]>) -> Result<(), RawError> {
        put_string(self.out, bytes.as_ref());
        Ok(())
    }
}

macro_rules! element_number {
    ($($method:ident: $ty:ty),*) => {
        $(fn $method(self, v: $ty) -> Result<(), RawError> {
            self.string(v.to_string().into_bytes())
        })*
    };
}

impl<'a> ser::Serializer for ElementSerializer<'a> {
    type Ok = ();
    type Error = RawError;
    type SerializeSeq = ByteSeq<'a>;
    type SerializeTuple = ByteSeq<'a>;
    type SerializeTupleStruct = Impossible<(), RawError>;
    type SerializeTupleVariant = Impossible<(), RawError>;
    type SerializeMap = Impossible<(), RawError>;
    type SerializeStruct = Impossible<(), RawError>;
    type SerializeStructVariant = Impossible<(), RawError>;

    element_number!(serialize_i8: i8, serialize_i16: i16, serialize_i32: i32, serialize_i64: i64,
        serialize_i128: i128, serialize_u8: u8, serialize_u16: u16, serialize_u32: u32,
        serialize_u64: u64, serialize_u128: u128, serialize_f32: f32, serialize_f64: f64);

    fn serialize_bool(self, v: bool) -> Result<(), RawError> {
        self.string(if v { b"1".to_vec() } else { Vec::new() })
    }
    fn serialize_char(self, v: char) -> Result<(), RawError> {
        self.string(v.to_string().into_bytes())
    }
    fn serialize_str(self, v: &str) -> Result<(), RawError> {
        self.string(v.as_bytes())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), RawError> {
        self.string(v)
    }
    fn serialize_none(self) -> Result<(), RawError> {
        unsupported("None")
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), RawError> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), RawError> {
        self.string(Vec::new())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), RawError> {
        self.string(Vec::new())
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<(), RawError> {
        self.string(variant.as_bytes())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), RawError> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), RawError> {
        unsupported("an enum variant with data")
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<ByteSeq<'a>, RawError> {
        Ok(ByteSeq {
            out: self.out,
            bytes: Vec::with_capacity(len.unwrap_or(0)),
        })
    }
    fn serialize_tuple(self, len: usize) -> Result<ByteSeq<'a>, RawError> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, RawError> {
        unsupported("a nested tuple struct")
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, RawError> {
        unsupported("an enum variant with data")
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, RawError> {
        unsupported("a map")
    }
    fn serialize_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStruct, RawError> {
        unsupported("a nested struct")
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, RawError> {
        unsupported("an enum variant with data")
    }
}

/// A nested sequence inside an element: only bytes (`Vec<u8>`, `[u8; N]`)
/// make an octet string.
struct ByteSeq<'a> {
    out: &'a mut Vec<u8>,
    bytes: Vec<u8>,
}

/// Accepts exactly a `u8`.
struct ByteSerializer;

impl ser::Serializer for ByteSerializer {
    type Ok = u8;
    type Error = RawError;
    type SerializeSeq = Impossible<u8, RawError>;
    type SerializeTuple = Impossible<u8, RawError>;
    type SerializeTupleStruct = Impossible<u8, RawError>;
    type SerializeTupleVariant = Impossible<u8, RawError>;
    type SerializeMap = Impossible<u8, RawError>;
    type SerializeStruct = Impossible<u8, RawError>;
    type SerializeStructVariant = Impossible<u8, RawError>;

    fn serialize_u8(self, v: u8) -> Result<u8, RawError> {
        Ok(v)
    }
    fn serialize_bool(self, _: bool) -> Result<u8, RawError> {
        unsupported("a nested list")
    }
    fn serialize_i8(self, _: i8) -> Result<u8, RawError> {
        unsupported("a nested list")
    }
    fn serialize_i16(self, _: i16) -> Result<u8, RawError> {
        unsupported("a nested list")
    }
    fn serialize_i32(self, _: i32) -> Result<u8, RawError> {
        unsupported("a nested list")
    }
    fn serialize_i64(self, _: i64) -> Result<u8, RawError> {
        unsupported("a nested list")
    }
    fn serialize_u16(self, _: u16) -> Result<u8, RawError> {
        unsupported("a nested list")
    }
    fn serialize_u32(self, _: u32) -> Result<u8, RawError> {
        unsupported("a nested list")
    }
    fn serialize_u64(self, _: u64) -> Result<u8, RawError> {
        unsupported("a nested list")
    }
    fn serialize_f32(self, _: f32) -> Result<u8, RawError> {
        unsupported("a nested list")
    }
    fn serialize_f64(self, _: f64) -> Result<u8, RawError> {
        unsupported("a nested list")
    }
    fn serialize_char(self, _: char) -> Result<u8, RawError> {
        unsupported("a nested list")
    }
    fn serialize_str(self, _: &str) -> Result<u8, RawError> {
        unsupported("a nested list")
    }
    fn serialize_bytes(self, _: &[u8]) -> Result<u8, RawError> {
        unsupported("a nested list")
    }
    fn serialize_none(self) -> Result<u8, RawError> {
        unsupported("a nested list")
    }
    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<u8, RawError> {
        unsupported("a nested list")
    }
    fn serialize_unit(self) -> Result<u8, RawError> {
        unsupported("a nested list")
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<u8, RawError> {
        unsupported("a nested list")
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
    ) -> Result<u8, RawError> {
        unsupported("a nested list")
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: &T,
    ) -> Result<u8, RawError> {
        unsupported("a nested list")
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<u8, RawError> {
        unsupported("a nested list")
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, RawError> {
        unsupported("a nested list")
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, RawError> {
        unsupported("a nested list")
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, RawError> {
        unsupported("a nested list")
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, RawError> {
        unsupported("a nested list")
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, RawError> {
        unsupported("a nested list")
    }
    fn serialize_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStruct, RawError> {
        unsupported("a nested list")
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, RawError> {
        unsupported("a nested list")
    }
}

impl ser::SerializeSeq for ByteSeq<'_> {
    type Ok = ();
    type Error = RawError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), RawError> {
        self.bytes.push(value.serialize(ByteSerializer)?);
        Ok(())
    }
    fn end(self) -> Result<(), RawError> {
        put_string(self.out, &self.bytes);
        Ok(())
    }
}

impl ser::SerializeTuple for ByteSeq<'_> {
    type Ok = ();
    type Error = RawError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), RawError> {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> Result<(), RawError> {
        ser::SerializeSeq::end(self)
    }
}

// ---------------------------------------------------------------------------
// Deserializing.

struct ListDeserializer<'de> {
    strings: Strings<'de>,
}

impl<'de> ListDeserializer<'de> {
    /// A scalar at the top level: the list must hold exactly one string.
    fn single(mut self) -> Result<ElementDeserializer<'de>, RawError> {
        match (self.strings.next()?, self.strings.next()?) {
            (Some(s), None) => Ok(ElementDeserializer { bytes: s }),
            (None, _) => Err(RawError("expected one string, got none".into())),
            (Some(_), Some(_)) => Err(RawError(format!(
                "expected one string, got {}",
                2 + self.strings.count()
            ))),
        }
    }
}

macro_rules! top_scalar {
    ($($method:ident),*) => {
        $(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RawError> {
            self.single()?.$method(visitor)
        })*
    };
}

impl<'de> de::Deserializer<'de> for ListDeserializer<'de> {
    type Error = RawError;

    top_scalar!(
        deserialize_bool,
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64,
        deserialize_i128,
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
        deserialize_u128,
        deserialize_f32,
        deserialize_f64,
        deserialize_char,
        deserialize_str,
        deserialize_string,
        deserialize_bytes,
        deserialize_byte_buf,
        deserialize_identifier
    );

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RawError> {
        visitor.visit_seq(self)
    }
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RawError> {
        visitor.visit_some(self)
    }
    fn deserialize_unit<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, RawError> {
        match self.strings.next()? {
            None => visitor.visit_unit(),
            Some(_) => Err(RawError("expected no strings".into())),
        }
    }
    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, RawError> {
        self.deserialize_unit(visitor)
    }
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, RawError> {
        if name == super::fd::FD_NAME {
            return self.single()?.deserialize_newtype_struct(name, visitor);
        }
        visitor.visit_newtype_struct(self)
    }
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RawError> {
        self.sequence(visitor)
    }
    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _: usize,
        visitor: V,
    ) -> Result<V::Value, RawError> {
        self.sequence(visitor)
    }
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: usize,
        visitor: V,
    ) -> Result<V::Value, RawError> {
        visitor.visit_seq(self)
    }
    fn deserialize_map<V: Visitor<'de>>(self, _: V) -> Result<V::Value, RawError> {
        unsupported("a map")
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, RawError> {
        visitor.visit_seq(self)
    }
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, RawError> {
        self.single()?.deserialize_enum(name, variants, visitor)
    }
    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RawError> {
        visitor.visit_unit()
    }
}

impl<'de> ListDeserializer<'de> {
    /// A sequence or tuple: one string may be the bytes of a `Vec<u8>`
    /// (see `Elements`), which the first element asked for tells.
    fn sequence<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RawError> {
        let mut probe = self.strings;
        if let (Some(bytes), None) = (probe.next()?, probe.next()?) {
            return visitor.visit_seq(OneString {
                bytes,
                next: 0,
                mode: OneStringMode::Undecided,
            });
        }
        visitor.visit_seq(self)
    }
}

/// A sequence read from a single string: its bytes, if the elements are
/// `u8`s, else the string as the only element.
struct OneString<'de> {
    bytes: &'de [u8],
    next: usize,
    mode: OneStringMode,
}

enum OneStringMode {
    Undecided,
    Bytes,
    Done,
}

impl<'de> SeqAccess<'de> for OneString<'de> {
    type Error = RawError;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, RawError> {
        match self.mode {
            OneStringMode::Done => Ok(None),
            OneStringMode::Bytes => match self.bytes.get(self.next) {
                Some(&byte) => {
                    self.next += 1;
                    seed.deserialize(IntoDeserializer::<RawError>::into_deserializer(byte))
                        .map(Some)
                }
                None => Ok(None),
            },
            OneStringMode::Undecided => seed.deserialize(FirstOfOne { seq: self }).map(Some),
        }
    }
}

/// The first element of a [`OneString`]: a `u8` switches it to bytes;
/// anything else takes the whole string.
struct FirstOfOne<'a, 'de> {
    seq: &'a mut OneString<'de>,
}

impl<'de> FirstOfOne<'_, 'de> {
    fn whole(self) -> ElementDeserializer<'de> {
        self.seq.mode = OneStringMode::Done;
        ElementDeserializer {
            bytes: self.seq.bytes,
        }
    }
}

macro_rules! whole_string {
    ($($method:ident),*) => {
        $(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RawError> {
            self.whole().$method(visitor)
        })*
    };
}

impl<'de> de::Deserializer<'de> for FirstOfOne<'_, 'de> {
    type Error = RawError;

    whole_string!(
        deserialize_any,
        deserialize_bool,
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64,
        deserialize_i128,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
        deserialize_u128,
        deserialize_f32,
        deserialize_f64,
        deserialize_char,
        deserialize_str,
        deserialize_string,
        deserialize_bytes,
        deserialize_byte_buf,
        deserialize_option,
        deserialize_unit,
        deserialize_seq,
        deserialize_map,
        deserialize_identifier,
        deserialize_ignored_any
    );

    fn deserialize_u8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RawError> {
        match self.seq.bytes.first() {
            Some(&byte) => {
                self.seq.mode = OneStringMode::Bytes;
                self.seq.next = 1;
                visitor.visit_u8(byte)
            }
            None => self.whole().deserialize_u8(visitor),
        }
    }
    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, RawError> {
        self.whole().deserialize_unit_struct(name, visitor)
    }
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, RawError> {
        self.whole().deserialize_newtype_struct(name, visitor)
    }
    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, RawError> {
        self.whole().deserialize_tuple(len, visitor)
    }
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, RawError> {
        self.whole().deserialize_tuple_struct(name, len, visitor)
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, RawError> {
        self.whole().deserialize_struct(name, fields, visitor)
    }
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, RawError> {
        self.whole().deserialize_enum(name, variants, visitor)
    }
}

impl<'de> SeqAccess<'de> for ListDeserializer<'de> {
    type Error = RawError;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, RawError> {
        match self.strings.next()? {
            Some(bytes) => seed.deserialize(ElementDeserializer { bytes }).map(Some),
            None => Ok(None),
        }
    }
}

/// One octet string, still in the message.
struct ElementDeserializer<'de> {
    bytes: &'de [u8],
}

impl<'de> ElementDeserializer<'de> {
    fn text(&self) -> Result<&'de str, RawError> {
        std::str::from_utf8(self.bytes).map_err(|_| RawError("a string is not UTF-8".into()))
    }

    fn number<N: std::str::FromStr>(&self, what: &str) -> Result<N, RawError> {
        let text = self.text()?;
        text.trim()
            .parse()
            .map_err(|_| RawError(format!("{text:?} is not {what}")))
    }
}

macro_rules! element_parse {
    ($($method:ident => $visit:ident: $ty:ty),*) => {
        $(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RawError> {
            visitor.$visit(self.number::<$ty>(stringify!($ty))?)
        })*
    };
}

impl<'de> de::Deserializer<'de> for ElementDeserializer<'de> {
    type Error = RawError;

    element_parse!(deserialize_i8 => visit_i8: i8, deserialize_i16 => visit_i16: i16,
        deserialize_i32 => visit_i32: i32, deserialize_i64 => visit_i64: i64,
        deserialize_i128 => visit_i128: i128, deserialize_u8 => visit_u8: u8,
        deserialize_u16 => visit_u16: u16, deserialize_u32 => visit_u32: u32,
        deserialize_u64 => visit_u64: u64, deserialize_u128 => visit_u128: u128,
        deserialize_f32 => visit_f32: f32, deserialize_f64 => visit_f64: f64);

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RawError> {
        visitor.visit_borrowed_bytes(self.bytes)
    }
    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RawError> {
        // Perl's truth: "" and "0" are false.
        visitor.visit_bool(!(self.bytes.is_empty() || self.bytes == b"0"))
    }
    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RawError> {
        let text = self.text()?;
        let mut chars = text.chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) => visitor.visit_char(c),
            _ => Err(RawError(format!("{text:?} is not one character"))),
        }
    }
    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RawError> {
        // Borrowed from the message: a `String` copies it once, a `&str`
        // not at all.
        visitor.visit_borrowed_str(self.text()?)
    }
    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RawError> {
        self.deserialize_str(visitor)
    }
    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RawError> {
        visitor.visit_borrowed_bytes(self.bytes)
    }
    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RawError> {
        visitor.visit_borrowed_bytes(self.bytes)
    }
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RawError> {
        visitor.visit_some(self)
    }
    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RawError> {
        visitor.visit_unit()
    }
    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, RawError> {
        visitor.visit_unit()
    }
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, RawError> {
        visitor.visit_newtype_struct(self)
    }
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RawError> {
        // Bytes as a sequence of u8 (how serde reads Vec<u8>).
        visitor.visit_seq(de::value::SeqDeserializer::new(self.bytes.iter().copied()))
    }
    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _: usize,
        visitor: V,
    ) -> Result<V::Value, RawError> {
        self.deserialize_seq(visitor)
    }
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: usize,
        _: V,
    ) -> Result<V::Value, RawError> {
        unsupported("a nested tuple struct")
    }
    fn deserialize_map<V: Visitor<'de>>(self, _: V) -> Result<V::Value, RawError> {
        unsupported("a map")
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, RawError> {
        unsupported("a nested struct")
    }
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, RawError> {
        let text = self.text()?;
        visitor.visit_enum(IntoDeserializer::<RawError>::into_deserializer(text))
    }
    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RawError> {
        self.deserialize_str(visitor)
    }
    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RawError> {
        visitor.visit_unit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    fn round_trip<T: Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug>(
        value: T,
    ) {
        let mut bytes = Vec::new();
        to_bytes(&value, &mut bytes).unwrap();
        assert_eq!(from_bytes::<T>(&bytes).unwrap(), value);
    }

    #[test]
    fn bytes_are_one_string() {
        let mut bytes = Vec::new();
        to_bytes(&vec![1u8, 2, 3], &mut bytes).unwrap();
        assert_eq!(bytes, [3, 1, 2, 3]);
        bytes.clear();
        to_bytes(&vec![1u16, 2], &mut bytes).unwrap();
        assert_eq!(bytes, b"\x011\x012");
    }

    #[test]
    fn perl_layout() {
        let mut bytes = Vec::new();
        to_bytes(&("rmdir", "/tmp/x"), &mut bytes).unwrap();
        assert_eq!(bytes, b"\x05rmdir\x06/tmp/x");
        let long = vec![b'a'; 200];
        bytes.clear();
        to_bytes(&(long.clone(),), &mut bytes).unwrap();
        assert_eq!(&bytes[..2], &[0x81, 0x48]); // 200 in BER
        assert_eq!(decode_strings(&bytes).unwrap(), vec![long]);
    }

    #[test]
    fn types_round_trip() {
        round_trip(vec![b"a".to_vec(), vec![], vec![0, 255]]);
        round_trip(("add".to_string(), 1i64, 3u8, true, 'x', 2.5f64));
        round_trip(String::from("one"));
        round_trip(());
        round_trip(vec![0u8, 1, 255]);
        round_trip(Vec::<u8>::new());
        round_trip(vec![7u8]);
        round_trip(vec![300u16, 7]);
        round_trip(vec!["x".to_string()]);
        round_trip((5u8, 6u8));
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        enum Command {
            Rmdir,
            Unlink,
        }
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct Request {
            command: Command,
            path: String,
        }
        round_trip(Request {
            command: Command::Unlink,
            path: "/tmp/1".into(),
        });
    }

    #[test]
    fn refuses_what_strings_cannot_carry() {
        let mut bytes = Vec::new();
        let err = to_bytes(&vec![vec!["nested"]], &mut bytes).unwrap_err();
        assert!(err.0.contains("nested list"), "{err}");
        assert!(to_bytes(&Option::<u8>::None, &mut bytes).is_err());
        assert!(from_bytes::<(u8, u8)>(b"\x01x\x011").is_err());
        assert!(
            from_bytes::<String>(b"\x05ab")
                .unwrap_err()
                .0
                .contains("cut short")
        );
        assert!(from_bytes::<String>(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff").is_err());
    }
}
