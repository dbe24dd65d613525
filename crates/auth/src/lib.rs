//! Authentication: the only place where a credential becomes a [`Principal`].
//!
//! Identity comes from credentials alone, never from request bodies or `_meta`. The stage is
//! the [`Authenticator`] trait; [`Chain`] tries the configured methods in a fixed order:
//! 1. a verified client certificate that `[[auth.certificates]]` maps to a principal
//!    (then a bearer token on the same request is refused as ambiguous);
//! 2. else the bearer token: `mmcp_…` tokens against `[[auth.tokens]]`;
//! 3. any other bearer token against the `[[auth.oidc]]` issuers (by its `iss` claim).
//!
//! API tokens are `mmcp_` + 43 characters (32 random bytes, base64url). The gateway stores only
//! their SHA-256 hashes and looks a presented token up by its hash, so a timing difference can
//! reveal at most bits of a hash, never of a valid token.

pub mod certificate;
pub mod jwt_crypto;
pub mod oidc;

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::future::BoxFuture;
use micromcp_config::{Identity, TokenEntry, TokenHash};
use sha2::{Digest, Sha256};

pub use certificate::{CertificateMap, ClientCertificate};
pub use oidc::{Oidc, Verified};

/// Bearer tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// How the caller authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    ApiToken,
    Oidc,
    Certificate,
    /// The stdio client: the identity in `[stdio]`.
    Stdio,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::ApiToken => "api_token",
            AuthMethod::Oidc => "oidc",
            AuthMethod::Certificate => "certificate",
            AuthMethod::Stdio => "stdio",
        }
    }
}

/// Who is calling, as established by authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user: String,
    pub agent: Option<String>,
    pub tenant: Option<String>,
    pub roles: Vec<String>,
    pub scopes: Vec<String>,
    pub clearance: Option<String>,
    pub method: AuthMethod,
    /// The `iss` of an OIDC token (`None` for credentials from the config).
    pub issuer: Option<String>,
    /// The `jti` of an OIDC token, for the audit record (never the token).
    pub token_id: Option<String>,
}

impl Principal {
    pub fn from_identity(i: &Identity, method: AuthMethod) -> Self {
        Self {
            user: i.principal.clone(),
            agent: i.agent.clone(),
            tenant: i.tenant.clone(),
            roles: i.roles.clone(),
            scopes: i.scopes.clone(),
            clearance: i.clearance.clone(),
            method,
            issuer: None,
            token_id: None,
        }
    }

    /// A principal with only a user and agent (tests, tools).
    pub fn named(user: &str, agent: Option<&str>, method: AuthMethod) -> Self {
        Self {
            user: user.into(),
            agent: agent.map(Into::into),
            tenant: None,
            roles: Vec::new(),
            scopes: Vec::new(),
            clearance: None,
            method,
            issuer: None,
            token_id: None,
        }
    }

    /// Whether `other` is the same caller: same issuer, user, agent and tenant. Sessions and
    /// quotas belong to the caller, not to one token (a refreshed token keeps its sessions).
    pub fn same_caller(&self, other: &Principal) -> bool {
        self.user == other.user
            && self.agent == other.agent
            && self.tenant == other.tenant
            && self.issuer == other.issuer
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// Why a request was not authenticated. The client sees only the kind (and a generic message);
/// `reason` goes to the audit record and to `micromcp auth check`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("malformed credentials: {0}")]
    Malformed(&'static str),
    #[error("invalid token: {0}")]
    Invalid(String),
}

impl AuthError {
    pub fn invalid(reason: impl Into<String>) -> Self {
        AuthError::Invalid(reason.into())
    }

    /// What the client is told: nothing that helps forging (which check failed stays in the
    /// audit), but enough to know whether to fetch a new token.
    pub fn public_message(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing bearer token",
            AuthError::Malformed(_) => "malformed credentials",
            AuthError::Invalid(_) => "invalid or expired token",
        }
    }
}

/// What a request presents.
#[derive(Debug, Clone, Copy, Default)]
pub struct Credentials<'a> {
    /// The raw `Authorization` header value, if any.
    pub authorization: Option<&'a [u8]>,
    /// The client certificate verified in the TLS handshake, if any.
    pub certificate: Option<&'a ClientCertificate>,
}

impl<'a> Credentials<'a> {
    pub fn bearer(authorization: Option<&'a [u8]>) -> Self {
        Self {
            authorization,
            certificate: None,
        }
    }
}

/// The authentication stage: credentials in, a principal out. Asynchronous because a token
/// from an identity provider may need its key set fetched; warm paths never wait.
pub trait Authenticator: Send + Sync {
    fn authenticate<'a>(
        &'a self,
        credentials: Credentials<'a>,
    ) -> BoxFuture<'a, Result<Principal, AuthError>>;
}

/// Verifies bearer tokens that are not API tokens (the OIDC issuers).
pub trait BearerVerifier: Send + Sync {
    fn verify<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Principal, AuthError>>;
}

/// The configured methods, in the fixed order of the module documentation.
#[derive(Default)]
pub struct Chain {
    pub certificates: CertificateMap,
    pub tokens: ApiTokens,
    pub oidc: Option<Arc<dyn BearerVerifier>>,
}

impl Authenticator for Chain {
    fn authenticate<'a>(
        &'a self,
        credentials: Credentials<'a>,
    ) -> BoxFuture<'a, Result<Principal, AuthError>> {
        let by_certificate = credentials
            .certificate
            .and_then(|c| self.certificates.principal(c));
        if let Some(principal) = by_certificate {
            let result = match credentials.authorization {
                None => Ok(principal),
                Some(_) => Err(AuthError::Malformed(
                    "both a client certificate that names a principal and a bearer token",
                )),
            };
            return Box::pin(std::future::ready(result));
        }
        let token = match bearer_token(credentials.authorization) {
            Ok(token) => token,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        if token.starts_with(API_TOKEN_PREFIX) {
            return Box::pin(std::future::ready(self.tokens.lookup(token)));
        }
        match &self.oidc {
            Some(oidc) => oidc.verify(token),
            None => Box::pin(std::future::ready(Err(AuthError::invalid(
                "not an API token, and no [[auth.oidc]] issuer is configured",
            )))),
        }
    }
}

const API_TOKEN_PREFIX: &str = "mmcp_";

/// The token of `Authorization: Bearer <token>`, refusing anything else.
pub fn bearer_token(authorization: Option<&[u8]>) -> Result<&str, AuthError> {
    let header = authorization.ok_or(AuthError::Missing)?;
    if header.len() > MAX_TOKEN_BYTES + 7 {
        return Err(AuthError::Malformed("token longer than 16 KiB"));
    }
    let header = std::str::from_utf8(header).map_err(|_| AuthError::Malformed("not UTF-8"))?;
    let (scheme, token) = header.split_once(' ').ok_or(AuthError::Malformed(
        "the Authorization header must be \"Bearer <token>\"",
    ))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.contains(' ') {
        return Err(AuthError::Malformed(
            "the Authorization header must be \"Bearer <token>\"",
        ));
    }
    Ok(token)
}

/// Bearer API tokens from config, held as hashes.
#[derive(Debug, Default)]
pub struct ApiTokens {
    by_hash: HashMap<[u8; 32], Principal>,
}

impl ApiTokens {
    /// Builds the table. `Generate` entries must have been materialised with [`ensure_generated`].
    pub fn new(entries: &[TokenEntry], generated: &HashMap<std::path::PathBuf, [u8; 32]>) -> Self {
        let by_hash = entries
            .iter()
            .filter_map(|entry| {
                let hash = match &entry.hash {
                    TokenHash::Sha256(h) => *h,
                    TokenHash::Generate(path) => *generated.get(path)?,
                };
                Some((
                    hash,
                    Principal::from_identity(&entry.identity, AuthMethod::ApiToken),
                ))
            })
            .collect();
        Self { by_hash }
    }

    fn lookup(&self, token: &str) -> Result<Principal, AuthError> {
        self.by_hash
            .get(&sha256(token.as_bytes()))
            .cloned()
            .ok_or_else(|| AuthError::invalid("no [[auth.tokens]] entry has this token's hash"))
    }
}

impl Authenticator for ApiTokens {
    fn authenticate<'a>(
        &'a self,
        credentials: Credentials<'a>,
    ) -> BoxFuture<'a, Result<Principal, AuthError>> {
        let result = bearer_token(credentials.authorization).and_then(|t| self.lookup(t));
        Box::pin(std::future::ready(result))
    }
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// A fresh random token and the config value for its hash.
pub fn new_token() -> std::io::Result<(String, String)> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(std::io::Error::other)?;
    let token = format!("mmcp_{}", URL_SAFE_NO_PAD.encode(bytes));
    let hash = format!("sha256:{}", hex::encode(sha256(token.as_bytes())));
    Ok((token, hash))
}

/// For `hash = "generate:<file>"`: reads the stored hash, or on first use creates a token, stores
/// only its hash (file mode 0600, never overwritten) and returns the token so it can be shown once.
pub fn ensure_generated(path: &Path) -> std::io::Result<([u8; 32], Option<String>)> {
    if let Ok(text) = std::fs::read_to_string(path) {
        let hash = text
            .trim()
            .strip_prefix("sha256:")
            .and_then(|h| hex::decode(h).ok())
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| {
                std::io::Error::other(format!(
                    "{} does not hold a sha256:<hex> token hash",
                    path.display()
                ))
            })?;
        return Ok((hash, None));
    }
    let (token, hash_line) = new_token()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    writeln!(file, "{hash_line}")?;
    Ok((sha256(token.as_bytes()), Some(token)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    fn table(token: &str) -> ApiTokens {
        let identity = Identity {
            principal: "alice".into(),
            agent: Some("bot".into()),
            tenant: None,
            roles: vec![],
            scopes: vec![],
            clearance: None,
        };
        ApiTokens::new(
            &[TokenEntry {
                identity,
                hash: TokenHash::Sha256(sha256(token.as_bytes())),
            }],
            &HashMap::new(),
        )
    }

    #[test]
    fn accepts_only_the_exact_bearer_token() {
        let (token, _) = new_token().expect("random");
        let t = table(&token);
        let auth = |header: Option<&[u8]>| {
            t.authenticate(Credentials::bearer(header))
                .now_or_never()
                .expect("API tokens never wait")
        };
        let ok = auth(Some(format!("Bearer {token}").as_bytes())).expect("valid");
        assert_eq!(ok.user, "alice");
        assert_eq!(ok.method, AuthMethod::ApiToken);
        assert!(auth(Some(format!("bearer {token}").as_bytes())).is_ok());
        assert_eq!(auth(None), Err(AuthError::Missing));
        for malformed in [
            token.clone(),
            format!("Basic {token}"),
            format!("Bearer  {token}"),
        ] {
            assert!(
                matches!(
                    auth(Some(malformed.as_bytes())),
                    Err(AuthError::Malformed(_))
                ),
                "{malformed}"
            );
        }
        assert!(matches!(
            auth(Some(format!("Bearer {token}x").as_bytes())),
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(
            auth(Some(b"Bearer \xff")),
            Err(AuthError::Malformed(_))
        ));
        let huge = format!("Bearer mmcp_{}", "a".repeat(MAX_TOKEN_BYTES));
        assert!(matches!(
            auth(Some(huge.as_bytes())),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn tokens_are_random_and_hashes_match() {
        let (a, ha) = new_token().expect("random");
        let (b, _) = new_token().expect("random");
        assert_ne!(a, b);
        assert_eq!(a.len(), 5 + 43);
        assert_eq!(ha, format!("sha256:{}", hex::encode(sha256(a.as_bytes()))));
    }

    #[test]
    fn generated_token_is_shown_once_and_only_its_hash_is_stored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/quickstart.sha256");
        let (hash, token) = ensure_generated(&path).expect("created");
        let token = token.expect("first start shows the token");
        assert_eq!(hash, sha256(token.as_bytes()));
        let stored = std::fs::read_to_string(&path).expect("stored");
        assert!(!stored.contains(&token));
        let (again, shown) = ensure_generated(&path).expect("read back");
        assert_eq!((again, shown), (hash, None));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
