//! HTTPS upstreams: the gateway verifies the upstream's certificate against the trusted roots
//! (the platform's, or `SSL_CERT_FILE`), never sends a request over an unverified connection,
//! and keeps verified connections alive across calls. Notification streams that fail are opened
//! again; an upstream that has none is asked once.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
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

/// A session-era upstream over plain HTTP that counts its notification-stream requests (GET).
/// `offers_stream`: the first GET fails with 503 (a restart), the second opens a stream that
/// announces a tools list change once `announce` fires. Otherwise every GET gets 405.
async fn listening_upstream(
    offers_stream: bool,
    gets: Arc<AtomicUsize>,
    announce: Arc<tokio::sync::Notify>,
) -> String {
    use axum::http::{HeaderValue, StatusCode, header};
    use axum::response::IntoResponse;

    let post = |body: String| async move {
        let request: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let result = match request["method"].as_str() {
            Some("initialize") => Some(json!({"protocolVersion": "2025-11-25",
                "capabilities": {"tools": {"listChanged": true}},
                "serverInfo": {"name": "listening", "version": "1"}})),
            Some("tools/list") => Some(json!({"tools": []})),
            _ => None,
        };
        micromcp_testkit::upstream_reply(&request, result)
    };
    let get = move || {
        let n = gets.fetch_add(1, Ordering::SeqCst);
        let announce = announce.clone();
        async move {
            if !offers_stream {
                return StatusCode::METHOD_NOT_ALLOWED.into_response();
            }
            if n == 0 {
                return StatusCode::SERVICE_UNAVAILABLE.into_response();
            }
            let event = futures::stream::once(async move {
                announce.notified().await;
                Ok::<_, std::convert::Infallible>(
                    "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/tools/list_changed\"}\n\n",
                )
            })
            .chain(futures::stream::pending());
            let mut response = axum::body::Body::from_stream(event).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            response
        }
    };
    micromcp_testkit::serve(axum::Router::new().route("/mcp", axum::routing::post(post).get(get)))
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn notification_streams_are_retried_unless_the_upstream_has_none() {
    let (offered_gets, absent_gets) =
        (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let announce = Arc::new(tokio::sync::Notify::new());
    let offered = listening_upstream(true, offered_gets.clone(), announce.clone()).await;
    let absent = listening_upstream(false, absent_gets.clone(), announce.clone()).await;
    let gw = Gateway::start(&format!(
        r#"
[[policy.grants]]
principal = "alice"
tools = ["offered.*", "absent.*"]

[services.offered]
url = "{offered}"

[services.absent]
url = "{absent}"
"#
    ));
    gw.wait_ready(&["offered", "absent"]).await;
    let mut c = gw.client(&gw.alice);
    c.initialize().await;
    let stream = c.open_session_stream().await;

    // The 503 is retried (after 1 s): the second stream is open.
    let deadline = Instant::now() + Duration::from_secs(10);
    while offered_gets.load(Ordering::SeqCst) < 2 {
        assert!(
            Instant::now() < deadline,
            "the notification stream was not opened again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    announce.notify_one();
    read_stream_until(stream, "notifications/tools/list_changed").await;
    // 405 means "none here": asked once, never again (a retry would have come after 1 s).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(absent_gets.load(Ordering::SeqCst), 1);
}
