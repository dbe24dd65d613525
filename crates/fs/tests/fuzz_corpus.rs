//! Replays the cargo-fuzz corpus of the `fs` service's guards (fuzz/corpus/fs_input) through
//! the same property checks as the fuzz target (fuzz/checks/fs.rs), on stable Rust.

#[path = "../../../fuzz/checks/fs.rs"]
mod checks;

#[path = "../../../fuzz/checks/replay.rs"]
mod replay;

#[test]
fn fs_input_corpus() {
    replay::replay("fs_input", 20, checks::check_fs_input);
}
