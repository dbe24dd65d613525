//! `[services.*]` validation.

use std::path::Path;

use micromcp_config::{Config, ConfigError, ServiceTransport};

fn check(services: &str) -> Result<Config, Vec<ConfigError>> {
    Config::from_toml(
        &format!("[stdio]\nprincipal = \"me\"\n{services}"),
        Path::new("."),
    )
}

fn messages_at(errors: &[ConfigError], path: &str) -> Vec<String> {
    errors
        .iter()
        .filter(|e| e.path == path)
        .map(|e| e.message.clone())
        .collect()
}

#[test]
fn upstream_urls_are_parsed_once_here() {
    let config = check("[services.crm]\nurl = \"https://CRM.example:8443/mcp\"").expect("valid");
    let ServiceTransport::Http { url, .. } = &config.services["crm"].transport else {
        panic!("not an HTTP service");
    };
    assert_eq!(url.as_str(), "https://crm.example:8443/mcp");
}

#[test]
fn bad_upstream_urls_are_refused_with_every_other_error() {
    let errors = check(
        r#"
[services.a]
url = "https://user:hunter2@crm.example/mcp"

[services.b]
url = "http://[not-an-address/mcp"
headers = { Authorization = "inline-secret" }

[services.c]
url = "ftp://files.example/"
"#,
    )
    .unwrap_err();
    let a = messages_at(&errors, "services.a.url");
    assert!(a.iter().any(|m| m.contains("credentials")), "{errors:?}");
    assert!(
        errors.iter().all(|e| !e.message.contains("hunter2")),
        "the password must not be echoed: {errors:?}"
    );
    assert!(
        messages_at(&errors, "services.b.url")
            .iter()
            .any(|m| m.contains("not a valid URL")),
        "{errors:?}"
    );
    // The header error of the same service is still reported.
    assert!(
        !messages_at(&errors, "services.b.headers.Authorization").is_empty(),
        "{errors:?}"
    );
    assert!(
        messages_at(&errors, "services.c.url")
            .iter()
            .any(|m| m.contains("http:// or https://")),
        "{errors:?}"
    );
}

#[test]
fn headers_that_frame_or_route_requests_cannot_be_configured() {
    let errors = check(
        r#"
[services.a]
url = "http://127.0.0.1:9/mcp"
headers = { Content-Length = "0", Transfer-Encoding = "chunked", Host = "other.example", Mcp-Session-Id = "fixed", X-Tenant = "acme" }
"#,
    )
    .unwrap_err();
    for name in [
        "Content-Length",
        "Transfer-Encoding",
        "Host",
        "Mcp-Session-Id",
    ] {
        assert!(
            messages_at(&errors, &format!("services.a.headers.{name}"))
                .iter()
                .any(|m| m.contains("set by the gateway")),
            "{name}: {errors:?}"
        );
    }
    assert!(
        messages_at(&errors, "services.a.headers.X-Tenant").is_empty(),
        "an ordinary header is fine: {errors:?}"
    );
}
