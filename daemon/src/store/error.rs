//! Why a store operation failed (nothing was changed), and the wire code of
//! each reason.

use sessiond_protocol::ErrorCode;

/// Why a store operation failed. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No live session with that id.
    #[error("no live session with that id")]
    NotFound,
    /// The expected version does not match.
    #[error("version conflict: expected {expected}, the record is at {}", actual.map_or_else(|| "none (absent)".to_string(), |v| v.to_string()))]
    Conflict {
        /// The version the request expected.
        expected: u64,
        /// The record's version (`None`: there is no record).
        actual: Option<u64>,
    },
    /// The owner is at its session limit (reject policy).
    #[error("the owner has {current} live sessions, the limit is {max}")]
    LimitExceeded {
        /// Live sessions of the owner.
        current: usize,
        /// The limit.
        max: u32,
    },
    /// A caller-chosen id is taken by a live session.
    #[error("a live session already has that id")]
    AlreadyExists,
    /// A caller-chosen id was deleted or rotated away within the tombstone window.
    #[error("that id was deleted or rotated away recently and cannot be reused yet")]
    Gone,
    /// A bad argument.
    #[error("{0}")]
    Invalid(String),
    /// The attributes are too large.
    #[error("attributes are {len} bytes encoded, the limit is {max}")]
    TooLarge {
        /// Encoded size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The namespace table is full.
    #[error("too many namespaces (the limit is {max})")]
    TooManyNamespaces {
        /// The limit.
        max: usize,
    },
    /// A stored attribute blob failed to decode or encode: a bug, reported rather than hidden.
    #[error("internal codec error: {0}")]
    Codec(String),
    /// Writes are refused because the log cannot write (reads still work).
    #[error("{0}")]
    Unavailable(String),
    /// The memory limit is reached (and nothing could be evicted).
    #[error(
        "the memory limit of {max} bytes is reached ({used} used); reads and deletes still work"
    )]
    OutOfMemory {
        /// Estimated bytes in use.
        used: u64,
        /// The limit.
        max: u64,
    },
}

impl StoreError {
    /// The wire code for this error.
    #[must_use]
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::NotFound => ErrorCode::NotFound,
            Self::Conflict { .. } => ErrorCode::Conflict,
            Self::LimitExceeded { .. } | Self::TooManyNamespaces { .. } => ErrorCode::LimitExceeded,
            Self::AlreadyExists => ErrorCode::AlreadyExists,
            Self::Gone => ErrorCode::Gone,
            Self::Invalid(_) => ErrorCode::InvalidRequest,
            Self::TooLarge { .. } => ErrorCode::TooLarge,
            Self::Codec(_) => ErrorCode::Internal,
            Self::Unavailable(_) => ErrorCode::Unavailable,
            Self::OutOfMemory { .. } => ErrorCode::OutOfMemory,
        }
    }
}

/// A store operation's result.
pub(crate) type Result<T> = std::result::Result<T, StoreError>;
