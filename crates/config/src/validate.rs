//! Raw config → typed [`Config`]. Pure: no I/O except resolving secret references at the end.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use micromcp_protocol::names::{is_valid_separator, is_valid_service_name};

use crate::raw::{RawConfig, RawIdentity, RawService};
use crate::*;

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
    let listen = listen(&raw, &mut e);
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

    let known_principals: Vec<&str> = tokens
        .iter()
        .map(|t| t.identity.principal.as_str())
        .chain(stdio.iter().map(|s| s.principal.as_str()))
        .collect();
    let grants = raw
        .grants
        .iter()
        .map(|(path, g)| {
            if !known_principals.contains(&g.principal.as_str()) {
                e.push(
                    format!("{path}.principal"),
                    format!(
                        "no token or [stdio] identity has principal {:?}",
                        g.principal
                    ),
                );
            }
            let mut patterns = |kind: &str, list: &Option<Vec<String>>| {
                let list = list.clone().unwrap_or_default();
                for (i, p) in list.iter().enumerate() {
                    if let Err(msg) = check_pattern(p, kind, &raw, &gateway.separator) {
                        e.push(format!("{path}.{kind}[{i}]"), msg);
                    }
                }
                list
            };
            Grant {
                principal: g.principal.clone(),
                agent: g.agent.clone(),
                tools: patterns("tools", &g.tools),
                prompts: patterns("prompts", &g.prompts),
                resources: patterns("resources", &g.resources),
            }
        })
        .collect();

    let audit = AuditSettings {
        file: raw.audit.file.as_ref().map(|f| base_dir.join(f)),
    };

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
    if tokens.is_empty() && stdio.is_none() {
        e.push("auth.tokens", "no credential is configured: add [[auth.tokens]] (see `micromcp token new`) or [stdio]");
    }

    Some(Config {
        base_dir: base_dir.to_owned(),
        listen: listen?,
        gateway,
        tokens,
        stdio,
        grants,
        audit,
        services,
    })
}

fn listen(raw: &RawConfig, e: &mut Errors) -> Option<Listen> {
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
    })
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

fn duration(text: Option<&str>, path: &str, default: Duration, e: &mut Errors) -> Duration {
    let Some(text) = text else { return default };
    match humantime::parse_duration(text) {
        Ok(d) if d >= Duration::from_millis(10) && d <= Duration::from_secs(24 * 3600) => d,
        Ok(_) => {
            e.push(path, "must be between 10ms and 24h");
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
    ok.then(|| Identity {
        principal: raw.principal.clone(),
        agent: raw.agent.clone(),
        tenant: raw.tenant.clone(),
        roles: raw.roles.clone().unwrap_or_default(),
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
    Some(Service {
        transport,
        call_timeout,
        prefix: s.prefix.unwrap_or(true),
        protocol,
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
