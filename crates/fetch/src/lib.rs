//! `micromcp serve fetch`: web fetch under a domain allowlist, without SSRF.
//!
//! One tool, `fetch_text(url, max_bytes?)`, returns a page as readable text. The service
//! is built so that no URL, name, redirect or environment setting can make it connect to
//! an internal address:
//!
//! - [`policy`] (pure, fuzzable): the address classification ([`policy::classify_ip`]) and
//!   the URL check ([`policy::Policy::check_url`]): scheme, userinfo, allowlist, https-only,
//!   port, IP-literal hosts;
//! - [`resolve`]: the DNS step; every address of a name is checked and reqwest connects
//!   only to those (no second lookup, so no rebinding between check and use);
//! - [`fetcher`]: the request; no proxies, no cookies, redirects followed by hand and
//!   re-checked per hop, byte / time / content-type caps;
//! - [`html`] (pure, fuzzable): the streaming, linear-time HTML → text converter, its
//!   output capped;
//! - [`service`]: the rmcp handler.
//!
//! Options come only from flags (the gateway starts services with an empty environment).
//! See docs/services/fetch.md for the flags, the tool and the security model.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context as _;
use ipnet::IpNet;

pub mod fetcher;
pub mod html;
pub mod policy;
pub mod resolve;
pub mod service;

pub use fetcher::{Fetcher, Limits};
pub use policy::{DomainPattern, Policy, Refusal, check_url, classify_ip};
pub use service::FetchService;

/// 2 MiB: a large article, small enough for a model's context after conversion.
const DEFAULT_MAX_BYTES: usize = 2 * 1024 * 1024;

/// Command-line options of `micromcp serve fetch`.
#[derive(Debug, Clone, clap::Args)]
pub struct FetchArgs {
    /// Serve Streamable HTTP at http://ADDR/mcp instead of stdio.
    #[arg(long)]
    pub http: Option<SocketAddr>,

    /// Allow a domain over https: `example.com` (that name only) or `*.example.com` (its
    /// subdomains, not the name itself). Repeatable. Without any, nothing can be fetched.
    #[arg(long = "allow", value_name = "DOMAIN")]
    pub allow: Vec<String>,

    /// Allow a domain over plain http as well as https. Repeatable.
    #[arg(long = "allow-http", value_name = "DOMAIN")]
    pub allow_http: Vec<String>,

    /// Lift the address refusal for a CIDR (e.g. `10.1.2.0/24`). Repeatable; each one is
    /// logged as a warning at startup. Cloud metadata endpoints need an exact /32 or /128.
    #[arg(long = "allow-cidr", value_name = "CIDR")]
    pub allow_cidr: Vec<String>,

    /// Allow a port besides 80 and 443. Repeatable.
    #[arg(long = "allow-port", value_name = "PORT")]
    pub allow_port: Vec<u16>,

    /// Answer NAME with these addresses instead of DNS (like curl's --resolve); the
    /// addresses are checked like any other. Repeatable.
    #[arg(long = "resolve", value_name = "NAME=ADDR[,ADDR...]")]
    pub resolve: Vec<String>,

    /// Most response-body bytes read per fetch (a call's max_bytes may only lower it).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_BYTES)]
    pub max_bytes: usize,

    /// Most seconds a whole fetch may take, redirects and body included.
    #[arg(long = "timeout", value_name = "SECS", default_value_t = 20)]
    pub timeout_secs: u64,

    /// Most seconds one TCP connect may take.
    #[arg(long = "connect-timeout", value_name = "SECS", default_value_t = 5)]
    pub connect_timeout_secs: u64,

    /// Most redirects followed per fetch.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub max_redirects: usize,

    /// An allowed response media type. Repeatable; when given, replaces the default list
    /// (text/html, text/plain, text/markdown, application/json, application/xml, text/xml,
    /// application/xhtml+xml).
    #[arg(long = "content-type", value_name = "TYPE")]
    pub content_type: Vec<String>,

    /// A PEM file of extra CA certificates to trust (a private CA), on top of the system's
    /// roots. Repeatable.
    #[arg(long = "ca-file", value_name = "PATH")]
    pub ca_file: Vec<PathBuf>,
}

/// Runs the service until stdin closes (stdio) or forever (HTTP).
pub async fn run(args: FetchArgs) -> anyhow::Result<()> {
    let fetcher = build_fetcher(&args)?;
    micromcp_services::serve(FetchService::new(fetcher), args.http).await
}

/// Validates the flags (reporting every mistake at once), reads the CA files and builds
/// the fetcher. Logs a warning per lifted CIDR, and when the allowlist is empty.
pub fn build_fetcher(args: &FetchArgs) -> anyhow::Result<Fetcher> {
    let (policy, names, limits) = validate(args)
        .map_err(|errors| anyhow::anyhow!("invalid fetch options:\n  {}", errors.join("\n  ")))?;
    for net in policy.allowed_cidrs() {
        tracing::warn!(cidr = %net, "--allow-cidr: addresses in this range are NOT refused");
    }
    if policy.allows_nothing() {
        tracing::warn!("no --allow or --allow-http given: every fetch will be refused");
    }
    let roots = read_ca_files(&args.ca_file)?;
    Fetcher::new(policy, names, limits, roots)
}

/// Flags → typed policy, name table and limits, without I/O. Every error is collected.
pub fn validate(args: &FetchArgs) -> Result<(Policy, resolve::StaticNames, Limits), Vec<String>> {
    let mut errors = Vec::new();
    let mut patterns = |values: &[String]| -> Vec<DomainPattern> {
        values
            .iter()
            .filter_map(|v| DomainPattern::parse(v).map_err(|e| errors.push(e)).ok())
            .collect()
    };
    let allow = patterns(&args.allow);
    let allow_http = patterns(&args.allow_http);
    let cidrs: Vec<IpNet> = args
        .allow_cidr
        .iter()
        .filter_map(|v| {
            v.parse::<IpNet>()
                .map_err(|_| {
                    errors.push(format!("--allow-cidr {v:?}: not a CIDR (e.g. 10.0.0.0/8)"))
                })
                .ok()
        })
        .collect();
    let mut names = resolve::StaticNames::new();
    for entry in &args.resolve {
        match resolve::parse_resolve_entry(entry) {
            Ok((name, addrs)) => names.entry(name).or_default().extend(addrs),
            Err(e) => errors.push(e),
        }
    }
    let content_types = content_types(&args.content_type, &mut errors);
    if args.max_bytes == 0 {
        errors.push("--max-bytes must be at least 1".to_owned());
    }
    if args.timeout_secs == 0 || args.connect_timeout_secs == 0 {
        errors.push("--timeout and --connect-timeout must be at least 1 second".to_owned());
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let policy = Policy::new(allow, allow_http, cidrs, args.allow_port.clone());
    let limits = Limits {
        max_bytes: args.max_bytes,
        timeout: Duration::from_secs(args.timeout_secs),
        connect_timeout: Duration::from_secs(args.connect_timeout_secs),
        max_redirects: args.max_redirects,
        content_types,
    };
    Ok((policy, names, limits))
}

/// The allowed media types, lowercase; the default list when none is given.
fn content_types(given: &[String], errors: &mut Vec<String>) -> Vec<String> {
    if given.is_empty() {
        return fetcher::DEFAULT_CONTENT_TYPES.map(str::to_owned).to_vec();
    }
    given
        .iter()
        .filter_map(|t| {
            let t = t.trim().to_ascii_lowercase();
            let valid = t.split_once('/').is_some_and(|(a, b)| {
                !a.is_empty() && !b.is_empty() && !t.contains([';', ' ', ','])
            });
            if valid {
                Some(t)
            } else {
                errors.push(format!("--content-type {t:?}: expected TYPE/SUBTYPE"));
                None
            }
        })
        .collect()
}

fn read_ca_files(paths: &[PathBuf]) -> anyhow::Result<Vec<reqwest::Certificate>> {
    let mut roots = Vec::new();
    for path in paths {
        let pem = std::fs::read(path).with_context(|| format!("--ca-file {}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).with_context(|| {
            format!("--ca-file {}: not a PEM certificate bundle", path.display())
        })?;
        anyhow::ensure!(
            !certs.is_empty(),
            "--ca-file {}: no certificate in it",
            path.display()
        );
        roots.extend(certs);
    }
    Ok(roots)
}
