//! MRTR (multi round-trip requests, 2026-07-28) through the real binary, with the echo
//! service's `confirm` tool: the service answers `input_required` with an elicitation, the
//! client retries the call (new id) with `inputResponses` and the echoed `requestState`.
//!
//! Only a 2026-07-28 upstream can ask: the gateway speaks 2025-11-25 to stdio services, and
//! session-era clients cannot express the intermediate result, so both get a clear error.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// `echo` is the built-in stdio service; `modern` is an HTTP echo spoken to in 2026-07-28.
fn config(url: &str) -> String {
    format!(
        r#"
[[policy.grants]]
principal = "alice"
tools = ["modern.*", "echo.*"]

[services.echo]
builtin = "echo"

[services.modern]
url = "{url}"
protocol = "2026-07-28"
"#
    )
}

/// What a client that can show forms declares.
fn can_elicit() -> Value {
    json!({"elicitation": {}})
}

fn ask(tool: &str) -> Value {
    json!({"name": tool, "arguments": {"question": "Ship it?"}})
}

/// `ask(tool)` retried with `answer` under the question's key and, if given, the state.
fn answer(tool: &str, answer: Value, state: Option<&Value>) -> Value {
    let mut params = ask(tool);
    params["inputResponses"] = json!({ "answer": answer });
    if let Some(state) = state {
        params["requestState"] = state.clone();
    }
    params
}

/// A 2026-07-28 `tools/call` declaring `capabilities` (`Client::call_2026` declares none).
/// Every call takes a new JSON-RPC id, as a retry must.
async fn call_2026_with(c: &mut Client, mut params: Value, capabilities: Value) -> Reply {
    c.next_id += 1;
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": V2026,
        "io.modelcontextprotocol/clientCapabilities": capabilities,
    });
    let name = params["name"].as_str().expect("tool name").to_owned();
    let body = json!({"jsonrpc": "2.0", "id": c.next_id, "method": "tools/call", "params": params});
    let headers = [
        ("mcp-protocol-version", V2026),
        ("mcp-method", "tools/call"),
        ("mcp-name", name.as_str()),
    ];
    bounded(c.send(&headers, &body)).await
}

/// Fails the test instead of hanging when the gateway never answers.
async fn bounded<T>(reply: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), reply)
        .await
        .expect("the gateway answered within 30 s")
}

fn error_message(reply: &Reply) -> &str {
    reply.body["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message in {}", reply.body))
}

/// The audit records of `tools/call` on `target`, oldest first.
async fn calls_of(gw: &Gateway, target: &str, n: usize) -> Vec<Value> {
    let mut records = Vec::new();
    for _ in 0..100 {
        records = gw
            .audit()
            .into_iter()
            .filter(|r| r["method"] == "tools/call" && r["target"] == target)
            .collect();
        if records.len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(records.len(), n, "{target}: {records:#?}");
    records
}

#[tokio::test(flavor = "multi_thread")]
async fn a_2026_client_completes_a_round_trip_through_a_2026_upstream() {
    let upstream = HttpEcho::start();
    let gw = Gateway::start(&config(&upstream.url));
    gw.wait_ready(&["echo", "modern"]).await;
    let mut c = gw.client(&gw.alice);

    // Round 1: the service asks its question; the gateway passes the result through.
    let first = call_2026_with(&mut c, ask("modern.confirm"), can_elicit()).await;
    assert_eq!(first.status, 200);
    let result = first.result();
    assert_eq!(result["resultType"], "input_required", "{}", first.body);
    assert!(result.get("content").is_none(), "{}", first.body);
    let request = &result["inputRequests"]["answer"];
    assert_eq!(request["method"], "elicitation/create", "{}", first.body);
    assert_eq!(request["params"]["message"], "Ship it?");
    assert_eq!(
        request["params"]["requestedSchema"]["properties"]["ok"]["type"],
        "boolean"
    );
    let state = result["requestState"].clone();
    assert!(state.is_string(), "{}", first.body);

    // Round 2: same call, new id, the answer and the state echoed exactly.
    let accept = json!({"action": "accept", "content": {"ok": true}});
    let done = call_2026_with(
        &mut c,
        answer("modern.confirm", accept.clone(), Some(&state)),
        can_elicit(),
    )
    .await;
    assert_ne!(done.body["id"], first.body["id"]);
    assert_eq!(done.result()["resultType"], "complete", "{}", done.body);
    assert_eq!(text_of(&done), "confirmed: true");

    // A new question, declined.
    let second = call_2026_with(&mut c, ask("modern.confirm"), can_elicit()).await;
    let state = second.result()["requestState"].clone();
    let declined = call_2026_with(
        &mut c,
        answer("modern.confirm", json!({"action": "decline"}), Some(&state)),
        can_elicit(),
    )
    .await;
    assert_eq!(text_of(&declined), "not confirmed");

    // The service notices an answer whose requestState did not come back.
    let stateless =
        call_2026_with(&mut c, answer("modern.confirm", accept, None), can_elicit()).await;
    assert_eq!(stateless.error_code(), -32602, "{}", stateless.body);

    // A client that did not declare elicitation is never asked: -32021 (HTTP 400 in 2026).
    let unable = call_2026_with(&mut c, ask("modern.confirm"), json!({})).await;
    assert_eq!(unable.status, 400, "{}", unable.body);
    assert_eq!(unable.error_code(), -32021, "{}", unable.body);
    assert!(
        error_message(&unable).contains("elicitation"),
        "{}",
        unable.body
    );

    // One audit record per round, each under its own JSON-RPC id.
    let records = calls_of(&gw, "modern.confirm", 6).await;
    let ids: Vec<&Value> = records.iter().map(|r| &r["jsonrpc_id"]).collect();
    assert_eq!(ids, [1, 2, 3, 4, 5, 6], "{records:#?}");
    // Rounds: ask, accept, ask again, decline. Asking is allowed but not complete yet.
    let statuses: Vec<&Value> = records[..4].iter().map(|r| &r["status"]).collect();
    assert_eq!(
        statuses,
        ["input_required", "ok", "input_required", "ok"],
        "{records:#?}"
    );
    for r in &records[..4] {
        assert_eq!(r["decision"], "allow", "{r}");
        assert_eq!(r["service"], "modern", "{r}");
        assert_eq!(r["protocol_version"], V2026, "{r}");
    }
    assert_eq!(records[4]["status"], "-32602", "{}", records[4]);
    assert_eq!(records[5]["status"], "-32021", "{}", records[5]);
}

#[tokio::test(flavor = "multi_thread")]
async fn session_era_clients_are_told_to_use_2026() {
    let upstream = HttpEcho::start();
    let gw = Gateway::start(&config(&upstream.url));
    gw.wait_ready(&["echo", "modern"]).await;
    let mut c = gw.client(&gw.alice);
    c.initialize().await;

    for tool in ["modern.confirm", "echo.confirm"] {
        let reply = bounded(c.call("tools/call", ask(tool))).await;
        assert_eq!(reply.status, 200, "{tool}: {}", reply.body);
        // From the 2026 upstream: it refuses before asking (-32021), because the gateway
        // declares no client capabilities for session-era callers; had it answered
        // `input_required`, the gateway would turn that into -32600. From the stdio upstream
        // (2025-11-25): -32600. Either way the message says what to do.
        let code = reply.error_code();
        assert!(matches!(code, -32600 | -32021), "{tool}: {}", reply.body);
        let message = error_message(&reply);
        assert!(message.contains("2026-07-28"), "{tool}: {message}");
        assert!(!message.contains("InputRequired"), "{tool}: {message}");
    }
    for tool in ["modern.confirm", "echo.confirm"] {
        let records = calls_of(&gw, tool, 1).await;
        assert_eq!(records[0]["decision"], "error", "{}", records[0]);
        assert_eq!(
            records[0]["protocol_version"], "2025-11-25",
            "{}",
            records[0]
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn stdio_upstreams_cannot_ask_for_input() {
    // The gateway speaks 2025-11-25 to stdio services, and an `input_required` result needs
    // 2026-07-28 on the service's own connection: rmcp would turn it into a -32600 naming its
    // internal types, so `confirm` refuses first with a plain -32600. A 2026 client that can
    // elicit still gets that error, never an `input_required` it could answer.
    let upstream = HttpEcho::start();
    let gw = Gateway::start(&config(&upstream.url));
    gw.wait_ready(&["echo", "modern"]).await;
    let mut c = gw.client(&gw.alice);

    let reply = call_2026_with(&mut c, ask("echo.confirm"), can_elicit()).await;
    assert_eq!(reply.error_code(), -32600, "{}", reply.body);
    let message = error_message(&reply);
    assert!(
        message.contains("2026-07-28") && message.contains("2025-11-25"),
        "{message}"
    );
    assert!(!message.contains("InputRequired"), "{message}");

    // Retrying as if it had asked changes nothing.
    let accept = json!({"action": "accept", "content": {"ok": true}});
    let retry = call_2026_with(
        &mut c,
        answer("echo.confirm", accept, Some(&json!("confirm-1"))),
        can_elicit(),
    )
    .await;
    assert_eq!(retry.error_code(), -32600, "{}", retry.body);

    let records = calls_of(&gw, "echo.confirm", 2).await;
    for r in &records {
        assert_eq!(r["decision"], "error", "{r}");
        assert_eq!(r["status"], "-32600", "{r}");
        assert_eq!(r["service"], "echo", "{r}");
    }
}
