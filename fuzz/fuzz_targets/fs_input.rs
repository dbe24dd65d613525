//! Untrusted input of the `fs` service's guards and parsers.
//! Properties: fuzz/checks/fs.rs (replayed by crates/fs/tests/fuzz_corpus.rs).
#![no_main]

#[path = "../checks/fs.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check_fs_input(data));
