//! Unit tests against an in-process key server (axum on loopback) and keys made here.
//! The attacks through the gateway, with a real OpenID provider, are in `crates/cli/tests/oidc.rs`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use micromcp_config::ClaimMapping;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::json;

use super::*;

struct KeyServer {
    url: String,
    up: Arc<AtomicBool>,
    requests: Arc<AtomicUsize>,
}

/// Serves `{"keys": [jwk]}` at `/jwks` while `up`, 500 otherwise.
async fn key_server(jwk: Value) -> KeyServer {
    let up = Arc::new(AtomicBool::new(true));
    let requests = Arc::new(AtomicUsize::new(0));
    let (u, r) = (up.clone(), requests.clone());
    let app = axum::Router::new().route(
        "/jwks",
        axum::routing::get(move || {
            let (u, r, jwk) = (u.clone(), r.clone(), jwk.clone());
            async move {
                r.fetch_add(1, Ordering::Relaxed);
                if u.load(Ordering::Relaxed) {
                    Ok(axum::Json(json!({ "keys": [jwk] })))
                } else {
                    Err(axum::http::StatusCode::INTERNAL_SERVER_ERROR)
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    KeyServer {
        url: format!("http://{addr}"),
        up,
        requests,
    }
}

struct Signer {
    pair: EcdsaKeyPair,
    jwk: Value,
}

fn signer(kid: &str) -> Signer {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("key");
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
        .expect("key");
    let point = pair.public_key().as_ref();
    let jwk = json!({
        "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..]),
    });
    Signer { pair, jwk }
}

impl Signer {
    fn sign(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let rng = ring::rand::SystemRandom::new();
        let signature = self.pair.sign(&rng, input.as_bytes()).expect("sign");
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    }

    fn token(&self, claims: &Value) -> String {
        self.sign(&json!({"alg": "ES256", "kid": self.jwk["kid"]}), claims)
    }
}

fn issuer(server: &KeyServer, max_age: Duration) -> OidcIssuer {
    OidcIssuer {
        issuer: url::Url::parse(&server.url).expect("url"),
        jwks_uri: Some(url::Url::parse(&format!("{}/jwks", server.url)).expect("url")),
        audience: "https://mcp.test/mcp".into(),
        algorithms: vec![JwtAlgorithm::ES256],
        clock_skew: Duration::from_secs(5),
        required_claims: vec!["org".into()],
        claims: ClaimMapping {
            user: "sub".into(),
            agent: vec!["azp".into(), "client_id".into()],
            tenant: Some("tenant".into()),
            roles: Some("roles".into()),
            scopes: "scope".into(),
            clearance: Some("clearance".into()),
        },
        jwks_min_refresh: Duration::from_millis(10),
        jwks_max_age: max_age,
    }
}

fn claims(server: &KeyServer) -> Value {
    json!({
        "iss": server.url, "aud": ["https://mcp.test/mcp", "other"], "sub": "alice",
        "client_id": "ci-bot", "exp": unix_now() + 60, "iat": unix_now(), "jti": "t-1",
        "org": "x", "tenant": "acme", "roles": ["reader", "writer"], "scope": "a b  c",
        "clearance": "internal",
    })
}

fn reason(result: Result<Verified, AuthError>) -> String {
    match result {
        Ok(v) => panic!("expected a refusal, got {:?}", v.principal),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn claims_map_to_the_principal_and_bad_values_are_refused() {
    let key = signer("k1");
    let server = key_server(key.jwk.clone()).await;
    let oidc = Oidc::new(&[issuer(&server, Duration::from_secs(3600))]).expect("oidc");
    let good = claims(&server);
    let verified = oidc.check(&key.token(&good)).await.expect("valid");
    let p = &verified.principal;
    assert_eq!(p.user, "alice");
    assert_eq!(p.agent.as_deref(), Some("ci-bot"));
    assert_eq!(p.tenant.as_deref(), Some("acme"));
    assert_eq!(p.roles, ["reader", "writer"]);
    assert_eq!(p.scopes, ["a", "b", "c"]);
    assert_eq!(p.clearance.as_deref(), Some("internal"));
    assert_eq!(p.method, AuthMethod::Oidc);
    assert_eq!(p.issuer.as_deref(), Some(server.url.as_str()));
    assert_eq!(p.token_id.as_deref(), Some("t-1"));
    assert_eq!(verified.expires, good["exp"].as_u64().expect("exp"));
    // `azp` comes first in the mapping; scopes may be an array.
    let mut azp = good.clone();
    azp["azp"] = json!("web");
    azp["scope"] = json!(["x", "y"]);
    let p = oidc.check(&key.token(&azp)).await.expect("valid").principal;
    assert_eq!(
        (p.agent.as_deref(), p.scopes),
        (Some("web"), vec!["x".into(), "y".into()])
    );

    let refused = |change: &dyn Fn(&mut Value)| {
        let mut c = good.clone();
        change(&mut c);
        key.token(&c)
    };
    for (token, why) in [
        (
            refused(&|c| c["sub"] = json!("al\u{1b}[31mice")),
            "control characters",
        ),
        (
            refused(&|c| c["tenant"] = json!("t".repeat(257))),
            "longer than 256",
        ),
        (
            refused(&|c| c["roles"] = json!("admin")),
            "not a list of strings",
        ),
        (
            refused(&|c| c["roles"] = json!([1])),
            "not a list of strings",
        ),
        (refused(&|c| c["sub"] = json!(7)), "\"sub\""),
        (refused(&|c| c["jti"] = json!("j\n")), "control characters"),
        (
            refused(&|c| c["scope"] = json!(vec!["s"; 257])),
            "more than 256",
        ),
        (
            refused(&|c| {
                c.as_object_mut().expect("o").remove("org");
            }),
            "\"org\" is missing",
        ),
        (
            refused(&|c| {
                c.as_object_mut().expect("o").remove("sub");
            }),
            "\"sub\" is missing",
        ),
        (
            refused(&|c| c["iat"] = json!("yesterday")),
            "iat is not a number",
        ),
    ] {
        let r = reason(oidc.check(&token).await);
        assert!(r.contains(why), "{r:?} should say {why:?}");
    }
    // A token without a kid verifies when exactly one key fits its algorithm.
    let no_kid = key.sign(&json!({"alg": "ES256"}), &good);
    assert!(oidc.check(&no_kid).await.is_ok());
    // The issuer with a trailing slash is the same issuer; another path is not.
    let mut slash = good.clone();
    slash["iss"] = json!(format!("{}/", server.url));
    assert!(oidc.check(&key.token(&slash)).await.is_ok());
    slash["iss"] = json!(format!("{}/x", server.url));
    assert!(reason(oidc.check(&key.token(&slash)).await).contains("not a configured"));
    // A token longer than 16 KiB is refused before anything is parsed.
    let huge = "a".repeat(MAX_TOKEN_BYTES + 1);
    assert!(matches!(
        oidc.check(&huge).await,
        Err(AuthError::Malformed(_))
    ));
}

#[tokio::test]
async fn keys_older_than_max_age_fail_closed_until_a_fetch_succeeds() {
    let key = signer("k1");
    let server = key_server(key.jwk.clone()).await;
    let oidc = Oidc::new(&[issuer(&server, Duration::from_millis(300))]).expect("oidc");
    let token = key.token(&claims(&server));
    assert!(oidc.check(&token).await.is_ok());
    // The provider goes down: within max_age the keys (and the cached token) still count…
    server.up.store(false, Ordering::Relaxed);
    assert!(oidc.check(&token).await.is_ok());
    // …past it, nothing verifies until a fetch succeeds.
    tokio::time::sleep(Duration::from_millis(350)).await;
    let why = reason(oidc.check(&token).await);
    assert!(why.contains("keys are unavailable"), "{why}");
    server.up.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(oidc.check(&token).await.is_ok());
}

#[tokio::test]
async fn the_warm_path_is_a_cache_hit_and_concurrent_unknown_kids_share_one_fetch() {
    let key = signer("k1");
    let server = key_server(key.jwk.clone()).await;
    let mut config = issuer(&server, Duration::from_secs(3600));
    config.jwks_min_refresh = Duration::from_secs(3600);
    let oidc = Arc::new(Oidc::new(&[config]).expect("oidc"));
    let token = key.token(&claims(&server));
    assert!(oidc.check(&token).await.is_ok());
    assert_eq!(server.requests.load(Ordering::Relaxed), 1);
    for _ in 0..100 {
        assert!(oidc.check(&token).await.is_ok());
    }
    assert_eq!(oidc.cache.lock().expect("lock").map.len(), 1);
    // 200 forged kids at once: the key set was fetched just now, so none fetches again.
    let forged = signer("forged");
    let mut tasks = Vec::new();
    for i in 0..200 {
        let oidc = oidc.clone();
        let token = forged.sign(
            &json!({"alg": "ES256", "kid": format!("f{i}")}),
            &claims(&server),
        );
        tasks.push(tokio::spawn(
            async move { oidc.check(&token).await.is_err() },
        ));
    }
    for task in tasks {
        assert!(task.await.expect("task"));
    }
    assert_eq!(server.requests.load(Ordering::Relaxed), 1);
    assert_eq!(oidc.jwks_fetches(), 1);
}

#[test]
fn the_cache_is_bounded_and_drops_expired_entries_first() {
    let mut cache = Cache::default();
    let entry = |expires| Entry {
        verified: Verified {
            principal: Principal::named("u", None, AuthMethod::Oidc),
            expires,
        },
        issuer: 0,
        generation: 1,
    };
    let hash = |i: usize| {
        let mut h = [0u8; 32];
        h[..8].copy_from_slice(&(i as u64).to_le_bytes());
        h
    };
    // Half of them already expired by `now` = 100.
    for i in 0..CACHE_CAPACITY {
        cache.insert(hash(i), entry(if i % 2 == 0 { 50 } else { 1000 }), 10);
    }
    assert_eq!(cache.map.len(), CACHE_CAPACITY);
    cache.insert(hash(CACHE_CAPACITY), entry(1000), 100);
    assert_eq!(cache.map.len(), CACHE_CAPACITY / 2 + 1);
    assert!(cache.get(&hash(1), 100).is_some());
    assert!(cache.get(&hash(0), 100).is_none());
    // Full of live entries: the oldest goes.
    for i in 0..CACHE_CAPACITY * 2 {
        cache.insert(hash(CACHE_CAPACITY + 1 + i), entry(1000), 100);
    }
    assert!(cache.map.len() <= CACHE_CAPACITY);
    assert!(cache.order.len() <= 2 * CACHE_CAPACITY);
    assert!(cache.get(&hash(1), 100).is_none());
    assert!(cache.get(&hash(3 * CACHE_CAPACITY), 100).is_some());
}
