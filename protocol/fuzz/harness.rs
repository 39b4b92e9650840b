//! The frame decoder's fuzz harness, shared by the cargo-fuzz target and the
//! stable test that replays the corpus (`protocol/tests/fuzz_corpus.rs`).
//!
//! It reads the input as a server reads a stream: frame after frame until the
//! bytes run out or a header is refused. Every complete payload goes through
//! every decoder. Invariants: nothing panics, and a payload that decodes
//! re-encodes to bytes that decode and re-encode to the same bytes.

use bytes::BytesMut;
use sessiond_protocol::frame::{
    decode_request, decode_response, encode_request, encode_response, peek_request_header,
    peek_request_id, split_frame, ABSOLUTE_MAX_FRAME_LEN, DEFAULT_MAX_FRAME_LEN,
};

/// Runs one input through the decoders; panics if an invariant breaks.
pub fn check(data: &[u8]) {
    let mut rest = data;
    while let Ok(Some((payload, used))) = split_frame(rest, DEFAULT_MAX_FRAME_LEN) {
        let _ = peek_request_id(payload);
        let _ = peek_request_header(payload);
        if let Ok(req) = decode_request(payload) {
            assert_stable(&req, encode_request, decode_request);
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
