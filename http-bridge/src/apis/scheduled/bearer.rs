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

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once, OnceLock};

use axum::http::{header, HeaderMap};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use parking_lot::Mutex;
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

/// A public key read from a PEM file, and the one algorithm it verifies.
type PublicKey = Arc<(DecodingKey, Algorithm)>;

/// Public keys by file, read once per process (a bridge's settings do not
/// change while it runs; several bridges in one test process may differ).
fn public_key(path: &Path) -> Option<PublicKey> {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, PublicKey>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(k) = cache.lock().get(path) {
        return Some(k.clone());
    }
    let pem = match std::fs::read(path) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the JWT public key");
            return None;
        }
    };
    let key = if let Ok(k) = DecodingKey::from_rsa_pem(&pem) {
        (k, Algorithm::RS256)
    } else if let Ok(k) = DecodingKey::from_ec_pem(&pem) {
        (k, Algorithm::ES256)
    } else {
        tracing::warn!(path = %path.display(), "the JWT public key is neither an RSA nor an EC PEM key");
        return None;
    };
    let key = Arc::new(key);
    cache.lock().insert(path.to_owned(), key.clone());
    Some(key)
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
    install_crypto();
    let header = jsonwebtoken::decode_header(token).ok()?;
    let public = state.config.jwt_public_key.as_deref().and_then(public_key);
    let secret_key;
    let key: &DecodingKey = match (header.alg, &state.config.jwt_secret, &public) {
        (Algorithm::HS256, Some(secret), _) if !secret.is_empty() => {
            secret_key = DecodingKey::from_secret(secret.as_bytes());
            &secret_key
        }
        (alg, _, Some(pk)) if alg == pk.1 => &pk.0,
        _ => return None,
    };
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

/// The bearer token of a request, if any.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Identifies the caller.
///
/// # Errors
/// [`AuthError`] saying why not.
pub async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Caller, AuthError> {
    let token = bearer(headers).ok_or(AuthError::Missing)?;
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
