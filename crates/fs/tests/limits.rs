//! Cost bounds of the fs service: hostile regexes are refused, walking operations stop at
//! the `--op-timeout` deadline or the `--search-max-total-bytes` budget with partial results,
//! and a cancelled request (or a closed session) stops its work and frees its slot.
//!
//! No test asserts timings: slow work is made slow by size, and what is asserted is how it
//! stopped (`stopped`, counters, a freed slot).

#![allow(clippy::unwrap_used)]

mod common;

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use common::{arg, put, serve, serve_state, state};
use micromcp_fs::ops::State;
use serde_json::{Value, json};

/// A regex that is slow on long lowercase lines (yet within every bound) and matches a line
/// of 900 letters followed by `\x01`.
const SLOW_REGEX: &str = r"(?-u)[a-z](.{100}){8}[\x01-\x08]";
/// How many names the slow tree has.
const SLOW_FILES: usize = 2000;

/// `SLOW_FILES` names for one 1 MiB text file (hard links: cheap to make; served with
/// `--allow-hard-links`). Line 1 matches [`SLOW_REGEX`]; the other 1 KiB lines do not, and
/// are slow to search.
fn slow_tree(dir: &Path) {
    let mut text = format!("{}\u{1}\n", "a".repeat(900));
    let filler = format!("{}\n", "abcdefghijklmnopqrstuvwxyz".repeat(40));
    while text.len() < 1024 * 1024 {
        text.push_str(&filler);
    }
    put(dir, "f0000.txt", &text);
    for i in 1..SLOW_FILES {
        std::fs::hard_link(dir.join("f0000.txt"), dir.join(format!("f{i:04}.txt")))
            .expect("hard link");
    }
}

fn slow_flags<'a>(root: &'a str, timeout: &'a str, ops: &'a str) -> Vec<&'a str> {
    vec![
        "--root",
        root,
        "--allow-hard-links",
        "--op-timeout",
        timeout,
        "--max-concurrent-ops",
        ops,
        "--search-max-matches",
        "100000",
        "--search-max-total-bytes",
        "100000000000",
    ]
}

fn slow_search(id: u64) -> Value {
    json!({
        "jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": "search_files", "arguments": {"query": SLOW_REGEX, "regex": true}}
    })
}

/// Waits until `state` has started searching files; panics after 60 s.
async fn wait_until_searching(state: &State) {
    let give_up = Instant::now() + Duration::from_secs(60);
    while state.files_searched_total() == 0 {
        assert!(Instant::now() < give_up, "the search never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the files-searched counter stays still for half a second; returns it.
async fn settled_count(state: &State) -> u64 {
    let give_up = Instant::now() + Duration::from_secs(60);
    loop {
        let before = state.files_searched_total();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = state.files_searched_total();
        if before == after {
            return after;
        }
        assert!(Instant::now() < give_up, "the search never stopped");
    }
}

#[tokio::test]
async fn catastrophic_counted_repetition_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The reported reproduction: one 1 MiB line, `[^\x01]{5000}` (34 s before the fix).
    put(dir.path(), "one-line.txt", &"a".repeat(1024 * 1024));
    let mut client = serve(&["--root", &arg(dir.path())]).await;
    let error = client
        .tool_err(
            "search_files",
            json!({"query": r"(?-u)[a-z][^\x01]{5000}[\x01-\x08]", "regex": true}),
        )
        .await;
    assert!(
        error.starts_with("search_files: invalid regex")
            && error.contains("\"{5000}\"")
            && error.contains("at most 100"),
        "{error}"
    );
    for query in [
        "a{101}",
        "a{5,101}",
        "a{101,}",
        "(?x) a { 200 }",
        "(ab){1000}?",
    ] {
        let error = client
            .tool_err("search_files", json!({"query": query, "regex": true}))
            .await;
        assert!(error.contains("at most 100"), "{query}: {error}");
    }
    // At the bound, and as literal text, the same braces are fine.
    for (query, regex) in [("a{100}", true), ("a{5000}", false)] {
        let out = client
            .tool_ok("search_files", json!({"query": query, "regex": regex}))
            .await;
        assert_eq!(out["files_scanned"], 1, "{query}: {out}");
    }
}

#[tokio::test]
async fn nested_repetitions_within_the_bound_hit_the_compiled_size_cap() {
    let dir = tempfile::tempdir().expect("tempdir");
    put(dir.path(), "a.txt", "abc\n");
    let mut client = serve(&["--root", &arg(dir.path())]).await;
    let error = client
        .tool_err(
            "search_files",
            json!({"query": r"(?-u)(([^\x01]{100}){100}){100}", "regex": true}),
        )
        .await;
    assert!(
        error.contains("invalid regex") && error.contains("64 KiB size limit"),
        "{error}"
    );
}

#[tokio::test]
async fn search_stops_at_the_deadline_with_partial_results() {
    let dir = tempfile::tempdir().expect("tempdir");
    slow_tree(dir.path());
    let root = arg(dir.path());
    let mut client = serve(&slow_flags(&root, "1", "4")).await;
    let out = client
        .tool_ok("search_files", json!({"query": SLOW_REGEX, "regex": true}))
        .await;
    assert_eq!(out["stopped"], "deadline", "{out}");
    assert_eq!(out["truncated"], true);
    let scanned = out["files_scanned"].as_u64().expect("files_scanned");
    assert!(scanned < SLOW_FILES as u64, "{scanned}");
    // Partial results: line 1 of every file searched before the deadline matched.
    let matches = out["matches"].as_array().expect("matches");
    assert!(!matches.is_empty());
    assert!(
        matches.len() as u64 + 1 >= scanned,
        "{} of {scanned}",
        matches.len()
    );
    assert!(matches.iter().all(|m| m["line"] == 1));
}

#[tokio::test]
async fn search_stops_at_the_byte_budget_with_partial_results() {
    let dir = tempfile::tempdir().expect("tempdir");
    for i in 0..10 {
        put(
            dir.path(),
            &format!("f{i}.txt"),
            &format!("needle\n{}\n", "x".repeat(292)),
        );
    }
    let mut client = serve(&[
        "--root",
        &arg(dir.path()),
        "--search-max-total-bytes",
        "1000",
    ])
    .await;
    let out = client
        .tool_ok("search_files", json!({"query": "needle"}))
        .await;
    assert_eq!(out["stopped"], "budget", "{out}");
    assert_eq!(out["truncated"], true);
    // 300 + 300 + 300 + the first 100 bytes of the fourth file.
    assert_eq!(out["bytes_searched"], 1000);
    assert_eq!(out["files_scanned"], 4);
    assert_eq!(out["files_cut"], 1);
    let paths: Vec<&str> = out["matches"]
        .as_array()
        .expect("matches")
        .iter()
        .map(|m| m["path"].as_str().expect("path"))
        .collect();
    assert_eq!(paths, ["f0.txt", "f1.txt", "f2.txt", "f3.txt"]);
    // Under the budget nothing is flagged.
    let small = client
        .tool_ok("search_files", json!({"query": "needle", "glob": "f1.txt"}))
        .await;
    assert!(small.get("stopped").is_none(), "{small}");
    assert_eq!(small["truncated"], false);
}

#[tokio::test]
async fn walks_stop_at_the_deadline_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    for i in 0..5 {
        put(dir.path(), &format!("d/f{i}.txt"), "needle\n");
    }
    // A deadline already past when the first entry is checked.
    let mut client = serve(&["--root", &arg(dir.path()), "--op-timeout", "0.000000001"]).await;
    let found = client.tool_ok("find_files", json!({"pattern": "*"})).await;
    assert_eq!(found["stopped"], "deadline", "{found}");
    assert_eq!(found["truncated"], true);
    let listed = client.tool_ok("list_directory", json!({"path": "d"})).await;
    assert_eq!(listed["stopped"], "deadline", "{listed}");
    assert_eq!(listed["truncated"], true);
    let searched = client
        .tool_ok("search_files", json!({"query": "needle"}))
        .await;
    assert_eq!(searched["stopped"], "deadline", "{searched}");
    let response = client.request("resources/list", json!({})).await;
    let message = response["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("deadline") && message.contains("--op-timeout"),
        "{response}"
    );
    // Without a deadline problem the same calls are complete and unflagged.
    let mut client = serve(&["--root", &arg(dir.path())]).await;
    let found = client.tool_ok("find_files", json!({"pattern": "*"})).await;
    assert!(found.get("stopped").is_none(), "{found}");
    assert_eq!(found["matches"].as_array().expect("matches").len(), 6);
}

#[tokio::test]
async fn cancelled_search_stops_and_frees_its_slot() {
    let dir = tempfile::tempdir().expect("tempdir");
    slow_tree(dir.path());
    let root = arg(dir.path());
    // One slot, and a deadline far away: only the cancellation can stop the search.
    let state = Arc::new(state(&slow_flags(&root, "600", "1")));
    let mut client = serve_state(Arc::clone(&state)).await;
    let search = client.post_detached(slow_search(777));
    wait_until_searching(&state).await;
    let ack = client
        .post(json!({
            "jsonrpc": "2.0", "method": "notifications/cancelled",
            "params": {"requestId": 777, "reason": "test"}
        }))
        .await;
    assert_eq!(ack.status(), reqwest::StatusCode::ACCEPTED);
    let stopped_at = settled_count(&state).await;
    assert!(stopped_at < SLOW_FILES as u64, "{stopped_at}");
    // The slot is free again: with one slot, this needs the search to have ended.
    let stat = tokio::time::timeout(
        Duration::from_secs(60),
        client.tool_ok("stat", json!({"path": "f0000.txt"})),
    )
    .await
    .expect("the cancelled search still holds the only slot");
    assert_eq!(stat["kind"], "file");
    assert_eq!(state.files_searched_total(), stopped_at);
    search.abort();
}

#[tokio::test]
async fn closing_the_session_stops_its_running_search() {
    let dir = tempfile::tempdir().expect("tempdir");
    slow_tree(dir.path());
    let root = arg(dir.path());
    let state = Arc::new(state(&slow_flags(&root, "600", "1")));
    let client = serve_state(Arc::clone(&state)).await;
    let search = client.post_detached(slow_search(778));
    wait_until_searching(&state).await;
    // A client hanging up ends the session's service loop, which cancels its requests (the
    // same path as stdin closing under stdio).
    assert!(client.close().await.is_success());
    let stopped_at = settled_count(&state).await;
    assert!(stopped_at < SLOW_FILES as u64, "{stopped_at}");
    let mut other = serve_state(Arc::clone(&state)).await;
    let stat = tokio::time::timeout(
        Duration::from_secs(60),
        other.tool_ok("stat", json!({"path": "f0000.txt"})),
    )
    .await
    .expect("the abandoned search still holds the only slot");
    assert_eq!(stat["kind"], "file");
    search.abort();
}
