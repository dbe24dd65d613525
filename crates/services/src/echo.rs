//! The `echo` service: a tiny upstream that exercises the whole MCP surface the gateway
//! proxies, so gateway tests (and curious users) have something predictable to talk to.
//!
//! Some tools exist only to provoke the gateway: `slow` (progress + cancellation), `fail`
//! (tool errors), `env` (proves the child's environment was cleared), `exit` (crash
//! supervision) and `confirm` (a 2026-07-28 multi round-trip request: the tool answers
//! `input_required` and finishes when the call is retried with the user's answer). `refund` is
//! a pretend risky action for the policy examples. None of them reads files or the network.

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use rmcp::{
    ErrorData, Json, RoleServer, ServerHandler,
    handler::server::{
        router::prompt::PromptRouter,
        router::tool::ToolRouter,
        tool::{InputResponses, RequestState},
        wrapper::Parameters,
    },
    model::{
        CallToolResponse, CallToolResult, ClientCapabilities, CompleteRequestParams,
        CompleteResult, CompletionInfo, ContentBlock, ElicitRequest, ElicitRequestParams,
        ElicitResult, ElicitationAction, ElicitationSchema, Implementation, InputRequest,
        InputRequests, InputRequiredResult, ListResourceTemplatesResult, ListResourcesResult,
        PaginatedRequestParams, ProgressNotificationParam, PromptMessage, ProtocolVersion,
        ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, Reference, Resource,
        ResourceContents, ResourceTemplate, Role, ServerCapabilities, ServerConfig,
        SubscribeRequestParams, SubscriptionFilter, UnsubscribeRequestParams,
    },
    prompt, prompt_handler, prompt_router,
    schemars::JsonSchema,
    service::RequestContext,
    tool, tool_handler, tool_router,
};
use serde::{Deserialize, Serialize};

#[cfg(test)]
mod tests;

/// How `micromcp serve echo` was asked to run.
#[derive(Debug, Clone, Default)]
pub struct EchoOptions {
    /// Serve Streamable HTTP at `http://ADDR/mcp` instead of stdio.
    pub http: Option<SocketAddr>,
}

/// Runs the echo service until stdin closes (stdio) or forever (HTTP at `http://ADDR/mcp`).
pub async fn run_echo(opts: EchoOptions) -> anyhow::Result<()> {
    crate::serve(Echo::new(), opts.http).await
}

/// The HTTP app, for in-process tests.
#[cfg(test)]
fn http_router() -> axum::Router {
    crate::serve::http_router(Echo::new())
}

const README_URI: &str = "echo://readme";
const TEXT_URI_PREFIX: &str = "echo://text/";
const README: &str = "micromcp-echo is a test upstream: its tools echo, add, report the time, \
    stream progress, fail or crash on request, so a gateway can be exercised end to end.\n";
const GREET_NAMES: [&str; 3] = ["alice", "bob", "carol"];
/// Upper bound for `slow`, so a stray call cannot pin a request for hours.
const MAX_SLOW_SECONDS: f64 = 600.0;
const DEFAULT_SLOW_STEPS: u32 = 5;
/// More steps than this would only flood the client with progress notifications.
const MAX_SLOW_STEPS: u32 = 1000;
const DEFAULT_EXIT_CODE: i32 = 3;
/// The `inputRequests` key under which `confirm` asks its question.
const CONFIRM_KEY: &str = "answer";
/// Every `requestState` that `confirm` hands out starts with this.
const CONFIRM_STATE_PREFIX: &str = "confirm-";
/// Numbers the `requestState`s `confirm` hands out, so no two rounds share one.
static CONFIRM_ROUNDS: AtomicU64 = AtomicU64::new(1);

#[derive(Clone)]
struct Echo {
    tool_router: ToolRouter<Self>,
    prompt_router: PromptRouter<Self>,
    /// Resource URIs clients subscribed to. Only remembered: the resources never change,
    /// so there is never an update to send.
    subscriptions: Arc<Mutex<BTreeSet<String>>>,
    /// Numbers the demo refunds.
    refunds: Arc<AtomicU64>,
}

#[derive(Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
struct EchoArgs {
    /// The text to send back.
    text: String,
}

#[derive(Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
struct AddArgs {
    a: f64,
    b: f64,
}

#[derive(Serialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
struct AddOutput {
    sum: f64,
}

#[derive(Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
struct SlowArgs {
    /// Total time to take, in seconds (at most 600).
    seconds: f64,
    /// How many equal steps to sleep in; progress is reported after each. Default 5.
    steps: Option<u32>,
}

#[derive(Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
struct RefundArgs {
    /// The order to refund.
    order: String,
    /// The amount to refund, in `currency`.
    amount: f64,
    /// ISO 4217 currency code, such as "EUR".
    currency: String,
}

#[derive(Serialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
struct RefundOutput {
    refund_id: String,
    order: String,
    amount: f64,
    currency: String,
}

#[derive(Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
struct FailArgs {
    /// The error message the tool result carries.
    message: String,
}

#[derive(Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
struct ExitArgs {
    /// Process exit code. Default 3.
    code: Option<i32>,
}

#[derive(Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
struct ConfirmArgs {
    /// The yes/no question to put to the user.
    question: String,
}

#[derive(Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
struct GreetArgs {
    /// Who to greet.
    name: String,
}

#[tool_router]
impl Echo {
    fn new() -> Self {
        Self {
            tool_router: Self::tool_router(),
            prompt_router: Self::prompt_router(),
            subscriptions: Arc::default(),
            refunds: Arc::default(),
        }
    }

    /// Returns `text` unchanged.
    #[tool(annotations(read_only_hint = true))]
    async fn echo(&self, Parameters(args): Parameters<EchoArgs>) -> String {
        args.text
    }

    /// Adds two numbers; the result is structured as `{"sum": a + b}`.
    #[tool(annotations(read_only_hint = true))]
    async fn add(&self, Parameters(args): Parameters<AddArgs>) -> Json<AddOutput> {
        Json(AddOutput {
            sum: args.a + args.b,
        })
    }

    /// Demo of a risky action for policy examples: "refunds" `amount` of `order` (nothing real
    /// happens) and returns a refund id. See examples/policies/.
    #[tool(annotations(destructive_hint = true, idempotent_hint = false))]
    async fn refund(&self, Parameters(args): Parameters<RefundArgs>) -> Json<RefundOutput> {
        let n = self.refunds.fetch_add(1, Ordering::Relaxed) + 1;
        Json(RefundOutput {
            refund_id: format!("R-{n}"),
            order: args.order,
            amount: args.amount,
            currency: args.currency,
        })
    }

    /// Returns the current UTC time in RFC 3339.
    #[tool(annotations(read_only_hint = true))]
    async fn now(&self) -> String {
        humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
    }

    /// Sleeps `seconds` in `steps` steps, reporting progress after each; stops early when
    /// the request is cancelled.
    #[tool(annotations(read_only_hint = true))]
    async fn slow(
        &self,
        Parameters(args): Parameters<SlowArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        // `Duration::from_secs_f64` panics on negative or NaN input.
        let seconds = if args.seconds.is_nan() {
            0.0
        } else {
            args.seconds.clamp(0.0, MAX_SLOW_SECONDS)
        };
        let steps = args
            .steps
            .unwrap_or(DEFAULT_SLOW_STEPS)
            .clamp(1, MAX_SLOW_STEPS);
        let step = Duration::from_secs_f64(seconds / f64::from(steps));
        let token = ctx.meta.get_progress_token();
        for done in 1..=steps {
            tokio::select! {
                () = ctx.ct.cancelled() => {
                    tracing::info!(done = done - 1, "slow: cancelled");
                    return text_error(format!("cancelled after {} steps", done - 1));
                }
                () = tokio::time::sleep(step) => {}
            }
            if let Some(token) = &token {
                let progress = ProgressNotificationParam::new(token.clone(), f64::from(done))
                    .with_total(f64::from(steps));
                // The client may be gone; the sleep still finishes (or is cancelled).
                if let Err(err) = ctx.peer.notify_progress(progress).await {
                    tracing::debug!(%err, "slow: progress not delivered");
                }
            }
        }
        CallToolResult::success(vec![ContentBlock::text(format!(
            "done after {steps} steps"
        ))])
    }

    /// Returns a tool error (isError: true) carrying `message`.
    #[tool(annotations(read_only_hint = true))]
    async fn fail(&self, Parameters(args): Parameters<FailArgs>) -> CallToolResult {
        text_error(args.message)
    }

    /// Lists the names (never the values) of the process's environment variables.
    #[tool(annotations(read_only_hint = true))]
    async fn env(&self) -> String {
        let names: BTreeSet<String> = std::env::vars_os()
            .map(|(name, _)| name.to_string_lossy().into_owned())
            .collect();
        names.into_iter().collect::<Vec<_>>().join("\n")
    }

    /// Exits the process at once with `code` (default 3), without replying.
    #[tool(annotations(destructive_hint = true))]
    async fn exit(&self, Parameters(args): Parameters<ExitArgs>) -> String {
        let code = args.code.unwrap_or(DEFAULT_EXIT_CODE);
        tracing::warn!(code, "exit tool called; exiting");
        std::process::exit(code)
    }

    /// Asks the user `question` as a yes/no form and returns `confirmed: true|false`, or
    /// `not confirmed` when the user declines. Needs protocol version 2026-07-28: the first
    /// call answers `input_required`; retry it with the answer in `inputResponses` and the
    /// `requestState` echoed.
    #[tool(annotations(read_only_hint = true))]
    async fn confirm(
        &self,
        Parameters(args): Parameters<ConfirmArgs>,
        RequestState(state): RequestState,
        InputResponses(responses): InputResponses,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        // Older peers cannot receive `input_required` (rmcp would turn it into an error that
        // names its own types); say plainly what is needed instead.
        let version = ctx.protocol_version();
        if version
            .as_ref()
            .is_none_or(|v| v.as_str() < ProtocolVersion::V_2026_07_28.as_str())
        {
            let used = version.map_or_else(|| "unknown".to_owned(), |v| v.as_str().to_owned());
            return Err(ErrorData::invalid_request(
                format!(
                    "confirm asks the user a question during the call, which needs protocol \
                     version 2026-07-28 end to end; it was reached over protocol version {used}"
                ),
                None,
            ));
        }
        // An input request may only use what the client declared for this request. (`{}`
        // declares form elicitation too: it predates the `form`/`url` split.)
        let can_elicit_forms = ctx
            .client_capabilities()
            .and_then(|caps| caps.elicitation)
            .is_some_and(|e| e.form.is_some() || e.url.is_none());
        if !can_elicit_forms {
            let missing = ErrorData::missing_required_client_capability(
                ClientCapabilities::builder().enable_elicitation().build(),
            );
            return Err(ErrorData::new(
                missing.code,
                "confirm asks the user through a form elicitation: call it with protocol \
                 version 2026-07-28 and declare the elicitation client capability",
                missing.data,
            ));
        }
        // A retry without our answer (none yet, or the client left it out): ask (again).
        let Some(answer) = responses.and_then(|mut r| r.remove(CONFIRM_KEY)) else {
            return Ok(confirm_question(args.question).into());
        };
        if !state
            .as_deref()
            .is_some_and(|s| s.starts_with(CONFIRM_STATE_PREFIX))
        {
            return Err(ErrorData::invalid_params(
                "the requestState of the question was not echoed; call confirm again without \
                 inputResponses",
                None,
            ));
        }
        let answer: ElicitResult = serde_json::from_value(answer).map_err(|err| {
            ErrorData::invalid_params(format!("inputResponses.{CONFIRM_KEY}: {err}"), None)
        })?;
        let text = match answer.action {
            ElicitationAction::Accept => {
                let ok = answer
                    .content
                    .as_ref()
                    .and_then(|c| c.get("ok"))
                    .and_then(serde_json::Value::as_bool)
                    .ok_or_else(|| {
                        ErrorData::invalid_params(
                            format!("inputResponses.{CONFIRM_KEY}.content.ok must be a boolean"),
                            None,
                        )
                    })?;
                format!("confirmed: {ok}")
            }
            // Decline, cancel and any future action: the user did not say yes.
            _ => "not confirmed".to_owned(),
        };
        Ok(CallToolResult::success(vec![ContentBlock::text(text)]).into())
    }
}

/// The `input_required` result `confirm` answers first: one form elicitation for a boolean
/// `ok`, and a fresh `requestState`.
fn confirm_question(question: String) -> InputRequiredResult {
    let schema = ElicitationSchema::builder()
        .required_bool_with("ok", |b| b.description("Yes (true) or no (false)."))
        .build_unchecked();
    let request = InputRequest::Elicitation(ElicitRequest::new(
        ElicitRequestParams::FormElicitationParams {
            meta: None,
            message: question,
            requested_schema: schema,
        },
    ));
    let round = CONFIRM_ROUNDS.fetch_add(1, Ordering::Relaxed);
    InputRequiredResult::new(
        Some(InputRequests::from([(CONFIRM_KEY.to_owned(), request)])),
        Some(format!("{CONFIRM_STATE_PREFIX}{round}")),
    )
}

#[prompt_router]
impl Echo {
    /// Asks the model to greet someone.
    #[prompt]
    async fn greet(&self, Parameters(args): Parameters<GreetArgs>) -> Vec<PromptMessage> {
        vec![PromptMessage::new_text(
            Role::User,
            format!("Say hello to {}.", args.name),
        )]
    }
}

fn text_error(message: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(message.into())])
}

#[tool_handler(router = self.tool_router)]
#[prompt_handler(router = self.prompt_router)]
impl ServerHandler for Echo {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_prompts()
                .enable_resources()
                .enable_resources_subscribe()
                .enable_completions()
                .build(),
        )
        .with_server_info(Implementation::new(
            "micromcp-echo",
            env!("CARGO_PKG_VERSION"),
        ))
        .with_instructions(
            "A test server: tools echo, add, now, slow, fail, env, exit and confirm behave as named.",
        )
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(ListResourcesResult::with_all_items(vec![
            Resource::new(README_URI, "readme")
                .with_description("What this server is for.")
                .with_mime_type("text/plain"),
        ]))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(ListResourceTemplatesResult::with_all_items(vec![
            ResourceTemplate::new(format!("{TEXT_URI_PREFIX}{{value}}"), "text")
                .with_description("Reads back {value} as text.")
                .with_mime_type("text/plain"),
        ]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let text = if request.uri == README_URI {
            README.to_owned()
        } else if let Some(value) = request.uri.strip_prefix(TEXT_URI_PREFIX) {
            value.to_owned()
        } else {
            return Err(ErrorData::resource_not_found(
                format!("no such resource: {}", request.uri),
                None,
            ));
        };
        Ok(ReadResourceResult::new(vec![ResourceContents::text(text, request.uri)]).into())
    }

    // Legacy (pre-2026) subscriptions: accepted and remembered, never fired.
    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.subscribed().insert(request.uri);
        Ok(())
    }

    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.subscribed().remove(&request.uri);
        Ok(())
    }

    // 2026-07-28 subscriptions (`subscriptions/listen`): accept whatever we advertise; the
    // default `listen` then holds the stream open until the client cancels it.
    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        Some(requested.supported_by(&self.get_info().capabilities))
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        let values = match &request.r#ref {
            Reference::Prompt(prompt)
                if prompt.name == "greet" && request.argument.name == "name" =>
            {
                GREET_NAMES
                    .iter()
                    .filter(|name| name.starts_with(request.argument.value.as_str()))
                    .map(|name| (*name).to_owned())
                    .collect()
            }
            _ => Vec::new(),
        };
        let completion = CompletionInfo::with_all_values(values)
            .map_err(|err| ErrorData::internal_error(err, None))?;
        Ok(CompleteResult::new(completion))
    }
}

impl Echo {
    fn subscribed(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        // A poisoned set of strings is still a valid set of strings.
        self.subscriptions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
