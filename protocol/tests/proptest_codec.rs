//! Property tests of the frame codec: every message round-trips, frames split
//! back in order from any cut of the stream, and arbitrary bytes never panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::BytesMut;
use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use sessiond_protocol::frame::{
    decode_request, decode_response, encode_request, encode_request_parts, encode_response,
    peek_request_header, peek_request_id, split_frame, ABSOLUTE_MAX_FRAME_LEN,
    DEFAULT_MAX_FRAME_LEN, HEADER_LEN,
};
use sessiond_protocol::*;

#[path = "../fuzz/harness.rs"]
mod harness;

fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_é-]{0,12}"
}

fn id() -> impl Strategy<Value = SessionId> {
    any::<[u8; 16]>().prop_map(SessionId)
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        // NaN is not equal to itself; every other float must round-trip exactly.
        any::<f64>()
            .prop_filter("not NaN", |f| !f.is_nan())
            .prop_map(Value::Float),
        text().prop_map(Value::Str),
        vec(any::<u8>(), 0..24).prop_map(Value::Bytes),
        (any::<i64>(), any::<u64>())
            .prop_map(|(value, reset_at_ms)| Value::Counter { value, reset_at_ms }),
    ]
}

fn attrs() -> impl Strategy<Value = Attrs> {
    btree_map(text(), value(), 0..5)
}

fn ttl() -> impl Strategy<Value = Ttl> {
    (option::of(varint()), option::of(varint())).prop_map(|(idle_ttl_ms, max_lifetime_ms)| Ttl {
        idle_ttl_ms,
        max_lifetime_ms,
    })
}

fn op() -> impl Strategy<Value = Op> {
    let policy = prop_oneof![Just(LimitPolicy::Reject), Just(LimitPolicy::EvictOldest)];
    prop_oneof![
        (any::<u16>(), option::of(text()), option::of(text())).prop_map(|(v, t, c)| Op::Hello(
            Hello {
                protocol_version: v,
                auth_token: t.map(AuthToken),
                client_name: c,
            }
        )),
        Just(Op::Ping),
        (
            text(),
            option::of(id()),
            option::of(text()),
            ttl(),
            attrs(),
            option::of((any::<u32>(), policy))
        )
            .prop_map(
                |(namespace, id, owner, ttl, attrs, limit)| Op::Create(Create {
                    namespace,
                    id,
                    owner,
                    ttl,
                    attrs,
                    owner_limit: limit.map(|(max_sessions, policy)| OwnerLimit {
                        max_sessions,
                        policy
                    }),
                })
            ),
        (text(), id(), any::<bool>()).prop_map(|(namespace, id, touch)| Op::Get(Get {
            namespace,
            id,
            touch
        })),
        (text(), id()).prop_map(|(namespace, id)| Op::Touch(Touch { namespace, id })),
        (
            text(),
            id(),
            attrs(),
            vec(text(), 0..3),
            option::of(any::<u64>()),
            option::of(ttl()),
            option::of(option::of(text()))
        )
            .prop_map(
                |(namespace, id, set, remove, expected_version, ttl, upsert)| Op::Update(Update {
                    namespace,
                    id,
                    set,
                    remove,
                    expected_version,
                    ttl,
                    upsert: upsert.map(|owner| Upsert { owner }),
                })
            ),
        (
            text(),
            id(),
            text(),
            any::<i64>(),
            option::of((any::<u64>(), any::<i64>()))
        )
            .prop_map(|(namespace, id, attr, delta, w)| Op::Incr(Incr {
                namespace,
                id,
                attr,
                delta,
                window: w.map(|(window_ms, limit)| RateWindow { window_ms, limit }),
            })),
        (text(), id()).prop_map(|(namespace, id)| Op::Delete(Delete { namespace, id })),
        (
            text(),
            text(),
            option::of((any::<u64>(), id())),
            any::<u32>()
        )
            .prop_map(|(namespace, owner, after, limit)| {
                Op::ListByOwner(ListByOwner {
                    namespace,
                    owner,
                    after: after.map(|(created_at_ms, id)| ListCursor { created_at_ms, id }),
                    limit,
                })
            }),
        (text(), text(), option::of(id())).prop_map(
            |(namespace, owner, except)| Op::DeleteByOwner(DeleteByOwner {
                namespace,
                owner,
                except
            })
        ),
        (text(), id(), option::of(any::<u64>())).prop_map(|(namespace, id, grace_ms)| Op::Rotate(
            Rotate {
                namespace,
                id,
                grace_ms
            }
        )),
        Just(Op::Stats),
        Just(Op::ClusterStatus),
        (any::<u64>(), text())
            .prop_map(|(node_id, addr)| Op::ClusterAddNode(ClusterAddNode { node_id, addr })),
        any::<u64>().prop_map(|node_id| Op::ClusterRemoveNode(ClusterRemoveNode { node_id })),
        (text(), id(), any::<u64>()).prop_map(|(namespace, id, max_staleness_ms)| Op::GetStale(
            GetStale {
                namespace,
                id,
                max_staleness_ms
            }
        )),
        (
            vec(text(), 0..3),
            any::<(bool, bool)>(),
            prop_oneof![
                Just(EventsFrom::Now),
                Just(EventsFrom::Oldest),
                varint().prop_map(EventsFrom::After)
            ]
        )
            .prop_map(
                |(namespaces, (updates, touches), from)| Op::Subscribe(Subscribe {
                    namespaces,
                    updates,
                    touches,
                    from
                })
            ),
    ]
}

fn event() -> impl Strategy<Value = Event> {
    let reason = prop_oneof![
        Just(DeleteReason::Delete),
        Just(DeleteReason::LogoutEverywhere),
        Just(DeleteReason::OwnerLimit),
        Just(DeleteReason::MemoryEviction),
    ];
    let kind = prop_oneof![
        Just(EventKind::Created),
        id().prop_map(|to| EventKind::Rotated { to }),
        reason.prop_map(|reason| EventKind::Deleted { reason }),
        Just(EventKind::Expired),
        varint().prop_map(|version| EventKind::Updated { version }),
        option::of(varint()).prop_map(|expires_at_ms| EventKind::Touched { expires_at_ms }),
    ];
    (varint(), varint(), text(), id(), option::of(text()), kind).prop_map(
        |(cursor, at_ms, namespace, id, owner, kind)| Event {
            cursor,
            at_ms,
            namespace,
            id,
            owner,
            kind,
        },
    )
}

/// Integers from each of bincode's variable-length classes (1, 3, 5 and 9
/// bytes) and their edges.
fn varint() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..251,
        251u64..=65_535,
        65_536u64..=u64::from(u32::MAX),
        any::<u64>(),
        Just(250u64),
        Just(u64::MAX),
    ]
}

fn session() -> impl Strategy<Value = Session> {
    (
        text(),
        id(),
        option::of(text()),
        [varint(), varint(), varint()],
        option::of(varint()),
        ttl(),
        attrs(),
    )
        .prop_map(
            |(
                namespace,
                id,
                owner,
                [created_at_ms, last_active_ms, version],
                expires_at_ms,
                ttl,
                attrs,
            )| Session {
                namespace,
                id,
                owner,
                created_at_ms,
                last_active_ms,
                expires_at_ms,
                ttl,
                version,
                attrs,
            },
        )
}

fn reply() -> impl Strategy<Value = Reply> {
    prop_oneof![
        (any::<u16>(), text())
            .prop_map(|(c, m)| Reply::Error(WireError::new(ErrorCode::from_u16(c), m))),
        (any::<u16>(), text(), any::<u32>()).prop_map(
            |(protocol_version, server_version, max_frame_len)| {
                Reply::Hello(HelloReply {
                    protocol_version,
                    server_version,
                    max_frame_len,
                })
            }
        ),
        Just(Reply::Pong),
        session().prop_map(Reply::Session),
        option::of(session()).prop_map(Reply::MaybeSession),
        (any::<bool>(), option::of(any::<u64>())).prop_map(
            |(found, expires_at_ms)| Reply::Touched(TouchReply {
                found,
                expires_at_ms
            })
        ),
        (any::<u64>(), any::<bool>(), option::of(any::<u64>())).prop_map(
            |(version, created, expires_at_ms)| {
                Reply::Updated(UpdateReply {
                    version,
                    created,
                    expires_at_ms,
                })
            }
        ),
        (
            any::<i64>(),
            any::<bool>(),
            option::of(any::<i64>()),
            option::of(any::<u64>()),
            any::<u64>()
        )
            .prop_map(
                |(value, allowed, remaining, reset_at_ms, version)| Reply::Incr(IncrReply {
                    value,
                    allowed,
                    remaining,
                    reset_at_ms,
                    version,
                })
            ),
        any::<bool>().prop_map(Reply::Deleted),
        (vec(session(), 0..3), option::of((any::<u64>(), id()))).prop_map(|(sessions, next)| {
            Reply::Page(SessionPage {
                sessions,
                next: next.map(|(created_at_ms, id)| ListCursor { created_at_ms, id }),
            })
        }),
        any::<u64>().prop_map(Reply::Count),
        (text(), any::<[u64; 9]>(), vec((text(), any::<u64>()), 0..3)).prop_map(
            |(server_version, n, ns)| {
                Reply::Stats(StatsReply {
                    server_version,
                    uptime_ms: n[0],
                    records: n[1],
                    namespaces: ns
                        .into_iter()
                        .map(|(namespace, records)| NamespaceStats { namespace, records })
                        .collect(),
                    expired_total: n[2],
                    evicted_total: n[3],
                    ops_total: n[4],
                    connections_current: n[5],
                    connections_total: n[6],
                    memory_bytes: n[7] ^ n[8],
                })
            }
        ),
        (option::of(any::<u64>()), option::of(text())).prop_map(|(leader_id, leader_addr)| {
            Reply::NotLeader(NotLeader {
                leader_id,
                leader_addr,
            })
        }),
        (
            any::<[u64; 4]>(),
            option::of(any::<u64>()),
            vec(
                (any::<u64>(), text(), option::of(text()), any::<bool>()),
                0..4
            )
        )
            .prop_map(|(n, leader_id, members)| {
                Reply::Cluster(ClusterStatusReply {
                    node_id: n[0],
                    leader_id,
                    term: n[1],
                    commit_index: n[2],
                    applied_index: n[3],
                    members: members
                        .into_iter()
                        .map(|(node_id, addr, client_addr, voter)| ClusterMember {
                            node_id,
                            addr,
                            client_addr,
                            role: "follower".into(),
                            voter,
                            matched_index: None,
                        })
                        .collect(),
                })
            }),
        (any::<u64>(), option::of(session())).prop_map(|(staleness_ms, session)| {
            Reply::StaleSession(StaleRead {
                staleness_ms,
                session,
            })
        }),
        (varint(), varint())
            .prop_map(|(oldest, next)| Reply::Subscribed(Subscribed { oldest, next })),
        vec(event(), 0..4).prop_map(Reply::Events),
        (varint(), varint()).prop_map(|(requested, oldest)| Reply::CursorExpired(CursorExpired {
            requested,
            oldest
        })),
    ]
}

fn request() -> impl Strategy<Value = Request> {
    (any::<u64>(), op()).prop_map(|(id, op)| Request { id, op })
}

fn response() -> impl Strategy<Value = Response> {
    (any::<u64>(), reply()).prop_map(|(id, reply)| Response { id, reply })
}

proptest! {
    #[test]
    fn requests_round_trip(req in request()) {
        let mut buf = BytesMut::new();
        encode_request(&req, &mut buf).unwrap();
        let len = u32::from_be_bytes(buf[..HEADER_LEN].try_into().unwrap()) as usize;
        prop_assert_eq!(len + HEADER_LEN, buf.len());
        let (payload, used) = split_frame(&buf, ABSOLUTE_MAX_FRAME_LEN).unwrap().unwrap();
        prop_assert_eq!(used, buf.len());
        prop_assert_eq!(peek_request_id(payload), Some(req.id));
        prop_assert!(peek_request_header(payload).is_some_and(|(_, tag)| tag < Op::COUNT));
        prop_assert_eq!(decode_request(payload).unwrap(), req.clone());
        // The borrowing encoder writes the same bytes.
        let mut parts = BytesMut::new();
        encode_request_parts(req.id, &req.op, &mut parts).unwrap();
        prop_assert_eq!(&parts[..], &buf[..]);
    }

    #[test]
    fn responses_round_trip(resp in response()) {
        let mut buf = BytesMut::new();
        encode_response(&resp, &mut buf).unwrap();
        let (payload, used) = split_frame(&buf, ABSOLUTE_MAX_FRAME_LEN).unwrap().unwrap();
        prop_assert_eq!(used, buf.len());
        prop_assert_eq!(decode_response(payload).unwrap(), resp.clone());
        // The client's fast path takes every session answer, with the same
        // value, and nothing else.
        let fast = view::decode_session_response(payload);
        match &resp.reply {
            Reply::Session(_) | Reply::MaybeSession(_) => prop_assert_eq!(fast, Some(resp)),
            _ => prop_assert_eq!(fast, None),
        }
    }

    /// A session answer written from borrowed parts, its attributes spliced
    /// in already encoded, is byte for byte the answer encoded whole.
    #[test]
    fn spliced_session_answers_match_whole_ones(id in varint(), maybe in any::<bool>(), s in session()) {
        let whole = Response {
            id,
            reply: if maybe { Reply::MaybeSession(Some(s.clone())) } else { Reply::Session(s.clone()) },
        };
        let mut want = BytesMut::new();
        encode_response(&whole, &mut want).unwrap();
        let attrs = sessiond_protocol::value::encode_attrs(&s.attrs).unwrap();
        let head = view::SessionHead {
            namespace: &s.namespace,
            id: s.id,
            owner: s.owner.as_deref(),
            created_at_ms: s.created_at_ms,
            last_active_ms: s.last_active_ms,
            expires_at_ms: s.expires_at_ms,
            ttl: s.ttl,
            version: s.version,
        };
        let mut got = BytesMut::from(&b"before"[..]);
        view::encode_session_answer(id, maybe, &head, &attrs, &mut got).unwrap();
        prop_assert_eq!(&got[..6], b"before");
        prop_assert_eq!(&got[6..], &want[..]);
    }

    /// An event written field by field is byte for byte its serde encoding.
    #[test]
    fn events_written_by_hand_match_their_encoding(e in event()) {
        let mut got = Vec::new();
        view::encode_event(&mut got, e.cursor, e.at_ms, &e.namespace, e.id, e.owner.as_deref(), e.kind);
        prop_assert_eq!(got, sessiond_protocol::frame::encode_value(&e).unwrap());
    }

    /// An events answer spliced from encoded events is the answer encoded
    /// whole, and each event's namespace and kind read in place are its own.
    #[test]
    fn events_answers_splice_encoded_events(id in varint(), events in vec(event(), 0..5)) {
        let encoded: Vec<Vec<u8>> = events.iter().map(|e| sessiond_protocol::frame::encode_value(e).unwrap()).collect();
        let refs: Vec<&[u8]> = encoded.iter().map(Vec::as_slice).collect();
        let mut got = BytesMut::new();
        view::encode_events_answer(id, &refs, &mut got).unwrap();
        let mut want = BytesMut::new();
        encode_response(&Response { id, reply: Reply::Events(events.clone()) }, &mut want).unwrap();
        prop_assert_eq!(&got, &want);
        prop_assert_eq!(view::peek_events_count(&got[HEADER_LEN..]), Some(events.len() as u64));
        for (e, bytes) in events.iter().zip(&encoded) {
            let tag = match e.kind {
                EventKind::Created => 0,
                EventKind::Rotated { .. } => 1,
                EventKind::Deleted { .. } => 2,
                EventKind::Expired => 3,
                EventKind::Updated { .. } => view::EVENT_UPDATED,
                EventKind::Touched { .. } => view::EVENT_TOUCHED,
            };
            let head = view::peek_event(bytes).unwrap();
            prop_assert_eq!(
                (head.cursor, head.at_ms, head.namespace, head.kind),
                (e.cursor, e.at_ms, e.namespace.as_str(), tag)
            );
        }
    }

    /// The in-place decoder of the hot requests agrees with the general one:
    /// every `Get` and every `Create` (whose map, a `BTreeMap`, is canonical)
    /// is taken, with the same fields, and nothing else is.
    #[test]
    fn hot_requests_decode_in_place_as_the_general_decoder_does(req in request()) {
        let mut buf = BytesMut::new();
        encode_request(&req, &mut buf).unwrap();
        let payload = &buf[HEADER_LEN..];
        let hot = view::decode_hot_request(payload);
        match (&req.op, hot) {
            (Op::Get(g), Some((id, view::OpView::Get(v)))) => {
                prop_assert_eq!(id, req.id);
                prop_assert_eq!((v.namespace, v.id, v.touch), (&g.namespace[..], g.id, g.touch));
            }
            (Op::Create(c), Some((id, view::OpView::Create(v)))) => {
                prop_assert_eq!(id, req.id);
                prop_assert_eq!(v.namespace, &c.namespace[..]);
                prop_assert_eq!(v.id, c.id);
                prop_assert_eq!(v.owner, c.owner.as_deref());
                prop_assert_eq!(v.ttl, c.ttl);
                prop_assert_eq!(v.owner_limit, c.owner_limit);
                prop_assert_eq!(v.attrs, &sessiond_protocol::value::encode_attrs(&c.attrs).unwrap()[..]);
            }
            // A name the store refuses (empty) is left to the general path.
            (Op::Create(c), None) => prop_assert!(c.attrs.keys().any(|k| limits::check_attr_name(k).is_err())),
            (Op::Get(_), None) => prop_assert!(false, "a get was not taken"),
            (_, None) => {}
            (_, Some(_)) => prop_assert!(false, "another operation was taken"),
        }
    }

    /// A pipelined stream splits back into its frames in order, and every cut
    /// of it yields complete frames then "need more bytes", never an error.
    #[test]
    fn pipelined_frames_split_in_order_at_any_cut(reqs in vec(request(), 1..6), cut_seed in any::<usize>()) {
        let mut stream = BytesMut::new();
        for r in &reqs {
            encode_request(r, &mut stream).unwrap();
        }
        let cut = cut_seed % (stream.len() + 1);
        let mut rest = &stream[..cut];
        let mut decoded = Vec::new();
        while let Some((payload, used)) = split_frame(rest, ABSOLUTE_MAX_FRAME_LEN).unwrap() {
            decoded.push(decode_request(payload).unwrap());
            rest = &rest[used..];
        }
        prop_assert!(decoded.len() <= reqs.len());
        prop_assert_eq!(&decoded[..], &reqs[..decoded.len()]);
        if cut == stream.len() {
            prop_assert_eq!(decoded.len(), reqs.len());
        }
    }

    /// Arbitrary bytes: every function returns a value or a typed error.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..256), max in 1u32..=DEFAULT_MAX_FRAME_LEN) {
        let _ = split_frame(&bytes, max);
        let _ = decode_request(&bytes);
        let _ = decode_response(&bytes);
        let _ = peek_request_id(&bytes);
        let _ = peek_request_header(&bytes);
        let _ = view::decode_hot_request(&bytes);
    }

    /// Valid frames with bytes flipped, cut or appended decode or fail cleanly.
    #[test]
    fn mutated_frames_fail_cleanly(req in request(), flips in vec((any::<usize>(), any::<u8>()), 1..4), cut in any::<usize>(), extra in vec(any::<u8>(), 0..8)) {
        let mut buf = BytesMut::new();
        encode_request(&req, &mut buf).unwrap();
        let mut payload = buf[HEADER_LEN..].to_vec();
        for (at, b) in flips {
            let i = at % payload.len();
            payload[i] ^= b;
        }
        let _ = decode_request(&payload);
        let _ = decode_response(&payload);
        let _ = decode_request(&payload[..cut % (payload.len() + 1)]);
        // The in-place decoder takes only what the general one takes, with
        // the same meaning (the fuzz harness's invariants).
        let mut framed = u32::try_from(payload.len()).unwrap().to_be_bytes().to_vec();
        framed.extend_from_slice(&payload);
        harness::check(&framed);
        payload.extend_from_slice(&extra);
        if !extra.is_empty() {
            // The original message followed by junk is refused, not half-read.
            let mut clean = buf[HEADER_LEN..].to_vec();
            clean.extend_from_slice(&extra);
            prop_assert!(decode_request(&clean).is_err());
        }
    }

    /// A header over the maximum (or zero) is refused from its four bytes
    /// alone, whatever follows.
    #[test]
    fn oversized_headers_are_refused_before_the_body(len in any::<u32>(), max in 1u32..=ABSOLUTE_MAX_FRAME_LEN, body in vec(any::<u8>(), 0..16)) {
        let mut bytes = len.to_be_bytes().to_vec();
        bytes.extend_from_slice(&body);
        let r = split_frame(&bytes, max);
        if len == 0 || len > max {
            let refused = matches!(r, Err(FrameError::TooLarge { len: l, max: m }) if l == u64::from(len) && m == max);
            prop_assert!(refused);
        } else {
            prop_assert!(r.is_ok());
        }
    }
}

#[test]
fn a_four_gib_header_is_refused() {
    let r = split_frame(&[0xFF, 0xFF, 0xFF, 0xFF], DEFAULT_MAX_FRAME_LEN);
    assert_eq!(
        r,
        Err(FrameError::TooLarge {
            len: u64::from(u32::MAX),
            max: DEFAULT_MAX_FRAME_LEN
        })
    );
}

#[test]
fn an_encoded_message_over_the_absolute_maximum_is_refused() {
    let mut attrs = Attrs::new();
    attrs.insert(
        "big".into(),
        Value::Bytes(vec![0; ABSOLUTE_MAX_FRAME_LEN as usize + 1]),
    );
    let req = Request {
        id: 1,
        op: Op::Update(Update {
            namespace: "a".into(),
            id: SessionId([0; 16]),
            set: attrs,
            remove: vec![],
            expected_version: None,
            ttl: None,
            upsert: None,
        }),
    };
    let mut buf = BytesMut::new();
    let err = encode_request(&req, &mut buf).unwrap_err();
    assert!(
        matches!(
            err,
            EncodeError::TooLarge { .. } | EncodeError::Codec { .. }
        ),
        "{err}"
    );
    assert!(buf.is_empty(), "nothing is left in the buffer");
}
