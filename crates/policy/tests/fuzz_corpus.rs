//! Replays the cargo-fuzz corpus of argument typing (fuzz/corpus/policy_arguments) through the
//! same checks as fuzz/fuzz_targets/policy_arguments.rs (fuzz/checks/policy.rs, shared by
//! both), so `cargo test` on stable keeps every input the fuzzer found interesting.

#[path = "../../../fuzz/checks/policy.rs"]
mod checks;

#[path = "../../../fuzz/checks/replay.rs"]
mod replay;

#[test]
fn policy_arguments_corpus() {
    replay::replay("policy_arguments", 10, checks::check_policy_arguments);
}
