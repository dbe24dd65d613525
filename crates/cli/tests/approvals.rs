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

// ---------------------------------------------------------------------------------------------
// Held calls, end to end: the requester is the official Python SDK, the approver the CLI.

/// The policy of the end-to-end tests: alice may use echo (a grant); `echo.add` needs an
/// approval (`fixtures/approvals.cedar`, a permit with `@approval("required")`).
fn policy() -> String {
    let cedar = workspace().join("crates/cli/tests/fixtures/approvals.cedar");
    format!(
        "[policy]\nfiles = [{:?}]\n{ECHO}",
        cedar.to_str().expect("UTF-8 path")
    )
}

/// A gateway whose `echo.add` calls are held for approval.
fn approval_gateway(a: &Admins, approvals: &str) -> Gateway {
    Gateway::start(&format!("{}{}", policy(), admin_section(a, approvals)))
}

/// A tool call made by the Python SDK in its own process, reporting what it sees line by line.
struct Requester {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<Value>,
    seen: Vec<Value>,
}

impl Requester {
    /// Calls `tool` as alice (agent bot) in `mode` (`legacy` or `2026-07-28`), and waits until
    /// the client has connected.
    fn call(gw: &Gateway, mode: &str, tool: &str, arguments: &Value, progress: bool) -> Requester {
        Self::call_with(gw, mode, tool, arguments, progress, None)
    }

    /// Like [`Requester::call`], with the SDK's HTTP read timeout set to `read_timeout` seconds.
    fn call_with(
        gw: &Gateway,
        mode: &str,
        tool: &str,
        arguments: &Value,
        progress: bool,
        read_timeout: Option<u32>,
    ) -> Requester {
        let mut command = Command::new(tool_path("venv/bin/python"));
        command
            .arg(workspace().join("crates/cli/tests/fixtures/held_call.py"))
            .args([&gw.url, &gw.alice, mode, tool, &arguments.to_string()])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit());
        if progress {
            command.arg("--progress");
        }
        if let Some(seconds) = read_timeout {
            command.args(["--read-timeout", &seconds.to_string()]);
        }
        let mut child = command.spawn().expect("start the Python client");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let value = serde_json::from_str(&line).unwrap_or(Value::String(line));
                if tx.send(value).is_err() {
                    return;
                }
            }
        });
        let mut requester = Requester {
            child,
            lines,
            seen: Vec::new(),
        };
        let ready = requester.next_matching(|v| v.get("ready").is_some());
        assert_eq!(
            ready["protocol_version"],
            if mode == "legacy" {
                "2025-11-25"
            } else {
                V2026
            },
            "{ready}"
        );
        requester
    }

    /// The next line that `matches` (30 s at most), keeping every line seen.
    fn next_matching(&mut self, matches: impl Fn(&Value) -> bool) -> Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) => {
                    self.seen.push(v.clone());
                    if matches(&v) {
                        return v;
                    }
                }
                Err(e) => panic!(
                    "no matching line from the client ({e}); saw {:#?}",
                    self.seen
                ),
            }
        }
    }

    /// The call's outcome: `{"result": …}` or `{"error": …}`.
    fn outcome(&mut self) -> Value {
        self.next_matching(|v| v.get("result").is_some() || v.get("error").is_some())
    }
}

impl Drop for Requester {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tool_path(rel: &str) -> std::path::PathBuf {
    common::tool(rel)
}

/// Waits until exactly `n` calls are pending and returns them.
async fn pending(gw: &Gateway, token: &str, n: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let r = admin_request(
            gw,
            reqwest::Method::GET,
            "/v1/approvals",
            Some(token),
            None,
            &[],
        )
        .await;
        let list = r.body["approvals"].as_array().cloned().unwrap_or_default();
        if list.len() == n {
            return list;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "expected {n} pending approvals, have {list:#?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Runs the CLI off the async runtime's threads (it is a blocking child process).
async fn cli(gw: &Gateway, token: &str, args: &[&str]) -> Output {
    let (token, args) = (
        token.to_owned(),
        args.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
    );
    let url = admin_url(gw);
    tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .arg("approvals")
            .args(&args)
            .args(["--admin", &url])
            .env("MICROMCP_ADMIN_TOKEN", token)
            .output()
            .expect("run micromcp approvals")
    })
    .await
    .expect("cli")
}

/// The audit record of the held `tools/call`.
async fn held_record(gw: &Gateway, id: &str) -> Value {
    gw.audit_find(|r| r["method"] == "tools/call" && r["approval"]["id"] == id)
        .await
}

async fn approve_flow(mode: &str, progress: bool) {
    let a = admins();
    let gw = approval_gateway(&a, "");
    gw.wait_ready(&["echo"]).await;
    let arguments = json!({ "a": 2, "b": 40 });
    let mut requester = Requester::call(&gw, mode, "echo.add", &arguments, progress);
    let listed = pending(&gw, &a.carol.token, 1).await;
    let id = listed[0]["id"].as_str().expect("id").to_owned();
    assert_eq!(listed[0]["tool"], "echo.add");
    assert_eq!(listed[0]["requester"]["user"], "alice");
    assert_eq!(listed[0]["requester"]["agent"], "bot");
    assert!(
        listed[0].get("arguments").is_none(),
        "the list leaves arguments out"
    );
    if progress {
        let note = requester.next_matching(|v| v.get("progress").is_some());
        let message = note["message"].as_str().expect("message");
        assert!(
            message.contains(&id) && message.contains("waiting for approval"),
            "{message}"
        );
    }

    let list = cli(&gw, &a.carol.token, &["list"]).await;
    assert!(list.status.success(), "{}", text(&list.stderr));
    assert!(text(&list.stdout).contains(&id) && text(&list.stdout).contains("echo.add"));
    let shown = cli(&gw, &a.carol.token, &["show", &id]).await;
    assert!(shown.status.success(), "{}", text(&shown.stderr));
    let shown = text(&shown.stdout);
    assert!(shown.contains("echo.add (tools/call)"), "{shown}");
    assert!(shown.contains("alice (agent bot) [tenant acme]"), "{shown}");
    assert!(
        shown.contains("\"a\": 2") && shown.contains("\"b\": 40"),
        "{shown}"
    );
    let hash = micromcp_gateway_hash(&arguments);
    assert!(shown.contains(&hash), "{shown}");

    let approved = cli(
        &gw,
        &a.carol.token,
        &["approve", &id, "--reason", "sums are fine"],
    )
    .await;
    assert!(approved.status.success(), "{}", text(&approved.stderr));
    assert!(
        text(&approved.stdout).contains(&format!("approved {id}")),
        "{}",
        text(&approved.stdout)
    );
    let outcome = requester.outcome();
    assert_eq!(
        outcome["result"]["structuredContent"]["sum"], 42.0,
        "the upstream's own result: {outcome}"
    );

    let record = held_record(&gw, &id).await;
    assert_eq!(record["decision"], "allow", "{record}");
    assert_eq!(record["status"], "ok");
    assert_eq!(record["approval"]["outcome"], "approved");
    assert_eq!(record["approval"]["approver"], "carol");
    assert_eq!(record["approval"]["reason"], "sums are fine");
    let decided = gw
        .audit_find(|r| r["transport"] == "admin" && r["method"] == "approvals/approve")
        .await;
    assert_eq!(decided["principal"], "carol");
    assert_eq!(decided["decision"], "allow");
    assert_eq!(decided["target"], "echo.add");
    assert_eq!(decided["approval"]["id"], id.as_str());
    assert_eq!(decided["approval"]["outcome"], "approved");

    // Replay: the approval was used; a second decision is refused (and audited).
    let again = cli(
        &gw,
        &a.carol.token,
        &["approve", &id, "--arguments-sha256", &hash],
    )
    .await;
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains(&format!(
            "refused (HTTP 409 already_decided): approval {id} was already approved by carol"
        )),
        "{}",
        text(&again.stderr)
    );
    let replay = gw
        .audit_find(|r| r["transport"] == "admin" && r["rule"] == "replay")
        .await;
    assert_eq!(replay["decision"], "deny");
    assert_eq!(replay["approval"]["outcome"], "refused");
}

/// The hash the CLI and the gateway compute (canonical JSON, SHA-256).
fn micromcp_gateway_hash(arguments: &Value) -> String {
    let python = tool_path("venv/bin/python");
    let out = Command::new(python)
        .args([
            "-c",
            "import hashlib,json,sys; print(hashlib.sha256(json.dumps(json.loads(sys.argv[1]), sort_keys=True, separators=(',', ':'), ensure_ascii=False).encode()).hexdigest())",
            &arguments.to_string(),
        ])
        .output()
        .expect("python");
    text(&out.stdout).trim().to_owned()
}

#[tokio::test]
async fn session_era_held_call_with_progress_completes_once_an_approver_approves() {
    approve_flow("legacy", true).await;
}

#[tokio::test]
async fn session_era_held_call_without_progress_completes_once_approved() {
    approve_flow("legacy", false).await;
}

#[tokio::test]
async fn stateless_era_held_call_with_progress_completes_once_approved() {
    approve_flow("2026-07-28", true).await;
}

#[tokio::test]
async fn stateless_era_held_call_without_progress_completes_once_approved() {
    approve_flow("2026-07-28", false).await;
}

#[tokio::test]
async fn a_denied_call_fails_with_the_approvers_reason_and_the_webhook_announced_it() {
    let a = admins();
    let hook = Receiver::start().await;
    let (alice, bob) = (token(), token());
    let config = format!(
        "{}\n{}{}",
        preamble(&alice, &bob),
        policy(),
        admin_section(
            &a,
            &format!(
                "webhook = {{ url = \"{}\", secret = \"env:APPROVAL_HOOK_SECRET\" }}",
                hook.url
            )
        )
    );
    let gw = Gateway::start_with_env(
        &config,
        alice.token,
        bob.token,
        &[("APPROVAL_HOOK_SECRET", HOOK_SECRET)],
    );
    gw.wait_ready(&["echo"]).await;
    let mut requester = Requester::call(&gw, V2026, "echo.add", &json!({ "a": 1, "b": 1 }), true);
    let held = pending(&gw, &a.carol.token, 1).await.remove(0);
    let id = held["id"].as_str().expect("id").to_owned();

    let announced = hook.next().await;
    assert_eq!(announced["type"], "approval.pending");
    assert_eq!(announced["approval"]["id"], id.as_str());
    assert_eq!(announced["approval"]["tool"], "echo.add");
    assert_eq!(announced["approval"]["requester"]["user"], "alice");
    assert_eq!(
        announced["approval"]["arguments_sha256"],
        micromcp_gateway_hash(&json!({ "a": 1, "b": 1 }))
    );
    assert!(announced["approval"].get("arguments").is_none());

    let denied = cli(
        &gw,
        &a.carol.token,
        &["deny", &id, "--reason", "not on a Friday"],
    )
    .await;
    assert!(denied.status.success(), "{}", text(&denied.stderr));
    assert!(text(&denied.stdout).contains(&format!("denied {id}")));
    let outcome = requester.outcome();
    assert_eq!(outcome["code"], -32000, "{outcome}");
    assert_eq!(
        outcome["error"],
        format!("approval {id} was denied by carol: not on a Friday")
    );
    assert_eq!(
        outcome["data"],
        json!({ "approval": id, "outcome": "denied" })
    );
    let record = held_record(&gw, &id).await;
    assert_eq!(record["decision"], "deny", "{record}");
    assert_eq!(
        held["policies"],
        json!(["grants[0]", "sums-need-approval"]),
        "the permits that allowed the call (one asks for approval)"
    );
    assert_eq!(
        record["rule"], "grants[0], sums-need-approval",
        "the policies that permitted the call if approved"
    );
    assert_eq!(record["approval"]["outcome"], "denied");
    assert_eq!(record["approval"]["approver"], "carol");
    assert_eq!(record["approval"]["reason"], "not on a Friday");
    assert_eq!(hook.count(), 1, "one announcement per pending approval");
}

#[tokio::test]
async fn an_undecided_call_expires_with_a_clear_error() {
    let a = admins();
    let gw = approval_gateway(&a, "timeout = \"2s\"");
    gw.wait_ready(&["echo"]).await;
    let mut requester =
        Requester::call(&gw, "legacy", "echo.add", &json!({ "a": 1, "b": 2 }), false);
    let id = pending(&gw, &a.carol.token, 1).await[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let outcome = requester.outcome();
    assert_eq!(
        outcome["error"],
        format!("approval {id} expired after 2s: nobody approved the call in time"),
        "{outcome}"
    );
    assert_eq!(outcome["data"]["outcome"], "expired");
    let late = cli(
        &gw,
        &a.carol.token,
        &["approve", &id, "--arguments-sha256", &"0".repeat(64)],
    )
    .await;
    assert!(
        text(&late.stderr).contains("refused (HTTP 410 expired)"),
        "{}",
        text(&late.stderr)
    );
    let record = held_record(&gw, &id).await;
    assert_eq!(
        (
            record["decision"].as_str(),
            record["approval"]["outcome"].as_str()
        ),
        (Some("deny"), Some("expired"))
    );
}

#[tokio::test]
async fn the_requester_cannot_approve_and_nobody_approves_other_arguments() {
    let a = admins();
    let gw = approval_gateway(&a, "");
    gw.wait_ready(&["echo"]).await;
    let arguments = json!({ "a": 20, "b": 22 });
    let mut requester = Requester::call(&gw, "legacy", "echo.add", &arguments, true);
    let id = pending(&gw, &a.carol.token, 1).await[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();

    // alice holds the approver role on the admin API, but this is her own call.
    let own = cli(&gw, &a.alice.token, &["approve", &id]).await;
    assert!(!own.status.success());
    assert!(
        text(&own.stderr).contains("refused (HTTP 403 self_approval): alice asked for this call"),
        "{}",
        text(&own.stderr)
    );
    // carol confirms arguments she did not see (a bigger sum).
    let other = micromcp_gateway_hash(&json!({ "a": 20, "b": 2200 }));
    let wrong = cli(
        &gw,
        &a.carol.token,
        &["approve", &id, "--arguments-sha256", &other],
    )
    .await;
    assert!(!wrong.status.success());
    assert!(
        text(&wrong.stderr).contains("refused (HTTP 409 arguments_mismatch)"),
        "{}",
        text(&wrong.stderr)
    );
    assert_eq!(
        pending(&gw, &a.carol.token, 1).await[0]["id"],
        id.as_str(),
        "still held"
    );

    let approved = cli(&gw, &a.carol.token, &["approve", &id]).await;
    assert!(approved.status.success(), "{}", text(&approved.stderr));
    assert_eq!(
        requester.outcome()["result"]["structuredContent"]["sum"],
        42.0
    );

    for rule in ["self-approval", "arguments-mismatch"] {
        let refused = gw
            .audit_find(|r| r["transport"] == "admin" && r["rule"] == rule)
            .await;
        assert_eq!(refused["decision"], "deny", "{refused}");
        assert_eq!(refused["approval"]["id"], id.as_str());
        assert_eq!(refused["approval"]["outcome"], "refused");
    }
    let own = gw
        .audit_find(|r| r["transport"] == "admin" && r["rule"] == "self-approval")
        .await;
    assert_eq!(own["principal"], "alice");
}

async fn disconnect_flow(mode: &str, progress: bool) {
    let a = admins();
    let gw = approval_gateway(&a, "");
    gw.wait_ready(&["echo"]).await;
    let requester = Requester::call(&gw, mode, "echo.add", &json!({ "a": 5, "b": 5 }), progress);
    let id = pending(&gw, &a.carol.token, 1).await[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    drop(requester); // kills the client process: its connection closes
    pending(&gw, &a.carol.token, 0).await;
    let late = cli(
        &gw,
        &a.carol.token,
        &["approve", &id, "--arguments-sha256", &"0".repeat(64)],
    )
    .await;
    assert!(
        text(&late.stderr).contains("refused (HTTP 410 withdrawn)"),
        "{}",
        text(&late.stderr)
    );
    let record = held_record(&gw, &id).await;
    assert_eq!(record["status"], "aborted", "{record}");
    assert_eq!(record["approval"]["outcome"], "voided");
}

#[tokio::test]
async fn a_session_era_requester_that_goes_away_voids_its_approval() {
    disconnect_flow("legacy", false).await;
}

#[tokio::test]
async fn a_stateless_era_requester_that_goes_away_voids_its_approval() {
    disconnect_flow(V2026, true).await;
}

const HOOK_SECRET: &str = "approval-hook-secret-for-tests-0123";

/// A webhook receiver on loopback that checks every delivery's signature (HMAC-SHA256 under
/// `HOOK_SECRET` over "<t>.<body>", with ring) before accepting it.
struct Receiver {
    url: String,
    bodies: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let bodies: std::sync::Arc<std::sync::Mutex<Vec<Value>>> = Default::default();
        let app = axum::Router::new().route(
            "/approvals",
            axum::routing::post({
                let bodies = bodies.clone();
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| async move {
                    let signature = headers
                        .get("x-micromcp-signature")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    let Some((t, mac)) = signature
                        .strip_prefix("t=")
                        .and_then(|r| r.split_once(",sha256="))
                    else {
                        return axum::http::StatusCode::UNAUTHORIZED;
                    };
                    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, HOOK_SECRET.as_bytes());
                    let signed = [t.as_bytes(), b".", &body].concat();
                    let valid = hex_decode(mac)
                        .is_some_and(|mac| ring::hmac::verify(&key, &signed, &mac).is_ok());
                    if !valid {
                        return axum::http::StatusCode::UNAUTHORIZED;
                    }
                    let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    bodies.lock().expect("lock").push(value);
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/approvals", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { url, bodies }
    }

    /// The first verified delivery (10 s at most).
    async fn next(&self) -> Value {
        for _ in 0..500 {
            if let Some(v) = self.bodies.lock().expect("lock").first() {
                return v.clone();
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("no verified webhook delivery");
    }

    fn count(&self) -> usize {
        self.bodies.lock().expect("lock").len()
    }
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[tokio::test]
async fn a_held_json_answer_turns_into_a_stream_and_one_requester_may_hold_only_so_many() {
    let a = admins();
    let gw = approval_gateway(&a, "max_pending_per_principal = 1");
    gw.wait_ready(&["echo"]).await;
    let mut c = gw.client(&gw.alice);
    c.initialize().await;
    let call = |id: i64| json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"echo.add","arguments":{"a":1,"b":1}}});
    // No progress token: the answer would be JSON, but once held it is a stream (its head
    // arrives at once, then keep-alives), so the client keeps reading while a person decides.
    let first = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        c.request(&[("mcp-protocol-version", "2025-11-25")], &call(1))
            .send(),
    )
    .await
    .expect("the head of a held answer arrives while it is held")
    .expect("send");
    assert_eq!(first.status(), 200);
    assert!(
        first.headers()["content-type"]
            .to_str()
            .is_ok_and(|t| t.starts_with("text/event-stream"))
    );
    let held = pending(&gw, &a.carol.token, 1).await.remove(0);

    let second = c
        .send(&[("mcp-protocol-version", "2025-11-25")], &call(2))
        .await;
    let message = second.body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("too many of your calls are waiting for approval (at most 1"),
        "{}",
        second.body
    );
    let refused = gw
        .audit_find(|r| r["jsonrpc_id"] == 2 && r["method"] == "tools/call")
        .await;
    assert_eq!(
        (refused["decision"].as_str(), refused["rule"].as_str()),
        (Some("deny"), Some("approval-limit"))
    );

    let body = json!({ "arguments_sha256": held["arguments_sha256"] });
    let path = format!("/v1/approvals/{}/approve", held["id"].as_str().expect("id"));
    let approved = admin_request(
        &gw,
        reqwest::Method::POST,
        &path,
        Some(&a.carol.token),
        Some(&body),
        &[],
    )
    .await;
    assert_eq!(approved.status, 200, "{}", approved.body);
    assert_eq!(approved.body["outcome"], "approved");
    let reply = read_reply(first).await;
    assert_eq!(
        reply.result()["structuredContent"]["sum"],
        2.0,
        "{}",
        reply.body
    );
}

#[tokio::test]
async fn without_an_admin_api_a_call_that_needs_approval_fails_at_once() {
    let gw = Gateway::start(&policy());
    gw.wait_ready(&["echo"]).await;
    let mut c = gw.client(&gw.alice);
    c.initialize().await;
    let reply = c
        .call(
            "tools/call",
            json!({"name":"echo.add","arguments":{"a":1,"b":1}}),
        )
        .await;
    let message = reply.body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("no admin API ([admin])"), "{}", reply.body);
    let other = c
        .call(
            "tools/call",
            json!({"name":"echo.echo","arguments":{"text":"hi"}}),
        )
        .await;
    assert_eq!(
        text_of(&other),
        "hi",
        "calls without the obligation are not held"
    );
}

#[tokio::test]
async fn a_session_era_cancellation_voids_the_approval() {
    let a = admins();
    let gw = approval_gateway(&a, "");
    gw.wait_ready(&["echo"]).await;
    let mut c = gw.client(&gw.alice);
    c.initialize().await;
    let held = c
        .request(
            &[("mcp-protocol-version", "2025-11-25")],
            &json!({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo.add","arguments":{"a":1,"b":1}}}),
        )
        .send()
        .await
        .expect("held answer");
    let id = pending(&gw, &a.carol.token, 1).await[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let cancel =
        json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":7}});
    let r = c
        .send(&[("mcp-protocol-version", "2025-11-25")], &cancel)
        .await;
    assert_eq!(r.status, 202);
    pending(&gw, &a.carol.token, 0).await;
    let reply = read_reply(held).await;
    assert_eq!(
        reply.body["error"]["message"], "request cancelled",
        "{}",
        reply.body
    );
    let record = held_record(&gw, &id).await;
    assert_eq!(record["approval"]["outcome"], "voided", "{record}");
}

#[tokio::test]
async fn a_held_call_outlasts_the_sdks_http_read_timeout_in_both_eras() {
    // The SDK gives up on a response when nothing arrives for its read timeout (5 minutes by
    // default; 1 s here). A held call sends keep-alives (or progress) more often than that.
    let a = admins();
    let gw = approval_gateway(&a, "");
    gw.wait_ready(&["echo"]).await;
    for (mode, progress) in [("legacy", false), (V2026, false), (V2026, true)] {
        let mut requester = Requester::call_with(
            &gw,
            mode,
            "echo.add",
            &json!({ "a": 3, "b": 4 }),
            progress,
            Some(1),
        );
        let held = pending(&gw, &a.carol.token, 1).await.remove(0);
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        let body = json!({ "arguments_sha256": held["arguments_sha256"] });
        let path = format!("/v1/approvals/{}/approve", held["id"].as_str().expect("id"));
        let approved = admin_request(
            &gw,
            reqwest::Method::POST,
            &path,
            Some(&a.carol.token),
            Some(&body),
            &[],
        )
        .await;
        assert_eq!(approved.status, 200, "{mode}: {}", approved.body);
        let outcome = requester.outcome();
        assert_eq!(
            outcome["result"]["structuredContent"]["sum"], 7.0,
            "{mode} {progress}: {outcome}"
        );
    }
}

#[tokio::test]
async fn a_generated_admin_token_is_printed_once_and_works_only_on_the_admin_api() {
    let gw = Gateway::start(&format!(
        "{ECHO}\n[admin]\naddr = \"127.0.0.1:0\"\n\n[[admin.tokens]]\nprincipal = \"carol\"\nroles = [\"approver\"]\nhash = \"generate:carol.sha256\"\n"
    ));
    let stderr = gw.stderr_text();
    let announced = stderr
        .lines()
        .position(|l| l.contains("created an admin token for principal \"carol\""))
        .unwrap_or_else(|| panic!("no generated admin token announced:\n{stderr}"));
    let token = stderr
        .lines()
        .skip(announced + 1)
        .map(str::trim)
        .find(|l| !l.is_empty())
        .expect("the token line")
        .to_owned();
    assert!(token.starts_with("mmcp_"), "{token}");
    let stored = std::fs::read_to_string(gw.path("carol.sha256")).expect("hash file");
    assert!(stored.starts_with("sha256:") && !stored.contains(&token));
    let listed = admin_request(
        &gw,
        reqwest::Method::GET,
        "/v1/approvals",
        Some(&token),
        None,
        &[],
    )
    .await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    let mut on_mcp = gw.client(&token);
    let refused = on_mcp.call("tools/list", json!({})).await;
    assert_eq!(
        refused.status, 401,
        "an admin token on /mcp: {}",
        refused.body
    );
}
