//! Tokens for HTTP services (`identity = "jwt"`): a JWT the gateway signs, per service and
//! caller, sent as `Authorization: Bearer` instead of anything the caller presented.
//!
//! Header `{alg: EdDSA|ES256, kid, typ: "JWT"}`; claims `iss` (the gateway), `aud` (the
//! service's URL without query: its resource), `sub` (user), `act: {sub: agent}`, `tenant`,
//! `roles`, `scope` (space-separated), `clearance`, `auth_method`, `idp`, `iat`, `nbf`, `exp`
//! (at most 5 minutes later), `jti` (128 random bits). Absent facts are left out, never empty.
//!
//! Signing costs tens of microseconds, so each [`Minter`] keeps the tokens it made and hands
//! the same one to the same caller until half its lifetime has passed: the warm cost is a map
//! lookup. The cache is bounded ([`MAX_CACHED`] callers per service).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SecureRandom;
use serde_json::{Map, Value, json};

use crate::keys::KeySet;
use crate::{Caller, Canonical, now_secs};

/// Callers whose tokens one service's minter keeps at once.
pub const MAX_CACHED: usize = 4096;
/// The longest lifetime a token may have.
pub const MAX_LIFETIME: Duration = Duration::from_secs(300);
/// `auth_method` of the token the gateway sends with requests it makes on its own behalf
/// (`initialize`, its notification stream, cancellations): `sub` is then the gateway's issuer.
pub const GATEWAY_METHOD: &str = "gateway";

/// The gateway as a token issuer: its keys, its `iss` and the tokens' lifetime.
#[derive(Debug)]
pub struct Issuer {
    pub keys: KeySet,
    pub issuer: String,
    pub lifetime: Duration,
}

impl Issuer {
    /// A minter for tokens whose audience is `audience` (one service).
    pub fn minter(self: &Arc<Self>, audience: String) -> Minter {
        Minter {
            issuer: self.clone(),
            audience,
            cache: Mutex::new(HashMap::new()),
        }
    }
}

struct Cached {
    token: Arc<str>,
    renew_at: Instant,
}

/// Makes (and reuses) the tokens of one service.
pub struct Minter {
    issuer: Arc<Issuer>,
    audience: String,
    /// Keyed by the canonical encoding of the caller (exact: a hash collision must never hand
    /// one caller's token to another).
    cache: Mutex<HashMap<Vec<u8>, Cached>>,
}

impl std::fmt::Debug for Minter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minter")
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

/// The signing key failed (it never does for a loaded key; the request then fails closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the gateway could not sign an identity token")]
pub struct SignError;

impl Minter {
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// A token for `caller` (`None`: the gateway itself), fresh or from the cache.
    pub fn token(&self, caller: Option<&Caller<'_>>) -> Result<Arc<str>, SignError> {
        let mut key = Canonical::default();
        match caller {
            Some(c) => key.caller(c),
            None => key.text(0, GATEWAY_METHOD),
        }
        let key = key.into_bytes();
        let now = Instant::now();
        if let Some(hit) = self.lock().get(&key).filter(|c| c.renew_at > now) {
            return Ok(hit.token.clone());
        }
        let token: Arc<str> = self.sign(caller)?.into();
        let mut cache = self.lock();
        if cache.len() >= MAX_CACHED {
            cache.retain(|_, c| c.renew_at > now);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(
            key,
            Cached {
                token: token.clone(),
                renew_at: now + self.issuer.lifetime / 2,
            },
        );
        Ok(token)
    }

    fn sign(&self, caller: Option<&Caller<'_>>) -> Result<String, SignError> {
        let issuer = &self.issuer;
        let key = issuer.keys.current();
        let header = json!({ "alg": key.alg, "kid": key.kid, "typ": "JWT" });
        let iat = now_secs();
        let mut jti = [0u8; 16];
        issuer.keys.rng().fill(&mut jti).map_err(|_| SignError)?;
        let mut claims = Map::new();
        claims.insert("iss".into(), issuer.issuer.clone().into());
        claims.insert("aud".into(), self.audience.clone().into());
        match caller {
            Some(c) => caller_claims(c, &mut claims),
            None => {
                claims.insert("sub".into(), issuer.issuer.clone().into());
                claims.insert("auth_method".into(), GATEWAY_METHOD.into());
            }
        }
        claims.insert("iat".into(), iat.into());
        claims.insert("nbf".into(), iat.into());
        claims.insert("exp".into(), (iat + issuer.lifetime.as_secs()).into());
        claims.insert("jti".into(), URL_SAFE_NO_PAD.encode(jti).into());
        let mut token = URL_SAFE_NO_PAD.encode(header.to_string());
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(Value::Object(claims).to_string()));
        let signature = issuer.keys.sign(token.as_bytes()).ok_or(SignError)?;
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(signature));
        Ok(token)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Cached>> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn caller_claims(c: &Caller<'_>, claims: &mut Map<String, Value>) {
    claims.insert("sub".into(), c.user.into());
    if let Some(agent) = c.agent {
        claims.insert("act".into(), json!({ "sub": agent }));
    }
    if let Some(tenant) = c.tenant {
        claims.insert("tenant".into(), tenant.into());
    }
    if !c.roles.is_empty() {
        claims.insert("roles".into(), c.roles.into());
    }
    if !c.scopes.is_empty() {
        claims.insert("scope".into(), c.scopes.join(" ").into());
    }
    if let Some(clearance) = c.clearance {
        claims.insert("clearance".into(), clearance.into());
    }
    claims.insert("auth_method".into(), c.method.into());
    if let Some(idp) = c.idp {
        claims.insert("idp".into(), idp.into());
    }
}

#[cfg(test)]
mod tests {
    use ring::signature::{ED25519, UnparsedPublicKey};

    use super::*;
    use crate::keys::tests::ed25519_pem;

    fn issuer(lifetime: Duration) -> Arc<Issuer> {
        Arc::new(Issuer {
            keys: KeySet::load(Some(&ed25519_pem()), &[]).expect("keys"),
            issuer: "https://gw.example".into(),
            lifetime,
        })
    }

    fn decode(part: &str) -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64")).expect("json")
    }

    #[test]
    fn tokens_carry_the_caller_and_verify_with_the_published_key() {
        let issuer = issuer(Duration::from_secs(60));
        let minter = issuer.minter("http://127.0.0.1:9/mcp".into());
        let roles = ["reader".to_owned(), "writer".to_owned()];
        let scopes = ["files:read".to_owned(), "search".to_owned()];
        let caller = Caller {
            user: "alice",
            agent: Some("bot"),
            tenant: Some("acme"),
            roles: &roles,
            scopes: &scopes,
            clearance: Some("internal"),
            method: "oidc",
            idp: Some("https://idp.example"),
        };
        let token = minter.token(Some(&caller)).expect("token");
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header = decode(parts[0]);
        assert_eq!(header["alg"], "EdDSA");
        assert_eq!(header["typ"], "JWT");
        assert_eq!(header["kid"], issuer.keys.current().kid);
        let claims = decode(parts[1]);
        assert_eq!(claims["iss"], "https://gw.example");
        assert_eq!(claims["aud"], "http://127.0.0.1:9/mcp");
        assert_eq!(claims["sub"], "alice");
        assert_eq!(claims["act"], json!({"sub": "bot"}));
        assert_eq!(claims["tenant"], "acme");
        assert_eq!(claims["roles"], json!(["reader", "writer"]));
        assert_eq!(claims["scope"], "files:read search");
        assert_eq!(claims["clearance"], "internal");
        assert_eq!(claims["auth_method"], "oidc");
        assert_eq!(claims["idp"], "https://idp.example");
        let iat = claims["iat"].as_u64().expect("iat");
        assert_eq!(claims["nbf"].as_u64(), Some(iat));
        assert_eq!(claims["exp"].as_u64(), Some(iat + 60));
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(claims["jti"].as_str().expect("jti"))
                .expect("base64")
                .len(),
            16
        );
        let x = URL_SAFE_NO_PAD
            .decode(issuer.keys.current().jwk()["x"].as_str().expect("x"))
            .expect("base64");
        let signed = format!("{}.{}", parts[0], parts[1]);
        UnparsedPublicKey::new(&ED25519, x)
            .verify(
                signed.as_bytes(),
                &URL_SAFE_NO_PAD.decode(parts[2]).expect("base64"),
            )
            .expect("signature verifies");
    }

    #[test]
    fn absent_facts_are_left_out_and_the_gateway_has_its_own_token() {
        let issuer = issuer(Duration::from_secs(60));
        let minter = issuer.minter("https://svc.example/mcp".into());
        let caller = Caller::new("bob", "api_token");
        let claims = decode(
            minter
                .token(Some(&caller))
                .expect("token")
                .split('.')
                .nth(1)
                .expect("claims"),
        );
        let mut keys: Vec<&str> = claims
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        // The set of claims (JSON objects keep insertion order: serde_json's preserve_order is
        // on in this workspace, through cedar-policy).
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "aud",
                "auth_method",
                "exp",
                "iat",
                "iss",
                "jti",
                "nbf",
                "sub"
            ]
        );
        let own = decode(
            minter
                .token(None)
                .expect("token")
                .split('.')
                .nth(1)
                .expect("claims"),
        );
        assert_eq!(own["sub"], "https://gw.example");
        assert_eq!(own["auth_method"], GATEWAY_METHOD);
        assert!(own.get("act").is_none() && own.get("tenant").is_none());
    }

    #[test]
    fn tokens_are_reused_per_caller_until_half_their_lifetime() {
        let issuer = issuer(Duration::from_secs(2));
        let minter = issuer.minter("https://svc.example/mcp".into());
        let alice = Caller {
            tenant: Some("acme"),
            ..Caller::new("alice", "api_token")
        };
        let other_tenant = Caller {
            tenant: Some("globex"),
            ..alice
        };
        let first = minter.token(Some(&alice)).expect("token");
        assert_eq!(minter.token(Some(&alice)).expect("token"), first);
        assert_ne!(minter.token(Some(&other_tenant)).expect("token"), first);
        assert_ne!(minter.token(None).expect("token"), first);
        std::thread::sleep(Duration::from_millis(1100));
        assert_ne!(
            minter.token(Some(&alice)).expect("token"),
            first,
            "renewed after half the lifetime"
        );
    }

    #[test]
    fn the_cache_is_bounded() {
        let issuer = issuer(Duration::from_secs(60));
        let minter = issuer.minter("https://svc.example/mcp".into());
        let names: Vec<String> = (0..=MAX_CACHED).map(|n| format!("user{n}")).collect();
        for name in &names {
            minter
                .token(Some(&Caller::new(name, "api_token")))
                .expect("token");
        }
        assert!(minter.lock().len() <= MAX_CACHED);
    }
}
