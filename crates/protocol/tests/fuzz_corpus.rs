//! Replays the cargo-fuzz corpora of the protocol parsers (fuzz/corpus/…) through the same
//! property checks as the fuzz targets (fuzz/checks/protocol.rs, shared by both), so
//! `cargo test` on stable keeps every input the fuzzer found interesting.

#[path = "../../../fuzz/checks/protocol.rs"]
mod checks;

use std::path::{Path, PathBuf};

fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

/// Runs `check` on every file of a corpus; fails if any check panics or fewer than `min` files
/// were read (a missing or emptied corpus must not pass silently).
fn replay(target: &str, min: usize, check: fn(&[u8])) {
    let dir = corpus(target);
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
        if std::panic::catch_unwind(|| check(&data)).is_err() {
            failures.push(file.display().to_string());
        }
    }
    assert!(
        failures.is_empty(),
        "{target}: property violated by {failures:#?}"
    );
    assert!(
        files.len() >= min,
        "{target}: only {} corpus files in {}, expected at least {min}",
        files.len(),
        dir.display()
    );
}

#[test]
fn jsonrpc_message_corpus() {
    replay("jsonrpc_message", 30, checks::check_jsonrpc_message);
}

#[test]
fn header_value_corpus() {
    replay("header_value", 15, checks::check_header_value);
}

#[test]
fn public_names_corpus() {
    replay("public_names", 15, checks::check_public_names);
}
