//! A stand-in identity provider for the JWT mode: a JWKS on loopback and one EdDSA token for it.
//!
//! The gateway validates the token once and caches the result until `exp`, so what the
//! bench measures is the warm path; the provider's crypto never runs per call.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::json;

pub const AUDIENCE: &str = "http://127.0.0.1/mcp";

/// The JWKS server (stopped when dropped) and a token it vouches for.
pub struct Issuer {
    pub issuer: String,
    pub token: String,
    server: tokio::task::JoinHandle<()>,
}

impl Issuer {
    pub async fn start() -> Result<Issuer> {
        let rng = SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| anyhow!("key generation"))?;
        let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| anyhow!("key"))?;
        let jwks = json!({"keys": [{
            "kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA", "kid": "bench",
            "x": URL_SAFE_NO_PAD.encode(key.public_key().as_ref()),
        }]});
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let issuer = format!("http://{}", listener.local_addr()?);
        let app = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                let jwks = jwks.clone();
                async move { axum::Json(jwks) }
            }),
        );
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let header = json!({"alg": "EdDSA", "kid": "bench", "typ": "JWT"});
        let claims = json!({
            "iss": issuer, "aud": AUDIENCE, "sub": "bench", "azp": "bench-client",
            "scope": "mcp", "iat": now, "exp": now + 24 * 3600, "jti": "bench-1",
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = key.sign(signing_input.as_bytes());
        let token = format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        );
        Ok(Issuer {
            issuer,
            token,
            server,
        })
    }

    /// The gateway config that trusts this issuer.
    pub fn config(&self) -> String {
        format!(
            "\n[auth]\nresource = \"{AUDIENCE}\"\n\n[[auth.oidc]]\nissuer = \"{0}\"\n\
             jwks_uri = \"{0}/jwks\"\n",
            self.issuer
        )
    }

    pub fn check(&self) -> Result<()> {
        (!self.server.is_finished())
            .then_some(())
            .context("the JWKS server stopped")
    }
}

impl Drop for Issuer {
    fn drop(&mut self) {
        self.server.abort();
    }
}
