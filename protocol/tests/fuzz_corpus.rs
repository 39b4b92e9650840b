//! Replays the fuzz corpus (and any crash artifacts) through the fuzz harness
//! on stable Rust, so every input the fuzzer was seeded with or found stays
//! covered by `cargo test`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../fuzz/harness.rs"]
mod harness;

use std::path::{Path, PathBuf};

use bytes::BytesMut;
use sessiond_protocol::frame::{encode_request, encode_response};
use sessiond_protocol::*;

fn dir(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(sub)
        .join("decode_frame")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

#[test]
fn corpus_replays_without_panics() {
    let corpus = files(&dir("corpus"));
    assert!(
        corpus.len() >= 20,
        "the seed corpus is missing ({} files)",
        corpus.len()
    );
    for path in corpus.iter().chain(files(&dir("artifacts")).iter()) {
        let data = std::fs::read(path).unwrap();
        harness::check(&data);
    }
}

/// The seed corpus: a valid frame of every operation and reply, and hand-made
/// bad ones. Regenerate with `cargo test -p sessiond-protocol --test
/// fuzz_corpus -- --ignored`.
fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let id = SessionId([7; 16]);
    let mut attrs = Attrs::new();
    attrs.insert("s".into(), Value::Str("x".into()));
    attrs.insert("i".into(), Value::Int(-3));
    attrs.insert("f".into(), Value::Float(1.5));
    attrs.insert("b".into(), Value::Bytes(vec![1, 2]));
    attrs.insert("n".into(), Value::Null);
    attrs.insert("t".into(), Value::Bool(true));
    attrs.insert(
        "c".into(),
        Value::Counter {
            value: 2,
            reset_at_ms: 99,
        },
    );
    let ttl = Ttl {
        idle_ttl_ms: Some(1000),
        max_lifetime_ms: Some(5000),
    };
    let session = Session {
        namespace: "app".into(),
        id,
        owner: Some("alice".into()),
        created_at_ms: 1,
        last_active_ms: 2,
        expires_at_ms: Some(3),
        ttl,
        version: 4,
        attrs: attrs.clone(),
    };
    let ops: Vec<(&str, Op)> = vec![
        (
            "req-hello",
            Op::Hello(Hello {
                protocol_version: 1,
                auth_token: Some(AuthToken("t".into())),
                client_name: Some("c".into()),
            }),
        ),
        ("req-ping", Op::Ping),
        (
            "req-create",
            Op::Create(Create {
                namespace: "app".into(),
                id: Some(id),
                owner: Some("alice".into()),
                ttl,
                attrs: attrs.clone(),
                owner_limit: Some(OwnerLimit {
                    max_sessions: 3,
                    policy: LimitPolicy::EvictOldest,
                }),
            }),
        ),
        (
            "req-get",
            Op::Get(Get {
                namespace: "app".into(),
                id,
                touch: true,
            }),
        ),
        (
            "req-touch",
            Op::Touch(Touch {
                namespace: "app".into(),
                id,
            }),
        ),
        (
            "req-update",
            Op::Update(Update {
                namespace: "app".into(),
                id,
                set: attrs.clone(),
                remove: vec!["x".into()],
                expected_version: Some(2),
                ttl: Some(ttl),
                upsert: Some(Upsert { owner: None }),
            }),
        ),
        (
            "req-incr",
            Op::Incr(Incr {
                namespace: "app".into(),
                id,
                attr: "n".into(),
                delta: -1,
                window: Some(RateWindow {
                    window_ms: 1000,
                    limit: 5,
                }),
            }),
        ),
        (
            "req-delete",
            Op::Delete(Delete {
                namespace: "app".into(),
                id,
            }),
        ),
        (
            "req-list",
            Op::ListByOwner(ListByOwner {
                namespace: "app".into(),
                owner: "alice".into(),
                after: Some(ListCursor {
                    created_at_ms: 5,
                    id,
                }),
                limit: 10,
            }),
        ),
        (
            "req-delete-by-owner",
            Op::DeleteByOwner(DeleteByOwner {
                namespace: "app".into(),
                owner: "alice".into(),
                except: Some(id),
            }),
        ),
        (
            "req-rotate",
            Op::Rotate(Rotate {
                namespace: "app".into(),
                id,
                grace_ms: Some(100),
            }),
        ),
        ("req-stats", Op::Stats),
    ];
    let replies: Vec<(&str, Reply)> = vec![
        (
            "resp-error",
            Reply::Error(WireError::new(ErrorCode::Conflict, "moved")),
        ),
        (
            "resp-hello",
            Reply::Hello(HelloReply {
                protocol_version: 1,
                server_version: "0.1.0".into(),
                max_frame_len: 1 << 20,
            }),
        ),
        ("resp-session", Reply::Session(session.clone())),
        ("resp-maybe", Reply::MaybeSession(None)),
        (
            "resp-page",
            Reply::Page(SessionPage {
                sessions: vec![session],
                next: Some(ListCursor {
                    created_at_ms: 1,
                    id,
                }),
            }),
        ),
        (
            "resp-incr",
            Reply::Incr(IncrReply {
                value: 1,
                allowed: false,
                remaining: Some(0),
                reset_at_ms: Some(9),
                version: 3,
            }),
        ),
    ];
    let mut out = Vec::new();
    let mut all = BytesMut::new();
    for (i, (name, op)) in ops.into_iter().enumerate() {
        let mut buf = BytesMut::new();
        encode_request(
            &Request {
                id: i as u64 + 300,
                op,
            },
            &mut buf,
        )
        .unwrap();
        all.extend_from_slice(&buf);
        out.push((name, buf.to_vec()));
    }
    out.push(("req-pipelined-all", all.to_vec()));
    for (name, reply) in replies {
        let mut buf = BytesMut::new();
        encode_response(&Response { id: 9, reply }, &mut buf).unwrap();
        out.push((name, buf.to_vec()));
    }
    out.push(("bad-empty", vec![]));
    out.push(("bad-zero-len", vec![0, 0, 0, 0]));
    out.push(("bad-len-4gib", vec![0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3]));
    out.push(("bad-truncated", vec![0, 0, 0, 9, 7, 3, 3, b'a']));
    out.push(("bad-trailing", vec![0, 0, 0, 3, 7, 1, 0]));
    out.push(("bad-unknown-op", vec![0, 0, 0, 4, 77, 200, 1, 2]));
    out.push((
        "bad-huge-string-len",
        vec![0, 0, 0, 8, 1, 3, 253, 0xFF, 0xFF, 0xFF, 0xFF, 0],
    ));
    out.push(("bad-text", b"GET / HTTP/1.1\r\n\r\n".to_vec()));
    out
}

#[test]
fn seeds_match_the_committed_corpus() {
    for (name, bytes) in seeds() {
        let path = dir("corpus").join(name);
        let committed = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (regenerate the corpus)", path.display()));
        assert_eq!(
            committed, bytes,
            "{name} differs from what the codec now produces"
        );
    }
}

#[test]
#[ignore = "writes the seed corpus; run by hand after a protocol change"]
fn regenerate_corpus() {
    let d = dir("corpus");
    std::fs::create_dir_all(&d).unwrap();
    for (name, bytes) in seeds() {
        std::fs::write(d.join(name), bytes).unwrap();
    }
}
