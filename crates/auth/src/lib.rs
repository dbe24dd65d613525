//! Authentication: the only place where a credential becomes a [`Principal`].
//!
//! Identity comes from the credential alone, never from request bodies or `_meta`. The stage is
//! the [`Authenticator`] trait so JWT/OIDC and mTLS can replace or join API tokens without
//! touching the rest of the request path.
//!
//! API tokens are `mmcp_` + 43 characters (32 random bytes, base64url). The gateway stores only
//! their SHA-256 hashes and looks a presented token up by its hash, so a timing difference can
//! reveal at most bits of a hash, never of a valid token.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use micromcp_config::{Identity, TokenEntry, TokenHash};
use sha2::{Digest, Sha256};

/// Who is calling, as established by authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user: String,
    pub agent: Option<String>,
    pub tenant: Option<String>,
    pub roles: Vec<String>,
}

impl From<&Identity> for Principal {
    fn from(i: &Identity) -> Self {
        Self {
            user: i.principal.clone(),
            agent: i.agent.clone(),
            tenant: i.tenant.clone(),
            roles: i.roles.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("the Authorization header must be \"Bearer <token>\"")]
    Malformed,
    #[error("invalid token")]
    Invalid,
}

/// The authentication stage: a credential in, a principal out.
pub trait Authenticator: Send + Sync {
    /// `authorization` is the raw `Authorization` header value, if any.
    fn authenticate(&self, authorization: Option<&[u8]>) -> Result<Principal, AuthError>;
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
                Some((hash, Principal::from(&entry.identity)))
            })
            .collect();
        Self { by_hash }
    }
}

impl Authenticator for ApiTokens {
    fn authenticate(&self, authorization: Option<&[u8]>) -> Result<Principal, AuthError> {
        let header = authorization.ok_or(AuthError::Missing)?;
        let header = std::str::from_utf8(header).map_err(|_| AuthError::Malformed)?;
        let (scheme, token) = header.split_once(' ').ok_or(AuthError::Malformed)?;
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.contains(' ') {
            return Err(AuthError::Malformed);
        }
        self.by_hash
            .get(&sha256(token.as_bytes()))
            .cloned()
            .ok_or(AuthError::Invalid)
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

    fn table(token: &str) -> ApiTokens {
        let identity = Identity {
            principal: "alice".into(),
            agent: Some("bot".into()),
            tenant: None,
            roles: vec![],
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
        let ok = t
            .authenticate(Some(format!("Bearer {token}").as_bytes()))
            .expect("valid");
        assert_eq!(ok.user, "alice");
        assert!(
            t.authenticate(Some(format!("bearer {token}").as_bytes()))
                .is_ok()
        );
        assert_eq!(t.authenticate(None), Err(AuthError::Missing));
        assert_eq!(
            t.authenticate(Some(token.as_bytes())),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            t.authenticate(Some(format!("Basic {token}").as_bytes())),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            t.authenticate(Some(format!("Bearer {token}x").as_bytes())),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            t.authenticate(Some(format!("Bearer  {token}").as_bytes())),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            t.authenticate(Some(b"Bearer \xff")),
            Err(AuthError::Malformed)
        );
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
