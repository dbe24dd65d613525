//! The gateway as an OAuth 2.1 resource server: protected resource metadata (RFC 9728) and the
//! `WWW-Authenticate` challenges that point clients to it (RFC 6750, MCP authorization spec).
//!
//! With `auth.resource` set, `/.well-known/oauth-protected-resource` and its path-suffixed form
//! for the MCP endpoint (`/.well-known/oauth-protected-resource/mcp`) describe this gateway:
//! its resource URI, the `[[auth.oidc]]` issuers as authorization servers, and the scopes named
//! in `[[policy.scopes]]`. Every 401 and 403 names the metadata URL in `resource_metadata`, so a
//! client that knows only the gateway's URL can find where to get a token.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use micromcp_config::Config;
use micromcp_protocol::{ErrorObject, error_codes};
use serde_json::{Value, json};

use crate::Gateway;

pub const METADATA_ROOT: &str = "/.well-known/oauth-protected-resource";

/// The path-suffixed metadata path for the configured resource (`…/mcp`), when one is set.
pub fn metadata_path(config: &Config) -> Option<String> {
    let resource = config.auth.resource.as_ref()?;
    let path = resource.path().trim_end_matches('/');
    Some(format!("{METADATA_ROOT}{path}"))
}

/// The absolute metadata URL, for `resource_metadata=`.
fn metadata_url(config: &Config) -> Option<String> {
    let resource = config.auth.resource.as_ref()?;
    Some(format!(
        "{}{}",
        resource.origin().ascii_serialization(),
        metadata_path(config)?
    ))
}

/// Scopes the gateway knows about: the ones `[[policy.scopes]]` require, in config order.
fn scopes_supported(config: &Config) -> Vec<&str> {
    let mut scopes: Vec<&str> = Vec::new();
    for scope in config.scope_rules.iter().flat_map(|r| &r.scopes) {
        if !scopes.contains(&scope.as_str()) {
            scopes.push(scope);
        }
    }
    scopes
}

pub(crate) async fn metadata(State(gw): State<Arc<Gateway>>) -> Response {
    let config = &gw.config;
    let Some(resource) = &config.auth.resource else {
        return axum::http::StatusCode::NOT_FOUND.into_response();
    };
    let servers: Vec<String> = config
        .auth
        .oidc
        .iter()
        .map(|o| o.issuer.as_str().trim_end_matches('/').to_owned())
        .collect();
    let mut body = json!({
        "resource": resource.as_str(),
        "authorization_servers": servers,
        "bearer_methods_supported": ["header"],
        "resource_name": "micromcp",
    });
    let scopes = scopes_supported(config);
    if !scopes.is_empty() {
        body["scopes_supported"] = json!(scopes);
    }
    let mut response = axum::Json(body).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=300"),
    );
    response
}

/// `Bearer realm="micromcp"[, resource_metadata="…"][, error="…"][, scope="…"]`.
pub fn challenge(config: &Config, error: Option<&str>, scope: Option<&str>) -> HeaderValue {
    let mut value = String::from("Bearer realm=\"micromcp\"");
    if let Some(url) = metadata_url(config) {
        value.push_str(&format!(", resource_metadata=\"{url}\""));
    }
    if let Some(error) = error {
        value.push_str(&format!(", error=\"{error}\""));
    }
    if let Some(scope) = scope {
        value.push_str(&format!(", scope=\"{scope}\""));
    }
    // Every part is either fixed text, a URL that `url` serialized, or validated scope tokens.
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
}

/// The JSON-RPC error for a call refused only for want of scopes; the HTTP transport turns it
/// into 403 with an `insufficient_scope` challenge.
pub fn insufficient_scope_error(scopes: &str) -> ErrorObject {
    let mut error = ErrorObject::new(
        error_codes::INSUFFICIENT_SCOPE,
        format!("insufficient_scope: this needs a token with scope {scopes:?}"),
    );
    error.data = Some(json!({ "error": "insufficient_scope", "scope": scopes }));
    error
}

/// The scopes an [`insufficient_scope_error`] names.
pub fn insufficient_scope(error: &ErrorObject) -> Option<&str> {
    if error.code != error_codes::INSUFFICIENT_SCOPE {
        return None;
    }
    error.data.as_ref()?.get("scope").and_then(Value::as_str)
}
