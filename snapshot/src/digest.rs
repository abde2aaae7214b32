//! The content hash: SHA-256 over a canonical binary form of any `Serialize` value.
//!
//! Hashing the JSON wire form would cost as much as encoding it (string escaping, float formatting,
//! field names); this form writes each value as fixed-width little-endian numbers and length-prefixed
//! bytes, in field order. It is deterministic because the content holds only sorted vectors.

use serde::ser::{self, Serialize};
use sha2::{Digest, Sha256};

/// Names the hashed form, so a change of form changes every hash.
const DOMAIN: &[u8] = b"tollgate.dev/snapshot-content/v1\0";
const BUFFER: usize = 64 * 1024;

/// Hex SHA-256 of the canonical binary form of `value`.
pub(crate) fn content_hash<T: Serialize>(value: &T) -> String {
    let mut hasher = ContentHasher::new();
    hasher.add(value);
    hasher.finish()
}

/// [`content_hash`] fed one part at a time. A struct's form is its fields' forms in order, so adding a
/// struct's fields one by one gives the struct's hash: the compiler hashes the first tables of a
/// snapshot while it still works on the last.
pub(crate) struct ContentHasher {
    sink: Sink,
}

impl ContentHasher {
    /// A hash of nothing yet.
    pub fn new() -> Self {
        let mut sink = Sink {
            sha: Sha256::new(),
            buf: Vec::with_capacity(BUFFER),
        };
        sink.buf.extend_from_slice(DOMAIN);
        Self { sink }
    }

    /// Appends the canonical form of `part`.
    pub fn add<T: Serialize + ?Sized>(&mut self, part: &T) {
        part.serialize(&mut self.sink)
            .expect("every snapshot value has a canonical form");
    }

    /// Hex SHA-256 of everything added.
    pub fn finish(mut self) -> String {
        self.sink.sha.update(&self.sink.buf);
        hex::encode(self.sink.sha.finalize())
    }
}

struct Sink {
    sha: Sha256,
    buf: Vec<u8>,
}

impl Sink {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        if self.buf.len() + bytes.len() > BUFFER {
            self.sha.update(&self.buf);
            self.buf.clear();
            if bytes.len() > BUFFER {
                self.sha.update(bytes);
                return;
            }
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Fixed-size writes (numbers, tags) copy without a call into `memcpy`.
    #[inline]
    fn put_fixed<const N: usize>(&mut self, bytes: [u8; N]) {
        if self.buf.len() + N > BUFFER {
            self.sha.update(&self.buf);
            self.buf.clear();
        }
        self.buf.extend_from_slice(&bytes);
    }

    #[inline]
    fn len(&mut self, n: usize) {
        self.put_fixed((n as u64).to_le_bytes());
    }
}

/// Only unsized sequences can fail, and snapshot content has none.
#[derive(Debug)]
pub(crate) struct Error(String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl ser::Error for Error {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        Self(msg.to_string())
    }
}

type Done = Result<(), Error>;

macro_rules! int {
    ($($f:ident: $t:ty => $w:ty),*) => {$(
        fn $f(self, v: $t) -> Done {
            self.put_fixed((v as $w).to_le_bytes());
            Ok(())
        }
    )*};
}

impl ser::Serializer for &mut Sink {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    int!(serialize_i8: i8 => i64, serialize_i16: i16 => i64, serialize_i32: i32 => i64, serialize_i64: i64 => i64,
         serialize_u8: u8 => u64, serialize_u16: u16 => u64, serialize_u32: u32 => u64, serialize_u64: u64 => u64);

    fn serialize_bool(self, v: bool) -> Done {
        self.put_fixed([u8::from(v)]);
        Ok(())
    }

    fn serialize_f32(self, v: f32) -> Done {
        self.serialize_f64(f64::from(v))
    }

    fn serialize_f64(self, v: f64) -> Done {
        // 0.0 and -0.0 price the same.
        let v = if v == 0.0 { 0.0 } else { v };
        self.put_fixed(v.to_bits().to_le_bytes());
        Ok(())
    }

    fn serialize_char(self, v: char) -> Done {
        self.serialize_u32(u32::from(v))
    }

    fn serialize_str(self, v: &str) -> Done {
        self.serialize_bytes(v.as_bytes())
    }

    fn serialize_bytes(self, v: &[u8]) -> Done {
        self.len(v.len());
        self.put(v);
        Ok(())
    }

    fn serialize_none(self) -> Done {
        self.put_fixed([0]);
        Ok(())
    }

    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Done {
        self.put_fixed([1]);
        value.serialize(self)
    }

    fn serialize_unit(self) -> Done {
        Ok(())
    }

    fn serialize_unit_struct(self, _: &'static str) -> Done {
        Ok(())
    }

    fn serialize_unit_variant(self, _: &'static str, index: u32, _: &'static str) -> Done {
        self.serialize_u32(index)
    }

    fn serialize_newtype_struct<T: ?Sized + Serialize>(self, _: &'static str, value: &T) -> Done {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        index: u32,
        _: &'static str,
        value: &T,
    ) -> Done {
        self.serialize_u32(index)?;
        value.serialize(self)
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<Self, Error> {
        let len = len.ok_or_else(|| Error("sequences must have a known length".into()))?;
        self.len(len);
        Ok(self)
    }

    fn serialize_tuple(self, _: usize) -> Result<Self, Error> {
        Ok(self)
    }

    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self, Error> {
        Ok(self)
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        index: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self, Error> {
        self.serialize_u32(index)?;
        Ok(self)
    }

    fn serialize_map(self, len: Option<usize>) -> Result<Self, Error> {
        self.serialize_seq(len)
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, Error> {
        Ok(self)
    }

    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self, Error> {
        // Field names are not written, so a struct variant starts like a tuple variant.
        self.serialize_tuple_variant(name, index, variant, len)
    }
}

macro_rules! compound {
    ($($tr:ident::$f:ident),*) => {$(
        impl ser::$tr for &mut Sink {
            type Ok = ();
            type Error = Error;
            fn $f<T: ?Sized + Serialize>(&mut self, value: &T) -> Done {
                value.serialize(&mut **self)
            }
            fn end(self) -> Done {
                Ok(())
            }
        }
    )*};
}
compound!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

impl ser::SerializeMap for &mut Sink {
    type Ok = ();
    type Error = Error;
    fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> Done {
        key.serialize(&mut **self)
    }
    fn serialize_value<T: ?Sized + Serialize>(&mut self, value: &T) -> Done {
        value.serialize(&mut **self)
    }
    fn end(self) -> Done {
        Ok(())
    }
}

/// Struct fields are written by value alone: their order is fixed, so their names add nothing.
macro_rules! named_compound {
    ($($tr:ident),*) => {$(
        impl ser::$tr for &mut Sink {
            type Ok = ();
            type Error = Error;
            fn serialize_field<T: ?Sized + Serialize>(
                &mut self,
                _: &'static str,
                value: &T,
            ) -> Done {
                value.serialize(&mut **self)
            }
            fn end(self) -> Done {
                Ok(())
            }
        }
    )*};
}
named_compound!(SerializeStruct, SerializeStructVariant);

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize)]
    struct Pair {
        a: Option<String>,
        b: Vec<u32>,
    }

    #[test]
    fn equal_values_hash_equal_and_boundaries_matter() {
        let h = |a: Option<&str>, b: &[u32]| {
            content_hash(&Pair {
                a: a.map(str::to_string),
                b: b.to_vec(),
            })
        };
        assert_eq!(h(Some("x"), &[1, 2]), h(Some("x"), &[1, 2]));
        assert_ne!(h(Some("x"), &[1, 2]), h(Some("x"), &[12]));
        assert_ne!(h(None, &[]), h(Some(""), &[]));
        assert_ne!(h(Some("ab"), &[]), h(Some("a"), &[]));
        assert_eq!(h(None, &[]).len(), 64);
    }

    #[test]
    fn long_values_cross_the_buffer_the_same_way() {
        let long = "x".repeat(BUFFER * 2 + 7);
        let a = content_hash(&vec![long.clone(), "y".into()]);
        let b = content_hash(&vec![long, "y".into()]);
        assert_eq!(a, b);
        let many: Vec<String> = (0..20_000).map(|i| format!("item-{i}")).collect();
        let mut changed = many.clone();
        changed[19_999].push('!');
        assert_ne!(content_hash(&many), content_hash(&changed));
    }

    #[test]
    fn negative_zero_prices_like_zero() {
        assert_eq!(content_hash(&0.0f64), content_hash(&-0.0f64));
        assert_ne!(content_hash(&1.0f64), content_hash(&0.0f64));
    }
}
