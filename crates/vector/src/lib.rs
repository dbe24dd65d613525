//! `micromcp serve vector`: semantic search filtered by the caller's tenant and clearance.

use std::net::SocketAddr;

/// Command-line options of `micromcp serve vector`.
#[derive(Debug, Clone, clap::Args)]
pub struct VectorArgs {
    /// Serve Streamable HTTP at http://ADDR/mcp instead of stdio.
    #[arg(long)]
    pub http: Option<SocketAddr>,
}

/// Runs the service until stdin closes (stdio) or forever (HTTP).
pub async fn run(args: VectorArgs) -> anyhow::Result<()> {
    anyhow::bail!("the vector service is not built yet (http: {:?})", args.http)
}
