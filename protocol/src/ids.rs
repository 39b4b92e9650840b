//! Session ids and auth tokens. Both are bearer secrets: their `Debug` output is
//! redacted so that a stray `{:?}` in a log line cannot leak one. `Display` of a
//! [`SessionId`] gives the full hyphenated UUID, for the places (CLI output, HTTP
//! bodies) that must show it on purpose.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A 16-byte session id: a UUID v4 drawn from the OS CSPRNG by the daemon, or a
/// caller-chosen 16 bytes. On the wire it is 16 raw bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SessionId(pub [u8; 16]);

impl SessionId {
    /// A fresh random id (UUID v4, from the OS CSPRNG).
    #[must_use]
    pub fn new_v4() -> Self {
        Self(*uuid::Uuid::new_v4().as_bytes())
    }

    /// The raw bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&uuid::Uuid::from_bytes(self.0).hyphenated(), f)
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionId(<redacted>)")
    }
}

/// The error of parsing a [`SessionId`] from text. It never echoes the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed session id: expected a UUID such as 67e55044-10b1-426f-9247-bb680e5fe0c8 ({len} characters given)")]
pub struct ParseIdError {
    /// Length of the rejected input, in characters.
    pub len: usize,
}

impl FromStr for SessionId {
    type Err = ParseIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(s.trim())
            .map(|u| Self(*u.as_bytes()))
            .map_err(|_| ParseIdError {
                len: s.chars().count(),
            })
    }
}

/// An auth token carried by `Hello`. Its `Debug` is redacted.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthToken(pub String);

impl fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthToken(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_parse_round_trip() {
        let id = SessionId::new_v4();
        let text = id.to_string();
        assert_eq!(text.len(), 36);
        assert_eq!(text.parse::<SessionId>().unwrap(), id);
    }

    #[test]
    fn debug_is_redacted() {
        let id = SessionId::new_v4();
        let dbg = format!("{id:?}");
        assert!(!dbg.contains(&id.to_string()[..8]));
        let tok = AuthToken("hunter2".into());
        assert!(!format!("{tok:?}").contains("hunter2"));
    }

    #[test]
    fn parse_error_does_not_echo() {
        let err = "secret-but-not-a-uuid".parse::<SessionId>().unwrap_err();
        assert!(!err.to_string().contains("secret"));
    }
}
