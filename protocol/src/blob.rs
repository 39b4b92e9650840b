//! Byte vectors through serde as one run of bytes.
//!
//! serde hands a `Vec<u8>` to the format as a sequence of `u8`s, which
//! bincode then encodes (and decodes) one element at a time. Through
//! `serialize_bytes` it writes the very same bytes (the length, then the
//! bytes) with one copy. Use as `#[serde(with = "sessiond_protocol::blob")]`;
//! data written either way reads back either way.

use serde::de::{SeqAccess, Visitor};
use serde::{Deserializer, Serializer};

/// Serializes `bytes` as one byte string.
///
/// # Errors
/// The serializer's.
pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_bytes(bytes)
}

/// Deserializes a byte string (or a sequence of `u8`s).
///
/// # Errors
/// The deserializer's, or input that is neither.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    // `deserialize_bytes`: from a slice, bincode checks that the bytes are
    // there before anything is allocated (an owned buffer would be sized by
    // the claimed length first).
    deserializer.deserialize_bytes(Blob)
}

struct Blob;

impl<'de> Visitor<'de> for Blob {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
        Ok(v.to_vec())
    }

    fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(v)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        // The hint comes from the input: trust it only so far.
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(b) = seq.next_element::<u8>()? {
            out.push(b);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Plain(Vec<u8>);

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Fast(#[serde(with = "super")] Vec<u8>);

    #[test]
    fn same_bytes_as_a_plain_vec_both_ways() {
        for len in [0usize, 1, 250, 251, 300, 70_000] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let plain = crate::frame::encode_value(&Plain(data.clone())).unwrap();
            let fast = crate::frame::encode_value(&Fast(data.clone())).unwrap();
            assert_eq!(plain, fast, "len {len}");
            let back: Fast = crate::frame::decode_value(&plain).unwrap();
            assert_eq!(back.0, data);
            let back: Plain = crate::frame::decode_value(&fast).unwrap();
            assert_eq!(back.0, data);
        }
    }

    #[test]
    fn a_length_past_the_input_is_an_error() {
        let mut bytes = crate::frame::encode_value(&Fast(vec![1, 2, 3])).unwrap();
        bytes.truncate(bytes.len() - 1);
        assert!(crate::frame::decode_value::<Fast>(&bytes).is_err());
    }
}
