//! Replays the cargo-fuzz corpora of the protocol parsers (fuzz/corpus/…) through the same
//! property checks as the fuzz targets (fuzz/checks/protocol.rs, shared by both), so
//! `cargo test` on stable keeps every input the fuzzer found interesting.

#[path = "../../../fuzz/checks/protocol.rs"]
mod checks;

#[path = "../../../fuzz/checks/replay.rs"]
mod replay;

use replay::replay;

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
