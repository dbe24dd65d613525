//! `micromcp-conformance-fixture`: the test-only MCP server of the conformance tests
//! (see the library docs). stdio by default; `--http ADDR` serves `http://ADDR/mcp`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    match (args.next().as_deref(), args.next()) {
        (None, _) => micromcp_conformance_fixture::serve_stdio().await,
        (Some("--http"), Some(addr)) => {
            micromcp_conformance_fixture::serve_http(addr.parse()?).await
        }
        _ => anyhow::bail!("usage: micromcp-conformance-fixture [--http ADDR]"),
    }
}
