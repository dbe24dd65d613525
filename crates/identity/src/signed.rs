//! The caller's identity for built-in services: `_meta["io.micromcp/identity"]` on each request,
//! HMAC-SHA256-signed and bound to that one request.
//!
//! ```json
//! {"sub": "alice", "act": {"sub": "bot"}, "tenant": "acme", "roles": ["reader"],
//!  "scopes": ["search"], "clearance": "internal", "method": "api_token",
//!  "idp": "https://idp.example", "iss": "micromcp", "iat": 1767225600, "exp": 1767225660,
//!  "req": {"id": 42, "method": "tools/call", "name": "search"},
//!  "sig": "<base64url HMAC-SHA256>"}
//! ```
//! `act`, `tenant`, `clearance`, `idp` and `req.name` are left out when absent; `roles` and
//! `scopes` may be empty. `sig` covers every other field through a canonical encoding (not
//! the JSON text, so whitespace, key order and escapes do not matter); unknown fields are
//! refused. The key is 32 random bytes the gateway makes at start, one per service, handed
//! only to that service's process in [`KEY_ENV`] (base64url).
//!
//! A [`Verifier`] accepts an identity only if the signature is right (constant-time compare),
//! `iat ≤ now + 5 s`, `now < exp`, `exp − iat ≤ 60 s`, it names this request (JSON-RPC id,
//! method, tool/prompt name or resource URI), and it was not seen before (each is accepted
//! once: a replayed message is refused).

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Caller, Canonical};

/// The `_meta` key the identity travels under. The gateway drops whatever a client puts there.
pub const META_KEY: &str = "io.micromcp/identity";
/// The environment variable that hands a built-in service its key.
pub const KEY_ENV: &str = "MICROMCP_IDENTITY_KEY";
/// How long a signed identity is valid.
pub const LIFETIME_SECS: u64 = 60;
/// Clock difference tolerated for `iat` (the gateway and its children share a clock).
const SKEW_SECS: u64 = 5;
/// Identities remembered for replay detection; beyond this, calls are refused until some
/// expire (fail closed: about 4,000 calls per second sustained for a minute).
const MAX_REMEMBERED: usize = 1 << 18;
/// Domain separation: a signature over these bytes means nothing in any other protocol.
const CONTEXT: &[u8] = b"micromcp identity v1\0";

/// The JSON-RPC id of the request an identity is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RequestId {
    Number(i64),
    Text(String),
}

/// The request an identity is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    pub id: RequestId,
    pub method: String,
    /// The tool or prompt name, or the resource URI, as the service knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Binding {
    /// The `tools/call` of `tool` with JSON-RPC id `id`.
    pub fn tool_call(id: RequestId, tool: &str) -> Self {
        Self {
            id,
            method: "tools/call".to_owned(),
            name: Some(tool.to_owned()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Actor {
    sub: String,
}

/// The identity as it travels.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    act: Option<Actor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tenant: Option<String>,
    roles: Vec<String>,
    scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    clearance: Option<String>,
    method: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    idp: Option<String>,
    iss: String,
    iat: u64,
    exp: u64,
    req: Binding,
    #[serde(default)]
    sig: String,
}

impl Wire {
    fn caller(&self) -> Caller<'_> {
        Caller {
            user: &self.sub,
            agent: self.act.as_ref().map(|a| a.sub.as_str()),
            tenant: self.tenant.as_deref(),
            roles: &self.roles,
            scopes: &self.scopes,
            clearance: self.clearance.as_deref(),
            method: &self.method,
            idp: self.idp.as_deref(),
        }
    }

    /// The bytes `sig` is computed over: everything but `sig`.
    fn signed_bytes(&self) -> Vec<u8> {
        let mut out = Canonical::with_prefix(CONTEXT);
        out.caller(&self.caller());
        out.text(9, &self.iss);
        out.number(10, self.iat.into());
        out.number(11, self.exp.into());
        match &self.req.id {
            RequestId::Number(n) => out.number(12, (*n).into()),
            RequestId::Text(t) => out.text(13, t),
        }
        out.text(14, &self.req.method);
        out.optional(15, self.req.name.as_deref());
        out.into_bytes()
    }
}

/// A service's identity key (HMAC-SHA256). Its `Debug` never shows the key.
pub struct ServiceKey {
    key: hmac::Key,
    raw: [u8; 32],
}

impl std::fmt::Debug for ServiceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServiceKey([redacted])")
    }
}

/// The key could not be made or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("identity key: {0}")]
pub struct KeyError(pub &'static str);

impl ServiceKey {
    /// A fresh random key.
    pub fn generate() -> Result<Self, KeyError> {
        let mut raw = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw)
            .map_err(|_| KeyError("the system's random number generator failed"))?;
        Ok(Self::from_raw(raw))
    }

    fn from_raw(raw: [u8; 32]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, &raw),
            raw,
        }
    }

    /// The key as [`KEY_ENV`] carries it (base64url, no padding).
    pub fn to_env_value(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.raw)
    }

    /// The key from [`KEY_ENV`]'s value.
    pub fn from_env_value(text: &str) -> Result<Self, KeyError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(text.trim())
            .map_err(|_| KeyError("not base64url"))?;
        let raw: [u8; 32] = bytes
            .try_into()
            .map_err(|_| KeyError("not 32 bytes long"))?;
        Ok(Self::from_raw(raw))
    }

    /// The signed identity of `caller` for the request `req`, valid from `now` for
    /// [`LIFETIME_SECS`]: the value of `_meta["io.micromcp/identity"]`.
    pub fn sign(&self, caller: &Caller<'_>, iss: &str, req: Binding, now: u64) -> Value {
        let mut wire = Wire {
            sub: caller.user.to_owned(),
            act: caller.agent.map(|a| Actor { sub: a.to_owned() }),
            tenant: caller.tenant.map(str::to_owned),
            roles: caller.roles.to_vec(),
            scopes: caller.scopes.to_vec(),
            clearance: caller.clearance.map(str::to_owned),
            method: caller.method.to_owned(),
            idp: caller.idp.map(str::to_owned),
            iss: iss.to_owned(),
            iat: now,
            exp: now + LIFETIME_SECS,
            req,
            sig: String::new(),
        };
        wire.sig = URL_SAFE_NO_PAD.encode(hmac::sign(&self.key, &wire.signed_bytes()));
        serde_json::to_value(wire).unwrap_or(Value::Null)
    }
}

/// What a verified identity says about the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub user: String,
    pub agent: Option<String>,
    pub tenant: Option<String>,
    pub roles: Vec<String>,
    pub scopes: Vec<String>,
    pub clearance: Option<String>,
    pub method: String,
    pub idp: Option<String>,
    pub iss: String,
}

/// Why an identity was refused. The messages are safe to return to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("no caller identity from the gateway")]
    Missing,
    #[error("malformed caller identity: {0}")]
    Malformed(String),
    #[error("caller identity signature does not verify")]
    BadSignature,
    #[error("caller identity expired")]
    Expired,
    #[error("caller identity not valid yet")]
    NotYetValid,
    #[error("caller identity is valid for longer than {LIFETIME_SECS} s")]
    TooLong,
    #[error("caller identity was made for another request")]
    OtherRequest,
    #[error("caller identity was already used")]
    Replayed,
    #[error("too many caller identities to remember; try again later")]
    Busy,
}

/// Checks identities with a service's key. Remembers the ones it accepted until they expire.
pub struct Verifier {
    key: ServiceKey,
    seen: Mutex<Seen>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Verifier([redacted])")
    }
}

#[derive(Default)]
struct Seen {
    /// Signatures accepted, oldest first, with when they may be forgotten.
    order: VecDeque<(u64, [u8; 32])>,
    set: HashSet<[u8; 32]>,
}

impl Verifier {
    pub fn new(key: ServiceKey) -> Self {
        Self {
            key,
            seen: Mutex::new(Seen::default()),
        }
    }

    /// The identity in `meta` (a request's `_meta`), if it is genuine, current and made for
    /// the request `expected`.
    pub fn verify(
        &self,
        meta: Option<&serde_json::Map<String, Value>>,
        expected: &Binding,
        now: u64,
    ) -> Result<Verified, Refused> {
        let value = meta.and_then(|m| m.get(META_KEY)).ok_or(Refused::Missing)?;
        let wire = Wire::deserialize(value).map_err(|e| Refused::Malformed(e.to_string()))?;
        let sig = URL_SAFE_NO_PAD
            .decode(&wire.sig)
            .map_err(|_| Refused::BadSignature)?;
        // Constant-time comparison inside ring.
        hmac::verify(&self.key.key, &wire.signed_bytes(), &sig)
            .map_err(|_| Refused::BadSignature)?;
        if wire.iat > now + SKEW_SECS {
            return Err(Refused::NotYetValid);
        }
        if now >= wire.exp {
            return Err(Refused::Expired);
        }
        if wire.exp.saturating_sub(wire.iat) > LIFETIME_SECS {
            return Err(Refused::TooLong);
        }
        if &wire.req != expected {
            return Err(Refused::OtherRequest);
        }
        let fingerprint: [u8; 32] = sig.try_into().map_err(|_| Refused::BadSignature)?;
        self.remember(fingerprint, wire.exp, now)?;
        Ok(Verified {
            user: wire.sub,
            agent: wire.act.map(|a| a.sub),
            tenant: wire.tenant,
            roles: wire.roles,
            scopes: wire.scopes,
            clearance: wire.clearance,
            method: wire.method,
            idp: wire.idp,
            iss: wire.iss,
        })
    }

    fn remember(&self, fingerprint: [u8; 32], exp: u64, now: u64) -> Result<(), Refused> {
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while let Some(&(until, old)) = seen.order.front() {
            if until > now {
                break;
            }
            seen.order.pop_front();
            seen.set.remove(&old);
        }
        if seen.set.contains(&fingerprint) {
            return Err(Refused::Replayed);
        }
        if seen.set.len() >= MAX_REMEMBERED {
            return Err(Refused::Busy);
        }
        seen.set.insert(fingerprint);
        seen.order.push_back((exp, fingerprint));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn binding(id: i64) -> Binding {
        Binding::tool_call(RequestId::Number(id), "search")
    }

    fn alice() -> (Vec<String>, Vec<String>) {
        (vec!["reader".into()], vec!["search".into()])
    }

    fn sign(key: &ServiceKey, id: i64, now: u64) -> serde_json::Map<String, Value> {
        let (roles, scopes) = alice();
        let caller = Caller {
            agent: Some("bot"),
            tenant: Some("acme"),
            roles: &roles,
            scopes: &scopes,
            clearance: Some("internal"),
            ..Caller::new("alice", "api_token")
        };
        let mut meta = serde_json::Map::new();
        meta.insert(
            META_KEY.into(),
            key.sign(&caller, "micromcp", binding(id), now),
        );
        meta
    }

    const NOW: u64 = 1_767_225_600;

    #[test]
    fn a_signed_identity_verifies_once_for_its_request() {
        let key = ServiceKey::generate().expect("key");
        let verifier = Verifier::new(ServiceKey::from_env_value(&key.to_env_value()).expect("env"));
        let meta = sign(&key, 7, NOW);
        assert_eq!(
            meta[META_KEY]["act"],
            json!({"sub": "bot"}),
            "the agent is the actor, as in the JWT"
        );
        let verified = verifier
            .verify(Some(&meta), &binding(7), NOW + 1)
            .expect("genuine");
        assert_eq!(verified.user, "alice");
        assert_eq!(verified.agent.as_deref(), Some("bot"));
        assert_eq!(verified.tenant.as_deref(), Some("acme"));
        assert_eq!(verified.clearance.as_deref(), Some("internal"));
        assert_eq!(verified.roles, ["reader"]);
        assert_eq!(verified.scopes, ["search"]);
        assert_eq!(verified.method, "api_token");
        assert_eq!(verified.iss, "micromcp");
        assert_eq!(
            verifier.verify(Some(&meta), &binding(7), NOW + 1),
            Err(Refused::Replayed)
        );
    }

    #[test]
    fn missing_forged_tampered_expired_and_foreign_identities_are_refused() {
        let key = ServiceKey::generate().expect("key");
        let other = ServiceKey::generate().expect("key");
        let verifier = Verifier::new(ServiceKey::from_env_value(&key.to_env_value()).expect("env"));
        let expect = |meta: Option<&serde_json::Map<String, Value>>, b: &Binding, now, refusal| {
            assert_eq!(verifier.verify(meta, b, now), Err(refusal));
        };
        expect(None, &binding(1), NOW, Refused::Missing);
        expect(
            Some(&serde_json::Map::new()),
            &binding(1),
            NOW,
            Refused::Missing,
        );
        // Signed with another service's key.
        expect(
            Some(&sign(&other, 1, NOW)),
            &binding(1),
            NOW,
            Refused::BadSignature,
        );
        // Any field changed after signing.
        for (field, value) in [
            ("tenant", json!("globex")),
            ("clearance", json!("restricted")),
            ("sub", json!("mallory")),
            ("roles", json!(["admin"])),
            ("exp", json!(NOW + 3600)),
            (
                "req",
                json!({"id": 1, "method": "tools/call", "name": "other"}),
            ),
        ] {
            let mut meta = sign(&key, 1, NOW);
            meta[META_KEY][field] = value;
            expect(Some(&meta), &binding(1), NOW, Refused::BadSignature);
        }
        // A field removed after signing (the agent: now the caller would be the user alone).
        let mut meta = sign(&key, 1, NOW);
        meta[META_KEY]
            .as_object_mut()
            .expect("object")
            .remove("act");
        expect(Some(&meta), &binding(1), NOW, Refused::BadSignature);
        // Unknown fields are not silently ignored (they would be unsigned).
        let mut meta = sign(&key, 1, NOW);
        meta[META_KEY]["admin"] = json!(true);
        assert!(matches!(
            verifier.verify(Some(&meta), &binding(1), NOW),
            Err(Refused::Malformed(_))
        ));
        let mut meta = sign(&key, 1, NOW);
        meta[META_KEY] = json!("alice");
        assert!(matches!(
            verifier.verify(Some(&meta), &binding(1), NOW),
            Err(Refused::Malformed(_))
        ));
        // Time.
        expect(
            Some(&sign(&key, 1, NOW)),
            &binding(1),
            NOW + LIFETIME_SECS,
            Refused::Expired,
        );
        expect(
            Some(&sign(&key, 1, NOW + 60)),
            &binding(1),
            NOW,
            Refused::NotYetValid,
        );
        // Another request: id, method or name.
        let meta = sign(&key, 1, NOW);
        expect(Some(&meta), &binding(2), NOW, Refused::OtherRequest);
        let mut read = binding(1);
        read.method = "resources/read".into();
        expect(Some(&meta), &read, NOW, Refused::OtherRequest);
        let mut other_tool = binding(1);
        other_tool.name = Some("admin".into());
        expect(Some(&meta), &other_tool, NOW, Refused::OtherRequest);
        let mut text_id = binding(1);
        text_id.id = RequestId::Text("1".into());
        expect(Some(&meta), &text_id, NOW, Refused::OtherRequest);
    }

    #[test]
    fn a_long_lived_identity_is_refused_even_when_signed() {
        let key = ServiceKey::generate().expect("key");
        let mut wire: Wire =
            serde_json::from_value(sign(&key, 1, NOW)[META_KEY].clone()).expect("wire");
        wire.exp = NOW + 3600;
        wire.sig = URL_SAFE_NO_PAD.encode(hmac::sign(&key.key, &wire.signed_bytes()));
        let mut meta = serde_json::Map::new();
        meta.insert(META_KEY.into(), serde_json::to_value(wire).expect("json"));
        let verifier = Verifier::new(ServiceKey::from_env_value(&key.to_env_value()).expect("env"));
        assert_eq!(
            verifier.verify(Some(&meta), &binding(1), NOW),
            Err(Refused::TooLong)
        );
    }

    #[test]
    fn replay_memory_forgets_expired_identities() {
        let key = ServiceKey::generate().expect("key");
        let verifier = Verifier::new(ServiceKey::from_env_value(&key.to_env_value()).expect("env"));
        for id in 0..100 {
            verifier
                .verify(Some(&sign(&key, id, NOW)), &binding(id), NOW)
                .expect("fresh");
        }
        verifier
            .verify(
                Some(&sign(&key, 500, NOW + LIFETIME_SECS)),
                &binding(500),
                NOW + LIFETIME_SECS,
            )
            .expect("fresh");
        let seen = verifier.seen.lock().expect("lock");
        assert_eq!(
            seen.set.len(),
            1,
            "the first hundred expired and were forgotten"
        );
    }

    #[test]
    fn env_values_are_checked_and_keys_never_print() {
        assert!(ServiceKey::from_env_value("not base64!").is_err());
        assert!(ServiceKey::from_env_value("AAAA").is_err());
        let key = ServiceKey::generate().expect("key");
        assert_eq!(format!("{key:?}"), "ServiceKey([redacted])");
        assert!(!format!("{:?}", Verifier::new(key)).contains('='));
    }
}
