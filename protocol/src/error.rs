//! Error codes carried on the wire, and the codec's own typed errors.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What went wrong with a request, as the server reports it.
///
/// On the wire a code is a `u16` (see [`ErrorCode::as_u16`]), so a client built
/// before a new code was added decodes it as [`ErrorCode::Other`] instead of
/// failing to decode the whole response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// No live session has that id (it never existed, expired or was deleted).
    NotFound,
    /// The record's version is not the one the request expected.
    Conflict,
    /// A limit was reached: the owner's session limit under the reject policy.
    LimitExceeded,
    /// The connection's credentials do not allow this request.
    Unauthorized,
    /// The request is malformed or an argument is out of range.
    InvalidRequest,
    /// A frame or a record is larger than the configured maximum.
    TooLarge,
    /// The daemon's memory limit is reached; reads still work.
    OutOfMemory,
    /// The daemon cannot serve this now (connection limit, shutting down, storage down).
    Unavailable,
    /// A caller-chosen id is already taken by a live session.
    AlreadyExists,
    /// The id was deleted or rotated away recently (a tombstone guards it), so it
    /// cannot be created again yet: a late write must not bring back a logged-out session.
    Gone,
    /// A request other than `Hello` came before the `Hello`.
    HelloRequired,
    /// The `Hello` named a protocol version this daemon does not speak.
    UnsupportedVersion,
    /// The frame decoded to no operation this daemon knows.
    UnknownOperation,
    /// A bug on the server side; the request may or may not have been applied.
    Internal,
    /// A replicated write was proposed but its outcome is unknown (the leader
    /// lost its leadership or the group its majority before it committed): it
    /// may or may not have been applied. Read before retrying.
    Indeterminate,
    /// The peer took too long: no complete `Hello` within the handshake
    /// deadline, or a frame left unfinished past the frame deadline. The
    /// connection is closed after it.
    TimedOut,
    /// An events subscriber fell too far behind: its connection stayed
    /// unwritable past the daemon's bound, so it is closed. Subscribe again
    /// from the last cursor received.
    Lagging,
    /// A code this build does not know (sent by a newer peer).
    Other(u16),
}

impl ErrorCode {
    /// The code's number on the wire. Numbers are never reused.
    #[must_use]
    pub fn as_u16(self) -> u16 {
        match self {
            Self::NotFound => 1,
            Self::Conflict => 2,
            Self::LimitExceeded => 3,
            Self::Unauthorized => 4,
            Self::InvalidRequest => 5,
            Self::TooLarge => 6,
            Self::OutOfMemory => 7,
            Self::Unavailable => 8,
            Self::AlreadyExists => 9,
            Self::Gone => 10,
            Self::HelloRequired => 11,
            Self::UnsupportedVersion => 12,
            Self::UnknownOperation => 13,
            Self::Internal => 14,
            Self::Indeterminate => 15,
            Self::TimedOut => 16,
            Self::Lagging => 17,
            Self::Other(n) => n,
        }
    }

    /// The code for a number read from the wire.
    #[must_use]
    pub fn from_u16(n: u16) -> Self {
        match n {
            1 => Self::NotFound,
            2 => Self::Conflict,
            3 => Self::LimitExceeded,
            4 => Self::Unauthorized,
            5 => Self::InvalidRequest,
            6 => Self::TooLarge,
            7 => Self::OutOfMemory,
            8 => Self::Unavailable,
            9 => Self::AlreadyExists,
            10 => Self::Gone,
            11 => Self::HelloRequired,
            12 => Self::UnsupportedVersion,
            13 => Self::UnknownOperation,
            14 => Self::Internal,
            15 => Self::Indeterminate,
            16 => Self::TimedOut,
            17 => Self::Lagging,
            n => Self::Other(n),
        }
    }

    /// Whether retrying the same request later may succeed without changing it.
    #[must_use]
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::Unavailable | Self::OutOfMemory)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Other(n) => write!(f, "error code {n}"),
            other => fmt::Debug::fmt(other, f),
        }
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(self.as_u16())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u16::deserialize(d).map(Self::from_u16)
    }
}

/// An error response: a code and a human-readable message. Messages never
/// contain session ids, tokens or attribute values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct WireError {
    /// What kind of error.
    pub code: ErrorCode,
    /// What happened, for a human.
    pub message: String,
}

impl WireError {
    /// An error with a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Framing failed: the stream cannot be resynchronised and must be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The length prefix claims more than the configured maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// The claimed payload length.
        len: u64,
        /// The configured maximum.
        max: u32,
    },
}

/// A complete frame whose payload is not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The payload is not a valid encoding of the expected message type (this
    /// includes an operation tag this build does not know).
    #[error("malformed message: {reason}")]
    Malformed {
        /// The codec's description of the problem.
        reason: String,
    },
    /// The message decoded but bytes were left over in the frame.
    #[error("message used {used} of the frame's {len} bytes")]
    TrailingBytes {
        /// Bytes the message used.
        used: usize,
        /// Bytes in the frame payload.
        len: usize,
    },
}

/// A message could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The encoded message exceeds what a frame may carry.
    #[error("encoded message of {len} bytes exceeds the frame maximum of {max} bytes")]
    TooLarge {
        /// The encoded length.
        len: usize,
        /// The maximum.
        max: u32,
    },
    /// The codec refused the value.
    #[error("cannot encode message: {reason}")]
    Codec {
        /// The codec's description.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_is_kept() {
        for n in 0..40u16 {
            assert_eq!(ErrorCode::from_u16(n).as_u16(), n);
        }
        assert_eq!(ErrorCode::from_u16(999), ErrorCode::Other(999));
    }
}
