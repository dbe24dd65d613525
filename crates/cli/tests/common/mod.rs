//! The integration harness: starts the real `micromcp` binary from a config string and talks
//! MCP to it over HTTP. Each gateway gets its own temporary folder (config, audit log) and port.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_micromcp");

pub const INSTALL_HINT: &str = "run ./scripts/install-test-tools (./scripts/test does it)";

/// The workspace root.
pub fn workspace() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// A file under `.tools` (installed by scripts/install-test-tools), which must exist.
pub fn tool(rel: &str) -> PathBuf {
    let path = workspace().join(".tools").join(rel);
    assert!(
        path.exists(),
        "{} is missing: {INSTALL_HINT}",
        path.display()
    );
    path
}

pub struct Token {
    pub token: String,
    pub hash: String,
}

pub fn token() -> Token {
    let (token, hash) = micromcp_auth::new_token().expect("random token");
    Token { token, hash }
}

/// How [`Gateway::spawn`] starts the binary.
#[derive(Default)]
struct Launch {
    /// Run from the config's folder as `--config gateway.toml`.
    bare_config_name: bool,
    /// Open-file limit (soft and hard) for the gateway process.
    file_limit: Option<u32>,
}

/// A running gateway. Stopped with SIGTERM (then killed) when dropped.
pub struct Gateway {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub url: String,
    pub alice: String,
    pub bob: String,
    pub stderr: Arc<Mutex<Vec<String>>>,
    pub http: reqwest::Client,
}

/// The identity part every test config shares: alice (agent "bot") and bob, audit to a file.
pub fn preamble(alice: &Token, bob: &Token) -> String {
    format!(
        r#"
[listen]
addr = "127.0.0.1:0"
# Small enough that an oversized test body fits in the socket buffers, so the client reliably
# reads the 413 that the gateway sends before reading the body.
max_body_bytes = 65536

[audit]
file = "audit.jsonl"

[[auth.tokens]]
principal = "alice"
agent = "bot"
tenant = "acme"
hash = "{}"

[[auth.tokens]]
principal = "bob"
hash = "{}"
"#,
        alice.hash, bob.hash
    )
}

impl Gateway {
    /// Starts a gateway whose config is the shared preamble plus `rest` (services, grants…).
    pub fn start(rest: &str) -> Gateway {
        let (alice, bob) = (token(), token());
        let config = format!("{}\n{rest}", preamble(&alice, &bob));
        Self::start_raw(&config, alice.token, bob.token)
    }

    pub fn start_raw(config: &str, alice: String, bob: String) -> Gateway {
        Self::start_with_env(config, alice, bob, &[])
    }

    /// Like [`Gateway::start_raw`], with extra environment variables for the gateway.
    pub fn start_with_env(
        config: &str,
        alice: String,
        bob: String,
        env: &[(&str, &str)],
    ) -> Gateway {
        Self::spawn(config, alice, bob, env, Launch::default())
    }

    /// Like [`Gateway::start`], with the open-file limit (soft and hard) set to `limit`.
    pub fn start_with_file_limit(rest: &str, limit: u32) -> Gateway {
        let (alice, bob) = (token(), token());
        let config = format!("{}\n{rest}", preamble(&alice, &bob));
        let launch = Launch {
            file_limit: Some(limit),
            ..Launch::default()
        };
        Self::spawn(&config, alice.token, bob.token, &[], launch)
    }

    /// Like [`Gateway::start`], but run from the config's folder as `--config gateway.toml`
    /// (a bare file name, as a user in that folder would type it).
    pub fn start_from_config_dir(rest: &str) -> Gateway {
        let (alice, bob) = (token(), token());
        let config = format!("{}\n{rest}", preamble(&alice, &bob));
        let launch = Launch {
            bare_config_name: true,
            ..Launch::default()
        };
        Self::spawn(&config, alice.token, bob.token, &[], launch)
    }

    fn spawn(
        config: &str,
        alice: String,
        bob: String,
        env: &[(&str, &str)],
        launch: Launch,
    ) -> Gateway {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("gateway.toml"), config).expect("write config");
        let mut command = match launch.file_limit {
            None => Command::new(BIN),
            Some(limit) => {
                let mut sh = Command::new("sh");
                sh.args([
                    "-c",
                    &format!("ulimit -n {limit} && exec \"$0\" \"$@\""),
                    BIN,
                ]);
                sh
            }
        };
        command.args(["gateway", "--config"]);
        if launch.bare_config_name {
            command.arg("gateway.toml").current_dir(dir.path());
        } else {
            command.arg(dir.path().join("gateway.toml"));
        }
        let mut child = command
            .env("MICROMCP_LOG", "info")
            // Must never reach a service: children get only their configured environment.
            .env("MICROMCP_TEST_GATEWAY_SECRET", "do-not-inherit")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start micromcp");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        {
            let stderr_lines = stderr.clone();
            let pipe = child.stderr.take().expect("stderr");
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if let Some(url) = line.strip_prefix("micromcp: listening on ") {
                        let _ = addr_tx.send(url.to_owned());
                    }
                    stderr_lines.lock().expect("lock").push(line);
                }
            });
        }
        let url = match addr_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "gateway did not start; stderr:\n{}",
                    stderr.lock().expect("lock").join("\n")
                );
            }
        };
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("http client");
        Gateway {
            child: Some(child),
            dir,
            url,
            alice,
            bob,
            stderr,
            http,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Waits until every listed service answers (its tools are listed) or panics.
    pub async fn wait_ready(&self, services: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = self
                .http
                .get(self.url.replace("/mcp", "/readyz"))
                .send()
                .await
                .expect("readyz");
            let body: Value = r.json().await.expect("json");
            if services.iter().all(|s| body["services"][s] == "ready") {
                return;
            }
            assert!(Instant::now() < deadline, "services not ready: {body}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every audit record written so far (the gateway flushes when idle).
    pub fn audit(&self) -> Vec<Value> {
        read_jsonl(&self.path("audit.jsonl"))
    }

    /// Waits until the audit log holds at least `n` records, then returns them all.
    pub async fn audit_at_least(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let records = self.audit();
            if records.len() >= n || Instant::now() > deadline {
                return records;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (up to 10 s) for an audit record that `matches`, and returns it.
    pub async fn audit_find(&self, matches: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let records = self.audit();
            if let Some(found) = records.iter().find(|r| matches(r)) {
                return found.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no matching audit record in {records:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().expect("lock").join("\n")
    }

    /// Sends SIGTERM and waits for exit; returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("gateway did not exit after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn client(&self, token: &str) -> Client {
        Client {
            http: self.http.clone(),
            url: self.url.clone(),
            token: Some(token.to_owned()),
            session: None,
            next_id: 0,
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.terminate();
        }
    }
}

/// The complete lines of a JSON-lines file (a line still being written is left for later).
pub fn read_jsonl(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line is not JSON ({e}): {l}"))
        })
        .collect()
}

/// A minimal MCP client over Streamable HTTP, enough to drive the gateway precisely.
#[derive(Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub url: String,
    pub token: Option<String>,
    pub session: Option<String>,
    pub next_id: i64,
}

pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    /// The JSON body, or for SSE the last message (the response) with `events` holding all.
    pub body: Value,
    pub events: Vec<Value>,
}

impl Reply {
    pub fn result(&self) -> &Value {
        assert!(
            self.body.get("error").is_none(),
            "expected a result, got {}",
            self.body
        );
        &self.body["result"]
    }
    pub fn error_code(&self) -> i64 {
        self.body["error"]["code"].as_i64().unwrap_or_else(|| {
            panic!(
                "expected an error, got {} (HTTP {})",
                self.body, self.status
            )
        })
    }
}

pub const V2026: &str = "2026-07-28";

pub fn meta_2026() -> Value {
    json!({ "io.modelcontextprotocol/protocolVersion": V2026, "io.modelcontextprotocol/clientCapabilities": {} })
}

impl Client {
    pub fn request(&self, extra_headers: &[(&str, &str)], body: &Value) -> reqwest::RequestBuilder {
        let mut r = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body.to_string());
        if let Some(t) = &self.token {
            r = r.header("authorization", format!("Bearer {t}"));
        }
        if let Some(s) = &self.session {
            r = r.header("mcp-session-id", s);
        }
        for (k, v) in extra_headers {
            r = r.header(*k, *v);
        }
        r
    }

    pub async fn send(&self, extra_headers: &[(&str, &str)], body: &Value) -> Reply {
        read_reply(
            self.request(extra_headers, body)
                .send()
                .await
                .expect("send"),
        )
        .await
    }

    /// Session-era handshake; keeps the session id.
    pub async fn initialize(&mut self) -> Reply {
        let body = json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
            "protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"harness","version":"0"}}});
        let reply = self.send(&[], &body).await;
        assert_eq!(reply.status, 200, "initialize failed: {}", reply.body);
        self.session = Some(
            reply.headers["mcp-session-id"]
                .to_str()
                .expect("ascii")
                .to_owned(),
        );
        let note = json!({"jsonrpc":"2.0","method":"notifications/initialized"});
        let r = self
            .send(&[("mcp-protocol-version", "2025-11-25")], &note)
            .await;
        assert_eq!(r.status, 202);
        reply
    }

    /// A session-era request.
    pub async fn call(&mut self, method: &str, params: Value) -> Reply {
        self.next_id += 1;
        let body = json!({"jsonrpc":"2.0","id":self.next_id,"method":method,"params":params});
        self.send(&[("mcp-protocol-version", "2025-11-25")], &body)
            .await
    }

    /// Opens this session's GET notification stream (the client must have initialized).
    pub async fn open_session_stream(&self) -> reqwest::Response {
        let mut get = self
            .http
            .get(&self.url)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", self.session.as_deref().expect("session"));
        if let Some(token) = &self.token {
            get = get.header("authorization", format!("Bearer {token}"));
        }
        let stream = get.send().await.expect("GET stream");
        assert_eq!(stream.status(), 200);
        stream
    }

    /// A 2026-07-28 stateless request with correct headers.
    pub async fn call_2026(&mut self, method: &str, mut params: Value) -> Reply {
        self.next_id += 1;
        params["_meta"] = meta_2026();
        let name = params
            .get("name")
            .or_else(|| params.get("uri"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let body = json!({"jsonrpc":"2.0","id":self.next_id,"method":method,"params":params});
        let mut headers = vec![("mcp-protocol-version", V2026), ("mcp-method", method)];
        if let Some(name) = name
            .as_deref()
            .filter(|_| matches!(method, "tools/call" | "prompts/get" | "resources/read"))
        {
            headers.push(("mcp-name", name));
        }
        self.send(&headers, &body).await
    }
}

pub async fn read_reply(response: reqwest::Response) -> Reply {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let is_sse = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("text/event-stream"));
    let text = response.text().await.expect("body");
    if is_sse {
        let events: Vec<Value> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| serde_json::from_str(d.trim()).expect("sse data is json"))
            .collect();
        let body = events.last().cloned().unwrap_or(Value::Null);
        return Reply {
            status,
            headers,
            body,
            events,
        };
    }
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Reply {
        status,
        headers,
        body,
        events: vec![],
    }
}

pub fn tool_names(reply: &Reply) -> Vec<String> {
    reply.result()["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .map(|t| t["name"].as_str().expect("name").to_owned())
        .collect()
}

pub fn text_of(reply: &Reply) -> String {
    reply.result()["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text in {}", reply.body))
        .to_owned()
}

/// `micromcp serve echo --http 127.0.0.1:0` as an HTTP upstream; killed when dropped.
pub struct HttpEcho {
    child: Child,
    pub url: String,
}

impl HttpEcho {
    pub fn start() -> HttpEcho {
        let mut child = Command::new(BIN)
            .args(["serve", "echo", "--http", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start upstream");
        let url = announced_url(&mut child);
        HttpEcho { child, url }
    }
}

/// The URL a server child announces as its first stderr line, `listening on URL`; the rest of
/// its stderr is drained so it never blocks on a full pipe.
pub fn announced_url(child: &mut Child) -> String {
    let mut line = String::new();
    let mut reader = BufReader::new(child.stderr.take().expect("stderr"));
    reader.read_line(&mut line).expect("read");
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line}"))
        .to_owned();
    std::thread::spawn(move || for _ in reader.lines() {});
    url
}

impl Drop for HttpEcho {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub const ECHO: &str = r#"
[[policy.grants]]
principal = "alice"
tools = ["echo.*"]
prompts = ["echo.*"]
resources = ["echo.*"]

[services.echo]
builtin = "echo"
"#;

/// Reads an SSE response until `needle` has arrived (10 s at most); returns everything read.
pub async fn read_stream_until(stream: reqwest::Response, needle: &str) -> String {
    let mut body = stream.bytes_stream();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut seen = String::new();
    while !seen.contains(needle) {
        let chunk = tokio::time::timeout_at(deadline, futures::StreamExt::next(&mut body)).await;
        match chunk {
            Ok(Some(Ok(bytes))) => seen.push_str(&String::from_utf8_lossy(&bytes)),
            other => panic!("no {needle} on the stream ({other:?}); got: {seen}"),
        }
    }
    seen
}

/// A TCP connection to the gateway from the given loopback source address (all of 127/8 is
/// loopback on Linux, so an "attacker" can have its own address).
pub async fn connect_from(
    source: &str,
    to: std::net::SocketAddr,
) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(format!("{source}:0").parse().expect("source"))?;
    socket.connect(to).await
}

/// Whether the gateway closed `stream` within `within` (EOF or reset on read).
pub async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(within, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {} // a response (e.g. 408); keep reading until the close
        }
    }
}
