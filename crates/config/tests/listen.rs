//! `[listen]` validation.

use std::path::Path;

use micromcp_config::Config;

const REST: &str = "[stdio]\nprincipal = \"me\"\n";

fn check(listen: &str) -> Result<Config, Vec<micromcp_config::ConfigError>> {
    Config::from_toml(&format!("[listen]\n{listen}\n{REST}"), Path::new("."))
}

#[test]
fn non_loopback_binds_need_allowed_hosts() {
    let errors = check("addr = \"0.0.0.0:8080\"").unwrap_err();
    assert!(
        errors.iter().any(|e| e.path == "listen.allowed_hosts"),
        "{errors:?}"
    );
    assert!(check("addr = \"0.0.0.0:8080\"\nallowed_hosts = [\"mcp.internal\"]").is_ok());
    assert!(check("addr = \"127.0.0.1:8080\"").is_ok());
    assert!(check("addr = \"[::1]:8080\"").is_ok());
}
