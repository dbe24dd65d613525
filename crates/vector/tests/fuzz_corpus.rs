//! Replays the cargo-fuzz corpus of the `vector` service's guards (fuzz/corpus/vector_input) through
//! the same property checks as the fuzz target (fuzz/checks/vector.rs), on stable Rust.

#[path = "../../../fuzz/checks/vector.rs"]
mod checks;

#[path = "../../../fuzz/checks/replay.rs"]
mod replay;

#[test]
fn vector_input_corpus() {
    replay::replay("vector_input", 20, checks::check_vector_input);
}
