//! Public names from clients: `Namer::split_name` / `split_uri`.
//! Properties: fuzz/checks/protocol.rs (replayed by crates/protocol/tests/fuzz_corpus.rs).
#![no_main]

#[path = "../checks/protocol.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check_public_names(data));
