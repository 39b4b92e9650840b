//! The client's error type. Every failure says what happened and whether
//! retrying the same request may help ([`Error::is_retryable`]).

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
    /// The daemon sent something this client does not understand.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The daemon sent a frame header this client refuses.
    #[error("bad frame from the daemon: {0}")]
    Frame(#[from] FrameError),
    /// The request could not be encoded (too large for a frame, for example); it
    /// was not sent.
    #[error("cannot send the request: {0}")]
    Encode(#[from] EncodeError),
    /// An argument was refused before sending.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
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
            Self::Connect { .. } | Self::Timeout { .. } | Self::ConnectionClosed => true,
            Self::Server(e) => e.code.is_retryable(),
            _ => false,
        }
    }
}

/// Result of client calls.
pub type Result<T> = std::result::Result<T, Error>;
