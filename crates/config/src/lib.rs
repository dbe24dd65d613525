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
    pub tokens: Vec<TokenEntry>,
    pub stdio: Option<Identity>,
    pub grants: Vec<Grant>,
    pub audit: AuditSettings,
    pub services: BTreeMap<String, Service>,
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
    pub principal: String,
    pub agent: Option<String>,
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
