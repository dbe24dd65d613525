//! Test-only support for micromcp's crates; never a dependency of shipped code (only
//! `[dev-dependencies]`).
//!
//! The tests drive MCP servers with raw JSON-RPC over real Streamable HTTP, so they pin the
//! wire format the gateway sees rather than rmcp's client API. This crate offers:
//!
//! - [`serve`]: an axum router served on an ephemeral loopback port, as an `/mcp` URL;
//! - [`http_client`]: a plain-HTTP client that ignores proxies set in the environment;
//! - [`messages`] and [`response_of`]: the JSON-RPC messages of a response (JSON body or SSE
//!   stream) and the response among them;
//! - [`post_2026`] and [`rpc_2026`]: one stateless 2026-07-28 request (no initialize, no
//!   session, the client context in `_meta`);
//! - [`Session`]: a 2025-11-25 client with an initialized session;
//! - [`upstream_reply`]: the answer of a minimal session-era test upstream.

pub mod tls;

use serde_json::{Value, json};

/// The session-era protocol version (initialize, `Mcp-Session-Id`).
pub const LEGACY: &str = "2025-11-25";
/// The stateless protocol version (no initialize, the client context in `_meta`).
pub const MODERN: &str = "2026-07-28";

/// The `Accept` header every request sends: a response may come as JSON or as SSE.
const ACCEPT: &str = "application/json, text/event-stream";

/// Serves `router` on an ephemeral loopback port; returns its `/mcp` URL.
pub async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}/mcp")
}

/// How a minimal session-era test upstream answers one POSTed message: `result` for the
/// request in `message` (as JSON, in session `s1`), or 202 when `result` is `None` (a
/// notification or response).
pub fn upstream_reply(message: &Value, result: Option<Value>) -> axum::response::Response {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let Some(result) = result else {
        return (StatusCode::ACCEPTED, [("mcp-session-id", "s1")]).into_response();
    };
    let reply = json!({"jsonrpc": "2.0", "id": message["id"], "result": result});
    (
        [
            ("mcp-session-id", "s1"),
            ("content-type", "application/json"),
        ],
        reply.to_string(),
    )
        .into_response()
}

/// A plain-HTTP client that ignores any proxy configured in the environment.
pub fn http_client() -> reqwest::Client {
    // The workspace builds reqwest without a crypto provider; `Err` means already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("reqwest client")
}

/// Every JSON-RPC message in a successful (2xx) response, whether sent as JSON or as an SSE
/// stream; panics on any other HTTP status.
pub async fn messages(response: reqwest::Response) -> Vec<Value> {
    assert!(response.status().is_success(), "HTTP {}", response.status());
    messages_of_any_status(response).await
}

/// [`messages`] without the HTTP status check.
async fn messages_of_any_status(response: reqwest::Response) -> Vec<Value> {
    let is_sse = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let body = response.text().await.expect("body");
    if !is_sse {
        return vec![serde_json::from_str(&body).expect("JSON body")];
    }
    body.lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(str::trim)
        // Skip the empty priming event that enables resumption.
        .filter(|data| !data.is_empty())
        .map(|data| serde_json::from_str(data).expect("SSE data is JSON"))
        .collect()
}

/// The final response (the message carrying an `id`) among `messages`.
pub fn response_of(messages: &[Value]) -> &Value {
    messages
        .iter()
        .find(|m| m.get("id").is_some())
        .expect("a JSON-RPC response")
}

/// POSTs one stateless 2026-07-28 request with JSON-RPC id `id`: the protocol version and
/// `client_capabilities` are merged into any `_meta` already in `params`, and the request
/// carries `MCP-Protocol-Version`, `Mcp-Method` and, for a named method (`params.name`),
/// `Mcp-Name`. Returns the HTTP response as is.
pub async fn post_2026(
    url: &str,
    id: u64,
    method: &str,
    mut params: Value,
    client_capabilities: Value,
) -> reqwest::Response {
    let mut meta = params.get("_meta").cloned().unwrap_or_else(|| json!({}));
    meta["io.modelcontextprotocol/protocolVersion"] = json!(MODERN);
    meta["io.modelcontextprotocol/clientCapabilities"] = client_capabilities;
    params["_meta"] = meta;
    let mut request = http_client()
        .post(url)
        .header("Accept", ACCEPT)
        .header("MCP-Protocol-Version", MODERN)
        .header("Mcp-Method", method);
    if let Some(name) = params["name"].as_str() {
        request = request.header("Mcp-Name", name);
    }
    request
        .json(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
        .send()
        .await
        .expect("POST")
}

/// One stateless 2026-07-28 request ([`post_2026`] with id 1 and no client capabilities);
/// returns the JSON-RPC response, whatever the HTTP status it came with.
pub async fn rpc_2026(url: &str, method: &str, params: Value) -> Value {
    let response = post_2026(url, 1, method, params, json!({})).await;
    response_of(&messages_of_any_status(response).await).clone()
}

/// A 2025-11-25 client with an initialized session.
pub struct Session {
    http: reqwest::Client,
    url: String,
    session: String,
    next_id: u64,
    /// The response to `initialize`.
    pub init: Value,
}

impl Session {
    /// Initializes a session at `url` (the `/mcp` endpoint) and sends
    /// `notifications/initialized`, which must be answered 202 Accepted.
    pub async fn start(url: String) -> Self {
        let http = http_client();
        let response = http
            .post(&url)
            .header("Accept", ACCEPT)
            .json(&json!({
                "jsonrpc": "2.0", "id": 0, "method": "initialize",
                "params": {
                    "protocolVersion": LEGACY,
                    "capabilities": {},
                    "clientInfo": {"name": "test", "version": "0"}
                }
            }))
            .send()
            .await
            .expect("initialize");
        let session = response
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .expect("session id")
            .to_owned();
        let init = response_of(&messages(response).await).clone();
        let this = Self {
            http,
            url,
            session,
            next_id: 1,
            init,
        };
        let ack = this
            .post(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        assert_eq!(ack.status(), reqwest::StatusCode::ACCEPTED);
        this
    }

    /// The POST of `body` in this session, not yet sent.
    fn post_request(&self, body: &Value) -> reqwest::RequestBuilder {
        self.http
            .post(&self.url)
            .header("Accept", ACCEPT)
            .header("Mcp-Session-Id", &self.session)
            .header("MCP-Protocol-Version", LEGACY)
            .json(body)
    }

    /// POSTs a JSON-RPC message as is (a notification answers 202 Accepted).
    pub async fn post(&self, body: Value) -> reqwest::Response {
        self.post_request(&body).send().await.expect("POST")
    }

    /// POSTs a JSON-RPC message from a background task (for requests whose answer never
    /// comes, e.g. a cancelled one); the task ends with the response head.
    pub fn post_detached(&self, body: Value) -> tokio::task::JoinHandle<reqwest::Response> {
        let request = self.post_request(&body);
        tokio::spawn(async move { request.send().await.expect("POST") })
    }

    /// Ends the session (HTTP DELETE), as a client hanging up; returns the HTTP status.
    pub async fn close(&self) -> reqwest::StatusCode {
        self.http
            .delete(&self.url)
            .header("Mcp-Session-Id", &self.session)
            .header("MCP-Protocol-Version", LEGACY)
            .send()
            .await
            .expect("DELETE")
            .status()
    }

    /// Sends a request and returns the whole JSON-RPC response (checking its `id`).
    pub async fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let messages = messages(self.post(body).await).await;
        let response = response_of(&messages).clone();
        assert_eq!(response["id"], id);
        response
    }

    /// Sends a request and returns its `result`, failing on a JSON-RPC error.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        let response = self.request(method, params).await;
        response
            .get("result")
            .unwrap_or_else(|| panic!("{method} failed: {response}"))
            .clone()
    }

    /// Calls a tool that must succeed; returns its `structuredContent`.
    pub async fn tool_ok(&mut self, name: &str, arguments: Value) -> Value {
        let result = self
            .call("tools/call", json!({"name": name, "arguments": arguments}))
            .await;
        assert_ne!(result["isError"], true, "{name} {arguments}: {result}");
        result["structuredContent"].clone()
    }

    /// Calls a tool that must be refused (`isError`, no structured content); returns the
    /// error text.
    pub async fn tool_err(&mut self, name: &str, arguments: Value) -> String {
        let result = self
            .call("tools/call", json!({"name": name, "arguments": arguments}))
            .await;
        assert_eq!(result["isError"], true, "{name} {arguments}: {result}");
        assert!(
            result.get("structuredContent").is_none_or(Value::is_null),
            "{result}"
        );
        result["content"][0]["text"]
            .as_str()
            .expect("error text")
            .to_owned()
    }

    /// Reads a resource; `Ok(text)` or `Err(JSON-RPC error)`.
    pub async fn read_resource(&mut self, uri: &str) -> Result<String, Value> {
        let response = self.request("resources/read", json!({"uri": uri})).await;
        match response.get("result") {
            Some(result) => Ok(result["contents"][0]["text"]
                .as_str()
                .expect("text contents")
                .to_owned()),
            None => Err(response["error"].clone()),
        }
    }

    /// Every resource, following cursors.
    pub async fn all_resources(&mut self) -> Vec<Value> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..1000 {
            let params = match &cursor {
                Some(c) => json!({"cursor": c}),
                None => json!({}),
            };
            let page = self.call("resources/list", params).await;
            all.extend(
                page["resources"]
                    .as_array()
                    .expect("resources")
                    .iter()
                    .cloned(),
            );
            match page["nextCursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return all,
            }
        }
        panic!("resources/list never ended");
    }
}
