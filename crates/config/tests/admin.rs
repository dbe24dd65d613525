//! `[admin]`, `[[admin.tokens]]` and `[approvals]` validation.

use std::path::Path;
use std::time::Duration;

use micromcp_config::{Config, ConfigError, TokenHash};

const HASH_A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const HASH_B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fn check(text: &str) -> Result<Config, Vec<ConfigError>> {
    Config::from_toml(
        &format!("[[auth.tokens]]\nprincipal = \"alice\"\nhash = \"{HASH_A}\"\n{text}"),
        Path::new("."),
    )
}

fn paths(errors: &[ConfigError]) -> Vec<&str> {
    let mut paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    paths.sort_unstable();
    paths
}

#[test]
fn no_admin_table_means_no_admin_listener_and_default_approvals() {
    let config = check("").expect("valid");
    assert!(config.admin.is_none());
    assert_eq!(config.approvals.timeout, Duration::from_secs(600));
    assert_eq!(config.approvals.progress_interval, Duration::from_secs(5));
    assert!(config.approvals.webhook.is_none());
}

#[test]
fn an_admin_listener_with_an_approver_token() {
    let config = check(&format!(
        "[admin]\naddr = \"127.0.0.1:8081\"\n[[admin.tokens]]\nprincipal = \"carol\"\nroles = [\"approver\"]\nhash = \"{HASH_B}\"\n\
         [approvals]\ntimeout = \"2m\"\nprogress_interval = \"1s\"\nmax_pending = 5\nmax_pending_per_principal = 2\n"
    ))
    .expect("valid");
    let admin = config.admin.expect("admin");
    assert_eq!(admin.addr.to_string(), "127.0.0.1:8081");
    assert_eq!(admin.tokens.len(), 1);
    assert_eq!(admin.tokens[0].identity.principal, "carol");
    assert_eq!(admin.tokens[0].identity.roles, ["approver"]);
    assert!(matches!(admin.tokens[0].hash, TokenHash::Sha256(_)));
    let a = config.approvals;
    assert_eq!(
        (
            a.timeout,
            a.progress_interval,
            a.max_pending,
            a.max_pending_per_principal
        ),
        (Duration::from_secs(120), Duration::from_secs(1), 5, 2)
    );
}

#[test]
fn the_admin_listener_is_loopback_unless_explicitly_allowed() {
    let token = format!(
        "[[admin.tokens]]\nprincipal = \"carol\"\nroles = [\"approver\"]\nhash = \"{HASH_B}\"\n"
    );
    let errors = check(&format!("[admin]\naddr = \"0.0.0.0:8081\"\n{token}")).unwrap_err();
    assert_eq!(paths(&errors), ["admin.addr"]);
    assert!(errors[0].message.contains("loopback"), "{errors:?}");
    let config = check(&format!(
        "[admin]\naddr = \"0.0.0.0:8081\"\nallow_non_loopback = true\n{token}"
    ))
    .expect("explicitly allowed");
    assert_eq!(config.admin.expect("admin").addr.port(), 8081);
    let errors = check(&format!("[admin]\naddr = \"127.0.0.1:8080\"\n{token}")).unwrap_err();
    assert_eq!(
        paths(&errors),
        ["admin.addr"],
        "same as the default listen.addr"
    );
}

#[test]
fn admin_token_problems_are_all_reported_with_their_key_paths() {
    let errors = check(&format!(
        "[admin]\nagent = \"x\"\n\
         [[admin.tokens]]\nprincipal = \"carol\"\nroles = [\"approver\", \"root\"]\nhash = \"{HASH_A}\"\n\
         [[admin.tokens]]\nprincipal = \"dave\"\nhash = \"{HASH_B}\"\n\
         [[admin.tokens]]\nprincipal = \"erin\"\nroles = [\"approver\"]\nhash = \"nothex\"\nagent = \"bot\"\n\
         [[admin.tokens]]\nprincipal = \"frank\"\nroles = [\"approver\"]\nhash = \"{HASH_B}\"\n"
    ))
    .unwrap_err();
    assert_eq!(
        paths(&errors),
        [
            "admin.addr",
            "admin.agent",
            "admin.tokens[0].hash",
            "admin.tokens[0].roles[1]",
            "admin.tokens[1].roles",
            "admin.tokens[2].agent",
            "admin.tokens[2].hash",
            "admin.tokens[3].hash",
        ],
        "{errors:#?}"
    );
    let reused = errors
        .iter()
        .find(|e| e.path == "admin.tokens[0].hash")
        .expect("reused");
    assert!(reused.message.contains("[[auth.tokens]]"), "{reused}");
    let errors = check("[admin]\naddr = \"127.0.0.1:8081\"\n").unwrap_err();
    assert_eq!(paths(&errors), ["admin.tokens"]);
}

#[test]
fn an_admin_token_may_be_generated_on_first_start_but_not_share_a_file_with_an_mcp_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = |mcp: &str, admin: &str| {
        Config::from_toml(
            &format!(
                "[[auth.tokens]]\nprincipal = \"alice\"\nhash = \"generate:{mcp}\"\n\
                 [admin]\naddr = \"127.0.0.1:8081\"\n\
                 [[admin.tokens]]\nprincipal = \"carol\"\nroles = [\"approver\"]\nhash = \"generate:{admin}\"\n"
            ),
            dir.path(),
        )
    };
    let admin = config("alice.sha256", "carol.sha256")
        .expect("valid")
        .admin
        .expect("admin");
    assert_eq!(
        admin.tokens[0].hash,
        TokenHash::Generate(dir.path().join("carol.sha256"))
    );
    let errors = config("same.sha256", "same.sha256").unwrap_err();
    assert_eq!(paths(&errors), ["admin.tokens[0].hash"]);
}

#[test]
fn approval_bounds_and_webhook_secrets_by_reference_only() {
    let errors = check(
        "[approvals]\ntimeout = \"0s\"\nprogress_interval = \"1h\"\nmax_pending = 0\nmax_pending_per_principal = 5\ncolour = 1\n\
         webhook = { url = \"http://chat.example/hook\", secret = \"inline-secret-value\", other = 1 }\n",
    )
    .unwrap_err();
    assert_eq!(
        paths(&errors),
        [
            "approvals.colour",
            "approvals.max_pending",
            "approvals.max_pending_per_principal",
            "approvals.progress_interval",
            "approvals.timeout",
            "approvals.webhook.other",
            "approvals.webhook.secret",
            "approvals.webhook.url",
        ],
        "{errors:#?}"
    );
    assert!(
        errors
            .iter()
            .all(|e| !e.message.contains("inline-secret-value")),
        "a secret never appears in an error: {errors:?}"
    );
    let errors = check(
        "[approvals]\nwebhook = { url = \"https://chat.example/hook\", secret = \"env:MICROMCP_TEST_UNSET_WEBHOOK_SECRET\" }\n",
    )
    .unwrap_err();
    assert_eq!(paths(&errors), ["approvals.webhook.secret"]);
    assert!(
        errors[0]
            .message
            .contains("MICROMCP_TEST_UNSET_WEBHOOK_SECRET")
    );
}

#[test]
fn a_webhook_with_a_file_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("hook.key"), "0123456789abcdef0123\n").expect("write");
    let config = Config::from_toml(
        "[stdio]\nprincipal = \"me\"\n[approvals]\nwebhook = { url = \"http://127.0.0.1:9/hook\", secret = \"file:hook.key\", include_arguments = true }\n",
        dir.path(),
    )
    .expect("valid");
    let hook = config.approvals.webhook.expect("webhook");
    assert_eq!(hook.secret.expose(), "0123456789abcdef0123");
    assert!(hook.include_arguments);
    assert_eq!(format!("{:?}", hook.secret), "[redacted]");
    std::fs::write(dir.path().join("hook.key"), "short\n").expect("write");
    let errors = Config::from_toml(
        "[stdio]\nprincipal = \"me\"\n[approvals]\nwebhook = { url = \"https://x.example/\", secret = \"file:hook.key\" }\n",
        dir.path(),
    )
    .unwrap_err();
    assert_eq!(paths(&errors), ["approvals.webhook.secret"]);
}
