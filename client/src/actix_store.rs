//! An [`actix_session::storage::SessionStore`] backed by sessiond (feature
//! `actix-session`), so that an actix-web app keeps its cookie sessions in
//! sessiond with one middleware:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use sessiond_client::{Client, SessiondActixStore};
//!
//! let client = Client::connect("127.0.0.1:7379").await?;
//! let store = SessiondActixStore::new(client, "web");
//! // With actix-web and actix-session 0.11:
//! // let key = actix_web::cookie::Key::generate(); // share it between workers
//! // App::new().wrap(actix_session::SessionMiddleware::new(store.clone(), key.clone()))
//! # let _ = store;
//! # Ok(()) }
//! ```
//!
//! # Mapping
//! An actix-session session is one sessiond session in the store's namespace:
//! - The session key (the cookie's value, signed or encrypted by the
//!   middleware) is the sessiond id in its text form, a hyphenated UUID
//!   (`67e55044-10b1-426f-9247-bb680e5fe0c8`): 128 random bits drawn from the
//!   OS CSPRNG. A key that is not exactly such a lowercase UUID is no session
//!   of this store ([`session_id`] returns `None`): `load` finds nothing, so the
//!   middleware starts a fresh session; nothing panics.
//! - The state (a map of strings to JSON texts, as actix-session keeps it) is
//!   one attribute, [`DATA_ATTR`], holding the whole map as JSON text, so that
//!   a save replaces the map and a key removed in the app is removed here too.
//! - The ttl (the middleware's `state_ttl`) becomes the session's idle ttl, set
//!   at every `save`, `update` and `update_ttl` (loads do not slide it), so the
//!   daemon expires the session that long after the last write. A ttl under a
//!   millisecond ends the session at once.
//! - If the state holds a JSON string under [`OWNER_KEY`] when the session is
//!   created, that user becomes the session's owner, so the daemon's owner index
//!   lists and revokes every session of a user ([`Client::list_by_owner`],
//!   [`Client::delete_by_owner`]). A sessiond owner is fixed at creation: insert
//!   the key right after `Session::renew()` at login (the middleware then
//!   deletes the old session and saves a new one, which is also the
//!   session-fixation defence).
//!
//! # Semantics
//! - `save` creates a new session under a fresh random id with the daemon's
//!   create-if-absent: an id that is taken, or was deleted recently, is
//!   replaced by another fresh id and tried again, so a save never takes over
//!   another session.
//! - `update` replaces the state and the ttl of a live session and returns the
//!   same key. It never brings back a session deleted or rotated away within
//!   the daemon's tombstone window (`--tombstone-ttl`, 2 minutes by default):
//!   a request that finishes after a logout fails ([`UpdateError::Other`],
//!   a 500 from the middleware) instead of resurrecting the session, under its
//!   key or a new one. A session that merely expired (or a key that names no
//!   session) is saved again under a new key, as actix-session's Redis store
//!   does when its `SET .. XX` finds nothing.
//! - `update_ttl` sets the idle ttl of a live session; for an absent one it
//!   does nothing (like Redis `EXPIRE` on a missing key).
//! - `load` returns `None` for an absent, expired or malformed key.
//! - `delete` deletes (and leaves a tombstone); deleting what is not there is
//!   not an error.
//!
//! Errors are actix-session's [`LoadError`], [`SaveError`] and [`UpdateError`]
//! (`Deserialization`/`Serialization` for JSON, `Other` for the daemon or the
//! connection) or a plain [`anyhow::Error`]; their messages never contain a
//! session key or any state.

use std::collections::HashMap;
use std::time::Duration;

use actix_session::storage::{LoadError, SaveError, SessionKey, SessionStore, UpdateError};

use crate::{Client, CreateOptions, Error, ErrorCode, Session, SessionId, UpdateOptions, Value};

/// The attribute holding a session's state map as JSON text.
pub const DATA_ATTR: &str = "actix_session.data";

/// A state key whose value, a JSON string (what `Session::insert(OWNER_KEY,
/// "alice")` stores), becomes the sessiond owner of the session when it is
/// created.
pub const OWNER_KEY: &str = "sessiond.owner";

/// How many ids `save` tries before giving up. A random 128-bit id collides
/// essentially never, so running out means something else is wrong.
const CREATE_ATTEMPTS: usize = 8;

/// actix-session's state: keys to JSON texts.
type SessionState = HashMap<String, String>;

/// Sessions of actix-session kept in a sessiond namespace (see the
/// [module docs](self) for how a session maps onto a sessiond session).
#[derive(Debug, Clone)]
pub struct SessiondActixStore {
    client: Client,
    namespace: String,
}

impl SessiondActixStore {
    /// A store over `client`, keeping sessions in `namespace`.
    ///
    /// ```no_run
    /// # async fn demo() -> sessiond_client::Result<()> {
    /// use sessiond_client::{Client, SessiondActixStore};
    /// let store = SessiondActixStore::new(Client::connect("127.0.0.1:7379").await?, "web");
    /// assert_eq!(store.namespace(), "web");
    /// # Ok(()) }
    /// ```
    pub fn new(client: Client, namespace: impl Into<String>) -> Self {
        Self {
            client,
            namespace: namespace.into(),
        }
    }

    /// The client the store uses.
    #[must_use]
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The namespace of the store's sessions.
    #[must_use]
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Creates a session holding `data` under a fresh id.
    async fn create(
        &self,
        data: &str,
        owner: Option<&str>,
        ttl: Duration,
    ) -> anyhow::Result<SessionId> {
        for _ in 0..CREATE_ATTEMPTS {
            let mut opts = CreateOptions::new()
                .id(SessionId::new_v4())
                .idle_ttl(ttl)
                .attr(DATA_ATTR, data);
            if let Some(owner) = owner {
                opts = opts.owner(owner);
            }
            match self.client.create(&self.namespace, opts).await {
                Ok(s) => return Ok(s.id),
                Err(e) if matches!(e.code(), Some(ErrorCode::AlreadyExists | ErrorCode::Gone)) => {
                    // The id is someone else's (live or recently deleted): taking
                    // it over would hand over their session. Draw another.
                    tracing::warn!(
                        namespace = %self.namespace,
                        "session id collision on create; drawing a new id"
                    );
                }
                Err(e) => return Err(other(&e)),
            }
        }
        Err(anyhow::anyhow!(
            "sessiond: no free session id after {CREATE_ATTEMPTS} attempts"
        ))
    }
}

/// The sessiond id of an actix-session key, or `None` if the key is not one
/// this store hands out (a lowercase hyphenated UUID). Use it to reach a cookie
/// session with the raw [`Client`].
#[must_use]
pub fn session_id(key: &SessionKey) -> Option<SessionId> {
    parse_key(key.as_ref())
}

fn parse_key(key: &str) -> Option<SessionId> {
    // Only the one form we write, so that one session has one key.
    if key.len() != 36 {
        return None;
    }
    let id: SessionId = key.parse().ok()?;
    (id.to_string() == key).then_some(id)
}

/// The actix-session key of a sessiond id.
#[must_use]
pub fn session_key(id: SessionId) -> SessionKey {
    match SessionKey::try_from(id.to_string()) {
        Ok(key) => key,
        // 36 characters are far below the 4064-byte limit on keys.
        Err(_) => unreachable!("a session id is a valid session key"),
    }
}

/// A client error as an `anyhow` error. Client and daemon messages never
/// contain session ids.
fn other(e: &Error) -> anyhow::Error {
    anyhow::anyhow!("sessiond: {e}")
}

/// The ttl in whole milliseconds, or `None` if it is under one (or negative).
fn ttl_of(ttl: &time::Duration) -> Option<Duration> {
    let ms = ttl.whole_milliseconds();
    (ms > 0).then(|| Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX)))
}

fn encode(state: &SessionState) -> anyhow::Result<String> {
    // The error of serializing a map of strings never holds its content.
    serde_json::to_string(state).map_err(|e| anyhow::anyhow!("session state to JSON: {e}"))
}

fn owner_of(state: &SessionState) -> Option<String> {
    state
        .get(OWNER_KEY)
        .and_then(|json| serde_json::from_str::<String>(json).ok())
}

/// The state of a loaded session. A session without [`DATA_ATTR`] (made by
/// another client in the namespace) has an empty state; one whose attribute is
/// not a JSON map of strings is a `Deserialization` error.
fn decode(s: &Session) -> Result<SessionState, LoadError> {
    let state: SessionState = match s.attr(DATA_ATTR) {
        Some(Value::Str(json)) => serde_json::from_str(json).map_err(|e| {
            // Only the kind and the position of the error: serde_json's own
            // message may quote the text it failed on.
            LoadError::Deserialization(anyhow::anyhow!(
                "{DATA_ATTR} is not a JSON map of strings ({:?} error at line {} column {})",
                e.classify(),
                e.line(),
                e.column()
            ))
        })?,
        Some(_) => {
            return Err(LoadError::Deserialization(anyhow::anyhow!(
                "{DATA_ATTR} is not JSON text"
            )))
        }
        None => SessionState::new(),
    };
    if let Some(owner) = owner_of(&state) {
        if s.owner.as_deref() != Some(owner.as_str()) {
            // The owner index would miss this session (logout-everywhere would
            // not reach it): the key was set after the session was created.
            tracing::warn!(
                namespace = %s.namespace,
                "session state names an owner the sessiond session does not have; \
                 insert it after Session::renew() so that the session is created with it"
            );
        }
    }
    Ok(state)
}

impl SessionStore for SessiondActixStore {
    async fn load(&self, session_key: &SessionKey) -> Result<Option<SessionState>, LoadError> {
        let Some(id) = session_id(session_key) else {
            return Ok(None);
        };
        let Some(s) = self
            .client
            .get(&self.namespace, id)
            .await
            .map_err(|e| LoadError::Other(other(&e)))?
        else {
            return Ok(None);
        };
        decode(&s).map(Some)
    }

    async fn save(
        &self,
        session_state: SessionState,
        ttl: &time::Duration,
    ) -> Result<SessionKey, SaveError> {
        let data = encode(&session_state).map_err(SaveError::Serialization)?;
        let Some(ttl) = ttl_of(ttl) else {
            // Expired as it is made: there is nothing to keep, and a load of
            // the key finds nothing.
            return Ok(session_key(SessionId::new_v4()));
        };
        let owner = owner_of(&session_state);
        self.create(&data, owner.as_deref(), ttl)
            .await
            .map(session_key)
            .map_err(SaveError::Other)
    }

    async fn update(
        &self,
        session_key: SessionKey,
        session_state: SessionState,
        ttl: &time::Duration,
    ) -> Result<SessionKey, UpdateError> {
        let data = encode(&session_state).map_err(UpdateError::Serialization)?;
        let from_save = |e: SaveError| match e {
            SaveError::Serialization(e) => UpdateError::Serialization(e),
            SaveError::Other(e) => UpdateError::Other(e),
        };
        let Some(id) = session_id(&session_key) else {
            // Not a key of ours: nothing to update, so a new session.
            return self.save(session_state, ttl).await.map_err(from_save);
        };
        let Some(ttl) = ttl_of(ttl) else {
            // Saved with no time left: the session ends now.
            self.client
                .delete(&self.namespace, id)
                .await
                .map_err(|e| UpdateError::Other(other(&e)))?;
            return Ok(session_key);
        };
        // An upsert, so that the daemon tells a session deleted recently (a
        // tombstone: `Gone`) from one that expired (created anew).
        let update = UpdateOptions::new()
            .set(DATA_ATTR, data)
            .ttl(Some(ttl), None)
            .upsert(owner_of(&session_state));
        match self.client.update(&self.namespace, id, update).await {
            Ok(reply) if !reply.created => Ok(session_key),
            Ok(_) => {
                // The session had expired and now lives again under its old
                // key: move it to a fresh one (the old key is tombstoned), as
                // actix-session's Redis store saves under a new key.
                let moved = self
                    .client
                    .rotate(&self.namespace, id, None)
                    .await
                    .map_err(|e| UpdateError::Other(other(&e)))?;
                Ok(self::session_key(moved.id))
            }
            Err(e) if e.code() == Some(ErrorCode::Gone) => {
                Err(UpdateError::Other(anyhow::anyhow!(
                    "the session was deleted (logged out) while this request ran; not saved"
                )))
            }
            Err(e) => Err(UpdateError::Other(other(&e))),
        }
    }

    async fn update_ttl(
        &self,
        session_key: &SessionKey,
        ttl: &time::Duration,
    ) -> anyhow::Result<()> {
        let Some(id) = session_id(session_key) else {
            return Ok(());
        };
        let Some(ttl) = ttl_of(ttl) else {
            return self.delete(session_key).await;
        };
        match self
            .client
            .update(
                &self.namespace,
                id,
                UpdateOptions::new().ttl(Some(ttl), None),
            )
            .await
        {
            Ok(_) => Ok(()),
            // Absent or expired: nothing to extend.
            Err(e) if e.code() == Some(ErrorCode::NotFound) => Ok(()),
            Err(e) => Err(other(&e)),
        }
    }

    async fn delete(&self, session_key: &SessionKey) -> anyhow::Result<()> {
        let Some(id) = session_id(session_key) else {
            return Ok(());
        };
        self.client
            .delete(&self.namespace, id)
            .await
            .map(drop)
            .map_err(|e| other(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(attrs: Vec<(&str, Value)>, owner: Option<&str>) -> Session {
        Session {
            namespace: "web".into(),
            id: SessionId([7; 16]),
            owner: owner.map(str::to_string),
            created_at_ms: 1,
            last_active_ms: 1,
            expires_at_ms: Some(2),
            ttl: crate::Ttl::default(),
            version: 1,
            attrs: attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        }
    }

    fn key(s: &str) -> SessionKey {
        SessionKey::try_from(s.to_string()).unwrap()
    }

    #[test]
    fn keys_are_the_ids_text_and_back() {
        let id = SessionId::new_v4();
        let k = session_key(id);
        assert_eq!(k.as_ref(), id.to_string());
        assert_eq!(session_id(&k), Some(id));
    }

    #[test]
    fn malformed_keys_name_no_session() {
        let id = SessionId::new_v4().to_string();
        for bad in [
            String::new(),
            "x".into(),
            id.to_uppercase(),
            id.replace('-', ""),
            format!("{{{id}}}"),
            format!(" {id}"),
            format!("{id} "),
            format!("urn:uuid:{id}"),
            id[..35].to_string(),
            "é".repeat(18),
            "\u{0}".repeat(36),
            "a".repeat(4064),
        ] {
            assert_eq!(session_id(&key(&bad)), None, "{bad:?}");
        }
    }

    #[test]
    fn ttl_is_whole_milliseconds() {
        assert_eq!(
            ttl_of(&time::Duration::microseconds(1_500_900)),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(ttl_of(&time::Duration::microseconds(900)), None);
        assert_eq!(ttl_of(&time::Duration::ZERO), None);
        assert_eq!(ttl_of(&time::Duration::seconds(-5)), None);
        assert_eq!(
            ttl_of(&time::Duration::MAX),
            Some(Duration::from_millis(u64::MAX))
        );
    }

    #[test]
    fn the_owner_comes_from_a_json_string_under_the_reserved_key() {
        let mut state = SessionState::new();
        assert_eq!(owner_of(&state), None);
        state.insert(OWNER_KEY.into(), "17".into());
        assert_eq!(owner_of(&state), None, "only a string names an owner");
        state.insert(OWNER_KEY.into(), "alice".into());
        assert_eq!(owner_of(&state), None, "the value is JSON text");
        state.insert(OWNER_KEY.into(), "\"alice\"".into());
        assert_eq!(owner_of(&state).as_deref(), Some("alice"));
    }

    #[test]
    fn state_round_trips() {
        let mut state = SessionState::new();
        state.insert(
            "user".into(),
            r#"{"name":"Zoë \"z\" 東京","n":[1,2.5]}"#.into(),
        );
        state.insert("a.key with spaces".into(), "\u{0}\\\n".into());
        state.insert(OWNER_KEY.into(), "\"alice\"".into());
        let s = session(
            vec![(DATA_ATTR, Value::Str(encode(&state).unwrap()))],
            Some("alice"),
        );
        assert_eq!(decode(&s).unwrap(), state);
    }

    #[test]
    fn sessions_not_made_by_the_store_decode_empty() {
        let s = session(vec![("other", Value::Int(1))], None);
        assert!(decode(&s).unwrap().is_empty());
    }

    #[test]
    fn bad_state_is_a_deserialization_error_without_the_content() {
        for attr in [
            Value::Str("{\"k\": 3}".into()),
            Value::Str("\"secret-value\"".into()),
            Value::Str("[\"secret-value\"]".into()),
            Value::Str("{\"secret-value\": 3}".into()),
            Value::Str("{not json secret-value".into()),
            Value::Int(3),
        ] {
            match decode(&session(vec![(DATA_ATTR, attr)], None)) {
                Err(LoadError::Deserialization(e)) => {
                    let msg = format!("{e:#}");
                    assert!(!msg.contains("secret-value"), "{msg}");
                    assert!(!msg.contains(&SessionId([7; 16]).to_string()), "{msg}");
                }
                other => panic!("expected a deserialization error, got {other:?}"),
            }
        }
    }
}
