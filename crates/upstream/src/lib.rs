//! Upstream MCP services as the gateway sees them: something that answers requests.
//!
//! Each [`Upstream`] owns its connection and its own request-id space: ids sent upstream are
//! the gateway's (a counter per connection), never a client's, so two clients using the same id
//! can never receive each other's responses. Dropping an unfinished [`Upstream::request`] future
//! (client went away, timeout, cancellation) tells the upstream with `notifications/cancelled`.
//!
//! What a service learns about the caller travels with each request as an [`OnBehalf`]: a
//! bearer token the gateway minted for it (HTTP) or an identity stamped into `_meta` once the
//! request's own id is known (bound to it); never anything the client sent.
//!
//! Notifications from upstreams (progress, list changes, resource updates) arrive on one
//! [`UpstreamEvent`] channel; the gateway decides which client, if any, receives each.
//!
//! Everything an upstream sends is untrusted: a stdio child's output is read with bounded
//! memory by [`lines`] (public for the fuzz target), and its text is logged only escaped
//! ([`micromcp_protocol::text::escape`]).

mod http;
mod http_client;
pub mod lines;
mod pending;
mod stdio;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use micromcp_config::{Service, ServiceTransport, UpstreamProtocol};
use micromcp_protocol::ErrorObject;
use serde_json::{Value, json};

pub use http::HttpUpstream;
pub use stdio::StdioUpstream;

/// Why an upstream request failed. Messages are safe to show a client: they name the service
/// and never carry upstream internals.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum UpstreamError {
    #[error("service {service:?} is unavailable ({reason})")]
    Unavailable { service: String, reason: String },
    #[error("service {service:?} did not answer within {timeout:?}")]
    Timeout { service: String, timeout: Duration },
    /// The upstream answered with a JSON-RPC error.
    #[error("service {service:?} returned an error: {}", .error.message)]
    /// (Boxed: JSON-RPC errors are large, and every `Result` of an upstream call carries this.)
    Rpc {
        service: String,
        error: Box<ErrorObject>,
    },
    #[error("service {service:?} sent an invalid response ({reason})")]
    Protocol { service: String, reason: String },
}

/// A notification from an upstream, for the gateway to route.
#[derive(Debug, Clone)]
pub struct UpstreamEvent {
    pub service: String,
    pub method: String,
    pub params: Option<Value>,
}

/// Receives upstream notifications. It is called inline by the connection's reader, so a
/// notification (e.g. progress) is handled before any response that follows it on the same
/// connection: it must not block.
pub type EventSink = Arc<dyn Fn(UpstreamEvent) + Send + Sync>;

/// The protocol version the gateway speaks to an upstream in the session era.
pub const UPSTREAM_SESSION_VERSION: &str = "2025-11-25";
pub const UPSTREAM_STATELESS_VERSION: &str = "2026-07-28";

/// What a service is told about who a request is for (docs/identity.md). Never the caller's own
/// credential: the gateway vouches for the caller in a form made for that one service.
#[derive(Clone, Copy, Default)]
pub enum OnBehalf<'a> {
    /// Nothing: the service sees only the gateway (its configured headers, its own token).
    #[default]
    Gateway,
    /// HTTP services: `Authorization: Bearer <token>`, a token the gateway minted for it.
    Bearer(&'a str),
    /// `params._meta[key] = sign(upstream request id)`: an identity bound to this request,
    /// whose id only the connection knows when it sends.
    Meta(&'a str, &'a (dyn Fn(u64) -> Value + Sync)),
}

impl std::fmt::Debug for OnBehalf<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OnBehalf::Gateway => "OnBehalf::Gateway",
            OnBehalf::Bearer(_) => "OnBehalf::Bearer([redacted])",
            OnBehalf::Meta(..) => "OnBehalf::Meta",
        })
    }
}

impl OnBehalf<'_> {
    /// Adds a [`OnBehalf::Meta`] identity for the request `id` to `params`.
    fn stamp(&self, id: u64, params: &mut Option<Value>) {
        if let OnBehalf::Meta(key, sign) = self {
            let params = params.get_or_insert_with(|| json!({}));
            if let Some(p) = params.as_object_mut() {
                let meta = p.entry("_meta").or_insert_with(|| json!({}));
                if let Some(meta) = meta.as_object_mut() {
                    meta.insert((*key).to_owned(), sign(id));
                }
            }
        }
    }
}

/// The bearer token an HTTP service gets with requests the gateway makes on its own behalf
/// (`initialize`, its notification stream, cancellations), when it has `identity = "jwt"`.
pub type OwnToken = Arc<dyn Fn() -> Option<Arc<str>> + Send + Sync>;

/// How the gateway introduces itself to upstreams.
pub fn client_info() -> Value {
    json!({ "name": "micromcp-gateway", "version": env!("CARGO_PKG_VERSION") })
}

/// Client capabilities the gateway declares upstream: none. Server-to-client requests
/// (sampling, elicitation, roots) cannot be attributed to one client over a shared connection.
pub fn client_capabilities() -> Value {
    json!({})
}

/// An upstream service connection.
#[derive(Clone)]
pub enum Upstream {
    Stdio(Arc<StdioUpstream>),
    Http(Arc<HttpUpstream>),
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Upstream::Stdio(_) => "Upstream::Stdio",
            Upstream::Http(_) => "Upstream::Http",
        })
    }
}

impl Upstream {
    /// Starts the connection (stdio children are spawned and supervised in the background).
    /// `own_token`: see [`OwnToken`] (HTTP services only).
    pub fn start(
        name: &str,
        service: &Service,
        self_exe: &Path,
        events: EventSink,
        own_token: Option<OwnToken>,
    ) -> Self {
        match &service.transport {
            ServiceTransport::Builtin {
                name: builtin,
                args,
                cwd,
                env,
            } => {
                let mut all = vec!["serve".to_owned(), builtin.clone()];
                all.extend(args.iter().cloned());
                let program = self_exe.to_string_lossy().into_owned();
                Upstream::Stdio(StdioUpstream::start(
                    name,
                    program,
                    all,
                    Some(cwd.clone()),
                    env.clone(),
                    events,
                ))
            }
            ServiceTransport::Stdio {
                program,
                args,
                cwd,
                env,
            } => Upstream::Stdio(StdioUpstream::start(
                name,
                program.clone(),
                args.clone(),
                cwd.clone(),
                env.clone(),
                events,
            )),
            ServiceTransport::Http { url, headers } => {
                let stateless = service.protocol == UpstreamProtocol::Stateless;
                let upstream =
                    HttpUpstream::new(name, url, headers.clone(), stateless, events, own_token);
                upstream.connect_in_background();
                Upstream::Http(upstream)
            }
        }
    }

    /// Sends a request and waits for its result. Cancel by dropping the future.
    pub fn request<'a>(
        &'a self,
        method: &'a str,
        params: Option<Value>,
    ) -> impl Future<Output = Result<Value, UpstreamError>> + Send + 'a {
        // Not an `async fn`: no extra layer around `request_as`'s future.
        self.request_as(method, params, OnBehalf::Gateway)
    }

    /// [`Upstream::request`] for a caller: the service is told who, as `on_behalf` says.
    pub async fn request_as(
        &self,
        method: &str,
        params: Option<Value>,
        on_behalf: OnBehalf<'_>,
    ) -> Result<Value, UpstreamError> {
        match self {
            Upstream::Stdio(s) => s.request(method, params, on_behalf).await,
            Upstream::Http(h) => h.request(method, params, on_behalf).await,
        }
    }

    pub async fn notify(&self, method: &str, params: Option<Value>) {
        match self {
            Upstream::Stdio(s) => s.notify(method, params),
            Upstream::Http(h) => h.notify(method, params).await,
        }
    }

    /// Waits (at most `limit`) for the first start attempt to finish, so requests arriving
    /// while the gateway is still starting its services see them instead of an empty list.
    /// Returns at once after that: restarts never hold requests.
    pub async fn wait_started(&self, limit: Duration) {
        let mut started = match self {
            Upstream::Stdio(s) => s.started(),
            Upstream::Http(h) => h.started(),
        };
        let _ = tokio::time::timeout(limit, started.wait_for(|s| *s)).await;
    }

    /// Whether the gateway speaks the stateless 2026-07-28 era to this upstream.
    pub fn is_stateless(&self) -> bool {
        matches!(self, Upstream::Http(h) if h.is_stateless())
    }

    /// The upstream's advertised capabilities, once connected.
    pub fn capabilities(&self) -> Option<Value> {
        match self {
            Upstream::Stdio(s) => s.capabilities(),
            Upstream::Http(h) => h.capabilities(),
        }
    }

    /// Stops the connection; stdio children get EOF, then SIGTERM, then SIGKILL.
    pub async fn shutdown(&self) {
        match self {
            Upstream::Stdio(s) => s.shutdown().await,
            Upstream::Http(_) => {}
        }
    }
}

/// The gateway's answer to a server-to-client request from an upstream. Such requests
/// (sampling, elicitation) cannot be attributed to one client over a shared connection, so
/// only `ping` and an empty `roots/list` are answered; the rest get "method not found" at once.
pub fn answer_server_request(request: micromcp_protocol::Request) -> micromcp_protocol::Response {
    use micromcp_protocol::{ErrorObject, Response, error_codes};
    match request.method.as_str() {
        "ping" => Response::ok(request.id, json!({})),
        "roots/list" => Response::ok(request.id, json!({ "roots": [] })),
        _ => Response::err(
            request.id,
            ErrorObject::new(
                error_codes::METHOD_NOT_FOUND,
                "not available through the micromcp gateway",
            ),
        ),
    }
}

/// Turns an upstream JSON-RPC error into one safe to show: code and the first line of the
/// message (bounded). `data` (often stack traces) is dropped, except small, spec-defined `data`
/// that clients act on.
pub fn scrub_error(error: ErrorObject) -> ErrorObject {
    let first_line = error
        .message
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(300)
        .collect::<String>();
    // Small, spec-defined `data` that clients act on: required capabilities (-32021), supported
    // versions (-32022), and the URI of a resource not found (SEP-2164).
    let small_object = error
        .data
        .as_ref()
        .is_some_and(|d| d.is_object() && d.to_string().len() <= 4096);
    let only_uri = error
        .data
        .as_ref()
        .and_then(Value::as_object)
        .is_some_and(|o| o.len() == 1 && o.get("uri").is_some_and(Value::is_string));
    let spec_data = small_object
        && (matches!(error.code, -32021 | -32022)
            || (matches!(error.code, -32002 | -32602) && only_uri));
    ErrorObject {
        code: error.code,
        message: first_line,
        data: if spec_data { error.data } else { None },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubbing_drops_stack_traces_and_keeps_spec_data() {
        let mut e = ErrorObject::new(
            -32603,
            "boom\n  at Object.<anonymous> (/srv/app/secret/path.js:10:5)",
        );
        e.data = Some(json!({"stack": "Traceback (most recent call last): ..."}));
        let out = scrub_error(e);
        assert_eq!(out.message, "boom");
        assert_eq!(out.data, None);
        let mut e = ErrorObject::new(-32021, "Missing required client capability");
        e.data = Some(json!({"requiredCapabilities": {"elicitation": {}}}));
        assert!(scrub_error(e).data.is_some(), "clients act on this data");
        let long = ErrorObject::new(-32000, "x".repeat(1000));
        assert_eq!(scrub_error(long).message.len(), 300);
        let mut e = ErrorObject::new(-32602, "Resource not found");
        e.data = Some(json!({"uri": "test://nope"}));
        assert_eq!(scrub_error(e).data, Some(json!({"uri": "test://nope"})));
        let mut e = ErrorObject::new(-32602, "Resource not found");
        e.data = Some(json!({"uri": "test://nope", "trace": "…"}));
        assert_eq!(scrub_error(e).data, None, "only a bare uri is passed on");
    }
}
