//! micromcp configuration.
//!
//! One TOML file goes through three steps (see `docs/configuration.md`):
//! 1. [`raw`]: serde types that mirror the file. Each section is read on its own, and unknown keys
//!    are collected rather than fatal, so one run reports every problem.
//! 2. [`validate`]: pure checks that turn raw types into the typed [`Config`], with a key path per
//!    error.
//! 3. Secret references (`env:NAME`, `file:PATH`) are resolved at the end of loading; a reference
//!    that cannot be resolved is an error like any other.

mod raw;
mod secret;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use secret::{Secret, SecretRef};
pub use validate::IDENTITY_KEY_ENV;

/// Issuer identifiers compare exactly, except that a trailing slash does not make another
/// issuer. Config validation, token verification and grant matching all use this one rule.
pub fn same_issuer(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// Whether `url` names a loopback host (the only place plain `http://` is allowed for an
/// identity provider, for tests).
pub fn is_loopback_url(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// The `[admin] addr` of a config file, read without validating (or resolving the secrets of)
/// the rest: `micromcp approvals --config FILE` runs as an approver, who need not hold the
/// gateway's secrets.
pub fn admin_addr(path: &Path) -> Result<SocketAddr, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        format!("{}: not valid TOML: {}", path.display(), e.message())
    })?;
    let addr = table
        .get("admin")
        .and_then(|a| a.get("addr"))
        .and_then(toml::Value::as_str)
        .ok_or_else(|| format!("{} has no [admin] addr", path.display()))?;
    addr.parse().map_err(|_| {
        format!(
            "{}: admin.addr {addr:?} is not an IP:port address",
            path.display()
        )
    })
}

/// One problem in a config file, with the key path it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in a config file.
#[derive(Debug, thiserror::Error)]
#[error("{} error(s) in {}:\n{}", .errors.len(), .file.display(), .errors.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors {
    pub file: PathBuf,
    pub errors: Vec<ConfigError>,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Folder of the config file; relative paths in the file are relative to it.
    pub base_dir: PathBuf,
    pub listen: Listen,
    pub gateway: GatewaySettings,
    pub auth: AuthSettings,
    pub tokens: Vec<TokenEntry>,
    pub stdio: Option<Identity>,
    pub grants: Vec<Grant>,
    pub scope_rules: Vec<ScopeRule>,
    /// `[policy] files`: Cedar policy files, or folders whose `*.cedar` files are read
    /// (docs/policy.md). Empty: only the grants decide.
    pub policy_files: Vec<PathBuf>,
    pub audit: AuditSettings,
    /// How the gateway signs the caller's identity for services.
    pub identity: GatewayIdentity,
    /// `[admin]`: the admin API on its own listener; `None`: no admin listener.
    pub admin: Option<Admin>,
    /// `[approvals]`: how calls whose policy requires a human's approval are held.
    pub approvals: ApprovalSettings,
    pub services: BTreeMap<String, Service>,
}

/// `[admin]`: the admin API listener and the only credentials it accepts.
#[derive(Debug, Clone)]
pub struct Admin {
    /// Loopback unless `allow_non_loopback = true`.
    pub addr: SocketAddr,
    /// `[[admin.tokens]]`: they authenticate on the admin listener only, never on `/mcp`
    /// (and `[[auth.tokens]]` never here). Each has at least one of [`ADMIN_ROLES`].
    pub tokens: Vec<TokenEntry>,
}

/// Roles an admin token may hold. `approver`: list, show, approve and deny held calls.
pub const ADMIN_ROLES: [&str; 1] = ["approver"];

/// `[approvals]`.
#[derive(Debug, Clone)]
pub struct ApprovalSettings {
    /// How long a call waits for a decision before it fails (default 10 minutes).
    pub timeout: Duration,
    /// How often a waiting caller that asked for progress is told it is still waiting.
    pub progress_interval: Duration,
    /// Calls waiting for approval at once, all principals together.
    pub max_pending: usize,
    /// Calls waiting for approval at once for one principal (user).
    pub max_pending_per_principal: usize,
    /// Told about each new pending approval.
    pub webhook: Option<Webhook>,
}

impl Default for ApprovalSettings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(600),
            progress_interval: Duration::from_secs(5),
            max_pending: 1000,
            max_pending_per_principal: 10,
            webhook: None,
        }
    }
}

/// `[approvals] webhook = { … }`: a signed POST for each new pending approval.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// https, or http to a loopback address.
    pub url: url::Url,
    /// The HMAC-SHA256 key of the `X-Micromcp-Signature` header (given by reference only).
    pub secret: Secret,
    /// Send the call's arguments too (default: only their SHA-256).
    pub include_arguments: bool,
}

#[derive(Debug, Clone)]
pub struct Listen {
    pub addr: SocketAddr,
    /// Host header values accepted besides the loopback names (when bound to loopback).
    pub allowed_hosts: Vec<String>,
    /// `Origin` values accepted; a request with any other `Origin` gets 403.
    pub allowed_origins: Vec<String>,
    pub max_body_bytes: usize,
    pub max_json_depth: usize,
    /// Time to receive a request's headers, counted from when the connection is ready for a
    /// request: it bounds slow headers and is also the idle keep-alive timeout.
    pub header_timeout: Duration,
    /// Time to receive a request's whole body once its headers arrived.
    pub body_timeout: Duration,
    /// Open client connections at once (new ones beyond are closed at once).
    pub max_connections: usize,
    /// Open client connections from one IPv4 address or one IPv6 /64 at once.
    pub max_connections_per_address: usize,
    /// TLS (and optionally mTLS) on the client listener; `None` is plain HTTP.
    pub tls: Option<Tls>,
}

#[derive(Debug, Clone)]
pub struct Tls {
    /// PEM certificate chain, reloaded on change or SIGHUP.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1), reloaded with the certificate.
    pub key: PathBuf,
    /// PEM CA certificates that client certificates must chain to.
    pub client_ca: Option<PathBuf>,
    pub client_auth: ClientAuth,
}

/// Whether clients must present a certificate (only with `client_ca`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// No client certificates are asked for.
    None,
    /// A certificate is verified when presented; connections without one are accepted.
    Optional,
    /// Every connection must present a certificate from `client_ca` (refused in the handshake).
    Required,
}

#[derive(Debug, Clone)]
pub struct GatewaySettings {
    pub separator: String,
    pub call_timeout: Duration,
    pub shutdown_grace: Duration,
    /// Session-era sessions at once, all principals together (503 beyond).
    pub max_sessions: usize,
    /// Sessions per principal; a new one beyond it evicts that principal's least recently used.
    pub max_sessions_per_principal: usize,
    /// A session without requests or an open notification stream for this long is dropped.
    pub session_idle_timeout: Duration,
    /// Open SSE streams per principal: GET streams, `subscriptions/listen`, SSE answers (429 beyond).
    pub max_streams_per_principal: usize,
    /// Requests in progress per principal (429 beyond; never queued).
    pub max_requests_per_principal: usize,
}

/// Who a credential stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub principal: String,
    pub agent: Option<String>,
    pub tenant: Option<String>,
    pub roles: Vec<String>,
    /// OAuth scopes this credential carries (checked against `[[policy.scopes]]`).
    pub scopes: Vec<String>,
    /// Data clearance passed to services that filter by it (the vector service).
    pub clearance: Option<String>,
}

/// `[auth]`: how callers prove who they are, besides `[[auth.tokens]]`.
#[derive(Debug, Clone, Default)]
pub struct AuthSettings {
    /// This gateway's MCP endpoint as clients know it (RFC 8707 resource indicator, RFC 9728
    /// `resource`): the default audience of `[[auth.oidc]]` and the base of the metadata URL.
    pub resource: Option<url::Url>,
    pub oidc: Vec<OidcIssuer>,
    /// Verified client certificates that stand for a principal.
    pub certificates: Vec<CertificateEntry>,
}

/// One trusted OpenID provider / OAuth authorization server.
#[derive(Debug, Clone)]
pub struct OidcIssuer {
    pub issuer: url::Url,
    /// Where its keys are; `None`: from OpenID discovery (`<issuer>/.well-known/openid-configuration`).
    pub jwks_uri: Option<url::Url>,
    /// The `aud` a token must carry: this gateway's resource URI.
    pub audience: String,
    pub algorithms: Vec<JwtAlgorithm>,
    pub clock_skew: Duration,
    /// Claims that must be present (besides `iss`, `aud`, `exp`, `sub`, always required).
    pub required_claims: Vec<String>,
    pub claims: ClaimMapping,
    /// An unknown `kid` refreshes the key set at most once per this interval.
    pub jwks_min_refresh: Duration,
    /// Keys are refetched after this long; on fetch failure the old set is kept until then.
    pub jwks_max_age: Duration,
}

/// Asymmetric JWS algorithms only: `none` and HMAC cannot be configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtAlgorithm {
    RS256,
    PS256,
    ES256,
    EdDSA,
}

impl JwtAlgorithm {
    pub const ALL: [JwtAlgorithm; 4] = [Self::RS256, Self::PS256, Self::ES256, Self::EdDSA];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RS256 => "RS256",
            Self::PS256 => "PS256",
            Self::ES256 => "ES256",
            Self::EdDSA => "EdDSA",
        }
    }
}

/// Which claims make the principal.
#[derive(Debug, Clone)]
pub struct ClaimMapping {
    /// Default `sub`.
    pub user: String,
    /// The first present of these is the agent; default `azp`, `client_id`.
    pub agent: Vec<String>,
    pub tenant: Option<String>,
    /// A string array claim; default none.
    pub roles: Option<String>,
    /// Space-separated string or string array; default `scope`.
    pub scopes: String,
    pub clearance: Option<String>,
}

/// A client certificate that authenticates a principal: matched on a SAN or the subject CN
/// of a certificate that chains to `listen.tls.client_ca`.
#[derive(Debug, Clone)]
pub struct CertificateEntry {
    pub id: CertificateId,
    pub identity: Identity,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateId {
    /// A URI SAN, such as a SPIFFE id `spiffe://trust-domain/path`.
    Uri(String),
    Dns(String),
    CommonName(String),
}

/// `[identity]`: the tokens the gateway signs to tell services who is calling.
#[derive(Debug, Clone)]
pub struct GatewayIdentity {
    /// `iss` of the tokens; default: the origin of `auth.resource`, else `micromcp`.
    pub issuer: String,
    /// PKCS#8 PEM (Ed25519 or P-256). `None`: a key made at start (tokens don't verify after
    /// a restart; fine for built-ins, which are restarted with the gateway).
    pub signing_key: Option<Secret>,
    /// Older keys still published at `/.well-known/jwks.json` during a rotation.
    pub previous_keys: Vec<Secret>,
    /// Lifetime of each token (at most 5 minutes).
    pub lifetime: Duration,
}

#[derive(Debug, Clone)]
pub struct TokenEntry {
    pub identity: Identity,
    pub hash: TokenHash,
}

/// Where a token's SHA-256 hash comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenHash {
    Sha256([u8; 32]),
    /// First start creates a random token, prints it once and stores only its hash here.
    Generate(PathBuf),
}

/// A permission: what a principal (optionally only one of its agents) may use. Patterns are
/// `<service>.<name>` globs where `*` matches any run of characters.
#[derive(Debug, Clone)]
pub struct Grant {
    /// `None`: any principal that matches the other conditions.
    pub principal: Option<String>,
    pub agent: Option<String>,
    /// Only principals authenticated by this issuer (an `[[auth.oidc]]` issuer).
    pub issuer: Option<String>,
    pub tenant: Option<String>,
    /// The principal holds at least one of these roles (empty: no condition).
    pub roles: Vec<String>,
    /// The principal holds all of these scopes.
    pub scopes: Vec<String>,
    pub tools: Vec<String>,
    pub prompts: Vec<String>,
    pub resources: Vec<String>,
}

/// `[[policy.scopes]]`: OAuth scopes needed to use what the patterns match (all of them).
#[derive(Debug, Clone)]
pub struct ScopeRule {
    pub scopes: Vec<String>,
    pub tools: Vec<String>,
    pub prompts: Vec<String>,
    pub resources: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct AuditSettings {
    pub file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Service {
    pub transport: ServiceTransport,
    pub call_timeout: Duration,
    /// Publish names as `<service>.<name>` (true) or unchanged (false).
    pub prefix: bool,
    /// The protocol version the gateway speaks to this service.
    pub protocol: UpstreamProtocol,
    /// What the service is told about the caller.
    pub identity: ServiceIdentity,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceIdentity {
    /// Nothing (the service sees only the gateway).
    None,
    /// HTTP services: a short-lived token signed by the gateway in `Authorization: Bearer`.
    Jwt,
    /// Built-in services that use the caller's identity: a signed identity in each request's
    /// `_meta`, bound to that request.
    Signed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    Session,
    Stateless,
}

#[derive(Debug, Clone)]
pub enum ServiceTransport {
    /// `micromcp serve <name> <args…>` from this very executable.
    Builtin {
        name: String,
        args: Vec<String>,
        /// The config file's folder, so relative paths in `args` mean what they say there.
        cwd: PathBuf,
        env: BTreeMap<String, Secret>,
    },
    /// Any stdio MCP server. Nothing of the gateway's environment is inherited but `env`.
    Stdio {
        program: String,
        args: Vec<String>,
        cwd: Option<PathBuf>,
        env: BTreeMap<String, Secret>,
    },
    /// A Streamable HTTP MCP server.
    Http {
        url: url::Url,
        headers: BTreeMap<String, Secret>,
    },
}

/// Built-in services that `builtin = "<name>"` may name.
pub const BUILTIN_SERVICES: [&str; 4] = ["echo", "fs", "fetch", "vector"];

impl Config {
    /// Reads, validates and resolves a config file, reporting every problem at once.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let fail = |errors| ConfigErrors {
            file: path.to_owned(),
            errors,
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            fail(vec![ConfigError {
                path: String::new(),
                message: format!("cannot read file: {e}"),
            }])
        })?;
        // Absolute, so that a bare file name (`--config gw.toml`) still gives services a real
        // working folder and relative paths keep their meaning whatever the process's cwd.
        let base_dir = std::path::absolute(path)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .ok_or_else(|| {
                fail(vec![ConfigError {
                    path: String::new(),
                    message: "cannot resolve the config file's folder".into(),
                }])
            })?;
        Self::from_toml(&text, &base_dir).map_err(fail)
    }

    /// Validates config text; relative paths resolve against `base_dir`.
    pub fn from_toml(text: &str, base_dir: &Path) -> Result<Config, Vec<ConfigError>> {
        let (raw, mut errors) = raw::parse(text);
        let config = validate::validate(raw, base_dir, &mut errors);
        match config {
            Some(config) if errors.is_empty() => Ok(config),
            _ => Err(errors),
        }
    }
}
