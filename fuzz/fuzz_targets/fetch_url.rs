//! Untrusted input of the `fetch` service's guards and parsers.
//! Properties: fuzz/checks/fetch.rs (replayed by crates/fetch/tests/fuzz_corpus.rs).
#![no_main]

#[path = "../checks/fetch.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check_fetch_input(data));
