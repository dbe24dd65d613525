//! The policy engine alone: `PolicyEngine::authorize` for the benchmarked call, timed one call
//! at a time in a loop, with the config's grant (what gw-stdio runs) and with the 100 policies
//! of [`crate::policies`] (what gw-stdio-policy100 runs), against the live catalogs of the
//! services those policies name (each service started once over stdio and asked `tools/list`).
//!
//! Per-call times are wall-clock (`Instant`) around one `authorize`; the thread's CPU time over
//! the whole loop gives the mean without preemption. A timing loop, not a test: nothing here
//! asserts a duration.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use micromcp_auth::{AuthMethod, Principal};
use micromcp_config::Grant;
use micromcp_policy::{Action, Authorizer, Kind, PolicyEngine, RequestContext, ToolEntry};
use serde_json::{Map, Value, json};

use crate::policies;

/// One variant's per-call times (ns, sorted) and the thread CPU time per call.
pub struct Timing {
    pub label: &'static str,
    /// The policies that decided (from the last call), and the decision.
    pub decided_by: String,
    pub allowed: bool,
    sorted_ns: Vec<u32>,
    pub cpu_ns_per_call: f64,
}

impl Timing {
    /// The `p`-quantile in µs (nearest rank).
    pub fn quantile_us(&self, p: f64) -> f64 {
        let n = self.sorted_ns.len();
        let i = ((p * n as f64).ceil() as usize).clamp(1, n) - 1;
        f64::from(self.sorted_ns[i]) / 1000.0
    }

    pub fn mean_us(&self) -> f64 {
        self.sorted_ns.iter().map(|&v| f64::from(v)).sum::<f64>()
            / self.sorted_ns.len() as f64
            / 1000.0
    }
}

pub struct EngineBench {
    pub calls: usize,
    pub tools: usize,
    pub timings: Vec<Timing>,
}

/// `micromcp serve <args>` over stdio: its `tools/list`, as the gateway's catalog keeps it.
fn list_tools(bin: &Path, args: &[&str]) -> Result<Vec<ToolEntry>> {
    let mut child = Command::new(bin)
        .arg("serve")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("start micromcp serve {}", args.join(" ")))?;
    let result = (|| {
        let mut stdin = child.stdin.take().context("stdin")?;
        let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
        let mut send = |v: Value| writeln!(stdin, "{v}");
        send(
            json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "micromcp-bench", "version": "0"}}}),
        )?;
        let mut answer = |id: u64| -> Result<Value> {
            for line in lines.by_ref() {
                let v: Value = serde_json::from_str(&line?)?;
                if v["id"] == id {
                    return Ok(v);
                }
            }
            bail!("micromcp serve {} closed its output", args.join(" "))
        };
        answer(1)?;
        send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))?;
        send(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}))?;
        let list = answer(2)?;
        let tools = list["result"]["tools"]
            .as_array()
            .with_context(|| format!("tools/list of {}: {list}", args.join(" ")))?;
        Ok(tools
            .iter()
            .filter_map(|t| t.as_object().and_then(ToolEntry::from_listed))
            .collect())
    })();
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// The catalog of the policy gateway's services (see [`policies::services`]).
fn catalog(bin: &Path, root: &Path) -> Result<Vec<(&'static str, Vec<ToolEntry>)>> {
    let root = root.to_str().context("temp path is not UTF-8")?;
    Ok(vec![
        ("echo", list_tools(bin, &["echo"])?),
        ("fs", list_tools(bin, &["fs", "--root", root])?),
        (
            "web",
            list_tools(
                bin,
                &["fetch", "--allow", "docs.rs", "--allow", "*.wikipedia.org"],
            )?,
        ),
    ])
}

fn engine(
    grants: Vec<Grant>,
    files: Vec<std::path::PathBuf>,
    catalog: &[(&str, Vec<ToolEntry>)],
) -> Result<PolicyEngine> {
    let engine = PolicyEngine::from_parts(".".into(), grants, vec![], files)
        .map_err(|e| anyhow::anyhow!("policies do not load:\n  {}", e.join("\n  ")))?;
    for (service, tools) in catalog {
        engine.set_catalog(service, tools.clone());
    }
    engine
        .check()
        .map_err(|e| anyhow::anyhow!("policies do not validate:\n  {}", e.join("\n  ")))?;
    Ok(engine)
}

/// The grant every gw-stdio gateway has (see `grant` in main.rs).
fn bench_grant() -> Grant {
    Grant {
        principal: Some("bench".into()),
        agent: None,
        issuer: None,
        tenant: None,
        roles: vec![],
        scopes: vec![],
        tools: vec!["echo.*".into()],
        prompts: vec![],
        resources: vec![],
    }
}

/// The bench principal of the policy gateway (its `[[auth.tokens]]` entry).
pub fn policy_principal() -> Principal {
    let mut p = Principal::named("bench", Some(policies::AGENT), AuthMethod::ApiToken);
    p.tenant = Some(policies::TENANT.into());
    p.roles = policies::ROLES.iter().map(|r| (*r).to_owned()).collect();
    p
}

/// Who calls in a timed loop.
#[derive(Clone, Copy)]
enum Callers {
    /// The same caller every time (as the load modes).
    Same,
    /// A caller of another name (same roles, agent, tenant) every time: nothing the engine
    /// keeps per caller and tool helps. Making it is inside the thread CPU, outside the timer.
    NewEach,
}

fn time(
    label: &'static str,
    engine: &PolicyEngine,
    principal: &Principal,
    callers: Callers,
    text: &str,
    calls: usize,
) -> Result<Timing> {
    let arguments: Map<String, Value> = [("text".to_owned(), Value::from(text))]
        .into_iter()
        .collect();
    let action = Action {
        kind: Kind::Tool,
        service: "echo",
        name: "echo",
        arguments: Some(&arguments),
    };
    let context = |now| RequestContext {
        transport: "http",
        protocol_version: "2026-07-28",
        client_ip: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        session: None,
        now,
    };
    let caller = |i: usize| match callers {
        Callers::Same => std::borrow::Cow::Borrowed(principal),
        Callers::NewEach => {
            let mut p = principal.clone();
            p.user = format!("caller-{i}");
            std::borrow::Cow::Owned(p)
        }
    };
    // Warm-up: caches, the allocator, the branch predictor.
    let warm_up = calls.div_ceil(20).max(100);
    let mut last = None;
    for i in 0..warm_up {
        let context = context(SystemTime::now());
        last = Some(engine.authorize(&caller(i), action, &context)?);
    }
    let mut sorted_ns = Vec::with_capacity(calls);
    let cpu_from = thread_cpu();
    for i in warm_up..warm_up + calls {
        let context = context(SystemTime::now());
        let principal = caller(i);
        let t0 = Instant::now();
        let decision = engine.authorize(&principal, action, &context);
        let elapsed = t0.elapsed();
        sorted_ns.push(u32::try_from(elapsed.as_nanos()).unwrap_or(u32::MAX));
        last = Some(decision?);
    }
    let cpu = thread_cpu().saturating_sub(cpu_from);
    sorted_ns.sort_unstable();
    let last = last.context("no call")?;
    Ok(Timing {
        label,
        decided_by: last.rule.clone(),
        allowed: last.allowed,
        sorted_ns,
        cpu_ns_per_call: cpu.as_nanos() as f64 / calls as f64,
    })
}

/// The benchmarked call must be allowed whatever the time (the policies have time windows):
/// every hour of a week, in and out of the change freeze.
fn allowed_all_week(engine: &PolicyEngine, principal: &Principal) -> Result<()> {
    let arguments: Map<String, Value> = [("text".to_owned(), Value::from(crate::TEXT))]
        .into_iter()
        .collect();
    let action = Action {
        kind: Kind::Tool,
        service: "echo",
        name: "echo",
        arguments: Some(&arguments),
    };
    // 2026-12-21T00:00:00Z, a Monday four days before the freeze; two weeks from there.
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_797_811_200);
    for hour in 0..24 * 14 {
        let context = RequestContext {
            transport: "http",
            protocol_version: "2026-07-28",
            client_ip: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            session: None,
            now: start + Duration::from_secs(3600 * hour),
        };
        let decision = engine.authorize(principal, action, &context)?;
        if !decision.allowed || decision.policies != ["support-echo"] {
            bail!(
                "the benchmarked call is not allowed by support-echo alone {} h after \
                 2026-12-21T00:00Z: {decision:?}",
                hour
            );
        }
    }
    Ok(())
}

/// This thread's CPU time so far.
fn thread_cpu() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(Duration::from)
        .unwrap_or_default()
}

// One function per variant, never inlined, so a profile can be limited to one of them
// (`valgrind --tool=callgrind --toggle-collect='*engine::time_policies*'`).

#[inline(never)]
fn time_grant(engine: &PolicyEngine, principal: &Principal, calls: usize) -> Result<Timing> {
    let label = "grant only (as gw-stdio)";
    time(label, engine, principal, Callers::Same, crate::TEXT, calls)
}

#[inline(never)]
fn time_policies(engine: &PolicyEngine, principal: &Principal, calls: usize) -> Result<Timing> {
    let label = "100 policies, allowed (as gw-stdio-policy100)";
    time(label, engine, principal, Callers::Same, crate::TEXT, calls)
}

#[inline(never)]
fn time_forbid(engine: &PolicyEngine, principal: &Principal, calls: usize) -> Result<Timing> {
    let label = "100 policies, refused by a forbid";
    let text = "hello AKIAIOSFODNN7EXAMPLE";
    time(label, engine, principal, Callers::Same, text, calls)
}

#[inline(never)]
fn time_new_callers(engine: &PolicyEngine, principal: &Principal, calls: usize) -> Result<Timing> {
    let label = "100 policies, allowed, a new caller each call";
    time(
        label,
        engine,
        principal,
        Callers::NewEach,
        crate::TEXT,
        calls,
    )
}

/// Runs the four variants, `calls` timed calls each.
pub fn run(bin: &Path, calls: usize) -> Result<EngineBench> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("files");
    std::fs::create_dir_all(&root)?;
    let catalog = catalog(bin, &root)?;
    let tools = catalog.iter().map(|(_, t)| t.len()).sum();
    let file = dir.path().join("policies.cedar");
    std::fs::write(&file, policies::text())?;

    let grants = engine(vec![bench_grant()], vec![], &catalog)?;
    let hundred = engine(vec![], vec![file], &catalog)?;
    let token = Principal::named("bench", None, AuthMethod::ApiToken);
    let bench = policy_principal();
    allowed_all_week(&hundred, &bench)?;
    let timings = vec![
        time_grant(&grants, &token, calls)?,
        time_policies(&hundred, &bench, calls)?,
        time_forbid(&hundred, &bench, calls)?,
        time_new_callers(&hundred, &bench, calls)?,
    ];
    for (t, allowed) in timings.iter().zip([true, true, false, true]) {
        if t.allowed != allowed {
            bail!(
                "{}: expected {}, the engine said {} ({})",
                t.label,
                if allowed { "allowed" } else { "refused" },
                if t.allowed { "allowed" } else { "refused" },
                t.decided_by
            );
        }
    }
    Ok(EngineBench {
        calls,
        tools,
        timings,
    })
}

impl EngineBench {
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "\n## Policy engine alone: `PolicyEngine::authorize` of echo.echo ({} timed calls per \
             row, one thread; catalog of {} tools)\n",
            self.calls, self.tools
        );
        let _ = writeln!(
            s,
            "| policies | decided by | p50 µs | p90 µs | p99 µs | p99.9 µs | max µs | mean µs | thread CPU µs/call |"
        );
        let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|---:|");
        for t in &self.timings {
            let _ = writeln!(
                s,
                "| {} | {}{} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} | {:.2} | {:.2} |",
                t.label,
                if t.allowed { "allow: " } else { "deny: " },
                t.decided_by,
                t.quantile_us(0.50),
                t.quantile_us(0.90),
                t.quantile_us(0.99),
                t.quantile_us(0.999),
                t.quantile_us(1.0),
                t.mean_us(),
                t.cpu_ns_per_call / 1000.0,
            );
        }
        if let [grant, hundred, ..] = &self.timings[..] {
            let _ = writeln!(
                s,
                "\n100 policies − grant only: p50 {:+.2} µs, p99 {:+.2} µs, thread CPU {:+.2} µs per call.",
                hundred.quantile_us(0.5) - grant.quantile_us(0.5),
                hundred.quantile_us(0.99) - grant.quantile_us(0.99),
                (hundred.cpu_ns_per_call - grant.cpu_ns_per_call) / 1000.0
            );
        }
        s
    }
}
