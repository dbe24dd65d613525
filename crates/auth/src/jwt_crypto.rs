//! The cryptography behind `jsonwebtoken`: a [`CryptoProvider`] on ring, which the build
//! already has through rustls ([ADR 0007](../../../docs/adr/0007-jwt-crypto-backend.md)).
//!
//! Only the asymmetric algorithms micromcp accepts are here: RS256, PS256, ES256 and EdDSA
//! (Ed25519). HMAC is deliberately absent: no key, whatever its origin, can verify an `HS*`
//! token, so a token "signed" with an issuer's public key as an HMAC secret has nothing to
//! verify against. RSA keys must be 2048 to 8192 bits (ring's verification parameters).

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{Error, ErrorKind, Result};
use jsonwebtoken::jwk::{EllipticCurve, ThumbprintHash};
use jsonwebtoken::signature::{self, Signer, Verifier};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind, EncodingKey};
use ring::signature as sig;

/// The provider. [`install`] makes it the process default.
pub static RING_PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: new_signer,
    verifier_factory: new_verifier,
    key_utils: KeyUtils {
        rsa_pub_components_from_private_key: rsa_components_from_private_key,
        rsa_pub_components_from_public_key: rsa_components_from_public_key,
        ec_pub_components_from_private_key: ec_components_from_private_key,
        ed_pub_components_from_private_key: ed_components_from_private_key,
        compute_digest,
    },
};

/// Makes [`RING_PROVIDER`] the process's `jsonwebtoken` provider (idempotent). Call it before
/// any `jsonwebtoken` encode or decode.
pub fn install() {
    // `Err` = a provider is already installed: ours, by an earlier call.
    let _ = RING_PROVIDER.install_default();
}

fn unsupported() -> Error {
    ErrorKind::UnsupportedAlgorithm.into()
}

fn new_verifier(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    let (family, verify): (AlgorithmFamily, VerifyFn) = match algorithm {
        Algorithm::RS256 => (AlgorithmFamily::Rsa, |k, m, s| {
            verify_rsa(&sig::RSA_PKCS1_2048_8192_SHA256, k, m, s)
        }),
        Algorithm::PS256 => (AlgorithmFamily::Rsa, |k, m, s| {
            verify_rsa(&sig::RSA_PSS_2048_8192_SHA256, k, m, s)
        }),
        Algorithm::ES256 => (AlgorithmFamily::Ec, |k, m, s| {
            verify_raw(&sig::ECDSA_P256_SHA256_FIXED, k, m, s)
        }),
        Algorithm::EdDSA => (AlgorithmFamily::Ed, |k, m, s| {
            verify_raw(&sig::ED25519, k, m, s)
        }),
        _ => return Err(unsupported()),
    };
    if key.family() != family {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    Ok(Box::new(RingVerifier {
        algorithm: *algorithm,
        key: key.clone(),
        verify,
    }))
}

type VerifyFn = fn(&DecodingKey, &[u8], &[u8]) -> std::result::Result<(), ()>;

struct RingVerifier {
    algorithm: Algorithm,
    key: DecodingKey,
    verify: VerifyFn,
}

impl Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> std::result::Result<(), signature::Error> {
        (self.verify)(&self.key, msg, signature).map_err(|()| signature::Error::new())
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

fn verify_rsa(
    params: &'static sig::RsaParameters,
    key: &DecodingKey,
    msg: &[u8],
    signature: &[u8],
) -> std::result::Result<(), ()> {
    match key.kind() {
        DecodingKeyKind::RsaModulusExponent { n, e } => sig::RsaPublicKeyComponents { n, e }
            .verify(params, msg, signature)
            .map_err(|_| ()),
        DecodingKeyKind::SecretOrDer(der) => sig::UnparsedPublicKey::new(params, der)
            .verify(msg, signature)
            .map_err(|_| ()),
    }
}

fn verify_raw(
    algorithm: &'static dyn sig::VerificationAlgorithm,
    key: &DecodingKey,
    msg: &[u8],
    signature: &[u8],
) -> std::result::Result<(), ()> {
    let bytes = key.try_get_as_bytes().map_err(|_| ())?;
    sig::UnparsedPublicKey::new(algorithm, bytes)
        .verify(msg, signature)
        .map_err(|_| ())
}

fn new_signer(algorithm: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>> {
    let der = key.as_bytes();
    let rng = ring::rand::SystemRandom::new();
    let signer = match (algorithm, key.family()) {
        (Algorithm::RS256 | Algorithm::PS256, AlgorithmFamily::Rsa) => {
            let pair = sig::RsaKeyPair::from_pkcs8(der)
                .or_else(|_| sig::RsaKeyPair::from_der(der))
                .map_err(|e| ErrorKind::InvalidRsaKey(e.to_string()))?;
            RingSigner::Rsa(
                pair,
                if *algorithm == Algorithm::RS256 {
                    &sig::RSA_PKCS1_SHA256
                } else {
                    &sig::RSA_PSS_SHA256
                },
            )
        }
        (Algorithm::ES256, AlgorithmFamily::Ec) => RingSigner::Ec(
            sig::EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
                .map_err(|_| ErrorKind::InvalidEcdsaKey)?,
        ),
        (Algorithm::EdDSA, AlgorithmFamily::Ed) => RingSigner::Ed(
            sig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
                .map_err(|_| ErrorKind::InvalidEddsaKey)?,
        ),
        (Algorithm::RS256 | Algorithm::PS256 | Algorithm::ES256 | Algorithm::EdDSA, _) => {
            return Err(ErrorKind::InvalidKeyFormat.into());
        }
        _ => return Err(unsupported()),
    };
    Ok(Box::new(SignerWith {
        algorithm: *algorithm,
        signer,
    }))
}

enum RingSigner {
    Rsa(sig::RsaKeyPair, &'static dyn sig::RsaEncoding),
    Ec(sig::EcdsaKeyPair),
    Ed(sig::Ed25519KeyPair),
}

struct SignerWith {
    algorithm: Algorithm,
    signer: RingSigner,
}

impl Signer<Vec<u8>> for SignerWith {
    fn try_sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, signature::Error> {
        let rng = ring::rand::SystemRandom::new();
        match &self.signer {
            RingSigner::Rsa(pair, encoding) => {
                let mut out = vec![0; pair.public().modulus_len()];
                pair.sign(*encoding, &rng, msg, &mut out)
                    .map_err(|_| signature::Error::new())?;
                Ok(out)
            }
            RingSigner::Ec(pair) => pair
                .sign(&rng, msg)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| signature::Error::new()),
            RingSigner::Ed(pair) => Ok(pair.sign(msg).as_ref().to_vec()),
        }
    }
}

impl JwtSigner for SignerWith {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

fn rsa_components_from_private_key(der: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
    let pair = sig::RsaKeyPair::from_pkcs8(der)
        .or_else(|_| sig::RsaKeyPair::from_der(der))
        .map_err(|e| ErrorKind::InvalidRsaKey(e.to_string()))?;
    let components = sig::RsaPublicKeyComponents::<Vec<u8>>::from(pair.public());
    Ok((components.n, components.e))
}

/// ring parses RSA public keys only to verify with them; it does not hand out their parts.
fn rsa_components_from_public_key(_der: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
    Err(ErrorKind::InvalidRsaKey("not supported by the ring provider".into()).into())
}

fn ec_components_from_private_key(
    der: &[u8],
    algorithm: Algorithm,
) -> Result<(EllipticCurve, Vec<u8>, Vec<u8>)> {
    if algorithm != Algorithm::ES256 {
        return Err(ErrorKind::InvalidEcdsaKey.into());
    }
    let rng = ring::rand::SystemRandom::new();
    let pair = sig::EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
        .map_err(|_| ErrorKind::InvalidEcdsaKey)?;
    let point = ring::signature::KeyPair::public_key(&pair).as_ref();
    match point.split_first() {
        Some((4, xy)) if xy.len() == 64 => {
            let (x, y) = xy.split_at(32);
            Ok((EllipticCurve::P256, x.to_vec(), y.to_vec()))
        }
        _ => Err(ErrorKind::InvalidEcdsaKey.into()),
    }
}

fn ed_components_from_private_key(der: &[u8], curve: &EllipticCurve) -> Result<Vec<u8>> {
    if *curve != EllipticCurve::Ed25519 {
        return Err(ErrorKind::InvalidEddsaKey.into());
    }
    let pair = sig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
        .map_err(|_| ErrorKind::InvalidEddsaKey)?;
    Ok(ring::signature::KeyPair::public_key(&pair)
        .as_ref()
        .to_vec())
}

fn compute_digest(data: &[u8], hash: ThumbprintHash) -> Result<Vec<u8>> {
    let algorithm = match hash {
        ThumbprintHash::SHA256 => &ring::digest::SHA256,
        ThumbprintHash::SHA384 => &ring::digest::SHA384,
        ThumbprintHash::SHA512 => &ring::digest::SHA512,
        _ => return Err(unsupported()),
    };
    Ok(ring::digest::digest(algorithm, data).as_ref().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{Header, Validation, decode, encode};
    use serde_json::{Value, json};

    fn claims() -> Value {
        json!({ "sub": "alice", "exp": jsonwebtoken::get_current_timestamp() + 60 })
    }

    fn roundtrip(algorithm: Algorithm, encoding: &EncodingKey, decoding: &DecodingKey) {
        install();
        let token = encode(&Header::new(algorithm), &claims(), encoding).expect("signs");
        let mut validation = Validation::new(algorithm);
        validation.required_spec_claims.clear();
        let data = decode::<Value>(&token, decoding, &validation).expect("verifies");
        assert_eq!(data.claims["sub"], "alice");
        // One flipped bit in the signature and it no longer verifies.
        let mut bytes = token.into_bytes();
        let last = bytes.len() - 2;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        assert!(decode::<Value>(&bytes, decoding, &validation).is_err());
    }

    #[test]
    fn ed25519_and_p256_sign_and_verify() {
        let rng = ring::rand::SystemRandom::new();
        let ed = sig::Ed25519KeyPair::generate_pkcs8(&rng).expect("key");
        let ed_public = sig::Ed25519KeyPair::from_pkcs8(ed.as_ref()).expect("key");
        roundtrip(
            Algorithm::EdDSA,
            &EncodingKey::from_ed_der(ed.as_ref()),
            &DecodingKey::from_ed_der(sig::KeyPair::public_key(&ed_public).as_ref()),
        );
        let ec = sig::EcdsaKeyPair::generate_pkcs8(&sig::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("key");
        let (_, x, y) = ec_components_from_private_key(ec.as_ref(), Algorithm::ES256).expect("xy");
        let b64 =
            |b: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, b);
        roundtrip(
            Algorithm::ES256,
            &EncodingKey::from_ec_der(ec.as_ref()),
            &DecodingKey::from_ec_components(&b64(&x), &b64(&y)).expect("key"),
        );
    }

    #[test]
    fn hmac_is_never_available() {
        install();
        let key = DecodingKey::from_secret(b"a public key used as a secret").expect("key");
        assert!(new_verifier(&Algorithm::HS256, &key).is_err());
        let key = EncodingKey::from_secret(b"secret").expect("key");
        assert!(new_signer(&Algorithm::HS256, &key).is_err());
        // An Ed25519 public key cannot stand in for an RSA or EC one either.
        let ed = DecodingKey::from_ed_der(&[7; 32]);
        assert!(new_verifier(&Algorithm::RS256, &ed).is_err());
        assert!(new_verifier(&Algorithm::ES256, &ed).is_err());
    }
}
