//! Untrusted input of the `vector` service's guards and parsers.
//! Properties: fuzz/checks/vector.rs (replayed by crates/vector/tests/fuzz_corpus.rs).
#![no_main]

#[path = "../checks/vector.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check_vector_input(data));
