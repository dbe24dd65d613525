//! `micromcp-conformance-fixture`: a **test-only** MCP server that implements the fixtures
//! (tools, resources, prompts) the official MCP conformance suite
//! (`@modelcontextprotocol/conformance`) calls in server mode: `test_simple_text`,
//! `test://static-text`, `test_simple_prompt`, the `input_required` (MRTR) tools and so on.
//!
//! It exists so `crates/cli/tests/conformance.rs` can run the suite through the gateway against
//! a known-good upstream (and directly against the fixture, to tell gateway failures apart
//! from fixture gaps). It is never shipped: not published, not part of `micromcp`.
//!
//! The binary: `micromcp-conformance-fixture` (stdio) or `micromcp-conformance-fixture --http ADDR`
//! (Streamable HTTP at `http://ADDR/mcp`; prints `listening on http://IP:PORT/mcp` to stderr).

// The suite still tests logging and server-to-client sampling, which rmcp marks deprecated
// (SEP-2577); a conformance fixture has to implement them anyway.
#![allow(deprecated)]

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use rmcp::{
    ErrorData, RoleServer, ServerHandler, ServiceExt,
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, ClientCapabilities,
        CompleteRequestParams, CompleteResult, CompletionInfo, GetPromptRequestParams,
        GetPromptResponse, GetPromptResult, Implementation, InputRequiredResult, InputResponses,
        ListPromptsResult, ListResourceTemplatesResult, ListResourcesResult, ListToolsResult,
        PaginatedRequestParams, ProgressNotificationParam, ReadResourceRequestParams,
        ReadResourceResponse, ReadResourceResult, ServerCapabilities, ServerConfig, ServerRequest,
        SetLevelRequestParams, SubscribeRequestParams, SubscriptionFilter,
        UnsubscribeRequestParams,
    },
    service::{RequestContext, ServerInitializeError, SubscriptionContext},
    transport::{
        StreamableHttpServerConfig, StreamableHttpService,
        streamable_http_server::session::local::LocalSessionManager,
    },
};
use serde_json::{Value, json};
use tokio::sync::broadcast;

/// A 1x1 red PNG.
const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";
/// An empty PCM WAV (header only).
const WAV: &str = "UklGRiQAAABXQVZFZm10IBAAAAABAAEAQB8AAIA+AAACABAAZGF0YQAAAAA=";

/// Serves the fixture over stdio until stdin closes.
pub async fn serve_stdio() -> anyhow::Result<()> {
    let running = match Fixture::new().serve(rmcp::transport::stdio()).await {
        Ok(running) => running,
        Err(ServerInitializeError::ConnectionClosed(_)) => return Ok(()),
        Err(err) => return Err(err.into()),
    };
    running.waiting().await?;
    Ok(())
}

/// Binds `addr` and serves Streamable HTTP at `/mcp` forever, printing the real address.
pub async fn serve_http(addr: SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!("listening on http://{}/mcp", listener.local_addr()?);
    serve_listener(listener).await
}

/// Serves Streamable HTTP at `/mcp` on an already bound listener (for in-process tests).
pub async fn serve_listener(listener: tokio::net::TcpListener) -> anyhow::Result<()> {
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router()).await?;
    Ok(())
}

/// The fixture's Streamable HTTP app at `/mcp`, to serve on any listener (TLS in tests).
pub fn router() -> axum::Router {
    let fixture = Fixture::new();
    let service = StreamableHttpService::new(
        move || Ok(fixture.clone()),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default(),
    );
    axum::Router::new().nest_service("/mcp", service)
}

#[derive(Clone, Copy, Debug)]
enum ListChange {
    Tools,
    Prompts,
}

/// Shared by every session (one process serves one gateway or one suite run).
#[derive(Clone)]
struct Fixture {
    /// `requestState`s handed out and not yet used: anything else is tampered (or replayed).
    states: Arc<Mutex<HashSet<String>>>,
    /// `test_trigger_*_change` → every open `subscriptions/listen` stream.
    changes: broadcast::Sender<ListChange>,
}

static STATE_COUNTER: AtomicU64 = AtomicU64::new(1);

fn from_json<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, ErrorData> {
    serde_json::from_value(value)
        .map_err(|err| ErrorData::internal_error(format!("fixture bug: {err}"), None))
}

fn text_result(text: impl Into<String>) -> Result<CallToolResponse, ErrorData> {
    let result: CallToolResult =
        from_json(json!({"content": [{"type": "text", "text": text.into()}]}))?;
    Ok(result.into())
}

fn elicit_name(message: &str) -> Value {
    json!({"method": "elicitation/create", "params": {"message": message, "requestedSchema": {
        "type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}}})
}

fn sampling(text: &str, max_tokens: u32) -> Value {
    json!({"method": "sampling/createMessage", "params": {"messages": [
        {"role": "user", "content": {"type": "text", "text": text}}], "maxTokens": max_tokens}})
}

fn list_roots() -> Value {
    json!({"method": "roots/list", "params": {}})
}

/// The accepted content of an elicitation answer, or why it is not one.
fn accepted_content(answer: &Value) -> Result<&serde_json::Map<String, Value>, ErrorData> {
    let invalid = |what: &str| ErrorData::invalid_params(format!("inputResponses: {what}"), None);
    let object = answer
        .as_object()
        .ok_or_else(|| invalid("an elicitation answer must be an object"))?;
    match object.get("action").and_then(Value::as_str) {
        Some("accept") => object
            .get("content")
            .and_then(Value::as_object)
            .ok_or_else(|| invalid("an accepted elicitation needs content")),
        Some(_) => Err(invalid("the user did not accept")),
        None => Err(invalid("an elicitation answer needs an action")),
    }
}

fn sampled_text(answer: &Value) -> String {
    answer["content"]["text"]
        .as_str()
        .unwrap_or("<no text>")
        .to_owned()
}

impl Fixture {
    fn new() -> Self {
        Self {
            states: Arc::default(),
            changes: broadcast::channel(16).0,
        }
    }

    fn issue_state(&self, prefix: &str) -> String {
        let state = format!("{prefix}-{}", STATE_COUNTER.fetch_add(1, Ordering::Relaxed));
        self.states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(state.clone());
        state
    }

    /// Checks (and consumes) an echoed `requestState`.
    fn redeem_state(&self, state: Option<&str>, prefix: &str) -> Result<(), ErrorData> {
        let ok = state.is_some_and(|s| {
            s.starts_with(prefix)
                && self
                    .states
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(s)
        });
        if ok {
            Ok(())
        } else {
            Err(ErrorData::invalid_params(
                "requestState failed integrity verification (unknown, tampered or replayed)",
                None,
            ))
        }
    }

    fn input_required(
        &self,
        requests: Value,
        state_prefix: Option<&str>,
    ) -> Result<InputRequiredResult, ErrorData> {
        let mut result = json!({"resultType": "input_required", "inputRequests": requests});
        if let Some(prefix) = state_prefix {
            result["requestState"] = Value::String(self.issue_state(prefix));
        }
        from_json(result)
    }

    /// A 2025-era server-to-client request inside a tool call.
    async fn ask_client(
        ctx: &RequestContext<RoleServer>,
        request: Value,
    ) -> Result<Value, ErrorData> {
        let request: ServerRequest = from_json(request)?;
        let response = ctx.peer.send_request(request).await.map_err(|err| {
            ErrorData::internal_error(format!("request to client failed: {err}"), None)
        })?;
        serde_json::to_value(response)
            .map_err(|err| ErrorData::internal_error(err.to_string(), None))
    }

    async fn log(ctx: &RequestContext<RoleServer>, message: &str) -> Result<(), ErrorData> {
        let param =
            from_json(json!({"level": "info", "logger": "conformance-fixture", "data": message}))?;
        let sent = ctx.peer.notify_logging_message(param).await;
        sent.map_err(|err| ErrorData::internal_error(err.to_string(), None))
    }

    async fn call(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let responses: Option<InputResponses> = request.input_responses;
        let state = request.request_state.as_deref();
        let args = request.arguments.unwrap_or_default();
        let arg = |name: &str| {
            args.get(name)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        let caps = ctx.client_capabilities().unwrap_or_default();
        match request.name.as_ref() {
            "test_simple_text" => text_result("This is a simple text response for testing."),
            "test_image_content" => Ok(from_json::<CallToolResult>(
                json!({"content": [{"type": "image", "data": PNG, "mimeType": "image/png"}]}),
            )?
            .into()),
            "test_audio_content" => Ok(from_json::<CallToolResult>(
                json!({"content": [{"type": "audio", "data": WAV, "mimeType": "audio/wav"}]}),
            )?
            .into()),
            "test_embedded_resource" => Ok(from_json::<CallToolResult>(json!({"content": [
                {"type": "resource", "resource": {"uri": "test://embedded-resource",
                 "mimeType": "text/plain", "text": "This is an embedded resource content."}}]}))?
            .into()),
            "test_multiple_content_types" => Ok(from_json::<CallToolResult>(json!({"content": [
                {"type": "text", "text": "Multiple content types test:"},
                {"type": "image", "data": PNG, "mimeType": "image/png"},
                {"type": "resource", "resource": {"uri": "test://mixed-content-resource",
                 "mimeType": "application/json", "text": "{\"test\":\"data\",\"value\":123}"}}]}))?
            .into()),
            "test_error_handling" => Ok(from_json::<CallToolResult>(json!({"isError": true,
                "content": [{"type": "text",
                "text": "This tool intentionally returns an error for testing"}]}))?
            .into()),
            "test_tool_with_logging" => {
                Self::log(&ctx, "Tool execution started").await?;
                tokio::time::sleep(Duration::from_millis(50)).await;
                Self::log(&ctx, "Tool processing data").await?;
                tokio::time::sleep(Duration::from_millis(50)).await;
                Self::log(&ctx, "Tool execution completed").await?;
                text_result("Tool with logging executed successfully")
            }
            "test_logging_tool" => {
                // 2026-07-28: log only when the request asked for a level.
                if ctx.meta.log_level().is_some() || ctx.meta.protocol_version().is_none() {
                    Self::log(&ctx, "test_logging_tool ran").await?;
                }
                text_result("logged")
            }
            "test_tool_with_progress" => {
                let token = ctx.meta.get_progress_token();
                for (i, progress) in [0.0, 50.0, 100.0].into_iter().enumerate() {
                    if i > 0 {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    if let Some(token) = &token {
                        let param = ProgressNotificationParam::new(token.clone(), progress)
                            .with_total(100.0);
                        let _ = ctx.peer.notify_progress(param).await;
                    }
                }
                text_result("Progress tool completed")
            }
            "test_sampling" => {
                let answer = Self::ask_client(&ctx, sampling(&arg("prompt"), 100)).await?;
                text_result(format!("LLM response: {}", sampled_text(&answer)))
            }
            "test_elicitation" => {
                let answer = Self::ask_client(
                    &ctx,
                    json!({"method": "elicitation/create", "params": {"message": arg("message"),
                    "requestedSchema": {"type": "object", "properties": {
                        "username": {"type": "string", "description": "User's response"},
                        "email": {"type": "string", "description": "User's email address"}},
                    "required": ["username", "email"]}}}),
                )
                .await?;
                text_result(format!("User response: {answer}"))
            }
            "test_elicitation_sep1034_defaults" => {
                let answer = Self::ask_client(
                    &ctx,
                    json!({"method": "elicitation/create", "params": {
                    "message": "Please review and update the form fields with defaults",
                    "requestedSchema": {"type": "object", "properties": {
                        "name": {"type": "string", "description": "User name", "default": "John Doe"},
                        "age": {"type": "integer", "description": "User age", "default": 30},
                        "score": {"type": "number", "description": "User score", "default": 95.5},
                        "status": {"type": "string", "description": "User status",
                                   "enum": ["active", "inactive", "pending"], "default": "active"},
                        "verified": {"type": "boolean", "description": "Verification status", "default": true}},
                    "required": []}}}),
                )
                .await?;
                text_result(format!("Elicitation completed: {answer}"))
            }
            "test_elicitation_sep1330_enums" => {
                let answer = Self::ask_client(
                    &ctx,
                    json!({"method": "elicitation/create", "params": {
                    "message": "Please select options from the enum fields",
                    "requestedSchema": {"type": "object", "properties": {
                        "untitledSingle": {"type": "string", "description": "Choose one",
                            "enum": ["option1", "option2", "option3"]},
                        "titledSingle": {"type": "string", "description": "Choose one", "oneOf": [
                            {"const": "value1", "title": "First Option"},
                            {"const": "value2", "title": "Second Option"},
                            {"const": "value3", "title": "Third Option"}]},
                        "legacyEnum": {"type": "string", "description": "Choose one",
                            "enum": ["opt1", "opt2", "opt3"],
                            "enumNames": ["Option One", "Option Two", "Option Three"]},
                        "untitledMulti": {"type": "array", "description": "Choose some",
                            "items": {"type": "string", "enum": ["option1", "option2", "option3"]}},
                        "titledMulti": {"type": "array", "description": "Choose some", "items": {"anyOf": [
                            {"const": "value1", "title": "First Choice"},
                            {"const": "value2", "title": "Second Choice"},
                            {"const": "value3", "title": "Third Choice"}]}}},
                    "required": []}}}),
                )
                .await?;
                text_result(format!("Elicitation completed: {answer}"))
            }
            "json_schema_2020_12_tool" => text_result("ok"),
            "test_trigger_tool_change" => {
                let _ = self.changes.send(ListChange::Tools);
                text_result("tools/list_changed sent")
            }
            "test_trigger_prompt_change" => {
                let _ = self.changes.send(ListChange::Prompts);
                text_result("prompts/list_changed sent")
            }
            "test_missing_capability" => {
                // Needs sampling, which the suite deliberately does not declare.
                if caps.sampling.is_none() {
                    return Err(ErrorData::missing_required_client_capability(
                        ClientCapabilities::builder().enable_sampling().build(),
                    ));
                }
                match responses.as_ref().and_then(|r| r.get("question")) {
                    Some(answer) => {
                        text_result(format!("The model said: {}", sampled_text(answer)))
                    }
                    None => Ok(self
                        .input_required(json!({"question": sampling("Say hello", 20)}), None)?
                        .into()),
                }
            }
            "test_streaming_elicitation" => {
                if caps.elicitation.is_none() {
                    return Err(ErrorData::missing_required_client_capability(
                        ClientCapabilities::builder().enable_elicitation().build(),
                    ));
                }
                match responses.as_ref().and_then(|r| r.get("user_name")) {
                    Some(answer) => {
                        let name = accepted_content(answer)?
                            .get("name")
                            .and_then(Value::as_str)
                            .unwrap_or("");
                        text_result(format!("Hello, {name}!"))
                    }
                    None => Ok(self
                        .input_required(
                            json!({"user_name": elicit_name("What is your name?")}),
                            None,
                        )?
                        .into()),
                }
            }
            "test_input_required_result_elicitation" => {
                let Some(answer) = responses.as_ref().and_then(|r| r.get("user_name")) else {
                    // No answer (or only answers to questions we never asked): ask (again).
                    return Ok(self
                        .input_required(
                            json!({"user_name": elicit_name("What is your name?")}),
                            None,
                        )?
                        .into());
                };
                let name = accepted_content(answer)?
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        ErrorData::invalid_params(
                            "inputResponses.user_name.content.name must be a string",
                            None,
                        )
                    })?;
                text_result(format!("Hello, {name}!"))
            }
            "test_input_required_result_sampling" => {
                match responses.as_ref().and_then(|r| r.get("capital_question")) {
                    Some(answer) => text_result(format!("The model said: {}", sampled_text(answer))),
                    None => Ok(self
                        .input_required(
                            json!({"capital_question": sampling("What is the capital of France?", 100)}),
                            None,
                        )?
                        .into()),
                }
            }
            "test_input_required_result_list_roots" => {
                match responses.as_ref().and_then(|r| r.get("client_roots")) {
                    Some(answer) => {
                        let uris: Vec<&str> = answer["roots"]
                            .as_array()
                            .ok_or_else(|| {
                                ErrorData::invalid_params(
                                    "inputResponses.client_roots.roots must be an array",
                                    None,
                                )
                            })?
                            .iter()
                            .filter_map(|r| r["uri"].as_str())
                            .collect();
                        text_result(format!("Client roots: {}", uris.join(", ")))
                    }
                    None => Ok(self
                        .input_required(json!({"client_roots": list_roots()}), None)?
                        .into()),
                }
            }
            "test_input_required_result_request_state"
            | "test_input_required_result_tampered_state" => {
                let prefix = if request.name == "test_input_required_result_request_state" {
                    "rs"
                } else {
                    "ts"
                };
                match responses.as_ref().and_then(|r| r.get("confirm")) {
                    Some(_) => {
                        self.redeem_state(state, prefix)?;
                        text_result("state-ok: requestState verified")
                    }
                    None => Ok(self
                        .input_required(
                            json!({"confirm": {"method": "elicitation/create", "params": {
                                "message": "Please confirm", "requestedSchema": {"type": "object",
                                "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}}}}),
                            Some(prefix),
                        )?
                        .into()),
                }
            }
            "test_input_required_result_multiple_inputs" => {
                let keys = ["user_name", "greeting", "client_roots"];
                match responses
                    .as_ref()
                    .filter(|r| keys.iter().all(|k| r.contains_key(*k)))
                {
                    Some(r) => {
                        self.redeem_state(state, "mi")?;
                        let name = accepted_content(&r["user_name"])?
                            .get("name")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_owned();
                        text_result(format!(
                            "Got all inputs: name={name}, greeting={}",
                            sampled_text(&r["greeting"])
                        ))
                    }
                    None => Ok(self
                        .input_required(
                            json!({"user_name": elicit_name("What is your name?"),
                                   "greeting": sampling("Generate a greeting", 50),
                                   "client_roots": list_roots()}),
                            Some("mi"),
                        )?
                        .into()),
                }
            }
            "test_input_required_result_multi_round" => {
                let r = responses.unwrap_or_default();
                if r.contains_key("step2") {
                    self.redeem_state(state, "mr2")?;
                    text_result("Multi-round complete")
                } else if r.contains_key("step1") {
                    self.redeem_state(state, "mr1")?;
                    Ok(self
                        .input_required(
                            json!({"step2": {"method": "elicitation/create", "params": {
                                "message": "Step 2: What is your favorite color?",
                                "requestedSchema": {"type": "object", "properties": {
                                "color": {"type": "string"}}, "required": ["color"]}}}}),
                            Some("mr2"),
                        )?
                        .into())
                } else {
                    Ok(self
                        .input_required(
                            json!({"step1": elicit_name("Step 1: What is your name?")}),
                            Some("mr1"),
                        )?
                        .into())
                }
            }
            "test_input_required_result_capabilities" => {
                let mut requests = serde_json::Map::new();
                if caps.sampling.is_some() {
                    requests.insert("question".into(), sampling("Say hello", 20));
                }
                if caps.elicitation.is_some() {
                    requests.insert("user_name".into(), elicit_name("What is your name?"));
                }
                if requests.is_empty() {
                    return Err(ErrorData::missing_required_client_capability(
                        ClientCapabilities::builder().enable_sampling().build(),
                    ));
                }
                match responses {
                    Some(_) => text_result("capabilities respected"),
                    None => Ok(self.input_required(Value::Object(requests), None)?.into()),
                }
            }
            other => Err(ErrorData::invalid_params(
                format!("unknown tool: {other}"),
                None,
            )),
        }
    }
}

fn tools() -> Value {
    let none = json!({"type": "object", "properties": {}});
    let simple = |name: &str, description: &str| json!({"name": name, "description": description, "inputSchema": none});
    let mut list = vec![
        simple("test_simple_text", "Returns simple text content"),
        simple("test_image_content", "Returns image content"),
        simple("test_audio_content", "Returns audio content"),
        simple("test_embedded_resource", "Returns an embedded resource"),
        simple(
            "test_multiple_content_types",
            "Returns text, image and resource content",
        ),
        simple(
            "test_tool_with_logging",
            "Sends three log messages while running",
        ),
        simple(
            "test_logging_tool",
            "Logs only when the request sets a log level",
        ),
        simple("test_error_handling", "Always returns a tool error"),
        simple(
            "test_tool_with_progress",
            "Reports progress 0, 50, 100 of 100",
        ),
        json!({"name": "test_sampling", "description": "Asks the client to sample an LLM",
               "inputSchema": {"type": "object", "properties": {"prompt": {"type": "string",
               "description": "The prompt to send to the LLM"}}, "required": ["prompt"]}}),
        json!({"name": "test_elicitation", "description": "Asks the user for information",
               "inputSchema": {"type": "object", "properties": {"message": {"type": "string",
               "description": "The message to show the user"}}, "required": ["message"]}}),
        simple(
            "test_elicitation_sep1034_defaults",
            "Elicitation with default values (SEP-1034)",
        ),
        simple(
            "test_elicitation_sep1330_enums",
            "Elicitation with enum schemas (SEP-1330)",
        ),
        simple(
            "test_trigger_tool_change",
            "Notifies listeners that the tool list changed",
        ),
        simple(
            "test_trigger_prompt_change",
            "Notifies listeners that the prompt list changed",
        ),
        simple(
            "test_missing_capability",
            "Needs the elicitation client capability",
        ),
        simple(
            "test_streaming_elicitation",
            "Asks the user through input_required",
        ),
        json!({"name": "json_schema_2020_12_tool", "description": "Tool with JSON Schema 2020-12 features",
            "inputSchema": {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
            "$defs": {"address": {"$anchor": "addressDef", "type": "object", "properties": {
                "street": {"type": "string"}, "city": {"type": "string"}}}},
            "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"},
                "contactMethod": {"type": "string", "enum": ["phone", "email"]},
                "phone": {"type": "string"}, "email": {"type": "string"}},
            "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
            "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
            "then": {"required": ["phone"]}, "else": {"required": ["email"]},
            "additionalProperties": false}}),
    ];
    for name in [
        "elicitation",
        "sampling",
        "list_roots",
        "request_state",
        "multiple_inputs",
        "multi_round",
        "tampered_state",
        "capabilities",
    ] {
        list.push(simple(
            &format!("test_input_required_result_{name}"),
            "Answers input_required first (SEP-2322)",
        ));
    }
    Value::Array(list)
}

fn prompts() -> Value {
    json!([
        {"name": "test_simple_prompt", "description": "A simple prompt without arguments"},
        {"name": "test_prompt_with_arguments", "description": "A prompt with two arguments",
         "arguments": [{"name": "arg1", "description": "First test argument", "required": true},
                       {"name": "arg2", "description": "Second test argument", "required": true}]},
        {"name": "test_prompt_with_embedded_resource", "description": "A prompt embedding a resource",
         "arguments": [{"name": "resourceUri", "description": "URI of the resource to embed", "required": true}]},
        {"name": "test_prompt_with_image", "description": "A prompt with an image"},
        {"name": "test_input_required_result_prompt", "description": "Asks the user for context first (SEP-2322)"},
    ])
}

fn resource_text(uri: &str) -> Option<Value> {
    if uri == "test://static-text" {
        return Some(json!({"uri": uri, "mimeType": "text/plain",
            "text": "This is the content of the static text resource."}));
    }
    if uri == "test://static-binary" {
        return Some(json!({"uri": uri, "mimeType": "image/png", "blob": PNG}));
    }
    if uri == "test://watched-resource" {
        return Some(
            json!({"uri": uri, "mimeType": "text/plain", "text": "Watched resource content."}),
        );
    }
    let id = uri
        .strip_prefix("test://template/")?
        .strip_suffix("/data")?;
    if id.is_empty() || id.contains('/') {
        return None;
    }
    let text = json!({"id": id, "templateTest": true, "data": format!("Data for ID: {id}")});
    Some(json!({"uri": uri, "mimeType": "application/json", "text": text.to_string()}))
}

impl ServerHandler for Fixture {
    fn get_info(&self) -> ServerConfig {
        let capabilities: ServerCapabilities = serde_json::from_value(json!({
            "tools": {"listChanged": true},
            "prompts": {"listChanged": true},
            "resources": {"subscribe": true, "listChanged": true},
            "logging": {},
            "completions": {},
        }))
        .unwrap_or_default();
        ServerConfig::new(capabilities)
            .with_server_info(Implementation::new(
                "micromcp-conformance-fixture",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions("Test-only fixture server for the MCP conformance suite.")
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        from_json(json!({"tools": tools()}))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        self.call(request, ctx).await
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        from_json(json!({"prompts": prompts()}))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        let args = request.arguments.unwrap_or_default();
        let arg = |name: &str| -> Result<String, ErrorData> {
            args.get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| ErrorData::invalid_params(format!("missing argument {name}"), None))
        };
        let user = |content: Value| json!({"role": "user", "content": content});
        let messages = match request.name.as_str() {
            "test_simple_prompt" => vec![user(
                json!({"type": "text", "text": "This is a simple prompt for testing."}),
            )],
            "test_prompt_with_arguments" => vec![user(json!({"type": "text", "text": format!(
                "Prompt with arguments: arg1='{}', arg2='{}'", arg("arg1")?, arg("arg2")?)}))],
            "test_prompt_with_embedded_resource" => vec![
                user(
                    json!({"type": "resource", "resource": {"uri": arg("resourceUri")?,
                    "mimeType": "text/plain", "text": "Embedded resource content for testing."}}),
                ),
                user(
                    json!({"type": "text", "text": "Please process the embedded resource above."}),
                ),
            ],
            "test_prompt_with_image" => vec![
                user(json!({"type": "image", "data": PNG, "mimeType": "image/png"})),
                user(json!({"type": "text", "text": "Please analyze the image above."})),
            ],
            "test_input_required_result_prompt" => {
                let Some(answer) = request
                    .input_responses
                    .as_ref()
                    .and_then(|r| r.get("user_context"))
                else {
                    let asked = self.input_required(
                        json!({"user_context": {"method": "elicitation/create", "params": {
                            "message": "What context should the prompt use?",
                            "requestedSchema": {"type": "object", "properties": {
                            "context": {"type": "string"}}, "required": ["context"]}}}}),
                        None,
                    )?;
                    return Ok(asked.into());
                };
                let context = accepted_content(answer)?
                    .get("context")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                vec![user(
                    json!({"type": "text", "text": format!("Use this context: {context}")}),
                )]
            }
            other => {
                return Err(ErrorData::invalid_params(
                    format!("unknown prompt: {other}"),
                    None,
                ));
            }
        };
        Ok(from_json::<GetPromptResult>(json!({"messages": messages}))?.into())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        from_json(json!({"resources": [
            {"uri": "test://static-text", "name": "static-text", "description": "A static text resource", "mimeType": "text/plain"},
            {"uri": "test://static-binary", "name": "static-binary", "description": "A static binary resource (PNG)", "mimeType": "image/png"},
            {"uri": "test://watched-resource", "name": "watched-resource", "description": "A resource to subscribe to", "mimeType": "text/plain"},
        ]}))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        from_json(json!({"resourceTemplates": [
            {"uriTemplate": "test://template/{id}/data", "name": "template", "description": "Data for {id}", "mimeType": "application/json"},
        ]}))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        match resource_text(&request.uri) {
            Some(contents) => {
                Ok(from_json::<ReadResourceResult>(json!({"contents": [contents]}))?.into())
            }
            None => Err(ErrorData::invalid_params(
                "Resource not found",
                Some(json!({"uri": request.uri})),
            )),
        }
    }

    async fn subscribe(
        &self,
        _request: SubscribeRequestParams,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        Ok(())
    }

    async fn unsubscribe(
        &self,
        _request: UnsubscribeRequestParams,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        Ok(())
    }

    async fn set_level(
        &self,
        _request: SetLevelRequestParams,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        Ok(())
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        let values = ["paris", "park", "party", "test", "testValue"]
            .into_iter()
            .filter(|v| v.starts_with(request.argument.value.as_str()))
            .map(str::to_owned)
            .collect();
        let info = CompletionInfo::with_all_values(values)
            .map_err(|err| ErrorData::internal_error(err, None))?;
        Ok(CompleteResult::new(info))
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        Some(requested.supported_by(&self.get_info().capabilities))
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), ErrorData> {
        let mut changes = self.changes.subscribe();
        loop {
            tokio::select! {
                () = context.cancelled() => return Ok(()),
                change = changes.recv() => {
                    // Not accepted by this stream's filter, or the client went away: skip.
                    let _ = match change {
                        Ok(ListChange::Tools) => context.sink().notify_tool_list_changed().await,
                        Ok(ListChange::Prompts) => context.sink().notify_prompt_list_changed().await,
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => return Ok(()),
                    };
                }
            }
        }
    }
}
