//! `[gateway]` validation: the per-principal limits and the session idle timeout.

use std::path::Path;
use std::time::Duration;

use micromcp_config::{Config, ConfigError};

const REST: &str = "[stdio]\nprincipal = \"me\"\n";

fn check(gateway: &str) -> Result<Config, Vec<ConfigError>> {
    Config::from_toml(&format!("[gateway]\n{gateway}\n{REST}"), Path::new("."))
}

#[test]
fn limits_have_defaults_far_below_the_session_table() {
    let g = check("").expect("valid").gateway;
    assert_eq!(g.max_sessions, 10_000);
    assert_eq!(g.max_sessions_per_principal, 64);
    assert_eq!(g.session_idle_timeout, Duration::from_secs(600));
    assert_eq!(g.max_streams_per_principal, 16);
    assert_eq!(g.max_requests_per_principal, 64);
}

#[test]
fn limits_are_read() {
    let g = check(
        "max_sessions = 50\nmax_sessions_per_principal = 3\nsession_idle_timeout = \"1s\"\n\
         max_streams_per_principal = 2\nmax_requests_per_principal = 5",
    )
    .expect("valid")
    .gateway;
    assert_eq!(
        (
            g.max_sessions,
            g.max_sessions_per_principal,
            g.max_streams_per_principal,
            g.max_requests_per_principal
        ),
        (50, 3, 2, 5)
    );
    assert_eq!(g.session_idle_timeout, Duration::from_secs(1));
}

#[test]
fn zero_huge_and_malformed_limits_are_errors_with_their_key_paths() {
    let errors = check(
        "max_sessions = 0\nmax_sessions_per_principal = 0\nmax_streams_per_principal = 2000000\n\
         max_requests_per_principal = 0\nsession_idle_timeout = \"soon\"",
    )
    .unwrap_err();
    let mut paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    paths.sort_unstable();
    assert_eq!(
        paths,
        [
            "gateway.max_requests_per_principal",
            "gateway.max_sessions",
            "gateway.max_sessions_per_principal",
            "gateway.max_streams_per_principal",
            "gateway.session_idle_timeout",
        ],
        "{errors:?}"
    );
    let errors = check("session_idle_timeout = \"48h\"").unwrap_err();
    assert_eq!(errors[0].path, "gateway.session_idle_timeout");
    let errors = check("max_sessions_per_principal = -1").unwrap_err();
    assert!(errors[0].path.starts_with("gateway"), "{errors:?}");
}
