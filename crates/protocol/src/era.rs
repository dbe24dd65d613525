//! The two MCP eras the gateway speaks.
//!
//! - **Session era** (2025-03-26, 2025-06-18, 2025-11-25): `initialize` handshake, optional
//!   `Mcp-Session-Id`, server-to-client streams.
//! - **Stateless era** (2026-07-28): no handshake; every request carries its protocol version in
//!   `_meta` (and, over HTTP, in headers); `server/discover` replaces `initialize`.

/// Protocol versions of the session era, newest first.
pub const SESSION_VERSIONS: [&str; 3] = ["2025-11-25", "2025-06-18", "2025-03-26"];
/// Protocol versions of the stateless era, newest first.
pub const STATELESS_VERSIONS: [&str; 1] = ["2026-07-28"];
/// The newest session-era version; offered when a client asks for one we do not know.
pub const LATEST_SESSION_VERSION: &str = SESSION_VERSIONS[0];
/// The newest stateless-era version.
pub const LATEST_STATELESS_VERSION: &str = STATELESS_VERSIONS[0];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Era {
    Session,
    Stateless,
}

/// A protocol version the gateway supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProtocolVersion(&'static str);

impl ProtocolVersion {
    pub const LATEST_SESSION: Self = Self(LATEST_SESSION_VERSION);
    pub const LATEST_STATELESS: Self = Self(LATEST_STATELESS_VERSION);

    /// The supported version named `s`, if any.
    pub fn parse(s: &str) -> Option<Self> {
        SESSION_VERSIONS
            .iter()
            .chain(STATELESS_VERSIONS.iter())
            .find(|v| **v == s)
            .map(|v| Self(v))
    }
    /// The session-era version to answer an `initialize` asking for `requested`: the same when
    /// we speak it, else our latest (the client then decides whether it can continue).
    pub fn negotiate_session(requested: &str) -> Self {
        Self::parse(requested)
            .filter(|v| v.era() == Era::Session)
            .unwrap_or(Self::LATEST_SESSION)
    }

    pub fn as_str(self) -> &'static str {
        self.0
    }
    pub fn era(self) -> Era {
        if STATELESS_VERSIONS.contains(&self.0) {
            Era::Stateless
        } else {
            Era::Session
        }
    }
}

impl std::fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// The 2026-07-28 error for a version we do not speak, listing the ones we do.
pub fn unsupported_version(requested: &str) -> crate::ErrorObject {
    let mut error = crate::ErrorObject::new(
        crate::error_codes::UNSUPPORTED_VERSION,
        "Unsupported protocol version",
    );
    error.data =
        Some(serde_json::json!({ "supported": supported_versions(), "requested": requested }));
    error
}

/// Every version the gateway accepts, for error messages.
pub fn supported_versions() -> Vec<&'static str> {
    STATELESS_VERSIONS
        .iter()
        .chain(SESSION_VERSIONS.iter())
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_map_to_eras() {
        assert_eq!(
            ProtocolVersion::parse("2026-07-28").map(ProtocolVersion::era),
            Some(Era::Stateless)
        );
        assert_eq!(
            ProtocolVersion::parse("2025-06-18").map(ProtocolVersion::era),
            Some(Era::Session)
        );
        assert_eq!(ProtocolVersion::parse("2024-11-05"), None);
        assert_eq!(ProtocolVersion::parse(""), None);
        assert_eq!(
            ProtocolVersion::negotiate_session("2025-06-18").as_str(),
            "2025-06-18"
        );
        assert_eq!(
            ProtocolVersion::negotiate_session("2026-07-28"),
            ProtocolVersion::LATEST_SESSION
        );
        assert_eq!(
            ProtocolVersion::negotiate_session("1999-01-01"),
            ProtocolVersion::LATEST_SESSION
        );
    }
}
