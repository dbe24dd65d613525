//! TLS and mTLS on the client listener (issue 10, item 4), through the real binary: real
//! clients (reqwest, rustls, the official Python SDK) against certificates made by the tests.
//! Certificates are reloaded on SIGHUP and when their files change without dropping open
//! connections; client certificates are verified against `listen.tls.client_ca` and, when
//! `[[auth.certificates]]` maps one, authenticate a principal without a token.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use micromcp_testkit::tls::{Ca, Issued};
use rustls::pki_types::ServerName;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// A gateway serving TLS with a certificate from its own CA, whose files the test can replace.
struct TlsGateway {
    gw: Gateway,
    ca: Ca,
    /// The certificate the gateway started with.
    server: Issued,
    /// Holds the certificate, key and client CA files.
    files: tempfile::TempDir,
    addr: SocketAddr,
}

/// `client_auth`: `None` serves TLS without client certificates; otherwise the mode, with the
/// client CA's PEM. `extra`: more config (grants, certificate mappings).
fn start(client_auth: Option<(&str, &Ca)>, extra: &str) -> TlsGateway {
    start_with_limits(client_auth, extra, "")
}

/// Like [`start`], with more `[listen]` keys.
fn start_with_limits(client_auth: Option<(&str, &Ca)>, extra: &str, listen: &str) -> TlsGateway {
    let ca = Ca::new();
    let files = tempfile::tempdir().expect("tempdir");
    let server = ca.server(&["localhost", "127.0.0.1"], "gateway-1");
    write_pair(files.path(), &server);
    let mut tls = format!(
        "[listen.tls]\ncert = {}\nkey = {}\n",
        toml_path(&files.path().join("cert.pem")),
        toml_path(&files.path().join("key.pem"))
    );
    if let Some((mode, client_ca)) = client_auth {
        let path = files.path().join("client-ca.pem");
        std::fs::write(&path, &client_ca.pem).expect("write client CA");
        tls.push_str(&format!(
            "client_ca = {}\nclient_auth = \"{mode}\"\n",
            toml_path(&path)
        ));
    }
    let (alice, bob) = (token(), token());
    let preamble = preamble(&alice, &bob).replace(
        "max_body_bytes = 65536",
        &format!("max_body_bytes = 65536\n{listen}"),
    );
    let config = format!("{preamble}\n{tls}\n{ECHO}\n{extra}");
    let gw = Gateway::start_raw(&config, alice.token, bob.token);
    assert!(gw.url.starts_with("https://"), "{}", gw.url);
    let addr = gw
        .url
        .trim_start_matches("https://")
        .trim_end_matches("/mcp")
        .parse()
        .expect("address");
    TlsGateway {
        gw,
        ca,
        server,
        files,
        addr,
    }
}

fn toml_path(path: &Path) -> String {
    Value::String(path.display().to_string()).to_string()
}

/// Replaces the certificate and key files, each by a rename (as a deployment tool would).
fn write_pair(dir: &Path, issued: &Issued) {
    for (name, text) in [("cert.pem", &issued.cert_pem), ("key.pem", &issued.key_pem)] {
        let tmp = dir.join(format!(".{name}.new"));
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, dir.join(name)).expect("rename");
    }
}

impl TlsGateway {
    /// A reqwest client that trusts this gateway's CA, presenting `identity` if given.
    fn https(&self, identity: Option<&Issued>) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(self.ca.pem.as_bytes()).expect("CA");
        let mut builder = reqwest::Client::builder().no_proxy().tls_certs_only([ca]);
        if let Some(issued) = identity {
            let identity =
                reqwest::Identity::from_pem(issued.identity_pem().as_bytes()).expect("identity");
            builder = builder.identity(identity);
        }
        builder.build().expect("https client")
    }

    /// An MCP client over `http`, with a bearer token or none.
    fn client(&self, http: reqwest::Client, token: Option<&str>) -> Client {
        Client {
            http,
            url: self.gw.url.clone(),
            token: token.map(str::to_owned),
            session: None,
            next_id: 0,
        }
    }

    /// A rustls client config trusting this gateway's CA, with `identity` and ALPN `alpn`.
    fn rustls(&self, identity: Option<&Issued>, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        tls_client(&self.ca, identity, alpn, None)
    }

    /// A TLS connection to the gateway (the handshake as the client sees it).
    async fn connect(
        &self,
        config: Arc<rustls::ClientConfig>,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(self.addr).await?;
        let name = ServerName::try_from("127.0.0.1").expect("name");
        tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
    }

    fn sighup(&self) {
        let pid = self.gw.child.as_ref().expect("running").id();
        let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid"));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).expect("SIGHUP");
    }

    /// Waits until the gateway's stderr holds `needle` `n` times.
    async fn wait_log(&self, needle: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.gw.stderr_text().matches(needle).count() < n {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} (×{n}) in the gateway's log:\n{}",
                self.gw.stderr_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn still_running(&mut self) {
        let child = self.gw.child.as_mut().expect("running");
        assert!(
            child.try_wait().expect("wait").is_none(),
            "the gateway exited:\n{}",
            self.gw.stderr_text()
        );
    }
}

fn tls_client(
    ca: &Ca,
    identity: Option<&Issued>,
    alpn: &[&[u8]],
    versions: Option<&[&'static rustls::SupportedProtocolVersion]>,
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let ca_der =
        rustls::pki_types::CertificateDer::from_pem_slice(ca.pem.as_bytes()).expect("CA PEM");
    roots.add(ca_der).expect("CA");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions.unwrap_or(rustls::DEFAULT_VERSIONS))
        .expect("versions")
        .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(issued) => {
            let (chain, key) = issued.chain_and_key();
            builder
                .with_client_auth_cert(chain, key)
                .expect("client certificate")
        }
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

use rustls::pki_types::pem::PemObject;

/// `GET /healthz` on an open connection (keep-alive): Ok when the gateway answers `ok`.
async fn healthz(stream: &mut TlsStream<TcpStream>) -> std::io::Result<()> {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await?;
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !seen.ends_with(b"\r\n\r\nok\n") {
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .map_err(|_| std::io::Error::other("no answer in 5 s"))??;
        if n == 0 {
            return Err(std::io::Error::other(format!(
                "closed after {:?}",
                String::from_utf8_lossy(&seen)
            )));
        }
        seen.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&seen);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    Ok(())
}

/// A new connection: its handshake, and one request on it. Err when either fails (with TLS
/// 1.3 a client sees the server's refusal of its certificate only when it reads).
async fn fresh_healthz(
    tgw: &TlsGateway,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut stream = tgw.connect(config).await?;
    healthz(&mut stream).await?;
    Ok(stream)
}

fn peer_certificate(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("server certificate")
        .to_vec()
}

/// Opens a connection (which gets the certificate the gateway started with), then replaces the
/// certificate and key files with a new pair for subject CN `cn`; returns both.
async fn connect_then_replace(tgw: &TlsGateway, cn: &str) -> (TlsStream<TcpStream>, Issued) {
    let before = fresh_healthz(tgw, tgw.rustls(None, &[]))
        .await
        .expect("first connection");
    assert_eq!(peer_certificate(&before), tgw.server.der.to_vec());
    let next = tgw.ca.server(&["localhost", "127.0.0.1"], cn);
    write_pair(tgw.files.path(), &next);
    (before, next)
}

async fn echo_call(c: &mut Client, text: &str) -> Reply {
    c.call(
        "tools/call",
        json!({"name": "echo.echo", "arguments": {"text": text}}),
    )
    .await
}

const SPIFFE_BOT: &str = "spiffe://example.org/agent/bot";

/// Maps the SPIFFE id to principal carol (agent bot), who may use echo.
const CAROL: &str = r#"
[[auth.certificates]]
uri = "spiffe://example.org/agent/bot"
principal = "carol"
agent = "bot"
tenant = "acme"

[[policy.grants]]
principal = "carol"
tools = ["echo.*"]
"#;

#[tokio::test(flavor = "multi_thread")]
async fn plain_tls_serves_mcp_to_clients_that_trust_the_ca_over_http1_only() {
    let tgw = start(None, "");
    let mut c = tgw.client(tgw.https(None), Some(&tgw.gw.alice));
    c.initialize().await;
    let reply = echo_call(&mut c, "over tls").await;
    assert_eq!(text_of(&reply), "over tls");

    // A client that does not trust the gateway's CA gets no answer.
    let untrusting = tgw.client(
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client"),
        Some(&tgw.gw.alice),
    );
    let body = json!({"jsonrpc":"2.0","id":1,"method":"ping"});
    let refused = untrusting.request(&[], &body).send().await;
    assert!(refused.is_err(), "{refused:?}");

    // ALPN: http/1.1 is chosen over h2; a client that offers only h2 is refused.
    let stream = tgw
        .connect(tgw.rustls(None, &[b"h2", b"http/1.1"]))
        .await
        .expect("handshake");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let h2_only = tgw.connect(tgw.rustls(None, &[b"h2"])).await;
    assert!(h2_only.is_err(), "an h2-only client must be refused");

    // TLS 1.2 is accepted too; TLS 1.3 is what a current client gets.
    let tls12 = tls_client(&tgw.ca, None, &[], Some(&[&rustls::version::TLS12]));
    let stream = fresh_healthz(&tgw, tls12).await.expect("TLS 1.2");
    assert_eq!(
        stream.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let stream = fresh_healthz(&tgw, tgw.rustls(None, &[]))
        .await
        .expect("TLS 1.3");
    assert_eq!(
        stream.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );

    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut tcp = TcpStream::connect(tgw.addr).await.expect("connect");
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
    assert!(
        !String::from_utf8_lossy(&answer).contains("ok\n"),
        "{answer:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mapped_spiffe_certificate_calls_a_tool_without_a_token() {
    let client_ca = Ca::new();
    let tgw = start(Some(("required", &client_ca)), CAROL);
    let bot = client_ca.client(&[SPIFFE_BOT], "bot");
    let mut c = tgw.client(tgw.https(Some(&bot)), None);
    c.initialize().await;
    let reply = echo_call(&mut c, "hello from a workload").await;
    assert_eq!(text_of(&reply), "hello from a workload");
    let tools = c.call("tools/list", json!({})).await;
    assert!(tool_names(&tools).contains(&"echo.echo".to_owned()));

    let audit = tgw.gw.audit_at_least(4).await;
    let call = audit
        .iter()
        .find(|r| r["method"] == "tools/call")
        .unwrap_or_else(|| panic!("no tools/call record: {audit:?}"));
    assert_eq!(call["principal"], "carol", "{call}");
    assert_eq!(call["agent"], "bot", "{call}");
    assert_eq!(call["tenant"], "acme", "{call}");
    assert_eq!(call["auth_method"], "certificate", "{call}");
    assert_eq!(call["decision"], "allow", "{call}");

    // A certificate that names a principal and a bearer token on the same request is
    // ambiguous: refused.
    let mut both = tgw.client(tgw.https(Some(&bot)), Some(&tgw.gw.alice));
    let body = json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
        "protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"0"}}});
    let reply = both.send(&[], &body).await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    both.token = None;
    both.initialize().await;

    // Another SPIFFE id from the same CA, not mapped and without a token: 401.
    let other = client_ca.client(&["spiffe://example.org/agent/other"], "bot");
    let unmapped = tgw.client(tgw.https(Some(&other)), None);
    let reply = unmapped.send(&[], &body).await;
    assert_eq!(reply.status, 401, "{}", reply.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn optional_mode_without_a_certificate_needs_a_token() {
    let client_ca = Ca::new();
    let tgw = start(Some(("optional", &client_ca)), CAROL);
    let body = json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
        "protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"0"}}});

    let anonymous = tgw.client(tgw.https(None), None);
    let reply = anonymous.send(&[], &body).await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert!(
        reply.headers.contains_key("www-authenticate"),
        "{:?}",
        reply.headers
    );

    let mut with_token = tgw.client(tgw.https(None), Some(&tgw.gw.alice));
    with_token.initialize().await;
    assert_eq!(text_of(&echo_call(&mut with_token, "token").await), "token");

    // The mapped certificate works here too, without a token.
    let bot = client_ca.client(&[SPIFFE_BOT], "bot");
    let mut c = tgw.client(tgw.https(Some(&bot)), None);
    c.initialize().await;
    assert_eq!(text_of(&echo_call(&mut c, "cert").await), "cert");

    let audit = tgw.gw.audit_at_least(7).await;
    let methods: Vec<(&str, &str)> = audit
        .iter()
        .filter(|r| r["method"] == "tools/call")
        .map(|r| {
            (
                r["principal"].as_str().unwrap_or(""),
                r["auth_method"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        methods,
        [("alice", "api_token"), ("carol", "certificate")],
        "{audit:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn required_mode_refuses_a_client_without_a_certificate_in_the_handshake() {
    let client_ca = Ca::new();
    let tgw = start(Some(("required", &client_ca)), CAROL);

    let refused = fresh_healthz(&tgw, tgw.rustls(None, &[])).await;
    let error = refused.expect_err("no client certificate: the handshake fails");
    assert!(
        error.to_string().contains("CertificateRequired"),
        "the gateway refuses with the certificate_required alert: {error}"
    );
    let reply = tgw
        .client(tgw.https(None), Some(&tgw.gw.alice))
        .request(&[], &json!({"jsonrpc":"2.0","id":1,"method":"ping"}))
        .send()
        .await;
    assert!(reply.is_err(), "a token alone is not enough: {reply:?}");
    tgw.wait_log("TLS handshake failed: peer sent no certificates", 1)
        .await;

    // A certificate from the client CA that no [[auth.certificates]] entry maps: TLS is
    // satisfied, and the request authenticates by its bearer token.
    let unmapped = client_ca.client(&["spiffe://example.org/agent/other"], "other");
    let mut c = tgw.client(tgw.https(Some(&unmapped)), Some(&tgw.gw.bob));
    c.initialize().await;
    let mut without_token = c.clone();
    without_token.token = None;
    without_token.session = None;
    let body = json!({"jsonrpc":"2.0","id":1,"method":"ping"});
    let reply = without_token.send(&[], &body).await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    let audit = tgw.gw.audit_at_least(2).await;
    let init = audit
        .iter()
        .find(|r| r["method"] == "initialize" && r["principal"] == "bob")
        .unwrap_or_else(|| panic!("no initialize by bob: {audit:?}"));
    assert_eq!(init["auth_method"], "api_token", "{init}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_from_another_ca_fails_the_handshake_in_both_modes() {
    for mode in ["optional", "required"] {
        let client_ca = Ca::new();
        let tgw = start(Some((mode, &client_ca)), CAROL);
        // Same SPIFFE id and names, signed by a CA the gateway does not know; and by one that
        // even has the trusted CA's name (only its key differs).
        let impostors = [
            (Ca::named("another CA"), "UnknownCA", "UnknownIssuer"),
            (Ca::new(), "DecryptError", "BadSignature"),
        ];
        for (n, (other_ca, alert, logged)) in impostors.iter().enumerate() {
            let impostor = other_ca.client(&[SPIFFE_BOT], "bot");
            let refused = fresh_healthz(&tgw, tgw.rustls(Some(&impostor), &[])).await;
            let error = refused.expect_err("untrusted client certificate");
            assert!(
                error
                    .to_string()
                    .contains(&format!("received fatal alert: {alert}")),
                "{mode}: the gateway refuses in the handshake: {error}"
            );
            let reply = tgw
                .client(tgw.https(Some(&impostor)), Some(&tgw.gw.alice))
                .request(&[], &json!({"jsonrpc":"2.0","id":1,"method":"ping"}))
                .send()
                .await;
            assert!(reply.is_err(), "{mode}: not even with a token: {reply:?}");
            if n == 0 {
                // The first refusal is logged at once (later ones with the next summary).
                tgw.wait_log(
                    &format!("TLS handshake failed: invalid peer certificate: {logged}"),
                    1,
                )
                .await;
            }
        }
        // Nothing reached the HTTP layer: no audit record.
        assert!(tgw.gw.audit().is_empty(), "{mode}: {:?}", tgw.gw.audit());

        // The genuine certificate works.
        let bot = client_ca.client(&[SPIFFE_BOT], "bot");
        fresh_healthz(&tgw, tgw.rustls(Some(&bot), &[]))
            .await
            .unwrap_or_else(|e| panic!("{mode}: genuine certificate refused: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_the_certificate_without_dropping_open_connections() {
    let mut tgw = start(None, "");
    let (mut before, second) = connect_then_replace(&tgw, "gateway-2").await;
    tgw.sighup();
    tgw.wait_log("TLS certificate reloaded on SIGHUP", 1).await;
    tgw.still_running();
    let after = fresh_healthz(&tgw, tgw.rustls(None, &[]))
        .await
        .expect("new connection");
    assert_eq!(
        peer_certificate(&after),
        second.der.to_vec(),
        "a new connection gets the new certificate"
    );
    healthz(&mut before)
        .await
        .expect("the connection opened before the reload keeps working");

    // A bad replacement (a key that belongs to another certificate) keeps the one in use.
    let stranger = tgw.ca.server(&["localhost"], "stranger");
    let mismatched = Issued {
        cert_pem: second.cert_pem.clone(),
        key_pem: stranger.key_pem.clone(),
        der: second.der.clone(),
        key_der: stranger.key_der.clone(),
    };
    write_pair(tgw.files.path(), &mismatched);
    tgw.sighup();
    tgw.wait_log("does not belong to the certificate", 1).await;
    // And a file that is not PEM at all.
    std::fs::write(tgw.files.path().join("cert.pem"), "not a certificate").expect("write");
    tgw.sighup();
    tgw.wait_log("no PEM \"CERTIFICATE\" found", 1).await;
    tgw.still_running();
    let still = fresh_healthz(&tgw, tgw.rustls(None, &[]))
        .await
        .expect("still serving");
    assert_eq!(peer_certificate(&still), second.der.to_vec());
    healthz(&mut before).await.expect("still open");
}

#[tokio::test(flavor = "multi_thread")]
async fn changed_certificate_files_are_reloaded_without_a_signal() {
    let tgw = start(None, "");
    let (mut before, next) = connect_then_replace(&tgw, "gateway-next").await;
    tgw.wait_log("TLS certificate reloaded after its files changed", 1)
        .await;
    assert!(!tgw.gw.stderr_text().contains("SIGHUP: reloading"));
    let after = fresh_healthz(&tgw, tgw.rustls(None, &[]))
        .await
        .expect("new connection");
    assert_eq!(peer_certificate(&after), next.der.to_vec());
    healthz(&mut before)
        .await
        .expect("the connection opened before the reload keeps working");

    // A bad replacement is logged once and the certificate in use stays.
    std::fs::write(
        tgw.files.path().join("key.pem"),
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .expect("write");
    tgw.wait_log("TLS certificate not reloaded", 1).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        tgw.gw
            .stderr_text()
            .matches("TLS certificate not reloaded")
            .count(),
        1,
        "a bad file is reported once, not on every check"
    );
    let still = fresh_healthz(&tgw, tgw.rustls(None, &[]))
        .await
        .expect("still serving");
    assert_eq!(peer_certificate(&still), next.der.to_vec());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_tls_handshake_is_closed_after_the_header_timeout_and_holds_a_slot_meanwhile() {
    let tgw = start_with_limits(
        None,
        "",
        "header_timeout = \"3s\"\nmax_connections = 8\nmax_connections_per_address = 4",
    );
    // TCP connections that never finish a ClientHello, up to the per-address cap (4) from two
    // addresses, so the total cap (8) is reached too.
    let started = Instant::now();
    let mut stalled = Vec::new();
    for source in ["127.0.0.2", "127.0.0.3"] {
        for _ in 0..4 {
            stalled.push(connect_from(source, tgw.addr).await.expect("connect"));
        }
    }
    // Half a ClientHello, then nothing, on one of them.
    stalled[7]
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .expect("write");
    // They count: a fifth connection from 127.0.0.2 is closed at once.
    let mut fifth = connect_from("127.0.0.2", tgw.addr).await.expect("connect");
    assert!(
        closed_within(&mut fifth, Duration::from_millis(1500)).await,
        "stalled handshakes count against the per-address cap"
    );
    // At the total cap, a real client still gets in: the longest-waiting stalled handshake
    // is closed to make room.
    fresh_healthz(&tgw, tgw.rustls(None, &[]))
        .await
        .expect("a real client gets in at the cap");
    assert!(
        closed_within(&mut stalled[0], Duration::from_millis(1500)).await,
        "the oldest stalled handshake made room"
    );
    for s in &mut stalled[1..] {
        assert!(
            closed_within(s, Duration::from_secs(8)).await,
            "a stalled handshake is closed"
        );
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(2800),
        "closed after the header timeout (3 s), not before: {took:?}"
    );
    tgw.wait_log(
        "connection still in its TLS handshake closed to make room",
        1,
    )
    .await;
    tgw.wait_log("TLS handshake not completed in time", 1).await;
    // Their slots are free again.
    for _ in 0..4 {
        let mut tls = tgw
            .connect(tgw.rustls(None, &[]))
            .await
            .expect("slots are free");
        healthz(&mut tls).await.expect("served");
    }
}

#[test]
fn bad_tls_files_stop_the_start_with_an_error_naming_the_file() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let good = ca.server(&["localhost"], "gateway");
    let other = ca.server(&["localhost"], "other");
    let file = |name: &str, text: &str| -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path
    };
    let cert = file("cert.pem", &good.cert_pem);
    let key = file("key.pem", &good.key_pem);
    let wrong_key = file("wrong-key.pem", &other.key_pem);
    let garbage = file("garbage.pem", "hello");
    let missing = dir.path().join("missing.pem");
    let cases: [(&Path, &Path, Option<&Path>, Vec<&Path>); 5] = [
        (&missing, &key, None, vec![&missing]),
        (&garbage, &key, None, vec![&garbage]),
        (&cert, &garbage, None, vec![&garbage]),
        (&cert, &wrong_key, None, vec![&wrong_key, &cert]),
        (&cert, &key, Some(&garbage), vec![&garbage]),
    ];
    let (alice, bob) = (token(), token());
    for (cert, key, client_ca, named) in cases {
        let mut tls = format!(
            "[listen.tls]\ncert = {}\nkey = {}\n",
            toml_path(cert),
            toml_path(key)
        );
        if let Some(ca) = client_ca {
            tls.push_str(&format!("client_ca = {}\n", toml_path(ca)));
        }
        let config = dir.path().join("gateway.toml");
        std::fs::write(&config, format!("{}\n{tls}", preamble(&alice, &bob))).expect("write");
        let out = std::process::Command::new(BIN)
            .args(["gateway", "--config"])
            .arg(&config)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run micromcp");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(!stderr.contains("listening on"), "{stderr}");
        for path in named {
            assert!(
                stderr.contains(&path.display().to_string()),
                "the error names {}: {stderr}",
                path.display()
            );
        }
    }
}

#[test]
fn python_sdk_client_talks_to_the_gateway_over_https_trusting_its_ca() {
    let tgw = start(None, "");
    let ca_file = tgw.ca.pem_file();
    let out = std::process::Command::new(tool("venv/bin/python"))
        .arg(workspace().join("tests/interop/client.py"))
        .arg(&tgw.gw.url)
        .args(["--mode", "legacy", "--token", &tgw.gw.alice])
        .args(["--list-tools", "--call", "echo.echo"])
        .args(["--args", r#"{"text": "python over https"}"#])
        .env("SSL_CERT_FILE", ca_file.path())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run the Python client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let observed: Value = serde_json::from_str(stdout.trim()).expect("json");
    assert_eq!(
        observed["calls"][0]["result"]["content"][0]["text"], "python over https",
        "{observed}"
    );
    // Without the CA, the SDK refuses the gateway's certificate.
    let out = std::process::Command::new(tool("venv/bin/python"))
        .arg(workspace().join("tests/interop/client.py"))
        .arg(&tgw.gw.url)
        .args(["--mode", "legacy", "--token", &tgw.gw.alice, "--list-tools"])
        .env_remove("SSL_CERT_FILE")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run the Python client");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("CERTIFICATE_VERIFY_FAILED"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
