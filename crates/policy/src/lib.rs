//! Authorization: may this principal do this, with these arguments?
//!
//! One engine, Cedar ([`PolicyEngine`], docs/policy.md): the operator's `.cedar` files and the
//! config's `[[policy.grants]]` / `[[policy.scopes]]` compiled to Cedar are one policy set, one
//! decision path. Default deny; `forbid` wins; an evaluation error denies. Every decision names
//! the policies that made it, for the audit record.

pub mod arguments;
pub mod engine;
pub mod schema;

use micromcp_auth::Principal;
use serde_json::{Map, Value};

pub use arguments::ArgumentError;
pub use engine::{Loaded, PolicyEngine, Refused, RequestContext};
pub use schema::{ToolEntry, ToolHints};

/// What kind of thing is being used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tool,
    Prompt,
    Resource,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Tool => "tool",
            Kind::Prompt => "prompt",
            Kind::Resource => "resource",
        }
    }
}

/// The thing being used: the service and its own name for the tool or prompt, or its own URI
/// for a resource; for a tool call, the arguments exactly as they will be forwarded.
#[derive(Debug, Clone, Copy)]
pub struct Action<'a> {
    pub kind: Kind,
    pub service: &'a str,
    pub name: &'a str,
    pub arguments: Option<&'a Map<String, Value>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The policies that decided, joined (`grants[0]`, `support-read-public`, …), or
    /// `default-deny` when none applied, or `evaluation-error`.
    pub rule: String,
    /// The determining policies' ids: the permits that allowed, or the forbids that refused.
    pub policies: Vec<String>,
    /// Refused only for want of these OAuth scopes (space-separated, RFC 6750 `scope`): the
    /// caller may get a token that has them (step-up authorization).
    pub missing_scopes: Option<String>,
    /// What a permit asks of the stages after it (`@approval`, `@redact`, `@rate`).
    pub obligations: Obligations,
    /// Evaluation errors (the request was denied because of them).
    pub errors: Vec<String>,
}

/// Obligations a permitting policy attaches through its annotations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Obligations {
    /// `@approval("required")`: the call is held until a human approves it.
    pub approval: bool,
    /// `@redact("profile")`: redaction profiles for the result (used by the guards).
    pub redact: Vec<String>,
    /// `@rate("…")`: rate-limit classes (used by the guards).
    pub rate: Vec<String>,
}

impl Decision {
    fn deny(rule: String) -> Self {
        Self {
            allowed: false,
            rule,
            policies: Vec::new(),
            missing_scopes: None,
            obligations: Obligations::default(),
            errors: Vec::new(),
        }
    }
}

/// The authorization stage.
pub trait Authorizer: Send + Sync {
    /// The decision for one request. A tool call's arguments are typed by the tool's
    /// `inputSchema` first; arguments that do not fit are refused before any policy runs.
    fn authorize(
        &self,
        principal: &Principal,
        action: Action<'_>,
        context: &RequestContext<'_>,
    ) -> Result<Decision, Refused>;

    /// May `principal` see this item in a list: could it be used with *some* arguments?
    /// (`listed`: the tool as the list describes it, for tools the catalog does not know yet.)
    fn may_list(
        &self,
        principal: &Principal,
        action: Action<'_>,
        listed: Option<&ToolEntry>,
        context: &RequestContext<'_>,
    ) -> bool;

    /// Could `principal` be allowed to use *anything* of `kind` on `service`? Lists skip the
    /// services where the answer is no: they are not queried and never appear in a cursor. A
    /// `true` may be generous (each item is still authorized); a `false` must be certain.
    fn may_use_any(&self, principal: &Principal, kind: Kind, service: &str) -> bool;
}

pub(crate) fn patterns_of<'a>(
    kind: Kind,
    tools: &'a [String],
    prompts: &'a [String],
    resources: &'a [String],
) -> &'a [String] {
    match kind {
        Kind::Tool => tools,
        Kind::Prompt => prompts,
        Kind::Resource => resources,
    }
}

/// Does `pattern` match at least one text that starts with `prefix`? Validated grant patterns
/// name their service literally, but this holds for any pattern: the texts a glob matches all
/// start with its literal part before the first `*`, and once past it the `*` absorbs the rest
/// of `prefix`; so some match starts with `prefix` exactly when one of the two is a prefix of
/// the other (without `*`, when the pattern itself starts with `prefix`).
pub(crate) fn may_match_with_prefix(pattern: &str, prefix: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern.starts_with(prefix),
        Some((literal, _)) => literal.starts_with(prefix) || prefix.starts_with(literal),
    }
}

#[cfg(test)]
mod tests;
