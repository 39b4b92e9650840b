//! Frame codec micro-benchmarks: encode and decode of the two frames on the
//! hottest path, a `Get` request and the session it returns (256-byte
//! attribute), as the connection task does them: append to a reused buffer,
//! and split + decode from a buffer holding one frame.

// A benchmark's setup either works or the run is meaningless: fail loudly.
#![allow(clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sessiond_protocol::frame::{self, DEFAULT_MAX_FRAME_LEN};
use sessiond_protocol::{Attrs, Get, Op, Reply, Request, Response, Session, SessionId, Ttl, Value};

/// Attribute bytes of the benchmarked session (the design's reference size).
const VALUE_SIZE: usize = 256;

fn get_request() -> Request {
    Request {
        id: 42,
        op: Op::Get(Get {
            namespace: "bench".into(),
            id: SessionId::new_v4(),
            touch: true,
        }),
    }
}

fn session_reply() -> Response {
    let mut attrs = Attrs::new();
    attrs.insert("data".into(), Value::Str("x".repeat(VALUE_SIZE)));
    Response {
        id: 42,
        reply: Reply::MaybeSession(Some(Session {
            namespace: "bench".into(),
            id: SessionId::new_v4(),
            owner: Some("user1234".into()),
            created_at_ms: 1_760_000_000_000,
            last_active_ms: 1_760_000_100_000,
            expires_at_ms: Some(1_760_003_700_000),
            ttl: Ttl {
                idle_ttl_ms: Some(3_600_000),
                max_lifetime_ms: None,
            },
            version: 3,
            attrs,
        })),
    }
}

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec");

    let req = get_request();
    let mut req_frame = BytesMut::new();
    frame::encode_request(&req, &mut req_frame).expect("encode a Get request");
    g.throughput(Throughput::Bytes(req_frame.len() as u64));
    let mut buf = BytesMut::with_capacity(4096);
    g.bench_function("encode_get_request", |b| {
        b.iter(|| {
            buf.clear();
            frame::encode_request(black_box(&req), &mut buf).expect("encode");
            black_box(buf.len())
        });
    });
    g.bench_function("decode_get_request", |b| {
        b.iter(|| {
            let (payload, _) = frame::split_frame(black_box(&req_frame), DEFAULT_MAX_FRAME_LEN)
                .expect("valid frame")
                .expect("complete frame");
            black_box(frame::decode_request(payload).expect("decode"))
        });
    });

    let resp = session_reply();
    let mut resp_frame = BytesMut::new();
    frame::encode_response(&resp, &mut resp_frame).expect("encode a Session reply");
    g.throughput(Throughput::Bytes(resp_frame.len() as u64));
    g.bench_function("encode_session_reply_256b", |b| {
        b.iter(|| {
            buf.clear();
            frame::encode_response(black_box(&resp), &mut buf).expect("encode");
            black_box(buf.len())
        });
    });
    g.bench_function("decode_session_reply_256b", |b| {
        b.iter(|| {
            let (payload, _) = frame::split_frame(black_box(&resp_frame), DEFAULT_MAX_FRAME_LEN)
                .expect("valid frame")
                .expect("complete frame");
            black_box(frame::decode_response(payload).expect("decode"))
        });
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    targets = codec
}
criterion_main!(benches);
