//! Replays the cargo-fuzz corpus of the config parser (fuzz/corpus/config_toml) through the same
//! checks as fuzz/fuzz_targets/config_toml.rs, so `cargo test` on stable keeps every input the
//! fuzzer found interesting. The check lives in fuzz/checks/config.rs, shared by both.

#[path = "../../../fuzz/checks/config.rs"]
mod checks;

#[path = "../../../fuzz/checks/replay.rs"]
mod replay;

#[test]
fn config_toml_corpus() {
    replay::replay("config_toml", 10, checks::check_config_toml);
}
