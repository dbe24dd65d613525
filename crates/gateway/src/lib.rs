//! The micromcp gateway: one authenticated MCP endpoint in front of many upstream services.
//!
//! Where things live (the order of the request path is in [`pipeline`]):
//! - [`listener`]: the TCP accept loop and its connection limits (before any byte is parsed).
//! - [`http`] and [`stdio`]: client-facing transports. They do the transport checks (Host,
//!   Origin, size, nesting, protocol headers, era), authenticate, and hand each JSON-RPC request
//!   to [`Gateway::handle`].
//! - [`pipeline`]: the request path, stage by stage, and the one audit record per request.
//! - [`federation`]: routing public names to services, merging lists, cursors.
//! - [`session`]: session-era sessions, bound to the principal that created them.
//! - [`limits`]: per-principal caps on requests in progress and open streams.
//! - [`events`]: notifications from upstreams, delivered only to the client they belong to.
//! - [`normalize`]: result shapes per protocol era.
//! - [`oauth`]: OAuth protected resource metadata (RFC 9728) and `WWW-Authenticate` challenges.
//! - [`tls`]: TLS on the client listener, certificate reloads, client certificates.
//! - [`output`]: upstream URIs in results made public; list items with hidden characters left out.
//! - [`vouch`]: what each service is told about the caller (gateway-signed, never the caller's
//!   token), and the JWKS that lets services verify it.
//! - [`approvals`]: calls held until a person approves them; [`admin`]: the admin API (its
//!   own listener and tokens) where approvers decide.

pub mod admin;
pub mod approvals;
mod authority;
pub mod catalog;
pub mod events;
pub mod federation;
pub mod http;
pub mod limits;
pub mod listener;
pub mod normalize;
pub mod oauth;
pub mod outbox;
pub mod output;
pub mod pipeline;
pub mod policy_reload;
pub mod session;
pub mod stdio;
pub mod tls;
pub mod vouch;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use micromcp_audit::AuditLog;
use micromcp_auth::Authenticator;
use micromcp_config::Config;
use micromcp_identity::jwt::Issuer;
use micromcp_identity::keys::KeySet;
use micromcp_policy::PolicyEngine;
use micromcp_protocol::names::Namer;
use micromcp_upstream::Upstream;

pub use pipeline::Caller;

/// One configured upstream service.
#[derive(Debug)]
pub struct ServiceHandle {
    pub name: String,
    pub upstream: Upstream,
    pub timeout: Duration,
    /// Names are published as `<service><sep><name>` (true) or unchanged (false).
    pub prefix: bool,
    /// What the service is told about the caller.
    pub(crate) vouch: vouch::Vouch,
}

/// The gateway: configuration, services and the stages of the request path.
pub struct Gateway {
    pub(crate) config: Config,
    pub(crate) namer: Namer,
    pub(crate) services: BTreeMap<String, ServiceHandle>,
    pub(crate) authn: Box<dyn Authenticator>,
    /// The authorization stage ([`micromcp_policy::Authorizer`]), with the live catalog.
    pub(crate) authz: Arc<PolicyEngine>,
    pub(crate) refreshes: catalog::Refreshes,
    pub(crate) audit: AuditLog,
    pub(crate) sessions: session::Sessions,
    pub(crate) limits: limits::Limits,
    pub(crate) cursors: federation::CursorSeal,
    pub(crate) routes: Arc<events::Routes>,
    /// Refusals that have no request to audit (connection limits, timeouts).
    pub(crate) refusals: listener::RefusalLog,
    /// The stdio client, when serving stdio.
    pub(crate) stdio: std::sync::OnceLock<Arc<session::Session>>,
    /// The gateway as the issuer of the identities services get.
    pub(crate) issuer: Arc<Issuer>,
    /// The JWK Set of `issuer`, served at [`vouch::JWKS_PATH`].
    pub(crate) jwks: String,
    /// Calls waiting for a person's approval.
    pub(crate) approvals: approvals::Approvals,
    instance: String,
    request_counter: AtomicU64,
}

impl Gateway {
    /// Starts every upstream and the notification router. `self_exe` is spawned for builtins;
    /// `keys` sign the identities services get (`[identity]`).
    pub fn start(
        config: Config,
        authn: Box<dyn Authenticator>,
        authz: Arc<PolicyEngine>,
        audit: AuditLog,
        self_exe: PathBuf,
        keys: KeySet,
    ) -> Arc<Gateway> {
        let issuer = Arc::new(Issuer {
            keys,
            issuer: config.identity.issuer.clone(),
            lifetime: config.identity.lifetime,
        });
        let routes = Arc::new(events::Routes::default());
        let (events_tx, events_rx) = outbox::outbox();
        // Progress is delivered inline, in order with the responses of the same connection;
        // everything else goes to the router task.
        let sink: micromcp_upstream::EventSink = {
            let routes = routes.clone();
            Arc::new(move |event: micromcp_upstream::UpstreamEvent| {
                if event.method == "notifications/progress" {
                    routes.deliver_progress(event.params);
                } else if events_tx.send(event).is_err() {
                    // The router is MAX_BACKLOG events behind: a service is flooding.
                    tracing::debug!("upstream notification dropped: too many waiting");
                }
            })
        };
        let services = config
            .services
            .iter()
            .map(|(name, s)| {
                let (vouch, s, own_token) = vouch::Vouch::prepare(name, s, &issuer);
                let upstream = Upstream::start(name, &s, &self_exe, sink.clone(), own_token);
                (
                    name.clone(),
                    ServiceHandle {
                        name: name.clone(),
                        upstream,
                        timeout: s.call_timeout,
                        prefix: s.prefix,
                        vouch,
                    },
                )
            })
            .collect();
        let mut instance = [0u8; 4];
        let _ = getrandom::fill(&mut instance);
        let gateway = Arc::new(Gateway {
            namer: Namer::new(config.gateway.separator.clone()),
            authz,
            refreshes: catalog::Refreshes::default(),
            sessions: session::Sessions::new(
                config.gateway.max_sessions,
                config.gateway.max_sessions_per_principal,
            ),
            limits: limits::Limits::new(&config.gateway),
            approvals: approvals::Approvals::new(&config.approvals, config.admin.is_some()),
            cursors: federation::CursorSeal::new(),
            routes,
            refusals: listener::RefusalLog::default(),
            stdio: std::sync::OnceLock::new(),
            jwks: issuer.keys.jwks().to_string(),
            issuer,
            config,
            services,
            authn,
            audit,
            instance: instance.iter().map(|b| format!("{b:02x}")).collect(),
            request_counter: AtomicU64::new(0),
        });
        tokio::spawn(events::route_events(Arc::downgrade(&gateway), events_rx));
        tokio::spawn(session::expire_idle(
            Arc::downgrade(&gateway),
            gateway.config.gateway.session_idle_timeout,
        ));
        gateway
    }

    pub(crate) fn stdio_session(&self) -> Option<Arc<session::Session>> {
        self.stdio.get().cloned()
    }

    /// The policy engine (reloads, `policy explain`).
    pub fn policy(&self) -> &Arc<PolicyEngine> {
        &self.authz
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The calls waiting for approval (the admin API decides them).
    pub fn approvals(&self) -> &approvals::Approvals {
        &self.approvals
    }

    /// A gateway-unique id for the audit record of one request.
    pub fn next_request_id(&self) -> String {
        format!(
            "{}-{}",
            self.instance,
            self.request_counter.fetch_add(1, Ordering::Relaxed) + 1
        )
    }

    /// Names of services whose upstream is connected.
    pub fn ready_services(&self) -> Vec<(&str, bool)> {
        self.services
            .values()
            .map(|s| (s.name.as_str(), s.upstream.capabilities().is_some()))
            .collect()
    }

    /// Waits until every audit record so far is written.
    pub async fn flush_audit(&self) {
        self.audit.flush().await;
    }

    /// Stops every upstream (children get EOF, then SIGTERM, then SIGKILL).
    pub async fn shutdown(&self) {
        futures::future::join_all(self.services.values().map(|s| s.upstream.shutdown())).await;
    }
}
