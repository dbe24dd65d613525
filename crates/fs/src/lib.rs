//! `micromcp serve fs`: read-only file access beneath configured roots.

use std::net::SocketAddr;

/// Command-line options of `micromcp serve fs`.
#[derive(Debug, Clone, clap::Args)]
pub struct FsArgs {
    /// Serve Streamable HTTP at http://ADDR/mcp instead of stdio.
    #[arg(long)]
    pub http: Option<SocketAddr>,
}

/// Runs the service until stdin closes (stdio) or forever (HTTP).
pub async fn run(args: FsArgs) -> anyhow::Result<()> {
    anyhow::bail!("the fs service is not built yet (http: {:?})", args.http)
}
