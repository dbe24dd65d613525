//! Streamable HTTP upstreams.
//!
//! Session era (default): the gateway initializes once, keeps the `Mcp-Session-Id` it is given,
//! and initializes again if the server forgets the session (404). Stateless era (2026-07-28):
//! every request carries the protocol `_meta` and the `MCP-Protocol-Version` / `Mcp-Method` /
//! `Mcp-Name` headers. Responses may be JSON or an SSE stream; notifications in a stream are
//! passed on as events. Configured headers come from secret references; the client's own
//! credentials are never forwarded.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use micromcp_config::Secret;
use micromcp_protocol::headers::encode_value;
use micromcp_protocol::{Message, strict};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};

use crate::{
    EventSink, UPSTREAM_SESSION_VERSION, UPSTREAM_STATELESS_VERSION, UpstreamError, UpstreamEvent,
    client_capabilities, client_info,
};

const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

#[derive(Default)]
struct SessionState {
    id: Option<String>,
    capabilities: Option<Value>,
}

pub struct HttpUpstream {
    name: String,
    /// Parsed once (by the config); requests clone it instead of re-parsing a string.
    url: reqwest::Url,
    /// Carries the configured headers (credentials) as default headers: set once, not per call.
    client: reqwest::Client,
    stateless: bool,
    next_id: AtomicU64,
    session: tokio::sync::Mutex<()>,
    state: Mutex<SessionState>,
    events: EventSink,
    /// Becomes true once the first connection attempt has finished (ready or failed).
    started: tokio::sync::watch::Sender<bool>,
}

impl HttpUpstream {
    pub fn new(
        name: &str,
        url: reqwest::Url,
        headers: BTreeMap<String, Secret>,
        stateless: bool,
        events: EventSink,
    ) -> Arc<Self> {
        let mut map = HeaderMap::new();
        for (k, v) in &headers {
            match (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v.expose()),
            ) {
                (Ok(name), Ok(mut value)) => {
                    value.set_sensitive(true);
                    map.insert(name, value);
                }
                _ => {
                    tracing::error!(service = name, header = %k, "header name or value is not valid HTTP; not sent")
                }
            }
        }
        let client = reqwest::Client::builder()
            .default_headers(map)
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Arc::new(Self {
            name: name.to_owned(),
            url,
            client,
            stateless,
            next_id: AtomicU64::new(0),
            session: tokio::sync::Mutex::new(()),
            state: Mutex::new(SessionState::default()),
            events,
            started: tokio::sync::watch::channel(false).0,
        })
    }

    fn unavailable(&self, reason: impl Into<String>) -> UpstreamError {
        UpstreamError::Unavailable {
            service: self.name.clone(),
            reason: reason.into(),
        }
    }

    pub fn capabilities(&self) -> Option<Value> {
        self.lock().capabilities.clone()
    }

    pub fn started(&self) -> tokio::sync::watch::Receiver<bool> {
        self.started.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SessionState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub async fn request(
        &self,
        method: &str,
        params: Option<Value>,
    ) -> Result<Value, UpstreamError> {
        if self.stateless {
            return self.send(method, params).await;
        }
        self.ensure_session().await?;
        match self.send(method, params.clone()).await {
            Err(UpstreamError::Unavailable { reason, .. }) if reason == SESSION_EXPIRED => {
                {
                    let mut state = self.lock();
                    state.id = None;
                    state.capabilities = None;
                }
                self.ensure_session().await?;
                self.send(method, params).await
            }
            other => other,
        }
    }

    pub async fn notify(&self, method: &str, params: Option<Value>) {
        let mut body = json!({ "jsonrpc": "2.0", "method": method });
        if let Some(p) = params {
            body["params"] = p;
        }
        let _ = self.post(&body, method, None).await;
    }

    /// Connects in the background until the upstream answers, with backoff, so its tools are
    /// listed as soon as it is reachable.
    pub fn connect_in_background(self: &Arc<Self>) {
        let this = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(250);
            loop {
                let Some(upstream) = this.upgrade() else {
                    return;
                };
                let outcome = upstream.ensure_session().await;
                upstream.started.send_replace(true);
                match outcome {
                    Ok(()) => {
                        tracing::info!(service = %upstream.name, "service is ready");
                        crate::stdio::announce_lists_changed(&upstream.name, &upstream.events);
                        drop(upstream);
                        listen_for_changes(this).await;
                        return;
                    }
                    Err(e) => tracing::warn!(service = %upstream.name, "not reachable yet: {e}"),
                }
                drop(upstream);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        });
    }

    async fn ensure_session(&self) -> Result<(), UpstreamError> {
        let _one_at_a_time = self.session.lock().await;
        if self.lock().capabilities.is_some() {
            return Ok(());
        }
        if self.stateless {
            let result = self.send("server/discover", None).await?;
            self.lock().capabilities = Some(
                result
                    .get("capabilities")
                    .cloned()
                    .unwrap_or_else(|| json!({})),
            );
            return Ok(());
        }
        let params = json!({
            "protocolVersion": UPSTREAM_SESSION_VERSION,
            "capabilities": client_capabilities(),
            "clientInfo": client_info(),
        });
        let result = self.send("initialize", Some(params)).await?;
        self.lock().capabilities = Some(
            result
                .get("capabilities")
                .cloned()
                .unwrap_or_else(|| json!({})),
        );
        self.notify("notifications/initialized", None).await;
        Ok(())
    }

    async fn send(&self, method: &str, params: Option<Value>) -> Result<Value, UpstreamError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let mut params = params;
        if self.stateless {
            let p = params.get_or_insert_with(|| json!({}));
            if let Some(obj) = p.as_object_mut() {
                let meta = obj.entry("_meta").or_insert_with(|| json!({}));
                meta["io.modelcontextprotocol/protocolVersion"] = UPSTREAM_STATELESS_VERSION.into();
                if meta
                    .get("io.modelcontextprotocol/clientCapabilities")
                    .is_none()
                {
                    meta["io.modelcontextprotocol/clientCapabilities"] = client_capabilities();
                }
                meta["io.modelcontextprotocol/clientInfo"] = client_info();
            }
        }
        let name = mcp_name(method, params.as_ref());
        let mut body = json!({ "jsonrpc": "2.0", "id": id, "method": method });
        if let Some(p) = params {
            body["params"] = p;
        }
        let mut guard = CancelOnDrop {
            upstream: Some(self),
            id,
        };
        let response = self.post(&body, method, name.as_deref()).await?;
        let result = self.read_reply(response, id).await;
        guard.upstream = None;
        result
    }

    async fn post(
        &self,
        body: &Value,
        method: &str,
        name: Option<&str>,
    ) -> Result<reqwest::Response, UpstreamError> {
        let mut request = self
            .client
            .post(self.url.clone())
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .body(serde_json::to_vec(body).unwrap_or_default());
        if self.stateless {
            request = request
                .header("mcp-protocol-version", UPSTREAM_STATELESS_VERSION)
                .header("mcp-method", method);
            if let Some(name) = name {
                request = request.header("mcp-name", encode_value(name));
            }
        } else {
            if method != "initialize" {
                request = request.header("mcp-protocol-version", UPSTREAM_SESSION_VERSION);
            }
            if let Some(id) = self.lock().id.clone() {
                request = request.header("mcp-session-id", id);
            }
        }
        let response = request
            .send()
            .await
            .map_err(|e| self.unavailable(connect_reason(&e)))?;
        if let Some(session) = response
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            && method == "initialize"
        {
            self.lock().id = Some(session.to_owned());
        }
        Ok(response)
    }

    async fn read_reply(
        &self,
        response: reqwest::Response,
        id: u64,
    ) -> Result<Value, UpstreamError> {
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND && self.lock().id.is_some() {
            return Err(self.unavailable(SESSION_EXPIRED));
        }
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        if content_type.starts_with("text/event-stream") {
            let mut events = sse_stream::SseStream::from_bytes_stream(response.bytes_stream());
            while let Some(event) = events.next().await {
                let event =
                    event.map_err(|e| self.protocol(format!("broken event stream: {e}")))?;
                // Priming events (an id and empty data) and keep-alives carry no message.
                let Some(data) = event.data.filter(|d| !d.trim().is_empty()) else {
                    continue;
                };
                if let Some(result) = self.on_message(data.as_bytes(), id)? {
                    return result;
                }
            }
            return Err(self.protocol("the event stream ended without a response"));
        }
        let bytes = read_bounded(response)
            .await
            .map_err(|e| self.unavailable(e))?;
        if !content_type.starts_with("application/json") {
            return Err(self.protocol(format!("HTTP {status} with content type {content_type:?}")));
        }
        match self.on_message(&bytes, id)? {
            Some(result) => result,
            None => Err(self.protocol(format!("HTTP {status} without a response to request {id}"))),
        }
    }

    /// Handles one message from the upstream: the awaited response (returned), or a
    /// notification (passed on).
    #[allow(clippy::type_complexity)]
    fn on_message(
        &self,
        bytes: &[u8],
        id: u64,
    ) -> Result<Option<Result<Value, UpstreamError>>, UpstreamError> {
        let value = strict::parse(bytes, 128).map_err(|e| self.protocol(e.to_string()))?;
        match Message::from_value(value).map_err(|e| self.protocol(e.reason))? {
            Message::Response(r) if r.id.as_u64() == Some(id) => {
                Ok(Some(r.outcome.map_err(|error| UpstreamError::Rpc {
                    service: self.name.clone(),
                    error,
                })))
            }
            Message::Response(r) => {
                // A JSON-RPC error without a usable id answers our request (e.g. HTTP 400).
                Err(self.protocol(format!("response for unexpected id {}", r.id)))
            }
            Message::Notification(n) => {
                (self.events)(UpstreamEvent {
                    service: self.name.clone(),
                    method: n.method,
                    params: n.params,
                });
                Ok(None)
            }
            Message::Request(request) => {
                self.answer_server_request(request);
                Ok(None)
            }
        }
    }

    /// Opens the stream on which the upstream announces list changes: the session's GET stream
    /// (2025-11-25) or `subscriptions/listen` (2026-07-28). `None` if the upstream offers none.
    async fn open_notification_stream(&self) -> Option<reqwest::Response> {
        let request = if self.stateless {
            let body = json!({ "jsonrpc": "2.0", "id": 0, "method": "subscriptions/listen", "params": {
                "notifications": { "toolsListChanged": true, "promptsListChanged": true, "resourcesListChanged": true },
                "_meta": {
                    "io.modelcontextprotocol/protocolVersion": UPSTREAM_STATELESS_VERSION,
                    "io.modelcontextprotocol/clientCapabilities": client_capabilities(),
                    "io.modelcontextprotocol/clientInfo": client_info(),
                },
            }});
            self.client
                .post(self.url.clone())
                .header("accept", "application/json, text/event-stream")
                .header("content-type", "application/json")
                .header("mcp-protocol-version", UPSTREAM_STATELESS_VERSION)
                .header("mcp-method", "subscriptions/listen")
                .body(body.to_string())
        } else {
            let session = self.lock().id.clone()?;
            self.client
                .get(self.url.clone())
                .header("accept", "text/event-stream")
                .header("mcp-protocol-version", UPSTREAM_SESSION_VERSION)
                .header("mcp-session-id", session)
        };
        let response = request.send().await.ok()?;
        let is_stream = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("text/event-stream"));
        (response.status().is_success() && is_stream).then_some(response)
    }

    /// Server-to-client requests (sampling, elicitation, roots) cannot be attributed to one
    /// client over a shared connection: answer them here so the upstream never waits.
    fn answer_server_request(&self, request: micromcp_protocol::Request) {
        let response = crate::answer_server_request(request);
        let mut post = self
            .client
            .post(self.url.clone())
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .body(response.to_value().to_string());
        if !self.stateless {
            post = post.header("mcp-protocol-version", UPSTREAM_SESSION_VERSION);
            if let Some(session) = self.lock().id.clone() {
                post = post.header("mcp-session-id", session);
            }
        }
        tokio::spawn(async move {
            let _ = post.send().await;
        });
    }

    pub fn is_stateless(&self) -> bool {
        self.stateless
    }

    fn protocol(&self, reason: impl Into<String>) -> UpstreamError {
        UpstreamError::Protocol {
            service: self.name.clone(),
            reason: reason.into(),
        }
    }
}

const SESSION_EXPIRED: &str = "session expired";

/// Keeps a notification stream open to the upstream for as long as it exists, so its list
/// changes reach clients; reconnects with backoff. Upstreams without such a stream are left alone.
async fn listen_for_changes(this: std::sync::Weak<HttpUpstream>) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let Some(upstream) = this.upgrade() else {
            return;
        };
        let Some(response) = upstream.open_notification_stream().await else {
            tracing::debug!(service = %upstream.name, "the service offers no notification stream");
            return;
        };
        drop(upstream);
        let mut events = sse_stream::SseStream::from_bytes_stream(response.bytes_stream());
        while let Some(Ok(event)) = events.next().await {
            let Some(upstream) = this.upgrade() else {
                return;
            };
            let Some(data) = event.data.filter(|d| !d.trim().is_empty()) else {
                continue;
            };
            // Responses (e.g. the end of a listen stream) carry nothing to pass on.
            let _ = upstream.on_message(data.as_bytes(), 0);
            backoff = Duration::from_secs(1);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// `Mcp-Name` for the methods that carry one.
fn mcp_name(method: &str, params: Option<&Value>) -> Option<String> {
    let key = match method {
        "tools/call" | "prompts/get" => "name",
        "resources/read" => "uri",
        _ => return None,
    };
    params?.get(key)?.as_str().map(str::to_owned)
}

fn connect_reason(e: &reqwest::Error) -> String {
    if e.is_connect() {
        "cannot connect".into()
    } else if e.is_timeout() {
        "connection timed out".into()
    } else {
        "request failed".into()
    }
}

async fn read_bounded(response: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| "connection lost while reading the response".to_owned())?;
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err("response too large".into());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

struct CancelOnDrop<'a> {
    upstream: Option<&'a HttpUpstream>,
    id: u64,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        // Stateless servers treat a closed stream as cancellation; session-era servers are told.
        let Some(upstream) = self.upstream.take() else {
            return;
        };
        if upstream.stateless {
            return;
        }
        let Some(session) = upstream.lock().id.clone() else {
            return;
        };
        let body = json!({ "jsonrpc": "2.0", "method": "notifications/cancelled",
            "params": { "requestId": self.id, "reason": "cancelled by the gateway" } });
        let request = upstream
            .client
            .post(upstream.url.clone())
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .header("mcp-protocol-version", UPSTREAM_SESSION_VERSION)
            .header("mcp-session-id", session)
            .body(body.to_string());
        tokio::spawn(async move {
            let _ = request.send().await;
        });
    }
}
