//! The built-in services (`fs`, `fetch`, `vector`) through the real gateway: started by it as
//! `builtin` children (own process, config file's folder, empty environment), called by a
//! client with the gateway's grants in front, audited. Each service's own adversarial suite
//! lives in its crate; these tests prove the wiring and that the guards hold end to end.

mod common;

use std::path::Path;

use common::*;
use serde_json::{Value, json};

/// A TOML basic string holding `path`.
fn toml_path(path: &Path) -> String {
    Value::String(path.display().to_string()).to_string()
}

/// `tools/call` of `name` as a 2026-07-28 client; returns (is_error, structured or text).
async fn call_tool(client: &mut Client, name: &str, arguments: Value) -> (bool, Value) {
    let reply = client
        .call_2026("tools/call", json!({"name": name, "arguments": arguments}))
        .await;
    let result = reply.result();
    let is_error = result["isError"] == true;
    let payload = match result.get("structuredContent") {
        Some(structured) if !is_error => structured.clone(),
        _ => json!(text_of(&reply)),
    };
    (is_error, payload)
}

async fn listed_tools(client: &mut Client) -> Vec<String> {
    tool_names(&client.call_2026("tools/list", json!({})).await)
}

// ---------------------------------------------------------------------------------------
// fs

#[tokio::test(flavor = "multi_thread")]
async fn fs_serves_files_beneath_its_root_and_refuses_the_rest_through_the_gateway() {
    let outside = tempfile::tempdir().expect("tempdir");
    std::fs::write(outside.path().join("secret.txt"), "OUTSIDE-THE-ROOT").expect("write");
    // The root exists before the gateway starts its fs service (a missing root is a start
    // failure, retried with backoff).
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    std::fs::create_dir_all(data.join("notes")).expect("mkdir");
    std::fs::write(data.join("notes/hello.md"), "hello from the root\n").expect("write");
    std::fs::write(data.join(".env"), "API_KEY=do-not-serve").expect("write");
    std::os::unix::fs::symlink(outside.path().join("secret.txt"), data.join("escape.txt"))
        .expect("symlink");
    std::fs::write(root.path().join("sibling.txt"), "OUTSIDE-THE-ROOT").expect("write");
    let gw = Gateway::start(&format!(
        r#"
[[policy.grants]]
principal = "alice"
tools = ["fs.read_file", "fs.list_directory"]

[services.fs]
builtin = "fs"
args = ["--root", {}]
"#,
        toml_path(&data)
    ));
    gw.wait_ready(&["fs"]).await;
    let mut alice = gw.client(&gw.alice);

    // Only the granted tools are listed, never write_file (not enabled) nor find/search.
    let tools = listed_tools(&mut alice).await;
    assert_eq!(tools, ["fs.list_directory", "fs.read_file"], "{tools:?}");

    let (is_error, read) = call_tool(
        &mut alice,
        "fs.read_file",
        json!({"path": "notes/hello.md"}),
    )
    .await;
    assert!(!is_error, "{read}");
    assert_eq!(read["text"], "hello from the root\n");

    let (_, listing) = call_tool(&mut alice, "fs.list_directory", json!({"path": "."})).await;
    let names: Vec<&str> = listing["entries"]
        .as_array()
        .unwrap_or_else(|| panic!("no entries in {listing}"))
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert!(names.contains(&"notes"), "{listing}");
    assert!(!names.contains(&".env"), "denied file listed: {listing}");

    for (path, rule) in [
        ("../sibling.txt", "escapes the root"),
        ("escape.txt", "symlink"),
        (".env", "denied"),
    ] {
        let (is_error, text) = call_tool(&mut alice, "fs.read_file", json!({"path": path})).await;
        assert!(is_error, "{path}: {text}");
        let text = text.as_str().expect("error text");
        assert!(text.contains(rule), "{path}: {text}");
        assert!(
            !text.contains("OUTSIDE") && !text.contains("do-not-serve"),
            "{text}"
        );
    }

    // Not granted: refused by the gateway, never reaching the service.
    let reply = alice
        .call_2026(
            "tools/call",
            json!({"name": "fs.find_files", "arguments": {"pattern": "*"}}),
        )
        .await;
    assert!(reply.body.get("error").is_some(), "{}", reply.body);

    let audit = gw.audit_at_least(6).await;
    let escapes: Vec<&Value> = audit
        .iter()
        .filter(|r| r["target"] == "fs.read_file" && r["status"] == "tool_error")
        .collect();
    assert_eq!(
        escapes.len(),
        3,
        "one audit record per refused read: {audit:?}"
    );
}

// ---------------------------------------------------------------------------------------
// fetch

/// A local web server: `/page` is HTML, `/to-internal` redirects to a loopback address by IP.
async fn web_server() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    use axum::{Router, http::header, response::IntoResponse, routing::get};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = Router::new()
        .route(
            "/page",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                    "<html><body><h1>Docs</h1><p>Gateways <b>enforce</b> policy.</p></body></html>",
                )
                    .into_response()
            }),
        )
        .route(
            "/to-internal",
            get(move || async move {
                (
                    axum::http::StatusCode::FOUND,
                    [(
                        header::LOCATION,
                        format!("http://127.0.0.1:{}/page", addr.port()),
                    )],
                )
                    .into_response()
            }),
        );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, task)
}

fn fetch_config(port: u16, allow_cidr: bool) -> String {
    let cidr = if allow_cidr {
        r#", "--allow-cidr", "127.0.0.1/32""#
    } else {
        ""
    };
    format!(
        r#"
[[policy.grants]]
principal = "alice"
tools = ["fetch.*"]

[services.fetch]
builtin = "fetch"
args = ["--allow-http", "docs.test", "--resolve", "docs.test=127.0.0.1", "--allow-port", "{port}"{cidr}]
"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn fetch_reaches_a_local_server_only_through_the_explicit_cidr_option() {
    let (addr, _server) = web_server().await;
    let url = format!("http://docs.test:{}/page", addr.port());

    // Without --allow-cidr: the name resolves to loopback and is refused.
    let gw = Gateway::start(&fetch_config(addr.port(), false));
    gw.wait_ready(&["fetch"]).await;
    let mut alice = gw.client(&gw.alice);
    let (is_error, text) = call_tool(&mut alice, "fetch.fetch_text", json!({"url": url})).await;
    assert!(is_error, "{text}");
    assert!(
        text.as_str().is_some_and(|t| t.contains("loopback")),
        "{text}"
    );
    drop(gw);

    // With it: fetched and converted to text; the allowance is logged at startup.
    let gw = Gateway::start(&fetch_config(addr.port(), true));
    gw.wait_ready(&["fetch"]).await;
    let mut alice = gw.client(&gw.alice);
    let (is_error, page) = call_tool(&mut alice, "fetch.fetch_text", json!({"url": url})).await;
    assert!(!is_error, "{page}");
    assert_eq!(page["status"], 200, "{page}");
    let text = page["text"].as_str().expect("text");
    assert!(
        text.contains("Gateways") && text.contains("enforce") && !text.contains("<b>"),
        "{page}"
    );
    assert!(
        gw.stderr_text().contains("127.0.0.1/32"),
        "the allowed CIDR must be logged: {}",
        gw.stderr_text()
    );

    // A redirect to an IP literal is re-checked and refused, even inside the allowed CIDR.
    let (is_error, text) = call_tool(
        &mut alice,
        "fetch.fetch_text",
        json!({"url": format!("http://docs.test:{}/to-internal", addr.port())}),
    )
    .await;
    assert!(is_error, "{text}");
    // Names outside the allowlist and the metadata endpoint stay refused.
    for url in [
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        format!("http://localhost:{}/page", addr.port()),
        "file:///etc/passwd".to_owned(),
    ] {
        let (is_error, text) = call_tool(&mut alice, "fetch.fetch_text", json!({"url": url})).await;
        assert!(is_error, "{url}: {text}");
    }
}

// ---------------------------------------------------------------------------------------
// vector

fn write_doc(dir: &Path, rel: &str, tenant: &str, level: &str, body: &str) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(
        path,
        format!("---\ntenant: {tenant}\nclassification: {level}\n---\n{body}\n"),
    )
    .expect("write doc");
}

/// Waits until `search` reports a finished index (no `indexing` progress in its output).
async fn search_when_indexed(client: &mut Client, tool: &str, query: &str) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (is_error, out) = call_tool(client, tool, json!({"query": query, "k": 10})).await;
        assert!(!is_error, "{out}");
        if out.get("indexing").is_none_or(Value::is_null) {
            return out;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still indexing: {out}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

fn result_paths(out: &Value) -> Vec<String> {
    out["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results in {out}"))
        .iter()
        .map(|r| r["path"].as_str().expect("path").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn vector_search_returns_only_the_callers_tenant_at_or_below_its_clearance() {
    let docs = tempfile::tempdir().expect("tempdir");
    let body = "Quarterly revenue forecast for the northern region.";
    write_doc(docs.path(), "acme/public.md", "acme", "public", body);
    write_doc(docs.path(), "acme/secret.md", "acme", "restricted", body);
    write_doc(docs.path(), "globex/forecast.md", "globex", "public", body);
    let docs_dir = toml_path(docs.path());
    // One vector service per identity; alice may use only acme's, bob only globex's.
    let gw = Gateway::start(&format!(
        r#"
[[policy.grants]]
principal = "alice"
tools = ["acme-kb.search"]

[[policy.grants]]
principal = "bob"
tools = ["globex-kb.search"]

[services.acme-kb]
builtin = "vector"
args = ["--docs", {docs_dir}, "--state-dir", "acme-state", "--tenant", "acme", "--clearance", "internal"]

[services.globex-kb]
builtin = "vector"
args = ["--docs", {docs_dir}, "--state-dir", "globex-state", "--tenant", "globex", "--clearance", "restricted"]
"#
    ));
    gw.wait_ready(&["acme-kb", "globex-kb"]).await;

    let mut alice = gw.client(&gw.alice);
    assert_eq!(listed_tools(&mut alice).await, ["acme-kb.search"]);
    let out = search_when_indexed(&mut alice, "acme-kb.search", body).await;
    assert_eq!(result_paths(&out), ["acme/public.md"], "{out}");

    let mut bob = gw.client(&gw.bob);
    let out = search_when_indexed(&mut bob, "globex-kb.search", body).await;
    assert_eq!(result_paths(&out), ["globex/forecast.md"], "{out}");

    // A client claiming another tenant in arguments gains nothing: the tool does not declare
    // such an argument, so the gateway refuses the call before it reaches the policy or the
    // service (the policy sees exactly what is forwarded, docs/policy.md).
    let reply = alice
        .call_2026(
            "tools/call",
            json!({
                "name": "acme-kb.search",
                "arguments": {"query": body, "tenant": "globex"},
            }),
        )
        .await;
    assert_eq!(reply.body["error"]["code"], -32602, "{}", reply.body);
    assert!(
        reply.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("arguments.tenant")),
        "{}",
        reply.body
    );
    let reply = alice
        .call_2026(
            "tools/call",
            json!({"name": "globex-kb.search", "arguments": {"query": body}}),
        )
        .await;
    assert!(reply.body.get("error").is_some(), "{}", reply.body);
}
