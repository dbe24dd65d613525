//! The request path, in the order of PRODUCT.md.
//!
//! The transports ([`crate::http`], [`crate::stdio`]) have already done the transport checks
//! (Host/Origin, size, nesting, protocol headers, era) and authenticated the caller when they
//! call [`Gateway::handle`]. From there, one request goes:
//!
//! 1. route: the public name (`<service>.<tool>`, `<service>+<uri>`) picks a service;
//!    unknown names and denied names get the same answer, so names cannot be probed;
//! 2. validate input: params must have the shape the method needs; a tool call's arguments are
//!    typed by the tool's `inputSchema` from the live catalog ([`crate::catalog`]) — parsed
//!    once, the same object is forwarded — and refused if they do not fit;
//! 3. authorize: the [`micromcp_policy::Authorizer`] (Cedar, docs/policy.md) decides on the
//!    caller, the target and the arguments; default deny, forbid wins, errors deny; the
//!    decision names the policies that made it;
//! 4. approval hold: a permit that asks for a person's approval waits for one
//!    ([`crate::approvals`]); denied, expired or abandoned, the call never reaches the service;
//! 5. forward: with the gateway's own request id, a timeout, and only the `_meta` the gateway
//!    vouches for (a rewritten progress token, the 2026 client capabilities); identity claims a
//!    client puts in `_meta` are dropped, and the service learns the caller only from the
//!    gateway ([`crate::vouch`]: a JWT it signs, or a signed identity bound to the request);
//! 6. protect output: upstream URIs in results become public ones ([`crate::output`]),
//!    upstream errors are scrubbed, results shaped for the client's era;
//! 7. audit: exactly one record, whatever happened.
//!
//! Still to come in this path (later issues): kill switch, JSON Schema input validation,
//! rate limits and quotas (between authorize and the approval hold), secret redaction.

use std::sync::Arc;
use std::time::Instant;

use micromcp_audit::{AuditRecord, Decision};
use micromcp_auth::Principal;
use micromcp_policy::{
    Action, Authorizer, Decision as PolicyDecision, Kind, Refused, RequestContext,
};
use micromcp_protocol::era::supported_versions;
use micromcp_protocol::{
    Era, ErrorObject, Notification, ProtocolVersion, Request, RequestId, Response, error_codes,
};
use micromcp_upstream::{UpstreamError, scrub_error};
use serde_json::{Map, Value, json};

use crate::federation::ListKind;
use crate::session::{Session, lock};
use crate::{Gateway, ServiceHandle, normalize};

/// Who is asking, and how to reach them.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    pub transport: &'static str,
    pub version: ProtocolVersion,
    /// The client's session (session era over HTTP, and the stdio client).
    pub session: Option<Arc<Session>>,
    /// Where notifications tied to this request (progress) go, if the client can receive them.
    pub notify: Option<crate::outbox::Outbox<Value>>,
    /// 2026-07-28: the capabilities the client declared on this request.
    pub client_capabilities: Option<Value>,
    /// Told when the request starts waiting for an approval (the HTTP transport then turns
    /// a JSON answer into a stream, which keeps the client reading while a person decides).
    pub on_hold: Option<Arc<tokio::sync::Notify>>,
    /// The client's address (HTTP), for policies.
    pub client_ip: Option<std::net::IpAddr>,
}

impl Caller {
    /// What policies know about this request besides the caller and the target.
    pub fn policy_context<'a>(&'a self, session: Option<&'a str>) -> RequestContext<'a> {
        RequestContext {
            transport: self.transport,
            protocol_version: self.version.as_str(),
            client_ip: self.client_ip,
            session,
            now: std::time::SystemTime::now(),
        }
    }
}

/// Why a request did not succeed, tagged with where the failure came from.
#[derive(Debug)]
pub enum Failure {
    /// The request is wrong (bad params, unknown method).
    Client(Box<ErrorObject>),
    /// Policy refused it.
    Denied(Box<ErrorObject>),
    /// The service failed, timed out or is unavailable.
    Upstream(UpstreamError),
    /// The client cancelled it.
    Cancelled,
}

impl Failure {
    pub fn client(error: ErrorObject) -> Self {
        Failure::Client(Box::new(error))
    }

    pub fn invalid_params(message: impl Into<String>) -> Self {
        Failure::client(ErrorObject::new(error_codes::INVALID_PARAMS, message))
    }

    fn error(&self) -> ErrorObject {
        match self {
            Failure::Client(e) | Failure::Denied(e) => (**e).clone(),
            Failure::Upstream(UpstreamError::Rpc { error, .. }) => scrub_error((**error).clone()),
            Failure::Upstream(e) => ErrorObject::new(error_codes::SERVER_ERROR, e.to_string()),
            Failure::Cancelled => ErrorObject::new(error_codes::SERVER_ERROR, "request cancelled"),
        }
    }
}

/// Who the record is about: the principal and how it authenticated (never the credential).
pub(crate) fn set_principal(record: &mut AuditRecord, p: &Principal) {
    record.principal = Some(p.user.clone());
    record.agent.clone_from(&p.agent);
    record.tenant.clone_from(&p.tenant);
    record.auth_method = Some(p.method.as_str());
    record.issuer.clone_from(&p.issuer);
    record.token_id.clone_from(&p.token_id);
}

fn not_available(kind: Kind, public: &str) -> ErrorObject {
    let shown: String = public.chars().take(200).collect();
    if kind == Kind::Resource {
        // SEP-2164: say which resource was not found (the client sent it; nothing leaks).
        let mut error = ErrorObject::new(
            error_codes::RESOURCE_NOT_FOUND,
            format!("unknown resource or not permitted: {shown:?}"),
        );
        error.data = Some(json!({ "uri": shown }));
        return error;
    }
    ErrorObject::new(
        error_codes::INVALID_PARAMS,
        format!("unknown {} or not permitted: {shown:?}", kind.as_str()),
    )
}

impl Gateway {
    /// Runs one JSON-RPC request through the request path and audits it.
    pub async fn handle(&self, caller: &Caller, mut request: Request) -> Response {
        let started = Instant::now();
        let mut record = self.audit_record(caller, Some(&request.method));
        record.jsonrpc_id = Some(request.id.as_value().clone());
        // If this future is dropped (client gone, shutdown), the guard still writes the record.
        let mut guard = AuditOnDrop {
            gateway: self,
            record: Some(record),
            started,
        };
        let record = guard.record.as_mut().expect("set above");
        let outcome = self
            .dispatch(caller, &mut request, record)
            .await
            .and_then(|result| {
                normalize::result_for_client(caller.version, &request.method, result)
                    .map_err(Failure::client)
            });
        let response = match outcome {
            Ok(result) => {
                record.decision = Some(Decision::Allow);
                record.status = result_status(&result).into();
                Response::ok(request.id, result)
            }
            Err(failure) => {
                let error = normalize::error_for_client(caller.version, failure.error());
                record.decision = Some(match failure {
                    Failure::Denied(_) => Decision::Deny,
                    _ => Decision::Error,
                });
                record.reason = Some(match &failure {
                    Failure::Upstream(e) => e.to_string(),
                    _ => error.message.clone(),
                });
                record.status = error.code.to_string();
                Response::err(request.id, error)
            }
        };
        if let Some(mut record) = guard.record.take() {
            record.latency_us = micros(started);
            self.audit.record(record);
        }
        response
    }

    /// Handles a notification from a client, and audits it.
    pub fn handle_notification(&self, caller: &Caller, notification: &Notification) {
        let started = Instant::now();
        let mut record = self.audit_record(caller, Some(&notification.method));
        if notification.method == "notifications/cancelled" {
            let id = notification
                .params
                .as_ref()
                .and_then(|p| p.get("requestId"))
                .and_then(|v| RequestId::from_value(v).ok());
            let cancelled = match (id, &caller.session) {
                (Some(id), Some(session)) => session.cancel(&id),
                _ => false,
            };
            record.reason = Some(if cancelled {
                "cancelled".into()
            } else {
                "no such request in flight".into()
            });
        }
        record.decision = Some(Decision::Allow);
        record.status = "ok".into();
        record.latency_us = micros(started);
        self.audit.record(record);
    }

    /// Records an allowed request that is not a JSON-RPC request (a stream opened, a session ended).
    pub fn audit_allowed(&self, caller: &Caller, what: &str) {
        let mut record = self.audit_record(caller, Some(what));
        record.decision = Some(Decision::Allow);
        record.status = "ok".into();
        self.audit.record(record);
    }

    /// Records a request refused before it reached the request path (bad transport, no auth…).
    #[allow(clippy::too_many_arguments)]
    pub fn audit_rejection(
        &self,
        transport: &'static str,
        principal: Option<&Principal>,
        method: Option<&str>,
        http_status: Option<u16>,
        rule: &str,
        reason: &str,
        started: Instant,
    ) {
        let mut record = AuditRecord {
            request_id: self.next_request_id(),
            transport,
            method: method.map(|m| m.chars().take(128).collect()),
            decision: Some(Decision::Deny),
            rule: Some(rule.into()),
            reason: Some(reason.into()),
            status: http_status.map_or_else(|| "rejected".into(), |s| s.to_string()),
            http_status,
            latency_us: micros(started),
            ..Default::default()
        };
        if let Some(p) = principal {
            set_principal(&mut record, p);
        }
        self.audit.record(record);
    }

    fn audit_record(&self, caller: &Caller, method: Option<&str>) -> AuditRecord {
        let mut record = AuditRecord {
            request_id: self.next_request_id(),
            transport: caller.transport,
            protocol_version: Some(caller.version.to_string()),
            session: caller
                .session
                .as_ref()
                .filter(|s| !s.id.is_empty())
                .map(|s| self.audit.session_label(&s.id)),
            method: method.map(str::to_owned),
            ..Default::default()
        };
        set_principal(&mut record, &caller.principal);
        record
    }

    async fn dispatch(
        &self,
        caller: &Caller,
        request: &mut Request,
        record: &mut AuditRecord,
    ) -> Result<Value, Failure> {
        let params = request.params.as_ref();
        let method = request.method.as_str();
        if caller.version.era() == Era::Stateless && REMOVED_IN_2026.contains(&method) {
            return Err(Failure::client(ErrorObject::new(
                error_codes::METHOD_NOT_FOUND,
                format!(
                    "method not found: {method:?} does not exist in protocol version {}",
                    caller.version
                ),
            )));
        }
        // Merged across services.
        if let Some(list) = ListKind::for_method(method) {
            return self.list(caller, list, params).await;
        }
        match method {
            // Answered by the gateway itself.
            "ping" => Ok(json!({})),
            "logging/setLevel" => {
                let level = params.and_then(|p| p.get("level")).and_then(Value::as_str);
                match level {
                    Some(l) if LOG_LEVELS.contains(&l) => Ok(json!({})),
                    _ => Err(Failure::invalid_params(format!(
                        "params.level must be one of {}",
                        LOG_LEVELS.join(", ")
                    ))),
                }
            }
            "initialize" => Ok(self.initialize_result(caller.version)),
            "server/discover" => Ok(self.discover_result()),
            // Routed to one service.
            "tools/call" => self.forward(caller, request, Kind::Tool, record).await,
            "prompts/get" => self.forward(caller, request, Kind::Prompt, record).await,
            "resources/read" => self.forward(caller, request, Kind::Resource, record).await,
            "resources/subscribe" | "resources/unsubscribe" => {
                self.subscription(caller, request, record).await
            }
            "completion/complete" => self.complete(caller, request, record).await,
            _ => Err(Failure::client(ErrorObject::new(
                error_codes::METHOD_NOT_FOUND,
                format!(
                    "method not found: {:?}",
                    method.chars().take(128).collect::<String>()
                ),
            ))),
        }
    }

    /// Route, validate, authorize and forward a request that names one tool, prompt or resource.
    async fn forward(
        &self,
        caller: &Caller,
        request: &mut Request,
        kind: Kind,
        record: &mut AuditRecord,
    ) -> Result<Value, Failure> {
        let params = object_params(request)?;
        let key = if kind == Kind::Resource {
            "uri"
        } else {
            "name"
        };
        let public = params
            .get(key)
            .and_then(Value::as_str)
            .ok_or_else(|| Failure::invalid_params(format!("params.{key} must be a string")))?;
        let arguments = match params.get("arguments") {
            Some(_) if kind == Kind::Resource => None,
            None => None,
            Some(Value::Object(arguments)) => {
                record.arguments = Some(self.audit.digest(arguments));
                Some(arguments)
            }
            Some(_) => {
                return Err(Failure::invalid_params(
                    "params.arguments must be an object",
                ));
            }
        };
        // The arguments the policy sees are these, parsed once; they are forwarded unchanged.
        let (service, upstream_id, permit) = self
            .authorized_target(caller, kind, public, arguments, record)
            .await?;
        // Approval hold: a permit that asks for a person's approval waits for one here;
        // nothing reaches the service unless it is approved, with these very arguments.
        if permit.obligations.approval {
            let hold = self.approvals.hold(
                caller,
                &request.method,
                public,
                params,
                &permit.policies,
                record,
            );
            unless_cancelled(caller, &request.id, hold).await?;
        }
        let upstream_id = Value::from(upstream_id);
        // The params go upstream as they are, but for the name: moved, not copied.
        let Some(Value::Object(mut upstream_params)) = request.params.take() else {
            return Err(Failure::invalid_params("params must be an object"));
        };
        upstream_params.insert(key.into(), upstream_id);
        let result = self
            .send(
                caller,
                &request.id,
                service,
                &request.method,
                upstream_params,
            )
            .await?;
        // Protect output: the result names resources as the service knows them; clients get
        // the public names, which route back through the gateway.
        Ok(self.publish_result(service, &request.method, result))
    }

    /// Route and authorize a public name or URI (with a tool call's arguments); records
    /// target, service and the policies that decided. Returns the permit, whose obligations
    /// the later stages follow.
    async fn authorized_target<'p>(
        &self,
        caller: &Caller,
        kind: Kind,
        public: &'p str,
        arguments: Option<&Map<String, Value>>,
        record: &mut AuditRecord,
    ) -> Result<(&ServiceHandle, &'p str, PolicyDecision), Failure> {
        record.target = Some(public.chars().take(512).collect());
        let route = if kind == Kind::Resource {
            self.route_uri(public)
        } else {
            self.route_name(public)
        };
        let Some((service, upstream_id)) = route else {
            record.rule = Some("no-route".into());
            return Err(Failure::client(not_available(kind, public)));
        };
        record.service = Some(service.name.clone());
        let action = Action {
            kind,
            service: &service.name,
            name: upstream_id,
            arguments,
        };
        let context = caller.policy_context(record.session.as_deref());
        let mut outcome = self.authz.authorize(&caller.principal, action, &context);
        if outcome == Err(Refused::NotInCatalog) {
            match self
                .refresh_catalog_on_miss(service, &caller.principal)
                .await
            {
                Ok(()) => outcome = self.authz.authorize(&caller.principal, action, &context),
                // The service cannot be asked: say so to a caller who may use the tool;
                // to anyone else it stays unknown.
                Err(e) => {
                    if self
                        .authz
                        .may_list(&caller.principal, action, None, &context)
                    {
                        record.rule = Some("not-in-catalog".into());
                        return Err(Failure::Upstream(e));
                    }
                }
            }
        }
        let decision = match outcome {
            Ok(decision) => decision,
            Err(Refused::NotInCatalog) => {
                record.rule = Some("not-in-catalog".into());
                return Err(Failure::client(not_available(kind, public)));
            }
            Err(Refused::Arguments(e)) => {
                record.rule = Some("arguments".into());
                // What is wrong with the arguments (a missing required one, an undeclared
                // one, a type) describes the tool: only a caller who could call it with
                // some arguments is told. To anyone else it is as unknown as a tool that
                // does not exist, or names and schemas could be probed through errors.
                let listed = Action {
                    arguments: None,
                    ..action
                };
                if !self
                    .authz
                    .may_list(&caller.principal, listed, None, &context)
                {
                    return Err(Failure::Denied(Box::new(not_available(kind, public))));
                }
                return Err(Failure::invalid_params(e.to_string()));
            }
        };
        record.rule = Some(decision.rule.clone());
        if !decision.errors.is_empty() {
            tracing::error!(target: "micromcp::policy", "policy evaluation failed, the request is denied: {}", decision.errors.join("; "));
        }
        if !decision.allowed {
            // Granted but for a scope: say which (step-up); otherwise unknown and denied look alike.
            let error = match &decision.missing_scopes {
                Some(scopes) => crate::oauth::insufficient_scope_error(scopes),
                None => not_available(kind, public),
            };
            return Err(Failure::Denied(Box::new(error)));
        }
        Ok((service, upstream_id, decision))
    }

    /// Sends a request upstream with the gateway's `_meta`, a timeout and client cancellation.
    async fn send(
        &self,
        caller: &Caller,
        client_id: &RequestId,
        service: &ServiceHandle,
        method: &str,
        mut params: Map<String, Value>,
    ) -> Result<Value, Failure> {
        let client_meta = params.remove("_meta");
        let mut meta = Map::new();
        let mut _progress = None;
        if let (Some(token), Some(sink)) = (
            client_meta.as_ref().and_then(|m| m.get("progressToken")),
            &caller.notify,
        ) {
            let (gateway_token, guard) = self.routes.register_progress(sink.clone(), token.clone());
            meta.insert("progressToken".into(), gateway_token.into());
            _progress = Some(guard);
        }
        if let Some(capabilities) = &caller.client_capabilities {
            meta.insert(
                "io.modelcontextprotocol/clientCapabilities".into(),
                capabilities.clone(),
            );
        }
        if !meta.is_empty() {
            params.insert("_meta".into(), Value::Object(meta));
        }
        let call = tokio::time::timeout(service.timeout, async {
            service
                .upstream
                .wait_started(crate::federation::STARTUP_WAIT)
                .await;
            self.request_for(
                service,
                &caller.principal,
                method,
                Some(Value::Object(params)),
            )
            .await
        });
        let call = async {
            match call.await {
                Ok(Ok(result)) => Ok(result),
                Ok(Err(e)) => Err(Failure::Upstream(e)),
                Err(_) => Err(Failure::Upstream(UpstreamError::Timeout {
                    service: service.name.clone(),
                    timeout: service.timeout,
                })),
            }
        };
        unless_cancelled(caller, client_id, call).await
    }

    async fn subscription(
        &self,
        caller: &Caller,
        request: &Request,
        record: &mut AuditRecord,
    ) -> Result<Value, Failure> {
        let subscribe = request.method == "resources/subscribe";
        let params = object_params(request)?;
        let public = params
            .get("uri")
            .and_then(Value::as_str)
            .ok_or_else(|| Failure::invalid_params("params.uri must be a string"))?;
        let session = caller
            .session
            .as_ref()
            .ok_or_else(|| Failure::invalid_params("subscriptions need a session"))?;
        // A subscription reads nothing (each read is authorized, and held if need be, itself).
        let (service, uri, _) = self
            .authorized_target(caller, Kind::Resource, public, None, record)
            .await?;
        if service.upstream.is_stateless() {
            return Err(Failure::client(ErrorObject::new(
                error_codes::METHOD_NOT_FOUND,
                format!(
                    "service {:?} speaks protocol version 2026-07-28, which has no per-resource subscriptions",
                    service.name
                ),
            )));
        }
        let changed = {
            let mut subscriptions = lock(&session.subscriptions);
            if !subscribe {
                subscriptions.remove(public)
            } else if session.is_closed() {
                // Its subscriptions were (or are being) released; one added now never would be.
                return Err(Failure::client(ErrorObject::new(
                    error_codes::INVALID_REQUEST,
                    "the session has ended; send initialize to start a new one",
                )));
            } else if subscriptions.len() >= MAX_SUBSCRIPTIONS_PER_SESSION
                && !subscriptions.contains(public)
            {
                return Err(Failure::invalid_params(format!(
                    "at most {MAX_SUBSCRIPTIONS_PER_SESSION} resource subscriptions per session; unsubscribe from one first"
                )));
            } else {
                subscriptions.insert(public.to_owned())
            }
        };
        if changed
            && let Err(e) = self
                .update_upstream_subscription(service, uri, subscribe)
                .await
        {
            if subscribe {
                lock(&session.subscriptions).remove(public);
            }
            return Err(e);
        }
        Ok(json!({}))
    }

    /// Counts subscribers per upstream resource; the upstream is subscribed on the first and
    /// unsubscribed after the last, so one client's unsubscribe never ends another's.
    async fn update_upstream_subscription(
        &self,
        service: &ServiceHandle,
        uri: &str,
        subscribe: bool,
    ) -> Result<(), Failure> {
        let key = (service.name.clone(), uri.to_owned());
        let send = {
            let mut counts = lock(&self.routes.subscribers);
            let count = counts.entry(key.clone()).or_insert(0);
            if subscribe {
                *count += 1;
                *count == 1
            } else {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    counts.remove(&key);
                    true
                } else {
                    false
                }
            }
        };
        if !send {
            return Ok(());
        }
        let method = if subscribe {
            "resources/subscribe"
        } else {
            "resources/unsubscribe"
        };
        let call = tokio::time::timeout(
            service.timeout,
            service
                .upstream
                .request(method, Some(json!({ "uri": uri }))),
        );
        match call.await {
            Ok(Ok(_)) => Ok(()),
            failed => {
                if subscribe {
                    let mut counts = lock(&self.routes.subscribers);
                    if let Some(c) = counts.get_mut(&key) {
                        *c = c.saturating_sub(1);
                    }
                }
                Err(match failed {
                    Ok(Err(e)) => Failure::Upstream(e),
                    _ => Failure::Upstream(UpstreamError::Timeout {
                        service: service.name.clone(),
                        timeout: service.timeout,
                    }),
                })
            }
        }
    }

    /// Ends a client's subscriptions (its session closed or expired).
    pub async fn release_subscriptions(&self, session: &Session) {
        let uris: Vec<String> = lock(&session.subscriptions).drain().collect();
        for public in uris {
            if let Some((service, uri)) = self.route_uri(&public) {
                let _ = self.update_upstream_subscription(service, uri, false).await;
            }
        }
    }

    async fn complete(
        &self,
        caller: &Caller,
        request: &Request,
        record: &mut AuditRecord,
    ) -> Result<Value, Failure> {
        let params = object_params(request)?;
        let reference = params
            .get("ref")
            .and_then(Value::as_object)
            .ok_or_else(|| Failure::invalid_params("params.ref must be an object"))?;
        let (kind, key) = match reference.get("type").and_then(Value::as_str) {
            Some("ref/prompt") => (Kind::Prompt, "name"),
            Some("ref/resource") => (Kind::Resource, "uri"),
            _ => {
                return Err(Failure::invalid_params(
                    "params.ref.type must be \"ref/prompt\" or \"ref/resource\"",
                ));
            }
        };
        let public = reference
            .get(key)
            .and_then(Value::as_str)
            .ok_or_else(|| Failure::invalid_params(format!("params.ref.{key} must be a string")))?;
        // Completing an argument runs nothing: an approval obligation waits for the call itself.
        let (service, upstream_id, _) = self
            .authorized_target(caller, kind, public, None, record)
            .await?;
        let mut reference = reference.clone();
        reference.insert(key.into(), upstream_id.into());
        let mut upstream_params = params.clone();
        upstream_params.insert("ref".into(), Value::Object(reference));
        self.send(
            caller,
            &request.id,
            service,
            "completion/complete",
            upstream_params,
        )
        .await
    }

    fn capabilities(&self) -> Value {
        json!({
            "tools": { "listChanged": true },
            "prompts": { "listChanged": true },
            "resources": { "subscribe": true, "listChanged": true },
            "completions": {},
            "logging": {},
        })
    }

    fn server_info() -> Value {
        json!({ "name": "micromcp", "version": env!("CARGO_PKG_VERSION") })
    }

    fn initialize_result(&self, version: ProtocolVersion) -> Value {
        json!({
            "protocolVersion": version.as_str(),
            "capabilities": self.capabilities(),
            "serverInfo": Self::server_info(),
            "instructions": INSTRUCTIONS,
        })
    }

    fn discover_result(&self) -> Value {
        let mut capabilities = self.capabilities();
        // 2026-07-28 has no per-resource subscriptions or logging level requests.
        capabilities["resources"] = json!({ "listChanged": true });
        if let Some(c) = capabilities.as_object_mut() {
            c.remove("logging");
        }
        json!({
            "supportedVersions": supported_versions(),
            "capabilities": capabilities,
            "instructions": INSTRUCTIONS,
            "serverInfo": Self::server_info(),
            "_meta": { "io.modelcontextprotocol/serverInfo": Self::server_info() },
        })
    }
}

/// Resources one session may be subscribed to at once (each is upstream state and a key the
/// notification router checks).
const MAX_SUBSCRIPTIONS_PER_SESSION: usize = 256;

/// Session-era methods that 2026-07-28 removed: a 2026 request for them is "method not found".
const REMOVED_IN_2026: [&str; 5] = [
    "initialize",
    "ping",
    "logging/setLevel",
    "resources/subscribe",
    "resources/unsubscribe",
];
const LOG_LEVELS: [&str; 8] = [
    "debug",
    "info",
    "notice",
    "warning",
    "error",
    "critical",
    "alert",
    "emergency",
];

const INSTRUCTIONS: &str = "micromcp gateway: tools, prompts and resources of several services, named <service>.<name> (resources <service>+<uri>).";

/// Checks `initialize` params (`protocolVersion`, `capabilities`, `clientInfo` are required) and
/// picks the session-era version to answer with.
pub(crate) fn initialize_version(params: Option<&Value>) -> Result<ProtocolVersion, ErrorObject> {
    let requested = params
        .and_then(|p| p.get("protocolVersion"))
        .and_then(Value::as_str);
    let capabilities = params
        .and_then(|p| p.get("capabilities"))
        .is_some_and(Value::is_object);
    let client_info = params
        .and_then(|p| p.get("clientInfo"))
        .is_some_and(Value::is_object);
    match requested {
        Some(requested) if capabilities && client_info => {
            Ok(ProtocolVersion::negotiate_session(requested))
        }
        _ => Err(ErrorObject::new(
            error_codes::INVALID_PARAMS,
            "initialize needs params.protocolVersion (a string), params.capabilities and params.clientInfo (objects)",
        )),
    }
}

fn object_params(request: &Request) -> Result<&Map<String, Value>, Failure> {
    request
        .params
        .as_ref()
        .and_then(Value::as_object)
        .ok_or_else(|| Failure::invalid_params("params must be an object"))
}

fn micros(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Writes a request's audit record if the request never finished.
struct AuditOnDrop<'a> {
    gateway: &'a Gateway,
    record: Option<AuditRecord>,
    started: Instant,
}

impl Drop for AuditOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(mut record) = self.record.take() {
            record.decision.get_or_insert(Decision::Error);
            record.status = "aborted".into();
            record.reason = Some(
                "the client went away or the gateway stopped before the request finished".into(),
            );
            record.latency_us = micros(self.started);
            self.gateway.audit.record(record);
        }
    }
}

/// Runs `work` until it ends or the client cancels the request with `notifications/cancelled`
/// (session era; a 2026-07-28 client closes the request's stream instead, which drops it).
async fn unless_cancelled<T>(
    caller: &Caller,
    id: &RequestId,
    work: impl Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    let Some(session) = &caller.session else {
        return work.await;
    };
    let cancelled = session.begin(id);
    let _in_flight = InFlight { session, id };
    tokio::select! {
        outcome = work => outcome,
        Ok(()) = cancelled => Err(Failure::Cancelled),
    }
}

/// Removes an in-flight entry however the request ends.
struct InFlight<'a> {
    session: &'a Session,
    id: &'a RequestId,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.session.end(self.id);
    }
}

/// The audit status of a successful JSON-RPC result: a multi round-trip request that asks the
/// client for input is not complete yet, and a tool result with `isError` is a failure the
/// service reported (often one of its guards refusing) — auditors need to see both.
fn result_status(result: &Value) -> &'static str {
    if result.get("resultType").and_then(Value::as_str) == Some("input_required") {
        "input_required"
    } else if result.get("isError") == Some(&Value::Bool(true)) {
        "tool_error"
    } else {
        "ok"
    }
}
