//! Client-facing Streamable HTTP at `/mcp`, both protocol eras.
//!
//! Every request, in order (each refusal is audited and answered with a clear reason):
//! 1. Exactly one `Host`, a valid `host[:port]` authority matching any absolute-form target
//!    (400 otherwise, see [`crate::authority`]), naming a loopback name (when bound to loopback)
//!    or one listed in `listen.allowed_hosts`; `Origin`, when present, must be listed in
//!    `listen.allowed_origins` — else 403 (DNS rebinding, CSRF).
//! 2. No query string: credentials are accepted only in the `Authorization` header — else 400.
//! 3. Authenticate the bearer token — else 401 with `WWW-Authenticate`. Then the principal's
//!    requests in progress are counted ([`crate::limits`]): beyond
//!    `gateway.max_requests_per_principal`, 429 at once.
//! 4. Body: `Content-Type: application/json` (at most `; charset=utf-8`; else 415), within
//!    `listen.body_timeout` (408), at most `listen.max_body_bytes` (413), strict JSON
//!    with bounded nesting and no duplicate keys (400, -32700), one message, no batches (400).
//! 5. Era: `initialize` starts a session-era session; a request whose `_meta` or
//!    `MCP-Protocol-Version` says 2026-07-28 is stateless and must carry matching
//!    `MCP-Protocol-Version`, `Mcp-Method` and `Mcp-Name` headers (400, -32020); anything else
//!    needs an `Mcp-Session-Id` owned by the caller (400 missing, 404 unknown or not theirs).
//! 6. Hand the request to [`Gateway::handle`]; the answer is JSON, or an SSE stream when the
//!    client asked for progress and accepts `text/event-stream`.
//!
//! Every SSE stream (GET notification stream, `subscriptions/listen`, SSE answer) holds one of
//! the principal's `gateway.max_streams_per_principal` stream slots until it ends (429 beyond).

// Refusals are the cold path; boxing them would add noise to every check for no gain.
#![allow(clippy::result_large_err)]

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use futures::{FutureExt, StreamExt};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use micromcp_auth::{AuthError, ClientCertificate, Credentials, Principal};
use micromcp_protocol::era::{supported_versions, unsupported_version};
use micromcp_protocol::headers::decode_value;
use micromcp_protocol::jsonrpc::error_without_id;
use micromcp_protocol::{
    Era, ErrorObject, Message, ProtocolVersion, Request as RpcRequest, Response as RpcResponse,
    error_codes, strict,
};
use serde_json::{Value, json};
use tokio_util::task::AbortOnDropHandle;

use crate::Gateway;
use crate::authority::Host;
use crate::limits::Slot;
use crate::listener::{Activity, Busy};
use crate::outbox::{Inbox, outbox};
use crate::pipeline::Caller;
use crate::session::{NotCreated, Session, StreamRefused};

const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";
const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
const META_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";

type Gw = State<Arc<Gateway>>;

/// The HTTP routes: `/mcp`, `/healthz`, `/readyz`, the OAuth protected resource metadata, and
/// the gateway's public keys (JWKS) for services that verify its identity tokens.
pub(crate) fn router(gateway: Arc<Gateway>) -> Router {
    let mut router = Router::new();
    if let Some(path) = crate::oauth::metadata_path(&gateway.config) {
        router = router
            .route(crate::oauth::METADATA_ROOT, get(crate::oauth::metadata))
            .route(&path, get(crate::oauth::metadata));
    }
    router
        .route("/mcp", any(mcp))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route(crate::vouch::JWKS_PATH, get(crate::vouch::jwks))
        .fallback(not_found)
        .with_state(gateway)
}

/// Any other path: 404, audited like every request (probes of the gateway are worth seeing).
async fn not_found(State(gw): Gw, request: Request) -> Response {
    let refusal = Refusal::new(
        StatusCode::NOT_FOUND,
        error_codes::INVALID_REQUEST,
        "path",
        "not found; the MCP endpoint is /mcp",
    );
    let method = format!("{} (unknown path)", request.method());
    gw.audit_rejection(
        "http",
        None,
        Some(&method),
        Some(refusal.status.as_u16()),
        refusal.rule,
        &refusal.error.message,
        Instant::now(),
    );
    refusal_response(refusal)
}

async fn readyz(State(gw): Gw) -> Response {
    let services: serde_json::Map<String, Value> = gw
        .ready_services()
        .into_iter()
        .map(|(name, ready)| {
            (
                name.to_owned(),
                json!(if ready { "ready" } else { "unavailable" }),
            )
        })
        .collect();
    let all = services.values().all(|v| v == "ready");
    let status = if all {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(json!({ "ready": all, "services": services })),
    )
        .into_response()
}

/// A refusal before the request path: status, JSON-RPC error, audit rule.
struct Refusal {
    status: StatusCode,
    error: ErrorObject,
    rule: &'static str,
    id: Option<Value>,
    extra: Option<(header::HeaderName, HeaderValue)>,
    /// What the audit record says when it must say more than the client is told.
    audit_reason: Option<String>,
}

impl Refusal {
    fn new(status: StatusCode, code: i64, rule: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            error: ErrorObject::new(code, message),
            rule,
            id: None,
            extra: None,
            audit_reason: None,
        }
    }
}

async fn mcp(State(gw): Gw, request: Request) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let mut principal = None;
    let mut rpc_method = None;
    // The principal's request slot: given back when this handler returns, or for an SSE
    // answer when its stream ends (the request runs on in a task).
    let mut in_progress: Option<Slot> = None;
    let mut connection_busy: Option<Busy> = None;
    let authenticated = match check_transport(&gw, &request) {
        Ok(()) => {
            let certificate = request
                .extensions()
                .get::<Arc<ClientCertificate>>()
                .cloned();
            authenticate(&gw, request.headers(), certificate.as_deref()).await
        }
        Err(refusal) => Err(refusal),
    };
    let outcome = match authenticated {
        Err(refusal) => Err(refusal),
        Ok(p) => {
            principal = Some(p.clone());
            // From here the connection has a request worth keeping open at the cap.
            connection_busy = request
                .extensions()
                .get::<Arc<Activity>>()
                .cloned()
                .map(Busy::new);
            in_progress = gw.limits.requests.try_acquire(&p);
            match method {
                _ if in_progress.is_none() => Err(request_limit(&gw)),
                Method::POST => post(&gw, p, request, &mut rpc_method).await,
                Method::GET => get_stream(&gw, &p, request.headers()),
                Method::DELETE => delete(&gw, &p, request.headers()).await,
                _ => Err(Refusal::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    error_codes::INVALID_REQUEST,
                    "http-method",
                    "use POST, GET or DELETE",
                )),
            }
        }
    };
    match outcome {
        Ok(response) => {
            let answer_streams = response.extensions().get::<AnswerStreams>().is_some();
            let slot = in_progress.filter(|_| answer_streams);
            match (slot, connection_busy) {
                (None, None) => response,
                held => hold_until_sent(response, held),
            }
        }
        Err(refusal) => {
            gw.audit_rejection(
                "http",
                principal.as_ref(),
                rpc_method.as_deref(),
                Some(refusal.status.as_u16()),
                refusal.rule,
                refusal
                    .audit_reason
                    .as_deref()
                    .unwrap_or(&refusal.error.message),
                started,
            );
            refusal_response(refusal)
        }
    }
}

/// The principal has `gateway.max_requests_per_principal` requests in progress: 429 at once.
fn request_limit(gw: &Gateway) -> Refusal {
    Refusal::new(
        StatusCode::TOO_MANY_REQUESTS,
        error_codes::SERVER_ERROR,
        "request-limit",
        format!(
            "too many requests in progress for this principal (at most {}); retry when one has finished",
            gw.limits.requests.max()
        ),
    )
}

/// One of the principal's stream slots, or 429.
fn stream_slot(gw: &Gateway, principal: &Principal) -> Result<Slot, Refusal> {
    gw.limits
        .streams
        .try_acquire(principal)
        .ok_or_else(|| stream_limit(gw))
}

fn stream_limit(gw: &Gateway) -> Refusal {
    Refusal::new(
        StatusCode::TOO_MANY_REQUESTS,
        error_codes::SERVER_ERROR,
        "stream-limit",
        format!(
            "too many open streams for this principal (at most {}); close one first",
            gw.limits.streams.max()
        ),
    )
}

/// Marks an SSE answer: its request is in progress until the stream ends.
#[derive(Clone, Copy)]
struct AnswerStreams;

/// Keeps `held` (a slot, a request in progress) until the response body has been sent or
/// dropped.
pub(crate) fn hold_until_sent<H: Send + 'static>(response: Response, held: H) -> Response {
    response.map(|body| {
        Body::new(body.map_frame(move |frame| {
            let _held = &held;
            frame
        }))
    })
}

fn refusal_response(refusal: Refusal) -> Response {
    let body = match refusal.id {
        Some(id) => json!({ "jsonrpc": "2.0", "id": id, "error": refusal.error.to_value() }),
        None => error_without_id(&refusal.error),
    };
    let mut response = (refusal.status, axum::Json(body)).into_response();
    if let Some((name, value)) = refusal.extra {
        response.headers_mut().insert(name, value);
    }
    if refusal.status == StatusCode::METHOD_NOT_ALLOWED {
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, POST, DELETE"));
    }
    response
}

/// Host, Origin and query-string checks.
fn check_transport(gw: &Gateway, request: &Request) -> Result<(), Refusal> {
    let headers = request.headers();
    let listen = &gw.config.listen;
    let bad_host = |message: &str| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            error_codes::INVALID_REQUEST,
            "host",
            message,
        )
    };
    let authority = single_header(headers, "host")
        .map_err(|m| bad_host(&m))?
        .ok_or_else(|| bad_host("a Host header is required"))?;
    let host = Host::parse(authority)
        .ok_or_else(|| bad_host("the Host header is not a valid host[:port]"))?;
    // An absolute-form request target names its own authority; two authorities that could
    // disagree are refused rather than choosing one.
    if let Some(target) = request.uri().authority()
        && !target.as_str().eq_ignore_ascii_case(authority)
    {
        return Err(bad_host(
            "the request target's authority does not match the Host header",
        ));
    }
    if !host.is_allowed(authority, listen.addr, &listen.allowed_hosts) {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            error_codes::INVALID_REQUEST,
            "host",
            "Host header is not allowed",
        ));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let allowed = origin.to_str().is_ok_and(|o| {
            listen
                .allowed_origins
                .iter()
                .any(|a| a.eq_ignore_ascii_case(o))
        });
        if !allowed {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                error_codes::INVALID_REQUEST,
                "origin",
                "Origin is not allowed",
            ));
        }
    }
    if request.uri().query().is_some() {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            error_codes::INVALID_REQUEST,
            "query-string",
            "query parameters are not accepted; send credentials only in the Authorization header",
        ));
    }
    Ok(())
}

async fn authenticate(
    gw: &Gateway,
    headers: &HeaderMap,
    certificate: Option<&ClientCertificate>,
) -> Result<Principal, Refusal> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            error_codes::INVALID_REQUEST,
            "auth",
            "more than one Authorization header",
        ));
    }
    let credentials = Credentials {
        authorization: first.map(HeaderValue::as_bytes),
        certificate,
    };
    gw.authn.authenticate(credentials).await.map_err(|e| {
        let error = match e {
            AuthError::Missing => None,
            AuthError::Malformed(_) => Some("invalid_request"),
            AuthError::Invalid(_) => Some("invalid_token"),
        };
        let mut refusal = Refusal::new(
            StatusCode::UNAUTHORIZED,
            error_codes::SERVER_ERROR,
            "auth",
            format!("unauthorized: {}", e.public_message()),
        );
        refusal.audit_reason = Some(e.to_string());
        refusal.extra = Some((
            header::WWW_AUTHENTICATE,
            crate::oauth::challenge(&gw.config, error, None),
        ));
        refusal
    })
}

/// One header value, refusing duplicates (two proxies could disagree on which one counts).
fn single_header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, String> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(format!("more than one {name} header"));
    }
    first
        .map(|v| {
            v.to_str()
                .map_err(|_| format!("{name} header is not visible ASCII"))
        })
        .transpose()
}

async fn post(
    gw: &Arc<Gateway>,
    principal: Principal,
    request: Request,
    rpc_method: &mut Option<String>,
) -> Result<Response, Refusal> {
    let (parts, body) = request.into_parts();
    let client_ip = parts
        .extensions
        .get::<crate::listener::ClientAddr>()
        .map(|a| a.0);
    let headers = parts.headers;
    // Exactly one Content-Type, and JSON: with two, parsers down the line could disagree.
    let json_type = single_header(&headers, "content-type")
        .ok()
        .flatten()
        .is_some_and(is_json_media_type);
    if !json_type {
        return Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            error_codes::INVALID_REQUEST,
            "content-type",
            "exactly one Content-Type header, application/json (optionally ; charset=utf-8), is required",
        ));
    }
    let message = read_message(gw, &headers, body).await?;
    let accepts_sse = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/event-stream"));
    let (method, params) = match &message {
        Message::Request(r) => (r.method.clone(), r.params.as_ref()),
        Message::Notification(n) => (n.method.clone(), n.params.as_ref()),
        Message::Response(_) => (String::new(), None),
    };
    *rpc_method = (!method.is_empty()).then(|| method.clone());
    let meta_version = params
        .and_then(|p| p.get("_meta"))
        .and_then(|m| m.get(META_VERSION))
        .and_then(Value::as_str);
    let header_version =
        single_header(&headers, VERSION_HEADER).map_err(|m| mismatch(m, &message))?;
    // 2026-07-28 when the body or header says so (even for `initialize`, which that era
    // removed: it then gets "method not found"), or when an unknown version header comes
    // without a session (so the client learns which versions exist).
    let says_2026 = meta_version.is_some()
        || header_version
            .and_then(ProtocolVersion::parse)
            .is_some_and(|v| v.era() == Era::Stateless);
    let unknown_version_without_session = method != "initialize"
        && header_version.is_some_and(|v| {
            ProtocolVersion::parse(v).is_none() && headers.get(SESSION_HEADER).is_none()
        });
    let stateless = says_2026 || unknown_version_without_session;

    if stateless {
        let (version, capabilities) =
            check_stateless(&headers, &message, header_version, meta_version)?;
        let caller = Caller {
            principal,
            transport: "http",
            version,
            session: None,
            notify: None,
            client_capabilities: Some(capabilities),
            on_hold: None,
            client_ip,
        };
        return Ok(match message {
            Message::Request(r) if r.method == "subscriptions/listen" => listen(gw, caller, r)?,
            Message::Request(r) => answer(gw, caller, r, accepts_sse).await?,
            Message::Notification(n) => {
                gw.handle_notification(&caller, &n);
                StatusCode::ACCEPTED.into_response()
            }
            Message::Response(_) => return Err(unexpected_response()),
        });
    }

    if let Message::Request(r) = &message
        && r.method == "initialize"
    {
        return initialize(gw, principal, r.clone()).await;
    }
    let session = session_for(gw, &headers, &principal)?;
    if let Some(v) = header_version
        && ProtocolVersion::parse(v).is_none_or(|p| p.era() != Era::Session)
    {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            error_codes::INVALID_REQUEST,
            "protocol-version",
            format!(
                "unsupported MCP-Protocol-Version {v:?}; supported: {}",
                supported_versions().join(", ")
            ),
        ));
    }
    let caller = Caller {
        principal,
        transport: "http",
        version: session.version(),
        session: Some(session),
        notify: None,
        client_capabilities: None,
        on_hold: None,
        client_ip,
    };
    Ok(match message {
        Message::Request(r) => answer(gw, caller, r, accepts_sse).await?,
        Message::Notification(n) => {
            gw.handle_notification(&caller, &n);
            StatusCode::ACCEPTED.into_response()
        }
        Message::Response(_) => return Err(unexpected_response()),
    })
}

/// The gateway sends clients no requests (server-to-client requests are refused upstream), so
/// a response from a client answers nothing.
fn unexpected_response() -> Refusal {
    Refusal::new(
        StatusCode::BAD_REQUEST,
        error_codes::INVALID_REQUEST,
        "unexpected-response",
        "the gateway sent no request to answer",
    )
}

/// `application/json`, with at most a `charset=utf-8` parameter (any case, optionally quoted).
fn is_json_media_type(value: &str) -> bool {
    let mut parts = value.split(';');
    let essence = parts.next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/json")
        && parts.all(|parameter| {
            parameter.split_once('=').is_some_and(|(name, value)| {
                let value = value.trim();
                let value = value
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(value);
                name.trim().eq_ignore_ascii_case("charset") && value.eq_ignore_ascii_case("utf-8")
            })
        })
}

/// How much of a refused oversized body is read so the 413 reaches the client, and how long.
const DRAIN_AT_MOST: usize = 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(2);

async fn discard(mut body: Body, at_most: usize, within: Duration) {
    let mut seen = 0usize;
    let _ = tokio::time::timeout(within, async {
        while seen < at_most {
            match body.frame().await {
                Some(Ok(frame)) => seen += frame.data_ref().map_or(0, |d| d.len()),
                _ => break,
            }
        }
    })
    .await;
}

async fn read_message(gw: &Gateway, headers: &HeaderMap, body: Body) -> Result<Message, Refusal> {
    let max = gw.config.listen.max_body_bytes;
    let too_large = || {
        Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            error_codes::INVALID_REQUEST,
            "body-size",
            format!("request body exceeds {max} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(len) = declared.filter(|len| *len > max) {
        // Read (and drop) a modest oversized body before answering: a client still writing
        // when the connection closes gets a reset instead of the 413. Anything larger is
        // answered at once and the connection closed.
        if len <= max.saturating_add(DRAIN_AT_MOST) {
            discard(body, len, gw.config.listen.body_timeout.min(DRAIN_TIME)).await;
        }
        return Err(too_large());
    }
    let timeout = gw.config.listen.body_timeout;
    let collect = Limited::new(body, max).collect();
    tokio::pin!(collect);
    // A small body usually arrived with the headers: then no timer is needed.
    let read = match collect.as_mut().now_or_never() {
        Some(read) => Ok(read),
        None => tokio::time::timeout(timeout, collect).await,
    };
    let bytes = match read {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => return Err(too_large()),
        Ok(Err(_)) => {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                error_codes::INVALID_REQUEST,
                "body-incomplete",
                "the request body ended early (the client closed the connection)",
            ));
        }
        Err(_) => {
            return Err(Refusal::new(
                StatusCode::REQUEST_TIMEOUT,
                error_codes::INVALID_REQUEST,
                "body-timeout",
                format!("the request body did not arrive within {timeout:?}"),
            ));
        }
    };
    let value = strict::parse(&bytes, gw.config.listen.max_json_depth).map_err(|e| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            error_codes::PARSE_ERROR,
            "json",
            e.to_string(),
        )
    })?;
    Message::from_value(value).map_err(|e| {
        let mut refusal = Refusal::new(
            StatusCode::BAD_REQUEST,
            error_codes::INVALID_REQUEST,
            "jsonrpc",
            e.reason,
        );
        refusal.id = e.id.map(|id| id.as_value().clone());
        refusal
    })
}

fn mismatch(message: impl Into<String>, rpc: &Message) -> Refusal {
    let mut refusal = Refusal::new(
        StatusCode::BAD_REQUEST,
        error_codes::HEADER_MISMATCH,
        "protocol-headers",
        message,
    );
    if let Message::Request(r) = rpc {
        refusal.id = Some(r.id.as_value().clone());
    }
    refusal
}

/// The 2026-07-28 rules: headers must match the body; `_meta` must carry version and capabilities.
fn check_stateless(
    headers: &HeaderMap,
    message: &Message,
    header_version: Option<&str>,
    meta_version: Option<&str>,
) -> Result<(ProtocolVersion, Value), Refusal> {
    let (method, params) = match message {
        Message::Request(r) => (r.method.as_str(), r.params.as_ref()),
        Message::Notification(n) => (n.method.as_str(), n.params.as_ref()),
        Message::Response(_) => ("", None),
    };
    let with_id = |mut r: Refusal| {
        if let Message::Request(req) = message {
            r.id = Some(req.id.as_value().clone());
        }
        r
    };
    let Some(header_version) = header_version else {
        return Err(mismatch(
            "the MCP-Protocol-Version header is required",
            message,
        ));
    };
    let unsupported = |requested: &str| {
        let error = unsupported_version(requested);
        with_id(Refusal {
            status: StatusCode::BAD_REQUEST,
            error,
            rule: "protocol-version",
            id: None,
            extra: None,
            audit_reason: None,
        })
    };
    if matches!(message, Message::Notification(_)) && meta_version.is_none() {
        let version = ProtocolVersion::parse(header_version)
            .filter(|v| v.era() == Era::Stateless)
            .ok_or_else(|| unsupported(header_version))?;
        return Ok((version, json!({})));
    }
    let Some(meta_version) = meta_version else {
        return Err(with_id(Refusal::new(
            StatusCode::BAD_REQUEST,
            error_codes::INVALID_PARAMS,
            "protocol-meta",
            format!("params._meta must contain {META_VERSION:?} and {META_CAPABILITIES:?}"),
        )));
    };
    if header_version != meta_version {
        return Err(mismatch(
            format!(
                "MCP-Protocol-Version header {header_version:?} does not match the body's {meta_version:?}"
            ),
            message,
        ));
    }
    let version = ProtocolVersion::parse(meta_version)
        .filter(|v| v.era() == Era::Stateless)
        .ok_or_else(|| unsupported(meta_version))?;
    let capabilities = params
        .and_then(|p| p.get("_meta"))
        .and_then(|m| m.get(META_CAPABILITIES))
        .cloned();
    let Some(capabilities @ Value::Object(_)) = capabilities else {
        return Err(with_id(Refusal::new(
            StatusCode::BAD_REQUEST,
            error_codes::INVALID_PARAMS,
            "protocol-meta",
            format!("params._meta must contain {META_CAPABILITIES:?} (an object)"),
        )));
    };
    if matches!(message, Message::Request(_)) {
        match single_header(headers, "mcp-method").map_err(|m| mismatch(m, message))? {
            Some(h) if h == method => {}
            Some(h) => {
                return Err(mismatch(
                    format!("Mcp-Method header {h:?} does not match the body's method {method:?}"),
                    message,
                ));
            }
            None => return Err(mismatch("the Mcp-Method header is required", message)),
        }
        let name_key = match method {
            "tools/call" | "prompts/get" => Some("name"),
            "resources/read" => Some("uri"),
            _ => None,
        };
        if let Some(key) = name_key {
            let body_name = params
                .and_then(|p| p.get(key))
                .and_then(Value::as_str)
                .unwrap_or("");
            let raw = single_header(headers, "mcp-name").map_err(|m| mismatch(m, message))?;
            let Some(raw) = raw else {
                return Err(mismatch("the Mcp-Name header is required", message));
            };
            let decoded =
                decode_value(raw).map_err(|m| mismatch(format!("Mcp-Name: {m}"), message))?;
            if decoded != body_name {
                return Err(mismatch(
                    format!("Mcp-Name header does not match the body's params.{key}"),
                    message,
                ));
            }
        }
    }
    Ok((version, capabilities))
}

fn session_for(
    gw: &Gateway,
    headers: &HeaderMap,
    principal: &Principal,
) -> Result<Arc<Session>, Refusal> {
    let id = single_header(headers, SESSION_HEADER)
        .map_err(|m| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                error_codes::INVALID_REQUEST,
                "session",
                m,
            )
        })?
        .ok_or_else(|| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                error_codes::INVALID_REQUEST,
                "session",
                "Mcp-Session-Id header is required (send initialize first)",
            )
        })?;
    gw.sessions.get(id, principal).map_err(|_| {
        Refusal::new(
            StatusCode::NOT_FOUND,
            error_codes::INVALID_REQUEST,
            "session",
            "session not found; send initialize to start a new one",
        )
    })
}

async fn initialize(
    gw: &Arc<Gateway>,
    principal: Principal,
    request: RpcRequest,
) -> Result<Response, Refusal> {
    let version = match crate::pipeline::initialize_version(request.params.as_ref()) {
        Ok(version) => version,
        Err(error) => {
            let id = Some(request.id.as_value().clone());
            return Err(Refusal {
                status: StatusCode::BAD_REQUEST,
                error,
                rule: "initialize",
                id,
                extra: None,
                audit_reason: None,
            });
        }
    };
    let created = gw.sessions.create(principal.clone(), version).map_err(|e| {
        let message = match e {
            NotCreated::TableFull => "the gateway holds as many sessions as it may (gateway.max_sessions); try again later",
            NotCreated::NoRandomness => "no session id could be drawn; try again later",
        };
        Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            error_codes::SERVER_ERROR,
            "sessions-full",
            message,
        )
    })?;
    let session = created.session;
    if let Some(evicted) = created.evicted {
        tracing::info!(
            principal = %principal.user,
            "session evicted: the principal reached gateway.max_sessions_per_principal"
        );
        let gw = gw.clone();
        tokio::spawn(async move { gw.release_subscriptions(&evicted).await });
    }
    let caller = Caller {
        principal,
        transport: "http",
        version,
        session: Some(session.clone()),
        notify: None,
        client_capabilities: None,
        on_hold: None,
        client_ip: None,
    };
    let response = gw.handle(&caller, request).await;
    let mut http = axum::Json(response.to_value()).into_response();
    if let Ok(value) = HeaderValue::from_str(&session.id) {
        http.headers_mut().insert(SESSION_HEADER, value);
    }
    Ok(http)
}

/// Runs a request and answers with JSON, or with SSE when progress was asked for (which takes
/// a stream slot: 429 when the principal has none left). A call that may be held for approval
/// is answered as SSE from the moment it is held ([`json_unless_held`]).
async fn answer(
    gw: &Arc<Gateway>,
    caller: Caller,
    request: RpcRequest,
    accepts_sse: bool,
) -> Result<Response, Refusal> {
    let wants_progress = request
        .params
        .as_ref()
        .and_then(|p| p.get("_meta"))
        .and_then(|m| m.get("progressToken"))
        .is_some();
    if wants_progress && accepts_sse {
        let slot = stream_slot(gw, &caller.principal).map_err(|mut refusal| {
            refusal.id = Some(request.id.as_value().clone());
            refusal
        })?;
        let (tx, rx) = outbox::<Value>();
        let mut caller = caller;
        caller.notify = Some(tx.clone());
        let gw = gw.clone();
        let task = tokio::spawn(async move {
            let response = gw.handle(&caller, request).await;
            let _ = tx.send_always(response.to_value());
        });
        // Dropping the body (the client went away) aborts the request task, which cancels the
        // upstream call (or voids a pending approval), and frees the stream slot.
        return Ok(sse_answer(
            rx,
            slot,
            AbortOnDropHandle::new(task),
            KEEP_ALIVE,
        ));
    }
    if accepts_sse && gw.approvals.decidable() && MAY_BE_HELD.contains(&request.method.as_str()) {
        return Ok(json_unless_held(gw, caller, request).await);
    }
    let version = caller.version;
    Ok(json_answer(gw, version, gw.handle(&caller, request).await))
}

/// Methods whose call a policy may hold for approval.
const MAY_BE_HELD: [&str; 3] = ["tools/call", "prompts/get", "resources/read"];

/// A request's JSON-RPC response as an HTTP answer.
fn json_answer(gw: &Gateway, version: ProtocolVersion, response: RpcResponse) -> Response {
    let error = response.outcome.as_ref().err();
    let mut reply = json_reply(version, response.to_value(), error.map(|e| e.code));
    if let Some(scope) = error.and_then(crate::oauth::insufficient_scope) {
        // Step-up authorization (MCP authorization spec): 403 with the scopes needed.
        *reply.status_mut() = StatusCode::FORBIDDEN;
        reply.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            crate::oauth::challenge(&gw.config, Some("insufficient_scope"), Some(scope)),
        );
    }
    reply
}

/// An SSE answer: what `rx` receives (notifications, then the response), with a keep-alive
/// comment when idle for `keep_alive`. The stream slot and `task` (the request running) are
/// held until the stream ends or is dropped.
fn sse_answer<H: Send + 'static>(
    rx: Inbox<Value>,
    slot: Slot,
    task: H,
    keep_alive: Duration,
) -> Response {
    let stream =
        rx.map(|v| Ok::<_, Infallible>(Event::default().event("message").data(v.to_string())));
    let mut response = hold_until_sent(sse_every(stream, keep_alive), (slot, task));
    response.extensions_mut().insert(AnswerStreams);
    response
}

/// A call that a policy may hold for a person's approval: answered with JSON if it completes
/// without being held. Once held, the answer becomes an SSE stream (keep-alives every
/// `approvals.progress_interval`, then the response): a person may take minutes, longer than
/// clients wait for a response head (the Python SDK's HTTP read timeout is 5 minutes), and a
/// closed connection is noticed at the next keep-alive at the latest, which voids the
/// approval. Without a free stream slot the answer stays JSON.
async fn json_unless_held(gw: &Arc<Gateway>, mut caller: Caller, request: RpcRequest) -> Response {
    let held = Arc::new(tokio::sync::Notify::new());
    caller.on_hold = Some(held.clone());
    let version = caller.version;
    let caller = Arc::new(caller);
    let mut call = {
        let (gw, caller) = (gw.clone(), caller.clone());
        Box::pin(async move { gw.handle(&caller, request).await })
    };
    tokio::select! {
        biased;
        response = &mut call => return json_answer(gw, version, response),
        () = held.notified() => {}
    }
    let Some(slot) = gw.limits.streams.try_acquire(&caller.principal) else {
        return json_answer(gw, version, call.await);
    };
    drop(caller);
    let (tx, rx) = outbox::<Value>();
    let task = tokio::spawn(async move {
        let response = call.await;
        let _ = tx.send_always(response.to_value());
    });
    // Keep-alives as often as progress would come: clients with a short read timeout keep
    // reading, and a client that went away is noticed (and its approval voided) soon.
    let keep_alive = gw.approvals.progress_interval().min(KEEP_ALIVE);
    sse_answer(rx, slot, AbortOnDropHandle::new(task), keep_alive)
}

fn json_reply(version: ProtocolVersion, body: Value, error_code: Option<i64>) -> Response {
    let status = match (version.era(), error_code) {
        (Era::Stateless, Some(error_codes::METHOD_NOT_FOUND)) => StatusCode::NOT_FOUND,
        (
            Era::Stateless,
            Some(
                error_codes::HEADER_MISMATCH
                | error_codes::MISSING_CLIENT_CAPABILITY
                | error_codes::UNSUPPORTED_VERSION,
            ),
        ) => StatusCode::BAD_REQUEST,
        _ => StatusCode::OK,
    };
    (status, axum::Json(body)).into_response()
}

fn sse<S>(stream: S) -> Response
where
    S: futures::Stream<Item = Result<Event, Infallible>> + Send + 'static,
{
    sse_every(stream, KEEP_ALIVE)
}

/// How often an idle SSE stream carries a comment, so proxies and clients see it is alive.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

fn sse_every<S>(stream: S, keep_alive: Duration) -> Response
where
    S: futures::Stream<Item = Result<Event, Infallible>> + Send + 'static,
{
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(keep_alive))
        .into_response();
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// 2026-07-28 `subscriptions/listen`: acknowledge the list-change notifications we can deliver,
/// then stream them, tagged with the subscription id, until the client closes the stream.
fn listen(gw: &Arc<Gateway>, caller: Caller, request: RpcRequest) -> Result<Response, Refusal> {
    let slot = stream_slot(gw, &caller.principal).map_err(|mut refusal| {
        refusal.id = Some(request.id.as_value().clone());
        refusal
    })?;
    let requested = request
        .params
        .as_ref()
        .and_then(|p| p.get("notifications"))
        .cloned()
        .unwrap_or_else(|| json!({}));
    let mut accepted = serde_json::Map::new();
    for key in [
        "toolsListChanged",
        "promptsListChanged",
        "resourcesListChanged",
    ] {
        if requested.get(key) == Some(&Value::Bool(true)) {
            accepted.insert(key.into(), true.into());
        }
    }
    let (tx, rx) = outbox::<Value>();
    let id = request.id.as_value().clone();
    let _ = tx.send(json!({
        "jsonrpc": "2.0",
        "method": "notifications/subscriptions/acknowledged",
        "params": { "notifications": accepted, "_meta": { "io.modelcontextprotocol/subscriptionId": id } },
    }));
    let registration = gw.routes.add_listener(tx, accepted, id);
    gw.audit_allowed(&caller, &request.method);
    let stream =
        rx.map(|v| Ok::<_, Infallible>(Event::default().event("message").data(v.to_string())));
    Ok(hold_until_sent(sse(stream), (slot, registration)))
}

fn get_stream(
    gw: &Gateway,
    principal: &Principal,
    headers: &HeaderMap,
) -> Result<Response, Refusal> {
    if single_header(headers, VERSION_HEADER)
        .ok()
        .flatten()
        .and_then(ProtocolVersion::parse)
        .is_some_and(|v| v.era() == Era::Stateless)
    {
        return Err(Refusal::new(
            StatusCode::METHOD_NOT_ALLOWED,
            error_codes::INVALID_REQUEST,
            "http-method",
            "2026-07-28 has no GET stream; use subscriptions/listen",
        ));
    }
    let session = session_for(gw, headers, principal)?;
    let rx = session
        .open_http_stream(|| gw.limits.streams.try_acquire(principal))
        .map_err(|refused| match refused {
            StreamRefused::Limit => stream_limit(gw),
            StreamRefused::SessionGone => Refusal::new(
                StatusCode::NOT_FOUND,
                error_codes::INVALID_REQUEST,
                "session",
                "session not found; send initialize to start a new one",
            ),
        })?;
    let caller = Caller {
        principal: principal.clone(),
        transport: "http",
        version: session.version(),
        session: Some(session),
        notify: None,
        client_capabilities: None,
        on_hold: None,
        client_ip: None,
    };
    gw.audit_allowed(&caller, "GET /mcp (notification stream)");
    let stream =
        rx.map(|v| Ok::<_, Infallible>(Event::default().event("message").data(v.to_string())));
    Ok(sse(stream))
}

async fn delete(
    gw: &Gateway,
    principal: &Principal,
    headers: &HeaderMap,
) -> Result<Response, Refusal> {
    let session = session_for(gw, headers, principal)?;
    let caller = Caller {
        principal: principal.clone(),
        transport: "http",
        version: session.version(),
        session: Some(session.clone()),
        notify: None,
        client_capabilities: None,
        on_hold: None,
        client_ip: None,
    };
    if let Some(session) = gw.sessions.remove(&session.id, principal) {
        gw.release_subscriptions(&session).await;
    }
    gw.audit_allowed(&caller, "DELETE /mcp (end session)");
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types() {
        for ok in [
            "application/json",
            "Application/JSON",
            " application/json ",
            "application/json; charset=utf-8",
            "application/json;charset=\"UTF-8\"",
        ] {
            assert!(is_json_media_type(ok), "{ok}");
        }
        for bad in [
            "application/jsonx",
            "application/json-seq",
            "application/json; charset=UTF-16",
            "application/json; charset=utf-8; x=y",
            "application/json;",
            "application/json; boundary=x",
            "text/json",
            "application / json",
            "",
        ] {
            assert!(!is_json_media_type(bad), "{bad}");
        }
    }
}
