//! Every shipped example config validates; the CLI's config and token commands behave.

mod common;

use std::process::Command;

use common::*;
use serde_json::json;

#[test]
fn every_example_config_validates() {
    let mut checked = 0;
    for entry in std::fs::read_dir(workspace().join("examples")).expect("examples") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out = Command::new(BIN)
                .args(["config", "check"])
                .arg(&path)
                .output()
                .expect("run");
            assert!(
                out.status.success(),
                "{} does not validate:\n{}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 2,
        "examples/ holds the quickstart and third-party configs"
    );
}

/// The example policies pass their own tests, as an operator would run them in CI, and a broken
/// expectation makes the command fail (the runner can fail).
#[test]
fn the_example_policies_pass_their_policy_tests() {
    let tests = workspace().join("examples/policies/tests.toml");
    let out = Command::new(BIN)
        .args(["policy", "test"])
        .arg(&tests)
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(" 0 failed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!stdout.contains("FAIL"), "{stdout}");
    let dir = tempfile::tempdir().expect("tempdir");
    let wrong = dir.path().join("wrong.toml");
    let text = std::fs::read_to_string(&tests)
        .expect("read")
        .replace(
            "config = \"../support.toml\"",
            &format!("config = {:?}", workspace().join("examples/support.toml")),
        )
        .replacen("expect = \"approval\"", "expect = \"allow\"", 1);
    std::fs::write(&wrong, text).expect("write");
    let out = Command::new(BIN)
        .args(["policy", "test"])
        .arg(&wrong)
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL  a large refund needs a second person: expected allow, got approval"),
        "{stdout}"
    );
}

#[test]
fn config_check_reports_every_problem_at_once_with_key_paths() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        r#"
[listen]
addr = "nowhere"
colour = "blue"

[[auth.tokens]]
principal = "alice"
hash = "env:MICROMCP_TEST_UNSET_VARIABLE"

[[policy.grants]]
principal = "alice"
tools = ["*"]

[services.crm]
url = "https://crm.example/mcp"
headers = { Authorization = "Bearer inline-secret-value" }

[sevices.typo]
"#,
    )
    .expect("write");
    let out = Command::new(BIN)
        .args(["config", "check"])
        .arg(&file)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "listen.addr:",
        "listen.colour: unknown key",
        "auth.tokens[0].hash: environment variable MICROMCP_TEST_UNSET_VARIABLE is not set",
        "policy.grants[0].tools[0]:",
        "services.crm.headers.Authorization: credentials must be given by reference",
        "sevices: unknown key",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    assert!(
        !stderr.contains("inline-secret-value"),
        "errors never echo secret values"
    );
}

#[test]
fn token_new_prints_a_token_and_a_matching_config_entry() {
    let out = Command::new(BIN)
        .args(["token", "new", "--principal", "carol", "--agent", "ci"])
        .output()
        .expect("run");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let token = text
        .split_whitespace()
        .find(|w| w.starts_with("mmcp_"))
        .expect("token");
    let hash = text
        .lines()
        .find_map(|l| l.strip_prefix("hash = "))
        .expect("hash line")
        .trim_matches('"');
    let (_, expected) = (token, format!("sha256:{}", sha256_hex(token)));
    assert_eq!(hash, expected);
    assert!(text.contains("principal = \"carol\"") && text.contains("agent = \"ci\""));
}

fn sha256_hex(token: &str) -> String {
    micromcp_auth::sha256(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn first_start_generates_a_token_shows_it_once_and_stores_only_its_hash() {
    let config = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n[audit]\nfile = \"audit.jsonl\"\n[[auth.tokens]]\nprincipal = \"alice\"\nhash = \"generate:state/token.sha256\"\n{ECHO}"
    );
    let gw = Gateway::start_raw(&config, String::new(), String::new());
    let stderr = gw.stderr_text();
    let token = stderr
        .split_whitespace()
        .find(|w| w.starts_with("mmcp_"))
        .expect("token shown on first start")
        .to_owned();
    let stored = std::fs::read_to_string(gw.path("state/token.sha256")).expect("hash file");
    assert!(!stored.contains(&token));
    assert_eq!(stored.trim(), format!("sha256:{}", sha256_hex(&token)));
    let mut c = gw.client(&token);
    c.initialize().await;
    assert_eq!(c.call("ping", json!({})).await.status, 200);
}

/// The README quickstart's config, run as shipped (only the port, the token and the folders
/// made absolute): every service starts, and each built-in service answers within its limits.
#[tokio::test(flavor = "multi_thread")]
async fn the_quickstart_config_runs_every_service() {
    let examples = workspace().join("examples");
    let shipped = std::fs::read_to_string(examples.join("gateway.toml")).expect("quickstart");
    let dev = token();
    let quote =
        |p: std::path::PathBuf| serde_json::Value::String(p.display().to_string()).to_string();
    let config = shipped
        .replace(r#"addr = "127.0.0.1:8080""#, r#"addr = "127.0.0.1:0""#)
        .replace(
            r#"hash = "generate:../.micromcp/quickstart-token.sha256""#,
            &format!("hash = {:?}", dev.hash),
        )
        .replace(
            r#""--root", "data""#,
            &format!(r#""--root", {}"#, quote(examples.join("data"))),
        )
        .replace(
            r#""--docs", "knowledge""#,
            &format!(r#""--docs", {}"#, quote(examples.join("knowledge"))),
        )
        .replace(r#""../.micromcp/vector""#, r#""vector-state""#);
    for replaced in [
        "8080",
        "generate:",
        r#""data""#,
        r#""knowledge""#,
        "\"../.micromcp",
    ] {
        assert!(
            !config.contains(replaced),
            "the quickstart config changed shape ({replaced} is still there); update this test"
        );
    }
    let gw = Gateway::start_raw(&config, dev.token.clone(), String::new());
    gw.wait_ready(&["echo", "fs", "fetch", "knowledge"]).await;
    let mut dev = gw.client(&dev.token);

    let reply = dev
        .call_2026(
            "tools/call",
            json!({"name": "fs.read_file", "arguments": {"path": "notes/on-call.md"}}),
        )
        .await;
    assert!(text_of(&reply).contains("On-call notes"), "{}", reply.body);

    // The knowledge service's caller is acme/internal: globex's document and acme's
    // confidential one never appear, however the query is phrased.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let paths = loop {
        let reply = dev
            .call_2026(
                "tools/call",
                json!({"name": "knowledge.search", "arguments": {"query": "hotel per night approval leaked deploy key", "k": 10}}),
            )
            .await;
        let out = reply.result()["structuredContent"].clone();
        if out.get("indexing").is_none_or(serde_json::Value::is_null) {
            break out["results"]
                .as_array()
                .expect("results")
                .iter()
                .map(|r| r["path"].as_str().expect("path").to_owned())
                .collect::<Vec<_>>();
        }
        assert!(std::time::Instant::now() < deadline, "{out}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(
        paths.first().map(String::as_str),
        Some("acme/expenses.md"),
        "{paths:?}"
    );
    assert!(
        paths
            .iter()
            .all(|p| p.starts_with("acme/") && !p.contains("incident")),
        "{paths:?}"
    );

    let reply = dev
        .call_2026(
            "tools/call",
            json!({"name": "fetch.fetch_text", "arguments": {"url": "http://127.0.0.1:8080/mcp"}}),
        )
        .await;
    assert_eq!(reply.result()["isError"], true, "{}", reply.body);
}

/// Regression: the README's first command (`cargo run --release -- gateway …`) stopped working
/// when the workspace gained more binaries (cargo could not tell which one to run).
#[test]
fn the_readme_run_command_runs_micromcp() {
    let readme = std::fs::read_to_string(workspace().join("README.md")).expect("README");
    let command = readme
        .lines()
        .find(|l| l.trim_start().starts_with("cargo run"))
        .expect("the README shows a cargo run command");
    let (cargo_part, _) = command
        .split_once(" -- ")
        .expect("cargo run … -- <micromcp arguments>");
    // Same cargo arguments, minus --release (a test must not start a release build).
    let cargo_args: Vec<&str> = cargo_part
        .split_whitespace()
        .skip(1)
        .filter(|a| *a != "--release")
        .collect();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(&cargo_args)
        .args(["--quiet", "--", "--version"])
        .current_dir(workspace())
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "`{command}` fails: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("micromcp "),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
