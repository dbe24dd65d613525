//! The MCP face of the service: one tool, `fetch_text`.
//!
//! Error channel (one rule, documented in docs/services/fetch.md): arguments that do not
//! fit the tool's input schema, or `max_bytes: 0`, are JSON-RPC invalid-params errors;
//! everything decided about the fetch itself (a refused URL, address, redirect or content
//! type, a timeout, an unreachable host) is a tool result with `isError: true` whose text
//! names the rule.

use std::sync::Arc;

use rmcp::{
    ErrorData, Json, ServerHandler,
    handler::server::{router::tool::ToolRouter, tool::IntoCallToolResult, wrapper::Parameters},
    model::{
        CallToolResponse, CallToolResult, ContentBlock, Implementation, ServerCapabilities,
        ServerConfig,
    },
    schemars::JsonSchema,
    tool, tool_handler, tool_router,
};
use serde::{Deserialize, Serialize};

use crate::fetcher::Fetcher;

#[cfg(test)]
mod tests;

/// The rmcp handler. Clones share one [`Fetcher`] (and so one connection pool).
#[derive(Clone)]
pub struct FetchService {
    tool_router: ToolRouter<Self>,
    fetcher: Arc<Fetcher>,
}

#[derive(Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
struct FetchTextArgs {
    /// The http(s) URL to fetch. Only allowlisted domains are reachable.
    url: String,
    /// Most response bytes to read (at least 1). Lowers the service's cap, never raises it.
    max_bytes: Option<u64>,
}

#[derive(Debug, Serialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
struct FetchTextOutput {
    /// The URL finally fetched, after redirects.
    url: String,
    /// The HTTP status of the final response.
    status: u16,
    /// The response's media type, e.g. `text/html`.
    content_type: String,
    /// Whether the body, or the text made of it, was cut at the byte cap.
    truncated: bool,
    /// Response-body bytes read.
    bytes: u64,
    /// Every URL redirected to, in order.
    redirects: Vec<String>,
    /// The body as readable text (HTML rendered to plain text), at most the byte cap long.
    text: String,
}

/// A failed call: a refusal (tool error) or malformed arguments (JSON-RPC error).
enum ToolFailure {
    Refused(String),
    InvalidParams(String),
}

impl IntoCallToolResult for ToolFailure {
    fn into_call_tool_result(self) -> Result<CallToolResponse, ErrorData> {
        match self {
            Self::Refused(message) => {
                Ok(CallToolResult::error(vec![ContentBlock::text(message)]).into())
            }
            Self::InvalidParams(message) => Err(ErrorData::invalid_params(message, None)),
        }
    }
}

#[tool_router]
impl FetchService {
    pub fn new(fetcher: Fetcher) -> Self {
        Self {
            tool_router: Self::tool_router(),
            fetcher: Arc::new(fetcher),
        }
    }

    /// Fetches an http(s) URL from an allowlisted domain and returns its text (HTML is
    /// rendered to plain text), the final URL after redirects, the status, the content type
    /// and whether the body was cut at the byte cap.
    #[tool(annotations(read_only_hint = true, open_world_hint = true))]
    async fn fetch_text(
        &self,
        Parameters(args): Parameters<FetchTextArgs>,
    ) -> Result<Json<FetchTextOutput>, ToolFailure> {
        let max_bytes = match args.max_bytes {
            Some(0) => {
                return Err(ToolFailure::InvalidParams(
                    "max_bytes must be at least 1".to_owned(),
                ));
            }
            // Above usize::MAX is above any cap anyway.
            Some(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
            None => None,
        };
        match self.fetcher.fetch(&args.url, max_bytes).await {
            Ok(fetched) => Ok(Json(FetchTextOutput {
                url: fetched.url.to_string(),
                status: fetched.status.as_u16(),
                content_type: fetched.content_type,
                truncated: fetched.truncated,
                bytes: fetched.bytes as u64,
                redirects: fetched.redirects,
                text: fetched.text,
            })),
            Err(err) => {
                tracing::warn!(error = %err, "fetch_text refused or failed");
                Err(ToolFailure::Refused(err.to_string()))
            }
        }
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for FetchService {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(
                "micromcp-fetch",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions(
                "fetch_text fetches an http(s) page from an allowlisted domain and returns \
                 it as text. Internal addresses are never reachable.",
            )
    }
}
