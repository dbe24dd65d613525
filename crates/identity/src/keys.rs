//! The gateway's signing keys and the JWKS that publishes them.
//!
//! The current key signs; previous keys (during a rotation) are only published, so tokens
//! signed before the rotation still verify until they expire. Keys are Ed25519 (`EdDSA`) or
//! P-256 (`ES256`), read from PEM: a private key as PKCS#8 (`BEGIN PRIVATE KEY`, what
//! `openssl genpkey` writes); a previous key may also be given as its public key
//! (`BEGIN PUBLIC KEY`). Each key's `kid` is its RFC 7638 JWK thumbprint, so a key has the same
//! id wherever it is published and verifiers can cache by it.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivateKeyDer, SubjectPublicKeyInfoDer};
use serde_json::{Value, json};

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410), followed by the 32-byte key.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
/// DER prefix of a P-256 SubjectPublicKeyInfo (RFC 5480), followed by the 65-byte point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// Which configured key a problem is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRole {
    Signing,
    Previous(usize),
}

impl std::fmt::Display for KeyRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyRole::Signing => f.write_str("identity.signing_key"),
            KeyRole::Previous(n) => write!(f, "identity.previous_keys[{n}]"),
        }
    }
}

/// A key that cannot be used. Never carries key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{role}: {reason}")]
pub struct KeyError {
    pub role: KeyRole,
    pub reason: String,
}

/// A public key as published in the JWKS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// RFC 7638 thumbprint (base64url SHA-256 of the canonical JWK).
    pub kid: String,
    /// `EdDSA` or `ES256`.
    pub alg: &'static str,
    jwk: Value,
}

impl PublicKey {
    fn ed25519(public: &[u8]) -> Self {
        let x = URL_SAFE_NO_PAD.encode(public);
        // RFC 7638: the required members, in lexicographic order, no whitespace.
        let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
        Self::finish(
            &canonical,
            "EdDSA",
            json!({ "kty": "OKP", "crv": "Ed25519", "x": x }),
        )
    }

    /// `point` is the uncompressed SEC1 point: 0x04 ‖ x ‖ y.
    fn p256(point: &[u8]) -> Option<Self> {
        if point.len() != 65 || point[0] != 0x04 {
            return None;
        }
        let x = URL_SAFE_NO_PAD.encode(&point[1..33]);
        let y = URL_SAFE_NO_PAD.encode(&point[33..]);
        let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        Some(Self::finish(
            &canonical,
            "ES256",
            json!({ "kty": "EC", "crv": "P-256", "x": x, "y": y }),
        ))
    }

    fn finish(canonical: &str, alg: &'static str, mut jwk: Value) -> Self {
        let kid = URL_SAFE_NO_PAD.encode(ring::digest::digest(
            &ring::digest::SHA256,
            canonical.as_bytes(),
        ));
        jwk["kid"] = kid.clone().into();
        jwk["alg"] = alg.into();
        jwk["use"] = "sig".into();
        Self { kid, alg, jwk }
    }

    /// The JWK (`kty`, `crv`, `x`[, `y`], `kid`, `alg`, `use`).
    pub fn jwk(&self) -> &Value {
        &self.jwk
    }
}

enum Signer {
    Ed25519(Ed25519KeyPair),
    P256(EcdsaKeyPair),
}

/// The key that signs, and every key that is published.
pub struct KeySet {
    signer: Signer,
    /// `published[0]` is the signing key's public half.
    published: Vec<PublicKey>,
    ephemeral: bool,
    rng: SystemRandom,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field(
                "kids",
                &self.published.iter().map(|k| &k.kid).collect::<Vec<_>>(),
            )
            .field("ephemeral", &self.ephemeral)
            .finish_non_exhaustive()
    }
}

impl KeySet {
    /// Loads the configured keys: `signing` (PEM text; `None` makes an Ed25519 key for this
    /// process only) and `previous` (published, never used to sign).
    pub fn load(signing: Option<&str>, previous: &[&str]) -> Result<Self, KeyError> {
        let rng = SystemRandom::new();
        let (signer, ephemeral) = match signing {
            Some(pem) => (private_key(pem, &rng, KeyRole::Signing)?, false),
            None => {
                let document = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| KeyError {
                    role: KeyRole::Signing,
                    reason: "the system's random number generator failed".into(),
                })?;
                let pair = Ed25519KeyPair::from_pkcs8(document.as_ref()).map_err(|e| KeyError {
                    role: KeyRole::Signing,
                    reason: format!("generated key rejected: {e}"),
                })?;
                (Signer::Ed25519(pair), true)
            }
        };
        let mut published = vec![match &signer {
            Signer::Ed25519(pair) => PublicKey::ed25519(pair.public_key().as_ref()),
            Signer::P256(pair) => {
                PublicKey::p256(pair.public_key().as_ref()).ok_or_else(|| KeyError {
                    role: KeyRole::Signing,
                    reason: "unexpected P-256 public key form".into(),
                })?
            }
        }];
        for (n, pem) in previous.iter().enumerate() {
            let key = public_key(pem, &rng, KeyRole::Previous(n))?;
            if !published.iter().any(|k| k.kid == key.kid) {
                published.push(key);
            }
        }
        Ok(Self {
            signer,
            published,
            ephemeral,
            rng,
        })
    }

    /// Whether the signing key was made at start (tokens stop verifying after a restart).
    pub fn is_ephemeral(&self) -> bool {
        self.ephemeral
    }

    /// The signing key's public half.
    pub fn current(&self) -> &PublicKey {
        &self.published[0]
    }

    /// Every published key, the signing key first.
    pub fn published(&self) -> &[PublicKey] {
        &self.published
    }

    /// The JWK Set served at `/.well-known/jwks.json`.
    pub fn jwks(&self) -> Value {
        json!({ "keys": self.published.iter().map(PublicKey::jwk).collect::<Vec<_>>() })
    }

    /// Signs `message` with the current key (JWS form: 64 bytes for both algorithms).
    pub(crate) fn sign(&self, message: &[u8]) -> Option<Vec<u8>> {
        match &self.signer {
            Signer::Ed25519(pair) => Some(pair.sign(message).as_ref().to_vec()),
            Signer::P256(pair) => pair
                .sign(&self.rng, message)
                .ok()
                .map(|s| s.as_ref().to_vec()),
        }
    }

    pub(crate) fn rng(&self) -> &SystemRandom {
        &self.rng
    }
}

fn private_key(pem: &str, rng: &SystemRandom, role: KeyRole) -> Result<Signer, KeyError> {
    let error = |reason: String| KeyError { role, reason };
    let der = match PrivateKeyDer::from_pem_slice(pem.as_bytes()) {
        Ok(PrivateKeyDer::Pkcs8(der)) => der,
        Ok(_) => {
            return Err(error(
                "a PKCS#1 or SEC1 key; give it as PKCS#8 (`openssl pkcs8 -topk8 -nocrypt -in KEY`)"
                    .into(),
            ));
        }
        Err(_) => {
            return Err(error(
                "no PEM private key (-----BEGIN PRIVATE KEY-----) found".into(),
            ));
        }
    };
    let der = der.secret_pkcs8_der();
    if let Ok(pair) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
        return Ok(Signer::Ed25519(pair));
    }
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, rng)
        .map(Signer::P256)
        .map_err(|_| error("not an Ed25519 or P-256 (prime256v1) private key".into()))
}

/// A previous key: a private key (its public half is published) or a public key.
fn public_key(pem: &str, rng: &SystemRandom, role: KeyRole) -> Result<PublicKey, KeyError> {
    if let Ok(spki) = SubjectPublicKeyInfoDer::from_pem_slice(pem.as_bytes()) {
        let der: &[u8] = spki.as_ref();
        if let Some(key) = der.strip_prefix(&ED25519_SPKI_PREFIX[..])
            && key.len() == 32
        {
            return Ok(PublicKey::ed25519(key));
        }
        return der
            .strip_prefix(&P256_SPKI_PREFIX[..])
            .and_then(PublicKey::p256)
            .ok_or_else(|| KeyError {
                role,
                reason: "not an Ed25519 or P-256 public key".into(),
            });
    }
    match private_key(pem, rng, role)? {
        Signer::Ed25519(pair) => Ok(PublicKey::ed25519(pair.public_key().as_ref())),
        Signer::P256(pair) => PublicKey::p256(pair.public_key().as_ref()).ok_or_else(|| KeyError {
            role,
            reason: "unexpected P-256 public key form".into(),
        }),
    }
}

/// PEM text of a DER document (for tests and tools that make keys).
pub fn pem(label: &str, der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// RFC 8410 §10.3: an Ed25519 private key as OpenSSL writes it (PKCS#8 v1, no public key).
    pub(crate) const RFC8410_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n-----END PRIVATE KEY-----\n";
    /// RFC 8410 §10.1: the public key of the same pair.
    const RFC8410_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n";

    pub(crate) fn p256_pem() -> String {
        let rng = SystemRandom::new();
        let doc =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("generate");
        pem("PRIVATE KEY", doc.as_ref())
    }

    pub(crate) fn ed25519_pem() -> String {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("generate");
        pem("PRIVATE KEY", doc.as_ref())
    }

    #[test]
    fn openssl_style_ed25519_keys_load_and_their_public_half_matches() {
        let keys = KeySet::load(Some(RFC8410_PRIVATE), &[RFC8410_PUBLIC]).expect("load");
        assert!(!keys.is_ephemeral());
        // The private key and its public key are one key: published once.
        assert_eq!(keys.published().len(), 1, "{keys:?}");
        let jwk = keys.current().jwk();
        assert_eq!(jwk["kty"], "OKP");
        assert_eq!(jwk["crv"], "Ed25519");
        assert_eq!(jwk["x"], "Gb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE");
        assert_eq!(jwk["alg"], "EdDSA");
    }

    #[test]
    fn kid_is_the_rfc7638_thumbprint() {
        // RFC 8037 §A.3: the thumbprint of the RFC 8032 test key
        // x = 11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo.
        let x = URL_SAFE_NO_PAD
            .decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
            .expect("base64");
        assert_eq!(
            PublicKey::ed25519(&x).kid,
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }

    #[test]
    fn p256_keys_sign_es256_and_previous_keys_are_published_after_the_current_one() {
        let current = p256_pem();
        let previous = ed25519_pem();
        let keys = KeySet::load(Some(&current), &[&previous]).expect("load");
        let jwks = keys.jwks();
        let published = jwks["keys"].as_array().expect("keys");
        assert_eq!(published.len(), 2);
        assert_eq!(published[0]["kty"], "EC");
        assert_eq!(published[0]["crv"], "P-256");
        assert_eq!(published[0]["alg"], "ES256");
        assert_eq!(published[1]["alg"], "EdDSA");
        assert_ne!(published[0]["kid"], published[1]["kid"]);
        // The signature verifies with the published coordinates.
        let signature = keys.sign(b"message").expect("sign");
        let coordinate = |name: &str| {
            URL_SAFE_NO_PAD
                .decode(published[0][name].as_str().expect("coordinate"))
                .expect("base64")
        };
        let mut point = vec![0x04];
        point.extend(coordinate("x"));
        point.extend(coordinate("y"));
        ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, point)
            .verify(b"message", &signature)
            .expect("ES256 signature verifies with the JWK");
    }

    #[test]
    fn without_a_key_one_is_made_for_this_process() {
        let a = KeySet::load(None, &[]).expect("ephemeral");
        let b = KeySet::load(None, &[]).expect("ephemeral");
        assert!(a.is_ephemeral());
        assert_ne!(a.current().kid, b.current().kid);
        assert_eq!(a.current().alg, "EdDSA");
    }

    #[test]
    fn bad_keys_are_refused_with_their_config_path_and_no_key_material() {
        let cases = [
            ("", "no PEM private key"),
            ("hello", "no PEM private key"),
            (
                "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIObLW92AqkWunJXowVR2Z5/+yVPBaFHnEedDk5WJxk/BoAoGCCqGSM49\nAwEHoUQDQgAEQiVI+I+3gv+17KN0RFLHKh5Vj71vc75eSOkyMsxFxbFsTNEMTLjV\nuKFxOelIgsiZJXKZNCX0FBmrfpCkKklCcg==\n-----END EC PRIVATE KEY-----\n",
                "PKCS#8",
            ),
            (
                // A PKCS#8 document of another algorithm (here: garbage that is valid base64).
                "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VuBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n-----END PRIVATE KEY-----\n",
                "not an Ed25519 or P-256",
            ),
        ];
        for (pem, expected) in cases {
            let err = KeySet::load(Some(pem), &[]).expect_err(pem);
            assert_eq!(err.role, KeyRole::Signing);
            let text = err.to_string();
            assert!(text.starts_with("identity.signing_key: "), "{text}");
            assert!(text.contains(expected), "{pem:?}: {text}");
            assert!(!text.contains("MC4C") && !text.contains("MHcC"), "{text}");
        }
        let err = KeySet::load(None, &[RFC8410_PUBLIC, "nope"]).expect_err("bad previous");
        assert_eq!(
            err.to_string().split(':').next(),
            Some("identity.previous_keys[1]")
        );
    }
}
