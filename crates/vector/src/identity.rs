//! Who is asking: the identity every search is filtered by.
//!
//! The service never takes a tenant or clearance from tool arguments or from unsigned `_meta`:
//! an unsigned claim there is whatever the model (or a prompt injection) wrote. Two sources:
//!
//! - [`SignedIdentity`], when the gateway started this process with a key
//!   (`MICROMCP_IDENTITY_KEY`): each call must carry the caller's identity, signed by the
//!   gateway and bound to that call, in `_meta["io.micromcp/identity"]`
//!   ([`micromcp_identity::signed`]). The launch flags `--tenant` and `--clearance` stay the
//!   upper bound: a caller of another tenant is refused, and the clearance is the lower of the
//!   caller's and the flag's. A call without a valid identity is refused (fail closed).
//! - [`StaticIdentity`] otherwise (standalone use): the launch flags, for every call.

use rmcp::{RoleServer, model::NumberOrString, service::RequestContext};

use micromcp_identity::signed::{Binding, RequestId, Verifier};

use crate::labels::Classification;

/// The caller a search is answered for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerIdentity {
    /// Only documents of this tenant are visible.
    pub tenant: String,
    /// Only documents classified at or below this level are visible.
    pub clearance: Classification,
}

/// Why no identity could be established; the call is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("caller identity refused: {0}")]
pub struct IdentityError(pub String);

/// Resolves the caller of one request.
pub trait IdentitySource: Send + Sync {
    /// The caller of the `tools/call` of `tool` that `ctx` belongs to. Implementations must
    /// fail closed: no verifiable identity, no answer.
    fn resolve(
        &self,
        ctx: &RequestContext<RoleServer>,
        tool: &str,
    ) -> Result<CallerIdentity, IdentityError>;
}

/// One identity for every request, set at launch. Ignores the request entirely, which is
/// the point: nothing a client sends can change it.
#[derive(Debug, Clone)]
pub struct StaticIdentity(CallerIdentity);

impl StaticIdentity {
    pub fn new(identity: CallerIdentity) -> Self {
        Self(identity)
    }
}

impl IdentitySource for StaticIdentity {
    fn resolve(
        &self,
        _ctx: &RequestContext<RoleServer>,
        _tool: &str,
    ) -> Result<CallerIdentity, IdentityError> {
        Ok(self.0.clone())
    }
}

/// The caller from the gateway's signed identity, within the launch bounds.
#[derive(Debug)]
pub struct SignedIdentity {
    verifier: Verifier,
    /// The launch flags: the most any caller may see.
    bound: CallerIdentity,
}

impl SignedIdentity {
    pub fn new(verifier: Verifier, bound: CallerIdentity) -> Self {
        Self { verifier, bound }
    }

    /// The caller of the `tools/call` of `tool` with JSON-RPC id `id`, from that request's
    /// `_meta`, checked at `now` (seconds since the epoch).
    pub fn resolve_meta(
        &self,
        meta: Option<&serde_json::Map<String, serde_json::Value>>,
        id: RequestId,
        tool: &str,
        now: u64,
    ) -> Result<CallerIdentity, IdentityError> {
        let expected = Binding::tool_call(id, tool);
        let verified = self
            .verifier
            .verify(meta, &expected, now)
            .map_err(|e| IdentityError(e.to_string()))?;
        let tenant = match verified.tenant {
            None => self.bound.tenant.clone(),
            Some(t) if t == self.bound.tenant => t,
            // Never echo the caller's tenant: the message goes back to the model.
            Some(_) => {
                return Err(IdentityError(
                    "the caller's tenant is not the tenant this service serves".into(),
                ));
            }
        };
        let clearance = match verified.clearance {
            None => self.bound.clearance,
            Some(c) => c
                .parse::<Classification>()
                .map_err(|e| IdentityError(format!("the caller's clearance: {e}")))?
                .min(self.bound.clearance),
        };
        Ok(CallerIdentity { tenant, clearance })
    }
}

impl IdentitySource for SignedIdentity {
    fn resolve(
        &self,
        ctx: &RequestContext<RoleServer>,
        tool: &str,
    ) -> Result<CallerIdentity, IdentityError> {
        let id = match &ctx.id {
            NumberOrString::Number(n) => RequestId::Number(*n),
            NumberOrString::String(s) => RequestId::Text(s.to_string()),
        };
        self.resolve_meta(Some(&ctx.meta), id, tool, micromcp_identity::now_secs())
    }
}

#[cfg(test)]
mod tests {
    use micromcp_identity::Caller;
    use micromcp_identity::signed::{META_KEY, ServiceKey};
    use serde_json::{Map, Value};

    use super::*;

    const NOW: u64 = 1_767_225_600;

    fn service(bound: Classification) -> (ServiceKey, SignedIdentity) {
        let key = ServiceKey::generate().expect("key");
        let copy = ServiceKey::from_env_value(&key.to_env_value()).expect("key");
        let identity = SignedIdentity::new(
            Verifier::new(copy),
            CallerIdentity {
                tenant: "acme".into(),
                clearance: bound,
            },
        );
        (key, identity)
    }

    fn meta(
        key: &ServiceKey,
        id: i64,
        tenant: Option<&str>,
        clearance: Option<&str>,
    ) -> Map<String, Value> {
        let caller = Caller {
            tenant,
            clearance,
            ..Caller::new("alice", "api_token")
        };
        let binding = Binding::tool_call(RequestId::Number(id), "search");
        let mut meta = Map::new();
        meta.insert(META_KEY.into(), key.sign(&caller, "micromcp", binding, NOW));
        meta
    }

    #[test]
    fn the_signed_caller_narrows_within_the_launch_bounds() {
        let (key, identity) = service(Classification::Confidential);
        let resolve = |m: &Map<String, Value>, id| {
            identity.resolve_meta(Some(m), RequestId::Number(id), "search", NOW)
        };
        let lower = resolve(&meta(&key, 1, Some("acme"), Some("internal")), 1).expect("ok");
        assert_eq!(lower.clearance, Classification::Internal);
        assert_eq!(lower.tenant, "acme");
        let higher = resolve(&meta(&key, 2, Some("acme"), Some("restricted")), 2).expect("ok");
        assert_eq!(
            higher.clearance,
            Classification::Confidential,
            "never above the launch clearance"
        );
        let absent = resolve(&meta(&key, 3, None, None), 3).expect("ok");
        assert_eq!(
            absent,
            CallerIdentity {
                tenant: "acme".into(),
                clearance: Classification::Confidential
            }
        );
        let other =
            resolve(&meta(&key, 4, Some("globex"), Some("public")), 4).expect_err("another tenant");
        assert!(
            other.0.contains("not the tenant") && !other.0.contains("globex"),
            "{other}"
        );
        let unknown =
            resolve(&meta(&key, 5, Some("acme"), Some("top-secret")), 5).expect_err("unknown");
        assert!(unknown.0.contains("unknown classification"), "{unknown}");
    }

    #[test]
    fn unsigned_forged_replayed_and_misbound_identities_are_refused() {
        let (key, identity) = service(Classification::Restricted);
        let (other_key, _) = service(Classification::Restricted);
        let resolve = |m: Option<&Map<String, Value>>, id, tool| {
            identity
                .resolve_meta(m, RequestId::Number(id), tool, NOW)
                .map_err(|e| e.0)
        };
        assert!(
            resolve(None, 1, "search")
                .expect_err("missing")
                .contains("no caller identity")
        );
        let mut unsigned = Map::new();
        unsigned.insert(
            META_KEY.into(),
            serde_json::json!({"tenant": "acme", "clearance": "restricted"}),
        );
        assert!(
            resolve(Some(&unsigned), 1, "search")
                .expect_err("unsigned")
                .contains("malformed")
        );
        let forged = meta(&other_key, 1, Some("acme"), Some("restricted"));
        assert!(
            resolve(Some(&forged), 1, "search")
                .expect_err("forged")
                .contains("signature")
        );
        let genuine = meta(&key, 7, Some("acme"), Some("restricted"));
        assert!(
            resolve(Some(&genuine), 8, "search")
                .expect_err("other id")
                .contains("another request")
        );
        assert!(
            resolve(Some(&genuine), 7, "other")
                .expect_err("other tool")
                .contains("another request")
        );
        resolve(Some(&genuine), 7, "search").expect("genuine");
        assert!(
            resolve(Some(&genuine), 7, "search")
                .expect_err("replay")
                .contains("already used")
        );
    }
}
