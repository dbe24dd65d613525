//! Shared harness: build the service from command-line flags, serve it over real Streamable
//! HTTP on 127.0.0.1:0, and talk raw JSON-RPC to it (the wire format the gateway sees).

#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;

use clap::Parser;
use micromcp_fs::{FsArgs, FsService, config::build_state, ops::State};
use serde_json::{Value, json};

const LEGACY: &str = "2025-11-25";

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    fs: FsArgs,
}

/// The service state for `micromcp serve fs <flags>`.
pub fn state(flags: &[&str]) -> State {
    let cli = Cli::parse_from(std::iter::once("fs").chain(flags.iter().copied()));
    build_state(&cli.fs).expect("valid flags")
}

/// Serves the service for `flags` on an ephemeral loopback port; returns a ready session.
pub async fn serve(flags: &[&str]) -> Session {
    serve_state(Arc::new(state(flags))).await
}

/// Serves an already built state (kept by the caller to look at its counters).
pub async fn serve_state(state: Arc<State>) -> Session {
    let service = FsService::new(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let router = micromcp_services::http_router(service);
    tokio::spawn(async move { axum::serve(listener, router).await });
    Session::start(format!("http://{addr}/mcp")).await
}

fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("reqwest client")
}

async fn messages(response: reqwest::Response) -> Vec<Value> {
    assert!(response.status().is_success(), "HTTP {}", response.status());
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
        .filter(|data| !data.is_empty())
        .map(|data| serde_json::from_str(data).expect("SSE data is JSON"))
        .collect()
}

/// A 2025-11-25 client with an initialized session.
pub struct Session {
    http: reqwest::Client,
    url: String,
    session: String,
    next_id: u64,
    pub init: Value,
}

impl Session {
    async fn start(url: String) -> Self {
        let http = http_client();
        let response = http
            .post(&url)
            .header("Accept", "application/json, text/event-stream")
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
        let init = messages(response).await.remove(0);
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

    /// POSTs a JSON-RPC message as is (a notification answers 202 Accepted).
    pub async fn post(&self, body: Value) -> reqwest::Response {
        self.http
            .post(&self.url)
            .header("Accept", "application/json, text/event-stream")
            .header("Mcp-Session-Id", &self.session)
            .header("MCP-Protocol-Version", LEGACY)
            .json(&body)
            .send()
            .await
            .expect("POST")
    }

    /// POSTs a JSON-RPC message from a background task (for requests whose answer never
    /// comes, e.g. a cancelled one); the task ends with the response head.
    pub fn post_detached(&self, body: Value) -> tokio::task::JoinHandle<reqwest::Response> {
        let request = self
            .http
            .post(&self.url)
            .header("Accept", "application/json, text/event-stream")
            .header("Mcp-Session-Id", &self.session)
            .header("MCP-Protocol-Version", LEGACY)
            .json(&body);
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

    /// Sends a request and returns the whole JSON-RPC response.
    pub async fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let messages = messages(self.post(body).await).await;
        let response = messages
            .into_iter()
            .find(|m| m.get("id").is_some())
            .expect("a JSON-RPC response");
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

    /// Calls a tool that must be refused; returns the error text.
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

    /// Every resource URI, following cursors.
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

/// Writes `content` to `dir/rel`, creating parents.
pub fn put(dir: &std::path::Path, rel: &str, content: &str) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, content).expect("write");
}

pub fn arg(path: &std::path::Path) -> String {
    path.to_str().expect("UTF-8 temp path").to_owned()
}
