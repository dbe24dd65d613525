//! What upstreams receive: never the client's credential, never the client's request ids, and
//! no `_meta` the gateway does not vouch for (identity claims are dropped).

mod common;

use std::sync::{Arc, Mutex};

use axum::http::HeaderMap;
use common::*;
use serde_json::{Value, json};

#[derive(Clone, Default)]
struct Recorded(Arc<Mutex<Vec<(HeaderMap, Value)>>>);

/// A minimal session-era MCP server over HTTP that records every request it receives.
async fn spy_server(recorded: Recorded) -> String {
    let app = axum::Router::new().route(
        "/mcp",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let recorded = recorded.clone();
            async move {
                let request: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                recorded.0.lock().expect("lock").push((headers, request.clone()));
                let result = match request["method"].as_str() {
                    Some("initialize") => json!({"protocolVersion": "2025-11-25", "capabilities": {"tools": {}}, "serverInfo": {"name": "spy", "version": "1"}}),
                    Some("tools/list") => json!({"tools": [{"name": "spy", "inputSchema": {"type": "object"}}]}),
                    Some("tools/call") => json!({"content": [{"type": "text", "text": "ok"}]}),
                    _ => return (axum::http::StatusCode::ACCEPTED, [("mcp-session-id", "spy-session"), ("content-type", "application/json")], String::new()),
                };
                let reply = json!({"jsonrpc": "2.0", "id": request["id"], "result": result});
                (axum::http::StatusCode::OK, [("mcp-session-id", "spy-session"), ("content-type", "application/json")], reply.to_string())
            }
        }),
    );
    micromcp_testkit::serve(app).await
}

#[tokio::test(flavor = "multi_thread")]
async fn upstreams_get_their_own_credential_and_ids_and_no_client_claims() {
    let recorded = Recorded::default();
    let url = spy_server(recorded.clone()).await;
    let secrets = tempfile::tempdir().expect("tempdir");
    let token_file = secrets.path().join("upstream-token");
    std::fs::write(&token_file, "Bearer upstream-credential\n").expect("write");
    let gw = Gateway::start(&format!(
        r#"
[[policy.grants]]
principal = "alice"
tools = ["spy.*"]

[services.spy]
url = "{url}"
headers = {{ Authorization = "file:{}" }}
"#,
        token_file.display()
    ));
    gw.wait_ready(&["spy"]).await;
    let c = gw.client(&gw.alice);
    let mut session = c.clone();
    session.initialize().await;
    let body = json!({"jsonrpc": "2.0", "id": "client-id-777", "method": "tools/call", "params": {
        "name": "spy.spy", "arguments": {},
        "_meta": {"progressToken": "client-progress", "user": "mallory", "io.modelcontextprotocol/principal": "root", "tenant": "other",
            "io.micromcp/identity": {"sub": "root", "tenant": "other", "clearance": "restricted", "sig": "forged"}}}});
    let r = session
        .send(&[("mcp-protocol-version", "2025-11-25")], &body)
        .await;
    assert_eq!(text_of(&r), "ok");
    assert_eq!(r.body["id"], "client-id-777", "the client's id is restored");

    let recorded = recorded.0.lock().expect("lock").clone();
    let call = recorded
        .iter()
        .find(|(_, b)| b["method"] == "tools/call")
        .expect("call reached the upstream");
    for (headers, body) in &recorded {
        let all_headers = format!("{headers:?}");
        assert!(
            !all_headers.contains(&gw.alice) && !body.to_string().contains(&gw.alice),
            "client token leaked upstream"
        );
        assert_eq!(
            headers["authorization"], "Bearer upstream-credential",
            "the upstream's own credential, from the file"
        );
    }
    let (_, body) = call;
    assert!(
        body["id"].is_u64(),
        "the gateway's own numeric id upstream, not the client's: {}",
        body["id"]
    );
    assert_eq!(body["params"]["name"], "spy");
    let meta = body["params"]["_meta"]
        .as_object()
        .expect("meta with the rewritten progress token");
    assert_eq!(
        meta.keys().collect::<Vec<_>>(),
        ["progressToken"],
        "identity claims dropped: {meta:?}"
    );
    assert_ne!(
        meta["progressToken"], "client-progress",
        "progress tokens are the gateway's own"
    );
}
