//! Replays the cargo-fuzz corpus of the config parser (fuzz/corpus/config_toml) through the same
//! checks as fuzz/fuzz_targets/config_toml.rs, so `cargo test` on stable keeps every input the
//! fuzzer found interesting. The check lives in fuzz/checks/config.rs, shared by both.

#[path = "../../../fuzz/checks/config.rs"]
mod checks;

use std::path::{Path, PathBuf};

#[test]
fn config_toml_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/config_toml");
    let entries =
        std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("directory entry").path())
        .filter(|p| {
            p.is_file()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    let mut failures = Vec::new();
    for file in &files {
        let data =
            std::fs::read(file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        if std::panic::catch_unwind(|| checks::check_config_toml(&data)).is_err() {
            failures.push(file.display().to_string());
        }
    }
    assert!(
        failures.is_empty(),
        "config_toml: property violated by {failures:#?}"
    );
    assert!(
        files.len() >= 10,
        "config_toml: only {} corpus files in {}, expected at least 10",
        files.len(),
        dir.display()
    );
}
