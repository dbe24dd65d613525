//! The MCP face of the service: tools and `file://` resources over [`State`].
//!
//! Error convention: every refusal or failure of a tool call is a tool result with
//! `isError: true` whose text starts with the tool name and names the rule. That includes
//! arguments that do not fit the tool's schema (rmcp 3.11 reports those as `isError` results
//! too); an unknown tool name (e.g. `write_file` when no root is writable) is a JSON-RPC
//! error. `resources/read` has no `isError`, so its
//! refusals are JSON-RPC errors: `-32002` (resource not found) when the file does not exist,
//! invalid params otherwise.
//!
//! Every operation runs on a blocking thread, at most `--max-concurrent-ops` at once (a call
//! waits up to `--op-timeout` for a slot, then is refused as busy), with a [`Stop`] made of
//! the `--op-timeout` deadline and the request's cancellation token: rmcp cancels that token
//! on `notifications/cancelled` and when the session or stdin closes, and the walking
//! operations check it between entries, files, lines and pieces of long lines.

use std::sync::Arc;

use rmcp::{
    ErrorData, Json, RoleServer, ServerHandler,
    handler::server::{router::tool::ToolRouter, wrapper::Parameters},
    model::{
        Implementation, ListResourcesResult, PaginatedRequestParams, ReadResourceRequestParams,
        ReadResourceResponse, ReadResourceResult, Resource, ResourceContents, ServerCapabilities,
        ServerConfig,
    },
    schemars::{self, JsonSchema},
    service::RequestContext,
    tool, tool_handler, tool_router,
};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::{
    error::FsError,
    guard::check_path,
    ops::{
        FindOutput, ListOutput, ReadOutput, SearchOutput, SearchQuery, StatOutput, State, Stop,
        Stopped, WriteOutput,
    },
    uri::{file_uri, parse_file_uri},
};

/// The rmcp handler; cheap to clone (one per HTTP session), state shared.
#[derive(Clone)]
pub struct FsService {
    state: Arc<State>,
    tool_router: ToolRouter<Self>,
}

#[derive(Deserialize, JsonSchema)]
struct PathArgs {
    /// Path relative to the root (with several roots: starting with the root's name).
    /// `.` is the root. Taken literally: not URL-decoded.
    path: String,
}

#[derive(Deserialize, JsonSchema)]
struct ReadArgs {
    /// Path of the file, relative to the root (with several roots: `<root>/<path>`).
    path: String,
    /// Byte offset to start at. Default 0.
    offset: Option<u64>,
    /// Most bytes to return; capped by the server's --max-read-bytes (default 1 MiB).
    length: Option<u64>,
}

#[derive(Deserialize, JsonSchema)]
struct FindArgs {
    /// Glob such as `*.rs` (matches file names anywhere) or `src/**/*.rs` (matches the path
    /// relative to `path`).
    pattern: String,
    /// Directory to search below. Default `.`.
    path: Option<String>,
    /// Most results; capped by --max-find-results.
    max_results: Option<usize>,
}

#[derive(Deserialize, JsonSchema)]
struct SearchArgs {
    /// Text to look for, matched line by line.
    query: String,
    /// Treat `query` as a regular expression (Rust `regex` syntax). Default false (literal).
    regex: Option<bool>,
    /// Ignore case. Default false.
    case_insensitive: Option<bool>,
    /// Only search files matching this glob (same rules as `find_files`).
    glob: Option<String>,
    /// Directory to search below. Default `.`.
    path: Option<String>,
    /// Most matching lines; capped by --search-max-matches.
    max_matches: Option<usize>,
}

#[derive(Deserialize, JsonSchema)]
struct WriteArgs {
    /// Path of the file to create or replace, in a root started with --writable.
    path: String,
    /// The complete new text of the file (UTF-8), at most --max-write-bytes.
    content: String,
}

#[tool_router]
impl FsService {
    /// Builds the handler; `write_file` is only routed (and listed) when a root is writable.
    pub fn new(state: Arc<State>) -> Self {
        let mut tool_router = Self::tool_router();
        if !state.roots.any_writable() {
            tool_router.remove_route("write_file");
        }
        Self { state, tool_router }
    }

    /// Lists a directory: names, kinds and sizes, sorted by name. Denied entries are left
    /// out; symlinks are shown but never followed.
    #[tool(annotations(read_only_hint = true))]
    async fn list_directory(
        &self,
        Parameters(args): Parameters<PathArgs>,
        ct: CancellationToken,
    ) -> Result<Json<ListOutput>, String> {
        self.blocking("list_directory", ct, move |s, stop| {
            s.list_directory(&args.path, stop)
        })
        .await
    }

    /// Reads a UTF-8 text file, optionally a byte range of it. Binary files are refused;
    /// `next_offset` tells where to continue a file larger than one read.
    #[tool(annotations(read_only_hint = true))]
    async fn read_file(
        &self,
        Parameters(args): Parameters<ReadArgs>,
        ct: CancellationToken,
    ) -> Result<Json<ReadOutput>, String> {
        self.blocking("read_file", ct, move |s, _| {
            s.read_file(&args.path, args.offset, args.length)
        })
        .await
    }

    /// Kind, size, modification time, mode and link count of a file or directory.
    #[tool(annotations(read_only_hint = true))]
    async fn stat(
        &self,
        Parameters(args): Parameters<PathArgs>,
        ct: CancellationToken,
    ) -> Result<Json<StatOutput>, String> {
        self.blocking("stat", ct, move |s, _| s.stat(&args.path))
            .await
    }

    /// Finds files and directories whose name (or relative path, if the glob has a `/`)
    /// matches a glob, depth first in name order.
    #[tool(annotations(read_only_hint = true))]
    async fn find_files(
        &self,
        Parameters(args): Parameters<FindArgs>,
        ct: CancellationToken,
    ) -> Result<Json<FindOutput>, String> {
        self.blocking("find_files", ct, move |s, stop| {
            let path = args.path.as_deref().unwrap_or(".");
            s.find_files(&args.pattern, path, args.max_results, stop)
        })
        .await
    }

    /// Searches file contents line by line for a literal or a regular expression, within
    /// bounds (files scanned, bytes per file and in all, matches, time). Binary files are
    /// skipped. A search stopped by time or the byte budget returns what it found, with
    /// `stopped` saying why.
    #[tool(annotations(read_only_hint = true))]
    async fn search_files(
        &self,
        Parameters(args): Parameters<SearchArgs>,
        ct: CancellationToken,
    ) -> Result<Json<SearchOutput>, String> {
        self.blocking("search_files", ct, move |s, stop| {
            let query = SearchQuery::new(
                &args.query,
                args.regex.unwrap_or(false),
                args.case_insensitive.unwrap_or(false),
                args.glob.as_deref(),
                args.max_matches,
            )?;
            s.search_files(&query, args.path.as_deref().unwrap_or("."), stop)
        })
        .await
    }

    /// Creates or replaces a text file atomically (temp file, fsync, rename). Only offered
    /// for roots started with --writable; never writes through a symlink.
    #[tool(annotations(
        read_only_hint = false,
        destructive_hint = true,
        idempotent_hint = true
    ))]
    async fn write_file(
        &self,
        Parameters(args): Parameters<WriteArgs>,
        ct: CancellationToken,
    ) -> Result<Json<WriteOutput>, String> {
        self.blocking("write_file", ct, move |s, _| {
            s.write_file(&args.path, &args.content)
        })
        .await
    }
}

impl FsService {
    /// Runs a tool's blocking file operation (see [`run_blocking`]); refusals become
    /// `isError` results and are logged with the rule (never with file contents).
    async fn blocking<T, F>(
        &self,
        tool: &'static str,
        ct: CancellationToken,
        op: F,
    ) -> Result<Json<T>, String>
    where
        T: Send + 'static,
        F: FnOnce(&State, &Stop) -> Result<T, FsError> + Send + 'static,
    {
        let result = run_blocking(&self.state, tool, ct, op)
            .await
            .and_then(|r| r);
        result.map(Json).map_err(|err| {
            tracing::info!(tool, error = %err, "fs: refused");
            format!("{tool}: {err}")
        })
    }

    fn read_resource_blocking(state: &State, uri: &str) -> Result<String, ErrorData> {
        let absolute = parse_file_uri(uri).map_err(|err| invalid(uri, &err.to_string()))?;
        let (root, inner) = state
            .roots
            .locate_absolute(&absolute)
            .ok_or_else(|| invalid(uri, "outside every root: refused"))?;
        let rel = check_path(if inner.is_empty() { "." } else { inner })
            .map_err(|err| invalid(uri, &err.to_string()))?;
        state.read_whole(root, &rel).map_err(|err| match err {
            FsError::NotFound => ErrorData::resource_not_found(format!("{uri}: not found"), None),
            other => invalid(uri, &other.to_string()),
        })
    }
}

/// Runs `op` on a blocking thread once one of the `--max-concurrent-ops` slots is free.
///
/// The wait for a slot is asynchronous (no thread is held) and bounded by `--op-timeout`
/// (then [`FsError::Busy`]) and by the request's cancellation. The slot is moved into the
/// blocking closure, so it is released only when the work really ends, even if the request
/// was abandoned meanwhile. `op` gets a [`Stop`]: the `--op-timeout` deadline from when it
/// starts, and `ct`.
async fn run_blocking<R, F>(
    state: &Arc<State>,
    what: &'static str,
    ct: CancellationToken,
    op: F,
) -> Result<R, FsError>
where
    R: Send + 'static,
    F: FnOnce(&State, &Stop) -> R + Send + 'static,
{
    let limits = &state.limits;
    let wait = tokio::time::timeout(
        limits.op_timeout,
        Arc::clone(&state.permits).acquire_owned(),
    );
    let permit = tokio::select! {
        biased;
        () = ct.cancelled() => return Err(FsError::Cancelled),
        acquired = wait => match acquired {
            Ok(Ok(permit)) => permit,
            Ok(Err(_closed)) => return Err(FsError::Io("service is shutting down".to_owned())),
            Err(_elapsed) => {
                tracing::warn!(what, "fs: busy, call refused");
                return Err(FsError::Busy {
                    limit: limits.max_concurrent_ops,
                    timeout_secs: limits.op_timeout.as_secs_f64(),
                });
            }
        },
    };
    let stop = Stop::new(limits.op_timeout, ct);
    let state = Arc::clone(state);
    tokio::task::spawn_blocking(move || {
        let _slot = permit;
        op(&state, &stop)
    })
    .await
    .map_err(|err| {
        tracing::error!(what, %err, "fs: operation panicked");
        FsError::Io("internal error".to_owned())
    })
}

fn invalid(uri: &str, why: &str) -> ErrorData {
    // Cap the echoed URI: it is caller input and may be huge.
    let shown: String = uri.chars().take(200).collect();
    ErrorData::invalid_params(format!("resources/read {shown}: {why}"), None)
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for FsService {
    fn get_info(&self) -> ServerConfig {
        let addressing = if self.state.roots.iter().count() == 1 {
            "Paths are relative to the root (`.` is the root).".to_owned()
        } else {
            format!(
                "Paths start with a root name ({}); `.` lists the roots.",
                self.state.roots.names()
            )
        };
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .build(),
        )
        .with_server_info(Implementation::new(
            "micromcp-fs",
            env!("CARGO_PKG_VERSION"),
        ))
        .with_instructions(format!(
            "Read-only access to files. {addressing} Symlinks are never followed; secrets \
             such as .env files and keys are denied."
        ))
    }

    async fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let skip = match request.and_then(|r| r.cursor) {
            None => 0,
            Some(cursor) => cursor
                .parse::<usize>()
                .map_err(|_| ErrorData::invalid_params("invalid cursor", None))?,
        };
        let page = self.state.limits.resource_page_size;
        let listed = run_blocking(&self.state, "resources/list", ctx.ct, move |state, stop| {
            let page = state.resource_files(skip, page, stop)?;
            let resources = page
                .files
                .into_iter()
                .filter_map(|file| {
                    let absolute = file.root.path.join(file.rel.as_str());
                    let uri = file_uri(absolute.to_str()?);
                    let name = state.roots.caller_path(file.root, &file.rel);
                    Some(Resource::new(uri, name).with_size(file.size))
                })
                .collect::<Vec<_>>();
            Ok::<_, FsError>((resources, page.more, page.stopped))
        })
        .await
        .and_then(|r| r)
        .map_err(|err| ErrorData::internal_error(format!("resources/list: {err}"), None))?;
        let (resources, more, stopped) = listed;
        // Stopped early: the page so far is returned with a cursor to go on from. Stopped
        // before the first item of the page: nothing to return, and retrying the same cursor
        // would re-walk to the same point, so it is an error naming the limit.
        match stopped {
            Some(Stopped::Cancelled) => {
                return Err(ErrorData::internal_error("resources/list: cancelled", None));
            }
            Some(why) if resources.is_empty() => {
                return Err(ErrorData::internal_error(
                    format!(
                        "resources/list: stopped ({}) before reaching this page: the walk is \
                         bounded by --op-timeout",
                        stopped_name(why)
                    ),
                    None,
                ));
            }
            _ => {}
        }
        let count = resources.len();
        let mut result = ListResourcesResult::with_all_items(resources);
        result.next_cursor = more.then(|| (skip + count).to_string());
        Ok(result)
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let uri = request.uri.clone();
        let text = run_blocking(&self.state, "resources/read", ctx.ct, move |state, _| {
            Self::read_resource_blocking(state, &uri)
        })
        .await
        .map_err(|err| ErrorData::internal_error(format!("resources/read: {err}"), None))?
        .inspect_err(|err| tracing::info!(error = %err.message, "fs: resource refused"))?;
        Ok(ReadResourceResult::new(vec![ResourceContents::text(text, request.uri)]).into())
    }
}

fn stopped_name(why: Stopped) -> &'static str {
    match why {
        Stopped::Deadline => "deadline",
        Stopped::Budget => "budget",
        Stopped::Cancelled => "cancelled",
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        fs: crate::FsArgs,
    }

    fn state(dir: &std::path::Path, timeout: &str) -> Arc<State> {
        let root = dir.to_str().expect("UTF-8 temp path");
        let flags = [
            "fs",
            "--root",
            root,
            "--max-concurrent-ops",
            "1",
            "--op-timeout",
            timeout,
        ];
        let cli = Cli::parse_from(flags);
        Arc::new(crate::config::build_state(&cli.fs).expect("valid flags"))
    }

    #[tokio::test]
    async fn calls_beyond_max_concurrent_ops_wait_then_are_refused_busy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let busy = state(dir.path(), "0.2");
        // The only slot is taken (as by a long search): the call waits its --op-timeout,
        // then is refused, naming the flag.
        let held = Arc::clone(&busy.permits).try_acquire_owned().expect("slot");
        let refused = run_blocking(&busy, "test", CancellationToken::new(), |_, _| ()).await;
        let message = refused.expect_err("busy").to_string();
        assert!(
            message.starts_with("busy") && message.contains("--max-concurrent-ops"),
            "{message}"
        );
        // A cancelled caller stops waiting at once.
        let cancel = CancellationToken::new();
        cancel.cancel();
        let cancelled = run_blocking(&busy, "test", cancel, |_, _| ()).await;
        assert!(matches!(cancelled, Err(FsError::Cancelled)));
        drop(held);
        assert!(
            run_blocking(&busy, "test", CancellationToken::new(), |_, _| ())
                .await
                .is_ok()
        );

        // A slot freed within the wait: the call is served.
        let patient = state(dir.path(), "60");
        let held = Arc::clone(&patient.permits)
            .try_acquire_owned()
            .expect("slot");
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(held);
        });
        let served = run_blocking(&patient, "test", CancellationToken::new(), |_, _| 7).await;
        assert_eq!(served.ok(), Some(7));
        release.await.expect("release");
    }
}
