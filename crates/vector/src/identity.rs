//! Who is asking: the identity every search is filtered by.
//!
//! The service never takes a tenant or clearance from tool arguments or from `_meta`: an
//! unsigned claim there is whatever the model (or a prompt injection) wrote. Today the
//! identity is fixed per process by `--tenant` and `--clearance` ([`StaticIdentity`]); a
//! gateway-signed identity will be another [`IdentitySource`] that verifies a token in
//! `_meta` against the gateway's public key and refuses the call when it is absent or bad.

use rmcp::{RoleServer, service::RequestContext};

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
    /// The caller of the request `ctx` belongs to. Implementations must fail closed: no
    /// verifiable identity, no answer.
    fn resolve(&self, ctx: &RequestContext<RoleServer>) -> Result<CallerIdentity, IdentityError>;
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
    fn resolve(&self, _ctx: &RequestContext<RoleServer>) -> Result<CallerIdentity, IdentityError> {
        Ok(self.0.clone())
    }
}
