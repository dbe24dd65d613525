//! SECURITY.md, "Transport and protocol" and "Identity and authorization": each attack must
//! fail with a clear error, change nothing, and be audited.

mod common;

use common::*;
use serde_json::{Value, json};

fn init_body() -> Value {
    json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"0"}}})
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_malformed_wrong_and_query_string_tokens_are_refused() {
    let gw = Gateway::start(ECHO);
    let mut anonymous = gw.client("unused");
    anonymous.token = None;
    let r = anonymous.send(&[], &init_body()).await;
    assert_eq!(r.status, 401);
    assert!(
        r.headers["www-authenticate"]
            .to_str()
            .expect("ascii")
            .starts_with("Bearer")
    );

    let wrong = gw.client("mmcp_not-a-real-token");
    let r = wrong.send(&[], &init_body()).await;
    assert_eq!(r.status, 401);
    assert!(
        r.headers["www-authenticate"]
            .to_str()
            .expect("ascii")
            .contains("invalid_token")
    );

    let r = anonymous
        .send(
            &[("authorization", &format!("Basic {}", gw.alice))],
            &init_body(),
        )
        .await;
    assert_eq!(r.status, 401);

    // A valid token in the query string is still refused: tokens belong in the header only.
    let mut in_query = gw.client("unused");
    in_query.token = None;
    in_query.url = format!("{}?access_token={}", gw.url, gw.alice);
    let r = in_query.send(&[], &init_body()).await;
    assert_eq!(r.status, 400);

    let records = gw.audit_at_least(4).await;
    assert_eq!(
        records.len(),
        4,
        "one record per refused request: {records:?}"
    );
    assert!(records.iter().all(|r| r["decision"] == "deny"));
    let log = std::fs::read_to_string(gw.path("audit.jsonl")).expect("audit");
    assert!(!log.contains(&gw.alice), "a token reached the audit log");
    assert!(
        !gw.stderr_text().contains(&gw.alice),
        "a token reached the logs"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dns_rebinding_and_cross_origin_requests_get_403() {
    let gw = Gateway::start(ECHO);
    let c = gw.client(&gw.alice);
    let r = c.send(&[("host", "evil.example:80")], &init_body()).await;
    assert_eq!(r.status, 403);
    let r = c
        .send(&[("origin", "https://evil.example")], &init_body())
        .await;
    assert_eq!(r.status, 403);
    let r = c.send(&[("origin", "null")], &init_body()).await;
    assert_eq!(r.status, 403);
    let r = c.send(&[("host", "localhost")], &init_body()).await;
    assert_eq!(
        r.status, 200,
        "loopback names are fine when bound to loopback"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_are_bound_to_their_principal_and_end_with_delete() {
    let gw = Gateway::start(ECHO);
    let mut alice = gw.client(&gw.alice);
    alice.initialize().await;
    let session = alice.session.clone().expect("session");
    assert!(
        session.len() >= 40,
        "session ids carry at least 32 random bytes"
    );

    // Bob replays alice's session id: 404, exactly like an unknown id.
    let mut bob = gw.client(&gw.bob);
    bob.session = Some(session.clone());
    let r = bob.call("tools/list", json!({})).await;
    assert_eq!(r.status, 404);
    let mut guess = gw.client(&gw.alice);
    guess.session = Some("0".repeat(43));
    assert_eq!(guess.call("tools/list", json!({})).await.status, 404);
    // No session at all: 400.
    let mut none = gw.client(&gw.alice);
    assert_eq!(none.call("tools/list", json!({})).await.status, 400);

    let bob_delete = gw
        .http
        .delete(&gw.url)
        .header("authorization", format!("Bearer {}", gw.bob))
        .header("mcp-session-id", &session)
        .send()
        .await
        .expect("delete");
    assert_eq!(bob_delete.status(), 404, "bob cannot end alice's session");
    assert_eq!(alice.call("tools/list", json!({})).await.status, 200);
    let delete = gw
        .http
        .delete(&gw.url)
        .header("authorization", format!("Bearer {}", gw.alice))
        .header("mcp-session-id", &session)
        .send()
        .await
        .expect("delete");
    assert_eq!(delete.status(), 204);
    assert_eq!(
        alice.call("tools/list", json!({})).await.status,
        404,
        "an ended session is gone"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_deep_duplicate_batched_and_invalid_messages_are_refused() {
    let gw = Gateway::start(ECHO);
    let c = gw.client(&gw.alice);
    let raw = |body: Vec<u8>| {
        c.http
            .post(&gw.url)
            .header("authorization", format!("Bearer {}", gw.alice))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body)
            .send()
    };
    let cases: Vec<(&str, Vec<u8>, u16, i64)> = vec![
        (
            "oversized",
            format!(
                "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"params\":{{\"x\":\"{}\"}}}}",
                "a".repeat(100 * 1024)
            )
            .into_bytes(),
            413,
            -32600,
        ),
        (
            "deep",
            format!(
                "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"params\":{}1{}}}",
                "{\"a\":".repeat(100),
                "}".repeat(100)
            )
            .into_bytes(),
            400,
            -32700,
        ),
        (
            "duplicate method",
            br#"{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/list"}"#.to_vec(),
            400,
            -32700,
        ),
        (
            "batch",
            br#"[{"jsonrpc":"2.0","id":1,"method":"initialize"}]"#.to_vec(),
            400,
            -32600,
        ),
        (
            "null id",
            br#"{"jsonrpc":"2.0","id":null,"method":"initialize"}"#.to_vec(),
            400,
            -32600,
        ),
        (
            "invalid utf-8",
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\xff\"}".to_vec(),
            400,
            -32700,
        ),
        (
            "lone surrogate",
            br#"{"jsonrpc":"2.0","id":1,"method":"\ud800"}"#.to_vec(),
            400,
            -32700,
        ),
        (
            "huge number",
            br#"{"jsonrpc":"2.0","id":1e999,"method":"initialize"}"#.to_vec(),
            400,
            -32700,
        ),
        ("not json", b"hello".to_vec(), 400, -32700),
        (
            "wrong version",
            br#"{"jsonrpc":"1.0","id":1,"method":"initialize"}"#.to_vec(),
            400,
            -32600,
        ),
    ];
    for (name, body, status, code) in &cases {
        let r = read_reply(raw(body.clone()).await.expect("send")).await;
        assert_eq!(r.status, *status, "{name}: {}", r.body);
        assert_eq!(r.error_code(), *code, "{name}");
        assert!(
            r.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{name}: a clear message"
        );
    }
    let wrong_type = c
        .request(&[("content-type", "text/plain")], &init_body())
        .send()
        .await
        .expect("send");
    assert_eq!(wrong_type.status(), 415);
    let records = gw.audit_at_least(cases.len() + 1).await;
    assert_eq!(records.len(), cases.len() + 1, "each refusal audited once");
    assert!(records.iter().all(|r| r["decision"] == "deny"));
}

#[tokio::test(flavor = "multi_thread")]
async fn stateless_headers_must_match_the_body() {
    let gw = Gateway::start(ECHO);
    gw.wait_ready(&["echo"]).await;
    let c = gw.client(&gw.alice);
    let call = |name: &str| json!({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":name,"arguments":{"text":"x"},"_meta":meta_2026()}});
    let good = [
        ("mcp-protocol-version", V2026),
        ("mcp-method", "tools/call"),
        ("mcp-name", "echo.echo"),
    ];
    assert_eq!(c.send(&good, &call("echo.echo")).await.status, 200);

    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Value, u16, i64);
    let cases: Vec<Case> = vec![
        (
            "method mismatch",
            vec![
                ("mcp-protocol-version", V2026),
                ("mcp-method", "tools/list"),
                ("mcp-name", "echo.echo"),
            ],
            call("echo.echo"),
            400,
            -32020,
        ),
        (
            "name mismatch",
            vec![
                ("mcp-protocol-version", V2026),
                ("mcp-method", "tools/call"),
                ("mcp-name", "echo.env"),
            ],
            call("echo.echo"),
            400,
            -32020,
        ),
        (
            "name missing",
            vec![
                ("mcp-protocol-version", V2026),
                ("mcp-method", "tools/call"),
            ],
            call("echo.echo"),
            400,
            -32020,
        ),
        (
            "method missing",
            vec![("mcp-protocol-version", V2026), ("mcp-name", "echo.echo")],
            call("echo.echo"),
            400,
            -32020,
        ),
        (
            "version header missing",
            vec![("mcp-method", "tools/call"), ("mcp-name", "echo.echo")],
            call("echo.echo"),
            400,
            -32020,
        ),
        (
            "version mismatch",
            vec![
                ("mcp-protocol-version", "2025-11-25"),
                ("mcp-method", "tools/call"),
                ("mcp-name", "echo.echo"),
            ],
            call("echo.echo"),
            400,
            -32020,
        ),
        (
            "unsupported version",
            vec![
                ("mcp-protocol-version", "2099-01-01"),
                ("mcp-method", "tools/call"),
                ("mcp-name", "echo.echo"),
            ],
            json!({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo.echo","_meta":{"io.modelcontextprotocol/protocolVersion":"2099-01-01","io.modelcontextprotocol/clientCapabilities":{}}}}),
            400,
            -32022,
        ),
        (
            "meta missing",
            vec![
                ("mcp-protocol-version", V2026),
                ("mcp-method", "tools/list"),
            ],
            json!({"jsonrpc":"2.0","id":7,"method":"tools/list"}),
            400,
            -32602,
        ),
        (
            "capabilities missing",
            vec![
                ("mcp-protocol-version", V2026),
                ("mcp-method", "tools/list"),
            ],
            json!({"jsonrpc":"2.0","id":7,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":V2026}}}),
            400,
            -32602,
        ),
        (
            "unknown method",
            vec![
                ("mcp-protocol-version", V2026),
                ("mcp-method", "tools/nope"),
            ],
            json!({"jsonrpc":"2.0","id":7,"method":"tools/nope","params":{"_meta":meta_2026()}}),
            404,
            -32601,
        ),
    ];
    for (name, headers, body, status, code) in &cases {
        let r = c.send(headers, body).await;
        assert_eq!(r.status, *status, "{name}: {}", r.body);
        assert_eq!(r.error_code(), *code, "{name}");
        if *code == -32022 {
            assert!(
                r.body["error"]["data"]["supported"]
                    .as_array()
                    .is_some_and(|s| s.contains(&json!(V2026)))
            );
        }
    }
    // A name that needs the base64 header encoding is accepted when encoded correctly.
    let odd = "echo.ünïcode";
    let encoded = format!("=?base64?{}?=", base64_encode(odd.as_bytes()));
    let r = c
        .send(
            &[
                ("mcp-protocol-version", V2026),
                ("mcp-method", "tools/call"),
                ("mcp-name", &encoded),
            ],
            &call(odd),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.error_code(),
        -32602,
        "routed (and refused as unknown), not a header mismatch"
    );
    // GET and DELETE do not exist in the stateless era.
    let get = gw
        .http
        .get(&gw.url)
        .header("authorization", format!("Bearer {}", gw.alice))
        .header("mcp-protocol-version", V2026)
        .send()
        .await
        .expect("get");
    assert_eq!(get.status(), 405);
}

fn base64_encode(bytes: &[u8]) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn default_deny_hides_and_refuses_everything_not_granted() {
    let gw = Gateway::start(ECHO);
    gw.wait_ready(&["echo"]).await;
    let mut bob = gw.client(&gw.bob);
    bob.initialize().await;
    assert!(
        tool_names(&bob.call("tools/list", json!({})).await).is_empty(),
        "bob has no grants"
    );
    assert_eq!(
        bob.call("resources/list", json!({})).await.result()["resources"],
        json!([])
    );
    let denied = bob
        .call(
            "tools/call",
            json!({"name": "echo.echo", "arguments": {"text": "x"}}),
        )
        .await;
    let unknown = bob
        .call(
            "tools/call",
            json!({"name": "echo.nosuch", "arguments": {}}),
        )
        .await;
    assert_eq!(denied.error_code(), -32602);
    assert_eq!(
        denied.body["error"]["message"]
            .as_str()
            .map(|m| m.replace("echo.echo", "X")),
        unknown.body["error"]["message"]
            .as_str()
            .map(|m| m.replace("echo.nosuch", "X")),
        "denied and unknown look the same, so names cannot be probed"
    );
    let records = gw.audit_at_least(6).await;
    let denial = records
        .iter()
        .find(|r| r["target"] == "echo.echo")
        .expect("audited");
    assert_eq!(denial["decision"], "deny");
    assert_eq!(denial["rule"], "default-deny");
    assert_eq!(denial["principal"], "bob");
}

#[tokio::test(flavor = "multi_thread")]
async fn identical_request_ids_from_concurrent_clients_never_cross() {
    let gw = Gateway::start(ECHO);
    gw.wait_ready(&["echo"]).await;
    let mut clients = Vec::new();
    for _ in 0..4 {
        let mut c = gw.client(&gw.alice);
        c.initialize().await;
        clients.push(c);
    }
    let mut calls = Vec::new();
    for (ci, c) in clients.iter().enumerate() {
        for round in 0..10 {
            let c = c.clone();
            calls.push(async move {
                // Every client uses the same ids 1..=10.
                let body = json!({"jsonrpc":"2.0","id":round,"method":"tools/call","params":{"name":"echo.echo","arguments":{"text":format!("client{ci}-round{round}")}}});
                let r = c.send(&[("mcp-protocol-version", "2025-11-25")], &body).await;
                (ci, round, r)
            });
        }
    }
    for (ci, round, r) in futures::future::join_all(calls).await {
        assert_eq!(r.body["id"], round);
        assert_eq!(text_of(&r), format!("client{ci}-round{round}"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_cannot_cancel_another_clients_request() {
    let gw = Gateway::start(ECHO);
    gw.wait_ready(&["echo"]).await;
    let mut a = gw.client(&gw.alice);
    a.initialize().await;
    let mut b = gw.client(&gw.alice);
    b.initialize().await;
    let slow = json!({"jsonrpc":"2.0","id":99,"method":"tools/call","params":{"name":"echo.slow","arguments":{"seconds":0.6,"steps":2}}});
    let a2 = a.clone();
    let a_call = tokio::spawn(async move {
        a2.send(&[("mcp-protocol-version", "2025-11-25")], &slow)
            .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    let cancel =
        json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":99}});
    assert_eq!(
        b.send(&[("mcp-protocol-version", "2025-11-25")], &cancel)
            .await
            .status,
        202
    );
    let r = a_call.await.expect("join");
    assert_eq!(
        text_of(&r),
        "done after 2 steps",
        "b's cancel must not touch a's request 99"
    );

    // The owner can cancel its own request.
    let slow = json!({"jsonrpc":"2.0","id":100,"method":"tools/call","params":{"name":"echo.slow","arguments":{"seconds":5,"steps":5}}});
    let a2 = a.clone();
    let started = std::time::Instant::now();
    let a_call = tokio::spawn(async move {
        a2.send(&[("mcp-protocol-version", "2025-11-25")], &slow)
            .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    let cancel =
        json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":100}});
    assert_eq!(
        a.send(&[("mcp-protocol-version", "2025-11-25")], &cancel)
            .await
            .status,
        202
    );
    let r = a_call.await.expect("join");
    assert!(
        r.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("cancelled")),
        "{}",
        r.body
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(4));
}

/// Found by the MCP conformance suite (server-stateless, SEP-2575).
#[tokio::test(flavor = "multi_thread")]
async fn regression_methods_removed_in_2026_are_not_found_for_2026_requests() {
    let gw = Gateway::start(ECHO);
    let mut c = gw.client(&gw.alice);
    for method in [
        "initialize",
        "ping",
        "logging/setLevel",
        "resources/subscribe",
        "resources/unsubscribe",
    ] {
        let r = c.call_2026(method, json!({"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}, "level": "info", "uri": "echo+echo://readme"})).await;
        assert_eq!(r.status, 404, "{method}: {}", r.body);
        assert_eq!(r.error_code(), -32601, "{method}");
        assert!(
            r.headers.get("mcp-session-id").is_none(),
            "{method} must not start a session"
        );
    }
}

/// Found by the MCP conformance suite review: required `initialize` params and log levels.
#[tokio::test(flavor = "multi_thread")]
async fn regression_initialize_and_set_level_validate_their_params() {
    let gw = Gateway::start(ECHO);
    let c = gw.client(&gw.alice);
    for params in [
        json!(null),
        json!({}),
        json!({"protocolVersion": "2025-11-25"}),
        json!({"protocolVersion": 7, "capabilities": {}, "clientInfo": {}}),
    ] {
        let mut body = json!({"jsonrpc":"2.0","id":1,"method":"initialize"});
        if !params.is_null() {
            body["params"] = params.clone();
        }
        let r = c.send(&[], &body).await;
        assert_eq!(r.status, 400, "{params}: {}", r.body);
        assert_eq!(r.error_code(), -32602);
        assert!(
            r.headers.get("mcp-session-id").is_none(),
            "no session for a refused initialize"
        );
    }
    let mut s = gw.client(&gw.alice);
    s.initialize().await;
    assert_eq!(
        s.call("logging/setLevel", json!({"level": "warning"}))
            .await
            .result(),
        &json!({})
    );
    assert_eq!(
        s.call("logging/setLevel", json!({"level": "bogus"}))
            .await
            .error_code(),
        -32602
    );
    assert_eq!(
        s.call("logging/setLevel", json!({})).await.error_code(),
        -32602
    );
}
