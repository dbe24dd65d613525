//! HTTPS upstreams: the gateway verifies the upstream's certificate against the trusted roots
//! (the platform's, or `SSL_CERT_FILE`), never sends a request over an unverified connection,
//! and keeps verified connections alive across calls.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use micromcp_testkit::tls::{Ca, TlsListener};
use serde_json::json;

const TEXT: &str = "This is a simple text response for testing.";

fn config(port: u16) -> String {
    format!(
        r#"
[[policy.grants]]
principal = "alice"
tools = ["tls.*", "tls26.*"]

[services.tls]
url = "https://localhost:{port}/mcp"

[services.tls26]
url = "https://localhost:{port}/mcp"
protocol = "2026-07-28"
"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn https_upstreams_are_verified_and_their_connections_reused() {
    let ca = Ca::new();
    let (cert, key) = ca.issue("localhost");
    let (listener, handshakes) = TlsListener::bind(cert, key).await;
    let port = axum::serve::Listener::local_addr(&listener)
        .expect("addr")
        .port();
    tokio::spawn(
        async move { axum::serve(listener, micromcp_conformance_fixture::router()).await },
    );

    // Not trusted: the machine's roots do not include the test CA.
    let (alice, bob) = (token(), token());
    let untrusting = Gateway::start_raw(
        &format!("{}\n{}", preamble(&alice, &bob), config(port)),
        alice.token,
        bob.token,
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !untrusting.stderr_text().contains("not reachable yet") {
        assert!(Instant::now() < deadline, "{}", untrusting.stderr_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut c = untrusting.client(&untrusting.alice);
    c.initialize().await;
    let refused = c
        .call(
            "tools/call",
            json!({"name": "tls.test_simple_text", "arguments": {}}),
        )
        .await;
    assert!(
        refused.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("TLS handshake failed")),
        "an unverified upstream is never called, and the caller is told why: {}",
        refused.body
    );
    assert_eq!(
        handshakes.load(Ordering::SeqCst),
        0,
        "no TLS connection completed"
    );
    drop(untrusting);

    // Trusted through SSL_CERT_FILE.
    let ca_file = ca.pem_file();
    let (alice, bob) = (token(), token());
    let gw = Gateway::start_with_env(
        &format!("{}\n{}", preamble(&alice, &bob), config(port)),
        alice.token,
        bob.token,
        &[(
            "SSL_CERT_FILE",
            ca_file.path().to_str().expect("UTF-8 path"),
        )],
    );
    gw.wait_ready(&["tls", "tls26"]).await;
    let mut c = gw.client(&gw.alice);
    c.initialize().await;
    for i in 0..20 {
        let service = if i % 2 == 0 { "tls" } else { "tls26" };
        let reply = c
            .call(
                "tools/call",
                json!({"name": format!("{service}.test_simple_text"), "arguments": {}}),
            )
            .await;
        assert_eq!(text_of(&reply), TEXT);
    }
    // Per service: one connection held by its notification stream and one for requests (a
    // second now and then, when a call starts before the previous answer's stream has ended).
    // Without keep-alive it would be more than 20.
    let connections = handshakes.load(Ordering::SeqCst);
    assert!(
        (4..=10).contains(&connections),
        "{connections} TLS connections for 20 calls"
    );
}
