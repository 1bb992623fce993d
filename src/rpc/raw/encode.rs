//! Serializing: the top level is a list, each element one string.

use serde::ser::{self, Impossible, Serialize};

use super::{Output, RawError, put_string, unsupported};

pub(super) struct ListSerializer<'a> {
    pub(super) out: &'a mut dyn Output,
}

/// Serializes one element into the list.
pub(super) struct ElementSerializer<'a> {
    out: &'a mut dyn Output,
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
        if name == crate::rpc::fd::FD_NAME {
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
pub(super) struct Elements<'a> {
    out: &'a mut dyn Output,
    /// Whether all-`u8` content becomes one string (sequences and tuples,
    /// not structs).
    bytes_as_string: bool,
    bytes: Vec<u8>,
}

impl<'a> Elements<'a> {
    fn new(out: &'a mut dyn Output, bytes_as_string: bool) -> Self {
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
pub(super) struct ByteSeq<'a> {
    out: &'a mut dyn Output,
    bytes: Vec<u8>,
}

/// Accepts exactly a `u8`.
pub(super) struct ByteSerializer;

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
