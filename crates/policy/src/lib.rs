//! Authorization: may this principal use this tool, prompt or resource?
//!
//! Default deny. The stage is the [`Authorizer`] trait; [`Allowlist`] is the v1 implementation
//! built from `[[policy.grants]]`. Cedar policies replace it later without touching the request
//! path. Every decision names the rule that made it, for the audit record.

use micromcp_auth::Principal;
use micromcp_config::Grant;

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
    /// The rule that decided: `grants[i]` or `default-deny`.
    pub rule: String,
}

/// The authorization stage.
pub trait Authorizer: Send + Sync {
    fn authorize(&self, principal: &Principal, action: Action<'_>) -> Decision;

    /// Could `principal` be allowed to use *anything* of `kind` on `service`? Lists skip the
    /// services where the answer is no: they are not queried and never appear in a cursor. A
    /// `true` may be generous (each item is still authorized); a `false` must be certain.
    fn may_use_any(&self, principal: &Principal, kind: Kind, service: &str) -> bool;
}

/// `[[policy.grants]]` as an allowlist of globs.
#[derive(Debug, Clone)]
pub struct Allowlist {
    grants: Vec<Grant>,
    separator: String,
}

impl Allowlist {
    pub fn new(grants: Vec<Grant>, separator: impl Into<String>) -> Self {
        Self {
            grants,
            separator: separator.into(),
        }
    }
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
            .filter(|(_, grant)| {
                grant.principal == principal.user
                    && (grant.agent.is_none() || grant.agent == principal.agent)
            })
            .map(move |(i, grant)| {
                let patterns = match kind {
                    Kind::Tool => &grant.tools,
                    Kind::Prompt => &grant.prompts,
                    Kind::Resource => &grant.resources,
                };
                (i, patterns.as_slice())
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
        for (i, patterns) in self.patterns(principal, action.kind) {
            if patterns.iter().any(|p| glob_match(p, &target)) {
                return Decision {
                    allowed: true,
                    rule: format!("grants[{i}]"),
                };
            }
        }
        Decision {
            allowed: false,
            rule: "default-deny".into(),
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
        Principal {
            user: user.into(),
            agent: agent.map(Into::into),
            tenant: None,
            roles: vec![],
        }
    }

    fn grant(principal: &str, agent: Option<&str>, tools: &[&str]) -> Grant {
        Grant {
            principal: principal.into(),
            agent: agent.map(Into::into),
            tools: tools.iter().map(|s| s.to_string()).collect(),
            prompts: vec![],
            resources: vec![],
        }
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
            Decision {
                allowed: true,
                rule: "grants[1]".into()
            }
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
        let a = Allowlist::new(vec![grant("bob", None, &["ec*o.add"])], ".");
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
