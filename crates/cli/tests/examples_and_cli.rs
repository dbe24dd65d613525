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
