//! micromcp's built-in MCP services.
//!
//! Each service runs as its own process (`micromcp serve <name>`), so the gateway can
//! supervise, sandbox and restart it like any third-party upstream. They are written with
//! the official Rust SDK (`rmcp`), which also makes them a reference implementation to test
//! the gateway against.
//!
//! - [`run_echo`]: `echo`, a tiny demo/test upstream that exercises the whole protocol
//!   surface (tools, progress, cancellation, errors, resources, prompts, completion).

mod echo;
mod serve;
pub mod stdio;

pub use echo::{EchoOptions, run_echo};
pub use serve::{http_router, serve};
