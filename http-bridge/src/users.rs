//! The bridge's user directory, kept in sessiond itself (so it is as durable as
//! the sessions): one record per user in namespace [`USERS_NS`], listed through
//! the owner index (every user record is owned by [`ALL_USERS`]), and one record
//! per email in [`EMAILS_NS`] whose id is derived from the lowercased email, so
//! claiming an email is the daemon's atomic create-if-absent.
//!
//! Passwords are hashed with argon2id (random salt, PHC string) and never
//! leave this module; verification is argon2's constant-time comparison, and an
//! unknown email costs the same hash as a wrong password.

use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use chrono::{SecondsFormat, Utc};
use serde::Serialize;

use crate::apis::common::text;
use sessiond_client::{
    Client, CreateOptions, Error as ClientError, ErrorCode, Session, SessionId, UpdateOptions,
    Value,
};

/// Namespace of user records.
pub const USERS_NS: &str = "bridge-users";
/// Namespace of the email index.
pub const EMAILS_NS: &str = "bridge-user-emails";
/// Owner of every user record (the listing index).
pub const ALL_USERS: &str = "all-users";

/// A user as the APIs show it (never the password hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    /// UUID.
    pub id: String,
    /// Login email.
    pub email: String,
    /// First name.
    pub first_name: Option<String>,
    /// Last name.
    pub last_name: Option<String>,
    /// May manage other users and see everything.
    pub is_admin: bool,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

/// What can go wrong in the directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UserError {
    /// The email belongs to another user.
    #[error("email already registered")]
    EmailTaken,
    /// No such user.
    #[error("user not found")]
    NotFound,
    /// A bad field.
    #[error("{0}")]
    Invalid(String),
    /// The daemon failed or is unreachable.
    #[error("session store: {0}")]
    Store(#[from] ClientError),
}

impl UserError {
    /// Whether the daemon is unreachable or busy (answer 503).
    #[must_use]
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Store(e) if e.is_retryable())
    }
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn to_user(s: &Session) -> User {
    User {
        id: s.id.to_string(),
        email: text(s, "email").unwrap_or_default(),
        first_name: text(s, "first_name"),
        last_name: text(s, "last_name"),
        is_admin: matches!(s.attr("is_admin"), Some(Value::Bool(true))),
        created_at: text(s, "created_at").unwrap_or_default(),
        updated_at: text(s, "updated_at").unwrap_or_default(),
    }
}

/// The id of an email's index record.
fn email_key(email: &str) -> SessionId {
    let normalized = email.trim().to_lowercase();
    SessionId(*uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, normalized.as_bytes()).as_bytes())
}

/// Checks an email's shape (something@something.something, bounded).
///
/// # Errors
/// [`UserError::Invalid`] naming the problem.
pub fn check_email(email: &str) -> Result<(), UserError> {
    let e = email.trim();
    let ok = e.len() <= 254
        && e.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        })
        && !e.chars().any(char::is_whitespace);
    if ok {
        Ok(())
    } else {
        Err(UserError::Invalid("email is not a valid address".into()))
    }
}

/// Hashes a password with argon2id and a random salt.
///
/// # Errors
/// [`UserError::Invalid`] for an empty or oversized password.
pub fn hash_password(password: &str) -> Result<String, UserError> {
    if password.is_empty() || password.len() > 1024 {
        return Err(UserError::Invalid(
            "password must be 1 to 1024 bytes".into(),
        ));
    }
    let salt = SaltString::encode_b64(&SessionId::new_v4().0)
        .map_err(|e| UserError::Invalid(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| UserError::Invalid(e.to_string()))
}

/// A hash no password matches, verified when the email is unknown so that
/// "no such user" and "wrong password" take the same time.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_password("not a real password, only timing").unwrap_or_default())
}

fn verify(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// The id of the decoy: a record shaped like a user's (same fields, a hash
/// of a random password) that no email points to and no listing shows. A
/// login for an unknown email reads it where a known email reads its user.
fn decoy_id() -> SessionId {
    SessionId(
        *uuid::Uuid::new_v5(
            &uuid::Uuid::NAMESPACE_OID,
            b"sessiond-http login decoy user",
        )
        .as_bytes(),
    )
}

/// Creates the decoy record if it is missing (at start): a record shaped
/// like a user's that unknown-email logins read (see `check_password`).
///
/// # Errors
/// A store error.
pub async fn ensure_decoy(client: &Client) -> Result<(), UserError> {
    if client.get(USERS_NS, decoy_id()).await?.is_some() {
        return Ok(());
    }
    let hash = tokio::task::spawn_blocking(|| hash_password(&SessionId::new_v4().to_string()))
        .await
        .map_err(|e| UserError::Invalid(e.to_string()))??;
    let stamp = now();
    // Not owned by ALL_USERS: no listing shows it.
    let opts = CreateOptions::new()
        .id(decoy_id())
        .attr("email", "decoy-user@sessiond.invalid")
        .attr("password_hash", hash)
        .attr("is_admin", false)
        .attr("created_at", stamp.as_str())
        .attr("updated_at", stamp.as_str());
    match client.create(USERS_NS, opts).await {
        Ok(_) => Ok(()),
        Err(e) if matches!(e.code(), Some(ErrorCode::AlreadyExists)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Fields of a new user. Its `Debug` never shows the password.
#[derive(Clone, Default)]
pub struct NewUser {
    /// Login email.
    pub email: String,
    /// Plain password (hashed here).
    pub password: String,
    /// First name.
    pub first_name: Option<String>,
    /// Last name.
    pub last_name: Option<String>,
    /// Administrator.
    pub is_admin: bool,
}

impl std::fmt::Debug for NewUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewUser")
            .field("email", &self.email)
            .field("password", &"<redacted>")
            .field("first_name", &self.first_name)
            .field("last_name", &self.last_name)
            .field("is_admin", &self.is_admin)
            .finish()
    }
}

/// Creates a user. The email is claimed first (atomically), so two
/// concurrent registrations of one email cannot both succeed.
///
/// # Errors
/// [`UserError::EmailTaken`], [`UserError::Invalid`], or a store error.
pub async fn create(client: &Client, new: NewUser) -> Result<User, UserError> {
    check_email(&new.email)?;
    let hash = tokio::task::spawn_blocking({
        let password = new.password.clone();
        move || hash_password(&password)
    })
    .await
    .map_err(|e| UserError::Invalid(e.to_string()))??;
    let user_id = SessionId::new_v4();
    claim_email(client, &new.email, user_id).await?;
    let stamp = now();
    let mut opts = CreateOptions::new()
        .id(user_id)
        .owner(ALL_USERS)
        .attr("email", new.email.trim())
        .attr("password_hash", hash)
        .attr("is_admin", new.is_admin)
        .attr("created_at", stamp.as_str())
        .attr("updated_at", stamp.as_str());
    if let Some(f) = &new.first_name {
        opts = opts.attr("first_name", f.as_str());
    }
    if let Some(l) = &new.last_name {
        opts = opts.attr("last_name", l.as_str());
    }
    match client.create(USERS_NS, opts).await {
        Ok(s) => Ok(to_user(&s)),
        Err(e) => {
            // Give the email back: the user was not created.
            let _ = release_email(client, &new.email, user_id).await;
            Err(e.into())
        }
    }
}

/// Points the email's index record at `user_id` if it is free.
async fn claim_email(client: &Client, email: &str, user_id: SessionId) -> Result<(), UserError> {
    let key = email_key(email);
    for _ in 0..8 {
        match client.get(EMAILS_NS, key).await? {
            None => {
                let opts = CreateOptions::new()
                    .id(key)
                    .attr("user_id", user_id.to_string());
                match client.create(EMAILS_NS, opts).await {
                    Ok(_) => return Ok(()),
                    Err(e) if e.code() == Some(ErrorCode::AlreadyExists) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            Some(rec) => {
                if text(&rec, "user_id").is_some() {
                    return Err(UserError::EmailTaken);
                }
                // A released email: take it if nobody else does first.
                let up = UpdateOptions::new()
                    .set("user_id", user_id.to_string())
                    .expected_version(rec.version);
                match client.update(EMAILS_NS, key, up).await {
                    Ok(_) => return Ok(()),
                    Err(e) if e.code() == Some(ErrorCode::Conflict) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Err(UserError::EmailTaken)
}

/// Frees an email held by `user_id` (the index record stays, emptied, so it
/// can be claimed again at once: deleting it would leave a tombstone).
async fn release_email(client: &Client, email: &str, user_id: SessionId) -> Result<(), UserError> {
    let key = email_key(email);
    if let Some(rec) = client.get(EMAILS_NS, key).await? {
        if text(&rec, "user_id").as_deref() == Some(&user_id.to_string()) {
            let up = UpdateOptions::new()
                .remove("user_id")
                .expected_version(rec.version);
            client.update(EMAILS_NS, key, up).await?;
        }
    }
    Ok(())
}

fn parse_id(id: &str) -> Option<SessionId> {
    id.parse().ok()
}

/// A user by id.
///
/// # Errors
/// A store error.
pub async fn get(client: &Client, id: &str) -> Result<Option<User>, UserError> {
    let Some(sid) = parse_id(id) else {
        return Ok(None);
    };
    Ok(client.get(USERS_NS, sid).await?.map(|s| to_user(&s)))
}

/// A user by email (any case).
///
/// # Errors
/// A store error.
pub async fn get_by_email(client: &Client, email: &str) -> Result<Option<User>, UserError> {
    let Some(rec) = client.get(EMAILS_NS, email_key(email)).await? else {
        return Ok(None);
    };
    match text(&rec, "user_id") {
        Some(id) => get(client, &id).await,
        None => Ok(None),
    }
}

/// The outcome of [`check_password`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Login {
    /// The password is right: the user.
    Ok(User),
    /// The email is known, the password wrong.
    WrongPassword,
    /// No user has this email.
    NoSuchUser,
}

/// Checks a password, telling an unknown email from a wrong password (for
/// APIs whose contract does; the time taken is the same either way).
///
/// # Errors
/// A store error.
pub async fn check_password(
    client: &Client,
    email: &str,
    password: &str,
) -> Result<Login, UserError> {
    let found = match client.get(EMAILS_NS, email_key(email)).await? {
        Some(rec) => match text(&rec, "user_id").and_then(|id| parse_id(&id)) {
            Some(id) => client.get(USERS_NS, id).await?,
            None => None,
        },
        None => {
            // The same two reads as for a known email, the second a hit on a
            // record of a user's shape (the decoy), so that neither the
            // store's answer nor decoding it tells anything.
            let _ = client.get(USERS_NS, decoy_id()).await?;
            None
        }
    };
    let hash = found.as_ref().and_then(|s| text(s, "password_hash"));
    let password = password.to_owned();
    // The dummy hash is computed (once) on the blocking pool too.
    let ok = tokio::task::spawn_blocking(move || match hash {
        Some(h) => verify(&password, &h),
        None => {
            let _ = verify(&password, dummy_hash());
            false
        }
    })
    .await
    .unwrap_or(false);
    Ok(match found {
        Some(s) if ok => Login::Ok(to_user(&s)),
        Some(_) => Login::WrongPassword,
        None => Login::NoSuchUser,
    })
}

/// Checks a password in constant time with respect to whether the user exists.
/// Returns the user on success.
///
/// # Errors
/// A store error.
pub async fn authenticate(
    client: &Client,
    email: &str,
    password: &str,
) -> Result<Option<User>, UserError> {
    Ok(match check_password(client, email, password).await? {
        Login::Ok(user) => Some(user),
        _ => None,
    })
}

/// Every user, oldest first.
///
/// # Errors
/// A store error.
pub async fn list(client: &Client) -> Result<Vec<User>, UserError> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = client
            .list_by_owner(USERS_NS, ALL_USERS, after, 1000)
            .await?;
        out.extend(page.sessions.iter().map(to_user));
        match page.next {
            Some(c) => after = Some(c),
            None => return Ok(out),
        }
    }
}

/// Changes a user's names (each only when given).
///
/// # Errors
/// [`UserError::NotFound`], [`UserError::Invalid`] or a store error.
pub async fn update(
    client: &Client,
    id: &str,
    first_name: Option<String>,
    last_name: Option<String>,
) -> Result<User, UserError> {
    let sid = parse_id(id).ok_or(UserError::NotFound)?;
    let mut up = UpdateOptions::new().set("updated_at", now());
    if let Some(f) = first_name {
        up = up.set("first_name", f);
    }
    if let Some(l) = last_name {
        up = up.set("last_name", l);
    }
    match client.update(USERS_NS, sid, up).await {
        Ok(_) => get(client, id).await?.ok_or(UserError::NotFound),
        Err(e) if matches!(e.code(), Some(ErrorCode::NotFound | ErrorCode::Gone)) => {
            Err(UserError::NotFound)
        }
        Err(e) => Err(e.into()),
    }
}

/// Deletes a user and frees their email. Returns whether they existed.
///
/// # Errors
/// A store error.
pub async fn delete(client: &Client, id: &str) -> Result<bool, UserError> {
    let Some(user) = get(client, id).await? else {
        return Ok(false);
    };
    let sid = parse_id(id).ok_or(UserError::NotFound)?;
    let existed = client.delete(USERS_NS, sid).await?;
    release_email(client, &user.email, sid).await?;
    Ok(existed)
}

/// Number of users.
///
/// # Errors
/// A store error.
pub async fn count(client: &Client) -> Result<usize, UserError> {
    Ok(list(client).await?.len())
}
