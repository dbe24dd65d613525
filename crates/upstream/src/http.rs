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

use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use hyper::Method;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use micromcp_config::Secret;
use micromcp_protocol::headers::encode_value;
use micromcp_protocol::{Message, strict, text};
use serde_json::{Value, json};

use crate::http_client::{self, Client};

use crate::{
    EventSink, OnBehalf, OwnToken, UPSTREAM_SESSION_VERSION, UPSTREAM_STATELESS_VERSION,
    UpstreamError, UpstreamEvent, client_capabilities, client_info,
};

const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// How long a response stream may take to end after its response, for its connection to be
/// reused; a server that keeps it open longer loses the connection.
const STREAM_END_WAIT: Duration = Duration::from_secs(2);
/// Longest a connection attempt (initialize) or a message the gateway does not wait on may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
const ACCEPT_BOTH: &str = "application/json, text/event-stream";

#[derive(Default)]
struct SessionState {
    id: Option<String>,
    capabilities: Option<Value>,
}

pub struct HttpUpstream {
    name: String,
    /// Carries the configured headers (credentials) on every request; `Err` says why the
    /// upstream cannot be reached at all (e.g. no trusted roots for https).
    client: Result<Client, String>,
    stateless: bool,
    next_id: AtomicU64,
    session: tokio::sync::Mutex<()>,
    state: Mutex<SessionState>,
    events: EventSink,
    /// Becomes true once the first connection attempt has finished (ready or failed).
    started: tokio::sync::watch::Sender<bool>,
    /// With `identity = "jwt"`: the gateway's own token, for requests made on no caller's behalf.
    own_token: Option<OwnToken>,
}

impl HttpUpstream {
    pub fn new(
        name: &str,
        url: &url::Url,
        headers: BTreeMap<String, Secret>,
        stateless: bool,
        events: EventSink,
        own_token: Option<OwnToken>,
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
        let client = Client::new(url, map, Duration::from_secs(10));
        if let Err(e) = &client {
            tracing::error!(service = name, "cannot use the service's URL: {e}");
        }
        Arc::new(Self {
            name: name.to_owned(),
            client,
            stateless,
            next_id: AtomicU64::new(0),
            session: tokio::sync::Mutex::new(()),
            state: Mutex::new(SessionState::default()),
            events,
            started: tokio::sync::watch::channel(false).0,
            own_token,
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
        on_behalf: OnBehalf<'_>,
    ) -> Result<Value, UpstreamError> {
        if self.stateless {
            return self.send(method, params, on_behalf).await;
        }
        self.ensure_session().await?;
        match self.send(method, params.clone(), on_behalf).await {
            Err(UpstreamError::Unavailable { reason, .. }) if reason == SESSION_EXPIRED => {
                {
                    let mut state = self.lock();
                    state.id = None;
                    state.capabilities = None;
                }
                self.ensure_session().await?;
                self.send(method, params, on_behalf).await
            }
            other => other,
        }
    }

    pub async fn notify(&self, method: &str, params: Option<Value>) {
        let mut body = json!({ "jsonrpc": "2.0", "method": method });
        if let Some(p) = params {
            body["params"] = p;
        }
        if let Ok(response) = self.post(&body, method, None, None).await {
            response.discard().await;
        }
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
                // An upstream that accepts the connection and never answers must not hold the
                // session lock (and every request behind it) forever.
                let outcome = tokio::time::timeout(ATTEMPT_TIMEOUT, upstream.ensure_session())
                    .await
                    .unwrap_or_else(|_| Err(upstream.unavailable("no answer to initialize")));
                upstream.started.send_replace(true);
                match outcome {
                    Ok(()) => {
                        tracing::info!(service = %upstream.name, "service is ready");
                        crate::stdio::announce_lists_changed(&upstream.name, &upstream.events);
                        drop(upstream);
                        listen_for_changes(this).await;
                        return;
                    }
                    Err(e) => tracing::warn!(
                        service = %upstream.name,
                        "not reachable yet: {}",
                        text::escape(&e.to_string())
                    ),
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
            let result = self
                .send("server/discover", None, OnBehalf::Gateway)
                .await?;
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
        let result = self
            .send("initialize", Some(params), OnBehalf::Gateway)
            .await?;
        self.lock().capabilities = Some(
            result
                .get("capabilities")
                .cloned()
                .unwrap_or_else(|| json!({})),
        );
        self.notify("notifications/initialized", None).await;
        Ok(())
    }

    async fn send(
        &self,
        method: &str,
        mut params: Option<Value>,
        on_behalf: OnBehalf<'_>,
    ) -> Result<Value, UpstreamError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        on_behalf.stamp(id, &mut params);
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
        let bearer = match on_behalf {
            OnBehalf::Bearer(token) => Some(token),
            _ => None,
        };
        let response = self.post(&body, method, name.as_deref(), bearer).await?;
        let result = self.read_reply(response, id).await;
        guard.upstream = None;
        result
    }

    /// POSTs one message; `bearer` is the caller's gateway-minted token (else the gateway's own).
    async fn post(
        &self,
        body: &Value,
        method: &str,
        name: Option<&str>,
        bearer: Option<&str>,
    ) -> Result<http_client::Response, UpstreamError> {
        let mut headers = self.post_headers(method != "initialize");
        headers.extend(match bearer {
            Some(token) => authorization(token),
            None => self.own_authorization(),
        });
        if self.stateless {
            headers.push((
                "mcp-protocol-version",
                HeaderValue::from_static(UPSTREAM_STATELESS_VERSION),
            ));
            if let Ok(value) = HeaderValue::from_str(method) {
                headers.push(("mcp-method", value));
            }
            if let Some(value) = name.and_then(|n| HeaderValue::from_str(&encode_value(n)).ok()) {
                headers.push(("mcp-name", value));
            }
        }
        let body = Bytes::from(serde_json::to_vec(body).unwrap_or_default());
        let response = self
            .client()?
            .send(Method::POST, &headers, body)
            .await
            .map_err(|e| self.unavailable(e.to_string()))?;
        if let Some(session) = response
            .headers
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            && method == "initialize"
        {
            self.lock().id = Some(session.to_owned());
        }
        Ok(response)
    }

    fn client(&self) -> Result<&Client, UpstreamError> {
        self.client
            .as_ref()
            .map_err(|reason| self.unavailable(reason.clone()))
    }

    /// The headers of every POST but `Authorization`; in the session era also the protocol
    /// version (not on `initialize`) and the session.
    fn post_headers(&self, with_version: bool) -> Vec<(&'static str, HeaderValue)> {
        let mut headers = vec![
            ("accept", HeaderValue::from_static(ACCEPT_BOTH)),
            ("content-type", HeaderValue::from_static("application/json")),
        ];
        if !self.stateless {
            if with_version {
                headers.push((
                    "mcp-protocol-version",
                    HeaderValue::from_static(UPSTREAM_SESSION_VERSION),
                ));
            }
            headers.extend(self.session_header());
        }
        headers
    }

    /// `Authorization` with the gateway's own token, when the service gets identity tokens.
    fn own_authorization(&self) -> Option<(&'static str, HeaderValue)> {
        let token = (self.own_token.as_ref()?)()?;
        authorization(&token)
    }

    /// The `Mcp-Session-Id` header, once the upstream has given the gateway a session.
    fn session_header(&self) -> Option<(&'static str, HeaderValue)> {
        let id = self.lock().id.clone()?;
        Some(("mcp-session-id", HeaderValue::from_str(&id).ok()?))
    }

    async fn read_reply(
        &self,
        response: http_client::Response,
        id: u64,
    ) -> Result<Value, UpstreamError> {
        let status = response.status;
        if status == hyper::StatusCode::NOT_FOUND && self.lock().id.is_some() {
            return Err(self.unavailable(SESSION_EXPIRED));
        }
        let content_type = response
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        if content_type.starts_with("text/event-stream") {
            let mut events = Box::pin(sse_stream::SseStream::from_bytes_stream(
                response.into_stream(MAX_RESPONSE_BYTES),
            ));
            while let Some(event) = events.next().await {
                let event =
                    event.map_err(|e| self.protocol(format!("broken event stream: {e}")))?;
                // Priming events (an id and empty data) and keep-alives carry no message.
                let Some(data) = event.data.filter(|d| !d.trim().is_empty()) else {
                    continue;
                };
                if let Some(result) = self.on_message(data.as_bytes(), id)? {
                    // The server ends the stream after the response; reading that end lets
                    // the connection be reused. The answer does not wait for it.
                    loop {
                        match events.next().now_or_never() {
                            Some(Some(_)) => continue,
                            Some(None) => break,
                            None => {
                                tokio::spawn(tokio::time::timeout(STREAM_END_WAIT, async move {
                                    while events.next().await.is_some() {}
                                }));
                                break;
                            }
                        }
                    }
                    return result;
                }
            }
            return Err(self.protocol("the event stream ended without a response"));
        }
        let bytes = response
            .bytes(MAX_RESPONSE_BYTES)
            .await
            .map_err(|e| self.unavailable(e))?;
        if !content_type.starts_with("application/json") {
            return Err(self.protocol(format!("HTTP {status} with content type {content_type:?}")));
        }
        let message = self.on_message(&bytes, id);
        if !status.is_success() && message.is_err() {
            // A refusal that is not JSON-RPC (e.g. 401 from a service that does not accept
            // the gateway's credentials): the status says more than the body's shape.
            return Err(self.unavailable(format!("HTTP {status}")));
        }
        match message? {
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
                    error: Box::new(error),
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
    async fn open_notification_stream(&self) -> Listen {
        let Ok(client) = self.client.as_ref() else {
            return Listen::NotOffered;
        };
        let response = if self.stateless {
            let body = json!({ "jsonrpc": "2.0", "id": 0, "method": "subscriptions/listen", "params": {
                "notifications": { "toolsListChanged": true, "promptsListChanged": true, "resourcesListChanged": true },
                "_meta": {
                    "io.modelcontextprotocol/protocolVersion": UPSTREAM_STATELESS_VERSION,
                    "io.modelcontextprotocol/clientCapabilities": client_capabilities(),
                    "io.modelcontextprotocol/clientInfo": client_info(),
                },
            }});
            let mut headers = vec![
                ("accept", HeaderValue::from_static(ACCEPT_BOTH)),
                ("content-type", HeaderValue::from_static("application/json")),
                (
                    "mcp-protocol-version",
                    HeaderValue::from_static(UPSTREAM_STATELESS_VERSION),
                ),
                (
                    "mcp-method",
                    HeaderValue::from_static("subscriptions/listen"),
                ),
            ];
            headers.extend(self.own_authorization());
            client
                .send(Method::POST, &headers, Bytes::from(body.to_string()))
                .await
        } else {
            let mut headers = vec![
                ("accept", HeaderValue::from_static("text/event-stream")),
                (
                    "mcp-protocol-version",
                    HeaderValue::from_static(UPSTREAM_SESSION_VERSION),
                ),
                match self.session_header() {
                    Some(header) => header,
                    None => return Listen::Failed,
                },
            ];
            headers.extend(self.own_authorization());
            client.send(Method::GET, &headers, Bytes::new()).await
        };
        let Ok(response) = response else {
            return Listen::Failed;
        };
        let is_stream = response
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("text/event-stream"));
        let status = response.status;
        if status.is_success() && is_stream {
            Listen::Stream(Box::new(response))
        } else if status.is_server_error() || [404, 408, 429].contains(&status.as_u16()) {
            // Restarting, overloaded, or our session expired (a request renews it).
            Listen::Failed
        } else {
            Listen::NotOffered
        }
    }

    /// Server-to-client requests (sampling, elicitation, roots) cannot be attributed to one
    /// client over a shared connection: answer them here so the upstream never waits.
    fn answer_server_request(&self, request: micromcp_protocol::Request) {
        let response = crate::answer_server_request(request);
        self.post_in_background(response.to_value());
    }

    /// Posts a message the gateway does not wait on (an answer, a cancellation).
    fn post_in_background(&self, message: Value) {
        let Ok(client) = self.client.clone() else {
            return;
        };
        let mut headers = self.post_headers(true);
        headers.extend(self.own_authorization());
        tokio::spawn(tokio::time::timeout(ATTEMPT_TIMEOUT, async move {
            if let Ok(response) = client
                .send(Method::POST, &headers, Bytes::from(message.to_string()))
                .await
            {
                response.discard().await;
            }
        }));
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

/// How opening the notification stream went.
enum Listen {
    Stream(Box<http_client::Response>),
    /// The upstream answered that it has none: stop asking.
    NotOffered,
    /// Unreachable, restarting, or the session expired: ask again later.
    Failed,
}

/// Keeps a notification stream open to the upstream for as long as it exists, so its list
/// changes reach clients; reconnects with backoff. Upstreams without such a stream are left alone.
async fn listen_for_changes(this: std::sync::Weak<HttpUpstream>) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let Some(upstream) = this.upgrade() else {
            return;
        };
        let response = match upstream.open_notification_stream().await {
            Listen::Stream(response) => *response,
            Listen::NotOffered => {
                tracing::debug!(service = %upstream.name, "the service offers no notification stream");
                return;
            }
            Listen::Failed => {
                drop(upstream);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        drop(upstream);
        // The limit is on the stream's whole life: a stream that reaches it is opened again.
        let mut events = std::pin::pin!(sse_stream::SseStream::from_bytes_stream(
            response.into_stream(MAX_RESPONSE_BYTES)
        ));
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

/// An `Authorization: Bearer` header, marked sensitive (never logged by hyper).
fn authorization(token: &str) -> Option<(&'static str, HeaderValue)> {
    let mut value = HeaderValue::from_str(&format!("Bearer {token}")).ok()?;
    value.set_sensitive(true);
    Some(("authorization", value))
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
        if upstream.stateless || upstream.lock().id.is_none() {
            return;
        }
        upstream.post_in_background(
            json!({ "jsonrpc": "2.0", "method": "notifications/cancelled",
            "params": { "requestId": self.id, "reason": "cancelled by the gateway" } }),
        );
    }
}
