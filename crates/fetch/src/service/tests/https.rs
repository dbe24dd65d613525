//! https end to end: a private CA and server certificates made at test time (rcgen), the
//! test web server behind a real TLS handshake (tokio-rustls, ring), and the service
//! trusting the CA only through `--ca-file`.
//!
//! The server counts completed handshakes and HTTP requests separately, so a refused
//! certificate is shown to have carried no request.

use std::{
    io,
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, server::TlsStream};

use super::{fetch_ok, fetch_refused, site_handler, start_service, strings};

/// The name the service is asked to fetch.
const NAME: &str = "docs.test";

/// A private CA: its certificate (PEM, for `--ca-file`) and what it signs with.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new() -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "micromcp fetch test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("CA certificate");
        Self {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for `name`, and its key.
    fn issue(&self, name: &str) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate().expect("server key");
        let mut params = CertificateParams::new(vec![name.to_owned()]).expect("server params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("server certificate");
        let key = PrivatePkcs8KeyDer::from(key.serialize_der());
        (cert.der().clone(), key.into())
    }

    /// The CA certificate written to a file, removed when the guard drops.
    fn pem_file(&self) -> TempFile {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "micromcp-fetch-test-ca-{}-{}.pem",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::write(&path, &self.pem).expect("write CA file");
        TempFile(path)
    }
}

struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The test web server (the same routes as the plain-http one) behind TLS.
struct TlsSite {
    port: u16,
    handshakes: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

impl TlsSite {
    /// Serves https on 127.0.0.1 presenting `cert` (the leaf alone).
    async fn start(cert: CertificateDer<'static>, key: PrivateKeyDer<'static>) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .expect("server certificate and key");
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind site");
        let port = tcp.local_addr().expect("site addr").port();
        let handshakes = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let listener = TlsListener {
            tcp,
            acceptor: TlsAcceptor::from(Arc::new(config)),
            handshakes: handshakes.clone(),
        };
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

/// A TCP listener that hands axum only connections whose TLS handshake completed.
struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    handshakes: Arc<AtomicUsize>,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            // A client that rejects the certificate aborts the handshake: no connection.
            let handshake = self.acceptor.accept(tcp);
            if let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(5), handshake).await {
                self.handshakes.fetch_add(1, Ordering::SeqCst);
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.tcp.local_addr()
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
    flags.push(file.0.to_str().expect("UTF-8 temp path").to_owned());
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
