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
            let mut once = BytesMut::new();
            encode_request(&req, &mut once).expect("a decoded request re-encodes");
            let (p, _) = split_frame(&once, ABSOLUTE_MAX_FRAME_LEN)
                .expect("own frame header is valid")
                .expect("own frame is complete");
            let again = decode_request(p).expect("a re-encoded request decodes");
            let mut twice = BytesMut::new();
            encode_request(&again, &mut twice).expect("re-encodes again");
            assert_eq!(once, twice, "request encoding is not stable");
        }
        if let Ok(resp) = decode_response(payload) {
            let mut once = BytesMut::new();
            encode_response(&resp, &mut once).expect("a decoded response re-encodes");
            let (p, _) = split_frame(&once, ABSOLUTE_MAX_FRAME_LEN)
                .expect("own frame header is valid")
                .expect("own frame is complete");
            let again = decode_response(p).expect("a re-encoded response decodes");
            let mut twice = BytesMut::new();
            encode_response(&again, &mut twice).expect("re-encodes again");
            assert_eq!(once, twice, "response encoding is not stable");
        }
        rest = &rest[used..];
    }
}
