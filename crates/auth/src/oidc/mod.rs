//! JWT access tokens from OpenID providers (`[[auth.oidc]]`).
//!
//! A token is checked in this order, and the first failing rule is the reason it is refused
//! (in the audit record and in `micromcp auth check`; the client only learns "invalid token"):
//! 1. size (16 KiB) and shape: three base64url parts, JSON header and payload;
//! 2. issuer: the unverified `iss` picks one configured issuer (exact, trailing slash aside);
//!    any other issuer is refused;
//! 3. algorithm: the header's `alg` must be one of the issuer's `algorithms` (asymmetric only:
//!    `none` and `HS*` are never accepted);
//! 4. key: the header's `kid` names a key of the issuer's key set ([`jwks`]) whose type fits
//!    `alg` (an RSA key never verifies ES256, and so on). `jku`, `x5u`, `jwk` and `x5c` are
//!    ignored: keys come only from the issuer's key set;
//! 5. signature, then `exp` (required), `nbf`, `iss`, `aud` (required, must contain the
//!    configured audience: a token for another resource, or an ID token, whose audience is a
//!    client, is refused) with `clock_skew`, and `iat` not in the future;
//! 6. `sub` and `required_claims` present; the claim mapping makes the [`Principal`], each
//!    value at most 256 characters without control characters.
//!
//! Valid tokens are cached by their SHA-256 until their `exp`, so the warm path is a hash and a
//! lookup. A cached token counts only while its issuer's key set is the one it was verified
//! against and still fresh: after a key-set change it is verified again (a token whose key was
//! removed is then refused), and when the keys are too old it is refused like any other.

pub mod jwks;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::future::BoxFuture;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use micromcp_config::{JwtAlgorithm, OidcIssuer};
use serde_json::{Map, Value};

use crate::{AuthError, AuthMethod, BearerVerifier, MAX_TOKEN_BYTES, Principal, sha256};
use jwks::{Keys, Lookup};

/// Validated tokens remembered at most.
pub const CACHE_CAPACITY: usize = 10_000;
/// Longest claim value taken into a principal.
pub const MAX_CLAIM_CHARS: usize = 256;
/// Most roles or scopes taken from one token.
pub const MAX_CLAIM_ITEMS: usize = 256;

/// All configured issuers.
pub struct Oidc {
    issuers: Vec<Arc<Keys>>,
    cache: Mutex<Cache>,
}

/// A valid token: who it stands for and until when.
#[derive(Debug, Clone)]
pub struct Verified {
    pub principal: Principal,
    /// `exp`, seconds since the Unix epoch.
    pub expires: u64,
}

impl Oidc {
    /// Builds the verifier; no I/O (keys are fetched by [`Oidc::prefetch`] or on first use).
    pub fn new(issuers: &[OidcIssuer]) -> Result<Self, String> {
        crate::jwt_crypto::install();
        let http = jwks::http_client()?;
        Ok(Self {
            issuers: issuers
                .iter()
                .map(|i| Arc::new(Keys::new(i.clone(), http.clone())))
                .collect(),
            cache: Mutex::new(Cache::default()),
        })
    }

    /// Starts fetching every issuer's keys in the background (a failure is logged; tokens then
    /// fetch them when they arrive). Needs a Tokio runtime.
    pub fn prefetch(&self) {
        for keys in &self.issuers {
            keys.refresh_in_background(Instant::now());
        }
    }

    /// Key-set documents fetched so far, all issuers together.
    pub fn jwks_fetches(&self) -> u64 {
        self.issuers.iter().map(|k| k.jwks_fetches()).sum()
    }

    /// Verifies a token: the principal and its expiry, or why it is refused.
    pub async fn check(&self, token: &str) -> Result<Verified, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Malformed("token longer than 16 KiB"));
        }
        let hash = sha256(token.as_bytes());
        let now = unix_now();
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&hash, now);
        if let Some(entry) = cached
            && let Some(set) = self.issuers[entry.issuer].usable(Instant::now())
            && set.generation == entry.generation
        {
            return Ok(entry.verified);
        }
        let (issuer, verified, generation) = self.verify_cold(token).await?;
        if verified.expires > now {
            self.cache
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(
                    hash,
                    Entry {
                        verified: verified.clone(),
                        issuer,
                        generation,
                    },
                    now,
                );
        }
        Ok(verified)
    }

    async fn verify_cold(&self, token: &str) -> Result<(usize, Verified, u64), AuthError> {
        let parts = Unverified::parse(token)?;
        let iss = parts
            .payload
            .get("iss")
            .and_then(Value::as_str)
            .ok_or_else(|| AuthError::invalid("the token has no iss claim"))?;
        let index = self
            .issuers
            .iter()
            .position(|k| jwks::same_issuer(iss, k.config().issuer.as_str()))
            .ok_or_else(|| {
                AuthError::invalid(
                    "the token's issuer (iss) is not a configured [[auth.oidc]] issuer",
                )
            })?;
        let keys = &self.issuers[index];
        let config = keys.config();
        let alg = allowed_algorithm(&parts.alg, &config.algorithms)?;
        let (key, generation) = find_key(keys, parts.kid.as_deref(), alg).await?;
        let validation = validation(config, iss, alg);
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.decoding, &validation)
            .map_err(|e| AuthError::invalid(decode_reason(e.kind())))?;
        let claims = data.claims;
        let now = unix_now();
        if let Some(iat) = claims.get("iat") {
            let iat = iat
                .as_f64()
                .ok_or_else(|| AuthError::invalid("iat is not a number"))?;
            if iat > (now + config.clock_skew.as_secs()) as f64 {
                return Err(AuthError::invalid("issued in the future (iat)"));
            }
        }
        for name in &config.required_claims {
            if claims.get(name).is_none_or(Value::is_null) {
                return Err(AuthError::invalid(format!(
                    "required claim {name:?} is missing"
                )));
            }
        }
        let expires = claims
            .get("exp")
            .and_then(Value::as_f64)
            .map_or(0, |e| e as u64);
        let principal = principal(config, iss, &claims)?;
        Ok((index, Verified { principal, expires }, generation))
    }
}

impl BearerVerifier for Oidc {
    fn verify<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Principal, AuthError>> {
        Box::pin(async move { self.check(token).await.map(|v| v.principal) })
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What a token says about itself before anything is verified.
struct Unverified {
    alg: String,
    kid: Option<String>,
    payload: Map<String, Value>,
}

impl Unverified {
    fn parse(token: &str) -> Result<Self, AuthError> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::invalid(
                "not a signed JWT (header.payload.signature)",
            ));
        };
        let object = |part: &str, what: &'static str| {
            URL_SAFE_NO_PAD
                .decode(part)
                .ok()
                .and_then(|bytes| serde_json::from_slice::<Map<String, Value>>(&bytes).ok())
                .ok_or_else(|| AuthError::invalid(format!("the JWT {what} is not base64url JSON")))
        };
        let header = object(header, "header")?;
        let payload = object(payload, "payload")?;
        let alg = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or_else(|| AuthError::invalid("the JWT header has no alg"))?
            .to_owned();
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.clone()),
            Some(_) => return Err(AuthError::invalid("the JWT header's kid is not a string")),
        };
        Ok(Self { alg, kid, payload })
    }
}

fn allowed_algorithm(alg: &str, allowed: &[JwtAlgorithm]) -> Result<JwtAlgorithm, AuthError> {
    if let Some(a) = allowed.iter().find(|a| a.as_str() == alg) {
        return Ok(*a);
    }
    let shown: String = alg.chars().take(16).collect();
    Err(AuthError::invalid(
        if alg.eq_ignore_ascii_case("none") || alg.starts_with("HS") {
            format!("alg {shown:?} is never accepted (only asymmetric signatures)")
        } else {
            format!("alg {shown:?} is not in this issuer's algorithms")
        },
    ))
}

/// The key for `kid` and `alg`, refreshing the key set (rate-limited) when it is unknown or
/// the set is missing or too old.
async fn find_key(
    keys: &Arc<Keys>,
    kid: Option<&str>,
    alg: JwtAlgorithm,
) -> Result<(jwks::Key, u64), AuthError> {
    let mut refreshed = false;
    loop {
        let seen = keys.attempts();
        let lookup = keys
            .usable(Instant::now())
            .map(|set| (set.find(kid, alg), set.generation));
        match lookup {
            Some((Lookup::Found(key), generation)) => return Ok((key, generation)),
            Some((Lookup::WrongType, _)) => {
                return Err(AuthError::invalid(
                    "the key named by kid is not of the type alg needs",
                ));
            }
            Some((Lookup::Ambiguous, _)) => {
                return Err(AuthError::invalid(
                    "the token has no kid and several of the issuer's keys fit its alg",
                ));
            }
            Some((Lookup::Unknown, _)) if refreshed => {
                return Err(AuthError::invalid(if kid.is_some() {
                    "no key with the token's kid in the issuer's key set (refreshed at most once per jwks_min_refresh)"
                } else {
                    "the token has no kid and no key of the issuer's key set fits its alg"
                }));
            }
            None if refreshed => {
                let why = keys
                    .last_error()
                    .unwrap_or_else(|| "not fetched yet".into());
                return Err(AuthError::invalid(format!(
                    "the issuer's keys are unavailable ({why})"
                )));
            }
            Some((Lookup::Unknown, _)) | None => {
                keys.refresh(seen).await;
                refreshed = true;
            }
        }
    }
}

fn to_algorithm(alg: JwtAlgorithm) -> Algorithm {
    match alg {
        JwtAlgorithm::RS256 => Algorithm::RS256,
        JwtAlgorithm::PS256 => Algorithm::PS256,
        JwtAlgorithm::ES256 => Algorithm::ES256,
        JwtAlgorithm::EdDSA => Algorithm::EdDSA,
    }
}

fn validation(config: &OidcIssuer, iss: &str, alg: JwtAlgorithm) -> Validation {
    let mut validation = Validation::new(to_algorithm(alg));
    validation.leeway = config.clock_skew.as_secs();
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    // `iss` chose the issuer; it must also be exactly what the token says.
    validation.set_issuer(&[iss]);
    validation.set_audience(&[config.audience.as_str()]);
    validation
}

fn decode_reason(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::InvalidSignature => "the signature does not verify".into(),
        ErrorKind::ExpiredSignature => "expired (exp)".into(),
        ErrorKind::ImmatureSignature => "not valid yet (nbf)".into(),
        ErrorKind::InvalidIssuer => "wrong issuer (iss)".into(),
        ErrorKind::InvalidAudience => {
            "wrong audience (aud): the token is for another resource".into()
        }
        ErrorKind::MissingRequiredClaim(claim) => format!("required claim {claim:?} is missing"),
        ErrorKind::InvalidClaimFormat(claim) => format!("claim {claim:?} has the wrong type"),
        ErrorKind::InvalidAlgorithm | ErrorKind::UnsupportedAlgorithm => {
            "the algorithm does not fit the key".into()
        }
        ErrorKind::InvalidToken => "malformed JWT".into(),
        ErrorKind::Base64(_) | ErrorKind::Json(_) | ErrorKind::Utf8(_) => {
            "malformed JWT (encoding)".into()
        }
        // `crit` extensions it does not understand, among others.
        _ => "malformed JWT header".into(),
    }
}

/// A claim value fit for a principal: bounded, no control characters.
fn clean(name: &str, value: &str) -> Result<String, AuthError> {
    if value.chars().count() > MAX_CLAIM_CHARS {
        return Err(AuthError::invalid(format!(
            "claim {name:?} is longer than {MAX_CLAIM_CHARS} characters"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(AuthError::invalid(format!(
            "claim {name:?} contains control characters"
        )));
    }
    Ok(value.to_owned())
}

fn string_claim(claims: &Map<String, Value>, name: &str) -> Result<Option<String>, AuthError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => clean(name, s).map(Some),
        Some(_) => Err(AuthError::invalid(format!(
            "claim {name:?} is not a string"
        ))),
    }
}

/// A string array (or, for scopes, a space-separated string).
fn list_claim(
    claims: &Map<String, Value>,
    name: &str,
    split_string: bool,
) -> Result<Vec<String>, AuthError> {
    let items: Vec<&str> = match claims.get(name) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) if split_string => s.split(' ').filter(|s| !s.is_empty()).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str().ok_or_else(|| {
                    AuthError::invalid(format!("claim {name:?} is not a list of strings"))
                })
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(AuthError::invalid(format!(
                "claim {name:?} is not a list of strings"
            )));
        }
    };
    if items.len() > MAX_CLAIM_ITEMS {
        return Err(AuthError::invalid(format!(
            "claim {name:?} has more than {MAX_CLAIM_ITEMS} items"
        )));
    }
    items.into_iter().map(|s| clean(name, s)).collect()
}

fn principal(
    config: &OidcIssuer,
    iss: &str,
    claims: &Map<String, Value>,
) -> Result<Principal, AuthError> {
    let mapping = &config.claims;
    let user = string_claim(claims, &mapping.user)?
        .filter(|u| !u.is_empty())
        .ok_or_else(|| AuthError::invalid(format!("claim {:?} is missing", mapping.user)))?;
    let mut agent = None;
    for name in &mapping.agent {
        if let Some(value) = string_claim(claims, name)? {
            agent = Some(value);
            break;
        }
    }
    let optional = |name: &Option<String>| -> Result<Option<String>, AuthError> {
        match name {
            Some(name) => string_claim(claims, name),
            None => Ok(None),
        }
    };
    Ok(Principal {
        user,
        agent,
        tenant: optional(&mapping.tenant)?,
        roles: match &mapping.roles {
            Some(name) => list_claim(claims, name, false)?,
            None => Vec::new(),
        },
        scopes: list_claim(claims, &mapping.scopes, true)?,
        clearance: optional(&mapping.clearance)?,
        method: AuthMethod::Oidc,
        issuer: Some(clean("iss", iss)?),
        token_id: string_claim(claims, "jti")?,
    })
}

#[derive(Clone)]
struct Entry {
    verified: Verified,
    issuer: usize,
    generation: u64,
}

/// Validated tokens by SHA-256, bounded: when full, expired entries go first, then the oldest
/// tenth.
#[derive(Default)]
struct Cache {
    map: HashMap<[u8; 32], Entry>,
    order: VecDeque<[u8; 32]>,
}

impl Cache {
    fn get(&mut self, hash: &[u8; 32], now: u64) -> Option<Entry> {
        let entry = self.map.get(hash)?;
        if entry.verified.expires <= now {
            self.map.remove(hash);
            return None;
        }
        Some(entry.clone())
    }

    fn insert(&mut self, hash: [u8; 32], entry: Entry, now: u64) {
        if self.map.len() >= CACHE_CAPACITY && !self.map.contains_key(&hash) {
            self.map.retain(|_, e| e.verified.expires > now);
            let map = &self.map;
            self.order.retain(|h| map.contains_key(h));
            // Room for a tenth more at once, so a cache full of live tokens costs one sweep
            // per thousand inserts, not one per insert.
            while self.map.len() >= CACHE_CAPACITY - CACHE_CAPACITY / 10 {
                let Some(oldest) = self.order.pop_front() else {
                    break;
                };
                self.map.remove(&oldest);
            }
        }
        if self.map.insert(hash, entry).is_none() {
            self.order.push_back(hash);
        }
        // Entries dropped on lookup leave their hash in `order`; keep it bounded too.
        if self.order.len() > 2 * CACHE_CAPACITY {
            let map = &self.map;
            self.order.retain(|h| map.contains_key(h));
        }
    }
}

#[cfg(test)]
mod tests;
