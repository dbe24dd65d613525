//! How every built-in service is served: stdio by default, Streamable HTTP with `--http`.

use std::{net::SocketAddr, sync::Arc};

use rmcp::{
    ServerHandler, ServiceExt,
    service::ServerInitializeError,
    transport::{
        StreamableHttpServerConfig, StreamableHttpService,
        streamable_http_server::session::local::LocalSessionManager,
    },
};

/// Serves `handler` until stdin closes (stdio) or forever (HTTP at `http://ADDR/mcp`).
///
/// Over HTTP every session gets a clone of `handler`, so state the handler keeps behind an
/// `Arc` is shared by all sessions. rmcp's defaults are what we want: 2025-era clients get
/// sessions, 2026-07-28 requests are served statelessly, and only loopback `Host` headers are
/// accepted (DNS rebinding). Logs go to stderr only: in stdio mode stdout carries the protocol.
pub async fn serve<H>(handler: H, http: Option<SocketAddr>) -> anyhow::Result<()>
where
    H: ServerHandler + Clone + Send + Sync + 'static,
{
    match http {
        Some(addr) => serve_http(handler, addr).await,
        None => serve_stdio(handler).await,
    }
}

async fn serve_stdio<H: ServerHandler>(handler: H) -> anyhow::Result<()> {
    let running = match handler.serve(crate::stdio::streams()).await {
        Ok(running) => running,
        // A client that hangs up before initializing is a normal end, not a failure.
        Err(ServerInitializeError::ConnectionClosed(_)) => return Ok(()),
        Err(err) => return Err(err.into()),
    };
    running.waiting().await?;
    Ok(())
}

async fn serve_http<H>(handler: H, addr: SocketAddr) -> anyhow::Result<()>
where
    H: ServerHandler + Clone + Send + Sync + 'static,
{
    let listener = tokio::net::TcpListener::bind(addr).await?;
    // Print the real address: with port 0 the caller learns the port only from this line.
    eprintln!("listening on http://{}/mcp", listener.local_addr()?);
    // No Nagle delay: rmcp writes SSE answers in pieces, which would stall ~40 ms each.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, http_router(handler)).await?;
    Ok(())
}

/// The HTTP app: Streamable HTTP at `/mcp`.
pub fn http_router<H>(handler: H) -> axum::Router
where
    H: ServerHandler + Clone + Send + Sync + 'static,
{
    let service = StreamableHttpService::new(
        move || Ok(handler.clone()),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default(),
    );
    axum::Router::new().nest_service("/mcp", service)
}
