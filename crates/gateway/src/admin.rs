//! The admin API: where approvers list, review and decide held calls (docs/approvals.md).
//!
//! It has a listener of its own (`[admin] addr`, loopback unless `allow_non_loopback`) and
//! credentials of its own: only `[[admin.tokens]]` authenticate here, and they never
//! authenticate on `/mcp` (nor do `/mcp` credentials here). Every request, in order:
//! 1. `Host` must be a loopback name when bound to loopback (400/403, DNS rebinding); a request
//!    with an `Origin` header is refused (403): no web page may drive the admin API; no query
//!    string (400): the token goes only in the `Authorization` header;
//! 2. `Authorization: Bearer <admin token>` (401 with `WWW-Authenticate`);
//! 3. the `approver` role (403);
//! 4. the route:
//!    - `GET /v1/approvals`: the pending calls (no arguments);
//!    - `GET /v1/approvals/{id}`: one, with its full arguments and their `arguments_sha256`;
//!    - `POST /v1/approvals/{id}/approve` and `…/deny`, body
//!      `{"reason": "…", "arguments_sha256": "…"}` (the hash is required to approve).
//!
//! Answers are JSON; errors are `{"error": {"code": "…", "message": "…"}}` with a fitting
//! status. Every request, allowed or refused, is audited: one record, transport `admin`.
//!
//! Bounds: [`MAX_CONNECTIONS`] connections, request heads within [`HEADER_TIMEOUT`] and at
//! most 16 KiB, bodies at most [`MAX_BODY_BYTES`] within [`HEADER_TIMEOUT`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use micromcp_audit::{ApprovalNote, ApprovalOutcome, AuditRecord, Decision};
use micromcp_auth::{ApiTokens, Authenticator, Credentials, Principal};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::Gateway;
use crate::approvals::{APPROVER_ROLE, DecideError, Settled, clean_reason};
use crate::authority::Host;

/// Open admin connections at once; more wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 64;
/// Time for a request's head, and then for its body.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request body (a reason and a hash).
pub const MAX_BODY_BYTES: usize = 16 * 1024;
const MAX_HEAD_BYTES: usize = 16 * 1024;

struct Admin {
    gateway: Arc<Gateway>,
    tokens: ApiTokens,
    addr: SocketAddr,
}

/// Serves the admin API on `listener` until `shutdown` resolves; `tokens` are the
/// `[[admin.tokens]]` (the only credentials it accepts).
pub async fn serve(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    tokens: ApiTokens,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let admin = Arc::new(Admin {
        gateway,
        tokens,
        addr: listener.local_addr()?,
    });
    let router = Router::new().fallback(handle).with_state(admin);
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_header_size(MAX_HEAD_BYTES);
    let http1 = Arc::new(http1);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return Ok(());
        };
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    tracing::debug!("admin listener: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            () = &mut shutdown => return Ok(()),
        };
        let _ = tcp.set_nodelay(true);
        let (http1, router) = (http1.clone(), router.clone());
        tokio::spawn(async move {
            let service = TowerToHyperService::new(router);
            if let Err(e) = http1.serve_connection(TokioIo::new(tcp), service).await {
                tracing::debug!("admin connection ended: {e}");
            }
            drop(slot);
        });
    }
}

/// A refusal: status, a stable code for programs, a message for people, the audit rule.
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    rule: &'static str,
}

impl ApiError {
    fn new(
        status: StatusCode,
        code: &'static str,
        rule: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            rule,
        }
    }
}

/// One admin request: checks, route, one audit record.
async fn handle(State(admin): State<Arc<Admin>>, request: Request) -> Response {
    let started = Instant::now();
    let gateway = &admin.gateway;
    let mut record = AuditRecord {
        request_id: gateway.next_request_id(),
        transport: "admin",
        method: Some(format!(
            "{} {}",
            request.method(),
            request.uri().path().chars().take(200).collect::<String>()
        )),
        ..Default::default()
    };
    let (parts, body) = request.into_parts();
    let outcome = serve_request(&admin, &parts, body, &mut record).await;
    let (status, body) = match outcome {
        Ok((status, body)) => {
            record.decision = Some(Decision::Allow);
            (status, body)
        }
        Err(e) => {
            record.decision = Some(Decision::Deny);
            record.rule = Some(e.rule.into());
            record.reason = Some(e.message.clone());
            if let Some(note) = &mut record.approval
                && note.outcome.is_none()
            {
                note.outcome = Some(ApprovalOutcome::Refused);
            }
            (
                e.status,
                json!({ "error": { "code": e.code, "message": e.message } }),
            )
        }
    };
    record.status = status.as_u16().to_string();
    record.http_status = Some(status.as_u16());
    record.latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    gateway.audit.record(record);
    let mut response = (status, axum::Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"micromcp-admin\""),
        );
    }
    response
}

async fn serve_request(
    admin: &Admin,
    request: &Parts,
    body: Body,
    record: &mut AuditRecord,
) -> Result<(StatusCode, Value), ApiError> {
    check_transport(admin, request)?;
    let principal = authenticate(admin, &request.headers).await?;
    crate::pipeline::set_principal(record, &principal);
    if !principal.roles.iter().any(|r| r == APPROVER_ROLE) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "not_an_approver",
            "approver-role",
            format!(
                "{} does not hold the {APPROVER_ROLE:?} admin role",
                principal.user
            ),
        ));
    }
    let path = request.uri.path();
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let approvals = &admin.gateway.approvals;
    match (&request.method, segments.as_slice()) {
        (&Method::GET, ["v1", "approvals"]) => {
            record.method = Some("approvals/list".into());
            Ok((StatusCode::OK, json!({ "approvals": approvals.list() })))
        }
        (&Method::GET, ["v1", "approvals", id]) => {
            record.method = Some("approvals/show".into());
            note(record, id);
            let call = approvals.get(id).map_err(|e| refusal(&e, false))?;
            record.target = Some(call.tool.clone());
            Ok((StatusCode::OK, call.to_json(true)))
        }
        (&Method::POST, ["v1", "approvals", id, verb @ ("approve" | "deny")]) => {
            let approve = *verb == "approve";
            record.method = Some(format!("approvals/{verb}"));
            note(record, id);
            if let Ok(call) = approvals.get(id) {
                record.target = Some(call.tool);
            }
            let body = read_body(&request.headers, body).await?;
            let (reason, hash) = decision_body(&body)?;
            if let Some(n) = &mut record.approval {
                n.reason.clone_from(&reason);
            }
            let call = approvals
                .decide(id, &principal, approve, reason.clone(), hash.as_deref())
                .map_err(|e| refusal(&e, true))?;
            let outcome = if approve { "approved" } else { "denied" };
            if let Some(n) = &mut record.approval {
                n.outcome = Some(if approve {
                    ApprovalOutcome::Approved
                } else {
                    ApprovalOutcome::Denied
                });
                n.approver = Some(principal.user.clone());
            }
            Ok((
                StatusCode::OK,
                json!({
                    "id": call.id,
                    "outcome": outcome,
                    "approver": principal.user,
                    "reason": reason,
                    "tool": call.tool,
                    "requester": call.to_json(false)["requester"],
                    "arguments_sha256": call.arguments_sha256,
                }),
            ))
        }
        (_, ["v1", "approvals", ..]) => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "route",
            "use GET /v1/approvals, GET /v1/approvals/{id}, POST /v1/approvals/{id}/approve or …/deny",
        )),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "route",
            "not found; the admin API has /v1/approvals",
        )),
    }
}

/// The approval a record is about (the id as given, bounded).
fn note(record: &mut AuditRecord, id: &str) {
    record.approval = Some(ApprovalNote {
        id: id.chars().take(64).collect(),
        outcome: None,
        approver: None,
        reason: None,
    });
}

fn check_transport(admin: &Admin, request: &Parts) -> Result<(), ApiError> {
    let headers = &request.headers;
    let bad_host = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_host",
            "host",
            "exactly one valid Host header is required",
        )
    };
    let mut hosts = headers.get_all(header::HOST).iter();
    let (Some(authority), None) = (hosts.next(), hosts.next()) else {
        return Err(bad_host());
    };
    let authority = authority.to_str().map_err(|_| bad_host())?;
    let host = Host::parse(authority).ok_or_else(bad_host)?;
    if admin.addr.ip().is_loopback() && !host.is_allowed(authority, admin.addr, &[]) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "bad_host",
            "host",
            "the admin API answers only to loopback names (localhost, 127.0.0.1, [::1])",
        ));
    }
    if headers.contains_key(header::ORIGIN) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "browser_request",
            "origin",
            "the admin API does not accept requests from web pages (an Origin header was sent)",
        ));
    }
    if request.uri.query().is_some() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "query_string",
            "query-string",
            "query parameters are not accepted; send the token only in the Authorization header",
        ));
    }
    Ok(())
}

async fn authenticate(admin: &Admin, headers: &HeaderMap) -> Result<Principal, ApiError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "auth",
            "more than one Authorization header",
        ));
    }
    admin
        .tokens
        .authenticate(Credentials::bearer(first.map(HeaderValue::as_bytes)))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "admin-auth",
                format!(
                    "unauthorized: {} (the admin API takes only [[admin.tokens]] tokens)",
                    e.public_message()
                ),
            )
        })
}

async fn read_body(headers: &HeaderMap, body: Body) -> Result<Vec<u8>, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        });
    let bytes = tokio::time::timeout(HEADER_TIMEOUT, axum::body::to_bytes(body, MAX_BODY_BYTES))
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                "body",
                "the request body did not arrive in time",
            )
        })?
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "body",
                format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
            )
        })?;
    if !bytes.is_empty() && content_type.as_deref() != Some("application/json") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content_type",
            "body",
            "the body must be application/json",
        ));
    }
    Ok(bytes.to_vec())
}

/// `{"reason": "…", "arguments_sha256": "…"}`, both optional; nothing else.
fn decision_body(body: &[u8]) -> Result<(Option<String>, Option<String>), ApiError> {
    let bad =
        |message: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", "body", message);
    if body.is_empty() {
        return Ok((None, None));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| bad(format!("the body is not valid JSON: {e}")))?;
    let Value::Object(fields) = value else {
        return Err(bad("the body must be a JSON object".into()));
    };
    let mut reason = None;
    let mut hash = None;
    for (key, value) in &fields {
        let text = value.as_str();
        match (key.as_str(), text) {
            ("reason", Some(r)) => reason = clean_reason(Some(r)).map_err(bad)?,
            ("reason", None) if value.is_null() => {}
            ("arguments_sha256", Some(h)) => {
                if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(bad("arguments_sha256 must be 64 hex digits".into()));
                }
                hash = Some(h.to_ascii_lowercase());
            }
            ("reason" | "arguments_sha256", _) => {
                return Err(bad(format!("{key} must be a string")));
            }
            (other, _) => {
                let shown: String = other.chars().take(64).collect();
                return Err(bad(format!(
                    "unknown field {shown:?}: the body has reason and arguments_sha256"
                )));
            }
        }
    }
    Ok((reason, hash))
}

/// How a refused lookup or decision is answered and audited. `deciding`: a POST (a decided
/// approval is then a conflict: a replay), else a GET (it is gone).
fn refusal(e: &DecideError, deciding: bool) -> ApiError {
    let message = e.to_string();
    let (status, code, rule) = match e {
        DecideError::NotApprover => (StatusCode::FORBIDDEN, "not_an_approver", "approver-role"),
        DecideError::Unknown(_) => (
            StatusCode::NOT_FOUND,
            "unknown_approval",
            "unknown-approval",
        ),
        DecideError::Settled { settled, .. } => match settled {
            Settled::Approved { .. } | Settled::Denied { .. } if deciding => {
                (StatusCode::CONFLICT, "already_decided", "replay")
            }
            Settled::Approved { .. } | Settled::Denied { .. } => {
                (StatusCode::GONE, "already_decided", "already-decided")
            }
            Settled::Expired => (StatusCode::GONE, "expired", "expired"),
            Settled::Voided => (StatusCode::GONE, "withdrawn", "withdrawn"),
        },
        DecideError::SelfApproval { .. } => {
            (StatusCode::FORBIDDEN, "self_approval", "self-approval")
        }
        DecideError::MissingHash(_) => (
            StatusCode::BAD_REQUEST,
            "arguments_sha256_required",
            "arguments-unconfirmed",
        ),
        DecideError::ArgumentsMismatch { .. } => (
            StatusCode::CONFLICT,
            "arguments_mismatch",
            "arguments-mismatch",
        ),
    };
    ApiError::new(status, code, rule, message)
}
