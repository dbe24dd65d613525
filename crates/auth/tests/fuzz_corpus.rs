//! Replays the cargo-fuzz corpus of client certificates (fuzz/corpus/client_certificate) through
//! the same checks as fuzz/fuzz_targets/client_certificate.rs (fuzz/checks/certificate.rs,
//! shared by both), so `cargo test` on stable keeps every input the fuzzer found interesting.

#[path = "../../../fuzz/checks/certificate.rs"]
mod checks;

#[path = "../../../fuzz/checks/replay.rs"]
mod replay;

#[test]
fn client_certificate_corpus() {
    replay::replay("client_certificate", 10, checks::check_client_certificate);
}
