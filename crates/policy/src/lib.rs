//! Authorization: may this principal use this tool, prompt or resource?
//!
//! Default deny. The stage is the [`Authorizer`] trait; [`Allowlist`] is the v1 implementation
//! built from `[[policy.grants]]`. Cedar policies replace it later without touching the request
//! path. Every decision names the rule that made it, for the audit record.

use micromcp_auth::Principal;
use micromcp_config::{Grant, ScopeRule};

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

/// The thing being used: `<service><sep><name>` for tools and prompts, `<service><sep><uri>`
/// for resources (the upstream URI, not the public one).
#[derive(Debug, Clone, Copy)]
pub struct Action<'a> {
    pub kind: Kind,
    pub service: &'a str,
    pub name: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The rule that decided: `grants[i]`, `scopes[i]` or `default-deny`.
    pub rule: String,
    /// Refused only for want of these OAuth scopes (space-separated, RFC 6750 `scope`): the
    /// caller may get a token that has them (step-up authorization).
    pub missing_scopes: Option<String>,
    /// What a permit asks of the stages after it (`@approval`, `@redact`, `@rate`).
    pub obligations: Obligations,
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
    fn allow(rule: String) -> Self {
        Self {
            allowed: true,
            rule,
            missing_scopes: None,
            obligations: Obligations::default(),
        }
    }

    fn deny(rule: String) -> Self {
        Self {
            allowed: false,
            rule,
            missing_scopes: None,
            obligations: Obligations::default(),
        }
    }
}

/// The authorization stage.
pub trait Authorizer: Send + Sync {
    fn authorize(&self, principal: &Principal, action: Action<'_>) -> Decision;

    /// Could `principal` be allowed to use *anything* of `kind` on `service`? Lists skip the
    /// services where the answer is no: they are not queried and never appear in a cursor. A
    /// `true` may be generous (each item is still authorized); a `false` must be certain.
    fn may_use_any(&self, principal: &Principal, kind: Kind, service: &str) -> bool;
}

/// `[[policy.grants]]` as an allowlist of globs, and `[[policy.scopes]]`: what is granted
/// also needs the scopes of every scope rule that matches it.
#[derive(Debug, Clone)]
pub struct Allowlist {
    grants: Vec<Grant>,
    scope_rules: Vec<ScopeRule>,
    separator: String,
}

impl Allowlist {
    pub fn new(
        grants: Vec<Grant>,
        scope_rules: Vec<ScopeRule>,
        separator: impl Into<String>,
    ) -> Self {
        Self {
            grants,
            scope_rules,
            separator: separator.into(),
        }
    }

    /// The first scope rule matching `target` whose scopes `principal` lacks, with the scopes.
    fn missing_scopes(
        &self,
        principal: &Principal,
        kind: Kind,
        target: &str,
    ) -> Option<(usize, String)> {
        self.scope_rules.iter().enumerate().find_map(|(i, rule)| {
            let matches = patterns_of(kind, &rule.tools, &rule.prompts, &rule.resources)
                .iter()
                .any(|p| glob_match(p, target));
            let missing: Vec<&str> = rule
                .scopes
                .iter()
                .filter(|s| !principal.has_scope(s))
                .map(String::as_str)
                .collect();
            (matches && !missing.is_empty()).then(|| (i, missing.join(" ")))
        })
    }
}

fn patterns_of<'a>(
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

/// Whether `grant` is for `principal`: every condition it names holds.
fn applies(grant: &Grant, principal: &Principal) -> bool {
    grant
        .principal
        .as_ref()
        .is_none_or(|p| *p == principal.user)
        && (grant.agent.is_none() || grant.agent == principal.agent)
        && (grant.issuer.is_none()
            || same_issuer(grant.issuer.as_deref(), principal.issuer.as_deref()))
        && (grant.tenant.is_none() || grant.tenant == principal.tenant)
        && (grant.roles.is_empty() || grant.roles.iter().any(|r| principal.roles.contains(r)))
        && grant.scopes.iter().all(|s| principal.has_scope(s))
}

/// A grant's issuer matches only a principal vouched for by that issuer.
fn same_issuer(grant: Option<&str>, principal: Option<&str>) -> bool {
    matches!((grant, principal), (Some(g), Some(p)) if micromcp_config::same_issuer(g, p))
}

impl Allowlist {
    /// The patterns of `kind` in each grant that applies to `principal`, with the grant's index.
    fn patterns<'s>(
        &'s self,
        principal: &'s Principal,
        kind: Kind,
    ) -> impl Iterator<Item = (usize, &'s [String])> {
        self.grants
            .iter()
            .enumerate()
            .filter(|(_, grant)| applies(grant, principal))
            .map(move |(i, grant)| {
                (
                    i,
                    patterns_of(kind, &grant.tools, &grant.prompts, &grant.resources),
                )
            })
    }
}

impl Authorizer for Allowlist {
    fn may_use_any(&self, principal: &Principal, kind: Kind, service: &str) -> bool {
        let prefix = format!("{service}{}", self.separator);
        self.patterns(principal, kind)
            .flat_map(|(_, patterns)| patterns)
            .any(|p| may_match_with_prefix(p, &prefix))
    }

    fn authorize(&self, principal: &Principal, action: Action<'_>) -> Decision {
        let target = format!("{}{}{}", action.service, self.separator, action.name);
        let granted = self
            .patterns(principal, action.kind)
            .find(|(_, patterns)| patterns.iter().any(|p| glob_match(p, &target)));
        let Some((i, _)) = granted else {
            return Decision::deny("default-deny".into());
        };
        match self.missing_scopes(principal, action.kind, &target) {
            None => Decision::allow(format!("grants[{i}]")),
            Some((rule, scopes)) => Decision {
                missing_scopes: Some(scopes),
                ..Decision::deny(format!("scopes[{rule}]"))
            },
        }
    }
}

/// Does `pattern` match at least one text that starts with `prefix`? Validated grant patterns
/// name their service literally, but this holds for any pattern: the texts a glob matches all
/// start with its literal part before the first `*`, and once past it the `*` absorbs the rest
/// of `prefix`; so some match starts with `prefix` exactly when one of the two is a prefix of
/// the other (without `*`, when the pattern itself starts with `prefix`).
fn may_match_with_prefix(pattern: &str, prefix: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern.starts_with(prefix),
        Some((literal, _)) => literal.starts_with(prefix) || prefix.starts_with(literal),
    }
}

/// `*` matches any run of characters (including none); everything else matches itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let [first, middle @ .., last] = parts.as_slice() else {
        return pattern == text;
    };
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(user: &str, agent: Option<&str>) -> Principal {
        Principal::named(user, agent, micromcp_auth::AuthMethod::ApiToken)
    }

    fn grant(principal: &str, agent: Option<&str>, tools: &[&str]) -> Grant {
        Grant {
            principal: Some(principal.into()),
            agent: agent.map(Into::into),
            issuer: None,
            tenant: None,
            roles: vec![],
            scopes: vec![],
            tools: tools.iter().map(|s| s.to_string()).collect(),
            prompts: vec![],
            resources: vec![],
        }
    }

    fn tool<'a>(name: &'a str) -> Action<'a> {
        Action {
            kind: Kind::Tool,
            service: "fs",
            name,
        }
    }

    #[test]
    fn grants_match_issuer_roles_tenant_and_scopes() {
        let mut by_role = grant("x", None, &["fs.*"]);
        by_role.principal = None;
        by_role.issuer = Some("https://idp.example/".into());
        by_role.roles = vec!["reader".into(), "admin".into()];
        by_role.tenant = Some("acme".into());
        by_role.scopes = vec!["mcp".into()];
        let a = Allowlist::new(vec![by_role], vec![], ".");
        let mut p = principal("anyone", None);
        p.issuer = Some("https://idp.example".into());
        p.roles = vec!["reader".into()];
        p.tenant = Some("acme".into());
        p.scopes = vec!["mcp".into(), "other".into()];
        assert!(a.authorize(&p, tool("read")).allowed);
        for change in [
            |p: &mut Principal| p.issuer = Some("https://evil.example".into()),
            |p: &mut Principal| p.issuer = None,
            |p: &mut Principal| p.roles = vec!["writer".into()],
            |p: &mut Principal| p.tenant = Some("other".into()),
            |p: &mut Principal| p.scopes = vec!["other".into()],
        ] {
            let mut q = p.clone();
            change(&mut q);
            assert!(!a.authorize(&q, tool("read")).allowed, "{q:?}");
        }
    }

    #[test]
    fn scope_rules_refuse_what_is_granted_but_lacks_a_scope() {
        let rules = vec![ScopeRule {
            scopes: vec!["files:write".into(), "files:read".into()],
            tools: vec!["fs.write_*".into()],
            prompts: vec![],
            resources: vec![],
        }];
        let a = Allowlist::new(vec![grant("alice", None, &["fs.*"])], rules, ".");
        let mut alice = principal("alice", None);
        alice.scopes = vec!["files:read".into()];
        assert!(a.authorize(&alice, tool("read_file")).allowed);
        let refused = a.authorize(&alice, tool("write_file"));
        assert_eq!(
            refused,
            Decision {
                missing_scopes: Some("files:write".into()),
                ..Decision::deny("scopes[0]".into())
            }
        );
        alice.scopes.push("files:write".into());
        assert!(a.authorize(&alice, tool("write_file")).allowed);
        let bob = principal("bob", None);
        let not_granted = a.authorize(&bob, tool("write_file"));
        assert_eq!(
            (not_granted.rule.as_str(), not_granted.missing_scopes),
            ("default-deny", None),
            "nothing granted: no hint about scopes"
        );
    }

    #[test]
    fn globs() {
        assert!(glob_match("echo.*", "echo.add"));
        assert!(glob_match("echo.*", "echo."));
        assert!(!glob_match("echo.*", "echoes.add"));
        assert!(glob_match("echo.a*d", "echo.add"));
        assert!(!glob_match("echo.a*d", "echo.adx"));
        assert!(glob_match("echo.add", "echo.add"));
        assert!(!glob_match("echo.add", "echo.add2"));
        assert!(glob_match("a*a", "aa"));
        assert!(!glob_match("a*a", "a"));
    }

    #[test]
    fn default_deny_and_rule_names() {
        let a = Allowlist::new(
            vec![
                grant("bob", None, &["time.*"]),
                grant("alice", Some("bot"), &["echo.*"]),
            ],
            vec![],
            ".",
        );
        let call = |u, ag, name| {
            a.authorize(
                &principal(u, ag),
                Action {
                    kind: Kind::Tool,
                    service: "echo",
                    name,
                },
            )
        };
        assert_eq!(
            call("alice", Some("bot"), "add"),
            Decision::allow("grants[1]".into())
        );
        assert_eq!(call("alice", Some("other"), "add").rule, "default-deny");
        assert!(!call("alice", None, "add").allowed);
        assert!(!call("bob", None, "add").allowed);
        let prompt = a.authorize(
            &principal("alice", Some("bot")),
            Action {
                kind: Kind::Prompt,
                service: "echo",
                name: "add",
            },
        );
        assert!(!prompt.allowed, "a tool grant does not grant prompts");
    }

    #[test]
    fn may_use_any_is_per_principal_agent_kind_and_service() {
        let mut docs = grant("alice", None, &[]);
        docs.resources = vec!["docs.file:///public/*".into()];
        let a = Allowlist::new(
            vec![
                grant("alice", Some("bot"), &["echo.add"]),
                grant("bob", None, &["time.*"]),
                docs,
            ],
            vec![],
            ".",
        );
        let bot = principal("alice", Some("bot"));
        assert!(a.may_use_any(&bot, Kind::Tool, "echo"));
        assert!(!a.may_use_any(&bot, Kind::Tool, "time"), "bob's grant");
        assert!(!a.may_use_any(&bot, Kind::Prompt, "echo"), "tools only");
        assert!(
            !a.may_use_any(&principal("alice", Some("other")), Kind::Tool, "echo"),
            "another agent"
        );
        assert!(!a.may_use_any(&principal("carol", None), Kind::Tool, "echo"));
        assert!(
            a.may_use_any(&bot, Kind::Resource, "docs"),
            "agent-less grant"
        );
        assert!(
            !a.may_use_any(&bot, Kind::Resource, "doc"),
            "service names are whole"
        );
        assert!(!a.may_use_any(&bot, Kind::Tool, "ech"));
        assert!(!a.may_use_any(&bot, Kind::Tool, "echo.add"));
    }

    #[test]
    fn may_use_any_never_says_no_when_authorize_could_say_yes() {
        // Patterns outside what config validation allows still get a safe answer.
        let cases = [
            ("echo.*", "echo", true),
            ("echo*", "echo", true),
            ("echo*", "echoes", true),
            ("ec*o.add", "echo", true),
            ("*", "anything", true),
            ("echo.add", "echo", true),
            ("echo", "echo", false),
            ("echoes.*", "echo", false),
            ("time.*", "echo", false),
        ];
        for (pattern, service, expected) in cases {
            assert_eq!(
                may_match_with_prefix(pattern, &format!("{service}.")),
                expected,
                "{pattern:?} on {service:?}"
            );
        }
        let a = Allowlist::new(vec![grant("bob", None, &["ec*o.add"])], vec![], ".");
        let bob = principal("bob", None);
        let allowed = a.authorize(
            &bob,
            Action {
                kind: Kind::Tool,
                service: "echo",
                name: "add",
            },
        );
        assert!(allowed.allowed && a.may_use_any(&bob, Kind::Tool, "echo"));
    }
}
