//! A plain `Vec<u8>` moved as one byte string by every codec.
//!
//! To serde a `Vec<u8>` (or a `&[u8]`) is a sequence of numbers: its
//! `Serialize` hands the codec one `u8` at a time, and its `Deserialize`
//! asks for a sequence and takes the numbers one at a time again. A 1 MiB
//! `Vec<u8>` round trip cost 20 to 190 times the same bytes as
//! `serde_bytes::ByteBuf`. Here, on both sides of every codec:
//!
//! - encoding: a sequence whose iterator is a slice's iterator of `u8`
//!   (what `Vec<u8>`, `[u8]` and `&[u8]` hand `collect_seq`) is written as
//!   bytes (`serialize_bytes`: a CBOR byte string, postcard's and the raw
//!   codec's very same length and bytes, JSON's array of numbers);
//! - decoding: when serde's own `Vec<u8>` visitor asks for a sequence, the
//!   codec is asked for a byte buffer instead (whose visitor still accepts
//!   a sequence, so a message from any encoder decodes).
//!
//! Both checks compare types ([`typeid`]), so nothing else changes: a
//! `Vec<u16>`, a `VecDeque<u8>` or a custom visitor go the usual way.

use std::fmt;

use serde::de::{self, Visitor};
use serde::ser::{self, Serialize, Serializer};

/// `value`, serialized with byte sequences as byte strings.
pub(crate) struct Bytewise<'a, T: ?Sized>(pub(crate) &'a T);

impl<T: Serialize + ?Sized> Serialize for Bytewise<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(BytewiseSerializer(serializer))
    }
}

/// A serializer that forwards everything to `S`, except byte sequences.
struct BytewiseSerializer<S>(S);

/// A compound (sequence, tuple, map, struct) whose elements are
/// serialized bytewise too.
struct Compound<C>(C);

/// The bytes of a sequence, if its iterator is a slice's iterator of
/// `u8`.
fn as_byte_slice<I: Iterator>(iter: &I) -> Option<&[u8]> {
    if typeid::of::<I>() != typeid::of::<std::slice::Iter<'static, u8>>() {
        return None;
    }
    // SAFETY: `I` is `std::slice::Iter<'_, u8>` (the same type up to its
    // lifetime, which `typeid` ignores), so the reference may be read as
    // one; the slice it gives borrows from `iter`, which outlives it.
    let iter = unsafe { &*(iter as *const I).cast::<std::slice::Iter<'_, u8>>() };
    Some(iter.as_slice())
}

macro_rules! forward {
    ($($method:ident($($arg:ident: $ty:ty),*)),* $(,)?) => {
        $(fn $method(self, $($arg: $ty),*) -> Result<S::Ok, S::Error> {
            self.0.$method($($arg),*)
        })*
    };
}

impl<S: Serializer> Serializer for BytewiseSerializer<S> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = Compound<S::SerializeSeq>;
    type SerializeTuple = Compound<S::SerializeTuple>;
    type SerializeTupleStruct = Compound<S::SerializeTupleStruct>;
    type SerializeTupleVariant = Compound<S::SerializeTupleVariant>;
    type SerializeMap = Compound<S::SerializeMap>;
    type SerializeStruct = Compound<S::SerializeStruct>;
    type SerializeStructVariant = Compound<S::SerializeStructVariant>;

    forward!(
        serialize_bool(v: bool),
        serialize_i8(v: i8),
        serialize_i16(v: i16),
        serialize_i32(v: i32),
        serialize_i64(v: i64),
        serialize_i128(v: i128),
        serialize_u8(v: u8),
        serialize_u16(v: u16),
        serialize_u32(v: u32),
        serialize_u64(v: u64),
        serialize_u128(v: u128),
        serialize_f32(v: f32),
        serialize_f64(v: f64),
        serialize_char(v: char),
        serialize_str(v: &str),
        serialize_bytes(v: &[u8]),
        serialize_none(),
        serialize_unit(),
        serialize_unit_struct(name: &'static str),
        serialize_unit_variant(name: &'static str, index: u32, variant: &'static str),
    );

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<S::Ok, S::Error> {
        self.0.serialize_some(&Bytewise(value))
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        self.0.serialize_newtype_struct(name, &Bytewise(value))
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        self.0
            .serialize_newtype_variant(name, index, variant, &Bytewise(value))
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<Self::SerializeSeq, S::Error> {
        self.0.serialize_seq(len).map(Compound)
    }

    fn collect_seq<I>(self, iter: I) -> Result<S::Ok, S::Error>
    where
        I: IntoIterator,
        I::Item: Serialize,
    {
        let iter = iter.into_iter();
        if let Some(bytes) = as_byte_slice(&iter) {
            return self.0.serialize_bytes(bytes);
        }
        let mut seq = self.serialize_seq(iterator_len_hint(&iter))?;
        for item in iter {
            ser::SerializeSeq::serialize_element(&mut seq, &item)?;
        }
        ser::SerializeSeq::end(seq)
    }

    fn serialize_tuple(self, len: usize) -> Result<Self::SerializeTuple, S::Error> {
        self.0.serialize_tuple(len).map(Compound)
    }

    fn serialize_tuple_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleStruct, S::Error> {
        self.0.serialize_tuple_struct(name, len).map(Compound)
    }

    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleVariant, S::Error> {
        self.0
            .serialize_tuple_variant(name, index, variant, len)
            .map(Compound)
    }

    fn serialize_map(self, len: Option<usize>) -> Result<Self::SerializeMap, S::Error> {
        self.0.serialize_map(len).map(Compound)
    }

    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStruct, S::Error> {
        self.0.serialize_struct(name, len).map(Compound)
    }

    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant, S::Error> {
        self.0
            .serialize_struct_variant(name, index, variant, len)
            .map(Compound)
    }

    fn collect_str<T: fmt::Display + ?Sized>(self, value: &T) -> Result<S::Ok, S::Error> {
        self.0.collect_str(value)
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

/// The length an exact-size iterator promises (as serde's default
/// `collect_seq` computes it).
fn iterator_len_hint<I: Iterator>(iter: &I) -> Option<usize> {
    match iter.size_hint() {
        (lo, Some(hi)) if lo == hi => Some(lo),
        _ => None,
    }
}

macro_rules! compound {
    ($trait:ident, $method:ident) => {
        impl<C: ser::$trait> ser::$trait for Compound<C> {
            type Ok = C::Ok;
            type Error = C::Error;
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
                self.0.$method(&Bytewise(value))
            }
            fn end(self) -> Result<C::Ok, C::Error> {
                self.0.end()
            }
        }
    };
    ($trait:ident, keyed $method:ident) => {
        impl<C: ser::$trait> ser::$trait for Compound<C> {
            type Ok = C::Ok;
            type Error = C::Error;
            fn $method<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                value: &T,
            ) -> Result<(), C::Error> {
                self.0.$method(key, &Bytewise(value))
            }
            fn skip_field(&mut self, key: &'static str) -> Result<(), C::Error> {
                self.0.skip_field(key)
            }
            fn end(self) -> Result<C::Ok, C::Error> {
                self.0.end()
            }
        }
    };
}

compound!(SerializeSeq, serialize_element);
compound!(SerializeTuple, serialize_element);
compound!(SerializeTupleStruct, serialize_field);
compound!(SerializeTupleVariant, serialize_field);
compound!(SerializeStruct, keyed serialize_field);
compound!(SerializeStructVariant, keyed serialize_field);

impl<C: ser::SerializeMap> ser::SerializeMap for Compound<C> {
    type Ok = C::Ok;
    type Error = C::Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), C::Error> {
        self.0.serialize_key(&Bytewise(key))
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
        self.0.serialize_value(&Bytewise(value))
    }
    fn end(self) -> Result<C::Ok, C::Error> {
        self.0.end()
    }
}

// --- decoding --------------------------------------------------------------

/// Whether `V` is serde's own visitor of `Vec<u8>` (so that asking the
/// codec for a byte buffer instead of a sequence changes nothing but the
/// speed).
pub(crate) fn is_vec_u8_visitor<'de, V: Visitor<'de>>() -> bool {
    typeid::of::<V>() == vec_u8_visitor()
}

/// The type of serde's `Vec<u8>` visitor (private to serde), learnt once
/// by asking `Vec<u8>` to deserialize itself from a deserializer that only
/// notes which visitor it was given.
fn vec_u8_visitor() -> std::any::TypeId {
    static LEARNT: std::sync::OnceLock<Option<std::any::TypeId>> = std::sync::OnceLock::new();
    LEARNT
        .get_or_init(|| {
            let mut seen = None;
            let _ = <Vec<u8> as de::Deserialize>::deserialize(Noting(&mut seen));
            seen
        })
        // Not learnt: a type no visitor has.
        .unwrap_or_else(typeid::of::<Noting<'static>>)
}

/// A deserializer that notes the type of the visitor of `deserialize_seq`
/// and fails.
struct Noting<'a>(&'a mut Option<std::any::TypeId>);

#[derive(Debug)]
struct Noted;

impl fmt::Display for Noted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("noted")
    }
}

impl std::error::Error for Noted {}

impl de::Error for Noted {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Noted
    }
}

impl<'de> de::Deserializer<'de> for Noting<'_> {
    type Error = Noted;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Noted> {
        Err(Noted)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Noted> {
        *self.0 = Some(typeid::of::<V>());
        Err(Noted)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

/// Takes a byte buffer, or (from an encoder that wrote numbers) a
/// sequence of them.
pub(crate) struct VecU8Visitor;

impl<'de> Visitor<'de> for VecU8Visitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a sequence of bytes")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
        Ok(v.to_vec())
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(v)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
        Err(E::invalid_type(de::Unexpected::Str(v), &self))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
        while let Some(byte) = seq.next_element::<u8>()? {
            out.push(byte);
        }
        Ok(out)
    }
}

/// `bytes` as the value of a visitor that [`is_vec_u8_visitor`] said is
/// serde's `Vec<u8>` visitor.
///
/// # Safety
///
/// `is_vec_u8_visitor::<V>()` returned true.
pub(crate) unsafe fn as_visitor_value<'de, V: Visitor<'de>>(bytes: Vec<u8>) -> V::Value {
    debug_assert!(is_vec_u8_visitor::<V>());
    let bytes = std::mem::ManuallyDrop::new(bytes);
    // SAFETY: serde's `Vec<u8>` visitor's value is `Vec<u8>` (the caller
    // checked the visitor's type), so this reads a `Vec<u8>` as itself;
    // the original is not dropped.
    unsafe { std::mem::transmute_copy::<Vec<u8>, V::Value>(&bytes) }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, VecDeque};

    use serde::{Deserialize, Serialize};

    use crate::rpc::Codec;

    fn codecs() -> [Codec; 4] {
        [Codec::Raw, Codec::Cbor, Codec::Json, Codec::Postcard]
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Nested {
        name: String,
        data: Vec<u8>,
        more: Option<Vec<u8>>,
        lists: Vec<Vec<u8>>,
        by_key: BTreeMap<String, Vec<u8>>,
        words: Vec<u16>,
        queue: VecDeque<u8>,
    }

    #[test]
    fn plain_byte_vectors_round_trip_in_every_codec_and_every_place() {
        let bytes: Vec<u8> = (0..=255).cycle().take(70_000).collect();
        for codec in codecs() {
            let encoded = codec.encode(&bytes).unwrap();
            let back: Vec<u8> = codec.decode(&encoded.bytes, encoded.fds).unwrap();
            assert_eq!(back, bytes, "{codec:?}");
            if codec == Codec::Raw {
                continue; // a flat list of strings: no nesting
            }
            let nested = Nested {
                name: "n".into(),
                data: bytes[..1000].to_vec(),
                more: Some(vec![1, 2, 3]),
                lists: vec![vec![], vec![9; 10]],
                by_key: [("k".to_owned(), vec![4, 5])].into(),
                words: vec![300, 7],
                queue: [1u8, 2].into(),
            };
            let encoded = codec.encode(&nested).unwrap();
            let back: Nested = codec.decode(&encoded.bytes, encoded.fds).unwrap();
            assert_eq!(back, nested, "{codec:?}");
        }
    }

    #[test]
    fn a_byte_vector_is_one_byte_string_on_the_wire() {
        let encoded = Codec::Cbor.encode(&vec![1u8, 2, 3]).unwrap();
        assert_eq!(encoded.bytes, [0x43, 1, 2, 3], "CBOR: a byte string of 3");
        let encoded = Codec::Postcard.encode(&vec![1u8, 2, 3]).unwrap();
        assert_eq!(encoded.bytes, [3, 1, 2, 3], "postcard: unchanged");
        let encoded = Codec::Json.encode(&vec![1u8, 2, 3]).unwrap();
        assert_eq!(encoded.bytes, b"[1,2,3]", "JSON: unchanged");
    }

    #[test]
    fn byte_vectors_written_as_numbers_still_decode() {
        // What another encoder (or an older anyfork) writes for a Vec<u8>:
        // an array of numbers.
        // (CBOR written by hand: an array of 1, 200 and 3.)
        let numbers = [0x83, 0x01, 0x18, 200, 0x03];
        assert_eq!(numbers[0], 0x83, "a CBOR array of 3");
        let back: Vec<u8> = Codec::Cbor.decode(&numbers, Vec::new()).unwrap();
        assert_eq!(back, [1, 200, 3]);
        // Numbers that are not bytes are refused, as before.
        let wide = [0x82, 0x01, 0x19, 0x01, 0x2c];
        assert!(Codec::Cbor.decode::<Vec<u8>>(&wide, Vec::new()).is_err());
    }

    #[test]
    fn the_memory_budget_still_holds() {
        // A CBOR byte string announcing 4 GiB with nothing behind it.
        let claim = [0x5a, 0xff, 0xff, 0xff, 0xff];
        assert!(Codec::Cbor.decode::<Vec<u8>>(&claim, Vec::new()).is_err());
    }

    #[test]
    fn serdes_byte_vector_visitor_is_recognised_and_nothing_else() {
        assert_ne!(
            super::vec_u8_visitor(),
            typeid::of::<super::Noting<'static>>()
        );
        assert!(!super::is_vec_u8_visitor::<super::VecU8Visitor>());
    }
}
