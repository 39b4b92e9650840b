//! Wire protocol of sessiond: messages, the frame codec and error codes.
//!
//! This crate is pure: it turns messages into bytes and bytes into messages, and
//! performs no I/O. The daemon (`sessiond`) and the client (`sessiond-client`) both
//! depend on it, and nothing else touches the codec, so the serialization library
//! (bincode 2, pinned) can be swapped for a compatible one in one place.
//!
//! Modules:
//! - [`frame`]: the frame layout (u32 big-endian length, then one bincode message),
//!   byte by byte, and the encode/decode functions.
//! - [`message`]: requests, responses and the session record.
//! - [`value`]: attribute values and the attribute map.
//! - [`ids`]: session ids and auth tokens (their `Debug` never shows the secret).
//! - [`error`]: wire error codes and the codec's typed errors.
//! - [`limits`]: sizes every implementation enforces.
//! - [`view`]: the hot requests (`Create`, `Get`) decoded in place, and session
//!   answers encoded from borrowed parts (what a server's fast path uses).
//!
//! ```
//! use sessiond_protocol::{frame, Op, Request};
//!
//! let mut buf = bytes::BytesMut::new();
//! frame::encode_request(&Request { id: 7, op: Op::Ping }, &mut buf).unwrap();
//! assert_eq!(&buf[..], &[0, 0, 0, 2, 7, 1]);
//! let (payload, used) = frame::split_frame(&buf, frame::DEFAULT_MAX_FRAME_LEN).unwrap().unwrap();
//! assert_eq!(used, 6);
//! assert_eq!(frame::decode_request(payload).unwrap(), Request { id: 7, op: Op::Ping });
//! ```

pub mod blob;
pub mod duration;
pub mod error;
pub mod frame;
pub mod ids;
pub mod limits;
pub mod message;
pub mod value;
pub mod view;

pub use error::{DecodeError, EncodeError, ErrorCode, FrameError, WireError};
pub use ids::{AuthToken, SessionId};
pub use message::*;
pub use value::{Attrs, Value};

/// The protocol version this crate speaks. A `Hello` names the version the client
/// speaks; the server answers with the one it will use or `UnsupportedVersion`.
pub const PROTOCOL_VERSION: u16 = 1;
