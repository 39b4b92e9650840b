//! The hot requests decoded in place, and session answers encoded from
//! borrowed parts.
//!
//! A server spends most of its time on `Create` and `Get`. Decoded the general
//! way ([`crate::frame::decode_request`]) each string becomes an allocation and
//! a `Create`'s attribute map a `BTreeMap` that the store encodes again into
//! the very bytes it arrived as. [`decode_hot_request`] reads these two
//! operations without allocating: strings borrow from the frame, and a
//! `Create`'s attribute map is checked (well formed, names valid and strictly
//! ascending, i.e. canonical) and handed over as the bytes it takes in the
//! frame, which are the bytes [`crate::value::encode_attrs`] gives for the same
//! map.
//!
//! It accepts a subset of what the general decoder accepts, with the same
//! meaning: anything it does not take (another operation, a map whose names
//! are out of order or repeated, an invalid name, malformed bytes) is left to
//! the general decoder, which answers it as before, errors included.
//!
//! [`encode_session_answer`] is the other half: a `Session` or
//! `MaybeSession(Some)` answer written from borrowed fields and the stored
//! attribute bytes, byte for byte what [`crate::frame::encode_response`] writes
//! for the same session.

use bytes::{BufMut, BytesMut};
use serde::Serialize;

use crate::error::EncodeError;
use crate::frame::HEADER_LEN;
use crate::ids::SessionId;
use crate::limits;
use crate::message::{
    DeleteReason, EventKind, LimitPolicy, OwnerLimit, Reply, Response, Session, Ttl,
};
use crate::value::{Attrs, Value};

/// Wire tag of `Op::Create`.
const OP_CREATE: u32 = 2;
/// Wire tag of `Op::Get`.
const OP_GET: u32 = 3;
/// Wire tag of `Reply::Session`.
const REPLY_SESSION: u32 = 3;
/// Wire tag of `Reply::MaybeSession`.
const REPLY_MAYBE_SESSION: u32 = 4;
/// Wire tag of `Reply::Events`.
const REPLY_EVENTS: u32 = 16;
/// Wire tag of `EventKind::Updated`.
pub const EVENT_UPDATED: u32 = 4;
/// Wire tag of `EventKind::Touched`.
pub const EVENT_TOUCHED: u32 = 5;

/// A `Create`, borrowed from its frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CreateView<'a> {
    /// The namespace.
    pub namespace: &'a str,
    /// A caller-chosen id.
    pub id: Option<SessionId>,
    /// The owner.
    pub owner: Option<&'a str>,
    /// Expiry.
    pub ttl: Ttl,
    /// The attribute map as encoded in the frame: well formed, every name
    /// valid ([`limits::check_attr_name`]) and the names strictly ascending,
    /// so these are the bytes [`crate::value::encode_attrs`] gives for it.
    pub attrs: &'a [u8],
    /// Per-owner limit.
    pub owner_limit: Option<OwnerLimit>,
}

/// A `Get`, borrowed from its frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GetView<'a> {
    /// The namespace.
    pub namespace: &'a str,
    /// The session.
    pub id: SessionId,
    /// Also slide the deadline.
    pub touch: bool,
}

/// A hot operation decoded in place.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OpView<'a> {
    /// `Op::Create`.
    Create(CreateView<'a>),
    /// `Op::Get`.
    Get(GetView<'a>),
}

/// Reads bincode's encoding (the standard configuration the frames use) from
/// a payload, in place. It is stricter than bincode: an integer must take its
/// shortest form (every encoder writes that), so what it reads, bincode
/// reads the same way; anything else is `None`, and the request goes to the
/// general decoder.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.bytes.split_first()?;
        self.bytes = rest;
        Some(b)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.bytes.len() {
            return None;
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    /// A variable-length integer in its shortest form: below 251 one byte;
    /// else 251, 252 or 253 then a little-endian `u16`, `u32` or `u64` that
    /// would not fit the class below.
    fn varint(&mut self) -> Option<u64> {
        match self.u8()? {
            b @ 0..=250 => Some(u64::from(b)),
            251 => Some(u64::from(u16::from_le_bytes(self.array()?))).filter(|v| *v >= 251),
            252 => Some(u64::from(u32::from_le_bytes(self.array()?))).filter(|v| *v > 0xffff),
            253 => Some(u64::from_le_bytes(self.array()?)).filter(|v| *v > 0xffff_ffff),
            _ => None,
        }
    }

    fn varint_u32(&mut self) -> Option<u32> {
        u32::try_from(self.varint()?).ok()
    }

    /// A signed integer: zigzag, then a variable-length integer.
    fn varint_i64(&mut self) -> Option<i64> {
        let z = self.varint()?;
        Some(((z >> 1) as i64) ^ -((z & 1) as i64))
    }

    fn bool(&mut self) -> Option<bool> {
        match self.u8()? {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }

    /// A byte string: its length, then the bytes.
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.varint()?).ok()?;
        self.take(n)
    }

    /// A string, checked to be UTF-8 (with `simdutf8`: a 256-byte value's
    /// check with the standard library's was 7% of a create's instructions).
    fn str(&mut self) -> Option<&'a str> {
        simdutf8::basic::from_utf8(self.bytes()?).ok()
    }

    /// An option: 0, or 1 then the value.
    fn option<T>(&mut self, read: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        match self.u8()? {
            0 => Some(None),
            1 => read(self).map(Some),
            _ => None,
        }
    }

    fn id(&mut self) -> Option<SessionId> {
        self.array().map(SessionId)
    }

    fn ttl(&mut self) -> Option<Ttl> {
        Some(Ttl {
            idle_ttl_ms: self.option(Self::varint)?,
            max_lifetime_ms: self.option(Self::varint)?,
        })
    }

    /// One attribute value, checked and dropped (the shape of
    /// [`crate::Value`]: a variant tag, then its fields).
    fn value(&mut self) -> Option<()> {
        match self.varint_u32()? {
            0 => {}
            1 => {
                self.bool()?;
            }
            2 => {
                self.varint_i64()?;
            }
            3 => {
                self.array::<8>()?;
            }
            4 => {
                self.str()?;
            }
            5 => {
                self.bytes()?;
            }
            6 => {
                self.varint_i64()?;
                self.varint()?;
            }
            _ => return None,
        }
        Some(())
    }

    /// An attribute map, canonical (see [`CreateView::attrs`]): the bytes it
    /// took.
    fn canonical_attrs(&mut self) -> Option<&'a [u8]> {
        let start = self.bytes;
        let count = self.varint()?;
        let mut last: Option<&str> = None;
        for _ in 0..count {
            let name = self.str()?;
            if last.is_some_and(|l| l >= name) || limits::check_attr_name(name).is_err() {
                return None;
            }
            self.value()?;
            last = Some(name);
        }
        start.get(..start.len() - self.bytes.len())
    }

    /// One attribute value, owned.
    fn value_owned(&mut self) -> Option<Value> {
        Some(match self.varint_u32()? {
            0 => Value::Null,
            1 => Value::Bool(self.bool()?),
            2 => Value::Int(self.varint_i64()?),
            3 => Value::Float(f64::from_le_bytes(self.array()?)),
            4 => Value::Str(self.str()?.to_owned()),
            5 => Value::Bytes(self.bytes()?.to_vec()),
            6 => Value::Counter {
                value: self.varint_i64()?,
                reset_at_ms: self.varint()?,
            },
            _ => return None,
        })
    }

    /// An attribute map, owned (a repeated name: the last value wins, as
    /// with serde's map).
    fn attrs_owned(&mut self) -> Option<Attrs> {
        let count = self.varint()?;
        let mut attrs = Attrs::new();
        for _ in 0..count {
            let name = self.str()?.to_owned();
            let value = self.value_owned()?;
            attrs.insert(name, value);
        }
        Some(attrs)
    }

    /// A whole session, owned.
    fn session(&mut self) -> Option<Session> {
        Some(Session {
            namespace: self.str()?.to_owned(),
            id: self.id()?,
            owner: self.option(Reader::str)?.map(str::to_owned),
            created_at_ms: self.varint()?,
            last_active_ms: self.varint()?,
            expires_at_ms: self.option(Reader::varint)?,
            ttl: self.ttl()?,
            version: self.varint()?,
            attrs: self.attrs_owned()?,
        })
    }

    fn owner_limit(&mut self) -> Option<OwnerLimit> {
        let max_sessions = self.varint_u32()?;
        let policy = match self.varint_u32()? {
            0 => LimitPolicy::Reject,
            1 => LimitPolicy::EvictOldest,
            _ => return None,
        };
        Some(OwnerLimit {
            max_sessions,
            policy,
        })
    }
}

/// Reads a `Create` or `Get` request in place: its id and the operation.
/// `None` for anything else, or anything the general decoder should look at
/// (see the module's documentation): decode such a payload with
/// [`crate::frame::decode_request`].
#[must_use]
pub fn decode_hot_request(payload: &[u8]) -> Option<(u64, OpView<'_>)> {
    let mut r = Reader { bytes: payload };
    let request_id = r.varint()?;
    let op = match r.varint_u32()? {
        OP_GET => OpView::Get(GetView {
            namespace: r.str()?,
            id: r.id()?,
            touch: r.bool()?,
        }),
        OP_CREATE => OpView::Create(CreateView {
            namespace: r.str()?,
            id: r.option(Reader::id)?,
            owner: r.option(Reader::str)?,
            ttl: r.ttl()?,
            attrs: r.canonical_attrs()?,
            owner_limit: r.option(Reader::owner_limit)?,
        }),
        _ => return None,
    };
    r.bytes.is_empty().then_some((request_id, op))
}

/// Reads a `Session` or `MaybeSession` answer (what a client receives most)
/// without serde: the same values [`crate::frame::decode_response`] gives,
/// at a fraction of the instructions. `None` for any other answer or
/// anything the general decoder should look at (as
/// [`decode_hot_request`]: shortest-form integers only).
#[must_use]
pub fn decode_session_response(payload: &[u8]) -> Option<Response> {
    let mut r = Reader { bytes: payload };
    let id = r.varint()?;
    let reply = match r.varint_u32()? {
        REPLY_SESSION => Reply::Session(r.session()?),
        REPLY_MAYBE_SESSION => Reply::MaybeSession(r.option(Reader::session)?),
        _ => return None,
    };
    r.bytes.is_empty().then_some(Response { id, reply })
}

/// A session without its attributes, borrowed: the fields of
/// [`crate::Session`] in its order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SessionHead<'a> {
    /// The namespace.
    pub namespace: &'a str,
    /// The id.
    pub id: SessionId,
    /// The owner.
    pub owner: Option<&'a str>,
    /// When it was created.
    pub created_at_ms: u64,
    /// When it was last active.
    pub last_active_ms: u64,
    /// When it expires, if ever.
    pub expires_at_ms: Option<u64>,
    /// Its expiry settings.
    pub ttl: Ttl,
    /// Its version.
    pub version: u64,
}

/// Appends `v` in bincode's variable-length integer encoding (its
/// specification: below 251 one byte; else a marker, 251, 252 or 253, then the
/// value as a little-endian `u16`, `u32` or `u64`).
#[inline]
fn put_varint(buf: &mut impl BufMut, v: u64) {
    if v < 251 {
        buf.put_u8(v as u8);
        return;
    }
    // Marker and value in one `put` (a timestamp is 9 bytes).
    let mut b = [0u8; 9];
    let n = if let Ok(v) = u16::try_from(v) {
        b[0] = 251;
        b[1..3].copy_from_slice(&v.to_le_bytes());
        3
    } else if let Ok(v) = u32::try_from(v) {
        b[0] = 252;
        b[1..5].copy_from_slice(&v.to_le_bytes());
        5
    } else {
        b[0] = 253;
        b[1..9].copy_from_slice(&v.to_le_bytes());
        9
    };
    buf.put_slice(&b[..n]);
}

/// A string: its length, then its bytes.
fn put_str(buf: &mut impl BufMut, s: &str) {
    put_varint(buf, s.len() as u64);
    buf.put_slice(s.as_bytes());
}

/// An option: 0, or 1 then the value.
fn put_option<B: BufMut, T>(buf: &mut B, v: Option<T>, put: fn(&mut B, T)) {
    match v {
        None => buf.put_u8(0),
        Some(v) => {
            buf.put_u8(1);
            put(buf, v);
        }
    }
}

/// Appends the encoding of the [`crate::Event`] with these fields to `out`:
/// the bytes [`crate::frame::encode_value`] gives for it (compared in the
/// property tests), written field by field (serde's encoder cost 2,000
/// instructions per event, more than the rest of a create).
pub fn encode_event(
    out: &mut Vec<u8>,
    cursor: u64,
    at_ms: u64,
    namespace: &str,
    id: SessionId,
    owner: Option<&str>,
    kind: EventKind,
) {
    put_varint(out, cursor);
    put_varint(out, at_ms);
    put_str(out, namespace);
    out.put_slice(&id.0);
    put_option(out, owner, put_str);
    match kind {
        EventKind::Created => put_varint(out, 0),
        EventKind::Rotated { to } => {
            put_varint(out, 1);
            out.put_slice(&to.0);
        }
        EventKind::Deleted { reason } => {
            put_varint(out, 2);
            put_varint(
                out,
                match reason {
                    DeleteReason::Delete => 0,
                    DeleteReason::LogoutEverywhere => 1,
                    DeleteReason::OwnerLimit => 2,
                    DeleteReason::MemoryEviction => 3,
                },
            );
        }
        EventKind::Expired => put_varint(out, 3),
        EventKind::Updated { version } => {
            put_varint(out, 4);
            put_varint(out, version);
        }
        EventKind::Touched { expires_at_ms } => {
            put_varint(out, 5);
            put_option(out, expires_at_ms, put_varint);
        }
    }
}

/// The head of an encoded [`crate::Event`] (as [`encode_event`] writes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventHead<'a> {
    /// Its cursor.
    pub cursor: u64,
    /// Its time.
    pub at_ms: u64,
    /// Its namespace.
    pub namespace: &'a str,
    /// Its kind's wire tag ([`EVENT_UPDATED`], [`EVENT_TOUCHED`], ...).
    pub kind: u32,
}

/// The cursor, time, namespace and kind of an encoded event, read without
/// decoding the rest: what a subscription filters on and what a reader of
/// the events files needs.
#[must_use]
pub fn peek_event(payload: &[u8]) -> Option<EventHead<'_>> {
    let mut r = Reader { bytes: payload };
    let cursor = r.varint()?;
    let at_ms = r.varint()?;
    let namespace = r.str()?;
    r.id()?;
    r.option(Reader::str)?;
    Some(EventHead {
        cursor,
        at_ms,
        namespace,
        kind: r.varint_u32()?,
    })
}

/// How many events a response payload carries, read from its head alone
/// (`None`: not an `Events` answer): for a reader that only counts.
#[must_use]
pub fn peek_events_count(payload: &[u8]) -> Option<u64> {
    let mut r = Reader { bytes: payload };
    r.varint()?;
    (r.varint_u32()? == REPLY_EVENTS)
        .then(|| r.varint())
        .flatten()
}

/// Appends one frame holding `Response { id: request_id, reply:
/// Events(events) }` with each event given already encoded (by
/// [`encode_event`]): the bytes [`crate::frame::encode_response`] writes for
/// the decoded events.
///
/// # Errors
/// [`EncodeError::TooLarge`] past [`crate::frame::ABSOLUTE_MAX_FRAME_LEN`]; `buf` is then
/// left as it was.
pub fn encode_events_answer(
    request_id: u64,
    events: &[&[u8]],
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    let start = buf.len();
    buf.put_u32(0);
    put_varint(buf, request_id);
    put_varint(buf, u64::from(REPLY_EVENTS));
    put_varint(buf, events.len() as u64);
    for e in events {
        buf.put_slice(e);
    }
    crate::frame::finish_frame(buf, start)
}

/// Appends one frame holding the answer `Session` (or `MaybeSession(Some)`
/// when `maybe`) with `head`'s fields and `attrs` (an attribute map encoded by
/// [`crate::value::encode_attrs`]) as its attributes: exactly the bytes of
/// [`crate::frame::encode_response`] on the whole session. The attributes are
/// the last field of the frame, so they are copied in as they are; the rest
/// is written field by field in bincode's encoding (through serde it cost
/// five times as many instructions; the property tests compare the bytes with
/// [`crate::frame::encode_response`]'s).
///
/// # Errors
/// [`EncodeError::TooLarge`] past [`crate::frame::ABSOLUTE_MAX_FRAME_LEN`]; `buf` is then
/// left as it was.
pub fn encode_session_answer(
    request_id: u64,
    maybe: bool,
    head: &SessionHead<'_>,
    attrs: &[u8],
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    let start = buf.len();
    buf.reserve(
        HEADER_LEN + 80 + head.namespace.len() + head.owner.map_or(0, str::len) + attrs.len(),
    );
    buf.put_u32(0);
    put_varint(buf, request_id);
    if maybe {
        put_varint(buf, u64::from(REPLY_MAYBE_SESSION));
        buf.put_u8(1);
    } else {
        put_varint(buf, u64::from(REPLY_SESSION));
    }
    put_str(buf, head.namespace);
    buf.put_slice(&head.id.0);
    put_option(buf, head.owner, put_str);
    put_varint(buf, head.created_at_ms);
    put_varint(buf, head.last_active_ms);
    put_option(buf, head.expires_at_ms, put_varint);
    put_option(buf, head.ttl.idle_ttl_ms, put_varint);
    put_option(buf, head.ttl.max_lifetime_ms, put_varint);
    put_varint(buf, head.version);
    buf.extend_from_slice(attrs);
    crate::frame::finish_frame(buf, start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{decode_request, encode_request, split_frame, ABSOLUTE_MAX_FRAME_LEN};
    use crate::message::{Create, Get, Op, Request};
    use crate::value::{encode_attrs, Attrs, Value};

    fn payload(op: Op) -> Vec<u8> {
        let mut buf = BytesMut::new();
        encode_request(&Request { id: 99, op }, &mut buf).unwrap();
        let (p, _) = split_frame(&buf, ABSOLUTE_MAX_FRAME_LEN).unwrap().unwrap();
        p.to_vec()
    }

    fn create(attrs: Attrs) -> Create {
        Create {
            namespace: "app".into(),
            id: Some(SessionId([7; 16])),
            owner: Some("alice".into()),
            ttl: Ttl {
                idle_ttl_ms: Some(1000),
                max_lifetime_ms: None,
            },
            attrs,
            owner_limit: Some(OwnerLimit {
                max_sessions: 3,
                policy: crate::LimitPolicy::EvictOldest,
            }),
        }
    }

    #[test]
    fn a_create_borrows_its_fields_and_its_encoded_attributes() {
        let attrs: Attrs = [
            ("a".to_owned(), Value::Str("x".repeat(300))),
            ("b".to_owned(), Value::Bytes(vec![1, 2, 3])),
            ("c".to_owned(), Value::Float(-0.5)),
            (
                "d".to_owned(),
                Value::Counter {
                    value: -4,
                    reset_at_ms: 1 << 40,
                },
            ),
            ("e".to_owned(), Value::Null),
        ]
        .into();
        let c = create(attrs.clone());
        let p = payload(Op::Create(c.clone()));
        let Some((99, OpView::Create(v))) = decode_hot_request(&p) else {
            panic!("not decoded in place");
        };
        assert_eq!(v.namespace, "app");
        assert_eq!(v.id, c.id);
        assert_eq!(v.owner, Some("alice"));
        assert_eq!(v.ttl, c.ttl);
        assert_eq!(v.owner_limit, c.owner_limit);
        assert_eq!(v.attrs, &encode_attrs(&attrs).unwrap()[..]);
    }

    #[test]
    fn a_get_borrows_its_namespace() {
        let get = Get {
            namespace: "web".into(),
            id: SessionId([3; 16]),
            touch: true,
        };
        let p = payload(Op::Get(get));
        assert_eq!(
            decode_hot_request(&p),
            Some((
                99,
                OpView::Get(GetView {
                    namespace: "web",
                    id: SessionId([3; 16]),
                    touch: true
                })
            ))
        );
    }

    /// What the general decoder must see: other operations, maps that are
    /// not canonical, names it refuses, trailing or missing bytes.
    #[test]
    fn anything_else_is_left_to_the_general_decoder() {
        assert_eq!(decode_hot_request(&payload(Op::Ping)), None);
        // Names out of order or repeated: encode by hand (a BTreeMap cannot).
        let mut p = payload(Op::Create(create(Attrs::new())));
        let empty_map_at = p.len() - 1 - 3; // Some(limit): 1 + 1 + 1 bytes
        let map = [2u8, 1, b'b', 0, 1, b'a', 0];
        p.splice(empty_map_at..=empty_map_at, map);
        assert!(decode_request(&p).is_ok(), "the general decoder takes it");
        assert_eq!(decode_hot_request(&p), None);
        let dup = [2u8, 1, b'a', 0, 1, b'a', 0];
        p.splice(empty_map_at..empty_map_at + map.len(), dup);
        assert!(decode_request(&p).is_ok());
        assert_eq!(decode_hot_request(&p), None);
        // An empty name is refused by the store: leave it to the slow path.
        let empty_name = [1u8, 0, 0];
        p.splice(empty_map_at..empty_map_at + dup.len(), empty_name);
        assert!(decode_request(&p).is_ok());
        assert_eq!(decode_hot_request(&p), None);
        // Trailing bytes and truncation.
        let mut q = payload(Op::Create(create(Attrs::new())));
        q.push(0);
        assert_eq!(decode_hot_request(&q), None);
        q.truncate(q.len() - 2);
        assert_eq!(decode_hot_request(&q), None);
        // A string value that is not UTF-8.
        let mut u = payload(Op::Create(create(Attrs::new())));
        u.splice(
            empty_map_at..=empty_map_at,
            [1u8, 1, b'a', 4, 2, b'o', 0xff],
        );
        assert_eq!(decode_hot_request(&u), None);
        assert!(decode_request(&u).is_err());
        u.splice(empty_map_at.., [1u8, 1, b'a', 4, 2, b'o', b'k', 0]);
        assert!(matches!(
            decode_hot_request(&u),
            Some((99, OpView::Create(_)))
        ));
        // A value with an unknown tag.
        let mut r = payload(Op::Create(create(Attrs::new())));
        r.splice(empty_map_at..=empty_map_at, [1u8, 1, b'a', 9]);
        assert_eq!(decode_hot_request(&r), None);
        assert!(decode_request(&r).is_err());
    }
}
