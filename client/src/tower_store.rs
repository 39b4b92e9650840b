//! A [`tower_sessions_core::SessionStore`] backed by sessiond (feature
//! `tower-sessions`), so that an axum or tower app keeps its cookie sessions in
//! sessiond with one line:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use sessiond_client::{Client, SessiondStore};
//!
//! let client = Client::connect("127.0.0.1:7379").await?;
//! let store = SessiondStore::new(client, "web");
//! // With the `tower-sessions` crate (the same minor version as
//! // `tower-sessions-core`, 0.15):
//! // let layer = tower_sessions::SessionManagerLayer::new(store);
//! // let app = axum::Router::new().route(..).layer(layer);
//! # let _ = store;
//! # Ok(()) }
//! ```
//!
//! # Mapping
//! A tower-sessions [`Record`] is one sessiond session in the store's namespace:
//! - `id` (an `i128`) is the sessiond id, its 16 bytes little-endian
//!   ([`sessiond_id`]).
//! - `data` is one attribute, [`DATA_ATTR`], holding the whole map as JSON text
//!   (one attribute, not one per key, so that a save replaces the map and a key
//!   removed in the app is removed here too). The JSON encoding round-trips every
//!   `serde_json::Value` exactly, floats included (the feature turns on
//!   serde_json's `float_roundtrip`).
//! - `expiry_date` becomes the session's idle ttl, `expiry_date - now`, set at
//!   every create and save (loads do not slide it), so the daemon expires the
//!   session at that instant, give or take the request's transit time, and a load
//!   after it finds nothing. The date itself, to the nanosecond, is kept in
//!   [`EXPIRY_ATTR`], and a loaded record's `expiry_date` is exactly the one
//!   saved (the daemon's deadline has millisecond resolution); where the
//!   daemon's deadline has moved away from it (another client slid the
//!   session), the daemon's deadline is returned.
//! - If `data` holds a string under [`OWNER_KEY`] when the session is created,
//!   that user becomes the session's owner, so the daemon's owner index lists
//!   and revokes every session of a user ([`Client::list_by_owner`],
//!   [`Client::delete_by_owner`]). A sessiond owner is fixed at creation: set the
//!   key right after `Session::cycle_id()` at login (the next save is then a
//!   create), which is also the session-fixation defence.
//!
//! # Semantics
//! - `create` uses the daemon's create-if-absent: an id that is taken, or was
//!   deleted recently, is replaced by a fresh random id and tried again (the
//!   trait's collision rule), so a create never takes over another session.
//! - `save` upserts, but the daemon refuses to bring back an id deleted or
//!   rotated away within its tombstone window (`--tombstone-ttl`, 2 minutes by
//!   default): a request that finishes after a logout fails to save instead of
//!   resurrecting the session. A record saved past its `expiry_date` is deleted.
//! - `load` returns `None` for an absent or expired session.
//! - `delete` deletes (and leaves a tombstone).
//!
//! Errors are [`session_store::Error::Backend`] (the daemon or the connection),
//! `Encode` or `Decode`; their messages never contain a session id.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;
use tower_sessions_core::session::{Id, Record};
use tower_sessions_core::{session_store, SessionStore};

use crate::{Client, CreateOptions, Error, ErrorCode, Session, SessionId, UpdateOptions, Value};

/// The attribute holding a record's data map as JSON text.
pub const DATA_ATTR: &str = "tower_sessions.data";

/// The attribute holding a record's `expiry_date` exactly, as nanoseconds
/// since the Unix epoch in decimal.
pub const EXPIRY_ATTR: &str = "tower_sessions.expiry";

/// How far the daemon's deadline may be from the saved date for the saved
/// date to be returned (transit time and the daemon's millisecond
/// resolution); further, the session was slid by another client.
const EXPIRY_AGREEMENT: time::Duration = time::Duration::seconds(2);

/// A data key whose string value, when the session is created, becomes the
/// sessiond owner of the session.
pub const OWNER_KEY: &str = "sessiond.owner";

/// How many ids `create` tries before giving up. A random 128-bit id collides
/// essentially never, so running out means something else is wrong.
const CREATE_ATTEMPTS: usize = 8;

/// Sessions of tower-sessions kept in a sessiond namespace (see the
/// [module docs](self) for how a record maps onto a session).
#[derive(Debug, Clone)]
pub struct SessiondStore {
    client: Client,
    namespace: String,
}

impl SessiondStore {
    /// A store over `client`, keeping sessions in `namespace`.
    ///
    /// ```no_run
    /// # async fn demo() -> sessiond_client::Result<()> {
    /// use sessiond_client::{Client, SessiondStore};
    /// let store = SessiondStore::new(Client::connect("127.0.0.1:7379").await?, "web");
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
}

/// The sessiond id of a tower-sessions id: its 16 bytes, little-endian. Use it
/// to reach a cookie session with the raw [`Client`] (for instance to spare the
/// current session in [`Client::delete_by_owner`]).
#[must_use]
pub fn sessiond_id(id: &Id) -> SessionId {
    SessionId(id.0.to_le_bytes())
}

/// A client error as a store error. Client and daemon messages never contain
/// session ids.
fn backend(e: &Error) -> session_store::Error {
    session_store::Error::Backend(e.to_string())
}

/// Time left until `expiry` (whole milliseconds, rounded down so the daemon
/// never keeps a record past its date), or `None` if it has come.
fn ttl_until(expiry: OffsetDateTime, now: OffsetDateTime) -> Option<Duration> {
    let ms = (expiry - now).whole_milliseconds();
    (ms > 0).then(|| Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX)))
}

fn encode(record: &Record) -> session_store::Result<String> {
    serde_json::to_string(&record.data).map_err(|e| session_store::Error::Encode(e.to_string()))
}

/// `expiry_date` as kept in [`EXPIRY_ATTR`].
fn expiry_text(record: &Record) -> String {
    record.expiry_date.unix_timestamp_nanos().to_string()
}

fn owner_of(record: &Record) -> Option<String> {
    match record.data.get(OWNER_KEY) {
        Some(serde_json::Value::String(owner)) => Some(owner.clone()),
        _ => None,
    }
}

/// The record of a loaded session. A session without [`DATA_ATTR`] (made by
/// another client in the namespace) has empty data; one whose attribute is not
/// JSON text is a `Decode` error.
fn decode(id: Id, s: &Session) -> session_store::Result<Record> {
    let data: HashMap<String, serde_json::Value> = match s.attr(DATA_ATTR) {
        Some(Value::Str(json)) => serde_json::from_str(json)
            .map_err(|e| session_store::Error::Decode(format!("{DATA_ATTR}: {e}")))?,
        Some(_) => {
            return Err(session_store::Error::Decode(format!(
                "{DATA_ATTR} is not JSON text"
            )))
        }
        None => HashMap::new(),
    };
    // A session without expiry (not one of ours) lasts as long as time can say.
    let deadline = s
        .expires_at_ms
        .and_then(|ms| OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok())
        .unwrap_or_else(|| time::PrimitiveDateTime::MAX.assume_utc());
    // The date as saved, unless the daemon's deadline has moved from it.
    let saved = match s.attr(EXPIRY_ATTR) {
        Some(Value::Str(nanos)) => nanos
            .parse::<i128>()
            .ok()
            .and_then(|n| OffsetDateTime::from_unix_timestamp_nanos(n).ok()),
        _ => None,
    };
    let expiry_date = match saved {
        Some(saved) if (saved - deadline).abs() <= EXPIRY_AGREEMENT => saved,
        _ => deadline,
    };
    if let Some(owner) = data.get(OWNER_KEY).and_then(|o| o.as_str()) {
        if s.owner.as_deref() != Some(owner) {
            // The owner index would miss this session (logout-everywhere would
            // not reach it): the key was set after the session was created.
            tracing::warn!(
                namespace = %s.namespace,
                "session data names an owner the sessiond session does not have; \
                 set it after Session::cycle_id() so that the session is created with it"
            );
        }
    }
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
        let Some(ttl) = ttl_until(record.expiry_date, OffsetDateTime::now_utc()) else {
            // Already expired: there is nothing to keep, and a load finds nothing.
            return Ok(());
        };
        let owner = owner_of(record);
        for _ in 0..CREATE_ATTEMPTS {
            let mut opts = CreateOptions::new()
                .id(sessiond_id(&record.id))
                .idle_ttl(ttl)
                .attr(DATA_ATTR, data.as_str())
                .attr(EXPIRY_ATTR, expiry_text(record));
            if let Some(owner) = &owner {
                opts = opts.owner(owner.as_str());
            }
            match self.client.create(&self.namespace, opts).await {
                Ok(_) => return Ok(()),
                Err(e) if matches!(e.code(), Some(ErrorCode::AlreadyExists | ErrorCode::Gone)) => {
                    // The id is someone else's (live or recently deleted): taking
                    // it over would hand over their session. Draw another.
                    tracing::warn!(
                        namespace = %self.namespace,
                        "session id collision on create; drawing a new id"
                    );
                    record.id = Id::default();
                }
                Err(e) => return Err(backend(&e)),
            }
        }
        Err(session_store::Error::Backend(format!(
            "no free session id after {CREATE_ATTEMPTS} attempts"
        )))
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let data = encode(record)?;
        let Some(ttl) = ttl_until(record.expiry_date, OffsetDateTime::now_utc()) else {
            // Saved at or past its expiry: the session ends now.
            return self.delete(&record.id).await;
        };
        let update = UpdateOptions::new()
            .set(DATA_ATTR, data)
            .set(EXPIRY_ATTR, expiry_text(record))
            .ttl(Some(ttl), None)
            .upsert(owner_of(record));
        match self
            .client
            .update(&self.namespace, sessiond_id(&record.id), update)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some(ErrorCode::Gone) => Err(session_store::Error::Backend(
                "the session was deleted (logged out) while this request ran; not saved".into(),
            )),
            Err(e) => Err(backend(&e)),
        }
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let Some(s) = self
            .client
            .get(&self.namespace, sessiond_id(id))
            .await
            .map_err(|e| backend(&e))?
        else {
            return Ok(None);
        };
        let record = decode(*id, &s)?;
        // The daemon never returns an expired session; this guards against a
        // clock that differs between it and us.
        Ok((record.expiry_date > OffsetDateTime::now_utc()).then_some(record))
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        self.client
            .delete(&self.namespace, sessiond_id(id))
            .await
            .map(drop)
            .map_err(|e| backend(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn session(attrs: Vec<(&str, Value)>, expires_at_ms: Option<u64>) -> Session {
        Session {
            namespace: "web".into(),
            id: SessionId([7; 16]),
            owner: None,
            created_at_ms: 1,
            last_active_ms: 1,
            expires_at_ms,
            ttl: crate::Ttl::default(),
            version: 1,
            attrs: attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        }
    }

    #[test]
    fn ids_map_to_their_sixteen_bytes() {
        let id = Id(0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10);
        let sid = sessiond_id(&id);
        assert_eq!(i128::from_le_bytes(sid.0), id.0);
        assert_eq!(sid.0[0], 0x10);
        assert_ne!(sessiond_id(&Id(-1)), sessiond_id(&Id(1)));
    }

    #[test]
    fn ttl_is_the_time_left_rounded_down() {
        let now = OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000);
        let in_1500_9 = now + time::Duration::microseconds(1_500_900);
        assert_eq!(ttl_until(in_1500_9, now), Some(Duration::from_millis(1500)));
        assert_eq!(ttl_until(now, now), None);
        assert_eq!(ttl_until(now - time::Duration::seconds(1), now), None);
        // Less than a millisecond left is no time left: a ttl of 0 is invalid.
        assert_eq!(
            ttl_until(now + time::Duration::microseconds(900), now),
            None
        );
    }

    #[test]
    fn the_saved_expiry_comes_back_to_the_nanosecond() {
        let exact = OffsetDateTime::from_unix_timestamp_nanos(2_000_000_000_123_456_789).unwrap();
        let record = Record {
            id: Id(7),
            data: HashMap::new(),
            expiry_date: exact,
        };
        // The daemon's deadline: the same instant, to its millisecond.
        let s = session(
            vec![(EXPIRY_ATTR, Value::Str(expiry_text(&record)))],
            Some(2_000_000_000_123),
        );
        assert_eq!(decode(record.id, &s).unwrap().expiry_date, exact);
        // Two saves within one millisecond load as they were saved.
        let later = Record {
            expiry_date: exact + time::Duration::nanoseconds(1),
            ..record.clone()
        };
        let s = session(
            vec![(EXPIRY_ATTR, Value::Str(expiry_text(&later)))],
            Some(2_000_000_000_123),
        );
        assert_eq!(
            decode(record.id, &s).unwrap().expiry_date,
            later.expiry_date
        );
    }

    #[test]
    fn a_deadline_slid_by_another_client_wins_over_the_saved_date() {
        let exact = OffsetDateTime::from_unix_timestamp(2_000_000_000).unwrap();
        let record = Record {
            id: Id(7),
            data: HashMap::new(),
            expiry_date: exact,
        };
        let slid = 2_000_000_000_000 + 3_600_000;
        let s = session(
            vec![(EXPIRY_ATTR, Value::Str(expiry_text(&record)))],
            Some(slid),
        );
        assert_eq!(
            decode(record.id, &s).unwrap().expiry_date,
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(slid) * 1_000_000).unwrap()
        );
        // Garbage in the attribute is ignored.
        let s = session(vec![(EXPIRY_ATTR, Value::Str("soon".into()))], Some(slid));
        assert_eq!(
            decode(record.id, &s).unwrap().expiry_date.unix_timestamp(),
            2_000_003_600
        );
    }

    #[test]
    fn data_round_trips_exactly() {
        let mut data = HashMap::new();
        data.insert(
            "nested".to_string(),
            json!({"a": [1, -2, 3.25, null, true, {"b": "é\u{0}\"\\"}], "empty": {}}),
        );
        data.insert("big".to_string(), json!(u64::MAX));
        data.insert("small".to_string(), json!(i64::MIN));
        // Floats whose shortest decimal form has 17 digits need the exact parser.
        let floats: Vec<f64> = (1..2000u64)
            .map(|i| {
                f64::from_bits(0x3FF0_0000_0000_0000 ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 12)
            })
            .chain([0.1 + 0.2, f64::MIN_POSITIVE, f64::MAX, -0.0, 5e-324])
            .collect();
        data.insert("floats".to_string(), json!(floats));
        data.insert(OWNER_KEY.to_string(), json!("alice"));
        let record = Record {
            id: Id(42),
            data,
            expiry_date: OffsetDateTime::from_unix_timestamp(2_000_000_000).unwrap(),
        };
        let s = session(
            vec![(DATA_ATTR, Value::Str(encode(&record).unwrap()))],
            Some(2_000_000_000_000),
        );
        let mut back = decode(record.id, &s).unwrap();
        assert_eq!(back.expiry_date, record.expiry_date);
        // Floats first, bit for bit, with a short message if one changed.
        let back_floats: Vec<u64> = back.data["floats"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_f64().unwrap().to_bits())
            .collect();
        let changed = floats
            .iter()
            .zip(&back_floats)
            .filter(|(f, b)| f.to_bits() != **b)
            .count();
        assert_eq!(changed, 0, "{changed} floats lost bits");
        assert_eq!(back_floats.len(), floats.len());
        back.data.remove("floats");
        let mut expected = record.data;
        expected.remove("floats");
        assert_eq!(back.data, expected);
    }

    #[test]
    fn sessions_not_made_by_the_store_still_decode() {
        let s = session(vec![("other", Value::Int(1))], None);
        let r = decode(Id(1), &s).unwrap();
        assert!(r.data.is_empty());
        assert!(r.expiry_date > OffsetDateTime::now_utc() + time::Duration::days(365 * 1000));
    }

    #[test]
    fn bad_data_is_a_decode_error_without_the_id() {
        let id = Id(0x1234_5678_9abc_def0_1234_5678_9abc_def0);
        for attr in [Value::Str("{not json".into()), Value::Int(3)] {
            let s = session(vec![(DATA_ATTR, attr)], Some(1));
            match decode(id, &s) {
                Err(session_store::Error::Decode(msg)) => {
                    assert!(!msg.contains(&id.to_string()), "{msg}");
                    assert!(!msg.contains(&sessiond_id(&id).to_string()), "{msg}");
                }
                other => panic!("expected a decode error, got {other:?}"),
            }
        }
    }

    #[test]
    fn the_owner_comes_from_a_string_under_the_reserved_key() {
        let mut record = Record {
            id: Id(1),
            data: HashMap::new(),
            expiry_date: OffsetDateTime::now_utc(),
        };
        assert_eq!(owner_of(&record), None);
        record.data.insert(OWNER_KEY.into(), json!(17));
        assert_eq!(owner_of(&record), None, "only a string names an owner");
        record.data.insert(OWNER_KEY.into(), json!("alice"));
        assert_eq!(owner_of(&record).as_deref(), Some("alice"));
    }
}
