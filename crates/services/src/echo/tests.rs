//! The echo service over real Streamable HTTP, driven with raw JSON-RPC so the tests pin the
//! wire format the gateway sees, not rmcp's client API.

use micromcp_testkit::{LEGACY, Session, messages, post_2026, response_of, serve};
use serde_json::{Value, json};

use super::http_router;

/// Serves the echo app on an ephemeral loopback port; returns its `/mcp` URL.
async fn spawn() -> String {
    serve(http_router()).await
}

#[tokio::test]
async fn legacy_session_covers_the_protocol_surface() {
    let mut client = Session::start(spawn().await).await;
    let init = &client.init["result"];
    assert_eq!(init["protocolVersion"], LEGACY);
    assert_eq!(init["serverInfo"]["name"], "micromcp-echo");
    assert_eq!(init["serverInfo"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(init["capabilities"]["resources"]["subscribe"], true);
    assert!(init["capabilities"]["completions"].is_object(), "{init}");

    let tools = client.call("tools/list", json!({})).await;
    let mut names: Vec<&str> = tools["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "add", "confirm", "echo", "env", "exit", "fail", "now", "refund", "slow"
        ]
    );
    let echo = tools["tools"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["name"] == "echo"))
        .expect("echo tool");
    assert_eq!(echo["annotations"]["readOnlyHint"], true);

    let echoed = client
        .call(
            "tools/call",
            json!({"name": "echo", "arguments": {"text": "hi there"}}),
        )
        .await;
    assert_eq!(echoed["content"][0]["text"], "hi there");

    let added = client
        .call(
            "tools/call",
            json!({"name": "add", "arguments": {"a": 2, "b": 0.5}}),
        )
        .await;
    assert_eq!(added["structuredContent"], json!({"sum": 2.5}));
    assert_eq!(added["content"][0]["type"], "text");

    let failed = client
        .call(
            "tools/call",
            json!({"name": "fail", "arguments": {"message": "boom"}}),
        )
        .await;
    assert_eq!(failed["isError"], true);
    assert_eq!(failed["content"][0]["text"], "boom");

    let now = client
        .call("tools/call", json!({"name": "now", "arguments": {}}))
        .await;
    let now = now["content"][0]["text"].as_str().expect("now text");
    assert!(humantime::parse_rfc3339(now).is_ok(), "not RFC 3339: {now}");

    let templates = client.call("resources/templates/list", json!({})).await;
    assert_eq!(
        templates["resourceTemplates"][0]["uriTemplate"],
        "echo://text/{value}"
    );
    let read = client
        .call("resources/read", json!({"uri": "echo://text/hi"}))
        .await;
    assert_eq!(read["contents"][0]["text"], "hi");
    let readme = client
        .call("resources/read", json!({"uri": "echo://readme"}))
        .await;
    assert_eq!(readme["contents"][0]["mimeType"], "text/plain");
    client
        .call("resources/subscribe", json!({"uri": "echo://readme"}))
        .await;
    client
        .call("resources/unsubscribe", json!({"uri": "echo://readme"}))
        .await;

    let prompt = client
        .call(
            "prompts/get",
            json!({"name": "greet", "arguments": {"name": "Ada"}}),
        )
        .await;
    assert_eq!(prompt["messages"][0]["role"], "user");
    assert_eq!(
        prompt["messages"][0]["content"]["text"],
        "Say hello to Ada."
    );

    let completed = client
        .call(
            "completion/complete",
            json!({
                "ref": {"type": "ref/prompt", "name": "greet"},
                "argument": {"name": "name", "value": "b"}
            }),
        )
        .await;
    assert_eq!(completed["completion"]["values"], json!(["bob"]));
}

#[tokio::test]
async fn unknown_resource_is_a_jsonrpc_error() {
    let client = Session::start(spawn().await).await;
    let body = json!({
        "jsonrpc": "2.0", "id": 9, "method": "resources/read",
        "params": {"uri": "file:///etc/passwd"}
    });
    let messages = messages(client.post(body).await).await;
    assert!(response_of(&messages)["error"]["code"].is_i64());
}

/// One 2026-07-28 request: no initialize, no session, the client context in `_meta`.
async fn modern_call(url: &str, name: &str, arguments: Value, meta: Value) -> Vec<Value> {
    let params = json!({"name": name, "arguments": arguments, "_meta": meta});
    let response = post_2026(url, 1, "tools/call", params, json!({})).await;
    assert!(response.headers().get("mcp-session-id").is_none());
    messages(response).await
}

#[tokio::test]
async fn stateless_2026_request_succeeds() {
    let url = spawn().await;
    let messages = modern_call(&url, "echo", json!({"text": "modern"}), json!({})).await;
    let response = response_of(&messages);
    assert_eq!(
        response["result"]["content"][0]["text"], "modern",
        "{response}"
    );
}

#[tokio::test]
async fn slow_reports_progress_for_the_request_token() {
    let url = spawn().await;
    let messages = modern_call(
        &url,
        "slow",
        json!({"seconds": 0.02, "steps": 2}),
        json!({"progressToken": "p1"}),
    )
    .await;
    let progress: Vec<&Value> = messages
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .collect();
    assert_eq!(progress.len(), 2, "{messages:?}");
    assert_eq!(progress[1]["params"]["progressToken"], "p1");
    assert_eq!(progress[1]["params"]["progress"], 2.0);
    let response = response_of(&messages);
    assert_eq!(
        response["result"]["content"][0]["text"],
        "done after 2 steps"
    );
}

/// A 2026-07-28 `tools/call` with the given params (`_meta` is filled in) and request id;
/// returns the JSON-RPC response and the HTTP status it came with.
async fn modern_request(
    url: &str,
    id: u64,
    params: Value,
    capabilities: Value,
) -> (reqwest::StatusCode, Value) {
    assert!(params["name"].is_string(), "a tool name: {params}");
    let response = post_2026(url, id, "tools/call", params, capabilities).await;
    let status = response.status();
    let response = if status.is_success() {
        response_of(&messages(response).await).clone()
    } else {
        // Some errors (e.g. a missing client capability) come as HTTP errors with a JSON body.
        response.json().await.expect("JSON error body")
    };
    assert_eq!(response["id"], id);
    (status, response)
}

#[tokio::test]
async fn confirm_is_a_multi_round_trip_request_in_2026() {
    let url = spawn().await;
    let elicit = json!({"elicitation": {}});
    let ask = json!({"name": "confirm", "arguments": {"question": "Ship it?"}});

    let (_, first) = modern_request(&url, 1, ask.clone(), elicit.clone()).await;
    let result = &first["result"];
    assert_eq!(result["resultType"], "input_required", "{first}");
    let request = &result["inputRequests"]["answer"];
    assert_eq!(request["method"], "elicitation/create", "{first}");
    assert_eq!(request["params"]["message"], "Ship it?");
    assert_eq!(
        request["params"]["requestedSchema"]["properties"]["ok"]["type"],
        "boolean"
    );
    assert_eq!(
        request["params"]["requestedSchema"]["required"],
        json!(["ok"])
    );
    let state = result["requestState"].as_str().expect("requestState");
    assert!(result.get("content").is_none(), "{first}");

    // Each question gets its own state.
    let (_, again) = modern_request(&url, 2, ask.clone(), elicit.clone()).await;
    assert_ne!(again["result"]["requestState"], state, "{again}");

    let retry = |answer: Value, state: Option<&str>| {
        let mut params = ask.clone();
        params["inputResponses"] = json!({"answer": answer});
        if let Some(state) = state {
            params["requestState"] = json!(state);
        }
        params
    };
    for (id, answer, text) in [
        (
            3,
            json!({"action": "accept", "content": {"ok": true}}),
            "confirmed: true",
        ),
        (
            4,
            json!({"action": "accept", "content": {"ok": false}}),
            "confirmed: false",
        ),
        (5, json!({"action": "decline"}), "not confirmed"),
        (6, json!({"action": "cancel"}), "not confirmed"),
    ] {
        let (_, done) = modern_request(&url, id, retry(answer, Some(state)), elicit.clone()).await;
        assert_eq!(done["result"]["resultType"], "complete", "{done}");
        assert_eq!(done["result"]["content"][0]["text"], text, "{done}");
    }

    // Responses without the question's key: asked again, not an error.
    let mut other = ask.clone();
    other["inputResponses"] = json!({"unrelated": {"action": "accept"}});
    other["requestState"] = json!(state);
    let (_, asked) = modern_request(&url, 7, other, elicit.clone()).await;
    assert_eq!(asked["result"]["resultType"], "input_required", "{asked}");

    // An answer whose state was dropped, or whose content is malformed, is invalid params.
    let accept = json!({"action": "accept", "content": {"ok": true}});
    let (_, no_state) = modern_request(&url, 8, retry(accept.clone(), None), elicit.clone()).await;
    assert_eq!(no_state["error"]["code"], -32602, "{no_state}");
    let bad = json!({"action": "accept", "content": {"ok": "yes"}});
    let (_, malformed) = modern_request(&url, 9, retry(bad, Some(state)), elicit.clone()).await;
    assert_eq!(malformed["error"]["code"], -32602, "{malformed}");

    // A client that cannot answer an elicitation is told which capability is missing.
    let (status, unable) = modern_request(&url, 10, ask, json!({})).await;
    assert_eq!(status, reqwest::StatusCode::BAD_REQUEST);
    assert_eq!(unable["error"]["code"], -32021, "{unable}");
    assert!(
        unable["error"]["data"].to_string().contains("elicitation"),
        "{unable}"
    );
}

#[tokio::test]
async fn confirm_tells_session_era_clients_to_use_2026() {
    let client = Session::start(spawn().await).await;
    let body = json!({
        "jsonrpc": "2.0", "id": 5, "method": "tools/call",
        "params": {"name": "confirm", "arguments": {"question": "Ship it?"}}
    });
    let messages = messages(client.post(body).await).await;
    let error = &response_of(&messages)["error"];
    assert_eq!(error["code"], -32600, "{error}");
    let message = error["message"].as_str().expect("message");
    assert!(
        message.contains("2026-07-28") && message.contains("2025-11-25"),
        "{message}"
    );
}
