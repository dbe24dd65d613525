//! The gateway as an OAuth resource server, without an identity provider: protected resource
//! metadata (RFC 9728), the `WWW-Authenticate` challenges that point to it, required scopes
//! (403 `insufficient_scope`, step-up), and grants that match roles and tenants.

mod common;

use common::*;
use serde_json::{Value, json};

const RESOURCE: &str = "https://mcp.example.com/mcp";
const METADATA: &str = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp";

/// alice (agent bot, tenant acme) has scope `echo:read`; carol has role `support`.
fn config(alice: &Token, bob: &Token, carol: &Token) -> String {
    format!(
        r#"
[listen]
addr = "127.0.0.1:0"

[audit]
file = "audit.jsonl"

[auth]
resource = "{RESOURCE}"

[[auth.tokens]]
principal = "alice"
agent = "bot"
tenant = "acme"
scopes = ["echo:read"]
hash = "{}"

[[auth.tokens]]
principal = "bob"
hash = "{}"

[[auth.tokens]]
principal = "carol"
tenant = "acme"
roles = ["support"]
hash = "{}"

[[policy.grants]]
principal = "alice"
tools = ["echo.*"]

[[policy.grants]]
roles = ["support", "admin"]
tenant = "acme"
tools = ["echo.echo"]

[[policy.scopes]]
tools = ["echo.add", "echo.slow"]
scopes = ["echo:write"]

[[policy.scopes]]
tools = ["echo.*"]
scopes = ["echo:read"]

[services.echo]
builtin = "echo"
"#,
        alice.hash, bob.hash, carol.hash
    )
}

fn start() -> (Gateway, String) {
    let (alice, bob, carol) = (token(), token(), token());
    let gw = Gateway::start_raw(&config(&alice, &bob, &carol), alice.token, bob.token);
    (gw, carol.token)
}

fn challenge(reply: &Reply) -> String {
    reply
        .headers
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn protected_resource_metadata_is_served_at_both_well_known_paths() {
    let (gw, _) = start();
    let base = gw.url.trim_end_matches("/mcp").to_owned();
    for path in [
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-protected-resource",
    ] {
        let response = gw
            .http
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("get");
        assert_eq!(response.status(), 200, "{path}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["resource"], RESOURCE, "{path}");
        assert_eq!(body["authorization_servers"], json!([]), "{path}");
        assert_eq!(body["bearer_methods_supported"], json!(["header"]));
        assert_eq!(
            body["scopes_supported"],
            json!(["echo:write", "echo:read"]),
            "every scope a rule needs, once"
        );
    }
}

#[tokio::test]
async fn every_401_points_to_the_metadata() {
    let (gw, _) = start();
    let mut nobody = gw.client("");
    nobody.token = None;
    let missing = nobody
        .send(&[], &json!({"jsonrpc":"2.0","id":1,"method":"ping"}))
        .await;
    assert_eq!(missing.status, 401);
    assert_eq!(
        challenge(&missing),
        format!("Bearer realm=\"micromcp\", resource_metadata=\"{METADATA}\"")
    );
    let bad = gw
        .client("mmcp_not-a-real-token")
        .send(&[], &json!({"jsonrpc":"2.0","id":1,"method":"ping"}))
        .await;
    assert_eq!(bad.status, 401);
    assert_eq!(
        challenge(&bad),
        format!(
            "Bearer realm=\"micromcp\", resource_metadata=\"{METADATA}\", error=\"invalid_token\""
        )
    );
    let audit = gw.audit_at_least(2).await;
    let reason = audit
        .iter()
        .filter_map(|r| r["reason"].as_str())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        reason.contains("no [[auth.tokens]] entry has this token's hash"),
        "the audit says which rule refused it: {reason}"
    );
    assert!(!reason.contains("not-a-real-token"), "never the token");
}

#[tokio::test]
async fn a_granted_tool_without_its_scope_is_403_insufficient_scope_naming_the_scope() {
    let (gw, _) = start();
    let mut alice = gw.client(&gw.alice);
    alice.initialize().await;
    let listed = alice.call("tools/list", json!({})).await;
    let names = tool_names(&listed);
    assert!(
        names.contains(&"echo.add".to_owned()),
        "granted tools are listed even when a scope is missing (step-up): {names:?}"
    );
    let ok = alice
        .call(
            "tools/call",
            json!({"name":"echo.echo","arguments":{"text":"hi"}}),
        )
        .await;
    assert_eq!(text_of(&ok), "hi");
    let refused = alice
        .call(
            "tools/call",
            json!({"name":"echo.add","arguments":{"a":1,"b":2}}),
        )
        .await;
    assert_eq!(refused.status, 403);
    assert_eq!(
        challenge(&refused),
        format!(
            "Bearer realm=\"micromcp\", resource_metadata=\"{METADATA}\", error=\"insufficient_scope\", scope=\"echo:write\""
        )
    );
    assert_eq!(refused.error_code(), -32030);
    assert_eq!(refused.body["error"]["data"]["scope"], "echo:write");
    let denied = gw.audit_find(|r| r["target"] == "echo.add").await;
    assert_eq!(denied["decision"], "deny");
    assert_eq!(denied["rule"], "scopes[0]");
    assert_eq!(denied["auth_method"], "api_token");
}

#[tokio::test]
async fn grants_by_role_and_tenant_match_only_principals_that_have_them() {
    let (gw, carol) = start();
    let mut carol = gw.client(&carol);
    carol.initialize().await;
    let names = tool_names(&carol.call("tools/list", json!({})).await);
    assert_eq!(names, vec!["echo.echo".to_owned()]);
    // carol's grant has no scope rule exemption: echo.* needs echo:read, which she lacks.
    let refused = carol
        .call(
            "tools/call",
            json!({"name":"echo.echo","arguments":{"text":"x"}}),
        )
        .await;
    assert_eq!(refused.status, 403, "{:?}", refused.body);
    assert_eq!(refused.body["error"]["data"]["scope"], "echo:read");
    // bob has neither the role nor the tenant: nothing is listed, and a call looks unknown.
    let mut bob = gw.client(&gw.bob);
    bob.initialize().await;
    assert!(tool_names(&bob.call("tools/list", json!({})).await).is_empty());
    let denied = bob
        .call(
            "tools/call",
            json!({"name":"echo.echo","arguments":{"text":"x"}}),
        )
        .await;
    assert_eq!(denied.status, 200);
    assert_eq!(denied.error_code(), -32602, "no scope hint without a grant");
}
