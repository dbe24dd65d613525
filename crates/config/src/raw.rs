//! Raw config types: what the user typed, before any check.
//!
//! Sections (and each service, token and grant) are deserialized one at a time so that a type
//! error in one does not hide problems in the others. Unknown keys are collected, not fatal.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::ConfigError;

#[derive(Debug, Default, Deserialize)]
pub struct RawListen {
    pub addr: Option<String>,
    pub allowed_hosts: Option<Vec<String>>,
    pub allowed_origins: Option<Vec<String>>,
    pub max_body_bytes: Option<u64>,
    pub max_json_depth: Option<u64>,
    pub header_timeout: Option<String>,
    pub body_timeout: Option<String>,
    pub max_connections: Option<u64>,
    pub max_connections_per_address: Option<u64>,
    pub tls: Option<RawTls>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawTls {
    pub cert: String,
    pub key: String,
    pub client_ca: Option<String>,
    pub client_auth: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawGateway {
    pub separator: Option<String>,
    pub call_timeout: Option<String>,
    pub shutdown_grace: Option<String>,
    pub max_sessions: Option<u64>,
    pub max_sessions_per_principal: Option<u64>,
    pub session_idle_timeout: Option<String>,
    pub max_streams_per_principal: Option<u64>,
    pub max_requests_per_principal: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub struct RawIdentity {
    pub principal: String,
    pub agent: Option<String>,
    pub tenant: Option<String>,
    pub roles: Option<Vec<String>>,
    pub scopes: Option<Vec<String>>,
    pub clearance: Option<String>,
}

/// `[auth]` keys other than the `[[auth.*]]` arrays.
#[derive(Debug, Default, Deserialize)]
pub struct RawAuth {
    pub resource: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct RawOidc {
    pub issuer: String,
    pub jwks_uri: Option<String>,
    pub audience: Option<String>,
    pub algorithms: Option<Vec<String>>,
    pub clock_skew: Option<String>,
    pub required_claims: Option<Vec<String>>,
    pub jwks_min_refresh: Option<String>,
    pub jwks_max_age: Option<String>,
    pub claims: Option<RawClaims>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawClaims {
    pub user: Option<String>,
    pub agent: Option<Vec<String>>,
    pub tenant: Option<String>,
    pub roles: Option<String>,
    pub scopes: Option<String>,
    pub clearance: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct RawCertificate {
    #[serde(flatten)]
    pub identity: RawIdentity,
    pub uri: Option<String>,
    pub dns: Option<String>,
    pub common_name: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct RawScopeRule {
    pub scopes: Vec<String>,
    pub tools: Option<Vec<String>>,
    pub prompts: Option<Vec<String>>,
    pub resources: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawGatewayIdentity {
    pub issuer: Option<String>,
    pub signing_key: Option<String>,
    pub previous_keys: Option<Vec<String>>,
    pub lifetime: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct RawToken {
    #[serde(flatten)]
    pub identity: RawIdentity,
    pub hash: String,
}

#[derive(Debug, Deserialize)]
pub struct RawGrant {
    pub principal: Option<String>,
    pub agent: Option<String>,
    pub issuer: Option<String>,
    pub tenant: Option<String>,
    pub roles: Option<Vec<String>>,
    pub scopes: Option<Vec<String>>,
    pub tools: Option<Vec<String>>,
    pub prompts: Option<Vec<String>>,
    pub resources: Option<Vec<String>>,
}

/// `[admin]` keys other than `[[admin.tokens]]`.
#[derive(Debug, Default, Deserialize)]
pub struct RawAdmin {
    pub addr: Option<String>,
    pub allow_non_loopback: Option<bool>,
}

/// `[[admin.tokens]]`: who may use the admin API, and as what.
#[derive(Debug, Deserialize)]
pub struct RawAdminToken {
    pub principal: String,
    pub roles: Option<Vec<String>>,
    pub hash: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawApprovals {
    pub timeout: Option<String>,
    pub progress_interval: Option<String>,
    pub max_pending: Option<u64>,
    pub max_pending_per_principal: Option<u64>,
    pub webhook: Option<RawWebhook>,
}

#[derive(Debug, Deserialize)]
pub struct RawWebhook {
    pub url: String,
    pub secret: String,
    pub include_arguments: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawAudit {
    pub file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawService {
    pub builtin: Option<String>,
    pub command: Option<Vec<String>>,
    pub args: Option<Vec<String>>,
    pub cwd: Option<String>,
    pub env: Option<BTreeMap<String, String>>,
    pub url: Option<String>,
    pub headers: Option<BTreeMap<String, String>>,
    pub timeout: Option<String>,
    pub prefix: Option<bool>,
    pub protocol: Option<String>,
    pub identity: Option<String>,
}

/// The whole file. Entries that failed to deserialize are absent (their errors are recorded);
/// `service_names` still lists every declared service so references to it are not misreported.
#[derive(Debug, Default)]
pub struct RawConfig {
    pub listen: RawListen,
    pub gateway: RawGateway,
    pub auth: RawAuth,
    pub tokens: Vec<(String, RawToken)>,
    pub oidc: Vec<(String, RawOidc)>,
    pub certificates: Vec<(String, RawCertificate)>,
    pub stdio: Option<RawIdentity>,
    pub grants: Vec<(String, RawGrant)>,
    pub scope_rules: Vec<(String, RawScopeRule)>,
    /// `[policy] files`: Cedar policy files (or folders of them).
    pub policy_files: Vec<String>,
    pub identity: RawGatewayIdentity,
    pub audit: RawAudit,
    /// `Some` when the file has an `[admin]` table.
    pub admin: Option<RawAdmin>,
    pub admin_tokens: Vec<(String, RawAdminToken)>,
    pub approvals: RawApprovals,
    pub services: BTreeMap<String, RawService>,
    pub service_names: BTreeSet<String>,
}

const TOP_LEVEL_KEYS: [&str; 10] = [
    "listen",
    "gateway",
    "auth",
    "stdio",
    "policy",
    "audit",
    "identity",
    "admin",
    "approvals",
    "services",
];

pub fn parse(text: &str) -> (RawConfig, Vec<ConfigError>) {
    let mut errors = Vec::new();
    let mut raw = RawConfig::default();
    let mut table: toml::Table = match text.parse() {
        Ok(t) => t,
        Err(e) => {
            errors.push(ConfigError {
                path: String::new(),
                message: format!("not valid TOML: {}", e.message()),
            });
            if let Some(span) = e.span() {
                let line = text[..span.start].lines().count().max(1);
                errors.last_mut().expect("just pushed").message += &format!(" (line {line})");
            }
            return (raw, errors);
        }
    };
    for key in table.keys() {
        if !TOP_LEVEL_KEYS.contains(&key.as_str()) {
            errors.push(err(key, "unknown key"));
        }
    }
    raw.listen = section(table.remove("listen"), "listen", &mut errors).unwrap_or_default();
    raw.gateway = section(table.remove("gateway"), "gateway", &mut errors).unwrap_or_default();
    raw.audit = section(table.remove("audit"), "audit", &mut errors).unwrap_or_default();
    raw.stdio = section(table.remove("stdio"), "stdio", &mut errors);
    raw.identity = section(table.remove("identity"), "identity", &mut errors).unwrap_or_default();
    let mut auth = table_of(table.remove("auth"), "auth", &mut errors);
    raw.tokens = entries(auth.remove("tokens"), "auth.tokens", &mut errors);
    raw.oidc = entries(auth.remove("oidc"), "auth.oidc", &mut errors);
    raw.certificates = entries(
        auth.remove("certificates"),
        "auth.certificates",
        &mut errors,
    );
    raw.auth = section(Some(toml::Value::Table(auth)), "auth", &mut errors).unwrap_or_default();
    if let Some(admin) = table.remove("admin") {
        let mut admin = table_of(Some(admin), "admin", &mut errors);
        raw.admin_tokens = entries(admin.remove("tokens"), "admin.tokens", &mut errors);
        raw.admin = Some(
            section(Some(toml::Value::Table(admin)), "admin", &mut errors).unwrap_or_default(),
        );
    }
    raw.approvals =
        section(table.remove("approvals"), "approvals", &mut errors).unwrap_or_default();
    let mut policy = table_of(table.remove("policy"), "policy", &mut errors);
    raw.grants = entries(policy.remove("grants"), "policy.grants", &mut errors);
    raw.scope_rules = entries(policy.remove("scopes"), "policy.scopes", &mut errors);
    raw.policy_files =
        section(policy.remove("files"), "policy.files", &mut errors).unwrap_or_default();
    for other in policy.keys() {
        errors.push(err(&format!("policy.{other}"), "unknown key"));
    }
    match table.remove("services") {
        None => {}
        Some(toml::Value::Table(services)) => {
            for (name, value) in services {
                let path = format!("services.{name}");
                raw.service_names.insert(name.clone());
                if let Some(service) = section(Some(value), &path, &mut errors) {
                    raw.services.insert(name, service);
                }
            }
        }
        Some(_) => errors.push(err("services", "must be a table of services")),
    }
    (raw, errors)
}

/// A section that must be a table (absent: empty).
fn table_of(value: Option<toml::Value>, path: &str, errors: &mut Vec<ConfigError>) -> toml::Table {
    match value {
        None => toml::Table::new(),
        Some(toml::Value::Table(t)) => t,
        Some(_) => {
            errors.push(err(path, "must be a table"));
            toml::Table::new()
        }
    }
}

/// Reads `[[<path>]]` entries, each on its own, tagging each with its key path.
fn entries<T: DeserializeOwned>(
    value: Option<toml::Value>,
    path: &str,
    errors: &mut Vec<ConfigError>,
) -> Vec<(String, T)> {
    match value {
        None => Vec::new(),
        Some(toml::Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .filter_map(|(i, item)| {
                let path = format!("{path}[{i}]");
                section(Some(item), &path, errors).map(|v| (path, v))
            })
            .collect(),
        Some(_) => {
            errors.push(err(
                path,
                &format!("must be an array of tables ([[{path}]])"),
            ));
            Vec::new()
        }
    }
}

fn section<T: DeserializeOwned>(
    value: Option<toml::Value>,
    path: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    let value = value?;
    let mut unknown = Vec::new();
    let parsed = serde_ignored::deserialize(value, |p| unknown.push(key_path(&p)));
    for key in unknown {
        errors.push(err(&format!("{path}.{key}"), "unknown key"));
    }
    match parsed {
        Ok(v) => Some(v),
        Err(e) => {
            errors.push(err(path, &e.to_string().trim().replace('\n', " ")));
            None
        }
    }
}

/// An ignored key's path as the file spells it: `webhook.other`, `tokens.0.x` (serde_ignored
/// writes a `?` for each optional or newtype level, which the file does not have).
fn key_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => join(key_path(parent), &index.to_string()),
        Path::Map { parent, key } => join(key_path(parent), key),
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => key_path(parent),
    }
}

fn join(parent: String, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

fn err(path: &str, message: &str) -> ConfigError {
    ConfigError {
        path: path.to_owned(),
        message: message.to_owned(),
    }
}
