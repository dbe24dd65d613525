//! The caller's identity carried to every service, never the caller's token (issue 10 item 5,
//! docs/identity.md):
//! - an HTTP service with `identity = "jwt"` — a real `mcp` SDK server verifying tokens with
//!   PyJWT against the gateway's `/.well-known/jwks.json` — learns each caller from a JWT the
//!   gateway signs, across a key rotation, and never sees a caller's own token;
//! - the built-in `vector` learns each caller from a signed identity bound to the request, and
//!   refuses calls without one; launch flags stay the upper bound.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use micromcp_identity::signed::{Binding, META_KEY, RequestId, ServiceKey};
use serde_json::{Value, json};

const ISSUER: &str = "https://gateway.test";

/// `fixtures/jwt_service.py`: a real MCP SDK server that accepts only gateway-signed tokens.
struct JwtService {
    child: Child,
    stdin: ChildStdin,
    /// Where the service acknowledges each JWKS URL it switched to.
    stdout: BufReader<std::process::ChildStdout>,
    url: String,
    /// Every request's headers, as the service received them (JSON lines).
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl JwtService {
    fn start() -> JwtService {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("headers.jsonl");
        let script = workspace().join("crates/cli/tests/fixtures/jwt_service.py");
        let mut child = Command::new(tool("venv/bin/python"))
            .arg(script)
            .arg(ISSUER)
            .arg(&log)
            // PyJWT fetches the JWKS with urllib, which would honour a proxy from the
            // environment: the test never leaves the machine.
            .env("NO_PROXY", "*")
            .env("no_proxy", "*")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start jwt_service.py");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let url = announced_url(&mut child);
        JwtService {
            child,
            stdin,
            stdout,
            url,
            log,
            _dir: dir,
        }
    }

    /// Makes the service verify tokens against `gw`'s JWKS from now on (returns once the
    /// service says so).
    fn trust(&mut self, gw: &Gateway) {
        let url = jwks_url(gw);
        writeln!(self.stdin, "{url}").expect("write JWKS URL");
        self.stdin.flush().expect("flush");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("read");
        assert_eq!(line.trim(), format!("trusting {url}"));
    }

    fn requests(&self) -> Vec<Value> {
        read_jsonl(&self.log)
    }
}

impl Drop for JwtService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn jwks_url(gw: &Gateway) -> String {
    gw.url.replace("/mcp", "/.well-known/jwks.json")
}

async fn jwks(gw: &Gateway) -> Value {
    let response = gw.http.get(jwks_url(gw)).send().await.expect("GET JWKS");
    assert_eq!(response.status(), 200, "public: no token needed");
    let cache = response.headers()["cache-control"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(cache.contains("max-age="), "{cache}");
    response.json().await.expect("JSON")
}

fn kids(jwks: &Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["kid"].as_str().expect("kid").to_owned())
        .collect()
}

fn who_config(service_url: &str, identity: &str) -> String {
    format!(
        r#"
[identity]
issuer = "{ISSUER}"
{identity}

[[policy.grants]]
principal = "alice"
tools = ["who.*"]

[[policy.grants]]
principal = "bob"
tools = ["who.*"]

[services.who]
url = "{service_url}"
identity = "jwt"
"#
    )
}

/// Calls `who.<tool>` and returns its JSON answer.
async fn call_who(client: &mut Client, tool: &str, arguments: Value) -> Value {
    let reply = client
        .call_2026(
            "tools/call",
            json!({"name": format!("who.{tool}"), "arguments": arguments}),
        )
        .await;
    assert_ne!(reply.result()["isError"], true, "{}", reply.body);
    serde_json::from_str(&text_of(&reply)).expect("the tool answers JSON")
}

/// The claims of a compact JWT (not verified: the service did that).
fn claims_of(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("JSON")
}

/// The bearer tokens of the requests the service received, in order.
fn bearer_tokens(requests: &[Value]) -> Vec<String> {
    requests
        .iter()
        .map(|r| {
            let values = r["headers"]["authorization"]
                .as_array()
                .unwrap_or_else(|| panic!("a request without Authorization: {r}"));
            assert_eq!(values.len(), 1, "{r}");
            values[0]
                .as_str()
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or_else(|| panic!("not a bearer token: {r}"))
                .to_owned()
        })
        .collect()
}

fn now() -> u64 {
    micromcp_identity::now_secs()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http_service_learns_each_caller_from_a_gateway_signed_jwt_never_their_token() {
    let mut service = JwtService::start();
    let gw = Gateway::start(&who_config(&service.url, "lifetime = \"2m\""));
    // Until the service knows the gateway's keys it refuses every token; the gateway says so.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gw.stderr_text().contains("(HTTP 401 Unauthorized)") {
        assert!(Instant::now() < deadline, "{}", gw.stderr_text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    service.trust(&gw);
    gw.wait_ready(&["who"]).await;
    assert!(
        gw.stderr_text().contains("key made at start"),
        "an ephemeral key with identity = \"jwt\" is warned about"
    );
    let published = jwks(&gw).await;
    assert_eq!(kids(&published).len(), 1, "{published}");
    assert_eq!(published["keys"][0]["alg"], "EdDSA");
    assert!(
        published["keys"][0].get("d").is_none(),
        "never the private key"
    );

    let mut alice = gw.client(&gw.alice);
    let first = call_who(&mut alice, "whoami", json!({})).await;
    let claims = &first["claims"];
    assert_eq!(first["header"]["kid"], published["keys"][0]["kid"]);
    assert_eq!(first["header"]["alg"], "EdDSA");
    assert_eq!(first["header"]["typ"], "JWT");
    assert_eq!(claims["iss"], ISSUER);
    assert_eq!(claims["aud"], service.url.as_str(), "bound to this service");
    assert_eq!(claims["sub"], "alice");
    assert_eq!(
        claims["act"],
        json!({"sub": "bot"}),
        "the agent acts for alice"
    );
    assert_eq!(claims["tenant"], "acme");
    assert_eq!(claims["auth_method"], "api_token");
    let iat = claims["iat"].as_u64().expect("iat");
    let exp = claims["exp"].as_u64().expect("exp");
    assert_eq!(exp - iat, 120, "identity.lifetime");
    assert!(exp - iat <= 300 && exp > now(), "short-lived: {claims}");
    assert_eq!(claims["nbf"].as_u64(), Some(iat));

    // Warm: the same caller reuses its token (half its lifetime); another caller gets its own.
    let again = call_who(&mut alice, "whoami", json!({})).await;
    assert_eq!(again["claims"]["jti"], claims["jti"]);
    let mut bob = gw.client(&gw.bob);
    let bobs = call_who(&mut bob, "whoami", json!({})).await;
    let bob_claims = &bobs["claims"];
    assert_eq!(bob_claims["sub"], "bob");
    assert!(bob_claims.get("act").is_none() && bob_claims.get("tenant").is_none());
    assert_ne!(bob_claims["jti"], claims["jti"], "unique jti per token");

    // What reached the service: gateway-signed tokens only, never a caller's credential.
    let requests = service.requests();
    assert!(requests.len() >= 4, "{requests:?}");
    for request in &requests {
        let text = request.to_string();
        assert!(
            !text.contains(&gw.alice) && !text.contains(&gw.bob),
            "a caller's token reached the service: {text}"
        );
    }
    let tokens = bearer_tokens(&requests);
    let subjects: Vec<(String, String)> = tokens
        .iter()
        .map(|t| {
            let c = claims_of(t);
            assert_eq!(c["iss"], ISSUER, "{c}");
            (
                c["sub"].as_str().expect("sub").to_owned(),
                c["auth_method"].as_str().expect("auth_method").to_owned(),
            )
        })
        .collect();
    assert!(
        subjects.contains(&(ISSUER.to_owned(), "gateway".to_owned())),
        "the gateway's own requests (initialize) carry its own token: {subjects:?}"
    );
    assert!(subjects.contains(&("alice".to_owned(), "api_token".to_owned())));
    assert!(subjects.contains(&("bob".to_owned(), "api_token".to_owned())));
}

/// Writes a PKCS#8 PEM key (`ed25519` or P-256) to `dir/name`; returns its path.
fn key_file(dir: &Path, name: &str, ed25519: bool) -> PathBuf {
    let rng = ring::rand::SystemRandom::new();
    let der = if ed25519 {
        ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).expect("key")
    } else {
        ring::signature::EcdsaKeyPair::generate_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &rng,
        )
        .expect("key")
    };
    let path = dir.join(name);
    std::fs::write(
        &path,
        micromcp_identity::keys::pem("PRIVATE KEY", der.as_ref()),
    )
    .expect("write key");
    path
}

fn keys_config(signing: &Path, previous: &[&Path]) -> String {
    let previous: Vec<String> = previous
        .iter()
        .map(|p| format!("\"file:{}\"", p.display()))
        .collect();
    format!(
        "signing_key = \"file:{}\"\nprevious_keys = [{}]",
        signing.display(),
        previous.join(", ")
    )
}

/// The token the service last received for `sub`.
fn last_token_of(service: &JwtService, sub: &str) -> String {
    bearer_tokens(&service.requests())
        .into_iter()
        .rev()
        .find(|t| claims_of(t)["sub"] == sub)
        .unwrap_or_else(|| panic!("no token for {sub}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_key_rotation_both_keys_are_published_and_new_tokens_use_the_new_one() {
    let keys = tempfile::tempdir().expect("tempdir");
    let old = key_file(keys.path(), "old.pem", true);
    let new = key_file(keys.path(), "new.pem", false);
    let mut service = JwtService::start();

    // Before: the old key (Ed25519) signs.
    let before = Gateway::start(&who_config(&service.url, &keys_config(&old, &[])));
    service.trust(&before);
    before.wait_ready(&["who"]).await;
    assert!(!before.stderr_text().contains("key made at start"));
    let old_kids = kids(&jwks(&before).await);
    let mut alice = before.client(&before.alice);
    let answer = call_who(&mut alice, "whoami", json!({})).await;
    assert_eq!(answer["header"]["kid"], old_kids[0].as_str());
    let old_token = last_token_of(&service, "alice");
    drop(before);

    // During: the new key (P-256) signs, the old one is still published.
    let during = Gateway::start(&who_config(&service.url, &keys_config(&new, &[&old])));
    let published = jwks(&during).await;
    let during_kids = kids(&published);
    assert_eq!(during_kids.len(), 2, "{published}");
    assert_eq!(during_kids[1], old_kids[0], "the old key, same kid");
    assert_eq!(published["keys"][0]["alg"], "ES256");
    assert_eq!(published["keys"][0]["crv"], "P-256");
    service.trust(&during);
    during.wait_ready(&["who"]).await;
    let mut alice = during.client(&during.alice);
    let answer = call_who(&mut alice, "whoami", json!({})).await;
    assert_eq!(answer["header"]["alg"], "ES256");
    assert_eq!(answer["header"]["kid"], during_kids[0].as_str());
    assert_eq!(answer["claims"]["sub"], "alice");
    // A token signed before the rotation still verifies while its key is published.
    let verified = call_who(&mut alice, "verify_token", json!({"token": old_token})).await;
    assert_eq!(verified["claims"]["sub"], "alice", "{verified}");
    drop(during);

    // After: the old key is gone; its tokens no longer verify.
    let after = Gateway::start(&who_config(&service.url, &keys_config(&new, &[])));
    assert_eq!(kids(&jwks(&after).await), during_kids[..1]);
    service.trust(&after);
    after.wait_ready(&["who"]).await;
    let mut alice = after.client(&after.alice);
    let refused = call_who(&mut alice, "verify_token", json!({"token": old_token})).await;
    assert!(
        refused["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{refused}"
    );
}

/// A key that cannot sign is found by `config check` and stops a start, named by its key path,
/// without its text.
#[test]
fn a_bad_signing_key_is_reported_with_its_key_path_by_config_check_and_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A valid PEM private key of another kind (X25519), and text that is no key.
    std::fs::write(
        dir.path().join("x25519.pem"),
        "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VuBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n-----END PRIVATE KEY-----\n",
    )
    .expect("write");
    std::fs::write(dir.path().join("notes.txt"), "SECRET-LOOKING TEXT").expect("write");
    key_file(dir.path(), "good.pem", true);
    for (signing, previous, path, reason) in [
        (
            "x25519.pem",
            "good.pem",
            "identity.signing_key",
            "not an Ed25519 or P-256",
        ),
        (
            "good.pem",
            "notes.txt",
            "identity.previous_keys[0]",
            "no PEM private key",
        ),
    ] {
        let config = dir.path().join("gateway.toml");
        std::fs::write(
            &config,
            format!(
                "[stdio]\nprincipal = \"me\"\n[identity]\nsigning_key = \"file:{signing}\"\nprevious_keys = [\"file:{previous}\"]\n"
            ),
        )
        .expect("write");
        for args in [&["config", "check"][..], &["gateway", "--config"][..]] {
            let out = Command::new(BIN)
                .args(args)
                .arg(&config)
                .env_remove("MICROMCP_LOG")
                .output()
                .expect("run");
            assert!(!out.status.success(), "{args:?}");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.contains(&format!("{path}: ")) && stderr.contains(reason),
                "{args:?}: {stderr}"
            );
            assert!(
                !stderr.contains("SECRET-LOOKING") && !stderr.contains("MC4C"),
                "{stderr}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// vector

fn write_doc(dir: &Path, name: &str, tenant: &str, level: &str) {
    std::fs::write(
        dir.join(name),
        format!(
            "---\ntenant: {tenant}\nclassification: {level}\n---\nQuarterly planning notes: {name}.\n"
        ),
    )
    .expect("write doc");
}

/// acme documents at every level, and one of globex.
fn documents() -> tempfile::TempDir {
    let docs = tempfile::tempdir().expect("tempdir");
    for level in ["public", "internal", "confidential", "restricted"] {
        write_doc(docs.path(), &format!("acme-{level}.md"), "acme", level);
    }
    write_doc(docs.path(), "globex-public.md", "globex", "public");
    docs
}

const QUERY: &str = "quarterly planning notes";

/// `kb.search` for `client` once the index is complete; `Err` with the refusal text.
async fn search(client: &mut Client, meta: Option<Value>) -> Result<Vec<String>, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut params = json!({"name": "kb.search", "arguments": {"query": QUERY, "k": 50}});
        if let Some(meta) = &meta {
            params["_meta"] = meta.clone();
        }
        // call_2026 adds the protocol keys to `_meta`, keeping the others.
        let reply = client.call_2026("tools/call", params).await;
        let result = reply.result();
        if result["isError"] == true {
            return Err(text_of(&reply));
        }
        let out = &result["structuredContent"];
        if out.get("indexing").is_none_or(Value::is_null) {
            let mut paths: Vec<String> = out["results"]
                .as_array()
                .unwrap_or_else(|| panic!("no results in {out}"))
                .iter()
                .map(|r| r["path"].as_str().expect("path").to_owned())
                .collect();
            paths.sort();
            return Ok(paths);
        }
        assert!(Instant::now() < deadline, "still indexing: {out}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn vector_through_the_gateway_answers_each_caller_from_its_signed_identity_within_the_launch_bounds()
 {
    let docs = documents();
    let [alice, carol, dave, erin] = [token(), token(), token(), token()];
    let config = format!(
        r#"
[listen]
addr = "127.0.0.1:0"

[audit]
file = "audit.jsonl"

[[auth.tokens]]
principal = "alice"
tenant = "acme"
clearance = "internal"
roles = ["staff"]
hash = "{}"

[[auth.tokens]]
principal = "carol"
tenant = "acme"
clearance = "restricted"
roles = ["staff"]
hash = "{}"

[[auth.tokens]]
principal = "dave"
tenant = "globex"
clearance = "restricted"
roles = ["staff"]
hash = "{}"

[[auth.tokens]]
principal = "erin"
roles = ["staff"]
hash = "{}"

[[policy.grants]]
roles = ["staff"]
tools = ["kb.search"]

[services.kb]
builtin = "vector"
args = ["--docs", {}, "--state-dir", "state", "--tenant", "acme", "--clearance", "confidential"]
"#,
        alice.hash,
        carol.hash,
        dave.hash,
        erin.hash,
        Value::String(docs.path().display().to_string()),
    );
    let gw = Gateway::start_raw(&config, alice.token.clone(), String::new());
    gw.wait_ready(&["kb"]).await;

    let mut as_alice = gw.client(&alice.token);
    assert_eq!(
        search(&mut as_alice, None).await,
        Ok(vec!["acme-internal.md".into(), "acme-public.md".into()]),
        "alice's own clearance, below the launch bound"
    );
    let up_to_confidential = Ok(vec![
        "acme-confidential.md".to_owned(),
        "acme-internal.md".into(),
        "acme-public.md".into(),
    ]);
    assert_eq!(
        search(&mut gw.client(&carol.token), None).await,
        up_to_confidential,
        "carol's restricted clearance cannot widen the launch bound (confidential)"
    );
    assert_eq!(
        search(&mut gw.client(&erin.token), None).await,
        up_to_confidential,
        "no tenant or clearance: the launch values"
    );
    let refused = search(&mut gw.client(&dave.token), None)
        .await
        .expect_err("another tenant");
    assert!(refused.contains("not the tenant"), "{refused}");
    assert!(!refused.contains("globex"), "{refused}");

    // A client cannot supply an identity: whatever it puts under the key is dropped and the
    // gateway's own identity of alice decides.
    let key = ServiceKey::generate().expect("key");
    for meta in [
        alice_identity(&key, "acme", "restricted", 1),
        json!({META_KEY: {"sub": "alice", "tenant": "acme", "clearance": "restricted"}}),
    ] {
        assert_eq!(
            search(&mut as_alice, Some(meta)).await,
            Ok(vec!["acme-internal.md".into(), "acme-public.md".into()])
        );
    }
}

/// A `micromcp serve vector` child spoken to over stdio, one JSON-RPC message per line.
struct StdioService {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<std::process::ChildStdout>,
}

impl StdioService {
    fn send(&mut self, message: &Value) {
        writeln!(self.stdin, "{message}").expect("write");
        self.stdin.flush().expect("flush");
    }

    /// The response to request `id` (other messages are skipped).
    fn answer(&mut self, id: i64) -> Value {
        loop {
            let mut line = String::new();
            assert!(self.stdout.read_line(&mut line).expect("read") > 0, "EOF");
            let message: Value = serde_json::from_str(&line).expect("JSON");
            if message["id"] == id {
                return message;
            }
        }
    }

    /// Sends a `tools/call` and returns its refusal text (it must be a tool error).
    fn refusal(&mut self, call: &Value) -> String {
        self.send(call);
        let reply = self.answer(call["id"].as_i64().expect("id"));
        assert_eq!(reply["result"]["isError"], true, "{reply}");
        reply["result"]["content"][0]["text"]
            .as_str()
            .expect("text")
            .to_owned()
    }
}

impl Drop for StdioService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `tools/call` of `search` with `meta` as its `_meta`.
fn search_call(id: i64, meta: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
        "name": "search", "arguments": {"query": QUERY, "k": 50}, "_meta": meta}})
}

/// `_meta` with alice's identity (`tenant`, `clearance`) for the `search` call `id`, signed
/// with `key`.
fn alice_identity(key: &ServiceKey, tenant: &str, clearance: &str, id: i64) -> Value {
    let caller = micromcp_identity::Caller {
        tenant: Some(tenant),
        clearance: Some(clearance),
        ..micromcp_identity::Caller::new("alice", "api_token")
    };
    let binding = Binding::tool_call(RequestId::Number(id), "search");
    json!({META_KEY: key.sign(&caller, "micromcp", binding, now())})
}

/// `micromcp serve vector` started as the gateway starts it (an empty environment but the key),
/// spoken to directly over stdio: every call needs the gateway's identity for that very call.
#[test]
fn serve_vector_with_a_key_refuses_calls_without_a_valid_identity_for_that_call() {
    let docs = documents();
    let state = tempfile::tempdir().expect("tempdir");
    let key = ServiceKey::generate().expect("key");
    let mut child = Command::new(BIN)
        .args(["serve", "vector", "--docs"])
        .arg(docs.path())
        .arg("--state-dir")
        .arg(state.path())
        .args(["--tenant", "acme", "--clearance", "restricted"])
        .env_clear()
        .env(micromcp_identity::signed::KEY_ENV, key.to_env_value())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start micromcp serve vector");
    let mut service = StdioService {
        stdin: child.stdin.take().expect("stdin"),
        stdout: BufReader::new(child.stdout.take().expect("stdout")),
        child,
    };
    service.send(&json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}));
    service.answer(0);
    service.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));

    let other_key = ServiceKey::generate().expect("key");
    let unsigned = json!({META_KEY: {"sub": "alice", "tenant": "acme", "clearance": "restricted"}});
    for (call, expected) in [
        (search_call(1, json!({})), "no caller identity"),
        (search_call(2, unsigned), "malformed"),
        (
            search_call(3, alice_identity(&other_key, "acme", "public", 3)),
            "signature",
        ),
        (
            search_call(4, alice_identity(&key, "acme", "public", 99)),
            "another request",
        ),
        (
            search_call(5, alice_identity(&key, "globex", "public", 5)),
            "not the tenant",
        ),
    ] {
        let text = service.refusal(&call);
        assert!(text.contains(expected), "{expected}: {text}");
    }
    // Genuine: answered, with acme's public documents only; the same message again: refused.
    let genuine = search_call(6, alice_identity(&key, "acme", "public", 6));
    service.send(&genuine);
    let reply = service.answer(6);
    assert_ne!(reply["result"]["isError"], true, "{reply}");
    let found = reply["result"]["structuredContent"]["results"].to_string();
    assert!(
        !found.contains("acme-internal") && !found.contains("globex"),
        "{found}"
    );
    let text = service.refusal(&genuine);
    assert!(text.contains("already used"), "{text}");
}
