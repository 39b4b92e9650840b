//! Attribute values. A session carries a small map of named values; integers can
//! be incremented atomically and windowed counters implement rate limits.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The attributes of a session, ordered by name (so their encoding is canonical).
pub type Attrs = BTreeMap<String, Value>;

/// One attribute value. New variants are only ever added at the end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// No value.
    Null,
    /// A boolean.
    Bool(bool),
    /// A signed integer; `Incr` without a window works on these.
    Int(i64),
    /// A float.
    Float(f64),
    /// UTF-8 text.
    Str(String),
    /// Raw bytes.
    Bytes(#[serde(with = "crate::blob")] Vec<u8>),
    /// A counter in a fixed window, written by `Incr` with a window: `value`
    /// counts the increments since the window opened; it restarts at `reset_at_ms`
    /// (Unix milliseconds).
    Counter {
        /// Increments counted in the current window.
        value: i64,
        /// When the current window ends, in Unix milliseconds.
        reset_at_ms: u64,
    },
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Self::Str(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Self::Str(s)
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Self::Bool(v)
    }
}

impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Self::Bytes(v)
    }
}

/// Encodes an attribute map to its canonical bytes (the same bytes it takes
/// inside a message), for stores that keep attributes as one compact blob.
///
/// # Errors
/// [`crate::EncodeError::Codec`] if the codec refuses the value.
pub fn encode_attrs(attrs: &Attrs) -> Result<Vec<u8>, crate::EncodeError> {
    crate::frame::encode_value(attrs)
}

/// Decodes bytes written by [`encode_attrs`].
///
/// # Errors
/// [`crate::DecodeError`] if the bytes are not exactly one attribute map.
pub fn decode_attrs(bytes: &[u8]) -> Result<Attrs, crate::DecodeError> {
    crate::frame::decode_value(bytes)
}
