//! Who is calling: `Authorization: Bearer <token>`, where the token is a JWT
//! (tried when it has two dots) or an access token issued by the login API.
//!
//! JWTs are verified with `jsonwebtoken` on its aws-lc-rs backend. Only the
//! algorithm of the configured key is accepted: `HS256` with
//! `--jwt-secret`; `RS256` with an RSA `--jwt-public-key`, `ES256` with a P-256
//! one (both may be configured; each algorithm is then checked with its own
//! key). So `alg: none` (not even parsed) and algorithm confusion (an `HS256`
//! token "signed" with the public key's bytes) fail. `exp` and `sub` are
//! required; `exp` and `nbf` are checked with [`LEEWAY_SECS`] of leeway; `aud`
//! and `iss` are not checked (there is nothing to compare them with).
//!
//! `sub` is the user id (1 to 256 bytes, no control characters). The caller is
//! an administrator when the token says `"admin": true`, `"role": "admin"` or
//! `"roles": [..., "admin", ...]` (case-insensitive), or, for an access token,
//! when the user is an administrator in the user directory.

use std::path::Path;
use std::sync::Once;

use axum::http::HeaderMap;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;

use crate::state::AppState;

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 30;
/// Longest bearer token considered.
const MAX_TOKEN_LEN: usize = 8192;

/// The caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Their user id (JWT `sub`, or the user directory's id).
    pub user_id: String,
    /// May see and change every timeline.
    pub is_admin: bool,
}

impl Caller {
    /// Whether the caller may see and change what `owner` owns.
    #[must_use]
    pub fn may_access(&self, owner: &str) -> bool {
        self.is_admin || self.user_id == owner
    }
}

/// Why a caller was not identified.
#[derive(Debug, PartialEq, Eq)]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    Missing,
    /// A token that is malformed, forged, expired or revoked.
    Invalid,
    /// The daemon could not be asked about an access token.
    Unavailable,
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    admin: Option<Value>,
    #[serde(default)]
    role: Option<Value>,
    #[serde(default)]
    roles: Option<Value>,
}

impl Claims {
    fn is_admin(&self) -> bool {
        let says_admin = |v: &Value| v.as_str().is_some_and(|s| s.eq_ignore_ascii_case("admin"));
        matches!(self.admin, Some(Value::Bool(true)))
            || self.role.as_ref().is_some_and(says_admin)
            || matches!(&self.roles, Some(Value::Array(r)) if r.iter().any(says_admin))
    }
}

/// The keys JWTs are verified with: read and checked once, at start-up
/// ([`crate::state::AppState::new`]), so a bad key stops the bridge with a
/// message instead of failing every request.
pub struct JwtKeys {
    /// `HS256` with `--jwt-secret`.
    secret: Option<DecodingKey>,
    /// `RS256` or `ES256` with `--jwt-public-key`: the key and its algorithm.
    public: Option<(DecodingKey, Algorithm)>,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("JwtKeys")
            .field("secret", &self.secret.is_some())
            .field("public", &self.public.as_ref().map(|(_, alg)| alg))
            .finish()
    }
}

impl JwtKeys {
    /// Reads and checks the configured keys.
    ///
    /// # Errors
    /// A message naming the setting: an empty secret, a public key file that
    /// cannot be read, or one that is neither an RSA nor an EC (P-256) PEM
    /// public key.
    pub fn load(secret: Option<&str>, public_key: Option<&Path>) -> Result<Self, String> {
        install_crypto();
        let secret = match secret {
            Some("") => return Err("--jwt-secret is empty".into()),
            Some(s) => Some(DecodingKey::from_secret(s.as_bytes())),
            None => None,
        };
        let public = match public_key {
            None => None,
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    format!("--jwt-public-key {}: cannot read it: {e}", path.display())
                })?;
                let key = if let Ok(k) = DecodingKey::from_rsa_pem(&pem) {
                    (k, Algorithm::RS256)
                } else if let Ok(k) = DecodingKey::from_ec_pem(&pem) {
                    (k, Algorithm::ES256)
                } else {
                    return Err(format!(
                        "--jwt-public-key {}: not an RSA or EC (P-256) public key in PEM",
                        path.display()
                    ));
                };
                Some(key)
            }
        };
        Ok(Self { secret, public })
    }

    /// The key for a token signed with `alg`, if one is configured.
    fn for_alg(&self, alg: Algorithm) -> Option<&DecodingKey> {
        match (alg, &self.secret, &self.public) {
            (Algorithm::HS256, Some(secret), _) => Some(secret),
            (alg, _, Some((key, pk_alg))) if alg == *pk_alg => Some(key),
            _ => None,
        }
    }
}

/// Selects aws-lc-rs explicitly, so that another crate turning on
/// jsonwebtoken's other backend cannot leave it without a provider.
fn install_crypto() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
    });
}

/// Verifies a JWT against the configured keys.
fn verify_jwt(state: &AppState, token: &str) -> Option<Caller> {
    let header = jsonwebtoken::decode_header(token).ok()?;
    let key = state.jwt.for_alg(header.alg)?;
    let mut v = Validation::new(header.alg);
    v.leeway = LEEWAY_SECS;
    v.validate_exp = true;
    v.validate_nbf = true;
    v.validate_aud = false;
    v.set_required_spec_claims(&["exp", "sub"]);
    let data = jsonwebtoken::decode::<Claims>(token, key, &v).ok()?;
    let sub = data.claims.sub.as_str();
    sessiond_client::protocol::limits::check_owner(sub).ok()?;
    Some(Caller {
        user_id: sub.to_owned(),
        is_admin: data.claims.is_admin(),
    })
}

/// Identifies the caller.
///
/// # Errors
/// [`AuthError`] saying why not.
pub async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Caller, AuthError> {
    let token = crate::apis::common::bearer(headers).ok_or(AuthError::Missing)?;
    if token.len() > MAX_TOKEN_LEN {
        return Err(AuthError::Invalid);
    }
    if token.matches('.').count() == 2 {
        return verify_jwt(state, token).ok_or(AuthError::Invalid);
    }
    match crate::auth::principal_from_access_token(&state.client, token).await {
        Ok(Some(p)) => Ok(Caller {
            user_id: p.user.id,
            is_admin: p.user.is_admin,
        }),
        Ok(None) => Err(AuthError::Invalid),
        Err(e) => {
            if !e.is_unavailable() {
                tracing::warn!(error = %e, "cannot check an access token");
            }
            Err(AuthError::Unavailable)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn a_bad_key_is_refused_at_start_up_with_its_setting_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = JwtKeys::load(None, Some(&missing)).unwrap_err();
        assert!(
            e.contains("--jwt-public-key") && e.contains("missing.pem"),
            "{e}"
        );
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n",
        )
        .unwrap();
        let e = JwtKeys::load(None, Some(&garbage)).unwrap_err();
        assert!(e.contains("not an RSA or EC"), "{e}");
        let e = JwtKeys::load(Some(""), None).unwrap_err();
        assert!(e.contains("--jwt-secret is empty"), "{e}");
    }

    #[test]
    fn each_algorithm_gets_only_its_own_key() {
        let keys = JwtKeys::load(Some("a-secret-long-enough-for-hs256-use"), None).unwrap();
        assert!(keys.for_alg(Algorithm::HS256).is_some());
        assert!(keys.for_alg(Algorithm::RS256).is_none());
        assert!(keys.for_alg(Algorithm::ES256).is_none());
        let none = JwtKeys::load(None, None).unwrap();
        assert!(none.for_alg(Algorithm::HS256).is_none());
        // The secret never shows in a debug print.
        assert!(!format!("{keys:?}").contains("a-secret"));
    }
}
