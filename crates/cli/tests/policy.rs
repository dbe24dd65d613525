//! Cedar policies on tool arguments through the real gateway (issue 11), with real clients and
//! servers: the official Python SDK (`tests/interop/client.py`) calling the built-in `fs` and the
//! PyPI `mcp-server-time`; forbid over permit, default deny, evaluation errors, lists; reloads on
//! file change and SIGHUP with a call in flight; refused sets at reload and at startup; a
//! property test that the value a policy sees is the value the service receives; the
//! `micromcp policy explain|test` commands; and the attacks of ../shared/SECURITY.md that apply
//! (probing through errors, argument smuggling, duplicate keys).

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use serde_json::{Map, Value, json};

const PROCESS_TIMEOUT: Duration = Duration::from_secs(60);

fn python() -> PathBuf {
    tool("venv/bin/python")
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A TOML basic string holding `path`.
fn toml_path(path: &Path) -> String {
    Value::String(path.display().to_string()).to_string()
}

/// A policy file in its own folder (the gateway's folder only exists once it starts).
struct PolicyFile {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl PolicyFile {
    fn new(text: &str) -> PolicyFile {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("policies.cedar");
        std::fs::write(&path, text).expect("write policies");
        PolicyFile { _dir: dir, path }
    }

    /// `[policy] files = [this file]` followed by `rest` (services…).
    fn config(&self, rest: &str) -> String {
        format!("[policy]\nfiles = [{}]\n{rest}", toml_path(&self.path))
    }
}

const ECHO_SERVICE: &str = r#"
[services.echo]
builtin = "echo"
"#;

fn mirror_service() -> String {
    format!(
        "[services.mirror]\ncommand = [{}, {}]\n",
        toml_path(&python()),
        toml_path(&fixture("mirror_server.py"))
    )
}

/// What a finished process printed, and how it ended.
struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    what: String,
}

impl Output {
    fn describe(&self) -> String {
        format!(
            "{} exited {:?}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.what, self.code, self.stdout, self.stderr
        )
    }

    /// Asserts a zero exit and parses stdout as one JSON value.
    fn json(&self) -> Value {
        assert_eq!(self.code, Some(0), "{}", self.describe());
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.describe()))
    }
}

/// Runs `cmd` to completion, killing it after [`PROCESS_TIMEOUT`].
fn run(mut cmd: Command) -> Output {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e} ({INSTALL_HINT})"));
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + PROCESS_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        code: status.and_then(|s| s.code()),
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
        what,
    }
}

/// The official Python SDK client against the gateway: `client.py URL --token T --mode M
/// --keep-errors ARGS...`; what it observed.
fn sdk(gw: &Gateway, token: &str, mode: &str, args: &[&str]) -> Value {
    let mut cmd = Command::new(python());
    cmd.arg(workspace().join("tests/interop/client.py"))
        .arg(&gw.url)
        .args(["--mode", mode, "--token", token, "--keep-errors"])
        .args(args);
    run(cmd).json()
}

fn listed(observed: &Value) -> Vec<String> {
    let mut names: Vec<String> = observed["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("no tools in {observed}"))
        .iter()
        .map(|v| v.as_str().expect("name").to_owned())
        .collect();
    names.sort();
    names
}

/// The `i`th scripted call's result, which must have succeeded.
fn sdk_result(observed: &Value, i: usize) -> &Value {
    let call = &observed["calls"][i];
    assert!(
        call.get("error").is_none() && call["is_error"] == false,
        "call {i} failed: {observed}"
    );
    &call["result"]
}

/// The `i`th scripted call's JSON-RPC error, which it must have been answered with.
fn sdk_error(observed: &Value, i: usize) -> (i64, String) {
    let error = &observed["calls"][i]["error"];
    let code = error["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("call {i} was not refused: {observed}"));
    (code, error["message"].as_str().expect("message").to_owned())
}

/// The gateway's answer to a call of a tool that is unknown or not permitted.
fn not_permitted(name: &str) -> (i64, String) {
    (-32602, format!("unknown tool or not permitted: {name:?}"))
}

/// Waits (up to 10 s) until at least `n` records satisfy `matches`; returns those.
async fn audited(gw: &Gateway, n: usize, matches: impl Fn(&Value) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found: Vec<Value> = gw.audit().into_iter().filter(|r| matches(r)).collect();
        if found.len() >= n || Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// (principal, decision, rule) of the first `n` audited tool calls, in order.
async fn call_decisions(gw: &Gateway, n: usize) -> Vec<(String, String, String)> {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    audited(gw, n, |r| r["method"] == "tools/call")
        .await
        .iter()
        .map(|r| {
            (
                text(&r["principal"]),
                text(&r["decision"]),
                text(&r["rule"]),
            )
        })
        .collect()
}

fn decisions(expected: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    expected
        .iter()
        .map(|(p, d, r)| ((*p).to_owned(), (*d).to_owned(), (*r).to_owned()))
        .collect()
}

/// The audit record of the tool call that carried JSON-RPC id `id`.
async fn audit_of_call(gw: &Gateway, id: &Value) -> Value {
    gw.audit_find(|r| r["method"] == "tools/call" && &r["jsonrpc_id"] == id)
        .await
}

// ---------------------------------------------------------------------------------------
// Decisions on arguments, through the Python SDK

#[tokio::test(flavor = "multi_thread")]
async fn fs_reads_are_permitted_by_path_and_forbid_wins_through_the_python_sdk() {
    let root = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(root.path().join("public")).expect("mkdir");
    std::fs::create_dir_all(root.path().join("private")).expect("mkdir");
    std::fs::write(root.path().join("public/a.txt"), "public text\n").expect("write");
    std::fs::write(root.path().join("private/secret.txt"), "PRIVATE-TEXT").expect("write");
    let policies = PolicyFile::new(
        r#"
@id("read-public")
permit (principal == User::"alice", action == Action::"fs.read_file", resource)
when { context.arguments.path like "public/*" };

@id("no-dotdot")
forbid (principal, action == Action::"fs.read_file", resource)
when { context.arguments.path like "*..*" };
"#,
    );
    let gw = Gateway::start(&policies.config(&format!(
        "[services.fs]\nbuiltin = \"fs\"\nargs = [\"--root\", {}]\n",
        toml_path(root.path())
    )));
    gw.wait_ready(&["fs"]).await;

    for mode in ["legacy", V2026] {
        let observed = sdk(
            &gw,
            &gw.alice,
            mode,
            &[
                "--list-tools",
                "--call",
                "fs.read_file",
                "--args",
                r#"{"path": "public/a.txt"}"#,
                "--call",
                "fs.read_file",
                "--args",
                r#"{"path": "private/secret.txt"}"#,
                "--call",
                "fs.read_file",
                "--args",
                r#"{"path": "public/../private/secret.txt"}"#,
                "--call",
                "fs.list_directory",
                "--args",
                r#"{"path": "public"}"#,
            ],
        );
        // Permitted for some paths: listed. No permit at all: not listed.
        assert_eq!(listed(&observed), ["fs.read_file"], "{mode}: {observed}");
        let read = sdk_result(&observed, 0);
        assert_eq!(
            read["structuredContent"]["text"], "public text\n",
            "{mode}: {observed}"
        );
        for (i, name) in [
            (1, "fs.read_file"),
            (2, "fs.read_file"),
            (3, "fs.list_directory"),
        ] {
            assert_eq!(
                sdk_error(&observed, i),
                not_permitted(name),
                "{mode}: {observed}"
            );
        }
        assert!(!observed.to_string().contains("PRIVATE-TEXT"), "{observed}");
    }

    // The audit names the policies that decided (or that none did).
    let expected = [
        ("alice", "allow", "read-public"),
        ("alice", "deny", "default-deny"),
        ("alice", "deny", "no-dotdot"),
        ("alice", "deny", "default-deny"),
    ];
    assert_eq!(
        call_decisions(&gw, 8).await,
        decisions(&[expected, expected].concat())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_third_party_server_is_permitted_by_argument_value() {
    let policies = PolicyFile::new(
        r#"
@id("utc-only")
permit (principal == User::"alice", action == Action::"time.get_current_time", resource)
when { context.arguments.timezone == "UTC" };
"#,
    );
    let gw = Gateway::start(&policies.config(&format!(
        r#"
[services.time]
command = [{}, "-m", "mcp_server_time", "--local-timezone", "UTC"]
env = {{ TZ = "UTC" }}
"#,
        toml_path(&python())
    )));
    gw.wait_ready(&["time"]).await;
    let calls = [
        "--list-tools",
        "--call",
        "time.get_current_time",
        "--args",
        r#"{"timezone": "UTC"}"#,
        "--call",
        "time.get_current_time",
        "--args",
        r#"{"timezone": "Europe/Paris"}"#,
        "--call",
        "time.convert_time",
        "--args",
        r#"{"source_timezone": "UTC", "time": "12:00", "target_timezone": "UTC"}"#,
    ];
    let alice = sdk(&gw, &gw.alice, V2026, &calls);
    assert_eq!(listed(&alice), ["time.get_current_time"], "{alice}");
    assert_eq!(
        sdk_result(&alice, 0)["structuredContent"]["timezone"],
        "UTC",
        "{alice}"
    );
    assert_eq!(
        sdk_error(&alice, 1),
        not_permitted("time.get_current_time"),
        "{alice}"
    );
    assert_eq!(sdk_error(&alice, 2), not_permitted("time.convert_time"));

    // No policy for bob: nothing listed, nothing callable.
    let bob = sdk(&gw, &gw.bob, "legacy", &calls);
    assert!(listed(&bob).is_empty(), "{bob}");
    for (i, name) in [
        (0, "time.get_current_time"),
        (1, "time.get_current_time"),
        (2, "time.convert_time"),
    ] {
        assert_eq!(sdk_error(&bob, i), not_permitted(name), "{bob}");
    }
    assert_eq!(
        call_decisions(&gw, 6).await,
        decisions(&[
            ("alice", "allow", "utc-only"),
            ("alice", "deny", "default-deny"),
            ("alice", "deny", "default-deny"),
            ("bob", "deny", "default-deny"),
            ("bob", "deny", "default-deny"),
            ("bob", "deny", "default-deny"),
        ])
    );
}

const ECHO_POLICIES: &str = r#"
@id("alice-echo")
permit (
    principal == User::"alice",
    action in [
        Action::"echo.echo", Action::"echo.add", Action::"echo.slow", Action::"echo.env",
        Action::"echo.fail"
    ],
    resource
);

@id("no-secrets")
forbid (principal, action == Action::"echo.echo", resource)
when { context.arguments.text like "*secret*" };

// Type-checks, but overflows when it runs: it must deny, not be skipped.
@id("overflowing-forbid")
forbid (principal, action == Action::"echo.add", resource)
when { context.arguments.a == decimal("1.0") && 9223372036854775807 + 1 > 0 };

// Errors whatever the arguments: the tool can never be called, so it is not listed either.
@id("always-overflows")
forbid (principal, action == Action::"echo.fail", resource)
when { 9223372036854775807 + 1 > 0 };

// Holds whatever the arguments: hides the tool.
@id("no-env")
forbid (principal, action == Action::"echo.env", resource);
"#;

#[tokio::test(flavor = "multi_thread")]
async fn forbid_wins_evaluation_errors_deny_and_lists_show_what_some_arguments_allow() {
    let policies = PolicyFile::new(ECHO_POLICIES);
    let gw = Gateway::start(&policies.config(ECHO_SERVICE));
    gw.wait_ready(&["echo"]).await;
    let calls = [
        "--list-tools",
        "--call",
        "echo.echo",
        "--args",
        r#"{"text": "hello"}"#,
        "--call",
        "echo.echo",
        "--args",
        r#"{"text": "a secret plan"}"#,
        "--call",
        "echo.add",
        "--args",
        r#"{"a": 1, "b": 2}"#,
        "--call",
        "echo.add",
        "--args",
        r#"{"a": 2, "b": 2}"#,
        "--call",
        "echo.env",
        "--args",
        "{}",
        "--call",
        "echo.now",
        "--args",
        "{}",
        "--call",
        "echo.fail",
        "--args",
        r#"{"message": "m"}"#,
    ];
    let alice = sdk(&gw, &gw.alice, "legacy", &calls);
    // echo.echo and echo.add are permitted for some arguments only; echo.env is forbidden
    // whatever they are; echo.now and the rest have no permit.
    assert_eq!(
        listed(&alice),
        ["echo.add", "echo.echo", "echo.slow"],
        "{alice}"
    );
    assert_eq!(
        sdk_result(&alice, 0)["content"][0]["text"],
        "hello",
        "{alice}"
    );
    assert_eq!(sdk_error(&alice, 1), not_permitted("echo.echo"), "{alice}");
    assert_eq!(sdk_error(&alice, 2), not_permitted("echo.add"), "{alice}");
    assert_eq!(
        sdk_result(&alice, 3)["structuredContent"]["sum"],
        4.0,
        "{alice}"
    );
    assert_eq!(sdk_error(&alice, 4), not_permitted("echo.env"), "{alice}");
    assert_eq!(sdk_error(&alice, 5), not_permitted("echo.now"), "{alice}");
    assert_eq!(sdk_error(&alice, 6), not_permitted("echo.fail"), "{alice}");

    let bob = sdk(&gw, &gw.bob, V2026, &calls);
    assert!(listed(&bob).is_empty(), "no policy, no tools: {bob}");
    assert_eq!(sdk_error(&bob, 0), not_permitted("echo.echo"), "{bob}");

    assert_eq!(
        call_decisions(&gw, 14).await[..8],
        decisions(&[
            ("alice", "allow", "alice-echo"),
            ("alice", "deny", "no-secrets"),
            ("alice", "deny", "evaluation-error"),
            ("alice", "allow", "alice-echo"),
            ("alice", "deny", "no-env"),
            ("alice", "deny", "default-deny"),
            ("alice", "deny", "evaluation-error"),
            ("bob", "deny", "default-deny"),
        ])
    );
    assert!(
        gw.stderr_text().contains("policy evaluation failed"),
        "the evaluation error is logged: {}",
        gw.stderr_text()
    );
}

// ---------------------------------------------------------------------------------------
// Reloads

const SLOW_AND_ECHO: &str = r#"
@id("alice-slow-and-echo")
permit (principal == User::"alice", action in [Action::"echo.slow", Action::"echo.echo"], resource);
"#;

const ECHO_ONLY: &str = r#"
@id("alice-echo-only")
permit (principal == User::"alice", action == Action::"echo.echo", resource);
"#;

/// Calls `echo.slow` (session era, with a progress token); once the service has reported
/// progress — the call is in flight upstream — runs `meanwhile`, then reads the call to its
/// end. Returns the call's JSON-RPC response.
async fn during_slow_call(gw: &Gateway, meanwhile: impl Future<Output = ()>) -> Value {
    let mut client = gw.client(&gw.alice);
    client.initialize().await;
    let body = json!({"jsonrpc": "2.0", "id": "slow", "method": "tools/call", "params": {
        "name": "echo.slow",
        "arguments": {"seconds": 6.0, "steps": 12},
        "_meta": {"progressToken": "slow-progress"},
    }});
    let response = client
        .request(&[("mcp-protocol-version", "2025-11-25")], &body)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.contains("notifications/progress") {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(bytes))) => seen.push_str(&String::from_utf8_lossy(&bytes)),
            other => panic!("no progress from echo.slow ({other:?}); got: {seen}"),
        }
    }
    let started = Instant::now();
    meanwhile.await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the policy change took so long that the slow call may have ended before it"
    );
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .expect("the slow call ends")
    {
        seen.push_str(&String::from_utf8_lossy(&chunk.expect("stream")));
    }
    seen.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_json::from_str::<Value>(d.trim()).expect("SSE data is JSON"))
        .find(|m| m["id"] == "slow")
        .unwrap_or_else(|| panic!("no response to the slow call in {seen}"))
}

/// A stateless call of `name`; `Ok(result)` or `Err((code, message))`.
async fn call(client: &mut Client, name: &str, arguments: Value) -> Result<Value, (i64, String)> {
    let reply = client
        .call_2026("tools/call", json!({"name": name, "arguments": arguments}))
        .await;
    match reply.body.get("error") {
        Some(e) => Err((
            e["code"].as_i64().expect("code"),
            e["message"].as_str().expect("message").to_owned(),
        )),
        None => Ok(reply.result().clone()),
    }
}

fn reloads(gw: &Gateway) -> Vec<Value> {
    gw.audit()
        .into_iter()
        .filter(|r| r["method"] == "policy/reload")
        .collect()
}

/// After a reload to [`ECHO_ONLY`]: echo.echo is still allowed, echo.slow no longer is.
async fn echo_only_in_force(gw: &Gateway) {
    let mut alice = gw.client(&gw.alice);
    assert_eq!(
        call(&mut alice, "echo.slow", json!({"seconds": 0})).await,
        Err(not_permitted("echo.slow")),
        "new calls see the new policies"
    );
    assert!(
        call(&mut alice, "echo.echo", json!({"text": "x"}))
            .await
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_policy_file_takes_effect_without_dropping_the_call_in_flight() {
    let policies = PolicyFile::new(SLOW_AND_ECHO);
    let gw = Gateway::start(&policies.config(ECHO_SERVICE));
    gw.wait_ready(&["echo"]).await;
    let response = during_slow_call(&gw, async {
        std::fs::write(&policies.path, ECHO_ONLY).expect("write");
        let reload = gw
            .audit_find(|r| r["method"] == "policy/reload" && r["decision"] == "allow")
            .await;
        assert_eq!(reload["reason"], "file change", "{reload}");
        assert!(
            reload["rule"]
                .as_str()
                .unwrap_or_default()
                .starts_with("sha256:"),
            "the record names the new set by its digest: {reload}"
        );
        echo_only_in_force(&gw).await;
    })
    .await;
    assert!(
        response.get("error").is_none() && response["result"]["isError"] != true,
        "the call in flight completes under the policies it started with: {response}"
    );
    let record = audit_of_call(&gw, &json!("slow")).await;
    assert_eq!(
        (&record["decision"], &record["rule"], &record["status"]),
        (&json!("allow"), &json!("alice-slow-and-echo"), &json!("ok")),
        "{record}"
    );
}

/// Writes `text` to `path` so that its size and modification time stay what they were (through
/// a renamed temporary file): only SIGHUP can notice the change.
fn replace_unnoticed(path: &Path, text: &str) {
    let old = std::fs::metadata(path).expect("metadata");
    let old_len = usize::try_from(old.len()).expect("size");
    let mut padded = format!("{text}\n//");
    assert!(padded.len() <= old_len, "the new text must not be longer");
    padded.push_str(&" ".repeat(old_len - padded.len()));
    let temporary = path.with_extension("cedar.new");
    std::fs::write(&temporary, &padded).expect("write");
    std::fs::File::options()
        .write(true)
        .open(&temporary)
        .expect("open")
        .set_modified(old.modified().expect("mtime"))
        .expect("set mtime");
    std::fs::rename(&temporary, path).expect("rename");
    let new = std::fs::metadata(path).expect("metadata");
    assert_eq!(
        (new.len(), new.modified().expect("mtime")),
        (old.len(), old.modified().expect("mtime"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_the_policies_without_dropping_the_call_in_flight() {
    // Padding leaves room for the shorter set that replaces this one.
    let policies = PolicyFile::new(&format!("{SLOW_AND_ECHO}\n// {}\n", " ".repeat(64)));
    let mut gw = Gateway::start(&policies.config(ECHO_SERVICE));
    gw.wait_ready(&["echo"]).await;
    let pid = nix::unistd::Pid::from_raw(
        i32::try_from(gw.child.as_ref().expect("running").id()).expect("pid"),
    );
    let response = during_slow_call(&gw, async {
        replace_unnoticed(&policies.path, ECHO_ONLY);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).expect("SIGHUP");
        let reload = gw
            .audit_find(|r| r["method"] == "policy/reload" && r["decision"] == "allow")
            .await;
        assert_eq!(reload["reason"], "SIGHUP", "{reload}");
        echo_only_in_force(&gw).await;
    })
    .await;
    assert!(
        response.get("error").is_none() && response["result"]["isError"] != true,
        "{response}"
    );
    // The file watcher had time to look (it polls every second) and saw nothing: the change
    // above was SIGHUP's doing.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(reloads(&gw).len(), 1, "{:#?}", reloads(&gw));
    // SIGHUP reloads; it does not stop the gateway.
    assert!(
        gw.child
            .as_mut()
            .expect("child")
            .try_wait()
            .expect("wait")
            .is_none()
    );
    let mut alice = gw.client(&gw.alice);
    assert!(
        call(&mut alice, "echo.echo", json!({"text": "still here"}))
            .await
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_change_is_refused_audited_and_the_old_set_stays() {
    let policies = PolicyFile::new(SLOW_AND_ECHO);
    let gw = Gateway::start(&policies.config(ECHO_SERVICE));
    gw.wait_ready(&["echo"]).await;
    let mut alice = gw.client(&gw.alice);
    // A policy for a tool the service does not have: refused, with the errors.
    std::fs::write(
        &policies.path,
        r#"@id("bad-tool") permit (principal, action == Action::"echo.nope", resource);"#,
    )
    .expect("write");
    let refused = gw
        .audit_find(|r| r["method"] == "policy/reload" && r["decision"] == "deny")
        .await;
    assert_eq!(refused["status"], "invalid", "{refused}");
    let reason = refused["reason"].as_str().expect("reason");
    assert!(reason.starts_with("file change: "), "{reason}");
    assert!(
        reason.contains("echo.nope") && reason.contains("bad-tool"),
        "the errors name the policy and what is wrong: {reason}"
    );
    // The record names the set that stays in force, by its digest.
    let digest_before = refused["rule"].as_str().expect("digest").to_owned();
    assert!(digest_before.starts_with("sha256:"), "{digest_before}");
    // The old set is still in force.
    assert!(
        call(&mut alice, "echo.slow", json!({"seconds": 0}))
            .await
            .is_ok()
    );
    assert!(
        gw.stderr_text().contains("NOT reloaded"),
        "{}",
        gw.stderr_text()
    );

    // A syntax error: refused with its line.
    std::fs::write(
        &policies.path,
        "@id(\"x\")\npermit (principal, action, resource)\nwhen { context.x == };",
    )
    .expect("write");
    let deadline = Instant::now() + Duration::from_secs(10);
    let syntax = loop {
        let refused: Vec<Value> = reloads(&gw)
            .into_iter()
            .filter(|r| r["decision"] == "deny")
            .collect();
        if refused.len() >= 2 {
            break refused[1].clone();
        }
        assert!(Instant::now() < deadline, "{refused:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        syntax["reason"]
            .as_str()
            .expect("reason")
            .contains("(line 3)"),
        "{syntax}"
    );
    assert_eq!(syntax["rule"], digest_before.as_str(), "{syntax}");
    assert!(
        call(&mut alice, "echo.slow", json!({"seconds": 0}))
            .await
            .is_ok()
    );

    // The watcher keeps watching: a valid set is taken afterwards.
    std::fs::write(&policies.path, ECHO_ONLY).expect("write");
    let taken = gw
        .audit_find(|r| r["method"] == "policy/reload" && r["decision"] == "allow")
        .await;
    assert_ne!(taken["rule"], digest_before.as_str(), "{taken}");
    echo_only_in_force(&gw).await;
}

/// Starts a gateway with `policies` over the echo service, which must refuse to start;
/// returns its stderr.
fn start_refused(policies: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("policies.cedar"), policies).expect("write");
    let config = format!(
        "{}\n[policy]\nfiles = [\"policies.cedar\"]\n{ECHO_SERVICE}",
        preamble(&token(), &token())
    );
    std::fs::write(dir.path().join("gateway.toml"), config).expect("write");
    let mut cmd = Command::new(BIN);
    cmd.args(["gateway", "--config"])
        .arg(dir.path().join("gateway.toml"));
    let out = run(cmd);
    assert_eq!(out.code, Some(2), "{}", out.describe());
    assert!(!out.stderr.contains("listening on"), "{}", out.describe());
    out.stderr
}

#[test]
fn an_invalid_policy_set_stops_the_start_with_a_clear_error() {
    let cases = [
        (
            "unknown tool",
            r#"@id("ghost") permit (principal, action == Action::"echo.nope", resource);"#,
            vec!["ghost", "echo.nope"],
        ),
        (
            "unknown argument",
            r#"@id("typo") permit (principal, action == Action::"echo.echo", resource) when { context.arguments.txt == "x" };"#,
            vec!["typo", "txt"],
        ),
        (
            "type error",
            r#"@id("string-as-number") permit (principal, action == Action::"echo.echo", resource) when { context.arguments.text > 3 };"#,
            vec!["string-as-number", "Long", "String"],
        ),
        (
            "unknown annotation",
            r#"@id("colourful") @colour("red") permit (principal, action, resource);"#,
            vec!["colourful", "unknown annotation @colour"],
        ),
    ];
    for (what, policy, expected) in cases {
        let stderr = start_refused(policy);
        assert!(stderr.contains("invalid policies"), "{what}: {stderr}");
        for needle in expected {
            assert!(stderr.contains(needle), "{what}: {needle:?} in {stderr}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Property: the value the policy sees is the value the service receives

/// xorshift64*: a small, seeded generator (the seed is printed with every failure).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[usize::try_from(self.below(items.len() as u64)).expect("index")]
    }
}

/// Characters that stress escaping on the way through: quotes, backslashes, controls, NUL,
/// `like` wildcards, non-ASCII, astral, zero-width, bidi, line separators.
const CHARS: &[char] = &[
    'a', 'Q', '7', ' ', '"', '\\', '\'', '*', '/', '.', '%', '{', '\n', '\t', '\r', '\0', '\u{1}',
    '\u{7f}', 'é', 'ß', '中', '😀', '\u{200b}', '\u{202e}', '\u{feff}', '\u{2028}',
];

fn string(rng: &mut Rng) -> String {
    (0..rng.below(12)).map(|_| *rng.pick(CHARS)).collect()
}

fn integer(rng: &mut Rng) -> i64 {
    match rng.below(6) {
        0 => *rng.pick(&[i64::MIN, i64::MAX, 0, -1, 1]),
        1 => rng.next() as i64,
        _ => rng.below(2001) as i64 - 1000,
    }
}

/// A number with at most 4 decimals that an f64 carries exactly as its shortest form: its
/// text (Cedar's `decimal()` literal, written independently of the gateway's conversion)
/// and its JSON value.
fn decimal(rng: &mut Rng) -> (String, Value) {
    let scale = rng.below(5) as u32;
    // At most 15 significant digits, even with a fourth decimal added by [`mutate`].
    let magnitude = if rng.chance(20) {
        10_000_000_000
    } else {
        100_000
    };
    let units = rng.below(2 * magnitude + 1) as i64 - magnitude as i64;
    decimal_of(units, scale)
}

fn decimal_of(units: i64, scale: u32) -> (String, Value) {
    let divisor = 10_i64.pow(scale);
    let sign = if units < 0 { "-" } else { "" };
    let (whole, fraction) = (units.abs() / divisor, units.abs() % divisor);
    let text = if scale == 0 {
        format!("{sign}{whole}.0")
    } else {
        format!("{sign}{whole}.{fraction:0width$}", width = scale as usize)
    };
    let value: f64 = text.parse().expect("decimal text");
    (text, json!(value))
}

/// Cedar's text for a string literal.
fn cedar_string(s: &str) -> String {
    format!("\"{}\"", s.escape_default())
}

fn cedar_long(n: i64) -> String {
    if n == i64::MIN {
        // Cedar reads `-9223372036854775808` as the negation of a literal that overflows.
        "(-9223372036854775807 - 1)".to_owned()
    } else {
        n.to_string()
    }
}

/// One generated call of `mirror.mirror`: its arguments and the Cedar condition that holds
/// exactly when the policy sees these values.
struct Case {
    arguments: Map<String, Value>,
    condition: String,
    /// The same call with one value changed, which the case's policy must not permit.
    mutated: Map<String, Value>,
}

fn case(rng: &mut Rng, id: i64) -> Case {
    let mut args = Map::new();
    args.insert("id".into(), json!(id));
    let s = string(rng);
    let mut when = vec![
        format!("context.arguments.id == {id}"),
        format!("context.arguments.s == {}", cedar_string(&s)),
    ];
    args.insert("s".into(), json!(s));
    // Each optional argument is absent, null (absent to the policy, forwarded as null) or a
    // value, which the policy names behind `has` (the validator insists).
    let optional = ["n", "x", "b", "tags", "nums", "o", "opt"];
    for name in optional {
        if rng.chance(30) {
            when.push(format!("!(context.arguments has {name})"));
            continue;
        }
        let at = format!("context.arguments.{name}");
        let (value, condition) = match name {
            "n" => {
                let n = integer(rng);
                (json!(n), format!("{at} == {}", cedar_long(n)))
            }
            "x" => {
                let (text, value) = decimal(rng);
                (value, format!("{at} == decimal(\"{text}\")"))
            }
            "b" => {
                let b = rng.chance(50);
                (json!(b), format!("{at} == {b}"))
            }
            "tags" => {
                // Arrays are Cedar sets: the policy sees the members, not order or repeats.
                let tags: Vec<String> = (0..rng.below(4)).map(|_| string(rng)).collect();
                let items: Vec<String> = tags.iter().map(|t| cedar_string(t)).collect();
                (json!(tags), set_condition(&at, &items))
            }
            "nums" => {
                let nums: Vec<i64> = (0..rng.below(4)).map(|_| integer(rng)).collect();
                let items: Vec<String> = nums.iter().map(|n| cedar_long(*n)).collect();
                (json!(nums), set_condition(&at, &items))
            }
            "o" => {
                let k = string(rng);
                let mut o = json!({"k": k});
                let mut condition = format!("{at}.k == {}", cedar_string(&k));
                match rng.below(3) {
                    0 => condition.push_str(&format!(" && !({at} has v)")),
                    1 => {
                        o["v"] = Value::Null;
                        condition.push_str(&format!(" && !({at} has v)"));
                    }
                    _ => {
                        let (text, value) = decimal(rng);
                        o["v"] = value;
                        condition
                            .push_str(&format!(" && {at} has v && {at}.v == decimal(\"{text}\")"));
                    }
                }
                (o, condition)
            }
            _ => {
                if rng.chance(30) {
                    args.insert(name.into(), Value::Null);
                    when.push(format!("!(context.arguments has {name})"));
                    continue;
                }
                let opt = string(rng);
                (json!(opt), format!("{at} == {}", cedar_string(&opt)))
            }
        };
        args.insert(name.into(), value);
        when.push(format!("(context.arguments has {name} && {condition})"));
    }
    let mutated = mutate(rng, &args);
    Case {
        arguments: args,
        condition: when.join("\n    && "),
        mutated,
    }
}

fn set_condition(at: &str, items: &[String]) -> String {
    if items.is_empty() {
        // An empty set literal has no type; the validator refuses it.
        format!("{at}.isEmpty()")
    } else {
        format!("{at} == [{}]", items.join(", "))
    }
}

/// `args` with one value changed so that the policy must see a difference.
fn mutate(rng: &mut Rng, args: &Map<String, Value>) -> Map<String, Value> {
    let mut m = args.clone();
    let fields: Vec<String> = m.keys().filter(|k| *k != "id").cloned().collect();
    let field = rng.pick(&fields).clone();
    let value = m[&field].clone();
    let changed = match (field.as_str(), value) {
        ("s" | "opt", Value::String(s)) => json!(format!("{s}a")),
        ("opt", Value::Null) => json!(""),
        ("n", v) => json!(v.as_i64().expect("n") ^ 1),
        ("x", v) => {
            // One unit of the fourth decimal closer to zero (from 0: -0.0001): stays in range.
            let x = v.as_f64().expect("x");
            let (_, value) = decimal_of(
                (x * 10_000.0).round() as i64 + if x < 0.0 { 1 } else { -1 },
                4,
            );
            value
        }
        ("b", Value::Bool(b)) => json!(!b),
        ("tags", Value::Array(mut t)) => {
            t.push(json!("a new member"));
            Value::Array(t)
        }
        ("nums", Value::Array(mut n)) => {
            n.push(json!(1_234_567));
            Value::Array(n)
        }
        ("o", Value::Object(mut o)) => {
            let k = o["k"].as_str().expect("k").to_owned();
            o.insert("k".into(), json!(format!("{k}a")));
            Value::Object(o)
        }
        other => panic!("unexpected field {other:?}"),
    };
    m.insert(field, changed);
    m
}

#[tokio::test(flavor = "multi_thread")]
async fn the_policy_sees_exactly_the_arguments_the_service_receives() {
    const CASES: i64 = 300;
    let seed = std::env::var("POLICY_PROPERTY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("time")
                .as_nanos() as u64
                | 1
        });
    let mut rng = Rng(seed);
    let cases: Vec<Case> = (0..CASES).map(|id| case(&mut rng, id)).collect();
    let text: String = cases
        .iter()
        .enumerate()
        .map(|(id, c)| {
            format!(
                r#"@id("case-{id}")
permit (principal == User::"alice", action == Action::"mirror.mirror", resource)
when {{
    {}
}};

"#,
                c.condition
            )
        })
        .collect();
    let policies = PolicyFile::new(&text);
    let gw = Gateway::start(&policies.config(&mirror_service()));
    gw.wait_ready(&["mirror"]).await;
    let replay = format!(
        "(POLICY_PROPERTY_SEED={seed}; policies in {})",
        policies.path.display()
    );
    let mut alice = gw.client(&gw.alice);
    let mut permitted = Vec::new();
    for (id, c) in cases.iter().enumerate() {
        let sent = Value::Object(c.arguments.clone());
        let result = call(&mut alice, "mirror.mirror", sent.clone())
            .await
            .unwrap_or_else(|e| panic!("case {id} {sent} refused: {e:?} {replay}"));
        permitted.push((alice.next_id, id));
        let received = &result["structuredContent"];
        assert_eq!(
            received["arguments"], sent,
            "case {id}: the service received other arguments than were sent {replay}"
        );
        assert_eq!(received["duplicate_keys"], json!([]), "case {id} {replay}");

        let mutated = Value::Object(c.mutated.clone());
        assert_eq!(
            call(&mut alice, "mirror.mirror", mutated.clone()).await,
            Err(not_permitted("mirror.mirror")),
            "case {id}: {mutated} must not be permitted by a policy for {sent} {replay}"
        );
    }
    // Each permitted call was permitted by its own case's policy, and by that one alone.
    let records = audited(&gw, 2 * CASES as usize, |r| r["method"] == "tools/call").await;
    for (jsonrpc_id, id) in permitted {
        let record = records
            .iter()
            .find(|r| r["method"] == "tools/call" && r["jsonrpc_id"] == jsonrpc_id)
            .unwrap_or_else(|| panic!("no audit record for call {jsonrpc_id} {replay}"));
        assert_eq!(record["rule"], format!("case-{id}"), "{record} {replay}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn values_the_policy_cannot_see_exactly_are_refused_before_policy() {
    let policies = PolicyFile::new(
        r#"
@id("mirror-all")
permit (principal == User::"alice", action == Action::"mirror.mirror", resource);
"#,
    );
    let gw = Gateway::start(&policies.config(&mirror_service()));
    gw.wait_ready(&["mirror"]).await;
    let mut alice = gw.client(&gw.alice);
    // Sanity: an exact value goes through.
    assert!(
        call(
            &mut alice,
            "mirror.mirror",
            json!({"id": 1, "s": "", "x": 0.0001})
        )
        .await
        .is_ok()
    );
    let cases = [
        (
            json!({"id": 1, "s": "", "x": 0.00001}),
            "arguments.x: must be a number with at most 4 decimal places",
        ),
        (
            json!({"id": 1, "s": "", "x": 0.1 + 0.2}),
            "arguments.x: must be a number with at most 4 decimal places",
        ),
        (
            json!({"id": 1, "s": "", "x": 1e300}),
            "arguments.x: must be a number with at most 4 decimal places",
        ),
        (
            json!({"id": 1, "s": "", "n": 1.5}),
            "arguments.n: must be an integer that fits in 64 bits",
        ),
        (
            json!({"id": 1, "s": "", "n": 9_223_372_036_854_775_808_u64}),
            "arguments.n: must be an integer that fits in 64 bits",
        ),
        (
            json!({"id": 1, "s": "", "n": "1"}),
            "arguments.n: must be an integer",
        ),
        (
            json!({"id": 1, "s": "", "tags": ["a", 1]}),
            "arguments.tags[1]: must be a string",
        ),
        (
            json!({"id": 1, "s": "", "o": {"k": "a", "extra": 1}}),
            "arguments.o.extra: not declared by the tool's inputSchema",
        ),
        (
            json!({"id": 1, "s": "", "S": "smuggled"}),
            "arguments.S: not declared by the tool's inputSchema",
        ),
        (
            json!({"id": 1}),
            "arguments.s: is required by the tool's inputSchema",
        ),
    ];
    for (arguments, message) in cases {
        let (code, got) = call(&mut alice, "mirror.mirror", arguments.clone())
            .await
            .expect_err("refused");
        assert_eq!(code, -32602, "{arguments}: {got}");
        assert!(got.starts_with(message), "{arguments}: {got}");
        let record = audit_of_call(&gw, &json!(alice.next_id)).await;
        assert_eq!(
            (&record["rule"], &record["status"]),
            (&json!("arguments"), &json!("-32602")),
            "{record}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Attacks: probing through errors, argument smuggling

#[tokio::test(flavor = "multi_thread")]
async fn unknown_and_denied_tools_answer_alike_whatever_the_arguments() {
    let policies = PolicyFile::new(ECHO_POLICIES);
    let gw = Gateway::start(&policies.config(ECHO_SERVICE));
    gw.wait_ready(&["echo"]).await;
    // bob may call nothing: whether a tool exists, and what its arguments are, must not be
    // learnable from the errors, whatever arguments he sends.
    let mut bob = gw.client(&gw.bob);
    let probes = [
        json!({}),
        json!({"a": 1, "b": 2}),
        json!({"a": "not a number", "b": 2}),
        json!({"undeclared": true}),
        json!({"a": 1}),
    ];
    for arguments in &probes {
        for name in ["echo.add", "echo.no_such_tool", "nosuchservice.add"] {
            let answer = call(&mut bob, name, arguments.clone()).await;
            assert_eq!(answer, Err(not_permitted(name)), "bob {name} {arguments}");
        }
    }
    // The audit keeps them apart: each probe of the real tool is a denial.
    let probes_of_add = audited(&gw, probes.len(), |r| {
        r["principal"] == "bob" && r["target"] == "echo.add"
    })
    .await;
    assert_eq!(probes_of_add.len(), probes.len(), "{probes_of_add:#?}");
    assert!(
        probes_of_add.iter().all(|r| r["decision"] == "deny"),
        "{probes_of_add:#?}"
    );
    // alice may call echo.add with some arguments: she is told what is wrong with hers.
    let mut alice = gw.client(&gw.alice);
    assert_eq!(
        call(&mut alice, "echo.add", json!({"a": "one", "b": 2})).await,
        Err((-32602, "arguments.a: must be a number".to_owned()))
    );
    assert_eq!(
        call(&mut alice, "echo.add", json!({"a": 1, "b": 2, "c": 3})).await,
        Err((
            -32602,
            "arguments.c: not declared by the tool's inputSchema".to_owned()
        ))
    );
    // echo.env is forbidden whatever its arguments: alice learns nothing about them either.
    assert_eq!(
        call(&mut alice, "echo.env", json!({"bogus": 1})).await,
        Err(not_permitted("echo.env"))
    );
}

/// POSTs `body` (raw text) as a 2026-07-28 `tools/call` of `name`.
async fn post_raw(gw: &Gateway, token: &str, name: &str, body: String) -> Reply {
    let response = gw
        .http
        .post(&gw.url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("authorization", format!("Bearer {token}"))
        .header("mcp-protocol-version", V2026)
        .header("mcp-method", "tools/call")
        .header("mcp-name", name)
        .body(body)
        .send()
        .await
        .expect("send");
    read_reply(response).await
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicate_keys_never_let_the_policy_and_the_service_see_different_values() {
    let policies = PolicyFile::new(
        r#"
@id("only-allowed")
permit (principal == User::"alice", action == Action::"mirror.mirror", resource)
when { context.arguments.s == "allowed" };
"#,
    );
    let gw = Gateway::start(&policies.config(&mirror_service()));
    gw.wait_ready(&["mirror"]).await;
    // A tools/call whose params are `params` (raw JSON text, without `_meta`).
    let meta = meta_2026().to_string();
    let post = |params: &str| {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{{params},"_meta":{meta}}}}}"#
        );
        post_raw(&gw, &gw.alice, "mirror.mirror", body)
    };
    // Baseline: the raw request is well formed and permitted.
    let ok = post(r#""name":"mirror.mirror","arguments":{"id":1,"s":"allowed"}"#).await;
    assert_eq!(
        ok.result()["structuredContent"]["arguments"],
        json!({"id": 1, "s": "allowed"}),
        "{}",
        ok.body
    );
    let smuggled = [
        r#""name":"mirror.mirror","arguments":{"id":1,"s":"allowed","s":"evil"}"#,
        r#""name":"mirror.mirror","arguments":{"id":1,"s":"evil","s":"allowed"}"#,
        // The same key, spelled with an escape.
        r#""name":"mirror.mirror","arguments":{"id":1,"s":"allowed","\u0073":"evil"}"#,
        r#""name":"mirror.mirror","arguments":{"id":1,"s":"allowed","o":{"k":"a","k":"b"}}"#,
        // Two names: the tool authorized must be the tool called.
        r#""name":"mirror.mirror","name":"mirror.other","arguments":{"id":1,"s":"allowed"}"#,
        r#""name":"mirror.mirror","arguments":{"id":1,"s":"allowed"},"arguments":{"id":1,"s":"evil"}"#,
    ];
    for params in smuggled {
        let reply = post(params).await;
        assert_eq!(reply.status, 400, "{params}: {}", reply.body);
        assert_eq!(reply.error_code(), -32700, "{params}: {}", reply.body);
        assert!(
            reply.body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("duplicate key")),
            "{}",
            reply.body
        );
    }

    // Nothing but the baseline reached the service: one allowed call, the rest refused at
    // the transport (rule `json`).
    let refused = audited(&gw, smuggled.len(), |r| r["rule"] == "json").await;
    assert_eq!(refused.len(), smuggled.len(), "{refused:#?}");
    let calls = audited(&gw, 1, |r| r["method"] == "tools/call").await;
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert_eq!(calls[0]["decision"], "allow", "{calls:#?}");
}

// ---------------------------------------------------------------------------------------
// micromcp policy explain | test

/// A folder with a config (echo service, alice's token with the role `support`) and its
/// policies in `policies/`, as an operator would lay it out.
fn cli_config() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("policies")).expect("mkdir");
    std::fs::write(
        dir.path().join("policies/echo.cedar"),
        r#"
@id("support-echo")
permit (principal in Role::"support", action == Action::"echo.echo", resource);

@id("no-secrets")
forbid (principal, action == Action::"echo.echo", resource)
when { context.arguments.text like "*secret*" };

@id("big-sums-need-approval")
@approval("required")
permit (principal in Role::"support", action == Action::"echo.add", resource)
when { context.arguments.a.greaterThan(decimal("100.0")) };

@id("no-weekend-sums")
forbid (principal, action == Action::"echo.add", resource)
when { ["Sat", "Sun"].contains(context.time.weekday) };
"#,
    )
    .expect("write");
    let config = format!(
        r#"
[[auth.tokens]]
principal = "alice"
agent = "bot"
roles = ["support"]
hash = "{}"

[policy]
files = ["policies"]
{ECHO_SERVICE}"#,
        token().hash
    );
    std::fs::write(dir.path().join("gateway.toml"), config).expect("write");
    dir
}

fn micromcp(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir).args(args);
    run(cmd)
}

#[test]
fn policy_explain_prints_the_decision_and_the_policies_that_made_it() {
    let dir = cli_config();
    let explain = |extra: &[&str]| {
        let mut args = vec!["policy", "explain", "--config", "gateway.toml"];
        args.extend_from_slice(extra);
        micromcp(dir.path(), &args)
    };
    // alice's roles come from her token entry (principal and agent).
    let allowed = explain(&[
        "--principal",
        "alice",
        "--agent",
        "bot",
        "--tool",
        "echo.echo",
        "--args",
        r#"{"text": "hello"}"#,
    ]);
    assert_eq!(allowed.code, Some(0), "{}", allowed.describe());
    assert!(
        allowed
            .stdout
            .contains("principal: alice (agent bot, roles [support]")
            && allowed.stdout.contains("decision: allow")
            && allowed
                .stdout
                .contains("because:  permitted by support-echo"),
        "{}",
        allowed.describe()
    );

    let forbidden = explain(&[
        "--principal",
        "alice",
        "--agent",
        "bot",
        "--tool",
        "echo.echo",
        "--args",
        r#"{"text": "the secret"}"#,
    ]);
    assert_eq!(forbidden.code, Some(1), "{}", forbidden.describe());
    assert!(
        forbidden.stdout.contains("decision: deny")
            && forbidden
                .stdout
                .contains("because:  forbidden by no-secrets"),
        "{}",
        forbidden.describe()
    );

    let nobody = explain(&[
        "--principal",
        "mallory",
        "--tool",
        "echo.echo",
        "--args",
        r#"{"text": "hi"}"#,
    ]);
    assert_eq!(nobody.code, Some(1), "{}", nobody.describe());
    assert!(
        nobody
            .stdout
            .contains("because:  default-deny (no policy permits it)"),
        "{}",
        nobody.describe()
    );

    // A Wednesday, then a Saturday.
    let big_sum = |time: &str| {
        explain(&[
            "--principal",
            "carol",
            "--role",
            "support",
            "--tool",
            "echo.add",
            "--args",
            r#"{"a": 250.5, "b": 1}"#,
            "--time",
            time,
        ])
    };
    let weekday = big_sum("2026-11-25T10:00:00Z");
    assert_eq!(weekday.code, Some(0), "{}", weekday.describe());
    assert!(
        weekday.stdout.contains("decision: approval")
            && weekday
                .stdout
                .contains("permitted by big-sums-need-approval")
            && weekday
                .stdout
                .contains("obligation: a human approver must approve"),
        "{}",
        weekday.describe()
    );
    let weekend = big_sum("2026-11-28T10:00:00Z");
    assert_eq!(weekend.code, Some(1), "{}", weekend.describe());
    assert!(
        weekend.stdout.contains("forbidden by no-weekend-sums"),
        "{}",
        weekend.describe()
    );

    let mistyped = explain(&[
        "--principal",
        "alice",
        "--agent",
        "bot",
        "--tool",
        "echo.echo",
        "--args",
        r#"{"text": 5}"#,
    ]);
    assert_eq!(mistyped.code, Some(1), "{}", mistyped.describe());
    assert!(
        mistyped
            .stdout
            .contains("refused before policy: arguments.text: must be a string"),
        "{}",
        mistyped.describe()
    );

    let not_json = explain(&[
        "--principal",
        "alice",
        "--tool",
        "echo.echo",
        "--args",
        "[1]",
    ]);
    assert_eq!(not_json.code, Some(2), "{}", not_json.describe());
    assert!(not_json.stderr.contains("--args must be a JSON object"));
}

#[test]
fn policy_test_runs_a_table_of_cases_and_fails_on_a_wrong_expectation() {
    let dir = cli_config();
    let passing = r#"
config = "gateway.toml"

[[case]]
name = "support echoes"
principal = "alice"
agent = "bot"
tool = "echo.echo"
arguments = { text = "hello" }
expect = "allow"
policies = ["support-echo"]

[[case]]
name = "no secrets"
principal = "alice"
agent = "bot"
tool = "echo.echo"
arguments = { text = "my secret" }
expect = "deny"
policies = ["no-secrets"]

[[case]]
name = "big sums on a weekday need a person"
principal = "carol"
roles = ["support"]
tool = "echo.add"
arguments = { a = 100.0001, b = 0 }
time = "2026-11-25T10:00:00Z"
expect = "approval"

[[case]]
name = "small sums are not permitted at all"
principal = "carol"
roles = ["support"]
tool = "echo.add"
arguments = { a = 100, b = 0 }
time = "2026-11-25T10:00:00Z"
expect = "deny"

[[case]]
name = "arguments of the wrong type are denied"
principal = "alice"
agent = "bot"
tool = "echo.echo"
arguments = { text = 5 }
expect = "deny"
"#;
    std::fs::write(dir.path().join("tests.toml"), passing).expect("write");
    let out = micromcp(dir.path(), &["policy", "test", "tests.toml"]);
    assert_eq!(out.code, Some(0), "{}", out.describe());
    for name in [
        "ok    support echoes",
        "ok    no secrets",
        "ok    big sums on a weekday need a person",
        "ok    small sums are not permitted at all",
        "ok    arguments of the wrong type are denied",
        "5 passed, 0 failed",
    ] {
        assert!(out.stdout.contains(name), "{name:?}: {}", out.describe());
    }

    let failing = r#"
config = "gateway.toml"

[[case]]
name = "secrets are fine, says a wrong test"
principal = "alice"
agent = "bot"
tool = "echo.echo"
arguments = { text = "my secret" }
expect = "allow"

[[case]]
name = "wrong policy named"
principal = "alice"
agent = "bot"
tool = "echo.echo"
arguments = { text = "hi" }
expect = "allow"
policies = ["someone-else"]
"#;
    std::fs::write(dir.path().join("failing.toml"), failing).expect("write");
    let out = micromcp(dir.path(), &["policy", "test", "failing.toml"]);
    assert_eq!(out.code, Some(1), "{}", out.describe());
    assert!(
        out.stdout
            .contains("FAIL  secrets are fine, says a wrong test: expected allow, got deny")
            && out.stdout.contains(
                "FAIL  wrong policy named: expected policies [someone-else], got [support-echo]"
            )
            && out.stdout.contains("0 passed, 2 failed"),
        "{}",
        out.describe()
    );

    std::fs::write(
        dir.path().join("bad.toml"),
        "config = \"gateway.toml\"\n[[case]]\nname = \"x\"\nprincipal = \"alice\"\ntool = \"echo.echo\"\nexpect = \"maybe\"\n",
    )
    .expect("write");
    let out = micromcp(dir.path(), &["policy", "test", "bad.toml"]);
    assert_eq!(out.code, Some(2), "{}", out.describe());
    assert!(
        out.stderr
            .contains("expect must be allow, deny or approval"),
        "{}",
        out.describe()
    );
}
