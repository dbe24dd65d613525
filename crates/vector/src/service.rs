//! The MCP face of the service: one read-only tool, `search`.
//!
//! Order of a call: resolve the caller ([`IdentitySource`]; never from the request's
//! arguments or `_meta`) → validate and scope the arguments ([`crate::query`]) → embed the
//! query → ask the store, which filters by the scope before ranking → answer.
//!
//! Every refusal and failure is a tool result with `isError: true` and a message naming the
//! rule: argument bounds ("k is 51: it must be between 1 and 50"), identity, embedder and
//! store failures alike. rmcp already answers malformed arguments (wrong types, unknown
//! fields) that way, and the model can read the message and correct its call.

use std::sync::Arc;

use rmcp::{
    Json, RoleServer, ServerHandler,
    handler::server::{router::tool::ToolRouter, wrapper::Parameters},
    model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig},
    schemars::JsonSchema,
    service::RequestContext,
    tool, tool_handler, tool_router,
};
use serde::Serialize;

use crate::{
    embed::Embedder,
    identity::IdentitySource,
    index::Progress,
    labels::Labels,
    query::{SearchArgs, validate},
    store::{Hit, Store},
};

/// The `search` tool's answer.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct SearchOutput {
    /// Best first. Only documents of your tenant at or below your clearance.
    pub results: Vec<SearchHit>,
    /// `true` while the index is being built: results come from the documents indexed so
    /// far. Absent once it is complete. No counts: the index holds every tenant's documents,
    /// so its progress would reveal other tenants' activity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub indexing: Option<bool>,
}

/// One ranked chunk.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct SearchHit {
    /// The document's path, relative to the docs folder.
    pub path: String,
    /// The document's title (front matter `title`, else its first heading, else file name).
    pub title: String,
    /// The heading the chunk sits under, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heading: Option<String>,
    /// The chunk's text.
    pub snippet: String,
    /// Cosine similarity with the query (higher is closer).
    pub score: f32,
    pub labels: Labels,
}

/// A refusal or failure, answered as a tool result with `isError: true`.
fn tool_error(message: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(message.into())])
}

/// The rmcp handler. Cheap to clone: every HTTP session shares the same state.
#[derive(Clone)]
pub struct VectorService {
    tool_router: ToolRouter<Self>,
    store: Arc<dyn Store>,
    embedder: Arc<dyn Embedder>,
    identity: Arc<dyn IdentitySource>,
    progress: Arc<Progress>,
}

#[tool_router]
impl VectorService {
    pub fn new(
        store: Arc<dyn Store>,
        embedder: Arc<dyn Embedder>,
        identity: Arc<dyn IdentitySource>,
        progress: Arc<Progress>,
    ) -> Self {
        Self {
            tool_router: Self::tool_router(),
            store,
            embedder,
            identity,
            progress,
        }
    }

    /// Semantic search over the documents you may read: returns the `k` (default 5, at most
    /// 50) chunks closest to `query`, with path, title, heading, snippet, score and labels.
    /// `filter` can narrow by owner, classification (at most) and path prefix.
    #[tool(annotations(read_only_hint = true, open_world_hint = false))]
    async fn search(
        &self,
        Parameters(args): Parameters<SearchArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<SearchOutput>, CallToolResult> {
        let caller = self
            .identity
            .resolve(&ctx, "search")
            .map_err(|err| tool_error(err.to_string()))?;
        let request = validate(args, &caller)
            .map_err(|err| tool_error(format!("invalid search arguments: {err}")))?;
        // Read before searching: "indexing" then never hides documents the answer lacks.
        let indexing = self.progress.is_running();
        let vectors = self
            .embedder
            .embed(std::slice::from_ref(&request.query))
            .await
            .map_err(|err| tool_error(format!("cannot embed the query: {err}")))?;
        let query = vectors.into_iter().next().unwrap_or_default();
        // A query of stop words only has no direction: nothing is similar to it.
        let hits = if query.iter().all(|&x| x == 0.0) {
            Vec::new()
        } else {
            self.store
                .search(query, request.scope, request.k)
                .await
                .map_err(|err| {
                    tracing::error!(%err, "search failed");
                    tool_error("the index could not be searched (see the service log)")
                })?
        };
        Ok(Json(SearchOutput {
            results: hits.into_iter().map(search_hit).collect(),
            indexing: indexing.then_some(true),
        }))
    }
}

fn search_hit(hit: Hit) -> SearchHit {
    SearchHit {
        path: hit.path,
        title: hit.title,
        heading: hit.heading,
        snippet: hit.text,
        score: hit.score,
        labels: hit.labels,
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for VectorService {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(
                "micromcp-vector",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions(
                "Semantic search over a document collection. `search` only ever returns \
                 documents of your tenant at or below your clearance.",
            )
    }
}

#[cfg(test)]
mod tests;
