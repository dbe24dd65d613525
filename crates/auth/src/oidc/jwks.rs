//! An issuer's signing keys: fetched (OpenID discovery, then the JWKS), kept, refreshed.
//!
//! Rules, each for a reason:
//! - Keys come only from the configured `jwks_uri` or from discovery at
//!   `<issuer>/.well-known/openid-configuration`, whose `issuer` must be the configured one and
//!   whose `jwks_uri` must be on the issuer's host. Nothing a token says (`jku`, `x5u`, `jwk`,
//!   `x5c`) is ever fetched or trusted.
//! - Fetches are SSRF-bounded: https (http only to a loopback host), no redirects, no proxy,
//!   5 s, 256 KiB.
//! - At most one fetch per issuer runs at a time (single flight), and fetches start at most once
//!   per `jwks_min_refresh`, whatever asks for them: a flood of forged `kid`s costs at most one
//!   fetch per interval.
//! - A key set is refreshed in the background once half of `jwks_max_age` has passed; a set
//!   older than `jwks_max_age` is not used (fail closed) until a fetch succeeds.
//! - Only keys that can verify a configured algorithm are kept: RSA (RS256, PS256), EC P-256
//!   (ES256), OKP Ed25519 (EdDSA); symmetric (`oct`) keys never.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::DecodingKey;
use micromcp_config::{JwtAlgorithm, OidcIssuer};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Largest discovery document or key set read.
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// Time for one discovery or JWKS request, connection included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// One verification key of an issuer.
#[derive(Clone)]
pub struct Key {
    pub kid: Option<String>,
    /// The configured algorithms this key may verify (its type decides; its `alg`, if any,
    /// narrows).
    pub algorithms: Vec<JwtAlgorithm>,
    pub decoding: DecodingKey,
}

/// The keys from one successful fetch.
pub struct KeySet {
    pub keys: Vec<Key>,
    pub fetched_at: Instant,
    /// Changes whenever the keys differ from the previous set's, so a validated token whose key
    /// may be gone is checked again.
    pub generation: u64,
    fingerprint: [u8; 32],
}

/// What looking a token's key up found.
pub enum Lookup {
    Found(Key),
    /// No key with this `kid` (or, without a `kid`, none for the algorithm).
    Unknown,
    /// A key with this `kid` exists but cannot verify this algorithm (algorithm confusion).
    WrongType,
    /// No `kid`, and several keys fit the algorithm.
    Ambiguous,
}

impl KeySet {
    pub fn find(&self, kid: Option<&str>, alg: JwtAlgorithm) -> Lookup {
        match kid {
            Some(kid) => {
                let mut named = self.keys.iter().filter(|k| k.kid.as_deref() == Some(kid));
                let mut seen = false;
                for key in named.by_ref() {
                    seen = true;
                    if key.algorithms.contains(&alg) {
                        return Lookup::Found(key.clone());
                    }
                }
                if seen {
                    Lookup::WrongType
                } else {
                    Lookup::Unknown
                }
            }
            None => {
                let mut fitting = self.keys.iter().filter(|k| k.algorithms.contains(&alg));
                match (fitting.next(), fitting.next()) {
                    (Some(key), None) => Lookup::Found(key.clone()),
                    (None, _) => Lookup::Unknown,
                    (Some(_), Some(_)) => Lookup::Ambiguous,
                }
            }
        }
    }

    pub fn is_fresh(&self, max_age: Duration, now: Instant) -> bool {
        now.saturating_duration_since(self.fetched_at) < max_age
    }
}

/// An issuer's key store.
pub struct Keys {
    config: OidcIssuer,
    http: reqwest::Client,
    created: Instant,
    current: RwLock<Option<Arc<KeySet>>>,
    /// Fetch attempts started; a caller that saw N and finds N+1 knows a fetch ran meanwhile.
    attempts: AtomicU64,
    /// When the last attempt started, in ms since `created` (`u64::MAX`: never).
    last_attempt_ms: AtomicU64,
    background: AtomicBool,
    /// Held while fetching (the single flight); holds the discovered `jwks_uri`.
    flight: tokio::sync::Mutex<Option<url::Url>>,
    last_error: Mutex<Option<String>>,
    /// JWKS documents fetched (for tests and `auth check`).
    jwks_fetches: AtomicU64,
}

impl Keys {
    pub fn new(config: OidcIssuer, http: reqwest::Client) -> Self {
        Self {
            config,
            http,
            created: Instant::now(),
            current: RwLock::new(None),
            attempts: AtomicU64::new(0),
            last_attempt_ms: AtomicU64::new(u64::MAX),
            background: AtomicBool::new(false),
            flight: tokio::sync::Mutex::new(None),
            last_error: Mutex::new(None),
            jwks_fetches: AtomicU64::new(0),
        }
    }

    pub fn config(&self) -> &OidcIssuer {
        &self.config
    }

    pub fn current(&self) -> Option<Arc<KeySet>> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The current set if it may still be used, and a background refresh when it is getting old.
    pub fn usable(self: &Arc<Self>, now: Instant) -> Option<Arc<KeySet>> {
        let set = self.current()?;
        if !set.is_fresh(self.config.jwks_max_age, now) {
            return None;
        }
        if now.saturating_duration_since(set.fetched_at) >= self.config.jwks_max_age / 2 {
            self.refresh_in_background(now);
        }
        Some(set)
    }

    pub fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::Acquire)
    }

    pub fn jwks_fetches(&self) -> u64 {
        self.jwks_fetches.load(Ordering::Relaxed)
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn may_attempt(&self, now: Instant) -> bool {
        let last = self.last_attempt_ms.load(Ordering::Acquire);
        last == u64::MAX
            || self.ms_since_created(now).saturating_sub(last) >= ms(self.config.jwks_min_refresh)
    }

    fn ms_since_created(&self, now: Instant) -> u64 {
        ms(now.saturating_duration_since(self.created))
    }

    /// Fetches the keys unless a fetch ran since the caller saw `seen` attempts (then its result
    /// is what the caller wanted) or the last one started less than `jwks_min_refresh` ago.
    pub async fn refresh(&self, seen: u64) {
        let mut discovered = self.flight.lock().await;
        let now = Instant::now();
        if self.attempts() != seen || !self.may_attempt(now) {
            return;
        }
        self.last_attempt_ms
            .store(self.ms_since_created(now), Ordering::Release);
        self.attempts.fetch_add(1, Ordering::AcqRel);
        match self.fetch(&mut discovered).await {
            Ok(keys) => {
                let fingerprint = fingerprint(&keys.1);
                let mut current = self
                    .current
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let generation = match current.as_deref() {
                    Some(old) if old.fingerprint == fingerprint => old.generation,
                    Some(old) => old.generation + 1,
                    None => 1,
                };
                *current = Some(Arc::new(KeySet {
                    keys: keys.0,
                    fetched_at: now,
                    generation,
                    fingerprint,
                }));
                drop(current);
                *self
                    .last_error
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
            }
            Err(error) => {
                tracing::warn!(issuer = %self.config.issuer, %error, "cannot fetch the issuer's signing keys");
                *self
                    .last_error
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(error);
            }
        }
    }

    /// Starts a refresh in a task of its own (at most one pending), when one is allowed.
    pub fn refresh_in_background(self: &Arc<Self>, now: Instant) {
        if !self.may_attempt(now) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.background.swap(true, Ordering::AcqRel) {
            return;
        }
        let keys = self.clone();
        let seen = self.attempts();
        runtime.spawn(async move {
            keys.refresh(seen).await;
            keys.background.store(false, Ordering::Release);
        });
    }

    /// Discovery (once) and the JWKS.
    async fn fetch(
        &self,
        discovered: &mut Option<url::Url>,
    ) -> Result<(Vec<Key>, Vec<String>), String> {
        let jwks_uri = match (&self.config.jwks_uri, &*discovered) {
            (Some(uri), _) | (None, Some(uri)) => uri.clone(),
            (None, None) => {
                let uri = self.discover().await?;
                *discovered = Some(uri.clone());
                uri
            }
        };
        self.jwks_fetches.fetch_add(1, Ordering::Relaxed);
        let document = get_json(&self.http, &jwks_uri).await?;
        parse_jwks(&document, &self.config.algorithms)
    }

    async fn discover(&self) -> Result<url::Url, String> {
        let base = self.config.issuer.as_str().trim_end_matches('/');
        let url = url::Url::parse(&format!("{base}/.well-known/openid-configuration"))
            .map_err(|e| format!("bad discovery URL: {e}"))?;
        let document = get_json(&self.http, &url).await?;
        let issuer = document
            .get("issuer")
            .and_then(Value::as_str)
            .ok_or("the discovery document has no issuer")?;
        if !same_issuer(issuer, self.config.issuer.as_str()) {
            return Err(format!(
                "the discovery document names issuer {issuer:?}, not the configured one"
            ));
        }
        let jwks = document
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or("the discovery document has no jwks_uri")?;
        let jwks = url::Url::parse(jwks).map_err(|e| format!("discovered jwks_uri: {e}"))?;
        if jwks.host() != self.config.issuer.host() {
            return Err(format!(
                "the discovered jwks_uri {jwks} is not on the issuer's host; set jwks_uri to trust it"
            ));
        }
        check_fetchable(&jwks)?;
        Ok(jwks)
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

pub use micromcp_config::same_issuer;

/// https anywhere; http only to a loopback host (tests). Config enforces the same; this
/// double-checks every URL right before it is fetched, discovered ones included.
pub fn check_fetchable(url: &url::Url) -> Result<(), String> {
    let loopback = micromcp_config::is_loopback_url(url);
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(format!(
            "refusing to fetch {url}: https only (http only to a loopback address)"
        )),
    }
}

/// The HTTP client for discovery and key sets.
pub fn http_client() -> Result<reqwest::Client, String> {
    // reqwest is built without a crypto provider; `Err` = one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .referer(false)
        .connect_timeout(FETCH_TIMEOUT)
        .timeout(FETCH_TIMEOUT)
        .user_agent(concat!("micromcp/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

async fn get_json(http: &reqwest::Client, url: &url::Url) -> Result<Value, String> {
    check_fetchable(url)?;
    let mut response = http
        .get(url.clone())
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| format!("GET {url}: {}", transport_error(&e)))?;
    let status = response.status();
    if status.is_redirection() {
        return Err(format!("GET {url}: redirect ({status}) not followed"));
    }
    if status != reqwest::StatusCode::OK {
        return Err(format!("GET {url}: status {status}"));
    }
    if response
        .content_length()
        .is_some_and(|n| n > MAX_DOCUMENT_BYTES as u64)
    {
        return Err(format!("GET {url}: larger than {MAX_DOCUMENT_BYTES} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("GET {url}: {}", transport_error(&e)))?
    {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(format!("GET {url}: larger than {MAX_DOCUMENT_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|e| format!("GET {url}: not JSON: {e}"))
}

fn transport_error(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    kind.to_owned()
}

/// The usable keys of a JWKS document, and a canonical text of each (to notice changes).
pub fn parse_jwks(
    document: &Value,
    allowed: &[JwtAlgorithm],
) -> Result<(Vec<Key>, Vec<String>), String> {
    let entries = document
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("the key set has no \"keys\" array")?;
    let mut keys = Vec::new();
    let mut texts = Vec::new();
    for entry in entries {
        if let Some(key) = parse_key(entry, allowed) {
            texts.push(entry.to_string());
            keys.push(key);
        }
    }
    Ok((keys, texts))
}

fn parse_key(entry: &Value, allowed: &[JwtAlgorithm]) -> Option<Key> {
    let text = |name: &str| entry.get(name).and_then(Value::as_str);
    if entry.get("use").is_some() && text("use") != Some("sig") {
        return None;
    }
    let declared = text("alg");
    let (candidates, decoding): (&[JwtAlgorithm], DecodingKey) = match text("kty")? {
        "RSA" => (
            &[JwtAlgorithm::RS256, JwtAlgorithm::PS256],
            DecodingKey::from_rsa_components(text("n")?, text("e")?).ok()?,
        ),
        "EC" if text("crv") == Some("P-256") => {
            let x = text("x")?;
            let y = text("y")?;
            if b64_len(x) != Some(32) || b64_len(y) != Some(32) {
                return None;
            }
            (
                &[JwtAlgorithm::ES256],
                DecodingKey::from_ec_components(x, y).ok()?,
            )
        }
        "OKP" if text("crv") == Some("Ed25519") => {
            let x = text("x")?;
            if b64_len(x) != Some(32) {
                return None;
            }
            (
                &[JwtAlgorithm::EdDSA],
                DecodingKey::from_ed_components(x).ok()?,
            )
        }
        // `oct` (a shared secret) and everything else: never a verification key here.
        _ => return None,
    };
    let algorithms: Vec<JwtAlgorithm> = candidates
        .iter()
        .copied()
        .filter(|a| allowed.contains(a))
        .filter(|a| match declared {
            None => true,
            Some("Ed25519") => *a == JwtAlgorithm::EdDSA,
            Some(d) => a.as_str() == d,
        })
        .collect();
    if algorithms.is_empty() {
        return None;
    }
    Some(Key {
        kid: text("kid").map(str::to_owned),
        algorithms,
        decoding,
    })
}

fn b64_len(text: &str) -> Option<usize> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .ok()
        .map(|b| b.len())
}

fn fingerprint(texts: &[String]) -> [u8; 32] {
    let mut sorted: Vec<&String> = texts.iter().collect();
    sorted.sort();
    let mut hash = Sha256::new();
    for text in sorted {
        hash.update(text.as_bytes());
        hash.update([0]);
    }
    hash.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const N: &str = "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw";

    #[test]
    fn only_asymmetric_signature_keys_of_allowed_algorithms_are_kept() {
        let doc = json!({ "keys": [
            { "kty": "RSA", "kid": "r", "n": N, "e": "AQAB" },
            { "kty": "RSA", "kid": "enc", "use": "enc", "n": N, "e": "AQAB" },
            { "kty": "RSA", "kid": "ps", "alg": "PS256", "n": N, "e": "AQAB" },
            { "kty": "oct", "kid": "hmac", "k": "c2VjcmV0" },
            { "kty": "EC", "kid": "p384", "crv": "P-384", "x": "AA", "y": "AA" },
            { "kty": "EC", "kid": "short", "crv": "P-256", "x": "AA", "y": "AA" },
            { "kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo" },
            "not an object",
        ]});
        let (keys, _) = parse_jwks(&doc, &JwtAlgorithm::ALL).expect("parsed");
        let kids: Vec<_> = keys
            .iter()
            .map(|k| k.kid.as_deref().unwrap_or(""))
            .collect();
        assert_eq!(kids, ["r", "ps", "ed"]);
        assert_eq!(
            keys[0].algorithms,
            [JwtAlgorithm::RS256, JwtAlgorithm::PS256]
        );
        assert_eq!(keys[1].algorithms, [JwtAlgorithm::PS256]);
        // Only ES256 allowed: no RSA or Ed25519 key survives.
        let (keys, _) = parse_jwks(&doc, &[JwtAlgorithm::ES256]).expect("parsed");
        assert!(keys.is_empty());
        assert!(parse_jwks(&json!({"keys": {}}), &JwtAlgorithm::ALL).is_err());
    }

    #[test]
    fn lookup_by_kid_refuses_a_key_of_another_type() {
        let doc = json!({ "keys": [
            { "kty": "RSA", "kid": "r", "n": N, "e": "AQAB" },
            { "kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo" },
        ]});
        let (keys, texts) = parse_jwks(&doc, &JwtAlgorithm::ALL).expect("parsed");
        let set = KeySet {
            keys,
            fetched_at: Instant::now(),
            generation: 1,
            fingerprint: fingerprint(&texts),
        };
        assert!(matches!(
            set.find(Some("r"), JwtAlgorithm::RS256),
            Lookup::Found(_)
        ));
        assert!(matches!(
            set.find(Some("r"), JwtAlgorithm::ES256),
            Lookup::WrongType
        ));
        assert!(matches!(
            set.find(Some("r"), JwtAlgorithm::EdDSA),
            Lookup::WrongType
        ));
        assert!(matches!(
            set.find(Some("x"), JwtAlgorithm::RS256),
            Lookup::Unknown
        ));
        assert!(matches!(
            set.find(None, JwtAlgorithm::EdDSA),
            Lookup::Found(_)
        ));
        assert!(matches!(
            set.find(None, JwtAlgorithm::ES256),
            Lookup::Unknown
        ));
    }

    #[test]
    fn only_https_or_loopback_http_is_fetched() {
        let ok = |u: &str| check_fetchable(&url::Url::parse(u).expect("url")).is_ok();
        assert!(ok("https://idp.example/jwks"));
        assert!(ok("http://127.0.0.1:8080/jwks"));
        assert!(ok("http://[::1]:8080/jwks"));
        assert!(ok("http://localhost/jwks"));
        assert!(!ok("http://idp.example/jwks"));
        assert!(!ok("http://10.0.0.1/jwks"));
        assert!(!ok("file:///etc/passwd"));
        assert!(same_issuer("https://a.example/", "https://a.example"));
        assert!(!same_issuer("https://a.example/x", "https://a.example"));
    }
}
