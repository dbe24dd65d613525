//! The config property check shared by fuzz/fuzz_targets/config_toml.rs and
//! crates/config/tests/fuzz_corpus.rs (both include this file with `#[path]`).

use std::path::Path;

use micromcp_config::Config;

pub fn check_config_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
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
}
