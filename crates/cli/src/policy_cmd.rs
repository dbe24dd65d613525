//! `micromcp policy check|explain|test`: the policies checked against the live catalog (the
//! configured services are started, asked for their tools, and stopped), one request
//! explained, or a table of requests tested — the same engine and decision path as the gateway.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Context as _;
use micromcp_auth::{ApiTokens, AuthMethod, CertificateMap, Chain, Principal};
use micromcp_config::Config;
use micromcp_gateway::Gateway;
use micromcp_policy::{Action, Authorizer, Decision, Kind, PolicyEngine, RequestContext};
use serde::Deserialize;
use serde_json::{Map, Value};

/// Who asks, as `policy explain` and policy tests describe them.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Who {
    /// The principal (user).
    #[arg(long)]
    pub principal: String,
    /// The agent.
    #[arg(long)]
    pub agent: Option<String>,
    /// Roles (repeat); default: those of the [[auth.tokens]] entry for this principal and agent.
    #[arg(long = "role")]
    pub roles: Vec<String>,
    /// OAuth scopes (repeat); default: those of the matching [[auth.tokens]] entry.
    #[arg(long = "scope")]
    pub scopes: Vec<String>,
    #[arg(long)]
    pub tenant: Option<String>,
    /// The OIDC issuer the principal came from (then it is an OIDC principal).
    #[arg(long)]
    pub issuer: Option<String>,
}

/// What is asked for: exactly one of tool, prompt, resource.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct What {
    /// A tool's public name (`fs.read_file`).
    #[arg(long)]
    pub tool: Option<String>,
    #[arg(long)]
    pub prompt: Option<String>,
    /// A resource's public URI.
    #[arg(long)]
    pub resource: Option<String>,
    /// The time of the request (RFC 3339, UTC); default now.
    #[arg(long)]
    pub time: Option<String>,
    /// The client's address.
    #[arg(long)]
    pub client_ip: Option<std::net::IpAddr>,
}

/// The configured services, started to read their tools; the engine checked against them.
async fn with_catalog(
    config: Config,
) -> anyhow::Result<Result<(Arc<Gateway>, Arc<PolicyEngine>), Vec<String>>> {
    let policy = match PolicyEngine::new(&config) {
        Ok(p) => Arc::new(p),
        Err(errors) => return Ok(Err(errors)),
    };
    let authn = Chain {
        certificates: CertificateMap::new(&[]),
        tokens: ApiTokens::new(&[], &HashMap::new()),
        oidc: None,
    };
    let (audit, _writer) = micromcp_audit::AuditLog::start(
        &micromcp_audit::AuditDestination::File(PathBuf::from("/dev/null")),
    )
    .context("cannot start the audit log")?;
    let keys =
        micromcp_identity::keys::KeySet::load(None, &[]).context("cannot make a signing key")?;
    let self_exe = std::env::current_exe().context("cannot find this executable")?;
    let gateway = Gateway::start(
        config,
        Box::new(authn),
        policy.clone(),
        audit,
        self_exe,
        keys,
    );
    gateway.load_catalog().await;
    let checked = policy.check();
    Ok(match checked {
        Ok(()) => Ok((gateway, policy)),
        Err(errors) => {
            gateway.shutdown().await;
            Err(errors)
        }
    })
}

fn load_config(path: &Path) -> Option<Config> {
    match Config::load(path) {
        Ok(c) => Some(c),
        Err(errors) => {
            eprintln!("{errors}");
            None
        }
    }
}

pub async fn check(config_path: &Path, print_schema: bool) -> anyhow::Result<ExitCode> {
    let Some(config) = load_config(config_path) else {
        return Ok(ExitCode::from(2));
    };
    let services = config.services.len();
    match with_catalog(config).await? {
        Err(errors) => {
            eprintln!("invalid policies:\n  {}", errors.join("\n  "));
            Ok(ExitCode::from(1))
        }
        Ok((gateway, policy)) => {
            if print_schema {
                println!("{}", policy.schema_text());
            }
            let unseen = policy.unseen_arguments();
            if !unseen.is_empty() {
                eprintln!(
                    "note: policies cannot see these arguments (their JSON Schema has no Cedar type; they are forwarded unchecked by policy):\n  {}",
                    unseen.join("\n  ")
                );
            }
            eprintln!(
                "policies OK ({}) against the tools of {services} service(s)",
                if policy.digest().is_empty() {
                    "grants only".to_owned()
                } else {
                    policy.digest()
                }
            );
            gateway.shutdown().await;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn principal(config: &Config, who: &Who) -> Principal {
    let mut p = Principal::named(
        &who.principal,
        who.agent.as_deref(),
        if who.issuer.is_some() {
            AuthMethod::Oidc
        } else {
            AuthMethod::ApiToken
        },
    );
    if let Some(entry) = config
        .tokens
        .iter()
        .find(|t| t.identity.principal == who.principal && t.identity.agent == who.agent)
    {
        p = Principal::from_identity(&entry.identity, AuthMethod::ApiToken);
    }
    if !who.roles.is_empty() {
        p.roles.clone_from(&who.roles);
    }
    if !who.scopes.is_empty() {
        p.scopes.clone_from(&who.scopes);
    }
    if who.tenant.is_some() {
        p.tenant.clone_from(&who.tenant);
    }
    if who.issuer.is_some() {
        p.issuer.clone_from(&who.issuer);
    }
    p
}

/// The decision for one request (or why it never reached the policies).
fn decide(
    gateway: &Gateway,
    policy: &PolicyEngine,
    p: &Principal,
    what: &What,
    arguments: Option<&Map<String, Value>>,
) -> Result<Decision, String> {
    let (kind, public) = match (&what.tool, &what.prompt, &what.resource) {
        (Some(t), None, None) => (Kind::Tool, t.as_str()),
        (None, Some(t), None) => (Kind::Prompt, t.as_str()),
        (None, None, Some(t)) => (Kind::Resource, t.as_str()),
        _ => return Err("name exactly one of --tool, --prompt, --resource".into()),
    };
    let (service, name) = gateway
        .resolve(kind, public)
        .ok_or_else(|| format!("no configured service routes {public:?}"))?;
    let now = match &what.time {
        Some(t) => humantime::parse_rfc3339(t).map_err(|e| format!("time {t:?}: {e}"))?,
        None => SystemTime::now(),
    };
    let context = RequestContext {
        transport: "http",
        protocol_version: "2025-11-25",
        client_ip: what.client_ip,
        session: None,
        now,
    };
    let empty = Map::new();
    let action = Action {
        kind,
        service,
        name,
        arguments: (kind == Kind::Tool).then(|| arguments.unwrap_or(&empty)),
    };
    policy
        .authorize(p, action, &context)
        .map_err(|e| format!("refused before policy: {e}"))
}

fn verdict(d: &Decision) -> &'static str {
    match (d.allowed, d.obligations.approval) {
        (true, true) => "approval",
        (true, false) => "allow",
        (false, _) => "deny",
    }
}

pub async fn explain(
    config_path: &Path,
    who: &Who,
    what: &What,
    args: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let Some(config) = load_config(config_path) else {
        return Ok(ExitCode::from(2));
    };
    let arguments: Option<Map<String, Value>> = match args {
        None => None,
        Some(text) => match serde_json::from_str(text) {
            Ok(Value::Object(m)) => Some(m),
            _ => {
                eprintln!("--args must be a JSON object");
                return Ok(ExitCode::from(2));
            }
        },
    };
    let p = principal(&config, who);
    let (gateway, policy) = match with_catalog(config).await? {
        Ok(g) => g,
        Err(errors) => {
            eprintln!("invalid policies:\n  {}", errors.join("\n  "));
            return Ok(ExitCode::from(2));
        }
    };
    let outcome = decide(&gateway, &policy, &p, what, arguments.as_ref());
    gateway.shutdown().await;
    println!(
        "principal: {} (agent {}, roles [{}], scopes [{}]{})",
        p.user,
        p.agent.as_deref().unwrap_or("none"),
        p.roles.join(", "),
        p.scopes.join(", "),
        p.tenant
            .as_ref()
            .map(|t| format!(", tenant {t}"))
            .unwrap_or_default()
    );
    match outcome {
        Err(e) => {
            println!("decision: deny\nbecause:  {e}");
            Ok(ExitCode::from(1))
        }
        Ok(d) => {
            println!("decision: {}", verdict(&d));
            if d.policies.is_empty() {
                println!("because:  {} (no policy permits it)", d.rule);
            } else {
                let why = if d.allowed {
                    "permitted by"
                } else {
                    "forbidden by"
                };
                println!("because:  {why} {}", d.policies.join(", "));
            }
            if let Some(scopes) = &d.missing_scopes {
                println!("missing scopes: {scopes} (a token with them would be allowed)");
            }
            for e in &d.errors {
                println!("evaluation error (denies): {e}");
            }
            if d.obligations.approval {
                println!("obligation: a human approver must approve this call");
            }
            Ok(if d.allowed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

/// A policy test file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    /// The gateway config whose services and policies are tested (relative to the test file).
    config: Option<PathBuf>,
    #[serde(rename = "case")]
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    principal: String,
    #[serde(default)]
    agent: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    issuer: Option<String>,
    #[serde(default)]
    tool: Option<String>,
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    resource: Option<String>,
    #[serde(default)]
    time: Option<String>,
    #[serde(default)]
    client_ip: Option<std::net::IpAddr>,
    #[serde(default)]
    arguments: Option<Map<String, Value>>,
    /// allow | deny | approval
    expect: String,
    /// The policies expected to decide (their @id), in any order.
    #[serde(default)]
    policies: Option<Vec<String>>,
}

impl Case {
    fn who(&self) -> Who {
        Who {
            principal: self.principal.clone(),
            agent: self.agent.clone(),
            roles: self.roles.clone(),
            scopes: self.scopes.clone(),
            tenant: self.tenant.clone(),
            issuer: self.issuer.clone(),
        }
    }

    fn what(&self) -> What {
        What {
            tool: self.tool.clone(),
            prompt: self.prompt.clone(),
            resource: self.resource.clone(),
            time: self.time.clone(),
            client_ip: self.client_ip,
        }
    }
}

pub async fn test(file: &Path, config_override: Option<&Path>) -> anyhow::Result<ExitCode> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let tests: TestFile = match toml::from_str(&text) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{}: {}", file.display(), e.message());
            return Ok(ExitCode::from(2));
        }
    };
    let config_path = match (config_override, &tests.config) {
        (Some(c), _) => c.to_owned(),
        (None, Some(c)) => file.parent().unwrap_or(Path::new(".")).join(c),
        (None, None) => {
            eprintln!(
                "{}: name the config (config = \"…\" in the file, or --config)",
                file.display()
            );
            return Ok(ExitCode::from(2));
        }
    };
    let Some(config) = load_config(&config_path) else {
        return Ok(ExitCode::from(2));
    };
    for case in &tests.cases {
        if !["allow", "deny", "approval"].contains(&case.expect.as_str()) {
            eprintln!(
                "{}: case {:?}: expect must be allow, deny or approval",
                file.display(),
                case.name
            );
            return Ok(ExitCode::from(2));
        }
    }
    let principals: Vec<Principal> = tests
        .cases
        .iter()
        .map(|c| principal(&config, &c.who()))
        .collect();
    let (gateway, policy) = match with_catalog(config).await? {
        Ok(g) => g,
        Err(errors) => {
            eprintln!("invalid policies:\n  {}", errors.join("\n  "));
            return Ok(ExitCode::from(1));
        }
    };
    let mut failed = 0;
    for (case, p) in tests.cases.iter().zip(&principals) {
        let outcome = decide(&gateway, &policy, p, &case.what(), case.arguments.as_ref());
        let (got, policies) = match &outcome {
            Ok(d) => (verdict(d), d.policies.clone()),
            Err(_) => ("deny", Vec::new()),
        };
        let mut problems = Vec::new();
        if got != case.expect {
            problems.push(format!("expected {}, got {got}", case.expect));
        }
        if let Some(expected) = &case.policies {
            let mut expected = expected.clone();
            expected.sort();
            if expected != policies {
                problems.push(format!(
                    "expected policies [{}], got [{}]",
                    expected.join(", "),
                    policies.join(", ")
                ));
            }
        }
        if let Err(e) = &outcome {
            problems.retain(|_| case.expect != "deny");
            if case.expect != "deny" {
                problems.push(e.clone());
            }
        }
        if problems.is_empty() {
            println!("ok    {}", case.name);
        } else {
            failed += 1;
            println!("FAIL  {}: {}", case.name, problems.join("; "));
        }
    }
    gateway.shutdown().await;
    println!("{} passed, {failed} failed", tests.cases.len() - failed);
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
