//! The MCP face of the service: tools and `file://` resources over [`State`].
//!
//! Error convention: every refusal or failure of a tool call is a tool result with
//! `isError: true` whose text starts with the tool name and names the rule. That includes
//! arguments that do not fit the tool's schema (rmcp 3.11 reports those as `isError` results
//! too); an unknown tool name (e.g. `write_file` when no root is writable) is a JSON-RPC
//! error. `resources/read` has no `isError`, so its
//! refusals are JSON-RPC errors: `-32002` (resource not found) when the file does not exist,
//! invalid params otherwise.

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

use crate::{
    error::FsError,
    guard::check_path,
    ops::{
        FindOutput, ListOutput, ReadOutput, SearchOutput, SearchQuery, StatOutput, State,
        WriteOutput,
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
    ) -> Result<Json<ListOutput>, String> {
        self.blocking("list_directory", move |s| s.list_directory(&args.path))
            .await
    }

    /// Reads a UTF-8 text file, optionally a byte range of it. Binary files are refused;
    /// `next_offset` tells where to continue a file larger than one read.
    #[tool(annotations(read_only_hint = true))]
    async fn read_file(
        &self,
        Parameters(args): Parameters<ReadArgs>,
    ) -> Result<Json<ReadOutput>, String> {
        self.blocking("read_file", move |s| {
            s.read_file(&args.path, args.offset, args.length)
        })
        .await
    }

    /// Kind, size, modification time, mode and link count of a file or directory.
    #[tool(annotations(read_only_hint = true))]
    async fn stat(
        &self,
        Parameters(args): Parameters<PathArgs>,
    ) -> Result<Json<StatOutput>, String> {
        self.blocking("stat", move |s| s.stat(&args.path)).await
    }

    /// Finds files and directories whose name (or relative path, if the glob has a `/`)
    /// matches a glob, depth first in name order.
    #[tool(annotations(read_only_hint = true))]
    async fn find_files(
        &self,
        Parameters(args): Parameters<FindArgs>,
    ) -> Result<Json<FindOutput>, String> {
        self.blocking("find_files", move |s| {
            let path = args.path.as_deref().unwrap_or(".");
            s.find_files(&args.pattern, path, args.max_results)
        })
        .await
    }

    /// Searches file contents line by line for a literal or a regular expression, within
    /// bounds (files scanned, bytes per file, matches). Binary files are skipped.
    #[tool(annotations(read_only_hint = true))]
    async fn search_files(
        &self,
        Parameters(args): Parameters<SearchArgs>,
    ) -> Result<Json<SearchOutput>, String> {
        self.blocking("search_files", move |s| {
            let query = SearchQuery::new(
                &args.query,
                args.regex.unwrap_or(false),
                args.case_insensitive.unwrap_or(false),
                args.glob.as_deref(),
                args.max_matches,
            )?;
            s.search_files(&query, args.path.as_deref().unwrap_or("."))
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
    ) -> Result<Json<WriteOutput>, String> {
        self.blocking("write_file", move |s| {
            s.write_file(&args.path, &args.content)
        })
        .await
    }
}

impl FsService {
    /// Runs a blocking file operation off the async runtime; refusals become `isError`
    /// results and are logged with the rule (never with file contents).
    async fn blocking<T, F>(&self, tool: &'static str, op: F) -> Result<Json<T>, String>
    where
        T: Send + 'static,
        F: FnOnce(&State) -> Result<T, FsError> + Send + 'static,
    {
        let state = Arc::clone(&self.state);
        let result = tokio::task::spawn_blocking(move || op(&state))
            .await
            .map_err(|err| {
                tracing::error!(tool, %err, "fs: operation panicked");
                "internal error".to_owned()
            })?;
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
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let skip = match request.and_then(|r| r.cursor) {
            None => 0,
            Some(cursor) => cursor
                .parse::<usize>()
                .map_err(|_| ErrorData::invalid_params("invalid cursor", None))?,
        };
        let state = Arc::clone(&self.state);
        let page = state.limits.resource_page_size;
        let listed = tokio::task::spawn_blocking(move || {
            let (files, more) = state.resource_files(skip, page)?;
            let resources = files
                .into_iter()
                .filter_map(|file| {
                    let absolute = file.root.path.join(file.rel.as_str());
                    let uri = file_uri(absolute.to_str()?);
                    let name = state.roots.caller_path(file.root, &file.rel);
                    Some(Resource::new(uri, name).with_size(file.size))
                })
                .collect::<Vec<_>>();
            Ok::<_, FsError>((resources, more))
        })
        .await
        .map_err(|err| ErrorData::internal_error(err.to_string(), None))?
        .map_err(|err| ErrorData::internal_error(format!("resources/list: {err}"), None))?;
        let (resources, more) = listed;
        let count = resources.len();
        let mut result = ListResourcesResult::with_all_items(resources);
        result.next_cursor = more.then(|| (skip + count).to_string());
        Ok(result)
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let state = Arc::clone(&self.state);
        let uri = request.uri.clone();
        let text = tokio::task::spawn_blocking(move || Self::read_resource_blocking(&state, &uri))
            .await
            .map_err(|err| ErrorData::internal_error(err.to_string(), None))?
            .inspect_err(|err| tracing::info!(error = %err.message, "fs: resource refused"))?;
        Ok(ReadResourceResult::new(vec![ResourceContents::text(text, request.uri)]).into())
    }
}
