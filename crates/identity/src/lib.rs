//! What a service learns about the caller of a request: who it is, vouched for by the gateway —
//! never the caller's own token (docs/identity.md, ADR 0008).
//!
//! - [`jwt`]: HTTP services with `identity = "jwt"` get a short-lived JWT the gateway signs
//!   (Ed25519 or ES256) in `Authorization: Bearer`, audience-bound to that service, and verify
//!   it against the gateway's JWKS ([`keys`]).
//! - [`signed`]: built-in services get the caller in each request's
//!   `_meta["io.micromcp/identity"]`, HMAC-SHA256-signed with a key only that service holds and
//!   bound to that one request (id, method, name) for 60 s. Signing and verifying live here,
//!   with one canonical encoding, so the two sides cannot drift apart.
//!
//! Both forms carry the same facts ([`Caller`]): user, agent, tenant, roles, scopes, clearance,
//! how the caller authenticated and, for OIDC callers, their identity provider.

pub mod jwt;
pub mod keys;
pub mod signed;

use std::time::{SystemTime, UNIX_EPOCH};

/// The caller as services learn it, borrowed from the gateway's principal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller<'a> {
    pub user: &'a str,
    pub agent: Option<&'a str>,
    pub tenant: Option<&'a str>,
    pub roles: &'a [String],
    pub scopes: &'a [String],
    pub clearance: Option<&'a str>,
    /// How the caller authenticated: `api_token`, `oidc`, `certificate` or `stdio`.
    pub method: &'a str,
    /// The identity provider that authenticated the caller (an OIDC issuer), if any.
    pub idp: Option<&'a str>,
}

impl<'a> Caller<'a> {
    /// A caller with only a user and how it authenticated; set the rest with `..`.
    pub const fn new(user: &'a str, method: &'a str) -> Self {
        Self {
            user,
            agent: None,
            tenant: None,
            roles: &[],
            scopes: &[],
            clearance: None,
            method,
            idp: None,
        }
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// An unambiguous byte encoding: every field is tagged, and every text length-prefixed, so no
/// two different values encode alike (what is signed is exactly what is checked).
#[derive(Debug, Default)]
pub(crate) struct Canonical(Vec<u8>);

impl Canonical {
    pub(crate) fn with_prefix(prefix: &[u8]) -> Self {
        Self(prefix.to_vec())
    }

    pub(crate) fn text(&mut self, tag: u8, text: &str) {
        self.0.push(tag);
        self.len(text.len());
        self.0.extend_from_slice(text.as_bytes());
    }

    pub(crate) fn optional(&mut self, tag: u8, text: Option<&str>) {
        match text {
            Some(t) => self.text(tag, t),
            None => self.0.push(tag | 0x80),
        }
    }

    pub(crate) fn list<S: AsRef<str>>(&mut self, tag: u8, items: &[S]) {
        self.0.push(tag);
        self.len(items.len());
        for item in items {
            let item = item.as_ref();
            self.len(item.len());
            self.0.extend_from_slice(item.as_bytes());
        }
    }

    pub(crate) fn number(&mut self, tag: u8, n: i128) {
        self.0.push(tag);
        self.0.extend_from_slice(&n.to_be_bytes());
    }

    /// The caller's fields, in a fixed order.
    pub(crate) fn caller(&mut self, c: &Caller<'_>) {
        self.text(1, c.user);
        self.optional(2, c.agent);
        self.optional(3, c.tenant);
        self.list(4, c.roles);
        self.list(5, c.scopes);
        self.optional(6, c.clearance);
        self.text(7, c.method);
        self.optional(8, c.idp);
    }

    fn len(&mut self, n: usize) {
        self.0
            .extend_from_slice(&u64::try_from(n).unwrap_or(u64::MAX).to_be_bytes());
    }

    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(c: &Caller<'_>) -> Vec<u8> {
        let mut out = Canonical::default();
        out.caller(c);
        out.into_bytes()
    }

    #[test]
    fn different_callers_never_encode_alike() {
        let roles = ["a".to_owned(), "b".to_owned()];
        let joined = ["ab".to_owned()];
        let base = Caller {
            tenant: Some("acme"),
            roles: &roles,
            ..Caller::new("alice", "api_token")
        };
        let variants = [
            base,
            Caller {
                roles: &joined,
                ..base
            },
            Caller {
                agent: Some("acme"),
                tenant: None,
                ..base
            },
            Caller {
                user: "alic",
                agent: Some("e"),
                ..base
            },
            Caller {
                scopes: &roles,
                roles: &[],
                ..base
            },
            Caller {
                clearance: Some(""),
                ..base
            },
        ];
        for (i, a) in variants.iter().enumerate() {
            for b in &variants[i + 1..] {
                assert_ne!(encode(a), encode(b), "{a:?} vs {b:?}");
            }
        }
    }
}
