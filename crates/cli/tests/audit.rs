//! Audit v1: exactly one JSON line per request, allowed, denied or failed; no token and no
//! argument value in it.

mod common;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn every_request_yields_exactly_one_record_without_secrets() {
    let gw = Gateway::start(ECHO);
    gw.wait_ready(&["echo"]).await;
    let secret_argument = "s3cr3t-argument-value-8c1f";
    let mut alice = gw.client(&gw.alice);
    let mut requests = 0;
    alice.initialize().await; // initialize + notifications/initialized
    requests += 2;
    alice.call("tools/list", json!({})).await;
    alice
        .call(
            "tools/call",
            json!({"name": "echo.echo", "arguments": {"text": secret_argument}}),
        )
        .await;
    alice
        .call(
            "tools/call",
            json!({"name": "echo.fail", "arguments": {"message": secret_argument}}),
        )
        .await;
    alice
        .call(
            "tools/call",
            json!({"name": "nosuch.tool", "arguments": {}}),
        )
        .await;
    alice.call("nosuch/method", json!({})).await;
    alice
        .call_2026(
            "tools/call",
            json!({"name": "echo.echo", "arguments": {"text": secret_argument}}),
        )
        .await;
    requests += 6;
    let mut bob = gw.client(&gw.bob);
    bob.initialize().await;
    bob.call(
        "tools/call",
        json!({"name": "echo.echo", "arguments": {"text": secret_argument}}),
    )
    .await;
    requests += 3;
    let wrong = gw.client("mmcp_wrong");
    wrong
        .send(&[], &json!({"jsonrpc":"2.0","id":1,"method":"ping"}))
        .await;
    requests += 1;

    let records = gw.audit_at_least(requests).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let records_later = gw.audit();
    assert_eq!(records.len(), requests, "{records:#?}");
    assert_eq!(
        records_later.len(),
        requests,
        "no extra records appear later"
    );

    let text = std::fs::read_to_string(gw.path("audit.jsonl")).expect("audit");
    for secret in [gw.alice.as_str(), gw.bob.as_str(), secret_argument] {
        assert!(
            !text.contains(secret),
            "audit log contains a secret: {secret}"
        );
    }
    let ids: std::collections::HashSet<&str> = records
        .iter()
        .map(|r| r["request_id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids.len(), records.len(), "request ids are unique");
    for r in &records {
        for field in [
            "time",
            "request_id",
            "transport",
            "decision",
            "status",
            "latency_us",
        ] {
            assert!(r.get(field).is_some(), "missing {field} in {r}");
        }
    }
    let call = records
        .iter()
        .find(|r| r["target"] == "echo.echo" && r["principal"] == "alice")
        .expect("call record");
    assert_eq!(call["decision"], "allow");
    assert_eq!(call["service"], "echo");
    assert_eq!(call["rule"], "grants[0]");
    assert_eq!(call["agent"], "bot");
    assert_eq!(call["tenant"], "acme");
    assert!(call["arguments"]["bytes"].as_u64().is_some_and(|b| b > 0));
    assert_eq!(
        call["arguments"]["hmac_sha256"].as_str().map(str::len),
        Some(64)
    );
    assert_eq!(call["status"], "ok");
    let failed = records
        .iter()
        .find(|r| r["target"] == "echo.fail")
        .expect("failing call record");
    assert_eq!(failed["decision"], "allow");
    assert_eq!(failed["status"], "tool_error", "{failed}");
    let denied = records
        .iter()
        .find(|r| r["principal"] == "bob" && r["method"] == "tools/call")
        .expect("bob's call");
    assert_eq!(denied["decision"], "deny");
    let unknown = records
        .iter()
        .find(|r| r["target"] == "nosuch.tool")
        .expect("unknown tool");
    assert_eq!(unknown["rule"], "no-route");
    let unauthenticated = records
        .iter()
        .find(|r| r["http_status"] == 401)
        .expect("401");
    assert!(unauthenticated.get("principal").is_none());
}
