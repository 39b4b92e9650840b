//! cargo-fuzz target: arbitrary bytes through the frame splitter and decoders.
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::check(data));
