//! Human approvals through the real binary: the admin API on its own listener, its own tokens,
//! the `micromcp approvals` CLI, and (with a Cedar policy carrying `@approval("required")`)
//! calls held until an approver decides, in both protocol eras, with the Python SDK.

mod common;

use std::process::{Command, Output};

use common::*;
use serde_json::{Value, json};

/// Tokens of one test: the MCP callers (alice, bob) come from the harness; carol is an
/// approver on the admin API; alice is an approver there too, with another token, so that
/// "never the requester" is tested with a real approver.
struct Admins {
    carol: Token,
    alice: Token,
}

fn admins() -> Admins {
    Admins {
        carol: token(),
        alice: token(),
    }
}

fn admin_section(a: &Admins, approvals: &str) -> String {
    format!(
        r#"
[admin]
addr = "127.0.0.1:0"

[[admin.tokens]]
principal = "carol"
roles = ["approver"]
hash = "{}"

[[admin.tokens]]
principal = "alice"
roles = ["approver"]
hash = "{}"

[approvals]
progress_interval = "200ms"
{approvals}
"#,
        a.carol.hash, a.alice.hash
    )
}

/// The admin API's base URL, as the gateway announced it.
fn admin_url(gw: &Gateway) -> String {
    gw.stderr_text()
        .lines()
        .find_map(|l| l.strip_prefix("micromcp: admin API on "))
        .unwrap_or_else(|| panic!("no admin API announced:\n{}", gw.stderr_text()))
        .to_owned()
}

struct AdminReply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

async fn admin_request(
    gw: &Gateway,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
    extra: &[(&str, &str)],
) -> AdminReply {
    let mut request = gw.http.request(method, format!("{}{path}", admin_url(gw)));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    for (k, v) in extra {
        request = request.header(*k, *v);
    }
    let response = request.send().await.expect("admin request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    AdminReply {
        status,
        headers,
        body,
    }
}

/// Runs `micromcp approvals ARGS` as an approver with `token` (none: the variable unset).
fn approvals_cli(gw: &Gateway, token: Option<&str>, args: &[&str]) -> Output {
    let mut command = Command::new(BIN);
    command
        .arg("approvals")
        .args(args)
        .args(["--admin", &admin_url(gw)])
        .env_remove("MICROMCP_ADMIN_TOKEN");
    if let Some(token) = token {
        command.env("MICROMCP_ADMIN_TOKEN", token);
    }
    command.output().expect("run micromcp approvals")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn the_admin_api_takes_only_admin_tokens_and_refuses_browsers_and_bad_requests() {
    let a = admins();
    let gw = Gateway::start(&format!("{ECHO}{}", admin_section(&a, "")));
    let carol = a.carol.token.as_str();
    let get = reqwest::Method::GET;
    let post = reqwest::Method::POST;

    let listed = admin_request(&gw, get.clone(), "/v1/approvals", Some(carol), None, &[]).await;
    assert_eq!(
        (listed.status, &listed.body),
        (200, &json!({ "approvals": [] }))
    );

    // Credentials: only [[admin.tokens]] here, and admin tokens never on /mcp.
    let cases: [(Option<&str>, &str); 3] = [
        (None, "no token"),
        (Some(gw.alice.as_str()), "an /mcp token"),
        (
            Some("mmcp_not-a-real-token-at-all-0000000000000000000"),
            "an unknown token",
        ),
    ];
    for (token, what) in cases {
        let r = admin_request(&gw, get.clone(), "/v1/approvals", token, None, &[]).await;
        assert_eq!(r.status, 401, "{what}: {}", r.body);
        assert_eq!(r.body["error"]["code"], "unauthorized", "{what}");
        assert!(
            r.headers["www-authenticate"]
                .to_str()
                .is_ok_and(|v| v.contains("micromcp-admin")),
            "{what}"
        );
    }
    let as_carol = gw.client(carol);
    let refused = as_carol
        .send(&[], &json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
            "protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}))
        .await;
    assert_eq!(
        refused.status, 401,
        "an admin token on /mcp: {}",
        refused.body
    );

    // Transport: no web pages, loopback names only, no query strings.
    for (extra, path, status, code) in [
        (
            &[("origin", "http://127.0.0.1:9999")][..],
            "/v1/approvals",
            403,
            "browser_request",
        ),
        (
            &[("host", "evil.example")][..],
            "/v1/approvals",
            403,
            "bad_host",
        ),
        (&[][..], "/v1/approvals?token=x", 400, "query_string"),
        (&[][..], "/v1/nothing", 404, "not_found"),
        (
            &[][..],
            "/v1/approvals/apr_000000000000000000000000",
            404,
            "unknown_approval",
        ),
    ] {
        let r = admin_request(&gw, get.clone(), path, Some(carol), None, extra).await;
        assert_eq!(
            (r.status, r.body["error"]["code"].as_str()),
            (status, Some(code)),
            "{path} {extra:?}: {}",
            r.body
        );
        assert!(
            r.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    let r = admin_request(
        &gw,
        reqwest::Method::DELETE,
        "/v1/approvals",
        Some(carol),
        None,
        &[],
    )
    .await;
    assert_eq!(r.status, 405);

    // Decisions: strict bodies, unknown ids named.
    let approve = "/v1/approvals/apr_000000000000000000000000/approve";
    let hash = "0".repeat(64);
    for (body, status, code) in [
        (json!({ "arguments_sha256": hash }), 404, "unknown_approval"),
        (json!({ "arguments_sha256": "abc" }), 400, "bad_request"),
        (
            json!({ "arguments_sha256": hash, "approver": "mallory" }),
            400,
            "bad_request",
        ),
        (
            json!({ "reason": "line\nbreak", "arguments_sha256": hash }),
            400,
            "bad_request",
        ),
        (json!(["not", "an", "object"]), 400, "bad_request"),
    ] {
        let r = admin_request(&gw, post.clone(), approve, Some(carol), Some(&body), &[]).await;
        assert_eq!(
            (r.status, r.body["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}: {}",
            r.body
        );
    }
    let r = admin_request(
        &gw,
        post.clone(),
        approve,
        Some(carol),
        None,
        &[("content-type", "text/plain")],
    )
    .await;
    assert_eq!(r.status, 404, "an empty body is no body: {}", r.body);
    let plain = gw
        .http
        .post(format!("{}{approve}", admin_url(&gw)))
        .bearer_auth(carol)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .expect("send");
    assert_eq!(plain.status().as_u16(), 415);

    // One audit record per admin request, transport "admin", the approver named when known.
    let admin_requests = 1 + 3 + 5 + 1 + 5 + 1 + 1;
    let records = gw.audit_at_least(admin_requests + 1).await;
    let admin: Vec<&Value> = records
        .iter()
        .filter(|r| r["transport"] == "admin")
        .collect();
    assert_eq!(admin.len(), admin_requests, "{admin:#?}");
    assert_eq!(admin[0]["decision"], "allow");
    assert_eq!(admin[0]["principal"], "carol");
    assert_eq!(admin[0]["method"], "approvals/list");
    assert!(
        admin[1..].iter().all(|r| r["decision"] == "deny"),
        "{admin:#?}"
    );
    assert!(
        admin[1..4]
            .iter()
            .all(|r| r["rule"] == "admin-auth" && r.get("principal").is_none())
    );
    let unknown = admin
        .iter()
        .find(|r| r["method"] == "approvals/approve")
        .expect("an approve record");
    assert_eq!(unknown["rule"], "unknown-approval");
    assert_eq!(unknown["approval"]["id"], "apr_000000000000000000000000");
    assert_eq!(unknown["approval"]["outcome"], "refused");
    let all = serde_json::to_string(&records).expect("json");
    for secret in [carol, a.alice.token.as_str(), gw.alice.as_str()] {
        assert!(!all.contains(secret), "a token in the audit log");
    }
}

#[tokio::test]
async fn the_cli_needs_its_token_from_the_environment_and_reports_refusals() {
    let a = admins();
    let gw = Gateway::start(&format!("{ECHO}{}", admin_section(&a, "")));
    let listed = approvals_cli(&gw, Some(&a.carol.token), &["list"]);
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    assert_eq!(
        text(&listed.stdout).trim(),
        "no calls are waiting for approval"
    );

    let no_token = approvals_cli(&gw, None, &["list"]);
    assert!(!no_token.status.success());
    assert!(
        text(&no_token.stderr).contains("MICROMCP_ADMIN_TOKEN"),
        "{}",
        text(&no_token.stderr)
    );

    let wrong = approvals_cli(&gw, Some(&gw.alice), &["list"]);
    assert!(!wrong.status.success());
    assert!(
        text(&wrong.stderr).contains("refused (HTTP 401 unauthorized)"),
        "{}",
        text(&wrong.stderr)
    );

    let unknown = approvals_cli(&gw, Some(&a.carol.token), &["show", "apr_0123"]);
    assert!(!unknown.status.success());
    assert!(
        text(&unknown.stderr)
            .contains("refused (HTTP 404 unknown_approval): no pending approval \"apr_0123\""),
        "{}",
        text(&unknown.stderr)
    );
    let typo = approvals_cli(&gw, Some(&a.carol.token), &["approve", "../v1/approvals"]);
    assert!(!typo.status.success());
    assert!(
        text(&typo.stderr).contains("is not an approval id"),
        "{}",
        text(&typo.stderr)
    );

    // --config finds the admin API in the config file (here its port is chosen at start).
    let from_config = Command::new(BIN)
        .args(["approvals", "list", "--config"])
        .arg(gw.path("gateway.toml"))
        .env("MICROMCP_ADMIN_TOKEN", &a.carol.token)
        .output()
        .expect("run");
    assert!(!from_config.status.success());
    assert!(
        text(&from_config.stderr).contains("port 0"),
        "{}",
        text(&from_config.stderr)
    );
}

#[tokio::test]
async fn without_an_admin_listener_there_is_no_admin_api() {
    let gw = Gateway::start(ECHO);
    assert!(
        !gw.stderr_text().contains("admin API"),
        "{}",
        gw.stderr_text()
    );
}
