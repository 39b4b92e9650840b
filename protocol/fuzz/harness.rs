//! The frame decoder's fuzz harness, shared by the cargo-fuzz target and the
//! stable test that replays the corpus (`protocol/tests/fuzz_corpus.rs`).
//!
//! It reads the input as a server reads a stream: frame after frame until the
//! bytes run out or a header is refused. Every complete payload goes through
//! every decoder. Invariants: nothing panics, a payload that decodes
//! re-encodes to bytes that decode and re-encode to the same bytes, and the
//! in-place decoder of the hot requests takes only what the general decoder
//! takes, with the same meaning.

use bytes::BytesMut;
use sessiond_protocol::frame::{
    decode_request, decode_response, encode_request, encode_response, peek_request_header,
    peek_request_id, split_frame, ABSOLUTE_MAX_FRAME_LEN, DEFAULT_MAX_FRAME_LEN,
};
use sessiond_protocol::view::{decode_hot_request, OpView};
use sessiond_protocol::Op;

/// Runs one input through the decoders; panics if an invariant breaks.
pub fn check(data: &[u8]) {
    let mut rest = data;
    while let Ok(Some((payload, used))) = split_frame(rest, DEFAULT_MAX_FRAME_LEN) {
        let _ = peek_request_id(payload);
        let _ = peek_request_header(payload);
        if let Some((id, view)) = decode_hot_request(payload) {
            let req = decode_request(payload).expect("the general decoder takes a hot request");
            assert_eq!(req.id, id);
            assert_same_op(&req.op, &view);
        }
        if let Ok(req) = decode_request(payload) {
            assert_stable(&req, encode_request, decode_request);
        }
        if let Some(fast) = sessiond_protocol::view::decode_session_response(payload) {
            // The client's fast path takes only what the general decoder
            // takes, with the same meaning (compared re-encoded: NaN).
            let general =
                decode_response(payload).expect("the general decoder takes a session answer");
            let mut a = BytesMut::new();
            let mut b = BytesMut::new();
            encode_response(&fast, &mut a).expect("encodes");
            encode_response(&general, &mut b).expect("encodes");
            assert_eq!(a, b);
        }
        if let Ok(resp) = decode_response(payload) {
            assert_stable(&resp, encode_response, decode_response);
        }
        rest = &rest[used..];
    }
}

/// A decoded message re-encodes, and those bytes decode and re-encode to
/// themselves.
fn assert_stable<T, EE: std::fmt::Debug, DE: std::fmt::Debug>(
    msg: &T,
    encode: fn(&T, &mut BytesMut) -> Result<(), EE>,
    decode: fn(&[u8]) -> Result<T, DE>,
) {
    let mut once = BytesMut::new();
    encode(msg, &mut once).expect("a decoded message re-encodes");
    let (payload, _) = split_frame(&once, ABSOLUTE_MAX_FRAME_LEN)
        .expect("own frame header is valid")
        .expect("own frame is complete");
    let again = decode(payload).expect("a re-encoded message decodes");
    let mut twice = BytesMut::new();
    encode(&again, &mut twice).expect("re-encodes again");
    assert_eq!(once, twice, "encoding is not stable");
}

/// The in-place view says what the decoded operation says.
pub fn assert_same_op(op: &Op, view: &OpView<'_>) {
    match (op, view) {
        (Op::Get(g), OpView::Get(v)) => {
            assert_eq!(
                (&g.namespace[..], g.id, g.touch),
                (v.namespace, v.id, v.touch)
            );
        }
        (Op::Create(c), OpView::Create(v)) => {
            assert_eq!(&c.namespace[..], v.namespace);
            assert_eq!(c.id, v.id);
            assert_eq!(c.owner.as_deref(), v.owner);
            assert_eq!(c.ttl, v.ttl);
            assert_eq!(c.owner_limit, v.owner_limit);
            // Compared re-encoded: a NaN is not equal to itself.
            let decoded = sessiond_protocol::value::decode_attrs(v.attrs).expect("attrs decode");
            let encode = sessiond_protocol::value::encode_attrs;
            assert_eq!(encode(&decoded).ok(), encode(&c.attrs).ok());
        }
        _ => panic!("the in-place view is another operation"),
    }
}
