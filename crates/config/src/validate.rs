//! Raw config → typed [`Config`]. Pure: no I/O except resolving secret references at the end.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use micromcp_protocol::names::{is_valid_separator, is_valid_service_name};

use crate::raw::{RawConfig, RawIdentity, RawOidc, RawService};
use crate::*;

/// Built-ins that read the caller's identity (they get it signed in each request's `_meta`).
const BUILTINS_USING_IDENTITY: [&str; 1] = ["vector"];
/// The variable that hands a built-in its identity key (`micromcp_identity::signed::KEY_ENV`).
pub const IDENTITY_KEY_ENV: &str = "MICROMCP_IDENTITY_KEY";
const DEFAULT_ADDR: &str = "127.0.0.1:8080";
const DEFAULT_MAX_BODY: u64 = 4 * 1024 * 1024;
const DEFAULT_MAX_DEPTH: u64 = 64;
const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_MAX_CONNECTIONS: u64 = 4096;
const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: u64 = 256;
/// Header names whose values must come from `env:`/`file:` references, never literals.
const SENSITIVE_HEADER_HINTS: [&str; 6] = [
    "authorization",
    "cookie",
    "token",
    "key",
    "secret",
    "password",
];

struct Errors<'a>(&'a mut Vec<ConfigError>);

impl Errors<'_> {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }
}

pub fn validate(raw: RawConfig, base_dir: &Path, errors: &mut Vec<ConfigError>) -> Option<Config> {
    let mut e = Errors(errors);
    let gateway = gateway(&raw, &mut e);

    let tokens = raw
        .tokens
        .iter()
        .filter_map(|(path, t)| {
            let identity = identity(&t.identity, path, &mut e);
            let hash = token_hash(&t.hash, base_dir, &format!("{path}.hash"), &mut e);
            Some(TokenEntry {
                identity: identity?,
                hash: hash?,
            })
        })
        .collect::<Vec<_>>();
    let stdio = raw
        .stdio
        .as_ref()
        .and_then(|i| identity(i, "stdio", &mut e));

    let auth = auth(&raw, &mut e);
    let certificates = raw
        .certificates
        .iter()
        .filter_map(|(path, c)| {
            let identity = identity(&c.identity, path, &mut e);
            let ids: Vec<CertificateId> = [
                c.uri.clone().map(CertificateId::Uri),
                c.dns.clone().map(CertificateId::Dns),
                c.common_name.clone().map(CertificateId::CommonName),
            ]
            .into_iter()
            .flatten()
            .collect();
            if ids.len() != 1 {
                e.push(
                    path,
                    "set exactly one of uri (a URI SAN such as spiffe://…), dns or common_name",
                );
            }
            Some(CertificateEntry {
                id: ids.into_iter().next()?,
                identity: identity?,
            })
        })
        .collect::<Vec<_>>();
    if !certificates.is_empty()
        && raw
            .listen
            .tls
            .as_ref()
            .is_none_or(|t| t.client_ca.is_none())
    {
        e.push(
            "auth.certificates",
            "client certificates are only verified with listen.tls.client_ca set",
        );
    }
    let auth = AuthSettings {
        certificates,
        ..auth
    };

    // Principals from outside the config (an identity provider, certificates) cannot be
    // checked by name.
    let open_principals = !auth.oidc.is_empty();
    let known_principals: Vec<&str> = tokens
        .iter()
        .map(|t| t.identity.principal.as_str())
        .chain(
            auth.certificates
                .iter()
                .map(|c| c.identity.principal.as_str()),
        )
        .chain(stdio.iter().map(|s| s.principal.as_str()))
        .collect();
    let grants = raw
        .grants
        .iter()
        .map(|(path, g)| {
            if let Some(principal) = &g.principal
                && !open_principals
                && !known_principals.contains(&principal.as_str())
            {
                e.push(
                    format!("{path}.principal"),
                    format!("no token, certificate or [stdio] identity has principal {principal:?}"),
                );
            }
            if g.principal.is_none()
                && g.issuer.is_none()
                && g.tenant.is_none()
                && g.roles.as_ref().is_none_or(Vec::is_empty)
                && g.scopes.as_ref().is_none_or(Vec::is_empty)
            {
                e.push(
                    path,
                    "a grant names who it is for: principal, or at least one of issuer, tenant, roles, scopes",
                );
            }
            if let Some(issuer) = &g.issuer
                && !auth.oidc.iter().any(|o| same_issuer(o.issuer.as_str(), issuer))
            {
                e.push(format!("{path}.issuer"), format!("no [[auth.oidc]] has issuer {issuer:?}"));
            }
            Grant {
                principal: g.principal.clone(),
                agent: g.agent.clone(),
                issuer: g.issuer.clone(),
                tenant: g.tenant.clone(),
                roles: g.roles.clone().unwrap_or_default(),
                scopes: g.scopes.clone().unwrap_or_default(),
                tools: patterns(&raw, &gateway.separator, path, "tools", &g.tools, &mut e),
                prompts: patterns(&raw, &gateway.separator, path, "prompts", &g.prompts, &mut e),
                resources: patterns(&raw, &gateway.separator, path, "resources", &g.resources, &mut e),
            }
        })
        .collect();
    let scope_rules = raw
        .scope_rules
        .iter()
        .map(|(path, r)| {
            if r.scopes.is_empty() || r.scopes.iter().any(|s| !is_scope_token(s)) {
                e.push(
                    format!("{path}.scopes"),
                    "one or more scope names (printable ASCII without spaces, quotes or backslashes)",
                );
            }
            ScopeRule {
                scopes: r.scopes.clone(),
                tools: patterns(&raw, &gateway.separator, path, "tools", &r.tools, &mut e),
                prompts: patterns(&raw, &gateway.separator, path, "prompts", &r.prompts, &mut e),
                resources: patterns(&raw, &gateway.separator, path, "resources", &r.resources, &mut e),
            }
        })
        .collect();
    let policy_files = raw
        .policy_files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let file = base_dir.join(f);
            if !file.exists() {
                e.push(
                    format!("policy.files[{i}]"),
                    format!("{} does not exist", file.display()),
                );
            }
            file
        })
        .collect();
    let identity_settings = gateway_identity(&raw, auth.resource.as_ref(), base_dir, &mut e);

    let audit = AuditSettings {
        file: raw.audit.file.as_ref().map(|f| base_dir.join(f)),
    };
    let admin = admin(&raw, &tokens, base_dir, &mut e);
    let approvals = approvals(&raw, base_dir, &mut e);

    let mut services = BTreeMap::new();
    for (name, s) in &raw.services {
        let path = format!("services.{name}");
        if !is_valid_service_name(name) {
            e.push(
                &path,
                "service names must match [a-z][a-z0-9-]* (at most 63 characters)",
            );
        }
        if let Some(service) = service(s, &path, base_dir, gateway.call_timeout, &mut e) {
            services.insert(name.clone(), service);
        }
    }
    let unprefixed = services.iter().filter(|(_, s)| !s.prefix).count();
    if unprefixed > 0 && services.len() > 1 {
        e.push("services", "prefix = false is only allowed when a single service is configured (names would collide)");
    }
    if tokens.is_empty() && stdio.is_none() && auth.oidc.is_empty() && auth.certificates.is_empty()
    {
        e.push("auth.tokens", "no credential is configured: add [[auth.tokens]] (see `micromcp token new`), [[auth.oidc]], [[auth.certificates]] or [stdio]");
    }

    Some(Config {
        base_dir: base_dir.to_owned(),
        listen: listen(&raw, base_dir, &mut e)?,
        gateway,
        auth,
        tokens,
        stdio,
        grants,
        scope_rules,
        policy_files,
        audit,
        identity: identity_settings,
        admin,
        approvals,
        services,
    })
}

/// `[admin]` and `[[admin.tokens]]`.
fn admin(
    raw: &RawConfig,
    mcp_tokens: &[TokenEntry],
    base_dir: &Path,
    e: &mut Errors,
) -> Option<Admin> {
    let a = raw.admin.as_ref()?;
    let addr = match a.addr.as_deref() {
        None => {
            e.push(
                "admin.addr",
                "required: the admin API's own address, e.g. \"127.0.0.1:8081\"",
            );
            None
        }
        Some(text) => match text.parse::<SocketAddr>() {
            Ok(addr) if !addr.ip().is_loopback() && a.allow_non_loopback != Some(true) => {
                e.push(
                    "admin.addr",
                    format!("{text:?} is not a loopback address: the admin API approves calls, so it listens on loopback unless allow_non_loopback = true (then put TLS and a firewall in front)"),
                );
                None
            }
            Ok(addr) => Some(addr),
            Err(_) => {
                e.push("admin.addr", format!("{text:?} is not an IP:port address"));
                None
            }
        },
    };
    let listen = raw.listen.addr.as_deref().unwrap_or(DEFAULT_ADDR);
    if let Some(addr) = addr
        && addr.port() != 0
        && listen.parse::<SocketAddr>().is_ok_and(|l| l == addr)
    {
        e.push("admin.addr", "must differ from listen.addr");
    }
    if raw.admin_tokens.is_empty() {
        e.push(
            "admin.tokens",
            "at least one [[admin.tokens]] entry is needed (create one with `micromcp token new --principal NAME`), or nobody can use the admin API",
        );
    }
    let mut tokens: Vec<TokenEntry> = Vec::new();
    for (path, t) in &raw.admin_tokens {
        let identity = identity(
            &RawIdentity {
                principal: t.principal.clone(),
                agent: None,
                tenant: None,
                roles: t.roles.clone(),
                scopes: None,
                clearance: None,
            },
            path,
            e,
        );
        let roles = t.roles.as_deref().unwrap_or_default();
        if roles.is_empty() {
            e.push(
                format!("{path}.roles"),
                format!("at least one role: {}", ADMIN_ROLES.join(", ")),
            );
        }
        for (i, role) in roles.iter().enumerate() {
            if !ADMIN_ROLES.contains(&role.as_str()) {
                e.push(
                    format!("{path}.roles[{i}]"),
                    format!(
                        "{role:?} is not an admin role (known: {})",
                        ADMIN_ROLES.join(", ")
                    ),
                );
            }
        }
        let hash_path = format!("{path}.hash");
        let hash = token_hash(&t.hash, base_dir, &hash_path, e);
        if let Some(hash) = &hash {
            if mcp_tokens.iter().any(|m| m.hash == *hash) {
                e.push(
                    &hash_path,
                    "the same token (or generated token file) is in [[auth.tokens]]: an admin token must be a credential of its own (it works only on the admin listener)",
                );
            } else if tokens.iter().any(|other| other.hash == *hash) {
                e.push(
                    &hash_path,
                    "the same token as an earlier [[admin.tokens]] entry",
                );
            }
        }
        if let (Some(identity), Some(hash)) = (identity, hash) {
            tokens.push(TokenEntry { identity, hash });
        }
    }
    Some(Admin {
        addr: addr?,
        tokens,
    })
}

/// `[approvals]`.
fn approvals(raw: &RawConfig, base_dir: &Path, e: &mut Errors) -> ApprovalSettings {
    let a = &raw.approvals;
    let defaults = ApprovalSettings::default();
    let timeout = bounded_duration(
        a.timeout.as_deref(),
        "approvals.timeout",
        defaults.timeout,
        Duration::from_secs(1),
        Duration::from_secs(24 * 3600),
        e,
    );
    let progress_interval = bounded_duration(
        a.progress_interval.as_deref(),
        "approvals.progress_interval",
        defaults.progress_interval,
        Duration::from_millis(100),
        Duration::from_secs(300),
        e,
    );
    let max_pending = a.max_pending.unwrap_or(defaults.max_pending as u64);
    if !(1..=100_000).contains(&max_pending) {
        e.push("approvals.max_pending", "must be between 1 and 100000");
    }
    let per_principal = a
        .max_pending_per_principal
        .unwrap_or(defaults.max_pending_per_principal as u64);
    if !(1..=max_pending.max(1)).contains(&per_principal) {
        e.push(
            "approvals.max_pending_per_principal",
            "must be between 1 and approvals.max_pending",
        );
    }
    let webhook = a.webhook.as_ref().and_then(|w| {
        let url = match url::Url::parse(&w.url) {
            Ok(url)
                if (url.scheme() == "https" || (url.scheme() == "http" && is_loopback_url(&url)))
                    && url.username().is_empty()
                    && url.password().is_none() =>
            {
                Some(url)
            }
            Ok(_) => {
                e.push(
                    "approvals.webhook.url",
                    "must be an https:// URL (http:// only to a loopback address), without credentials",
                );
                None
            }
            Err(err) => {
                e.push("approvals.webhook.url", format!("not a valid URL: {err}"));
                None
            }
        };
        let secret = match SecretRef::parse(&w.secret) {
            SecretRef::Literal(_) => {
                e.push(
                    "approvals.webhook.secret",
                    "the signing secret is given by reference: \"env:NAME\" or \"file:PATH\"",
                );
                None
            }
            r => match r.resolve(base_dir) {
                Ok(secret) if secret.expose().len() >= 16 => Some(secret),
                Ok(_) => {
                    e.push(
                        "approvals.webhook.secret",
                        "the signing secret must be at least 16 characters (e.g. `openssl rand -hex 32`)",
                    );
                    None
                }
                Err(m) => {
                    e.push("approvals.webhook.secret", m);
                    None
                }
            },
        };
        Some(Webhook {
            url: url?,
            secret: secret?,
            include_arguments: w.include_arguments.unwrap_or(false),
        })
    });
    ApprovalSettings {
        timeout,
        progress_interval,
        max_pending: usize::try_from(max_pending).unwrap_or(usize::MAX),
        max_pending_per_principal: usize::try_from(per_principal).unwrap_or(usize::MAX),
        webhook,
    }
}

fn listen(raw: &RawConfig, base_dir: &Path, e: &mut Errors) -> Option<Listen> {
    let l = &raw.listen;
    let addr_text = l.addr.as_deref().unwrap_or(DEFAULT_ADDR);
    let addr = addr_text
        .parse::<SocketAddr>()
        .map_err(|_| {
            e.push(
                "listen.addr",
                format!("{addr_text:?} is not an IP:port address"),
            )
        })
        .ok();
    for (i, origin) in l.allowed_origins.iter().flatten().enumerate() {
        if !(origin.starts_with("http://") || origin.starts_with("https://"))
            || origin.ends_with('/')
        {
            e.push(
                format!("listen.allowed_origins[{i}]"),
                "an origin looks like https://host[:port] (no path)",
            );
        }
    }
    // Off loopback, the Host check needs to know this gateway's names, or every request gets 403.
    if addr.is_some_and(|a| !a.ip().is_loopback())
        && l.allowed_hosts.as_ref().is_none_or(Vec::is_empty)
    {
        e.push(
            "listen.allowed_hosts",
            "required when listen.addr is not a loopback address: list the host names clients use to reach this gateway (DNS-rebinding protection)",
        );
    }
    let max_body = l.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY);
    if !(1024..=256 * 1024 * 1024).contains(&max_body) {
        e.push(
            "listen.max_body_bytes",
            "must be between 1024 and 268435456",
        );
    }
    let depth = l.max_json_depth.unwrap_or(DEFAULT_MAX_DEPTH);
    if !(4..=128).contains(&depth) {
        e.push("listen.max_json_depth", "must be between 4 and 128");
    }
    let max_connections = l.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
    if !(1..=1_000_000).contains(&max_connections) {
        e.push("listen.max_connections", "must be between 1 and 1000000");
    }
    let per_address = l
        .max_connections_per_address
        .unwrap_or(DEFAULT_MAX_CONNECTIONS_PER_ADDRESS);
    if !(1..=max_connections.max(1)).contains(&per_address) {
        e.push(
            "listen.max_connections_per_address",
            "must be between 1 and listen.max_connections",
        );
    }
    Some(Listen {
        addr: addr?,
        header_timeout: duration(
            l.header_timeout.as_deref(),
            "listen.header_timeout",
            DEFAULT_HEADER_TIMEOUT,
            e,
        ),
        body_timeout: duration(
            l.body_timeout.as_deref(),
            "listen.body_timeout",
            DEFAULT_BODY_TIMEOUT,
            e,
        ),
        max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
        max_connections_per_address: usize::try_from(per_address).unwrap_or(usize::MAX),
        allowed_hosts: l.allowed_hosts.clone().unwrap_or_default(),
        allowed_origins: l.allowed_origins.clone().unwrap_or_default(),
        max_body_bytes: usize::try_from(max_body).unwrap_or(usize::MAX),
        max_json_depth: usize::try_from(depth).unwrap_or(64),
        tls: l.tls.as_ref().map(|t| tls(t, base_dir, e)),
    })
}

fn tls(t: &crate::raw::RawTls, base_dir: &Path, e: &mut Errors) -> Tls {
    let client_auth = match (t.client_auth.as_deref(), t.client_ca.is_some()) {
        (None, false) | (Some("none"), _) => ClientAuth::None,
        (None, true) | (Some("optional"), true) => ClientAuth::Optional,
        (Some("required"), true) => ClientAuth::Required,
        (Some("optional" | "required"), false) => {
            e.push("listen.tls.client_auth", "needs listen.tls.client_ca");
            ClientAuth::None
        }
        (Some(other), _) => {
            e.push(
                "listen.tls.client_auth",
                format!("{other:?} is not one of \"none\", \"optional\", \"required\""),
            );
            ClientAuth::None
        }
    };
    Tls {
        cert: base_dir.join(&t.cert),
        key: base_dir.join(&t.key),
        client_ca: t.client_ca.as_ref().map(|c| base_dir.join(c)),
        client_auth,
    }
}

fn auth(raw: &RawConfig, e: &mut Errors) -> AuthSettings {
    let resource = raw.auth.resource.as_deref().and_then(|text| {
        match url::Url::parse(text) {
            Ok(url)
                if matches!(url.scheme(), "http" | "https")
                    && url.fragment().is_none()
                    && url.query().is_none()
                    && url.username().is_empty() =>
            {
                Some(url)
            }
            _ => {
                e.push(
                    "auth.resource",
                    "must be this gateway's MCP endpoint as clients reach it, e.g. \"https://mcp.example.com/mcp\" (no query or fragment)",
                );
                None
            }
        }
    });
    if !raw.oidc.is_empty() && raw.auth.resource.is_none() {
        e.push(
            "auth.resource",
            "required with [[auth.oidc]]: this gateway's MCP endpoint URL, the audience tokens must be minted for",
        );
    }
    let oidc = raw
        .oidc
        .iter()
        .filter_map(|(path, o)| oidc(o, path, resource.as_ref(), e))
        .collect();
    AuthSettings {
        resource,
        oidc,
        certificates: Vec::new(),
    }
}

fn oidc(
    o: &RawOidc,
    path: &str,
    resource: Option<&url::Url>,
    e: &mut Errors,
) -> Option<OidcIssuer> {
    let fetchable = |key: &str, text: &str, e: &mut Errors| match url::Url::parse(text) {
        Ok(url) if url.scheme() == "https" || (url.scheme() == "http" && is_loopback_url(&url)) => {
            Some(url)
        }
        Ok(_) => {
            e.push(
                format!("{path}.{key}"),
                "must be an https:// URL (http:// only for a loopback address, for tests)",
            );
            None
        }
        Err(err) => {
            e.push(format!("{path}.{key}"), format!("not a valid URL: {err}"));
            None
        }
    };
    let issuer = fetchable("issuer", &o.issuer, e);
    let jwks_uri = o
        .jwks_uri
        .as_deref()
        .and_then(|j| fetchable("jwks_uri", j, e));
    if let (Some(issuer), Some(jwks)) = (&issuer, &jwks_uri)
        && issuer.host() != jwks.host()
    {
        e.push(
            format!("{path}.jwks_uri"),
            "must be on the issuer's host (keys are fetched from nowhere else)",
        );
    }
    let algorithms = match &o.algorithms {
        None => JwtAlgorithm::ALL.to_vec(),
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(i, a)| {
                let found = JwtAlgorithm::ALL.into_iter().find(|k| k.as_str() == a);
                if found.is_none() {
                    e.push(
                        format!("{path}.algorithms[{i}]"),
                        format!("{a:?} is not allowed: only RS256, PS256, ES256 and EdDSA (never none or HS*)"),
                    );
                }
                found
            })
            .collect(),
    };
    let claims = o.claims.as_ref();
    let claim_name = |v: Option<&String>| v.cloned();
    let mapping = ClaimMapping {
        user: claims
            .and_then(|c| claim_name(c.user.as_ref()))
            .unwrap_or_else(|| "sub".into()),
        agent: claims
            .and_then(|c| c.agent.clone())
            .unwrap_or_else(|| vec!["azp".into(), "client_id".into()]),
        tenant: claims.and_then(|c| claim_name(c.tenant.as_ref())),
        roles: claims.and_then(|c| claim_name(c.roles.as_ref())),
        scopes: claims
            .and_then(|c| claim_name(c.scopes.as_ref()))
            .unwrap_or_else(|| "scope".into()),
        clearance: claims.and_then(|c| claim_name(c.clearance.as_ref())),
    };
    let audience = o
        .audience
        .clone()
        .or_else(|| resource.map(url::Url::to_string));
    // Every key is checked before giving up on a bad one, so all errors show at once.
    let clock_skew = bounded_duration(
        o.clock_skew.as_deref(),
        &format!("{path}.clock_skew"),
        Duration::from_secs(60),
        Duration::ZERO,
        Duration::from_secs(300),
        e,
    );
    let jwks_min_refresh = duration(
        o.jwks_min_refresh.as_deref(),
        &format!("{path}.jwks_min_refresh"),
        Duration::from_secs(30),
        e,
    );
    let jwks_max_age = duration(
        o.jwks_max_age.as_deref(),
        &format!("{path}.jwks_max_age"),
        Duration::from_secs(3600),
        e,
    );
    Some(OidcIssuer {
        issuer: issuer?,
        jwks_uri,
        audience: audience?,
        algorithms,
        clock_skew,
        required_claims: o.required_claims.clone().unwrap_or_default(),
        claims: mapping,
        jwks_min_refresh,
        jwks_max_age,
    })
}

/// RFC 6749 scope-token: printable ASCII except space, `"` and `\`.
fn is_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\')
}

fn gateway_identity(
    raw: &RawConfig,
    resource: Option<&url::Url>,
    base_dir: &Path,
    e: &mut Errors,
) -> GatewayIdentity {
    let i = &raw.identity;
    let key = |text: &str, path: &str, e: &mut Errors| match SecretRef::parse(text) {
        SecretRef::Literal(_) => {
            e.push(
                path,
                "a private key is given by reference: \"file:PATH\" or \"env:NAME\"",
            );
            None
        }
        r => r.resolve(base_dir).map_err(|m| e.push(path, m)).ok(),
    };
    GatewayIdentity {
        issuer: i.issuer.clone().unwrap_or_else(|| {
            resource.map_or_else(|| "micromcp".into(), |r| r.origin().ascii_serialization())
        }),
        signing_key: i
            .signing_key
            .as_deref()
            .and_then(|k| key(k, "identity.signing_key", e)),
        previous_keys: i
            .previous_keys
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(n, k)| key(k, &format!("identity.previous_keys[{n}]"), e))
            .collect(),
        lifetime: bounded_duration(
            i.lifetime.as_deref(),
            "identity.lifetime",
            Duration::from_secs(60),
            Duration::from_secs(5),
            Duration::from_secs(300),
            e,
        ),
    }
}

fn bounded_duration(
    text: Option<&str>,
    path: &str,
    default: Duration,
    min: Duration,
    max: Duration,
    e: &mut Errors,
) -> Duration {
    let Some(text) = text else { return default };
    match humantime::parse_duration(text) {
        Ok(d) if d >= min && d <= max => d,
        Ok(_) => {
            e.push(
                path,
                format!("must be between {} and {}", shown(min), shown(max)),
            );
            default
        }
        Err(_) => {
            e.push(
                path,
                format!("{text:?} is not a duration (e.g. \"30s\", \"500ms\", \"2m\")"),
            );
            default
        }
    }
}

fn patterns(
    raw: &RawConfig,
    separator: &str,
    path: &str,
    kind: &str,
    list: &Option<Vec<String>>,
    e: &mut Errors,
) -> Vec<String> {
    let list = list.clone().unwrap_or_default();
    for (i, p) in list.iter().enumerate() {
        if let Err(msg) = check_pattern(p, kind, raw, separator) {
            e.push(format!("{path}.{kind}[{i}]"), msg);
        }
    }
    list
}

fn gateway(raw: &RawConfig, e: &mut Errors) -> GatewaySettings {
    let g = &raw.gateway;
    let separator = g.separator.clone().unwrap_or_else(|| ".".into());
    if !is_valid_separator(&separator) {
        e.push(
            "gateway.separator",
            "must be 1 to 4 ASCII punctuation characters other than '-', '*' and '+' (e.g. \".\" or \"__\")",
        );
    }
    let mut count = |value: Option<u64>, key: &str, default: u64| {
        let value = value.unwrap_or(default);
        if !(1..=MAX_COUNT).contains(&value) {
            e.push(
                format!("gateway.{key}"),
                format!("must be between 1 and {MAX_COUNT}"),
            );
        }
        usize::try_from(value).unwrap_or(usize::MAX)
    };
    let max_sessions = count(g.max_sessions, "max_sessions", 10_000);
    let max_sessions_per_principal = count(
        g.max_sessions_per_principal,
        "max_sessions_per_principal",
        64,
    );
    let max_streams_per_principal =
        count(g.max_streams_per_principal, "max_streams_per_principal", 16);
    let max_requests_per_principal = count(
        g.max_requests_per_principal,
        "max_requests_per_principal",
        64,
    );
    GatewaySettings {
        separator,
        call_timeout: duration(
            g.call_timeout.as_deref(),
            "gateway.call_timeout",
            DEFAULT_CALL_TIMEOUT,
            e,
        ),
        shutdown_grace: duration(
            g.shutdown_grace.as_deref(),
            "gateway.shutdown_grace",
            Duration::from_secs(10),
            e,
        ),
        max_sessions,
        max_sessions_per_principal,
        session_idle_timeout: duration(
            g.session_idle_timeout.as_deref(),
            "gateway.session_idle_timeout",
            Duration::from_secs(600),
            e,
        ),
        max_streams_per_principal,
        max_requests_per_principal,
    }
}

/// Upper bound of the `[gateway]` counts: far beyond any real need, and small enough that
/// nothing sized from them can overflow.
const MAX_COUNT: u64 = 1_000_000;

/// A bound as config would write it: whole hours as `24h`, anything else as humantime does.
fn shown(d: Duration) -> String {
    match d.as_secs() {
        s if s >= 3600 && s % 3600 == 0 && d.subsec_nanos() == 0 => format!("{}h", s / 3600),
        _ => humantime::format_duration(d).to_string(),
    }
}

fn duration(text: Option<&str>, path: &str, default: Duration, e: &mut Errors) -> Duration {
    bounded_duration(
        text,
        path,
        default,
        Duration::from_millis(10),
        Duration::from_secs(24 * 3600),
        e,
    )
}

fn identity(raw: &RawIdentity, path: &str, e: &mut Errors) -> Option<Identity> {
    let mut ok = true;
    for (key, value) in [
        ("principal", Some(&raw.principal)),
        ("agent", raw.agent.as_ref()),
        ("tenant", raw.tenant.as_ref()),
    ] {
        if let Some(v) = value
            && (v.is_empty() || v.len() > 128 || v.chars().any(char::is_control))
        {
            e.push(
                format!("{path}.{key}"),
                "must be 1 to 128 characters without control characters",
            );
            ok = false;
        }
    }
    for (i, scope) in raw.scopes.iter().flatten().enumerate() {
        if !is_scope_token(scope) {
            e.push(
                format!("{path}.scopes[{i}]"),
                "a scope is printable ASCII without spaces, quotes or backslashes",
            );
            ok = false;
        }
    }
    ok.then(|| Identity {
        principal: raw.principal.clone(),
        agent: raw.agent.clone(),
        tenant: raw.tenant.clone(),
        roles: raw.roles.clone().unwrap_or_default(),
        scopes: raw.scopes.clone().unwrap_or_default(),
        clearance: raw.clearance.clone(),
    })
}

fn token_hash(text: &str, base_dir: &Path, path: &str, e: &mut Errors) -> Option<TokenHash> {
    if let Some(file) = text.strip_prefix("generate:") {
        return Some(TokenHash::Generate(base_dir.join(file)));
    }
    let text = match SecretRef::parse(text) {
        SecretRef::Literal(v) => v,
        r => match r.resolve(base_dir) {
            Ok(v) => v.expose().trim().to_owned(),
            Err(msg) => {
                e.push(path, msg);
                return None;
            }
        },
    };
    match text.strip_prefix("sha256:").map(hex::decode) {
        Some(Ok(bytes)) if bytes.len() == 32 => bytes.try_into().ok().map(TokenHash::Sha256),
        _ => {
            e.push(path, "must be \"sha256:<64 hex digits>\" (from `micromcp token new`), an env:/file: reference to one, or \"generate:<file>\"");
            None
        }
    }
}

fn check_pattern(
    pattern: &str,
    kind: &str,
    raw: &RawConfig,
    separator: &str,
) -> Result<(), String> {
    let service = pattern
        .split_once(separator)
        .map(|(s, _)| s)
        .unwrap_or(pattern);
    if service.contains('*') || pattern.split_once(separator).is_none() {
        return Err(format!(
            "{pattern:?}: a {kind} pattern names its service explicitly, like \"<service>{separator}*\" (wildcard services are not allowed, so a new service never inherits grants)"
        ));
    }
    if !raw.service_names.contains(service) {
        return Err(format!("{pattern:?}: no service named {service:?}"));
    }
    Ok(())
}

fn service(
    s: &RawService,
    path: &str,
    base_dir: &Path,
    default_timeout: Duration,
    e: &mut Errors,
) -> Option<Service> {
    let kinds = [s.builtin.is_some(), s.command.is_some(), s.url.is_some()]
        .iter()
        .filter(|k| **k)
        .count();
    if kinds != 1 {
        e.push(path, "set exactly one of builtin, command or url");
        return None;
    }
    let call_timeout = duration(
        s.timeout.as_deref(),
        &format!("{path}.timeout"),
        default_timeout,
        e,
    );
    let protocol = match s.protocol.as_deref() {
        None | Some("2025-11-25") => UpstreamProtocol::Session,
        Some("2026-07-28") => UpstreamProtocol::Stateless,
        Some(other) => {
            e.push(
                format!("{path}.protocol"),
                format!("{other:?} is not one of \"2025-11-25\", \"2026-07-28\""),
            );
            UpstreamProtocol::Session
        }
    };
    let env =
        |e: &mut Errors| resolve_map(s.env.as_ref(), &format!("{path}.env"), base_dir, false, e);
    let transport = if let Some(name) = &s.builtin {
        if !BUILTIN_SERVICES.contains(&name.as_str()) {
            e.push(
                format!("{path}.builtin"),
                format!(
                    "{name:?} is not a built-in service (known: {})",
                    BUILTIN_SERVICES.join(", ")
                ),
            );
        }
        reject_http_keys(s, path, e);
        if s.cwd.is_some() {
            e.push(format!("{path}.cwd"), "not used with builtin services");
        }
        if s.env
            .as_ref()
            .is_some_and(|env| env.contains_key(IDENTITY_KEY_ENV))
        {
            e.push(
                format!("{path}.env.{IDENTITY_KEY_ENV}"),
                "reserved: the gateway sets it for built-ins that receive the caller's identity",
            );
        }
        ServiceTransport::Builtin {
            name: name.clone(),
            args: s.args.clone().unwrap_or_default(),
            cwd: base_dir.to_owned(),
            env: env(e),
        }
    } else if let Some(command) = &s.command {
        reject_http_keys(s, path, e);
        let Some((program, first_args)) = command.split_first() else {
            e.push(
                format!("{path}.command"),
                "must name a program: [\"program\", \"arg\", …]",
            );
            return None;
        };
        let mut args = first_args.to_vec();
        args.extend(s.args.clone().unwrap_or_default());
        // Relative paths (program, cwd, and args the program opens) are relative to the config
        // file: the child runs in the config's folder unless `cwd` says otherwise.
        let program = if program.contains('/') {
            base_dir.join(program).to_string_lossy().into_owned()
        } else {
            program.clone()
        };
        let cwd = Some(base_dir.join(s.cwd.as_deref().unwrap_or(".")));
        ServiceTransport::Stdio {
            program,
            args,
            cwd,
            env: env(e),
        }
    } else {
        let url = upstream_url(s.url.as_deref().unwrap_or_default(), path, e);
        for key in [
            ("args", s.args.is_some()),
            ("cwd", s.cwd.is_some()),
            ("env", s.env.is_some()),
        ] {
            if key.1 {
                e.push(format!("{path}.{}", key.0), "not used with url services");
            }
        }
        // Resolved before giving up on a bad URL, so every error is reported at once.
        let headers = resolve_map(
            s.headers.as_ref(),
            &format!("{path}.headers"),
            base_dir,
            true,
            e,
        );
        ServiceTransport::Http { url: url?, headers }
    };
    let identity = match (s.identity.as_deref(), &transport) {
        (None | Some("none"), ServiceTransport::Builtin { name, .. })
            if s.identity.is_none() && BUILTINS_USING_IDENTITY.contains(&name.as_str()) =>
        {
            ServiceIdentity::Signed
        }
        (None | Some("none"), _) => ServiceIdentity::None,
        (Some("jwt"), ServiceTransport::Http { .. }) => {
            // The configured names, whether or not their references resolved.
            if s.headers
                .iter()
                .flat_map(BTreeMap::keys)
                .any(|k| k.eq_ignore_ascii_case("authorization"))
            {
                e.push(
                    format!("{path}.identity"),
                    "identity = \"jwt\" sends the gateway's token in Authorization; remove the Authorization header",
                );
            }
            ServiceIdentity::Jwt
        }
        (Some("signed"), ServiceTransport::Builtin { .. }) => ServiceIdentity::Signed,
        (Some(other), _) => {
            e.push(
                format!("{path}.identity"),
                format!("{other:?}: \"jwt\" is for url services, \"signed\" for built-ins, \"none\" for any"),
            );
            ServiceIdentity::None
        }
    };
    Some(Service {
        transport,
        call_timeout,
        prefix: s.prefix.unwrap_or(true),
        protocol,
        identity,
    })
}

/// An upstream URL, parsed once here: http(s), with a host, and without credentials (which
/// belong in `headers`, by reference, where they cannot leak through logs of the URL).
fn upstream_url(text: &str, path: &str, e: &mut Errors) -> Option<url::Url> {
    let key = format!("{path}.url");
    let url = match url::Url::parse(text) {
        Ok(url) => url,
        Err(err) => {
            e.push(key, format!("not a valid URL: {err}"));
            return None;
        }
    };
    if !matches!(url.scheme(), "http" | "https") {
        e.push(key, "must be an http:// or https:// URL");
        return None;
    }
    if !url.username().is_empty() || url.password().is_some() {
        e.push(
            key,
            "must not hold credentials: put them in headers, as env:/file: references",
        );
        return None;
    }
    Some(url)
}

fn reject_http_keys(s: &RawService, path: &str, e: &mut Errors) {
    if s.headers.is_some() {
        e.push(format!("{path}.headers"), "only used with url services");
    }
}

/// Headers the gateway's HTTP client sets itself: a configured value would change how requests
/// are framed (request smuggling), where they go, or what the upstream's session is.
const RESERVED_HEADERS: [&str; 10] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-connection",
    "content-type",
];

fn resolve_map(
    map: Option<&BTreeMap<String, String>>,
    path: &str,
    base_dir: &Path,
    headers: bool,
    e: &mut Errors,
) -> BTreeMap<String, Secret> {
    let mut out = BTreeMap::new();
    for (key, value) in map.into_iter().flatten() {
        let key_path = format!("{path}.{key}");
        let reference = SecretRef::parse(value);
        if headers {
            let lower = key.to_ascii_lowercase();
            if RESERVED_HEADERS.contains(&lower.as_str()) || lower.starts_with("mcp-") {
                e.push(
                    &key_path,
                    "is set by the gateway (message framing, connection handling or the MCP protocol headers) and cannot be configured",
                );
                continue;
            }
            if !reference.is_reference() && SENSITIVE_HEADER_HINTS.iter().any(|h| lower.contains(h))
            {
                e.push(&key_path, "credentials must be given by reference (\"env:NAME\" or \"file:PATH\"), not inline");
                continue;
            }
        }
        match reference.resolve(base_dir) {
            Ok(secret) => {
                out.insert(key.clone(), secret);
            }
            Err(msg) => e.push(&key_path, msg),
        }
    }
    out
}
