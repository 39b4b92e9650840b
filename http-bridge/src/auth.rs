//! Bearer access tokens shared by the APIs: the login API issues them, the
//! scheduled-sessions API accepts them besides its JWTs. A token is the id of a
//! sessiond session in [`ACCESS_NS`] (an unguessable UUID v4 from the OS
//! CSPRNG), owned by its user so that a logout or a password change can revoke
//! every token of the user at once (DeleteByOwner).

use std::time::Duration;

use sessiond_client::{Client, CreateOptions, Error as ClientError, SessionId, Value};

use crate::users::{self, User, UserError};

/// Namespace of access tokens.
pub const ACCESS_NS: &str = "bridge-access";
/// How long an access token lives.
pub const ACCESS_TTL: Duration = Duration::from_secs(15 * 60);

/// Who a request acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The user.
    pub user: User,
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

/// The user an access token speaks for, if it is live.
///
/// # Errors
/// A store error (the daemon is down: answer 503, not 401).
pub async fn principal_from_access_token(
    client: &Client,
    token: &str,
) -> Result<Option<Principal>, UserError> {
    let Ok(id) = token.trim().parse::<SessionId>() else {
        return Ok(None);
    };
    let Some(s) = client.get(ACCESS_NS, id).await? else {
        return Ok(None);
    };
    let Some(Value::Str(user_id)) = s.attr("user_id") else {
        return Ok(None);
    };
    Ok(users::get(client, user_id)
        .await?
        .map(|user| Principal { user }))
}

/// Revokes every access token of a user.
///
/// # Errors
/// A store error.
pub async fn revoke_user_tokens(client: &Client, user_id: &str) -> Result<u64, ClientError> {
    client.delete_by_owner(ACCESS_NS, user_id, None).await
}
