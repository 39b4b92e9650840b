//! cargo-fuzz target: arbitrary bytes as a data dir's files, through start-up
//! recovery (plain and with repair) and `check-log`.
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::check(data));
