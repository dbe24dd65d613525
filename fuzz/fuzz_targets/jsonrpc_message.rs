//! Every client and upstream message: `strict::parse` then `Message::from_value`.
//! Properties: fuzz/checks/protocol.rs (replayed by crates/protocol/tests/fuzz_corpus.rs).
#![no_main]

#[path = "../checks/protocol.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check_jsonrpc_message(data));
