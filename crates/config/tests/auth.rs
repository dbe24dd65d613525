//! `[auth]`, `[[auth.oidc]]`, `[[auth.certificates]]`, `[[policy.scopes]]`, `[identity]` and
//! grants on issuer/roles/tenant/scopes: every mistake is reported with its key path, at once.

use std::path::Path;
use std::time::Duration;

use micromcp_config::{CertificateId, ClientAuth, Config, ConfigError, JwtAlgorithm};

const SERVICE: &str = "[services.echo]\nbuiltin = \"echo\"\n";

fn check(text: &str) -> Result<Config, Vec<ConfigError>> {
    Config::from_toml(&format!("{text}\n{SERVICE}"), Path::new("/etc/micromcp"))
}

fn paths(errors: &[ConfigError]) -> Vec<&str> {
    errors.iter().map(|e| e.path.as_str()).collect()
}

#[test]
fn an_oidc_issuer_with_defaults() {
    let config = check(
        r#"
[auth]
resource = "https://mcp.example.com/mcp"

[[auth.oidc]]
issuer = "https://idp.example.com"

[[policy.grants]]
issuer = "https://idp.example.com"
roles = ["support"]
tools = ["echo.*"]
"#,
    )
    .expect("valid");
    let oidc = &config.auth.oidc[0];
    assert_eq!(
        oidc.audience, "https://mcp.example.com/mcp",
        "audience defaults to the resource"
    );
    assert_eq!(oidc.algorithms, JwtAlgorithm::ALL.to_vec());
    assert_eq!(oidc.clock_skew, Duration::from_secs(60));
    assert_eq!(oidc.claims.user, "sub");
    assert_eq!(
        oidc.claims.agent,
        vec!["azp".to_owned(), "client_id".to_owned()]
    );
    assert_eq!(oidc.claims.scopes, "scope");
    assert!(oidc.jwks_uri.is_none(), "discovery");
    assert_eq!(config.grants[0].principal, None);
    assert_eq!(config.identity.issuer, "https://mcp.example.com");
}

#[test]
fn oidc_mistakes_are_all_reported() {
    let errors = check(
        r#"
[[auth.oidc]]
issuer = "http://idp.example.com"
jwks_uri = "https://elsewhere.example.net/jwks"
algorithms = ["RS256", "HS256", "none"]
clock_skew = "1h"
surprise = 1

[[auth.oidc]]
issuer = "https://idp.example.com"
jwks_uri = "https://evil.example.net/jwks"
"#,
    )
    .expect_err("invalid");
    let p = paths(&errors);
    for expected in [
        "auth.resource",
        "auth.oidc[0].issuer",
        "auth.oidc[0].algorithms[1]",
        "auth.oidc[0].algorithms[2]",
        "auth.oidc[0].clock_skew",
        "auth.oidc[0].surprise",
        "auth.oidc[1].jwks_uri",
    ] {
        assert!(p.contains(&expected), "{expected} missing from {errors:#?}");
    }
}

#[test]
fn http_issuers_are_only_for_loopback() {
    let config = check(
        r#"
[auth]
resource = "http://127.0.0.1:8080/mcp"
[[auth.oidc]]
issuer = "http://127.0.0.1:9000"
"#,
    )
    .expect("loopback http is allowed, for tests");
    assert_eq!(
        config.auth.oidc[0].issuer.as_str(),
        "http://127.0.0.1:9000/"
    );
}

#[test]
fn certificates_need_a_client_ca_and_exactly_one_id() {
    let errors = check(
        r#"
[[auth.certificates]]
principal = "bot"
uri = "spiffe://example.org/bot"
dns = "bot.example.org"
"#,
    )
    .expect_err("invalid");
    let p = paths(&errors);
    assert!(p.contains(&"auth.certificates[0]"), "{errors:#?}");
    assert!(p.contains(&"auth.certificates"), "{errors:#?}");

    let config = check(
        r#"
[listen.tls]
cert = "tls/cert.pem"
key = "tls/key.pem"
client_ca = "tls/ca.pem"

[[auth.certificates]]
principal = "bot"
uri = "spiffe://example.org/bot"
"#,
    )
    .expect("valid");
    let tls = config.listen.tls.expect("tls");
    assert_eq!(tls.client_auth, ClientAuth::Optional);
    assert_eq!(tls.cert, Path::new("/etc/micromcp/tls/cert.pem"));
    assert_eq!(
        config.auth.certificates[0].id,
        CertificateId::Uri("spiffe://example.org/bot".into())
    );
}

#[test]
fn grants_need_a_subject_and_scope_rules_need_scopes() {
    let errors = check(
        r#"
[[auth.tokens]]
principal = "alice"
hash = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
scopes = ["ok", "bad scope"]

[[policy.grants]]
tools = ["echo.*"]

[[policy.grants]]
issuer = "https://not-configured.example.com"
tools = ["echo.*"]

[[policy.scopes]]
scopes = []
tools = ["nope.*"]

[policy]
other = 1
"#,
    )
    .expect_err("invalid");
    let p = paths(&errors);
    for expected in [
        "auth.tokens[0].scopes[1]",
        "policy.grants[0]",
        "policy.grants[1].issuer",
        "policy.scopes[0].scopes",
        "policy.scopes[0].tools[0]",
        "policy.other",
    ] {
        assert!(p.contains(&expected), "{expected} missing from {errors:#?}");
    }
}

#[test]
fn the_gateway_identity_key_is_a_reference_and_lifetimes_are_short() {
    let errors = check(
        r#"
[[auth.tokens]]
principal = "alice"
hash = "sha256:0000000000000000000000000000000000000000000000000000000000000000"

[identity]
signing_key = "-----BEGIN PRIVATE KEY-----"
lifetime = "10m"
"#,
    )
    .expect_err("invalid");
    let p = paths(&errors);
    assert!(p.contains(&"identity.signing_key"), "{errors:#?}");
    assert!(p.contains(&"identity.lifetime"), "{errors:#?}");
}
