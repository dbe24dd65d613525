//! The `micromcp` command: the gateway, the built-in services, and tools for operators.

mod approvals;
mod policy_cmd;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use micromcp_auth::{ApiTokens, AuthMethod, CertificateMap, Chain, Credentials, Oidc};
use micromcp_config::{Config, TokenHash};
use micromcp_gateway::Gateway;
use micromcp_identity::keys::KeyError;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "micromcp",
    version,
    about = "A least-privilege security gateway for the Model Context Protocol"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (Streamable HTTP at /mcp, or one client on stdio with --stdio).
    Gateway {
        #[arg(long, short)]
        config: PathBuf,
        /// Serve one client on stdin/stdout as the configured [stdio] principal.
        #[arg(long)]
        stdio: bool,
    },
    /// Run a built-in MCP service (stdio by default).
    Serve {
        #[command(subcommand)]
        service: Box<Service>,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// API token tools.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Authentication tools.
    Auth {
        #[command(subcommand)]
        command: AuthCommand,
    },
    /// Review and decide calls held for a person's approval (through the gateway's admin API;
    /// the admin token comes from MICROMCP_ADMIN_TOKEN).
    Approvals {
        #[command(flatten)]
        target: approvals::Target,
        #[command(subcommand)]
        command: approvals::Command,
    },
    /// Policy tools: check policies against the services' tools, explain a decision, run
    /// policy tests (docs/policy.md).
    Policy {
        #[command(subcommand)]
        command: Box<PolicyCommand>,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Check the config's policies against the live catalog (starts the services to read their
    /// tools). Exit code 0 valid, 1 invalid, 2 bad config.
    Check {
        #[arg(long, short)]
        config: PathBuf,
        /// Print the Cedar schema generated from the services' tools.
        #[arg(long)]
        schema: bool,
    },
    /// Show the decision for one request and the policies that made it. Exit code 0 allowed
    /// (possibly with approval), 1 denied.
    Explain {
        #[arg(long, short)]
        config: PathBuf,
        #[command(flatten)]
        who: Box<policy_cmd::Who>,
        #[command(flatten)]
        what: Box<policy_cmd::What>,
        /// The tool's arguments, a JSON object.
        #[arg(long)]
        args: Option<String>,
    },
    /// Run table-driven policy tests (a TOML file of [[case]]s: request → expected decision).
    Test {
        file: PathBuf,
        /// The gateway config (default: `config` named in the test file).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum AuthCommand {
    /// Show how the gateway sees a bearer token (API token or OIDC JWT): valid or not, the
    /// principal, or the rule that refused it. Never prints the token. Exit code 0 valid, 1 not.
    Check {
        #[arg(long, short)]
        config: PathBuf,
        /// The token; without it, the first line of standard input (which keeps the token out
        /// of the process list and shell history).
        #[arg(long)]
        token: Option<String>,
    },
}

#[derive(Subcommand)]
enum Service {
    /// A tiny demo service: echo, add, now, slow, fail, env, exit; a resource, a prompt.
    Echo {
        /// Serve Streamable HTTP at http://ADDR/mcp instead of stdio.
        #[arg(long)]
        http: Option<SocketAddr>,
    },
    /// Read-only files beneath one or more roots: list, read, stat, find, search.
    Fs(micromcp_fs::FsArgs),
    /// fetch_text of http(s) URLs under a domain allowlist, refusing internal addresses.
    Fetch(micromcp_fetch::FetchArgs),
    /// Semantic search over a folder of documents, filtered by the caller's tenant and clearance.
    Vector(micromcp_vector::VectorArgs),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a config file; prints every problem with its key path.
    Check { file: PathBuf },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a new random token and the config entry holding its hash.
    New {
        #[arg(long, default_value = "alice")]
        principal: String,
        #[arg(long)]
        agent: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("micromcp: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(run(cli));
    // Blocking work still running (a service's long search, say) must not keep the process
    // alive after its job is done: give it a moment, then exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("micromcp: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // reqwest is built without a TLS crypto provider (to keep one, ring, in the build); the
    // gateway's HTTP upstreams and the fetch and vector services need it installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cli.command {
        Command::Gateway { config, stdio } => gateway(&config, stdio).await,
        Command::Serve { service } => {
            // Services are children of the gateway, which relays their stderr: keep it quiet.
            init_logging("warn");
            match *service {
                Service::Echo { http } => {
                    micromcp_services::run_echo(micromcp_services::EchoOptions { http }).await?;
                }
                Service::Fs(args) => micromcp_fs::run(args).await?,
                Service::Fetch(args) => micromcp_fetch::run(args).await?,
                Service::Vector(args) => micromcp_vector::run(args).await?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Config {
            command: ConfigCommand::Check { file },
        } => Ok(match Config::load(&file) {
            Ok(config) => {
                // Keys are checked here too, so a bad key file is found before a start.
                if let Err(e) = signing_keys(&config) {
                    eprintln!("{e}");
                    return Ok(ExitCode::from(2));
                }
                println!(
                    "{}: ok ({} service(s), {} token(s), {} grant(s))",
                    file.display(),
                    config.services.len(),
                    config.tokens.len(),
                    config.grants.len()
                );
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::from(2)
            }
        }),
        Command::Token {
            command: TokenCommand::New { principal, agent },
        } => {
            let (token, hash) = micromcp_auth::new_token()?;
            println!("token (give it to the client; it is not stored anywhere):\n  {token}\n");
            println!("config entry (only the hash is kept):\n");
            println!("[[auth.tokens]]\nprincipal = {principal:?}");
            if let Some(agent) = agent {
                println!("agent = {agent:?}");
            }
            println!("hash = {hash:?}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Auth {
            command: AuthCommand::Check { config, token },
        } => {
            init_logging("warn");
            auth_check(&config, token).await
        }
        Command::Approvals { target, command } => approvals::run(target, command).await,
        Command::Policy { command } => {
            init_logging("warn");
            match *command {
                PolicyCommand::Check { config, schema } => policy_cmd::check(&config, schema).await,
                PolicyCommand::Explain {
                    config,
                    who,
                    what,
                    args,
                } => policy_cmd::explain(&config, &who, &what, args.as_deref()).await,
                PolicyCommand::Test { file, config } => {
                    policy_cmd::test(&file, config.as_deref()).await
                }
            }
        }
    }
}

/// The authentication chain of a gateway with this config: API tokens, certificates and, when
/// configured, the OIDC issuers (returned too, for what only they know, such as expiry).
fn authenticator(
    config: &Config,
    generated: &HashMap<PathBuf, [u8; 32]>,
) -> anyhow::Result<(Chain, Option<Arc<Oidc>>)> {
    let oidc = if config.auth.oidc.is_empty() {
        None
    } else {
        let oidc = Oidc::new(&config.auth.oidc)
            .map_err(|e| anyhow::anyhow!("cannot set up [[auth.oidc]]: {e}"))?;
        Some(Arc::new(oidc))
    };
    let chain = Chain {
        certificates: CertificateMap::new(&config.auth.certificates),
        tokens: ApiTokens::new(&config.tokens, generated),
        oidc: oidc
            .clone()
            .map(|o| o as Arc<dyn micromcp_auth::BearerVerifier>),
    };
    Ok((chain, oidc))
}

async fn auth_check(config_path: &Path, token: Option<String>) -> anyhow::Result<ExitCode> {
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            return Ok(ExitCode::from(2));
        }
    };
    let token = match token {
        Some(t) => t,
        None => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("cannot read the token from standard input")?;
            line.trim().to_owned()
        }
    };
    // Only hashes that exist already: checking a token never creates one.
    let mut generated = HashMap::new();
    for entry in &config.tokens {
        if let TokenHash::Generate(path) = &entry.hash
            && path.exists()
        {
            let (hash, _) = micromcp_auth::ensure_generated(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            generated.insert(path.clone(), hash);
        }
    }
    let (chain, oidc) = authenticator(&config, &generated)?;
    let header = format!("Bearer {token}");
    let result = micromcp_auth::Authenticator::authenticate(
        &chain,
        Credentials::bearer(Some(header.as_bytes())),
    )
    .await;
    let principal = match result {
        Ok(p) => p,
        Err(e) => {
            println!("invalid\n  reason: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    let expires = match (&oidc, principal.method) {
        (Some(oidc), AuthMethod::Oidc) => oidc.check(&token).await.ok().map(|v| v.expires),
        _ => None,
    };
    let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let list = |v: &[String]| {
        if v.is_empty() {
            "-".to_owned()
        } else {
            v.join(" ")
        }
    };
    println!("valid ({})", principal.method.as_str());
    println!("  user:      {}", principal.user);
    println!("  agent:     {}", or_dash(&principal.agent));
    println!("  tenant:    {}", or_dash(&principal.tenant));
    println!("  roles:     {}", list(&principal.roles));
    println!("  scopes:    {}", list(&principal.scopes));
    println!("  clearance: {}", or_dash(&principal.clearance));
    println!("  issuer:    {}", or_dash(&principal.issuer));
    println!("  jti:       {}", or_dash(&principal.token_id));
    if let Some(exp) = expires {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(exp);
        let left = at
            .duration_since(std::time::SystemTime::now())
            .map(|d| std::time::Duration::from_secs(d.as_secs()));
        match left {
            Ok(left) => println!(
                "  expires:   {} (in {})",
                humantime::format_rfc3339_seconds(at),
                humantime::format_duration(left)
            ),
            Err(_) => println!("  expires:   {}", humantime::format_rfc3339_seconds(at)),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Logs go to stderr (stdout may be a protocol stream). `MICROMCP_LOG` overrides `default`.
fn init_logging(default: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("MICROMCP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}

async fn gateway(config_path: &Path, stdio: bool) -> anyhow::Result<ExitCode> {
    init_logging("info");
    let mut config = match Config::load(config_path) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            return Ok(ExitCode::from(2));
        }
    };
    fit_connections_to_file_limit(&mut config);
    let generated = materialize_generated_tokens(&config)?;
    let (authn, oidc) = authenticator(&config, &generated)?;
    if let Some(oidc) = &oidc {
        // Gateway start never waits for (or fails on) an identity provider: keys are fetched
        // in the background now, and again when a token needs them.
        oidc.prefetch();
    }
    // Audit records never share a stream with logs (stderr): stdout when serving HTTP, a file
    // beside the config when stdout is the stdio protocol stream.
    let audit_to = micromcp_audit::AuditDestination::resolve(
        config.audit.file.as_deref(),
        stdio,
        &config.base_dir,
    );
    let (audit, audit_writer) = micromcp_audit::AuditLog::start(&audit_to)
        .with_context(|| format!("cannot open the audit log ({audit_to})"))?;
    tracing::info!("audit records go to {audit_to}");
    let self_exe = std::env::current_exe()
        .context("cannot find this executable (needed to start built-in services)")?;
    let grace = config.gateway.shutdown_grace;
    let stdio_identity = config.stdio.clone();
    let listen_addr = config.listen.addr;
    // Certificate and key are read before anything starts: a bad file stops the start.
    let tls = match (&config.listen.tls, stdio) {
        (Some(tls), false) => Some(std::sync::Arc::new(
            micromcp_gateway::tls::ServerTls::load(tls).context("listen.tls")?,
        )),
        _ => None,
    };
    let keys = signing_keys(&config)?;
    let admin_addr = config.admin.as_ref().map(|a| a.addr);
    let policy = match micromcp_policy::PolicyEngine::new(&config) {
        Ok(engine) => std::sync::Arc::new(engine),
        Err(errors) => {
            eprintln!("invalid policies:\n  {}", errors.join("\n  "));
            return Ok(ExitCode::from(2));
        }
    };
    let gateway = Gateway::start(
        config,
        Box::new(authn),
        policy.clone(),
        audit,
        self_exe,
        keys,
    );
    if policy.has_policy_files() {
        // Policies are checked against the live catalog: a policy that names a tool or an
        // argument that does not exist stops the start.
        gateway.load_catalog().await;
        if let Err(errors) = policy.check() {
            eprintln!(
                "invalid policies (checked against the services' tools):\n  {}",
                errors.join("\n  ")
            );
            gateway.shutdown().await;
            return Ok(ExitCode::from(2));
        }
        tracing::info!(
            "policies {} checked against the services' tools",
            policy.digest()
        );
    } else {
        let gateway = gateway.clone();
        tokio::spawn(async move { gateway.load_catalog().await });
    }
    reload_on_sighup(tls.clone(), gateway.clone())?;
    tokio::spawn(micromcp_gateway::policy_reload::watch_policies(
        std::sync::Arc::downgrade(&gateway),
    ));
    // The admin API (approvals) on its own listener, started before clients can connect.
    let (admin_stop, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    if let Some(addr) = admin_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (admin.addr)"))?;
        eprintln!("micromcp: admin API on http://{}", listener.local_addr()?);
        let tokens = ApiTokens::new(
            gateway
                .config()
                .admin
                .as_ref()
                .map_or(&[][..], |a| &a.tokens),
            &generated,
        );
        tokio::spawn(micromcp_gateway::admin::serve(
            gateway.clone(),
            listener,
            tokens,
            async move {
                let _ = admin_stopped.await;
            },
        ));
    } else if gateway.config().approvals.webhook.is_some() {
        tracing::warn!(
            "[approvals] webhook is set but there is no [admin]: calls that need approval fail at once"
        );
    }

    if stdio {
        let identity = stdio_identity
            .context("--stdio needs a [stdio] section naming the principal of the local client")?;
        let (input, output) = micromcp_services::stdio::streams();
        let stopping = gateway.clone();
        micromcp_gateway::stdio::serve(gateway.clone(), &identity, input, output, async move {
            shutdown_signal().await;
            stopping.approvals().stop();
        })
        .await?;
    } else {
        let listener = tokio::net::TcpListener::bind(listen_addr)
            .await
            .with_context(|| format!("cannot listen on {listen_addr}"))?;
        let addr = listener.local_addr()?;
        if let Some(tls) = &tls {
            tokio::spawn(tls.clone().watch());
            tracing::info!(
                "TLS certificate SHA-256 {}; reloaded on SIGHUP or when its files change",
                tls.fingerprint()
            );
        }
        let scheme = if tls.is_some() { "https" } else { "http" };
        eprintln!("micromcp: listening on {scheme}://{addr}/mcp");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(micromcp_gateway::listener::serve(
            gateway.clone(),
            listener,
            tls,
            async move {
                let _ = stop_rx.await;
            },
        ));
        shutdown_signal().await;
        // Held calls fail now with a clear error rather than at the end of the grace period.
        gateway.approvals().stop();
        tracing::info!("shutting down: finishing in-flight requests (up to {grace:?})");
        let _ = stop_tx.send(());
        if tokio::time::timeout(grace, server).await.is_err() {
            tracing::warn!(
                "some requests or streams were still open after {grace:?}; closing them"
            );
        }
    }
    let _ = admin_stop.send(());
    gateway.shutdown().await;
    gateway.flush_audit().await;
    drop(gateway);
    // Remaining clones of the audit log belong to tasks being torn down; records they still
    // write were flushed above or are written by the writer before the process exits.
    let _ =
        tokio::time::timeout(std::time::Duration::from_millis(200), audit_writer.finish()).await;
    Ok(ExitCode::SUCCESS)
}

/// The keys that sign what services are told about the caller (`[identity]`).
fn signing_keys(config: &Config) -> Result<micromcp_identity::keys::KeySet, KeyError> {
    let identity = &config.identity;
    let previous: Vec<&str> = identity.previous_keys.iter().map(|k| k.expose()).collect();
    micromcp_identity::keys::KeySet::load(
        identity.signing_key.as_ref().map(|k| k.expose()),
        &previous,
    )
}

/// Raises the soft open-file limit to the hard one (every client connection and every service
/// pipe is a descriptor) and keeps `listen.max_connections` below it, so the connection cap —
/// not `accept` failing for lack of descriptors — is what a flood runs into.
fn fit_connections_to_file_limit(config: &mut Config) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((mut soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        soft = hard;
    }
    // Descriptors for everything else: audit file, logs, each service's pipes and sockets.
    let services = u64::try_from(config.services.len()).unwrap_or(u64::MAX);
    let reserve = 256u64.saturating_add(services.saturating_mul(8));
    let room = usize::try_from(soft.saturating_sub(reserve))
        .unwrap_or(usize::MAX)
        .max(16);
    let listen = &mut config.listen;
    if listen.max_connections > room {
        tracing::warn!(
            "listen.max_connections lowered from {} to {room} to fit the open-file limit ({soft}); raise `ulimit -n` for more",
            listen.max_connections
        );
        listen.max_connections = room;
        listen.max_connections_per_address = listen.max_connections_per_address.min(room);
    }
}

/// Creates the tokens of `hash = "generate:<file>"` entries (of `[[auth.tokens]]` and
/// `[[admin.tokens]]`) on first start and shows each once.
fn materialize_generated_tokens(config: &Config) -> anyhow::Result<HashMap<PathBuf, [u8; 32]>> {
    let mut generated = HashMap::new();
    let mcp = config.tokens.iter().map(|t| (t, "a token", "/mcp"));
    let admin = config.admin.iter().flat_map(|a| &a.tokens).map(|t| {
        (
            t,
            "an admin token",
            "the admin API (micromcp approvals reads it from MICROMCP_ADMIN_TOKEN)",
        )
    });
    for (entry, what, use_on) in mcp.chain(admin) {
        let TokenHash::Generate(path) = &entry.hash else {
            continue;
        };
        let (hash, new_token) = micromcp_auth::ensure_generated(path)
            .with_context(|| format!("cannot create or read {}", path.display()))?;
        if let Some(token) = new_token {
            eprintln!(
                "\n  micromcp: created {what} for principal {:?} (shown once; only its hash is kept in {}):\n\n      {token}\n\n  Use it on {use_on} with the header  Authorization: Bearer {token}\n  Lost it? Delete that file and restart to get a new one.\n",
                entry.identity.principal,
                path.display()
            );
        } else {
            tracing::info!(principal = %entry.identity.principal, "using the token whose hash is in {}", path.display());
        }
        generated.insert(path.clone(), hash);
    }
    Ok(generated)
}

/// SIGHUP reloads the policies and the TLS certificate and key (it no longer stops the
/// process). The handler is installed before the listener is announced, so a SIGHUP sent after
/// that never kills it.
fn reload_on_sighup(
    tls: Option<std::sync::Arc<micromcp_gateway::tls::ServerTls>>,
    gateway: std::sync::Arc<Gateway>,
) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup =
            signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                let tls = tls.clone();
                let gateway = gateway.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    if let Some(tls) = tls {
                        tracing::info!("SIGHUP: reloading the TLS certificate and key");
                        tls.reload();
                    }
                    if gateway.policy().has_policy_files() {
                        gateway.reload_policies("SIGHUP");
                    }
                })
                .await;
            }
        });
    }
    #[cfg(not(unix))]
    let _ = (tls, gateway);
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
