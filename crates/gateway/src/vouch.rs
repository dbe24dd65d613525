//! What each service is told about the caller: the gateway vouches for who is calling, in a form
//! made for that one service — never the caller's own token (docs/identity.md, ADR 0008).
//!
//! - `identity = "jwt"` (HTTP services): a JWT the gateway signs, audience-bound to the
//!   service, in `Authorization: Bearer` ([`micromcp_identity::jwt`]); requests the gateway
//!   makes on its own behalf carry its own token. The public keys are served at
//!   [`JWKS_PATH`].
//! - `Signed` (built-ins that filter by identity, e.g. `vector`): an HMAC-signed identity
//!   bound to the request in `_meta["io.micromcp/identity"]`
//!   ([`micromcp_identity::signed`]), with a key made at start and handed to that child only.
//!
//! Requests on behalf of a caller are the routed ones (`tools/call`, `prompts/get`,
//! `resources/read`, `completion/complete`) and the list pages fetched for them. Whatever a
//! client puts in `_meta` is dropped before this (only the progress token survives), so no
//! client can supply an identity of its own.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use micromcp_auth::Principal;
use micromcp_config::{Secret, Service, ServiceIdentity, ServiceTransport};
use micromcp_identity::jwt::{Issuer, Minter};
use micromcp_identity::signed::{self, Binding, RequestId, ServiceKey};
use micromcp_upstream::{OnBehalf, OwnToken, UpstreamError};
use serde_json::Value;

use crate::{Gateway, ServiceHandle};

/// Where the gateway publishes the keys services verify its tokens with.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// How one service learns the caller.
#[derive(Debug)]
pub(crate) enum Vouch {
    /// It doesn't: it sees only the gateway.
    Nobody,
    Jwt(Arc<Minter>),
    Signed(ServiceKey),
    /// The service should get a signed identity but no key could be made: its requests are
    /// refused rather than sent without one.
    Unavailable,
}

impl Vouch {
    /// Prepares a service: its [`Vouch`], the service config to start it with (a built-in's
    /// environment gains its key), and the token for the gateway's own requests.
    pub(crate) fn prepare(
        name: &str,
        service: &Service,
        issuer: &Arc<Issuer>,
    ) -> (Vouch, Service, Option<OwnToken>) {
        let mut service = service.clone();
        match (service.identity, &mut service.transport) {
            (ServiceIdentity::Jwt, ServiceTransport::Http { url, .. }) => {
                // The service's resource: its URL without query or fragment.
                let audience = format!("{}{}", url.origin().ascii_serialization(), url.path());
                let minter = Arc::new(issuer.minter(audience));
                let own: OwnToken = {
                    let minter = minter.clone();
                    Arc::new(move || minter.token(None).ok())
                };
                if issuer.keys.is_ephemeral() {
                    tracing::warn!(
                        service = name,
                        "identity = \"jwt\" with a key made at start (no identity.signing_key): \
                         the service must fetch the gateway's JWKS again after every restart"
                    );
                }
                (Vouch::Jwt(minter), service, Some(own))
            }
            (ServiceIdentity::Signed, ServiceTransport::Builtin { env, .. }) => {
                match ServiceKey::generate() {
                    Ok(key) => {
                        env.insert(signed::KEY_ENV.to_owned(), Secret::new(key.to_env_value()));
                        (Vouch::Signed(key), service, None)
                    }
                    Err(e) => {
                        tracing::error!(service = name, "{e}: its requests will be refused");
                        (Vouch::Unavailable, service, None)
                    }
                }
            }
            // Validation allows no other combination.
            _ => (Vouch::Nobody, service, None),
        }
    }
}

/// The caller as services learn it.
fn caller_of(p: &Principal) -> micromcp_identity::Caller<'_> {
    micromcp_identity::Caller {
        user: &p.user,
        agent: p.agent.as_deref(),
        tenant: p.tenant.as_deref(),
        roles: &p.roles,
        scopes: &p.scopes,
        clearance: p.clearance.as_deref(),
        method: p.method.as_str(),
        idp: p.issuer.as_deref(),
    }
}

/// The name a routed request is about, as the service knows it (bound into a signed identity).
fn upstream_name<'a>(method: &str, params: Option<&'a Value>) -> Option<&'a str> {
    let params = params?;
    let name = match method {
        "tools/call" | "prompts/get" => params.get("name"),
        "resources/read" => params.get("uri"),
        "completion/complete" => params
            .get("ref")
            .and_then(|r| r.get("name").or_else(|| r.get("uri"))),
        _ => None,
    };
    name.and_then(Value::as_str)
}

impl Gateway {
    /// Sends `method` to `service` on behalf of `principal`, telling the service who is calling
    /// as its `identity` says.
    pub(crate) async fn request_for(
        &self,
        service: &ServiceHandle,
        principal: &Principal,
        method: &str,
        params: Option<Value>,
    ) -> Result<Value, UpstreamError> {
        // One await for every kind, and only references and the token across it: this future
        // sits in every proxied call, so its size is paid on each (docs/benchmarks.md).
        let token;
        let name;
        let sign;
        let on_behalf = match &service.vouch {
            Vouch::Nobody => OnBehalf::Gateway,
            Vouch::Jwt(minter) => {
                token = minter
                    .token(Some(&caller_of(principal)))
                    .map_err(|e| unavailable(service, &e.to_string()))?;
                OnBehalf::Bearer(&token)
            }
            Vouch::Signed(key) => {
                name = upstream_name(method, params.as_ref()).map(str::to_owned);
                let issuer = self.issuer.issuer.as_str();
                sign = move |id: u64| {
                    let binding = Binding {
                        id: RequestId::Number(i64::try_from(id).unwrap_or(i64::MAX)),
                        method: method.to_owned(),
                        name: name.clone(),
                    };
                    let now = micromcp_identity::now_secs();
                    key.sign(&caller_of(principal), issuer, binding, now)
                };
                OnBehalf::Meta(signed::META_KEY, &sign)
            }
            Vouch::Unavailable => return Err(unavailable(service, "no identity key")),
        };
        service.upstream.request_as(method, params, on_behalf).await
    }
}

fn unavailable(service: &ServiceHandle, reason: &str) -> UpstreamError {
    UpstreamError::Unavailable {
        service: service.name.clone(),
        reason: reason.to_owned(),
    }
}

/// `GET /.well-known/jwks.json`: the gateway's public keys (current first, then the previous
/// ones of a rotation). Public information: no token needed.
pub(crate) async fn jwks(State(gw): State<Arc<Gateway>>) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            // Verifiers cache it; a rotation publishes the new key before it signs (as a
            // previous key elsewhere, or by restarting with both), see docs/identity.md.
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            ),
        ],
        gw.jwks.clone(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_reserved_variable_is_the_one_the_services_read() {
        assert_eq!(micromcp_config::IDENTITY_KEY_ENV, signed::KEY_ENV);
    }

    #[test]
    fn the_bound_name_is_the_upstream_tool_prompt_or_uri() {
        let call = json!({"name": "search", "arguments": {}});
        assert_eq!(upstream_name("tools/call", Some(&call)), Some("search"));
        assert_eq!(upstream_name("prompts/get", Some(&call)), Some("search"));
        let read = json!({"uri": "file:///a"});
        assert_eq!(
            upstream_name("resources/read", Some(&read)),
            Some("file:///a")
        );
        let complete = json!({"ref": {"type": "ref/resource", "uri": "file:///{x}"}});
        assert_eq!(
            upstream_name("completion/complete", Some(&complete)),
            Some("file:///{x}")
        );
        assert_eq!(
            upstream_name("tools/list", Some(&json!({"cursor": "c"}))),
            None
        );
        assert_eq!(upstream_name("tools/call", None), None);
    }
}
