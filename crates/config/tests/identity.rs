//! `[identity]` and `identity =` per service: what services are told about the caller.

use std::path::Path;
use std::time::Duration;

use micromcp_config::{Config, ConfigError, IDENTITY_KEY_ENV, ServiceIdentity};

fn check(rest: &str) -> Result<Config, Vec<ConfigError>> {
    check_in(rest, Path::new("."))
}

fn check_in(rest: &str, dir: &Path) -> Result<Config, Vec<ConfigError>> {
    Config::from_toml(&format!("[stdio]\nprincipal = \"me\"\n{rest}"), dir)
}

fn messages_at(errors: &[ConfigError], path: &str) -> Vec<String> {
    errors
        .iter()
        .filter(|e| e.path == path)
        .map(|e| e.message.clone())
        .collect()
}

#[test]
fn vector_gets_a_signed_identity_by_default_and_other_services_none() {
    let config = check(
        r#"
[services.search]
builtin = "vector"
args = ["--docs", "d", "--state-dir", "s", "--tenant", "acme", "--clearance", "public"]
[services.echo]
builtin = "echo"
[services.crm]
url = "https://crm.example/mcp"
[services.crm-jwt]
url = "https://crm.example/mcp"
identity = "jwt"
[services.standalone]
builtin = "vector"
identity = "none"
"#,
    )
    .expect("valid");
    let identity = |name: &str| config.services[name].identity;
    assert_eq!(identity("search"), ServiceIdentity::Signed);
    assert_eq!(identity("echo"), ServiceIdentity::None);
    assert_eq!(identity("crm"), ServiceIdentity::None);
    assert_eq!(identity("crm-jwt"), ServiceIdentity::Jwt);
    assert_eq!(
        identity("standalone"),
        ServiceIdentity::None,
        "an explicit \"none\" keeps vector on its launch flags"
    );
}

#[test]
fn identity_kinds_must_fit_the_transport_and_the_key_variable_is_reserved() {
    let errors = check(&format!(
        r#"
[services.a]
builtin = "echo"
identity = "jwt"
[services.b]
url = "https://crm.example/mcp"
identity = "signed"
[services.c]
url = "https://crm.example/mcp"
identity = "jwt"
headers = {{ Authorization = "env:CRM_TOKEN" }}
[services.d]
builtin = "vector"
env = {{ {IDENTITY_KEY_ENV} = "chosen-by-me" }}
"#
    ))
    .expect_err("invalid");
    assert_eq!(
        messages_at(&errors, "services.a.identity").len(),
        1,
        "{errors:?}"
    );
    assert_eq!(
        messages_at(&errors, "services.b.identity").len(),
        1,
        "{errors:?}"
    );
    let has = |path: &str, text: &str| messages_at(&errors, path).iter().any(|m| m.contains(text));
    assert!(has("services.c.identity", "Authorization"), "{errors:?}");
    assert!(
        has(&format!("services.d.env.{IDENTITY_KEY_ENV}"), "reserved"),
        "{errors:?}"
    );
}

#[test]
fn the_identity_section_has_defaults_and_keys_only_by_reference() {
    let identity = check("").expect("valid").identity;
    assert_eq!(identity.issuer, "micromcp");
    assert!(identity.signing_key.is_none() && identity.previous_keys.is_empty());
    assert_eq!(identity.lifetime, Duration::from_secs(60));

    let with_resource = check("[auth]\nresource = \"https://gw.example:8443/mcp\"")
        .expect("valid")
        .identity;
    assert_eq!(with_resource.issuer, "https://gw.example:8443");

    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("new.pem"), "NEW KEY\n").expect("write");
    std::fs::write(dir.path().join("old.pem"), "OLD KEY\n").expect("write");
    let loaded = check_in(
        r#"
[identity]
issuer = "https://gw.example"
signing_key = "file:new.pem"
previous_keys = ["file:old.pem"]
lifetime = "2m"
"#,
        dir.path(),
    )
    .expect("valid")
    .identity;
    assert_eq!(loaded.issuer, "https://gw.example");
    assert_eq!(
        loaded.signing_key.as_ref().map(|k| k.expose()),
        Some("NEW KEY")
    );
    assert_eq!(loaded.previous_keys.len(), 1);
    assert_eq!(loaded.lifetime, Duration::from_secs(120));

    let errors = check(
        r#"
[identity]
signing_key = "-----BEGIN PRIVATE KEY-----"
previous_keys = ["file:/nonexistent/old.pem"]
lifetime = "10m"
"#,
    )
    .expect_err("invalid");
    let literal = messages_at(&errors, "identity.signing_key");
    assert!(
        literal.len() == 1 && literal[0].contains("by reference"),
        "{errors:?}"
    );
    assert!(
        !literal[0].contains("BEGIN"),
        "the key text is never repeated: {literal:?}"
    );
    assert_eq!(
        messages_at(&errors, "identity.previous_keys[0]").len(),
        1,
        "{errors:?}"
    );
    assert_eq!(
        messages_at(&errors, "identity.lifetime").len(),
        1,
        "{errors:?}"
    );
}
