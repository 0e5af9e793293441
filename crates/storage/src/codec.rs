//! Key and value codecs: how a Rust value becomes bytes in a column family,
//! and how those bytes are shown to a person.

use std::marker::PhantomData;

use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

/// Bytes that could not be decoded as the table's type.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

/// How one Rust type is stored.
///
/// `In` is the borrowed form used to write and look up (so a lookup by `&str`
/// allocates nothing); `Out` is the owned form read back.
pub trait Codec: 'static {
    type In<'a>: Copy;
    type Out;
    /// Set when every encoding has this length; composite keys then need no separator.
    const FIXED_LEN: Option<usize> = None;

    fn encode(value: Self::In<'_>, out: &mut Vec<u8>);
    fn decode(bytes: &[u8]) -> Result<Self::Out, DecodeError>;
    /// A readable rendering of stored bytes, for `conduit db`.
    fn render(bytes: &[u8]) -> Value;
}

/// A codec that may stand before another component of a composite key: its
/// encoding is either fixed-length or never contains the separator byte 0xFF.
pub trait KeyPart: Codec {}

/// Separator between variable-length parts of a composite key. It never
/// occurs in UTF-8, so string parts need no escaping.
pub const SEPARATOR: u8 = 0xFF;

/// A UTF-8 string.
pub struct Str;

impl Codec for Str {
    type In<'a> = &'a str;
    type Out = String;

    fn encode(value: &str, out: &mut Vec<u8>) {
        out.extend_from_slice(value.as_bytes());
    }

    fn decode(bytes: &[u8]) -> Result<String, DecodeError> {
        String::from_utf8(bytes.to_vec()).map_err(|e| DecodeError(e.to_string()))
    }

    fn render(bytes: &[u8]) -> Value {
        Value::String(String::from_utf8_lossy(bytes).into_owned())
    }
}

impl KeyPart for Str {}

/// An unsigned integer, big-endian so that byte order is numeric order.
pub struct U64;

impl Codec for U64 {
    type In<'a> = u64;
    type Out = u64;
    const FIXED_LEN: Option<usize> = Some(8);

    fn encode(value: u64, out: &mut Vec<u8>) {
        out.extend_from_slice(&value.to_be_bytes());
    }

    fn decode(bytes: &[u8]) -> Result<u64, DecodeError> {
        let array: [u8; 8] = bytes
            .try_into()
            .map_err(|_| DecodeError(format!("expected 8 bytes, found {}", bytes.len())))?;
        Ok(u64::from_be_bytes(array))
    }

    fn render(bytes: &[u8]) -> Value {
        match Self::decode(bytes) {
            Ok(n) => Value::from(n),
            Err(_) => Raw::render(bytes),
        }
    }
}

impl KeyPart for U64 {}

/// Opaque bytes, shown as hex.
pub struct Raw;

impl Codec for Raw {
    type In<'a> = &'a [u8];
    type Out = Vec<u8>;

    fn encode(value: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(value);
    }

    fn decode(bytes: &[u8]) -> Result<Vec<u8>, DecodeError> {
        Ok(bytes.to_vec())
    }

    fn render(bytes: &[u8]) -> Value {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Value::String(format!("0x{hex}"))
    }
}

/// Any serde type, stored as JSON: readable as it is, and tolerant of new
/// optional fields.
pub struct Json<T>(PhantomData<fn() -> T>);

impl<T: Serialize + DeserializeOwned + 'static> Codec for Json<T> {
    type In<'a> = &'a T;
    type Out = T;

    fn encode(value: &T, out: &mut Vec<u8>) {
        // Serializing a plain data type into a Vec cannot fail.
        serde_json::to_writer(out, value).expect("JSON serialization of a stored type");
    }

    fn decode(bytes: &[u8]) -> Result<T, DecodeError> {
        serde_json::from_slice(bytes).map_err(|e| DecodeError(e.to_string()))
    }

    fn render(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).unwrap_or_else(|_| Str::render(bytes))
    }
}

/// Splits a composite key after its first part.
fn split_first<A: Codec>(bytes: &[u8]) -> Result<(&[u8], &[u8]), DecodeError> {
    match A::FIXED_LEN {
        Some(len) if bytes.len() >= len => Ok(bytes.split_at(len)),
        Some(len) => Err(DecodeError(format!("key shorter than its {len}-byte part"))),
        None => {
            let at = bytes
                .iter()
                .position(|&b| b == SEPARATOR)
                .ok_or_else(|| DecodeError("composite key without separator".into()))?;
            Ok((&bytes[..at], &bytes[at + 1..]))
        }
    }
}

pub(crate) fn encode_part<A: KeyPart>(value: A::In<'_>, out: &mut Vec<u8>) {
    A::encode(value, out);
    if A::FIXED_LEN.is_none() {
        out.push(SEPARATOR);
    }
}

impl<A: KeyPart, B: Codec> Codec for (A, B) {
    type In<'a> = (A::In<'a>, B::In<'a>);
    type Out = (A::Out, B::Out);

    fn encode((a, b): Self::In<'_>, out: &mut Vec<u8>) {
        encode_part::<A>(a, out);
        B::encode(b, out);
    }

    fn decode(bytes: &[u8]) -> Result<Self::Out, DecodeError> {
        let (a, rest) = split_first::<A>(bytes)?;
        Ok((A::decode(a)?, B::decode(rest)?))
    }

    fn render(bytes: &[u8]) -> Value {
        match split_first::<A>(bytes) {
            Ok((a, rest)) => Value::Array(vec![A::render(a), B::render(rest)]),
            Err(_) => Raw::render(bytes),
        }
    }
}

impl<A: KeyPart, B: KeyPart, C: Codec> Codec for (A, B, C) {
    type In<'a> = (A::In<'a>, B::In<'a>, C::In<'a>);
    type Out = (A::Out, B::Out, C::Out);

    fn encode((a, b, c): Self::In<'_>, out: &mut Vec<u8>) {
        encode_part::<A>(a, out);
        encode_part::<B>(b, out);
        C::encode(c, out);
    }

    fn decode(bytes: &[u8]) -> Result<Self::Out, DecodeError> {
        let (a, rest) = split_first::<A>(bytes)?;
        let (b, rest) = split_first::<B>(rest)?;
        Ok((A::decode(a)?, B::decode(b)?, C::decode(rest)?))
    }

    fn render(bytes: &[u8]) -> Value {
        let parts = split_first::<A>(bytes)
            .and_then(|(a, rest)| split_first::<B>(rest).map(|(b, c)| (a, b, c)));
        match parts {
            Ok((a, b, c)) => Value::Array(vec![A::render(a), B::render(b), C::render(c)]),
            Err(_) => Raw::render(bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip<C: Codec>(value: C::In<'_>) -> C::Out {
        let mut bytes = Vec::new();
        C::encode(value, &mut bytes);
        C::decode(&bytes).unwrap()
    }

    #[test]
    fn composite_keys_roundtrip() {
        assert_eq!(
            roundtrip::<(Str, Str)>(("@a:x", "DEV")),
            ("@a:x".to_owned(), "DEV".to_owned())
        );
        assert_eq!(
            roundtrip::<(U64, Str, Str)>((7, "", "m.type")),
            (7, String::new(), "m.type".to_owned())
        );
        // A fixed-width part may contain the separator byte itself.
        assert_eq!(
            roundtrip::<(U64, Raw)>((u64::MAX, b"\xff")),
            (u64::MAX, vec![0xff])
        );
    }

    #[test]
    fn integers_sort_numerically() {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        U64::encode(255, &mut a);
        U64::encode(256, &mut b);
        assert!(a < b);
    }

    #[test]
    fn render_is_readable() {
        let mut bytes = Vec::new();
        <(Str, U64)>::encode(("@a:x", 3), &mut bytes);
        assert_eq!(<(Str, U64)>::render(&bytes), serde_json::json!(["@a:x", 3]));
        assert_eq!(Json::<u32>::render(b"12"), serde_json::json!(12));
        assert_eq!(U64::render(b"abc"), serde_json::json!("0x616263"));
    }

    #[test]
    fn bad_bytes_are_errors_not_panics() {
        assert!(U64::decode(b"abc").is_err());
        assert!(<(Str, Str)>::decode(b"no separator").is_err());
        assert!(Str::decode(b"\xff\xfe").is_err());
        assert!(Json::<u32>::decode(b"{").is_err());
    }
}
