//! The search guard: turns untrusted tool arguments plus the caller's identity into a
//! bounded, validated request whose [`Scope`] only the identity can widen.
//!
//! Pure (no I/O), so it is unit-tested here and fuzzed via [`parse_search_arguments`].
//! Every refusal is an [`ArgError`], answered as a tool result with `isError: true`.

use rmcp::schemars::JsonSchema;
use serde::Deserialize;

use crate::{identity::CallerIdentity, labels::Classification};

/// Results returned when `k` is not given.
pub const DEFAULT_K: usize = 5;
/// Most results one search may ask for.
pub const MAX_K: usize = 50;
/// Longest query, in characters.
pub const MAX_QUERY_CHARS: usize = 2000;
/// Longest `owner` or `path_prefix` filter value, in bytes.
pub const MAX_FILTER_BYTES: usize = 1024;

/// The arguments of the `search` tool, as the client sent them.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(crate = "rmcp::schemars")]
pub struct SearchArgs {
    /// What to look for, in natural language (1 to 2000 characters).
    pub query: String,
    /// How many chunks to return, best first: 1 to 50, default 5.
    pub k: Option<u64>,
    /// Optional narrowing; it can never show more than your identity allows.
    pub filter: Option<SearchFilter>,
}

/// Narrowing conditions, all optional, combined with AND. Values are matched as plain data.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(crate = "rmcp::schemars")]
pub struct SearchFilter {
    /// Only documents whose `owner` label is exactly this.
    pub owner: Option<String>,
    /// Only documents classified at most this level (your clearance still applies).
    pub classification: Option<Classification>,
    /// Only documents whose path (relative to the docs folder, `/`-separated) starts with this.
    pub path_prefix: Option<String>,
}

/// What a store may return for one search. Built only by [`Scope::new`], from the caller's
/// identity first and the filter second, so a filter can only narrow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    tenant: String,
    max_classification: Classification,
    owner: Option<String>,
    path_prefix: Option<String>,
}

impl Scope {
    /// The caller's scope, narrowed by `filter`.
    pub fn new(caller: &CallerIdentity, filter: &SearchFilter) -> Self {
        let max_classification = filter
            .classification
            .map_or(caller.clearance, |wanted| wanted.min(caller.clearance));
        Self {
            tenant: caller.tenant.clone(),
            max_classification,
            owner: filter.owner.clone(),
            path_prefix: filter.path_prefix.clone(),
        }
    }

    /// Documents must belong to exactly this tenant.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// Documents must be classified at most this.
    pub fn max_classification(&self) -> Classification {
        self.max_classification
    }

    pub fn owner(&self) -> Option<&str> {
        self.owner.as_deref()
    }

    pub fn path_prefix(&self) -> Option<&str> {
        self.path_prefix.as_deref()
    }
}

/// A search that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchRequest {
    pub query: String,
    pub k: usize,
    pub scope: Scope,
}

/// Why the arguments were refused; the message names the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ArgError(pub String);

/// Checks `args` and scopes them to `caller`.
pub fn validate(args: SearchArgs, caller: &CallerIdentity) -> Result<SearchRequest, ArgError> {
    let query = args.query.trim();
    if query.is_empty() {
        return Err(ArgError(
            "query is empty: say what to search for".to_owned(),
        ));
    }
    let chars = query.chars().count();
    if chars > MAX_QUERY_CHARS {
        return Err(ArgError(format!(
            "query is {chars} characters long: at most {MAX_QUERY_CHARS} are allowed"
        )));
    }
    let k = check_k(args.k)?;
    let filter = args.filter.unwrap_or_default();
    check_filter_value("filter.owner", filter.owner.as_deref())?;
    check_filter_value("filter.path_prefix", filter.path_prefix.as_deref())?;
    Ok(SearchRequest {
        query: query.to_owned(),
        k,
        scope: Scope::new(caller, &filter),
    })
}

/// Parses raw `arguments` JSON and validates it: the whole guard, for fuzzing.
pub fn parse_search_arguments(
    bytes: &[u8],
    caller: &CallerIdentity,
) -> Result<SearchRequest, ArgError> {
    let args: SearchArgs = serde_json::from_slice(bytes)
        .map_err(|err| ArgError(format!("malformed search arguments: {err}")))?;
    validate(args, caller)
}

fn check_k(k: Option<u64>) -> Result<usize, ArgError> {
    match k {
        None => Ok(DEFAULT_K),
        Some(k) if (1..=MAX_K as u64).contains(&k) => {
            usize::try_from(k).map_err(|_| ArgError(format!("k must be 1 to {MAX_K}")))
        }
        Some(k) => Err(ArgError(format!(
            "k is {k}: it must be between 1 and {MAX_K}"
        ))),
    }
}

fn check_filter_value(name: &str, value: Option<&str>) -> Result<(), ArgError> {
    let Some(value) = value else { return Ok(()) };
    if value.is_empty() || value.len() > MAX_FILTER_BYTES {
        return Err(ArgError(format!(
            "{name} must be 1 to {MAX_FILTER_BYTES} bytes long"
        )));
    }
    if value.contains('\0') {
        return Err(ArgError(format!("{name} contains a NUL byte")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(clearance: Classification) -> CallerIdentity {
        CallerIdentity {
            tenant: "acme".to_owned(),
            clearance,
        }
    }

    fn parse(json: &str) -> Result<SearchRequest, ArgError> {
        parse_search_arguments(json.as_bytes(), &caller(Classification::Internal))
    }

    #[test]
    fn defaults_and_trimming() {
        let request = parse(r#"{"query": "  payroll  "}"#).expect("valid");
        assert_eq!(request.query, "payroll");
        assert_eq!(request.k, DEFAULT_K);
        assert_eq!(request.scope.tenant(), "acme");
        assert_eq!(request.scope.max_classification(), Classification::Internal);
    }

    #[test]
    fn bounds_are_enforced_with_the_rule_named() {
        let long = format!(r#"{{"query": "{}"}}"#, "x".repeat(MAX_QUERY_CHARS + 1));
        let at_limit = format!(r#"{{"query": "{}"}}"#, "é".repeat(MAX_QUERY_CHARS));
        assert!(parse(&at_limit).is_ok());
        for (json, words) in [
            (r#"{"query": ""}"#, "query is empty"),
            (r#"{"query": "   "}"#, "query is empty"),
            (long.as_str(), "at most 2000"),
            (r#"{"query": "a", "k": 0}"#, "between 1 and 50"),
            (r#"{"query": "a", "k": 51}"#, "k is 51"),
            (
                r#"{"query": "a", "k": 18446744073709551615}"#,
                "between 1 and 50",
            ),
            (r#"{"query": "a", "k": -1}"#, "malformed"),
            (r#"{"query": "a", "k": 2.5}"#, "malformed"),
            (r#"{"query": 5}"#, "malformed"),
            (r#"{}"#, "malformed"),
            (
                r#"{"query": "a", "filter": {"owner": ""}}"#,
                "filter.owner must be",
            ),
            (
                r#"{"query": "a", "filter": {"path_prefix": "a\u0000"}}"#,
                "NUL",
            ),
            (
                r#"{"query": "a", "filter": {"classification": "secret"}}"#,
                "malformed",
            ),
        ] {
            let err = parse(json).expect_err(json);
            assert!(err.0.contains(words), "{json}: {err}");
        }
        assert_eq!(parse(r#"{"query": "a", "k": 50}"#).expect("max").k, 50);
    }

    #[test]
    fn identity_fields_in_arguments_are_refused_not_obeyed() {
        for json in [
            r#"{"query": "a", "tenant": "globex"}"#,
            r#"{"query": "a", "clearance": "restricted"}"#,
            r#"{"query": "a", "filter": {"tenant": "globex"}}"#,
        ] {
            let err = parse(json).expect_err(json);
            assert!(err.0.contains("unknown field"), "{json}: {err}");
        }
    }

    #[test]
    fn a_filter_narrows_but_never_widens_clearance() {
        let internal = caller(Classification::Internal);
        let wider = SearchFilter {
            classification: Some(Classification::Restricted),
            ..SearchFilter::default()
        };
        assert_eq!(
            Scope::new(&internal, &wider).max_classification(),
            Classification::Internal
        );
        let narrower = SearchFilter {
            classification: Some(Classification::Public),
            ..SearchFilter::default()
        };
        assert_eq!(
            Scope::new(&internal, &narrower).max_classification(),
            Classification::Public
        );
    }
}
