//! Replays the cargo-fuzz corpus of stdio service output (fuzz/corpus/upstream_output) through
//! the same checks as fuzz/fuzz_targets/upstream_output.rs (fuzz/checks/upstream.rs, shared by
//! both), so `cargo test` on stable keeps every input the fuzzer found interesting.

#[path = "../../../fuzz/checks/upstream.rs"]
mod checks;

#[path = "../../../fuzz/checks/replay.rs"]
mod replay;

#[test]
fn upstream_output_corpus() {
    replay::replay("upstream_output", 10, checks::check_upstream_output);
}
