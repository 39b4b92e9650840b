//! The client's error type. Every failure says what happened and whether
//! retrying the same request may help ([`Error::is_retryable`]).
//!
//! | variant | when | what to do |
//! |---|---|---|
//! | [`Error::Server`] | the daemon refused the request; [`Error::code`] says why: `NotFound`, `Conflict` (stale `expected_version`), `LimitExceeded`, `AlreadyExists` / `Gone` (chosen id taken or recently deleted), `InvalidRequest`, `TooLarge`, `Unauthorized`, `Unavailable` / `OutOfMemory` (retryable) | handle the code; nothing was changed |
//! | [`Error::ConnectionClosed`] | the connection dropped before the answer | retry reads; a write may or may not have been applied |
//! | [`Error::Timeout`] | no answer within the request timeout | as above |
//! | [`Error::Connect`] | the daemon could not be reached (or the handshake timed out) | retry later; the client keeps reconnecting |
//! | [`Error::Backlog`] | no connection is up and too many requests already wait | shed load, retry later |
//! | [`Error::Encode`] | the request is too large to send; it was not sent | send less |
//! | [`Error::InvalidArgument`] | refused before sending | fix the call |
//! | [`Error::CursorExpired`] | an [`EventStream`](crate::EventStream) resumed after a cursor the daemon no longer holds; it carries `oldest` | resubscribe from `oldest - 1` (or now), knowing events were lost |
//! | [`Error::Protocol`] / [`Error::Frame`] | the daemon sent something this client does not understand | a version mismatch or a bug: report it |
//!
//! ```no_run
//! use sessiond_client::{Client, Error, ErrorCode, SessionId, UpdateOptions};
//!
//! # async fn demo(client: Client, id: SessionId) {
//! match client.update("app", id, UpdateOptions::new().set("n", 1i64).expected_version(3)).await {
//!     Ok(reply) => println!("version {}", reply.version),
//!     Err(Error::Server(e)) if e.code == ErrorCode::NotFound => println!("logged out"),
//!     Err(e) if e.code() == Some(ErrorCode::Conflict) => println!("re-read and try again"),
//!     Err(e) if e.is_retryable() => println!("daemon busy or unreachable: {e}"),
//!     Err(e) => println!("failed: {e}"),
//! }
//! # }
//! ```

use std::time::Duration;

use sessiond_protocol::{EncodeError, ErrorCode, FrameError, WireError};

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No connection to the daemon could be made (or the handshake failed at
    /// the transport level).
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address tried.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The daemon did not answer in time. The request may or may not have been
    /// applied.
    #[error("no answer within {after:?}")]
    Timeout {
        /// The timeout that passed.
        after: Duration,
    },
    /// The connection closed before the answer came. The request may or may not
    /// have been applied.
    #[error("the connection to the daemon closed")]
    ConnectionClosed,
    /// The daemon answered with an error.
    #[error("daemon error {}: {}", .0.code, .0.message)]
    Server(WireError),
    /// The daemon sent something this client does not understand: an
    /// undecodable response, a reply of the wrong kind for the request, or a
    /// handshake in a protocol version this client does not speak.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The daemon sent a frame header this client refuses (a length over the
    /// maximum the daemon announced, or zero). The connection was closed.
    #[error("bad frame from the daemon: {0}")]
    Frame(#[from] FrameError),
    /// The request could not be encoded (too large for a frame, for example); it
    /// was not sent.
    #[error("cannot send the request: {0}")]
    Encode(#[from] EncodeError),
    /// No connection to the daemon is up and `limit` requests are already
    /// waiting for one: this one fails at once instead of queueing without bound.
    #[error("the daemon is unreachable and {limit} requests are already waiting for it")]
    Backlog {
        /// The configured bound ([`ClientConfig::max_waiting`](crate::ClientConfig::max_waiting)).
        limit: usize,
    },
    /// An argument was refused before sending.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// An event subscription asked to resume after a cursor the daemon no
    /// longer holds: the events between `requested` and `oldest` are lost to
    /// this subscriber. The [`EventStream`](crate::EventStream) ends after
    /// it; subscribe again with [`EventsFrom::After`](crate::EventsFrom::After)`(oldest - 1)`
    /// to get what is left, or from now, knowing there is a gap.
    #[error("events after cursor {requested} are no longer held; the oldest held is {oldest}")]
    CursorExpired {
        /// The cursor asked to resume after.
        requested: u64,
        /// The oldest cursor the daemon still holds.
        oldest: u64,
    },
}

impl Error {
    /// The daemon's error code, for [`Error::Server`].
    #[must_use]
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Server(e) => Some(e.code),
            _ => None,
        }
    }

    /// Whether the same request may succeed later: connection trouble, timeouts
    /// and the daemon's retryable codes (`Unavailable`, `OutOfMemory`). A write
    /// that timed out or lost its connection may have been applied; retry only
    /// what is safe to repeat.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Connect { .. }
            | Self::Timeout { .. }
            | Self::ConnectionClosed
            | Self::Backlog { .. } => true,
            Self::Server(e) => e.code.is_retryable(),
            _ => false,
        }
    }

    /// A copy of this error, for handing one failure to several callers (the
    /// callers that waited on a failed reconnect). `std::io::Error` is not
    /// `Clone`, so an I/O cause is rebuilt from its kind and message.
    pub(crate) fn duplicate(&self) -> Self {
        match self {
            Self::Connect { addr, source } => Self::Connect {
                addr: addr.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            Self::Timeout { after } => Self::Timeout { after: *after },
            Self::ConnectionClosed => Self::ConnectionClosed,
            Self::Server(e) => Self::Server(e.clone()),
            Self::Protocol(m) => Self::Protocol(m.clone()),
            Self::Frame(e) => Self::Frame(e.clone()),
            Self::Encode(e) => Self::Encode(e.clone()),
            Self::InvalidArgument(m) => Self::InvalidArgument(m.clone()),
            Self::Backlog { limit } => Self::Backlog { limit: *limit },
            Self::CursorExpired { requested, oldest } => Self::CursorExpired {
                requested: *requested,
                oldest: *oldest,
            },
        }
    }
}

/// Result of client calls.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_and_codes() {
        let unavailable = Error::Server(WireError::new(ErrorCode::Unavailable, "busy"));
        assert!(unavailable.is_retryable());
        assert_eq!(unavailable.code(), Some(ErrorCode::Unavailable));
        let conflict = Error::Server(WireError::new(ErrorCode::Conflict, "moved"));
        assert!(!conflict.is_retryable());
        assert!(Error::ConnectionClosed.is_retryable());
        assert!(Error::Timeout {
            after: Duration::from_millis(1)
        }
        .is_retryable());
        assert!(!Error::Protocol("x".into()).is_retryable());
        assert_eq!(Error::ConnectionClosed.code(), None);
        let expired = Error::CursorExpired {
            requested: 3,
            oldest: 10,
        };
        assert!(!expired.is_retryable());
        assert_eq!(expired.code(), None);
        assert!(matches!(
            expired.duplicate(),
            Error::CursorExpired {
                requested: 3,
                oldest: 10
            }
        ));
    }

    #[test]
    fn duplicate_keeps_kind_and_message() {
        let e = Error::Connect {
            addr: "h:1".into(),
            source: std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused"),
        };
        let d = e.duplicate();
        assert_eq!(d.to_string(), e.to_string());
        assert!(matches!(
            d,
            Error::Connect { ref source, .. } if source.kind() == std::io::ErrorKind::ConnectionRefused
        ));
        let s = Error::Server(WireError::new(ErrorCode::Unauthorized, "no"));
        assert_eq!(s.duplicate().code(), Some(ErrorCode::Unauthorized));
    }
}
