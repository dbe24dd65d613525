//! A tool's inputSchema (untrusted, from the service) mapped to Cedar types, and a call's
//! arguments (untrusted, from the client) converted to them.
//! Properties: fuzz/checks/policy.rs (replayed by crates/policy/tests/fuzz_corpus.rs).
#![no_main]

#[path = "../checks/policy.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check_policy_arguments(data));
