//! Header values from clients: `decode_value` / `encode_value`.
//! Properties: fuzz/checks/protocol.rs (replayed by crates/protocol/tests/fuzz_corpus.rs).
#![no_main]

#[path = "../checks/protocol.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check_header_value(data));
