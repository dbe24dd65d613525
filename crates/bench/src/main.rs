//! `micromcp-bench`: drives `tools/call` (echo) over Streamable HTTP with N concurrent clients
//! and compares three set-ups in one run, for both protocol eras:
//!
//! - **direct**: straight to `micromcp serve echo --http` (the upstream alone);
//! - **gw-http**: through the gateway, whose upstream is that same HTTP echo server;
//! - **gw-stdio**: through the gateway, whose upstream is the built-in echo over stdio;
//! - **gw-stdio-jwt**: the same, with the client authenticated by an OIDC JWT instead of an API
//!   token ([`jwt`]), so the two gateway CPU columns show what JWT authentication adds;
//! - **gw-stdio-policy100**: the same stdio echo, decided by 100 Cedar policies ([`policies`])
//!   instead of the one grant, so the two gateway CPU columns show what policy evaluation adds;
//!   with it, the policy engine alone is timed per call ([`engine`]).
//!
//! It also measures one legitimate client's latency through the gateway while 10,000 idle and
//! 1,000 slow-header connections are held against it from many loopback addresses
//! ([`attack`]), and reports the gateway's resident memory (idle, peak under load, and idle with 1 vs
//! many services). It builds nothing: it runs an existing `micromcp` binary (`--micromcp`,
//! `MICROMCP_BIN`, or the `micromcp` next to this executable).
//!
//! Every virtual client is closed-loop: it sends one request, waits for the answer, sends the
//! next. Latency is measured per request from send to the complete body; only requests that
//! start after the warm-up and finish before the end count.

mod attack;
mod engine;
mod jwt;
mod policies;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use serde_json::{Value, json};

// The gateway's allocator (crates/cli), for the in-process policy engine timing.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const V2026: &str = "2026-07-28";
const V2025: &str = "2025-11-25";
const TEXT: &str = "hello micromcp";

#[derive(Parser, Debug, Clone)]
#[command(about = "Benchmark the micromcp gateway against a direct upstream")]
struct Args {
    /// Concurrent closed-loop clients per mode.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Measured seconds per mode (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Warm-up seconds per mode (requests run but are not counted).
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Eras to run, comma-separated: 2026 (stateless 2026-07-28), 2025 (2025-11-25 sessions).
    #[arg(long, default_value = "2026,2025", value_delimiter = ',')]
    eras: Vec<String>,
    /// Modes to run, comma-separated: direct, gw-http, gw-stdio, gw-stdio-jwt,
    /// gw-stdio-policy100 (ratios need direct).
    #[arg(
        long,
        default_value = "direct,gw-http,gw-stdio,gw-stdio-jwt,gw-stdio-policy100",
        value_delimiter = ','
    )]
    modes: Vec<String>,
    /// Timed `PolicyEngine::authorize` calls per variant of the engine micro-benchmark (run
    /// with the gw-stdio-policy100 mode); 0 skips it.
    #[arg(long, default_value_t = 200_000)]
    engine_calls: usize,
    /// Only the engine micro-benchmark (no load, no memory, no flood).
    #[arg(long)]
    engine_only: bool,
    /// Only write the 100 policies of the policy mode to this file, and the `[[auth.tokens]]`
    /// fields and services they expect to stdout (scripts/bench-instructions uses it).
    #[arg(long)]
    write_policies: Option<PathBuf>,
    /// The protocol the gateway speaks to the HTTP upstream (`protocol` in its config).
    #[arg(long, default_value = "2025-11-25")]
    upstream_protocol: String,
    /// Smoke-test mode: 1 s per mode, short warm-up, 10 services for the memory scaling check.
    #[arg(long)]
    quick: bool,
    /// The `micromcp` binary (else `$MICROMCP_BIN`, else `micromcp` next to this executable).
    #[arg(long)]
    micromcp: Option<PathBuf>,
    /// Stdio services for the idle-memory scaling check (1 vs this many); 0 skips it.
    #[arg(long, default_value_t = 50)]
    services: usize,
    /// Idle connections held against the gateway during the flood measurement (0 with
    /// --attack-slowloris 0 skips it).
    #[arg(long, default_value_t = 10_000)]
    attack_idle: usize,
    /// Slow-header (slowloris) connections held against the gateway during the flood.
    #[arg(long, default_value_t = 1_000)]
    attack_slowloris: usize,
    /// Also write the results as a markdown table to this file.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Only serve the stand-in identity provider: print the gateway config that trusts it and
    /// a token for it, then serve its JWKS until killed (scripts/bench-instructions uses it).
    #[arg(long)]
    serve_jwks: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Era {
    Stateless2026,
    Session2025,
}

impl Era {
    fn parse(s: &str) -> Result<Era> {
        match s.trim() {
            "2026" | "2026-07-28" | "stateless" => Ok(Era::Stateless2026),
            "2025" | "2025-11-25" | "session" => Ok(Era::Session2025),
            other => bail!("unknown era {other:?} (use 2026 or 2025)"),
        }
    }
    fn label(self) -> &'static str {
        match self {
            Era::Stateless2026 => "2026-07-28 stateless",
            Era::Session2025 => "2025-11-25 session",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Mode {
    Direct,
    GatewayHttp,
    GatewayStdio,
    GatewayStdioJwt,
    GatewayStdioPolicy,
}

impl Mode {
    fn parse(s: &str) -> Result<Mode> {
        match s.trim() {
            "direct" | "a" => Ok(Mode::Direct),
            "gw-http" | "b" => Ok(Mode::GatewayHttp),
            "gw-stdio" | "c" => Ok(Mode::GatewayStdio),
            "gw-stdio-jwt" | "d" => Ok(Mode::GatewayStdioJwt),
            "gw-stdio-policy100" | "e" => Ok(Mode::GatewayStdioPolicy),
            other => {
                bail!(
                    "unknown mode {other:?} (use direct, gw-http, gw-stdio, gw-stdio-jwt or \
                     gw-stdio-policy100)"
                )
            }
        }
    }
    fn label(self) -> &'static str {
        match self {
            Mode::Direct => "direct (a)",
            Mode::GatewayHttp => "gw→http (b)",
            Mode::GatewayStdio => "gw→stdio (c)",
            Mode::GatewayStdioJwt => "gw→stdio, JWT (d)",
            Mode::GatewayStdioPolicy => "gw→stdio, 100 policies (e)",
        }
    }
}

/// What one mode measured.
#[derive(Clone, Debug)]
struct Stats {
    requests: usize,
    errors: u64,
    seconds: f64,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
    /// Peak gateway VmRSS (kB) sampled during the run; None for direct.
    peak_rss_kb: Option<u64>,
    /// CPU time (user + system) per completed request, in µs, of: this bench, the gateway
    /// (if any), the upstream echo process.
    cpu_us: [Option<f64>; 3],
    /// Context switches (voluntary + involuntary, all threads) per completed request, of the
    /// same three processes. Unlike CPU time, a count: steal time on a busy VM cannot inflate it.
    switches: [Option<f64>; 3],
}

impl Stats {
    /// req/s, p50, p90, p99, max, errors and peak RSS as markdown table cells.
    fn cells(&self) -> String {
        format!(
            "{:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {}",
            self.rps(),
            self.p50,
            self.p90,
            self.p99,
            self.max,
            self.errors,
            self.peak_rss_kb.map_or_else(|| "—".into(), mib)
        )
    }

    fn rps(&self) -> f64 {
        self.requests as f64 / self.seconds
    }
}

fn main() -> Result<()> {
    let mut args = Args::parse();
    if args.quick {
        args.duration = 1.0;
        args.warmup = 0.5;
        args.services = args.services.min(10);
        args.attack_idle = args.attack_idle.min(1_000);
        args.attack_slowloris = args.attack_slowloris.min(100);
        args.engine_calls = args.engine_calls.min(20_000);
    }
    if let Some(path) = &args.write_policies {
        std::fs::write(path, policies::text())
            .with_context(|| format!("write {}", path.display()))?;
        print!("{}", policies::token_fields());
        return Ok(());
    }
    raise_open_file_limit();
    anyhow::ensure!(args.clients > 0, "--clients must be at least 1");
    let mut eras = args
        .eras
        .iter()
        .map(|e| Era::parse(e))
        .collect::<Result<Vec<_>>>()?;
    eras.dedup();
    let mut modes = args
        .modes
        .iter()
        .map(|m| Mode::parse(m))
        .collect::<Result<Vec<_>>>()?;
    modes.sort();
    modes.dedup();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if args.serve_jwks {
        return rt.block_on(async {
            let issuer = jwt::Issuer::start().await?;
            println!("token {}", issuer.token);
            println!("{}", issuer.config());
            std::future::pending::<Result<()>>().await
        });
    }
    let bin = locate_micromcp(args.micromcp.clone())?;
    if args.engine_only {
        println!("micromcp-bench: {}", bin.display());
        println!("machine: {}", machine_summary());
        let bench = engine::run(&bin, args.engine_calls.max(1))?;
        println!("{}", bench.render());
        return Ok(());
    }
    rt.block_on(run(args, eras, modes, bin))
}

fn locate_micromcp(flag: Option<PathBuf>) -> Result<PathBuf> {
    let candidate = match flag.or_else(|| std::env::var_os("MICROMCP_BIN").map(PathBuf::from)) {
        Some(p) => p,
        None => std::env::current_exe()?
            .parent()
            .context("executable has no folder")?
            .join("micromcp"),
    };
    if !candidate.is_file() {
        bail!(
            "micromcp binary not found at {} — build it first (`cargo build --release -p micromcp`) \
             or pass --micromcp PATH / set MICROMCP_BIN",
            candidate.display()
        );
    }
    Ok(candidate)
}

async fn run(args: Args, eras: Vec<Era>, modes: Vec<Mode>, bin: PathBuf) -> Result<()> {
    println!("micromcp-bench: {}", bin.display());
    println!("machine: {}", machine_summary());
    println!(
        "clients {}, warm-up {} s, measured {} s per mode",
        args.clients, args.warmup, args.duration
    );

    let upstream = HttpEcho::start(&bin)?;
    let gw_http = Gateway::start(
        &bin,
        &service_http(&upstream.url, &args.upstream_protocol),
        &["echo"],
    )
    .await?;
    let gw_stdio = Gateway::start(&bin, SERVICE_STDIO, &["echo"]).await?;
    let issuer = jwt::Issuer::start().await?;
    let gw_jwt = if modes.contains(&Mode::GatewayStdioJwt) {
        let services = format!("{}{SERVICE_STDIO}", issuer.config());
        Some(Gateway::start(&bin, &services, &["echo"]).await?)
    } else {
        None
    };
    let gw_policy = if modes.contains(&Mode::GatewayStdioPolicy) {
        Some(Gateway::start_with_policies(&bin).await?)
    } else {
        None
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_http = rss_kb(gw_http.pid())?;
    let idle_stdio = rss_kb(gw_stdio.pid())?;

    let mut results: BTreeMap<(Era, Mode), Stats> = BTreeMap::new();
    for &era in &eras {
        for &mode in &modes {
            let (url, token, tool, pid) = match mode {
                Mode::Direct => (upstream.url.clone(), None, "echo", None),
                Mode::GatewayHttp => (
                    gw_http.url.clone(),
                    Some(gw_http.token.clone()),
                    "echo.echo",
                    Some(gw_http.pid()),
                ),
                Mode::GatewayStdio => (
                    gw_stdio.url.clone(),
                    Some(gw_stdio.token.clone()),
                    "echo.echo",
                    Some(gw_stdio.pid()),
                ),
                Mode::GatewayStdioJwt => {
                    let gw = gw_jwt.as_ref().context("JWT gateway")?;
                    issuer.check()?;
                    (
                        gw.url.clone(),
                        Some(issuer.token.clone()),
                        "echo.echo",
                        Some(gw.pid()),
                    )
                }
                Mode::GatewayStdioPolicy => {
                    let gw = gw_policy.as_ref().context("policy gateway")?;
                    (
                        gw.url.clone(),
                        Some(gw.token.clone()),
                        "echo.echo",
                        Some(gw.pid()),
                    )
                }
            };
            let target = Target {
                url,
                token,
                tool: tool.to_owned(),
                era,
            };
            let pids = Pids {
                gateway: pid,
                upstream: match mode {
                    Mode::GatewayStdio => child_pids(gw_stdio.pid())
                        .first()
                        .copied()
                        .context("the stdio echo service is not running")?,
                    Mode::GatewayStdioJwt => gw_jwt
                        .as_ref()
                        .and_then(|gw| child_pids(gw.pid()).first().copied())
                        .context("the stdio echo service (JWT gateway) is not running")?,
                    // Its children are echo, fs and web: charge the echo.
                    Mode::GatewayStdioPolicy => gw_policy
                        .as_ref()
                        .and_then(|gw| echo_child(gw.pid()))
                        .context("the stdio echo service (policy gateway) is not running")?,
                    _ => upstream.child.id(),
                },
            };
            let stats = load(&target, &args, pids)
                .await
                .with_context(|| format!("{} {}", era.label(), mode.label()))?;
            eprintln!(
                "  {:<22} {:<13} {:>9.0} req/s  p50 {:>7.1} µs  p99 {:>8.1} µs  errors {}",
                era.label(),
                mode.label(),
                stats.rps(),
                stats.p50,
                stats.p99,
                stats.errors
            );
            results.insert((era, mode), stats);
        }
    }
    let flood = if args.attack_idle + args.attack_slowloris > 0 {
        Some(
            under_flood(&args, &gw_stdio)
                .await
                .context("flood measurement")?,
        )
    } else {
        None
    };
    drop(gw_http);
    drop(gw_stdio);
    drop(gw_jwt);
    drop(gw_policy);
    drop(issuer);
    let engine = if modes.contains(&Mode::GatewayStdioPolicy) && args.engine_calls > 0 {
        let bench = engine::run(&bin, args.engine_calls).context("policy engine")?;
        eprintln!(
            "  policy engine alone: grant p50 {:.2} µs p99 {:.2} µs; 100 policies p50 {:.2} µs p99 {:.2} µs",
            bench.timings[0].quantile_us(0.5),
            bench.timings[0].quantile_us(0.99),
            bench.timings[1].quantile_us(0.5),
            bench.timings[1].quantile_us(0.99),
        );
        Some(bench)
    } else {
        None
    };
    drop(upstream);

    let scaling = if args.services > 0 {
        Some(memory_scaling(&bin, args.services).await?)
    } else {
        None
    };

    let mut report = render(&args, &eras, &results, idle_http, idle_stdio, scaling);
    if let Some(engine) = &engine {
        report += &engine.render();
    }
    if let Some(flood) = &flood {
        report += &flood.render();
    }
    println!("{report}");
    if let Some(path) = &args.markdown {
        std::fs::write(path, &report).with_context(|| format!("write {}", path.display()))?;
    }
    let errors: u64 = results.values().map(|s| s.errors).sum::<u64>()
        + flood
            .as_ref()
            .map_or(0, |f| f.baseline.errors + f.attacked.errors);
    if errors > 0 {
        bail!("{errors} requests failed");
    }
    Ok(())
}

/// Raises this process's soft open-file limit to the hard one (the flood holds 11,000 sockets).
fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

// ---------------------------------------------------------------------------------------------
// Flood

/// One client's latency through the gateway (stdio echo, 2026 era), alone and under the flood.
struct Flood {
    idle: usize,
    slow: usize,
    baseline: Stats,
    attacked: Stats,
    open_idle: u64,
    open_slow: u64,
    reopened: u64,
    /// The gateway's open file descriptors at the end of the flood.
    gateway_fds: Option<usize>,
}

async fn under_flood(args: &Args, gw: &Gateway) -> Result<Flood> {
    let one = Args {
        clients: 1,
        ..args.clone()
    };
    let target = Target {
        url: gw.url.clone(),
        token: Some(gw.token.clone()),
        tool: "echo.echo".into(),
        era: Era::Stateless2026,
    };
    let pids = Pids {
        gateway: Some(gw.pid()),
        upstream: child_pids(gw.pid())
            .first()
            .copied()
            .context("the stdio echo service is not running")?,
    };
    let baseline = load(&target, &one, pids).await?;
    let address: std::net::SocketAddr = gw
        .url
        .trim_start_matches("http://")
        .trim_end_matches("/mcp")
        .parse()?;
    let pressure = Arc::new(attack::Pressure::default());
    let stop = Arc::new(AtomicBool::new(false));
    let flood = tokio::spawn(attack::flood(
        address,
        args.attack_idle,
        args.attack_slowloris,
        pressure.clone(),
        stop.clone(),
    ));
    // Let the first wave connect (the attacker opens everything once, then keeps reopening).
    let wanted = (args.attack_idle + args.attack_slowloris) as u64;
    let deadline = Instant::now() + Duration::from_secs(30);
    while pressure.open_idle.load(Ordering::Relaxed)
        + pressure.open_slow.load(Ordering::Relaxed)
        + pressure.reopened.load(Ordering::Relaxed)
        < wanted
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let attacked = load(&target, &one, pids).await;
    let gateway_fds = std::fs::read_dir(format!("/proc/{}/fd", gw.pid()))
        .map(Iterator::count)
        .ok();
    let (open_idle, open_slow, reopened) = (
        pressure.open_idle.load(Ordering::Relaxed),
        pressure.open_slow.load(Ordering::Relaxed),
        pressure.reopened.load(Ordering::Relaxed),
    );
    stop.store(true, Ordering::Relaxed);
    let _ = flood.await;
    let attacked = attacked?;
    eprintln!(
        "  flood ({} idle + {} slowloris)   1 client  p50 {:>7.1} µs (alone {:.1})  p99 {:>8.1} µs (alone {:.1})  errors {}",
        args.attack_idle,
        args.attack_slowloris,
        attacked.p50,
        baseline.p50,
        attacked.p99,
        baseline.p99,
        attacked.errors
    );
    Ok(Flood {
        idle: args.attack_idle,
        slow: args.attack_slowloris,
        baseline,
        attacked,
        open_idle,
        open_slow,
        reopened,
        gateway_fds,
    })
}

impl Flood {
    fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "\n## One legitimate client under a connection flood (gw→stdio, 2026-07-28)\n\n\
             {} idle and {} slow-header connections from {} loopback addresses, reopened every \
             0.5 s when the gateway closes them (default limits: 4096 connections, 256 per \
             address, 10 s header timeout). At the end of the measurement the attacker saw {} \
             idle and {} slow connections established (the kernel completes connections into \
             the listen backlog before the gateway accepts them) and had reopened {} that the \
             gateway closed; the gateway itself had {} file descriptors open.\n",
            self.idle,
            self.slow,
            self.idle.div_ceil(250) + self.slow.div_ceil(250),
            self.open_idle,
            self.open_slow,
            self.reopened,
            self.gateway_fds
                .map_or_else(|| "—".into(), |n| n.to_string())
        );
        let _ = writeln!(
            s,
            "| client | req/s | p50 µs | p90 µs | p99 µs | max µs | errors | gateway peak RSS |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|");
        for (label, st) in [
            ("alone", &self.baseline),
            ("under the flood", &self.attacked),
        ] {
            let _ = writeln!(s, "| {label} | {} |", st.cells());
        }
        s
    }
}

// ---------------------------------------------------------------------------------------------
// Load

struct Target {
    url: String,
    token: Option<String>,
    tool: String,
    era: Era,
}

/// One virtual client: its own HTTP client (its own keep-alive connection) and session.
struct VClient {
    http: reqwest::Client,
    url: String,
    token: Option<String>,
    session: Option<String>,
    tool: String,
    era: Era,
    next_id: u64,
}

impl VClient {
    async fn new(t: &Target) -> Result<VClient> {
        let http = reqwest::Client::builder().no_proxy().build()?;
        let mut c = VClient {
            http,
            url: t.url.clone(),
            token: t.token.clone(),
            session: None,
            tool: t.tool.clone(),
            era: t.era,
            next_id: 0,
        };
        if t.era == Era::Session2025 {
            c.initialize().await?;
        }
        Ok(c)
    }

    fn post(&self, body: String) -> reqwest::RequestBuilder {
        let mut r = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body);
        if let Some(t) = &self.token {
            r = r.header("authorization", format!("Bearer {t}"));
        }
        if let Some(s) = &self.session {
            r = r
                .header("mcp-session-id", s)
                .header("mcp-protocol-version", V2025);
        }
        r
    }

    async fn initialize(&mut self) -> Result<()> {
        let body = json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
            "protocolVersion":V2025,"capabilities":{},"clientInfo":{"name":"micromcp-bench","version":"0"}}});
        let r = self.post(body.to_string()).send().await?;
        let status = r.status();
        let session = r
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = r.text().await?;
        if !status.is_success() {
            bail!("initialize: HTTP {status}: {text}");
        }
        self.session = Some(session.ok_or_else(|| anyhow!("initialize: no Mcp-Session-Id"))?);
        let note = json!({"jsonrpc":"2.0","method":"notifications/initialized"});
        let r = self.post(note.to_string()).send().await?;
        if !r.status().is_success() {
            bail!("notifications/initialized: HTTP {}", r.status());
        }
        let _ = r.bytes().await?;
        Ok(())
    }

    /// One `tools/call`; Ok(()) only for a successful echo of the text.
    async fn call(&mut self) -> Result<()> {
        self.next_id += 1;
        let mut params = json!({"name": self.tool, "arguments": {"text": TEXT}});
        let mut req = match self.era {
            Era::Stateless2026 => {
                params["_meta"] = json!({
                    "io.modelcontextprotocol/protocolVersion": V2026,
                    "io.modelcontextprotocol/clientCapabilities": {}
                });
                let body = json!({"jsonrpc":"2.0","id":self.next_id,"method":"tools/call","params":params});
                self.post(body.to_string())
                    .header("mcp-protocol-version", V2026)
                    .header("mcp-method", "tools/call")
                    .header("mcp-name", &self.tool)
            }
            Era::Session2025 => {
                let body = json!({"jsonrpc":"2.0","id":self.next_id,"method":"tools/call","params":params});
                self.post(body.to_string())
            }
        };
        req = req.timeout(Duration::from_secs(30));
        let r = req.send().await?;
        let status = r.status();
        let text = r.text().await?;
        if !status.is_success() {
            bail!("HTTP {status}: {text}");
        }
        // A cheap check (full parsing would tax the shared CPU): a result that echoes the text.
        if !text.contains("\"result\"") || !text.contains(TEXT) || text.contains("\"isError\":true")
        {
            bail!("unexpected reply: {text}");
        }
        Ok(())
    }
}

/// Processes whose CPU time is charged per request: the gateway (if any) and the upstream.
#[derive(Clone, Copy)]
struct Pids {
    gateway: Option<u32>,
    upstream: u32,
}

async fn load(target: &Target, args: &Args, pids: Pids) -> Result<Stats> {
    let gateway_pid = pids.gateway;
    let mut clients = Vec::with_capacity(args.clients);
    for _ in 0..args.clients {
        clients.push(VClient::new(target).await?);
    }
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(args.warmup);
    let measure_to = measure_from + Duration::from_secs_f64(args.duration);
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));

    // Peak RSS of the gateway, sampled every 50 ms while the load runs.
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = gateway_pid.map(|pid| {
        let sampling = sampling.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while sampling.load(Ordering::Relaxed) {
                peak = peak.max(rss_kb(pid).unwrap_or(0));
                std::thread::sleep(Duration::from_millis(50));
            }
            peak
        })
    });

    let mut tasks = Vec::new();
    for mut c in clients {
        let errors = errors.clone();
        let first_error = first_error.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(65536);
            loop {
                let t0 = Instant::now();
                if t0 >= measure_to {
                    break;
                }
                let r = c.call().await;
                let t1 = Instant::now();
                match r {
                    Ok(()) if t0 >= measure_from && t1 <= measure_to => {
                        lat.push(u32::try_from((t1 - t0).as_nanos() / 100).unwrap_or(u32::MAX))
                    }
                    Ok(()) => {}
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        first_error
                            .lock()
                            .expect("lock")
                            .get_or_insert_with(|| format!("{e:#}"));
                        // Do not spin on a broken target.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            lat
        }));
    }
    // CPU accounting over exactly the measured window.
    let all = [Some(std::process::id()), pids.gateway, Some(pids.upstream)];
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu_from = all.map(|p| p.and_then(cpu_ticks));
    let switches_from = all.map(|p| p.and_then(context_switches));
    tokio::time::sleep_until(measure_to.into()).await;
    let cpu_to = all.map(|p| p.and_then(cpu_ticks));
    let switches_to = all.map(|p| p.and_then(context_switches));
    let mut lat: Vec<u32> = Vec::new();
    for t in tasks {
        lat.extend(t.await?);
    }
    sampling.store(false, Ordering::Relaxed);
    let peak_rss_kb = match sampler {
        Some(h) => Some(h.join().map_err(|_| anyhow!("sampler panicked"))?),
        None => None,
    };
    let errors = errors.load(Ordering::Relaxed);
    if let Some(e) = first_error.lock().expect("lock").take() {
        eprintln!("  first error: {e}");
    }
    if lat.is_empty() {
        bail!("no request completed in the measured window ({errors} errors)");
    }
    let tick_us = 1e6 / clock_ticks_per_second();
    let requests = lat.len() as f64;
    let cpu_us = [0, 1, 2].map(|i| match (cpu_from[i], cpu_to[i]) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 * tick_us / requests),
        _ => None,
    });
    let switches = [0, 1, 2].map(|i| match (switches_from[i], switches_to[i]) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / requests),
        _ => None,
    });
    lat.sort_unstable();
    // Samples are in units of 100 ns; report microseconds.
    let pct = |p: f64| {
        let i = ((p * lat.len() as f64).ceil() as usize).clamp(1, lat.len()) - 1;
        f64::from(lat[i]) / 10.0
    };
    Ok(Stats {
        requests: lat.len(),
        errors,
        seconds: args.duration,
        p50: pct(0.50),
        p90: pct(0.90),
        p99: pct(0.99),
        max: pct(1.0),
        peak_rss_kb,
        cpu_us,
        switches,
    })
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // After the command: state(0) ppid(1) … utime(11) stime(12).
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Context switches of every thread of a process so far (`/proc/<pid>/task/*/status`).
/// Threads that already exited are not counted; the gateway's threads live as long as it does.
fn context_switches(pid: u32) -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let status = std::fs::read_to_string(task.ok()?.path().join("status")).ok()?;
        for line in status.lines() {
            if let Some(count) = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                total += count.trim().parse::<u64>().ok()?;
            }
        }
    }
    Some(total)
}

/// `getconf CLK_TCK`; 100 on every Linux this runs on.
fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

// ---------------------------------------------------------------------------------------------
// Processes

/// Grants the bench principal every tool of the listed services.
fn grant(services: &[&str]) -> String {
    let tools: Vec<String> = services.iter().map(|s| format!("\"{s}.*\"")).collect();
    format!(
        "\n[[policy.grants]]\nprincipal = \"bench\"\ntools = [{}]\n",
        tools.join(", ")
    )
}

const SERVICE_STDIO: &str = r#"
[services.echo]
builtin = "echo"
"#;

fn service_http(url: &str, protocol: &str) -> String {
    format!("\n[services.echo]\nurl = \"{url}\"\nprotocol = \"{protocol}\"\n")
}

/// `micromcp serve echo --http 127.0.0.1:0`; killed when dropped.
struct HttpEcho {
    child: Child,
    url: String,
}

impl HttpEcho {
    fn start(bin: &Path) -> Result<HttpEcho> {
        let mut child = Command::new(bin)
            .args(["serve", "echo", "--http", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        let mut reader = BufReader::new(child.stderr.take().context("stderr")?);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let Some(url) = line.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            bail!("echo upstream did not start: {line:?}");
        };
        let url = url.to_owned();
        std::thread::spawn(move || for _ in reader.lines() {});
        Ok(HttpEcho { child, url })
    }
}

impl Drop for HttpEcho {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A gateway with its own temp folder (config, audit log) and bearer token; SIGTERM on drop.
struct Gateway {
    child: Child,
    _dir: tempfile::TempDir,
    url: String,
    token: String,
}

impl Gateway {
    /// A gateway whose bench principal has the grant `<service>.*` for each of `wait_for`.
    async fn start(bin: &Path, services: &str, wait_for: &[&str]) -> Result<Gateway> {
        let dir = tempfile::tempdir()?;
        Self::start_in(
            bin,
            dir,
            "",
            &format!("{}{services}", grant(wait_for)),
            wait_for,
        )
        .await
    }

    /// The policy mode's gateway: no grant; the 100 policies of [`policies`] decide, in front
    /// of the same stdio echo (and the idle `fs` and `web` services they also name); the bench
    /// principal has the agent, tenant and roles the policies expect.
    async fn start_with_policies(bin: &Path) -> Result<Gateway> {
        let dir = tempfile::tempdir()?;
        let root = dir.path().join("files");
        std::fs::create_dir_all(root.join("public"))?;
        std::fs::write(root.join("public/readme.txt"), "public\n")?;
        let file = dir.path().join("policies.cedar");
        std::fs::write(&file, policies::text())?;
        let body = format!(
            "\n[policy]\nfiles = [\"{}\"]\n{}",
            file.display(),
            policies::services(&root.display().to_string())
        );
        Self::start_in(
            bin,
            dir,
            &policies::token_fields(),
            &body,
            &["echo", "fs", "web"],
        )
        .await
    }

    /// Writes the config (listen, audit, the bench token with `token_fields`, then `body`) into
    /// `dir` and starts the gateway; ready when every service of `wait_for` is.
    async fn start_in(
        bin: &Path,
        dir: tempfile::TempDir,
        token_fields: &str,
        body: &str,
        wait_for: &[&str],
    ) -> Result<Gateway> {
        let (token, hash) = micromcp_auth::new_token()?;
        let audit = dir.path().join("audit.jsonl");
        let config = format!(
            "[listen]\naddr = \"127.0.0.1:0\"\n\n[audit]\nfile = \"{}\"\n\n[[auth.tokens]]\n\
             principal = \"bench\"\nhash = \"{hash}\"\n{token_fields}{body}",
            audit.display(),
        );
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, config)?;
        let mut child = Command::new(bin)
            .args(["gateway", "--config"])
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        let (tx, rx) = std::sync::mpsc::channel();
        let pipe = child.stderr.take().context("stderr")?;
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            let mut early = Vec::new();
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("micromcp: listening on ") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(Ok(url.to_owned()));
                    }
                } else if tx.is_some() {
                    early.push(line);
                }
            }
            if let Some(tx) = tx {
                let _ = tx.send(Err(early.join("\n")));
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(url)) => url,
            Ok(Err(stderr)) => {
                let _ = child.kill();
                bail!("gateway exited before listening; stderr:\n{stderr}");
            }
            Err(_) => {
                let _ = child.kill();
                bail!("gateway did not print its address within 30 s");
            }
        };
        let gw = Gateway {
            child,
            _dir: dir,
            url,
            token,
        };
        gw.wait_ready(wait_for).await?;
        Ok(gw)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn wait_ready(&self, services: &[&str]) -> Result<()> {
        let http = reqwest::Client::builder().no_proxy().build()?;
        let readyz = self.url.replace("/mcp", "/readyz");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let body: Value = serde_json::from_str(&http.get(&readyz).send().await?.text().await?)?;
            if services.iter().all(|s| body["services"][s] == "ready") {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("services not ready after 60 s: {body}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(0));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Memory

fn rss_kb(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS for pid {pid}"))
}

/// Direct children of `pid`: (count, summed VmRSS in kB).
fn children(pid: u32) -> (usize, u64) {
    let kids = child_pids(pid);
    let rss = kids.iter().map(|&k| rss_kb(k).unwrap_or(0)).sum();
    (kids.len(), rss)
}

/// The child of `pid` that runs `micromcp serve echo`.
fn echo_child(pid: u32) -> Option<u32> {
    child_pids(pid).into_iter().find(|&child| {
        std::fs::read(format!("/proc/{child}/cmdline")).is_ok_and(|cmdline| {
            let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            args.windows(2).any(|w| w == [b"serve".as_slice(), b"echo"])
        })
    })
}

/// The pids whose parent is `pid`.
fn child_pids(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Some(child) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // Fields after the parenthesised command: state, ppid, …
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(child);
        }
    }
    out
}

#[derive(Debug)]
struct Idle {
    services: usize,
    gateway_kb: u64,
    children: usize,
    children_kb: u64,
}

async fn memory_scaling(bin: &Path, many: usize) -> Result<Vec<Idle>> {
    let mut out = Vec::new();
    for n in [1, many] {
        let names: Vec<String> = (1..=n).map(|i| format!("echo{i}")).collect();
        let services: String = names
            .iter()
            .map(|s| format!("\n[services.{s}]\nbuiltin = \"echo\"\n"))
            .collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let gw = Gateway::start(bin, &services, &refs).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let gateway_kb = rss_kb(gw.pid())?;
        let (children, children_kb) = children(gw.pid());
        out.push(Idle {
            services: n,
            gateway_kb,
            children,
            children_kb,
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Report

fn machine_summary() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem_kb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0);
    format!(
        "{cpus} CPUs, {model}, {:.1} GiB RAM",
        mem_kb as f64 / 1024.0 / 1024.0
    )
}

fn mib(kb: u64) -> String {
    format!("{:.1} MiB", kb as f64 / 1024.0)
}

fn render(
    args: &Args,
    eras: &[Era],
    results: &BTreeMap<(Era, Mode), Stats>,
    idle_http: u64,
    idle_stdio: u64,
    scaling: Option<Vec<Idle>>,
) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n## Results ({} clients, {} s measured per mode after {} s warm-up)\n",
        args.clients, args.duration, args.warmup
    );
    let _ = writeln!(
        s,
        "| era | mode | req/s | p50 µs | p90 µs | p99 µs | max µs | errors | gateway peak RSS |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for (&(era, mode), st) in results {
        let _ = writeln!(s, "| {} | {} | {} |", era.label(), mode.label(), st.cells());
    }
    let _ = writeln!(
        s,
        "\n## CPU time per request (user + system, µs; 2 CPUs are shared by all three)\n"
    );
    let _ = writeln!(
        s,
        "| era | mode | bench client | gateway | upstream echo | total | gateway context switches |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|");
    for (&(era, mode), st) in results {
        let cell = |v: Option<f64>| v.map_or_else(|| "—".into(), |v| format!("{v:.1}"));
        let total: f64 = st.cpu_us.iter().flatten().sum();
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {:.1} | {} |",
            era.label(),
            mode.label(),
            cell(st.cpu_us[0]),
            cell(st.cpu_us[1]),
            cell(st.cpu_us[2]),
            total,
            st.switches[1].map_or_else(|| "—".into(), |v| format!("{v:.2}/req")),
        );
    }
    let _ = writeln!(s, "\n## Gateway cost relative to direct\n");
    let _ = writeln!(
        s,
        "| era | via | throughput vs direct | added p50 µs | added p99 µs |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|");
    for &era in eras {
        let Some(a) = results.get(&(era, Mode::Direct)) else {
            continue;
        };
        for mode in [
            Mode::GatewayHttp,
            Mode::GatewayStdio,
            Mode::GatewayStdioJwt,
            Mode::GatewayStdioPolicy,
        ] {
            if let Some(x) = results.get(&(era, mode)) {
                let _ = writeln!(
                    s,
                    "| {} | {} | {:.0} % | {:+.1} | {:+.1} |",
                    era.label(),
                    mode.label(),
                    100.0 * x.rps() / a.rps(),
                    x.p50 - a.p50,
                    x.p99 - a.p99
                );
            }
        }
    }
    let jwt_rows: Vec<String> = eras
        .iter()
        .filter_map(|&era| {
            let token = results.get(&(era, Mode::GatewayStdio))?.cpu_us[1]?;
            let jwt = results.get(&(era, Mode::GatewayStdioJwt))?.cpu_us[1]?;
            Some(format!(
                "| {} | {token:.1} | {jwt:.1} | {:+.1} |",
                era.label(),
                jwt - token
            ))
        })
        .collect();
    if !jwt_rows.is_empty() {
        let _ = writeln!(
            s,
            "\n## Authentication cost: gateway CPU per call, API token (c) vs OIDC JWT (d)\n"
        );
        let _ = writeln!(s, "| era | API token µs | JWT µs | JWT − token µs |");
        let _ = writeln!(s, "|---|---:|---:|---:|");
        for row in jwt_rows {
            let _ = writeln!(s, "{row}");
        }
    }
    let policy_rows: Vec<String> = eras
        .iter()
        .filter_map(|&era| {
            let grant = results.get(&(era, Mode::GatewayStdio))?.cpu_us[1]?;
            let policies = results.get(&(era, Mode::GatewayStdioPolicy))?.cpu_us[1]?;
            Some(format!(
                "| {} | {grant:.1} | {policies:.1} | {:+.1} |",
                era.label(),
                policies - grant
            ))
        })
        .collect();
    if !policy_rows.is_empty() {
        let _ = writeln!(
            s,
            "\n## Policy cost: gateway CPU per call, one grant (c) vs 100 Cedar policies (e)\n"
        );
        let _ = writeln!(
            s,
            "| era | grant µs | 100 policies µs | policies − grant µs |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|");
        for row in policy_rows {
            let _ = writeln!(s, "{row}");
        }
    }
    let _ = writeln!(s, "\n## Gateway memory (VmRSS of the gateway process)\n");
    let _ = writeln!(s, "| state | gateway RSS | children | children RSS |");
    let _ = writeln!(s, "|---|---:|---:|---:|");
    let _ = writeln!(s, "| idle, 1 HTTP upstream | {} | 0 | — |", mib(idle_http));
    let _ = writeln!(
        s,
        "| idle, 1 stdio service (echo) | {} | 1 | — |",
        mib(idle_stdio)
    );
    for (mode, label) in [
        (Mode::GatewayHttp, "peak under load, HTTP upstream"),
        (Mode::GatewayStdio, "peak under load, stdio service"),
    ] {
        let peak = results
            .iter()
            .filter(|((_, m), _)| *m == mode)
            .filter_map(|(_, st)| st.peak_rss_kb)
            .max();
        if let Some(peak) = peak {
            let _ = writeln!(s, "| {label} | {} | | |", mib(peak));
        }
    }
    for idle in scaling.unwrap_or_default() {
        let _ = writeln!(
            s,
            "| idle, {} stdio services | {} | {} | {} |",
            idle.services,
            mib(idle.gateway_kb),
            idle.children,
            mib(idle.children_kb)
        );
    }
    s
}
