//! The frame codec: pure functions from messages to bytes and back.
//!
//! # Frame layout
//!
//! ```text
//! offset  size  field
//! 0       4     payload length N, u32 big-endian (0 < N <= max_frame_len)
//! 4       N     payload: one bincode 2 message (a Request or a Response)
//! ```
//!
//! The length is checked against the maximum (default [`DEFAULT_MAX_FRAME_LEN`],
//! 1 MiB) as soon as its four bytes are in, before any buffer is sized from it, so
//! a peer claiming 4 GiB costs nothing but the closed connection.
//!
//! # Payload encoding
//!
//! bincode 2 "standard" configuration, through serde:
//! - unsigned integers wider than a byte are varints: a value below 251 is one
//!   byte; otherwise a marker byte 251/252/253 is followed by the value as u16/u32/u64
//!   little-endian. Signed integers are zigzag-mapped first (0, -1, 1, -2 ... as 0, 1, 2, 3 ...).
//!   `u8` and `bool` are one byte; `f64` is 8 bytes little-endian.
//! - strings and byte vectors: varint length, then the bytes (UTF-8 for strings).
//! - `Option`: one byte 0 (None) or 1 followed by the value.
//! - sequences and maps: varint count, then the items (map entries as key, value).
//! - enums: the variant index as a varint, then the variant's fields.
//! - structs: their fields in declaration order, nothing between them.
//! - [`SessionId`](crate::SessionId): 16 raw bytes. [`ErrorCode`](crate::ErrorCode): its `u16`.
//!
//! A `Request` is `id` (varint u64) then the [`Op`] tag and fields; a
//! `Response` is `id` then the [`Reply`](crate::Reply) tag and fields. Because the
//! id comes first, a server can read it ([`peek_request_id`]) and answer even a
//! request whose operation it does not know.
//!
//! Example: `Request { id: 7, op: Op::Ping }` is the frame `00 00 00 02 07 01`.

use bytes::{BufMut, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{DecodeError, EncodeError, FrameError};
use crate::message::{Op, Request, Response};

/// Default largest payload, 1 MiB.
pub const DEFAULT_MAX_FRAME_LEN: u32 = 1024 * 1024;
/// The largest maximum any configuration may set, 64 MiB.
pub const ABSOLUTE_MAX_FRAME_LEN: u32 = 64 * 1024 * 1024;
/// Bytes of the length prefix.
pub const HEADER_LEN: usize = 4;
/// Largest frame a daemon accepts before the connection's `Hello` succeeded:
/// a `Hello` with a token and a client name fits many times over, and a
/// stranger cannot make the daemon hold more than this for it.
pub const MAX_HELLO_FRAME_LEN: u32 = 8 * 1024;

pub(crate) fn config() -> impl bincode::config::Config {
    // The limit bounds what the decoder may allocate for any one claimed length,
    // even though serde's own pre-allocation is already cautious.
    bincode::config::standard().with_limit::<{ ABSOLUTE_MAX_FRAME_LEN as usize }>()
}

struct BufWriter<'a>(&'a mut BytesMut);

impl bincode::enc::write::Writer for BufWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }
}

/// Counts the bytes an encoding would take, writing none.
struct CountWriter(usize);

impl bincode::enc::write::Writer for CountWriter {
    fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
        self.0 += bytes.len();
        Ok(())
    }
}

/// Appends one frame holding `msg` to `buf`.
///
/// # Errors
/// [`EncodeError::TooLarge`] if the payload exceeds [`ABSOLUTE_MAX_FRAME_LEN`]
/// (`buf` is left as it was), or [`EncodeError::Codec`].
pub fn encode_frame<T: Serialize>(msg: &T, buf: &mut BytesMut) -> Result<(), EncodeError> {
    let start = buf.len();
    buf.put_u32(0);
    if let Err(e) = bincode::serde::encode_into_writer(msg, BufWriter(buf), config()) {
        buf.truncate(start);
        return Err(EncodeError::Codec {
            reason: e.to_string(),
        });
    }
    finish_frame(buf, start)
}

/// Writes the length of the frame that begins at `start` (its 4-byte header
/// reserved there) into that header.
///
/// # Errors
/// [`EncodeError::TooLarge`] if the payload exceeds [`ABSOLUTE_MAX_FRAME_LEN`]:
/// `buf` is then cut back to `start`.
pub(crate) fn finish_frame(buf: &mut BytesMut, start: usize) -> Result<(), EncodeError> {
    let len = buf.len() - start - HEADER_LEN;
    let Some(len32) = u32::try_from(len)
        .ok()
        .filter(|l| *l <= ABSOLUTE_MAX_FRAME_LEN)
    else {
        buf.truncate(start);
        return Err(EncodeError::TooLarge {
            len,
            max: ABSOLUTE_MAX_FRAME_LEN,
        });
    };
    buf[start..start + HEADER_LEN].copy_from_slice(&len32.to_be_bytes());
    Ok(())
}

/// Appends one frame holding `req` to `buf`.
///
/// # Errors
/// As [`encode_frame`].
pub fn encode_request(req: &Request, buf: &mut BytesMut) -> Result<(), EncodeError> {
    encode_frame(req, buf)
}

/// Appends one frame holding the request `id` / `op` to `buf`: the bytes of
/// [`encode_request`] on `Request { id, op }`, without owning the operation
/// (a client that may send it again keeps it).
///
/// # Errors
/// As [`encode_frame`].
pub fn encode_request_parts(id: u64, op: &Op, buf: &mut BytesMut) -> Result<(), EncodeError> {
    /// `Request` field for field, borrowing the operation.
    #[derive(Serialize)]
    struct RequestRef<'a> {
        id: u64,
        op: &'a Op,
    }
    encode_frame(&RequestRef { id, op }, buf)
}

/// Appends one frame holding `resp` to `buf`.
///
/// # Errors
/// As [`encode_frame`].
pub fn encode_response(resp: &Response, buf: &mut BytesMut) -> Result<(), EncodeError> {
    encode_frame(resp, buf)
}

/// Finds the first complete frame in `buf`.
///
/// Returns `Ok(None)` when more bytes are needed, or the payload and the number of
/// bytes the whole frame takes (header included).
///
/// # Errors
/// [`FrameError::TooLarge`] when the length prefix exceeds `max_len` (or is 0,
/// which no message encodes to): the stream cannot be trusted after it.
pub fn split_frame(buf: &[u8], max_len: u32) -> Result<Option<(&[u8], usize)>, FrameError> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let mut len_bytes = [0u8; HEADER_LEN];
    len_bytes.copy_from_slice(header);
    let len = u32::from_be_bytes(len_bytes);
    if len > max_len || len == 0 {
        return Err(FrameError::TooLarge {
            len: u64::from(len),
            max: max_len,
        });
    }
    let total = HEADER_LEN + len as usize;
    Ok(buf.get(HEADER_LEN..total).map(|payload| (payload, total)))
}

fn decode_exact<T: DeserializeOwned>(payload: &[u8]) -> Result<T, DecodeError> {
    let (msg, used) =
        bincode::serde::decode_from_slice::<T, _>(payload, config()).map_err(|e| {
            DecodeError::Malformed {
                reason: e.to_string(),
            }
        })?;
    if used != payload.len() {
        return Err(DecodeError::TrailingBytes {
            used,
            len: payload.len(),
        });
    }
    Ok(msg)
}

/// Encodes any protocol value (without a frame header), with the codec and
/// configuration the frames use.
///
/// # Errors
/// [`EncodeError::Codec`] if the codec refuses the value.
pub fn encode_value<T: Serialize>(value: &T) -> Result<Vec<u8>, EncodeError> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| EncodeError::Codec {
        reason: e.to_string(),
    })
}

/// The length of [`encode_value`]'s encoding of `value`, without allocating it.
///
/// # Errors
/// [`EncodeError::Codec`] if the codec refuses the value.
pub fn encoded_len<T: Serialize>(value: &T) -> Result<usize, EncodeError> {
    let mut count = CountWriter(0);
    bincode::serde::encode_into_writer(value, &mut count, config()).map_err(|e| {
        EncodeError::Codec {
            reason: e.to_string(),
        }
    })?;
    Ok(count.0)
}

/// Appends the encoding of `value` (as [`encode_value`] makes it) to `out`.
/// On error `out` is left as it was.
///
/// # Errors
/// [`EncodeError::Codec`] if the codec refuses the value.
pub fn encode_value_into<T: Serialize>(value: &T, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let start = out.len();
    bincode::serde::encode_into_std_write(value, out, config()).map_err(|e| {
        out.truncate(start);
        EncodeError::Codec {
            reason: e.to_string(),
        }
    })?;
    Ok(())
}

/// Decodes bytes written by [`encode_value`], requiring that all are used.
///
/// # Errors
/// [`DecodeError`] if the bytes are not exactly one value of type `T`.
pub fn decode_value<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    decode_exact(bytes)
}

/// Decodes any protocol value in place: `&str` and `&[u8]` fields borrow
/// from `bytes` instead of being copied. The whole of `bytes` must be one
/// value.
///
/// # Errors
/// [`DecodeError`] if the bytes are not exactly one valid `T`.
pub fn decode_value_in_place<'a, T: serde::Deserialize<'a>>(
    bytes: &'a [u8],
) -> Result<T, DecodeError> {
    let (msg, used) =
        bincode::serde::borrow_decode_from_slice::<T, _>(bytes, config()).map_err(|e| {
            DecodeError::Malformed {
                reason: e.to_string(),
            }
        })?;
    if used != bytes.len() {
        return Err(DecodeError::TrailingBytes {
            used,
            len: bytes.len(),
        });
    }
    Ok(msg)
}

/// Decodes a request from a frame payload (as returned by [`split_frame`]).
///
/// # Errors
/// [`DecodeError`] if the payload is not exactly one valid request.
pub fn decode_request(payload: &[u8]) -> Result<Request, DecodeError> {
    decode_exact(payload)
}

/// Decodes a response from a frame payload.
///
/// # Errors
/// [`DecodeError`] if the payload is not exactly one valid response.
pub fn decode_response(payload: &[u8]) -> Result<Response, DecodeError> {
    decode_exact(payload)
}

/// Reads just the request id at the start of a payload, so that a request whose
/// body cannot be decoded can still be answered with its id.
#[must_use]
pub fn peek_request_id(payload: &[u8]) -> Option<u64> {
    bincode::serde::decode_from_slice::<u64, _>(payload, config())
        .ok()
        .map(|(id, _)| id)
}

/// Reads the request id and the operation's tag (its variant index in
/// [`Op`]) at the start of a payload, so a server can tell an operation it
/// does not know (a tag of [`Op::COUNT`](crate::Op::COUNT) or more) from a malformed one.
#[must_use]
pub fn peek_request_header(payload: &[u8]) -> Option<(u64, u32)> {
    bincode::serde::decode_from_slice::<(u64, u32), _>(payload, config())
        .ok()
        .map(|(header, _)| header)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::*;
    use crate::{ErrorCode, SessionId, Value, WireError};

    fn frame_of<T: Serialize>(msg: &T) -> Vec<u8> {
        let mut buf = BytesMut::new();
        encode_frame(msg, &mut buf).unwrap();
        buf.to_vec()
    }

    #[test]
    fn encoded_len_is_the_length_of_the_encoding() {
        let values = [
            Op::Ping,
            Op::Hello(Hello {
                protocol_version: 1,
                auth_token: None,
                client_name: Some("x".repeat(300)),
            }),
        ];
        for v in &values {
            assert_eq!(encoded_len(v).unwrap(), encode_value(v).unwrap().len());
        }
    }

    #[test]
    fn golden_ping() {
        assert_eq!(
            frame_of(&Request {
                id: 7,
                op: Op::Ping
            }),
            [0, 0, 0, 2, 7, 1]
        );
    }

    #[test]
    fn header_peek_sees_the_last_known_and_an_unknown_tag() {
        let last = frame_of(&Request {
            id: 9,
            op: Op::Subscribe(crate::Subscribe {
                namespaces: vec!["app".into()],
                updates: false,
                touches: false,
                from: crate::EventsFrom::After(500),
            }),
        });
        assert_eq!(peek_request_header(&last[4..]), Some((9, Op::COUNT - 1)));
        // id 9, tag 200 (a future operation), then bytes this build cannot read.
        assert_eq!(peek_request_header(&[9, 200, 1, 2]), Some((9, 200)));
        assert!(decode_request(&[9, 200, 1, 2]).is_err());
        assert_eq!(peek_request_header(&[]), None);
    }

    #[test]
    fn golden_get() {
        let id = SessionId([0xAB; 16]);
        let req = Request {
            id: 300,
            op: Op::Get(Get {
                namespace: "app".into(),
                id,
                touch: true,
            }),
        };
        let mut want = vec![0, 0, 0, 25];
        want.extend_from_slice(&[251, 0x2C, 0x01]); // 300 as varint: marker 251, u16 LE
        want.push(3); // Op::Get
        want.extend_from_slice(&[3, b'a', b'p', b'p']);
        want.extend_from_slice(&[0xAB; 16]);
        want.push(1); // touch
        assert_eq!(frame_of(&req), want);
    }

    #[test]
    fn golden_error_response() {
        let resp = Response {
            id: 1,
            reply: Reply::Error(WireError::new(ErrorCode::NotFound, "no")),
        };
        // id 1, Reply::Error tag 0, code 1 (varint u16), message "no".
        assert_eq!(frame_of(&resp), [0, 0, 0, 6, 1, 0, 1, 2, b'n', b'o']);
    }

    #[test]
    fn golden_incr_value() {
        let req = Request {
            id: 2,
            op: Op::Update(Update {
                namespace: "a".into(),
                id: SessionId([0; 16]),
                set: [("n".to_string(), Value::Int(-2))].into_iter().collect(),
                remove: vec![],
                expected_version: Some(5),
                ttl: None,
                upsert: None,
            }),
        };
        let mut want = vec![0, 0, 0, 30, 2, 5, 1, b'a'];
        want.extend_from_slice(&[0; 16]);
        // set: 1 entry, key "n", Value::Int tag 2, zigzag(-2) = 3
        want.extend_from_slice(&[1, 1, b'n', 2, 3]);
        want.push(0); // remove: empty
        want.extend_from_slice(&[1, 5]); // Some(5)
        want.push(0); // ttl None
        want.push(0); // upsert None
        assert_eq!(frame_of(&req), want);
    }

    #[test]
    fn split_needs_more() {
        assert_eq!(split_frame(&[], 10), Ok(None));
        assert_eq!(split_frame(&[0, 0], 10), Ok(None));
        assert_eq!(split_frame(&[0, 0, 0, 3, 1, 2], 10), Ok(None));
        assert_eq!(
            split_frame(&[0, 0, 0, 2, 1, 2, 9], 10),
            Ok(Some((&[1u8, 2][..], 6)))
        );
    }

    #[test]
    fn split_rejects_huge_and_zero() {
        assert_eq!(
            split_frame(&[0xFF, 0xFF, 0xFF, 0xFF], DEFAULT_MAX_FRAME_LEN),
            Err(FrameError::TooLarge {
                len: u64::from(u32::MAX),
                max: DEFAULT_MAX_FRAME_LEN
            })
        );
        assert!(split_frame(&[0, 0, 0, 0], 10).is_err());
    }

    #[test]
    fn unknown_op_keeps_id() {
        // id 9, op tag 200 (no such operation)
        let payload = [9u8, 200];
        assert!(matches!(
            decode_request(&payload),
            Err(DecodeError::Malformed { .. })
        ));
        assert_eq!(peek_request_id(&payload), Some(9));
    }

    #[test]
    fn trailing_bytes_rejected() {
        let payload = [7u8, 1, 0];
        assert_eq!(
            decode_request(&payload),
            Err(DecodeError::TrailingBytes { used: 2, len: 3 })
        );
    }
}
