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

impl Authorizer for Allowlist {
    fn authorize(&self, principal: &Principal, action: Action<'_>) -> Decision {
        let target = format!("{}{}{}", action.service, self.separator, action.name);
        for (i, grant) in self.grants.iter().enumerate() {
            if grant.principal != principal.user {
                continue;
            }
            if grant.agent.is_some() && grant.agent != principal.agent {
                continue;
            }
            let patterns = match action.kind {
                Kind::Tool => &grant.tools,
                Kind::Prompt => &grant.prompts,
                Kind::Resource => &grant.resources,
            };
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
}
