//! Bearer access tokens shared by the APIs: the login API issues them, the
//! scheduled-sessions API accepts them besides its JWTs. A token is the id of a
//! sessiond session in [`ACCESS_NS`] (an unguessable UUID v4 from the OS
//! CSPRNG), owned by its user so that a logout or a password change can revoke
//! every token of the user at once (DeleteByOwner).
//!
//! Also here, because both login APIs need it: the per-username throttle of
//! login attempts ([`throttle_login`]), a windowed counter in
//! [`THROTTLE_NS`].

use std::time::Duration;

use sessiond_client::{
    Client, CreateOptions, Error as ClientError, ErrorCode, SessionId, UpdateOptions, Value,
};

use crate::users::{self, User, UserError};

/// Namespace of access tokens.
pub const ACCESS_NS: &str = "bridge-access";
/// How long an access token lives.
pub const ACCESS_TTL: Duration = Duration::from_secs(15 * 60);
/// Namespace of the login sessions behind access tokens (one per login of
/// the login API, owned by the user id): revoking a user ends them too.
pub const LOGIN_SESSIONS_NS: &str = "login-sessions";
/// Namespace of the login-attempt counters.
pub const THROTTLE_NS: &str = "auth-throttle";
/// Login attempts allowed per username and window.
pub const LOGIN_ATTEMPTS: i64 = 10;
/// The throttle window.
pub const LOGIN_WINDOW: Duration = Duration::from_secs(15 * 60);

/// Who a request acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The user.
    pub user: User,
}

/// A live access token: who it speaks for and the login session it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessGrant {
    /// The user.
    pub principal: Principal,
    /// The login session that issued it (what a logout revokes).
    pub login_session: String,
}

/// Issues an access token for `user_id`, valid for [`ACCESS_TTL`], tied to
/// the login session `login_session` (revoked with it).
///
/// # Errors
/// A store error.
pub async fn issue_access_token(
    client: &Client,
    user_id: &str,
    login_session: &str,
) -> Result<String, ClientError> {
    let s = client
        .create(
            ACCESS_NS,
            CreateOptions::new()
                .owner(user_id)
                .max_lifetime(ACCESS_TTL)
                .attr("user_id", user_id)
                .attr("login_session", login_session),
        )
        .await?;
    Ok(s.id.to_string())
}

/// The user and login session an access token speaks for, if it is live and
/// its user still exists.
///
/// # Errors
/// A store error (the daemon is down: answer 503, not 401).
pub async fn grant_from_access_token(
    client: &Client,
    token: &str,
) -> Result<Option<AccessGrant>, UserError> {
    let Ok(id) = token.trim().parse::<SessionId>() else {
        return Ok(None);
    };
    let Some(s) = client.get(ACCESS_NS, id).await? else {
        return Ok(None);
    };
    let Some(Value::Str(user_id)) = s.attr("user_id") else {
        return Ok(None);
    };
    let login_session = match s.attr("login_session") {
        Some(Value::Str(l)) => l.clone(),
        _ => String::new(),
    };
    Ok(users::get(client, user_id).await?.map(|user| AccessGrant {
        principal: Principal { user },
        login_session,
    }))
}

/// The user an access token speaks for, if it is live.
///
/// # Errors
/// A store error (the daemon is down: answer 503, not 401).
pub async fn principal_from_access_token(
    client: &Client,
    token: &str,
) -> Result<Option<Principal>, UserError> {
    Ok(grant_from_access_token(client, token)
        .await?
        .map(|g| g.principal))
}

/// Revokes every access token of a user, and every login session of the
/// login API (so their refresh tokens stop working too).
///
/// # Errors
/// A store error.
pub async fn revoke_user_tokens(client: &Client, user_id: &str) -> Result<u64, ClientError> {
    // Login sessions first: a refresh racing with this finds its login gone
    // and withdraws the token it was issuing.
    let logins = client
        .delete_by_owner(LOGIN_SESSIONS_NS, user_id, None)
        .await?;
    Ok(logins + client.delete_by_owner(ACCESS_NS, user_id, None).await?)
}

/// Revokes the access tokens of one login session of `user_id`. Returns how
/// many there were.
///
/// # Errors
/// A store error.
pub async fn revoke_login_tokens(
    client: &Client,
    user_id: &str,
    login_session: &str,
) -> Result<u64, ClientError> {
    // Collect first, delete after: deleting while paging would move the cursor's ground.
    let mut doomed = Vec::new();
    let mut after = None;
    loop {
        let page = client
            .list_by_owner(ACCESS_NS, user_id, after, 1000)
            .await?;
        doomed.extend(
            page.sessions
                .iter()
                .filter(|s| {
                    matches!(s.attr("login_session"), Some(Value::Str(l)) if l == login_session)
                })
                .map(|s| s.id),
        );
        match page.next {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    let mut n = 0;
    for id in doomed {
        if client.delete(ACCESS_NS, id).await? {
            n += 1;
        }
    }
    Ok(n)
}

/// The answer of [`throttle_login`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttle {
    /// The attempt may go on.
    Allowed,
    /// Too many attempts: retry after this long.
    Limited(Duration),
}

/// The counter record of a username: its id is derived from the
/// normalized username, so every attempt on one name meets one counter.
fn throttle_key(username: &str) -> SessionId {
    let normalized = format!("login:{}", username.trim().to_lowercase());
    SessionId(*uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, normalized.as_bytes()).as_bytes())
}

fn now_ms() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0)
}

/// Counts one login attempt on `username` ([`LOGIN_ATTEMPTS`] per
/// [`LOGIN_WINDOW`]). The attempt is counted before the password is checked,
/// so concurrent guesses cannot overshoot the limit; a successful login
/// clears the count ([`clear_login_throttle`]). Known and unknown usernames
/// are counted alike (the answer tells nothing about existence).
///
/// # Errors
/// A store error.
pub async fn throttle_login(client: &Client, username: &str) -> Result<Throttle, ClientError> {
    let key = throttle_key(username);
    for _ in 0..4 {
        match client
            .incr_window(
                THROTTLE_NS,
                key,
                "attempts",
                1,
                LOGIN_WINDOW,
                LOGIN_ATTEMPTS,
            )
            .await
        {
            Ok(r) if r.allowed => return Ok(Throttle::Allowed),
            Ok(r) => {
                let wait = r.reset_at_ms.map_or(LOGIN_WINDOW.as_millis() as u64, |at| {
                    at.saturating_sub(now_ms())
                });
                return Ok(Throttle::Limited(Duration::from_millis(wait.max(1000))));
            }
            Err(e) if e.code() == Some(ErrorCode::NotFound) => {
                // The counter record lives one window past its creation; the
                // counter in it restarts with each window anyway.
                let opts = CreateOptions::new()
                    .id(key)
                    .idle_ttl(LOGIN_WINDOW + LOGIN_WINDOW);
                match client.create(THROTTLE_NS, opts).await {
                    Ok(_) => {}
                    Err(e)
                        if matches!(e.code(), Some(ErrorCode::AlreadyExists | ErrorCode::Gone)) => {
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
    }
    // The record kept vanishing under us: let the attempt through rather
    // than lock the user out on a store hiccup.
    Ok(Throttle::Allowed)
}

/// Clears the attempt count of `username` after a successful login.
///
/// # Errors
/// A store error.
pub async fn clear_login_throttle(client: &Client, username: &str) -> Result<(), ClientError> {
    match client
        .update(
            THROTTLE_NS,
            throttle_key(username),
            UpdateOptions::new().remove("attempts"),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some(ErrorCode::NotFound) => Ok(()),
        Err(e) => Err(e),
    }
}
