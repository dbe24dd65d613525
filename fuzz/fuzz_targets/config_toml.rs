//! Config text: `Config::from_toml`. Operator-supplied, but it must never panic.
//!
//! Properties (mirrored in crates/config/tests/fuzz_corpus.rs): no panic; a refused config lists
//! at least one error, each with a message; an accepted one keeps the bounds other crates rely on.
//! The base dir does not exist, so relative `file:` references fail without touching the disk.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use micromcp_config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Config::from_toml(text, Path::new("/nonexistent-micromcp-fuzz")) {
        Ok(config) => {
            assert!((4..=128).contains(&config.listen.max_json_depth));
            assert!((1..=4).contains(&config.gateway.separator.len()));
        }
        Err(errors) => {
            assert!(!errors.is_empty(), "refused without an error");
            for e in &errors {
                assert!(!e.message.is_empty(), "empty message at {:?}", e.path);
                let _ = e.to_string();
            }
        }
    }
});
