//! `micromcp serve fs`: read-only file access beneath configured roots, as an MCP server.
//!
//! Tools: `list_directory`, `read_file`, `stat`, `find_files`, `search_files`, and
//! `write_file` only when a root is made writable with `--writable NAME`. Files are also
//! `file://` resources (listable with a cursor, readable).
//!
//! How it stays beneath the roots, in the order a request meets the checks:
//! 1. [`guard`] (pure, fuzzable): the caller's path is checked as text — no NUL, control
//!    characters, absolute paths or `..`, bounded length — and matched against the deny
//!    globs (`.env*`, `*.pem`, `*.key`, SSH keys, key stores, credential files, `.ssh/`,
//!    `.git/`, `.aws/`… by default; see [`guard::DEFAULT_DENY`]). `write_file`'s own temp
//!    names (`.micromcp-*.tmp`) are hidden and refused too.
//! 2. [`roots`]: the first component picks the root when there are several.
//! 3. [`beneath`]: the kernel resolves the path with `openat2(RESOLVE_BENEATH |
//!    RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)` from the root's directory fd opened at
//!    startup; everything after the open goes through the returned fd. Symlinks are never
//!    followed, hard-linked files are refused unless `--allow-hard-links`.
//! 4. [`ops`]: bounded operations (size caps, walk budgets, a wall-clock deadline, the
//!    caller's cancellation) on top of those fds; at most `--max-concurrent-ops` run at once.
//!
//! [`handler`] exposes them over MCP; [`config`] turns flags into the state.

use std::{net::SocketAddr, sync::Arc, time::Duration};

pub mod beneath;
pub mod config;
pub mod error;
pub mod guard;
mod handler;
pub mod ops;
pub mod roots;
pub mod uri;

pub use handler::FsService;

/// Command-line options of `micromcp serve fs`.
#[derive(Debug, Clone, clap::Args)]
pub struct FsArgs {
    /// Serve Streamable HTTP at http://ADDR/mcp instead of stdio.
    #[arg(long)]
    pub http: Option<SocketAddr>,

    /// A root directory, as `PATH` or `NAME=PATH` (repeatable). With one root, callers use
    /// plain relative paths; with several, paths start with the root's name. NAME defaults
    /// to the last component of PATH.
    #[arg(long, value_name = "[NAME=]PATH")]
    pub root: Vec<String>,

    /// Enable the `write_file` tool for the root named NAME (repeatable). Off by default.
    #[arg(long, value_name = "NAME")]
    pub writable: Vec<String>,

    /// Another deny glob (repeatable), matched on every path component and every leading
    /// part of the relative path, case-insensitively.
    #[arg(long, value_name = "GLOB")]
    pub deny: Vec<String>,

    /// Drop the default deny globs (.env*, *.pem, *.key, id_rsa*, *.p12, .netrc, .aws/, .ssh/,
    /// .git/ and the rest of the documented list); keep only --deny.
    #[arg(long)]
    pub no_default_deny: bool,

    /// Serve regular files that have more than one hard link (refused by default: a hard
    /// link inside a root can be another name of a file outside it).
    #[arg(long)]
    pub allow_hard_links: bool,

    /// Most bytes one `read_file` returns, and the largest file `resources/read` serves.
    #[arg(long, default_value_t = 1024 * 1024, value_name = "BYTES")]
    pub max_read_bytes: u64,

    /// Largest content `write_file` accepts.
    #[arg(long, default_value_t = 1024 * 1024, value_name = "BYTES")]
    pub max_write_bytes: u64,

    /// Most entries one `list_directory` returns.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub max_list_entries: usize,

    /// Most results one `find_files` returns.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub max_find_results: usize,

    /// Most directory entries one find, search or resource listing examines.
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    pub max_walk_entries: usize,

    /// Deepest directory level find, search and resource listing descend to.
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub max_depth: usize,

    /// Most files one `search_files` reads.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub search_max_files: usize,

    /// Bytes of each file `search_files` reads (the rest of a larger file is not searched).
    #[arg(long, default_value_t = 1024 * 1024, value_name = "BYTES")]
    pub search_max_file_bytes: u64,

    /// Most matching lines one `search_files` returns.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub search_max_matches: usize,

    /// Most bytes one `search_files` reads, all files together; at this budget the search
    /// stops and returns what it found (`stopped: "budget"`).
    #[arg(long, default_value_t = 64 * 1024 * 1024, value_name = "BYTES")]
    pub search_max_total_bytes: u64,

    /// Wall-clock limit of one operation, in seconds (fractions allowed). Walking operations
    /// (search, find, listings) stop at it and return partial results (`stopped:
    /// "deadline"`); it also bounds the wait for a free slot (see --max-concurrent-ops).
    #[arg(long, default_value = "10", value_parser = config::parse_op_timeout, value_name = "SECS")]
    pub op_timeout: Duration,

    /// Most file operations running at once, over all sessions. Further calls wait for a
    /// slot, at most --op-timeout, then are refused as busy.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub max_concurrent_ops: usize,

    /// Resources per `resources/list` page.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub resource_page_size: usize,
}

/// Runs the service until stdin closes (stdio) or forever (HTTP).
pub async fn run(args: FsArgs) -> anyhow::Result<()> {
    let state = config::build_state(&args)?;
    for root in state.roots.iter() {
        tracing::info!(
            name = %root.name,
            path = %root.path.display(),
            writable = root.writable,
            "fs: serving root"
        );
    }
    let served = micromcp_services::serve(FsService::new(Arc::new(state)), args.http).await;
    // stdin closed (or the server failed): make every blocking operation still running stop
    // at its next check, so the runtime's shutdown does not wait on it.
    ops::begin_shutdown();
    served
}
