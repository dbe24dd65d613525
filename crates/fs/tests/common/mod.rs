//! Shared harness: build the service from command-line flags, serve it over real Streamable
//! HTTP on 127.0.0.1:0, and talk raw JSON-RPC to it (the wire format the gateway sees).

#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;

use clap::Parser;
use micromcp_fs::{FsArgs, FsService, config::build_state, ops::State};
use micromcp_testkit::Session;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    fs: FsArgs,
}

/// The service state for `micromcp serve fs <flags>`.
pub fn state(flags: &[&str]) -> State {
    let cli = Cli::parse_from(std::iter::once("fs").chain(flags.iter().copied()));
    build_state(&cli.fs).expect("valid flags")
}

/// Serves the service for `flags` on an ephemeral loopback port; returns a ready session.
pub async fn serve(flags: &[&str]) -> Session {
    serve_state(Arc::new(state(flags))).await
}

/// Serves an already built state (kept by the caller to look at its counters).
pub async fn serve_state(state: Arc<State>) -> Session {
    let router = micromcp_services::http_router(FsService::new(state));
    Session::start(micromcp_testkit::serve(router).await).await
}

/// Writes `content` to `dir/rel`, creating parents.
pub fn put(dir: &std::path::Path, rel: &str, content: &str) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, content).expect("write");
}

pub fn arg(path: &std::path::Path) -> String {
    path.to_str().expect("UTF-8 temp path").to_owned()
}
