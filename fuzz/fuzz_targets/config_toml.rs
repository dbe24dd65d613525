//! Config text: `Config::from_toml`. Operator-supplied, but it must never panic.
//! Properties: fuzz/checks/config.rs (replayed by crates/config/tests/fuzz_corpus.rs).
#![no_main]

#[path = "../checks/config.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check_config_toml(data));
