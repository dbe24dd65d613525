//! Output of stdio services: the bounded line splitter of child stdout/stderr and the escaping
//! of logged upstream text. Properties: fuzz/checks/upstream.rs (replayed by
//! crates/upstream/tests/fuzz_corpus.rs).
#![no_main]

#[path = "../checks/upstream.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check_upstream_output(data));
