//! A [`tower_sessions_core::SessionStore`] backed by sessiond (feature
//! `tower-sessions`), so an axum or tower app keeps its cookie sessions in
//! sessiond with one line:
//!
//! ```no_run
//! # async fn demo() -> Result<(), sessiond_client::Error> {
//! use sessiond_client::{Client, SessiondStore};
//!
//! let client = Client::connect("127.0.0.1:7379").await?;
//! let store = SessiondStore::new(client, "web");
//! // let layer = tower_sessions::SessionManagerLayer::new(store);
//! # Ok(()) }
//! ```
//!
//! # Mapping
//! - The tower-sessions `Id` (an `i128`) is the sessiond id (its 16 bytes,
//!   little-endian) in the store's namespace.
//! - The record's data map is kept as one attribute, [`DATA_ATTR`], holding the
//!   map as JSON text: a lossless round trip of any JSON value.
//! - `expiry_date` becomes the session's idle ttl at every create and save
//!   (reads do not slide it), so the daemon itself expires the record at that
//!   instant and a load after it finds nothing.
//! - If the data holds a string under [`OWNER_KEY`], the session is created
//!   with that owner, so the daemon's owner index can list and revoke every
//!   session of a user (`Client::list_by_owner`, `Client::delete_by_owner`).
//!
//! # Semantics
//! `create` uses the daemon's create-if-absent: an id that is taken, or was
//! deleted recently, gets a fresh id (the trait's collision rule). `save`
//! upserts, but the daemon refuses to bring back an id deleted within its
//! tombstone window: a request that finishes after a logout fails to save
//! instead of resurrecting the session.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;
use tower_sessions_core::session::{Id, Record};
use tower_sessions_core::{session_store, SessionStore};

use crate::{Client, CreateOptions, Error, ErrorCode, Session, SessionId, UpdateOptions, Value};

/// The attribute holding the session data as JSON.
pub const DATA_ATTR: &str = "tower_sessions.data";
/// A data key whose string value becomes the session's owner.
pub const OWNER_KEY: &str = "sessiond.owner";

/// Sessions of tower-sessions kept in a sessiond namespace.
#[derive(Debug, Clone)]
pub struct SessiondStore {
    client: Client,
    namespace: String,
}

impl SessiondStore {
    /// A store over `client`, keeping sessions in `namespace`.
    pub fn new(client: Client, namespace: impl Into<String>) -> Self {
        Self {
            client,
            namespace: namespace.into(),
        }
    }
}

fn session_id(id: &Id) -> SessionId {
    SessionId(id.0.to_le_bytes())
}

fn backend(e: &Error) -> session_store::Error {
    // Client errors never contain session ids.
    session_store::Error::Backend(e.to_string())
}

/// Time left until `expiry`, or `None` if it has passed.
fn ttl_until(expiry: OffsetDateTime) -> Option<Duration> {
    let left = expiry - OffsetDateTime::now_utc();
    let ms = left.whole_milliseconds();
    (ms > 0).then(|| Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX)))
}

fn encode(record: &Record) -> session_store::Result<String> {
    serde_json::to_string(&record.data).map_err(|e| session_store::Error::Encode(e.to_string()))
}

fn owner_of(record: &Record) -> Option<String> {
    match record.data.get(OWNER_KEY) {
        Some(serde_json::Value::String(owner)) => Some(owner.clone()),
        _ => None,
    }
}

fn decode(id: Id, s: &Session) -> session_store::Result<Record> {
    let data: HashMap<String, serde_json::Value> = match s.attr(DATA_ATTR) {
        Some(Value::Str(json)) => {
            serde_json::from_str(json).map_err(|e| session_store::Error::Decode(e.to_string()))?
        }
        _ => HashMap::new(),
    };
    let expiry_ms = s.expires_at_ms.map_or(i128::from(i64::MAX / 2), i128::from);
    let expiry_date = OffsetDateTime::from_unix_timestamp_nanos(expiry_ms * 1_000_000)
        .map_err(|e| session_store::Error::Decode(e.to_string()))?;
    Ok(Record {
        id,
        data,
        expiry_date,
    })
}

#[async_trait]
impl SessionStore for SessiondStore {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        let data = encode(record)?;
        let Some(ttl) = ttl_until(record.expiry_date) else {
            // Already expired: there is nothing to keep.
            return Ok(());
        };
        for _ in 0..8 {
            let mut opts = CreateOptions::new()
                .id(session_id(&record.id))
                .idle_ttl(ttl)
                .attr(DATA_ATTR, data.as_str());
            if let Some(owner) = owner_of(record) {
                opts = opts.owner(owner);
            }
            match self.client.create(&self.namespace, opts).await {
                Ok(_) => return Ok(()),
                Err(e) if matches!(e.code(), Some(ErrorCode::AlreadyExists | ErrorCode::Gone)) => {
                    // Collision with a live or recently deleted id: draw another.
                    record.id = Id::default();
                }
                Err(e) => return Err(backend(&e)),
            }
        }
        Err(session_store::Error::Backend(
            "could not find a free session id".into(),
        ))
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let data = encode(record)?;
        let id = session_id(&record.id);
        let Some(ttl) = ttl_until(record.expiry_date) else {
            // Saved past its expiry: the session ends now.
            return self.delete(&record.id).await;
        };
        let update = UpdateOptions::new()
            .set(DATA_ATTR, data)
            .ttl(Some(ttl), None)
            .upsert(owner_of(record));
        match self.client.update(&self.namespace, id, update).await {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some(ErrorCode::Gone) => Err(session_store::Error::Backend(
                "the session was deleted (logged out) while this request ran; not saved".into(),
            )),
            Err(e) => Err(backend(&e)),
        }
    }

    async fn load(&self, session_id_: &Id) -> session_store::Result<Option<Record>> {
        match self
            .client
            .get(&self.namespace, session_id(session_id_))
            .await
        {
            Ok(Some(s)) => decode(*session_id_, &s).map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(backend(&e)),
        }
    }

    async fn delete(&self, session_id_: &Id) -> session_store::Result<()> {
        self.client
            .delete(&self.namespace, session_id(session_id_))
            .await
            .map(drop)
            .map_err(|e| backend(&e))
    }
}
