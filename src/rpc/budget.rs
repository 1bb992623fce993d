//! A bound on the memory a decoded message may take, for every codec.
//!
//! A frame's bytes are bounded by the frame limit, but what they decode to
//! is not: a one-byte enum variant may be a type of a megabyte, a byte may
//! become a 24-byte empty `Vec`. [`Budgeted`] wraps any serde
//! `Deserializer` and charges, as decoding goes, what the value will hold:
//! every element of a sequence and every map entry (their size in the
//! value), and every string and byte string (their length). Past the
//! budget, decoding fails with a clear error instead of taking the
//! process's memory.
//!
//! The budget is [`FLOOR`] plus [`RATIO`] times the message's size:
//! enough for any realistic message (a list of one-character strings, the
//! worst common case, takes about 25 times its encoding), never a megabyte
//! per byte. Allocator overhead is not charged, and neither is memory a
//! type allocates on its own (a `Box` of a large value behind a small
//! encoding); the bound covers what the encoding describes.

use std::cell::Cell;
use std::fmt;

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor,
};

/// Memory every message may take whatever its size.
pub(crate) const FLOOR: usize = 1 << 20;
/// Memory a message may take per byte of its encoding.
pub(crate) const RATIO: usize = 32;

/// What a message of `len` bytes may take, decoded.
pub(crate) fn for_message(len: usize) -> usize {
    FLOOR.saturating_add(RATIO.saturating_mul(len))
}

thread_local! {
    /// While a message is decoded on this thread: bytes left, the limit,
    /// and whether it was exceeded.
    static LEFT: Cell<Option<(usize, usize, bool)>> = const { Cell::new(None) };
}

/// Why a message was refused: it would take more than `limit` bytes.
pub(crate) fn refusal(limit: usize) -> String {
    format!(
        "the decoded message would take more than {limit} bytes of memory \
         ({} MiB plus {RATIO} times its size); refused",
        FLOOR >> 20
    )
}

/// Decodes with `decode` (which must deserialize a [`Within`]) under a
/// budget of `limit` bytes. Returns what `decode` returned and, if the
/// budget was exceeded, why (some codecs drop the message of the error the
/// budget raised).
pub(crate) fn within<R>(limit: usize, decode: impl FnOnce() -> R) -> (R, Option<String>) {
    let previous = LEFT.with(|left| left.replace(Some((limit, limit, false))));
    let result = decode();
    let exceeded = LEFT.with(|left| left.replace(previous));
    let why = matches!(exceeded, Some((_, _, true))).then(|| refusal(limit));
    (result, why)
}

fn charge<E: de::Error>(bytes: usize) -> Result<(), E> {
    LEFT.with(|cell| match cell.get() {
        None => Ok(()),
        Some((left, limit, _)) => match left.checked_sub(bytes) {
            Some(left) => {
                cell.set(Some((left, limit, false)));
                Ok(())
            }
            None => {
                cell.set(Some((0, limit, true)));
                Err(E::custom(refusal(limit)))
            }
        },
    })
}

/// A value decoded under the budget set by [`within`]: deserializing it
/// deserializes a `T` through a [`Budgeted`] deserializer, whatever the
/// codec.
///
/// `BYTES_BY_ANY`: a plain `Vec<u8>` is asked of the codec with
/// `deserialize_any`, for a self-describing codec whose
/// `deserialize_byte_buf` accepts only a byte string (CBOR), so that one
/// written as an array of numbers still decodes; otherwise with
/// `deserialize_byte_buf` (see `byte_sequences`).
pub(crate) struct Within<T, const BYTES_BY_ANY: bool = false>(pub(crate) T);

impl<T, const BYTES_BY_ANY: bool> Within<T, BYTES_BY_ANY> {
    pub(crate) fn into_inner(self) -> T {
        self.0
    }
}

impl<'de, T: de::Deserialize<'de>, const BYTES_BY_ANY: bool> de::Deserialize<'de>
    for Within<T, BYTES_BY_ANY>
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut budgeted = Budgeted::new(deserializer);
        budgeted.bytes_by_any = BYTES_BY_ANY;
        T::deserialize(budgeted).map(Within)
    }
}

/// A deserializer (or visitor, or access) that charges the budget.
pub(crate) struct Budgeted<T> {
    inner: T,
    /// For a visitor: whether its sequence is a heap collection (whose
    /// elements are charged) rather than a tuple inside a value.
    heap: bool,
    /// See [`Within`].
    bytes_by_any: bool,
}

impl<T> Budgeted<T> {
    pub(crate) fn new(inner: T) -> Self {
        Budgeted {
            inner,
            heap: false,
            bytes_by_any: false,
        }
    }

    fn wrap<U>(&self, inner: U, heap: bool) -> Budgeted<U> {
        Budgeted {
            inner,
            heap,
            bytes_by_any: self.bytes_by_any,
        }
    }
}

// --- the deserializer ------------------------------------------------------

macro_rules! forward_deserialize {
    ($($method:ident),* $(,)?) => {
        $(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
            let visitor = self.wrap(visitor, false);
            self.inner.$method(visitor)
        })*
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Budgeted<D> {
    type Error = D::Error;

    forward_deserialize!(
        deserialize_any,
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
        deserialize_option,
        deserialize_unit,
        deserialize_identifier,
        deserialize_ignored_any,
    );

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        if super::byte_sequences::is_vec_u8_visitor::<V>() {
            // A plain `Vec<u8>`: one byte buffer, not a million numbers
            // (see `byte_sequences`).
            drop(visitor);
            let visitor = self.wrap(super::byte_sequences::VecU8Visitor, true);
            let bytes = if self.bytes_by_any {
                self.inner.deserialize_any(visitor)?
            } else {
                self.inner.deserialize_byte_buf(visitor)?
            };
            // SAFETY: `is_vec_u8_visitor` said `V` is serde's visitor of
            // `Vec<u8>`.
            return Ok(unsafe { super::byte_sequences::as_visitor_value::<V>(bytes) });
        }
        let visitor = self.wrap(visitor, true);
        self.inner.deserialize_seq(visitor)
    }
    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        let visitor = self.wrap(visitor, true);
        self.inner.deserialize_map(visitor)
    }
    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let visitor = self.wrap(visitor, false);
        self.inner.deserialize_tuple(len, visitor)
    }
    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let visitor = self.wrap(visitor, false);
        self.inner.deserialize_unit_struct(name, visitor)
    }
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let visitor = self.wrap(visitor, false);
        self.inner.deserialize_newtype_struct(name, visitor)
    }
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let visitor = self.wrap(visitor, false);
        self.inner.deserialize_tuple_struct(name, len, visitor)
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let visitor = self.wrap(visitor, false);
        self.inner.deserialize_struct(name, fields, visitor)
    }
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let visitor = self.wrap(visitor, false);
        self.inner.deserialize_enum(name, variants, visitor)
    }
    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

// --- the visitor -----------------------------------------------------------

macro_rules! forward_visit {
    ($($method:ident: $ty:ty),* $(,)?) => {
        $(fn $method<E: de::Error>(self, v: $ty) -> Result<V::Value, E> {
            self.inner.$method(v)
        })*
    };
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Budgeted<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    forward_visit!(
        visit_bool: bool,
        visit_i8: i8,
        visit_i16: i16,
        visit_i32: i32,
        visit_i64: i64,
        visit_i128: i128,
        visit_u8: u8,
        visit_u16: u16,
        visit_u32: u32,
        visit_u64: u64,
        visit_u128: u128,
        visit_f32: f32,
        visit_f64: f64,
        visit_char: char,
    );

    fn visit_str<E: de::Error>(self, v: &str) -> Result<V::Value, E> {
        charge(v.len())?;
        self.inner.visit_str(v)
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<V::Value, E> {
        charge(v.len())?;
        self.inner.visit_borrowed_str(v)
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<V::Value, E> {
        charge(v.len())?;
        self.inner.visit_string(v)
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<V::Value, E> {
        charge(v.len())?;
        self.inner.visit_bytes(v)
    }
    fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<V::Value, E> {
        charge(v.len())?;
        self.inner.visit_borrowed_bytes(v)
    }
    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<V::Value, E> {
        charge(v.len())?;
        self.inner.visit_byte_buf(v)
    }
    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_none()
    }
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<V::Value, D::Error> {
        let deserializer = self.wrap(deserializer, false);
        self.inner.visit_some(deserializer)
    }
    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_unit()
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<V::Value, D::Error> {
        let deserializer = self.wrap(deserializer, false);
        self.inner.visit_newtype_struct(deserializer)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        let seq = self.wrap(seq, self.heap);
        self.inner.visit_seq(seq)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        let map = self.wrap(map, true);
        self.inner.visit_map(map)
    }
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        let data = self.wrap(data, false);
        self.inner.visit_enum(data)
    }
}

// --- seeds and accesses ----------------------------------------------------

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Budgeted<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<S::Value, D::Error> {
        let deserializer = self.wrap(deserializer, false);
        self.inner.deserialize(deserializer)
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Budgeted<A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        if self.heap {
            // Each element of a collection takes its size in the collection.
            charge(size_of::<T::Value>().max(1))?;
        }
        let seed = self.wrap(seed, false);
        self.inner.next_element_seed(seed)
    }
    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Budgeted<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        charge(size_of::<K::Value>().max(1))?;
        let seed = self.wrap(seed, false);
        self.inner.next_key_seed(seed)
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        charge(size_of::<V::Value>())?;
        let seed = self.wrap(seed, false);
        self.inner.next_value_seed(seed)
    }
    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, A: EnumAccess<'de>> EnumAccess<'de> for Budgeted<A> {
    type Error = A::Error;
    type Variant = Budgeted<A::Variant>;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Self::Variant), A::Error> {
        let seed = self.wrap(seed, false);
        let (value, variant) = self.inner.variant_seed(seed)?;
        Ok((value, Budgeted::new(variant)))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for Budgeted<A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.inner.unit_variant()
    }
    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, A::Error> {
        let seed = self.wrap(seed, false);
        self.inner.newtype_variant_seed(seed)
    }
    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        let visitor = self.wrap(visitor, false);
        self.inner.tuple_variant(len, visitor)
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        let visitor = self.wrap(visitor, false);
        self.inner.struct_variant(fields, visitor)
    }
}
