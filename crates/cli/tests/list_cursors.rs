//! List cursors are opaque and bound: sealed to the principal and the list they were issued
//! for, revealing no service or upstream cursor, refused when altered or crafted; a list never
//! asks a service on which the caller holds no grant of that kind.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine;
use common::*;
use serde_json::{Value, json};

type Calls = Arc<Mutex<HashMap<String, usize>>>;

/// A session-era HTTP upstream whose tools, prompts and resources come one per page, three
/// pages each; it counts the list requests it gets. Its cursors start with `filler` bytes.
async fn paging_upstream(calls: Calls, filler: usize) -> String {
    use axum::http::StatusCode;

    let post = move |body: String| {
        let calls = calls.clone();
        async move {
            let request: Value = serde_json::from_str(&body).unwrap_or_default();
            let method = request["method"].as_str().unwrap_or("").to_owned();
            *calls
                .lock()
                .expect("lock")
                .entry(method.clone())
                .or_default() += 1;
            let page: usize = request["params"]["cursor"]
                .as_str()
                .and_then(|c| c.rsplit_once("-page-"))
                .and_then(|(_, n)| n.parse().ok())
                .unwrap_or(1);
            let item = |kind: &str| match kind {
                "tools" => json!({"name": format!("t{page}"), "inputSchema": {"type": "object"}}),
                "prompts" => json!({"name": format!("p{page}")}),
                _ => json!({"uri": format!("pager://r{page}"), "name": format!("r{page}")}),
            };
            let listed = |kind: &str| {
                let mut result = json!({ kind: [item(kind)] });
                if page < 3 {
                    let filler = "f".repeat(filler);
                    result["nextCursor"] =
                        json!(format!("{filler}upstream-{kind}-page-{}", page + 1));
                }
                result
            };
            let result = match method.as_str() {
                "initialize" => Some(json!({"protocolVersion": "2025-11-25",
                    "capabilities": {"tools": {}, "prompts": {}, "resources": {}},
                    "serverInfo": {"name": "pager", "version": "1"}})),
                "tools/list" => Some(listed("tools")),
                "prompts/list" => Some(listed("prompts")),
                "resources/list" => Some(listed("resources")),
                _ => None,
            };
            micromcp_testkit::upstream_reply(&request, result)
        }
    };
    let get = || async { StatusCode::METHOD_NOT_ALLOWED };
    micromcp_testkit::serve(axum::Router::new().route("/mcp", axum::routing::post(post).get(get)))
        .await
}

async fn start() -> (Gateway, Calls) {
    let calls = Calls::default();
    let url = paging_upstream(calls.clone(), 0).await;
    let gw = Gateway::start(&format!(
        r#"
[[policy.grants]]
principal = "alice"
tools = ["pager.*"]
prompts = ["pager.*"]
resources = ["pager.*"]

# Bob may use one tool, on the last page, and no prompts or resources.
[[policy.grants]]
principal = "bob"
tools = ["pager.t3"]

[services.pager]
url = "{url}"
"#
    ));
    gw.wait_ready(&["pager"]).await;
    (gw, calls)
}

fn calls_of(calls: &Calls, method: &str) -> usize {
    calls
        .lock()
        .expect("lock")
        .get(method)
        .copied()
        .unwrap_or(0)
}

fn next_cursor(reply: &Reply) -> String {
    reply.result()["nextCursor"]
        .as_str()
        .unwrap_or_else(|| panic!("no nextCursor in {}", reply.body))
        .to_owned()
}

/// Every byte a cursor carries, whatever its encoding (`<prefix>.<base64url>`).
fn decoded(cursor: &str) -> Vec<u8> {
    let payload = cursor.split_once('.').map_or(cursor, |(_, p)| p);
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap_or_else(|_| cursor.as_bytes().to_vec())
}

fn assert_invalid_cursor(reply: &Reply, what: &str) {
    assert_eq!(
        reply.body["error"],
        json!({"code": -32602, "message": "invalid cursor"}),
        "{what}: {}",
        reply.body
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cursors_reveal_nothing_and_work_only_for_their_principal_and_list() {
    let (gw, calls) = start().await;
    let mut alice = gw.client(&gw.alice);
    alice.initialize().await;
    let first = alice.call("tools/list", json!({})).await;
    assert_eq!(tool_names(&first), ["pager.t1"]);
    let cursor = next_cursor(&first);
    let bytes = decoded(&cursor);
    let shown = String::from_utf8_lossy(&bytes);
    for secret in ["pager", "upstream-tools-page-2", "page"] {
        assert!(
            !shown.contains(secret),
            "{secret:?} shows in the cursor: {shown}"
        );
    }
    let second = alice.call("tools/list", json!({ "cursor": cursor })).await;
    assert_eq!(tool_names(&second), ["pager.t2"]);

    // One byte altered, anywhere in the sealed part.
    let mut altered = bytes.clone();
    let middle = altered.len() / 2;
    altered[middle] ^= 0x20;
    let prefix = cursor.split_once('.').map_or("", |(p, _)| p);
    let altered = format!(
        "{prefix}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(altered)
    );
    let reply = alice.call("tools/list", json!({ "cursor": altered })).await;
    assert_invalid_cursor(&reply, "altered");

    // Bob's cursor, presented by alice.
    let mut bob = gw.client(&gw.bob);
    bob.initialize().await;
    let bobs = bob.call("tools/list", json!({})).await;
    let bobs_cursor = next_cursor(&bobs);
    let reply = alice
        .call("tools/list", json!({ "cursor": bobs_cursor }))
        .await;
    assert_invalid_cursor(&reply, "bob's cursor used by alice");

    // A tools cursor for another list.
    let prompts_before = calls_of(&calls, "prompts/list");
    for list in ["prompts/list", "resources/list", "resources/templates/list"] {
        let reply = alice.call(list, json!({ "cursor": cursor })).await;
        assert_invalid_cursor(&reply, list);
    }
    assert_eq!(calls_of(&calls, "prompts/list"), prompts_before);

    // Garbage and cursors in the old, readable format.
    let readable = |entries: Value| {
        format!(
            "mm1.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(entries.to_string())
        )
    };
    for garbage in [
        "x".to_owned(),
        String::new(),
        readable(json!([["pager", null]])),
        readable(json!([["no-such-service", null]])),
    ] {
        let reply = alice.call("tools/list", json!({ "cursor": garbage })).await;
        assert_invalid_cursor(&reply, &garbage);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crafted_cursor_repeating_a_service_lists_nothing() {
    let (gw, calls) = start().await;
    let mut alice = gw.client(&gw.alice);
    alice.initialize().await;
    let before = calls_of(&calls, "tools/list");
    let repeated: Vec<Value> = (0..300).map(|_| json!(["pager", null])).collect();
    let crafted = format!(
        "mm1.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Value::from(repeated).to_string())
    );
    let reply = alice.call("tools/list", json!({ "cursor": crafted })).await;
    assert_invalid_cursor(&reply, "300 repeated entries");
    assert_eq!(
        calls_of(&calls, "tools/list"),
        before,
        "no upstream listing"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn services_without_a_grant_of_the_kind_are_not_asked_and_give_no_cursor() {
    let (gw, calls) = start().await;
    let mut bob = gw.client(&gw.bob);
    bob.initialize().await;
    for (list, items) in [
        ("resources/list", "resources"),
        ("resources/templates/list", "resourceTemplates"),
        ("prompts/list", "prompts"),
    ] {
        let reply = bob.call(list, json!({})).await;
        assert_eq!(reply.result()[items], json!([]), "{list}");
        assert!(
            reply.result().get("nextCursor").is_none(),
            "{list}: {}",
            reply.body
        );
    }
    assert_eq!(calls_of(&calls, "resources/list"), 0);
    assert_eq!(calls_of(&calls, "prompts/list"), 0);

    // A page with nothing bob may see still continues, through a sealed cursor, to his tool.
    let mut seen = Vec::new();
    let mut params = json!({});
    for _ in 0..3 {
        let page = bob.call("tools/list", params).await;
        seen.extend(tool_names(&page));
        match page.result().get("nextCursor").and_then(Value::as_str) {
            Some(cursor) => {
                let shown = String::from_utf8_lossy(&decoded(cursor)).into_owned();
                assert!(!shown.contains("pager"), "{shown}");
                params = json!({ "cursor": cursor });
            }
            None => break,
        }
    }
    assert_eq!(seen, ["pager.t3"]);
}

/// One service whose own cursors are longer than a gateway cursor may be (8 KiB): its listing
/// stops after its first page (logged), and the cursor still carries the other services on.
#[tokio::test(flavor = "multi_thread")]
async fn a_service_with_overlong_cursors_does_not_break_the_others_pages() {
    let calls = Calls::default();
    let pager = paging_upstream(calls.clone(), 0).await;
    let long = paging_upstream(Calls::default(), 10_000).await;
    let gw = Gateway::start(&format!(
        r#"
[[policy.grants]]
principal = "alice"
tools = ["pager.*", "long.*"]

[services.pager]
url = "{pager}"

[services.long]
url = "{long}"
"#
    ));
    gw.wait_ready(&["pager", "long"]).await;
    let mut alice = gw.client(&gw.alice);
    alice.initialize().await;
    let first = alice.call("tools/list", json!({})).await;
    let mut names = tool_names(&first);
    let mut cursor = next_cursor(&first);
    while !cursor.is_empty() {
        let page = alice.call("tools/list", json!({"cursor": cursor})).await;
        names.extend(tool_names(&page));
        cursor = page.result()["nextCursor"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
    }
    names.sort();
    assert_eq!(names, ["long.t1", "pager.t1", "pager.t2", "pager.t3"]);
    assert!(
        gw.stderr_text()
            .lines()
            .any(|l| l.contains("service=long") && l.contains("cursor is too long")),
        "the cut listing is logged"
    );
}
