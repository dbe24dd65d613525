//! Replays the cargo-fuzz corpus of the `fetch` service's guards (fuzz/corpus/fetch_url) through
//! the same property checks as the fuzz target (fuzz/checks/fetch.rs), on stable Rust.

#[path = "../../../fuzz/checks/fetch.rs"]
mod checks;

#[path = "../../../fuzz/checks/replay.rs"]
mod replay;

#[test]
fn fetch_url_corpus() {
    replay::replay("fetch_url", 20, checks::check_fetch_input);
}
