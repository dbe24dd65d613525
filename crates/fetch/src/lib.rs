//! `micromcp serve fetch`: web fetch under a domain allowlist, without SSRF.

use std::net::SocketAddr;

/// Command-line options of `micromcp serve fetch`.
#[derive(Debug, Clone, clap::Args)]
pub struct FetchArgs {
    /// Serve Streamable HTTP at http://ADDR/mcp instead of stdio.
    #[arg(long)]
    pub http: Option<SocketAddr>,
}

/// Runs the service until stdin closes (stdio) or forever (HTTP).
pub async fn run(args: FetchArgs) -> anyhow::Result<()> {
    anyhow::bail!("the fetch service is not built yet (http: {:?})", args.http)
}
