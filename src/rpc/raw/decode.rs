//! Deserializing: a list of strings back into the types it was made from.

use serde::de::{self, DeserializeSeed, IntoDeserializer, SeqAccess, Visitor};

use super::{RawError, Strings, unsupported};

pub(super) struct ListDeserializer<'de> {
    pub(super) strings: Strings<'de>,
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
        if name == crate::rpc::fd::FD_NAME {
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
pub(super) struct OneString<'de> {
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
pub(super) struct FirstOfOne<'a, 'de> {
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
pub(super) struct ElementDeserializer<'de> {
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
