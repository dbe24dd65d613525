//! https end to end: a private CA and server certificates made at test time (rcgen), the
//! test web server behind a real TLS handshake (tokio-rustls, ring), and the service
//! trusting the CA only through `--ca-file`.
//!
//! The server counts completed handshakes and HTTP requests separately, so a refused
//! certificate is shown to have carried no request.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use micromcp_testkit::tls::{Ca, TempFile, TlsListener};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;

use super::{fetch_ok, fetch_refused, site_handler, start_service, strings};

/// The name the service is asked to fetch.
const NAME: &str = "docs.test";

/// The test web server (the same routes as the plain-http one) behind TLS.
struct TlsSite {
    port: u16,
    handshakes: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

impl TlsSite {
    /// Serves https on 127.0.0.1 presenting `cert` (the leaf alone).
    async fn start(cert: CertificateDer<'static>, key: PrivateKeyDer<'static>) -> Self {
        let (listener, handshakes) = TlsListener::bind(cert, key).await;
        let port = axum::serve::Listener::local_addr(&listener)
            .expect("site addr")
            .port();
        let requests = Arc::new(AtomicUsize::new(0));
        let app = axum::Router::new()
            .fallback(site_handler)
            .with_state(requests.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            port,
            handshakes,
            requests,
        }
    }

    fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// `docs.test` (https only) mapped to 127.0.0.1, which is lifted; the site's port allowed.
fn tls_flags(site: &TlsSite) -> Vec<String> {
    strings(&[
        "--allow",
        NAME,
        "--resolve",
        &format!("{NAME}=127.0.0.1"),
        "--allow-cidr",
        "127.0.0.1/32",
        "--allow-port",
        &site.port.to_string(),
    ])
}

fn with_ca_file(mut flags: Vec<String>, file: &TempFile) -> Vec<String> {
    flags.push("--ca-file".to_owned());
    flags.push(file.path().to_str().expect("UTF-8 temp path").to_owned());
    flags
}

#[tokio::test]
async fn https_fetch_with_a_private_ca_succeeds() {
    let ca = Ca::new();
    let (cert, key) = ca.issue(NAME);
    let site = TlsSite::start(cert, key).await;
    let ca_file = ca.pem_file();
    let mcp = start_service(&with_ca_file(tls_flags(&site), &ca_file)).await;

    let url = format!("https://{NAME}:{}/page", site.port);
    let out = fetch_ok(&mcp, json!({"url": url})).await;
    assert_eq!(out["url"], url);
    assert_eq!(out["status"], 200);
    assert_eq!(out["content_type"], "text/html");
    let text = out["text"].as_str().expect("text");
    assert!(
        text.contains("# Hello") && text.contains("World of text."),
        "{text}"
    );
    assert_eq!(site.requests(), 1);
    assert!(site.handshakes() >= 1);
}

#[tokio::test]
async fn https_without_the_ca_is_refused_with_a_certificate_error() {
    let ca = Ca::new();
    let (cert, key) = ca.issue(NAME);
    let site = TlsSite::start(cert, key).await;
    let mcp = start_service(&tls_flags(&site)).await;

    let message = fetch_refused(&mcp, &format!("https://{NAME}:{}/page", site.port)).await;
    assert!(
        message.contains(&format!("request to https://{NAME}:{}", site.port))
            && message.contains("certificate")
            && message.contains("UnknownIssuer")
            && message.contains("--ca-file"),
        "{message}"
    );
    assert!(!message.contains("/page"), "{message}");
    assert_eq!(site.handshakes(), 0, "the handshake must not complete");
    assert_eq!(site.requests(), 0, "no HTTP request may be sent");
}

#[tokio::test]
async fn https_certificate_for_another_name_is_refused() {
    let ca = Ca::new();
    // Signed by the trusted CA, but for another name than the URL's.
    let (cert, key) = ca.issue("other.test");
    let site = TlsSite::start(cert, key).await;
    let ca_file = ca.pem_file();
    let mcp = start_service(&with_ca_file(tls_flags(&site), &ca_file)).await;

    let message = fetch_refused(&mcp, &format!("https://{NAME}:{}/page", site.port)).await;
    assert!(
        message.contains("certificate") && message.contains("not valid for name"),
        "{message}"
    );
    assert!(!message.contains("--ca-file"), "{message}");
    assert_eq!(site.handshakes(), 0, "the handshake must not complete");
    assert_eq!(site.requests(), 0, "no HTTP request may be sent");
}
