//! Replays a fuzz corpus through a property check in `cargo test` (stable Rust). Included with
//! `#[path]` by crates/protocol/tests/fuzz_corpus.rs and crates/config/tests/fuzz_corpus.rs.

use std::path::{Path, PathBuf};

fn corpus(target: &str) -> PathBuf {
    // Both replay tests live two levels below the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

/// Runs `check` on every file of a corpus; fails if any check panics or fewer than `min` files
/// were read (a missing or emptied corpus must not pass silently).
pub fn replay(target: &str, min: usize, check: fn(&[u8])) {
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
