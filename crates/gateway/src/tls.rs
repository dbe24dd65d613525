//! TLS on the client listener (`[listen.tls]`): rustls, TLS 1.2 and 1.3, ALPN `http/1.1`.
//!
//! - The certificate chain and key are read at start (a bad file stops the start with an error
//!   that names it) and reloaded on SIGHUP ([`ServerTls::reload`]) or when their contents change
//!   ([`ServerTls::watch`]). New handshakes get the new certificate; connections already open
//!   keep theirs. A reload that fails (unreadable PEM, a key that does not match the
//!   certificate) keeps the certificate in use and logs an error.
//! - With `client_ca`, client certificates are verified against those roots (webpki, which
//!   also wants the clientAuth extended key usage): `optional` accepts connections without a
//!   certificate, `required` fails their handshake. A presented certificate that does not
//!   verify fails the handshake in both modes. The CA file is read at start only.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use micromcp_config::{ClientAuth, Tls};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};

/// How often [`ServerTls::watch`] looks at the certificate and key files.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(2);
/// Certificate, key and CA files larger than this are refused (they are read on every watch).
const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// A problem with a TLS file; the message names the file.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

/// The listener's TLS configuration and the certificate it presents, which can be reloaded.
#[derive(Debug)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
    certificate: Arc<CertificateFiles>,
}

impl ServerTls {
    /// Reads the certificate, key and client CA files of `[listen.tls]`.
    pub fn load(tls: &Tls) -> Result<ServerTls, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certificate = Arc::new(CertificateFiles::load(
            tls.cert.clone(),
            tls.key.clone(),
            provider.clone(),
        )?);
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError(format!("TLS protocol versions: {e}")))?;
        let builder = match (&tls.client_ca, tls.client_auth) {
            (Some(ca), ClientAuth::Optional | ClientAuth::Required) => {
                let roots = client_roots(ca)?;
                let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider);
                let verifier = if tls.client_auth == ClientAuth::Optional {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                let verifier = verifier.build().map_err(|e| {
                    TlsError(format!(
                        "cannot verify client certificates with {}: {e}",
                        ca.display()
                    ))
                })?;
                builder.with_client_cert_verifier(verifier)
            }
            _ => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(certificate.clone());
        // HTTP/1.1 only (docs/adr/0006): a client that offers only h2 is refused in the handshake.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ServerTls {
            config: Arc::new(config),
            certificate,
        })
    }

    /// For the accept loop.
    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.clone())
    }

    /// Reads the certificate and key files again now (SIGHUP). On success new handshakes
    /// present what they hold; on failure the certificate in use stays and the error is logged.
    pub fn reload(&self) {
        self.certificate.reload(Trigger::Signal);
    }

    /// Reloads the certificate and key when their contents change, checking every
    /// [`WATCH_INTERVAL`]. A change is applied once the files have been the same for one
    /// interval, so a certificate and key written one after the other are read as a pair.
    pub async fn watch(self: Arc<Self>) {
        let mut every = tokio::time::interval(WATCH_INTERVAL);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            every.tick().await;
            let files = self.certificate.clone();
            let _ = tokio::task::spawn_blocking(move || files.reload(Trigger::Watch)).await;
        }
    }

    /// The SHA-256 fingerprint (hex) of the end-entity certificate new handshakes get.
    pub fn fingerprint(&self) -> String {
        let current = self.certificate.current();
        fingerprint(current.cert.first().map_or(&[][..], |c| c.as_ref()))
    }
}

/// Who asked for a reload.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Signal,
    Watch,
}

/// The certificate chain and key from their files, swapped as a whole on reload.
#[derive(Debug)]
struct CertificateFiles {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    watch: Mutex<WatchState>,
}

/// What the watcher has seen: digests of the two files' contents together.
#[derive(Debug)]
struct WatchState {
    /// The files now in use.
    loaded: [u8; 32],
    /// Changed contents seen once, applied when seen again unchanged.
    pending: Option<[u8; 32]>,
    /// Contents that failed to load (not retried, and not logged again, until they change).
    failed: Option<[u8; 32]>,
    /// The watcher could not read a file and said so (said again only after a good read).
    unreadable: bool,
}

impl CertificateFiles {
    fn load(
        cert: PathBuf,
        key: PathBuf,
        provider: Arc<CryptoProvider>,
    ) -> Result<CertificateFiles, TlsError> {
        let (cert_pem, key_pem) = (read_pem(&cert)?, read_pem(&key)?);
        let certified = certified_key(&cert, &cert_pem, &key, &key_pem, &provider)?;
        Ok(CertificateFiles {
            watch: Mutex::new(WatchState {
                loaded: digest(&cert_pem, &key_pem),
                pending: None,
                failed: None,
                unreadable: false,
            }),
            current: RwLock::new(Arc::new(certified)),
            cert,
            key,
            provider,
        })
    }

    fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn reload(&self, trigger: Trigger) {
        let mut state = self.watch.lock().unwrap_or_else(PoisonError::into_inner);
        let read = read_pem(&self.cert).and_then(|c| Ok((c, read_pem(&self.key)?)));
        let (cert_pem, key_pem) = match read {
            Ok(files) => files,
            Err(e) => {
                // A file being replaced can be missing for a moment: the watcher tries again,
                // and says so once.
                if trigger == Trigger::Signal || !state.unreadable {
                    tracing::error!(target: "micromcp::tls", "TLS certificate not reloaded, the one in use stays: {e}");
                }
                state.unreadable = true;
                return;
            }
        };
        state.unreadable = false;
        let seen = digest(&cert_pem, &key_pem);
        if trigger == Trigger::Watch {
            if seen == state.loaded || state.failed == Some(seen) {
                state.pending = None;
                return;
            }
            if state.pending != Some(seen) {
                state.pending = Some(seen);
                return;
            }
        }
        state.pending = None;
        match certified_key(&self.cert, &cert_pem, &self.key, &key_pem, &self.provider) {
            Ok(certified) => {
                let print = fingerprint(certified.cert.first().map_or(&[][..], |c| c.as_ref()));
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(certified);
                state.loaded = seen;
                state.failed = None;
                let why = match trigger {
                    Trigger::Signal => "on SIGHUP",
                    Trigger::Watch => "after its files changed",
                };
                tracing::info!(target: "micromcp::tls", "TLS certificate reloaded {why} from {} (SHA-256 {print})", self.cert.display());
            }
            Err(e) => {
                state.failed = Some(seen);
                tracing::error!(target: "micromcp::tls", "TLS certificate not reloaded, the one in use stays: {e}");
            }
        }
    }
}

impl ResolvesServerCert for CertificateFiles {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

fn read_pem(path: &Path) -> Result<Vec<u8>, TlsError> {
    let fail = |e: String| TlsError(format!("cannot read {}: {e}", path.display()));
    let file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(file, MAX_PEM_BYTES + 1),
        &mut bytes,
    )
    .map_err(|e| fail(e.to_string()))?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(fail(format!("larger than {MAX_PEM_BYTES} bytes")));
    }
    Ok(bytes)
}

/// The chain of `cert_pem` and the key of `key_pem`, checked to belong together.
fn certified_key(
    cert: &Path,
    cert_pem: &[u8],
    key: &Path,
    key_pem: &[u8],
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain = certificates(cert, cert_pem)?;
    let private = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| {
        TlsError(format!(
            "{}: no private key found (expected an unencrypted PEM \"PRIVATE KEY\", \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\")",
            key.display()
        ))
    })?;
    CertifiedKey::from_der(chain, private, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsError(format!(
            "the key in {} does not belong to the certificate in {}",
            key.display(),
            cert.display()
        )),
        e => TlsError(format!(
            "cannot use the certificate in {} with the key in {}: {e}",
            cert.display(),
            key.display()
        )),
    })
}

/// Every certificate of a PEM file (at least one).
fn certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError(format!("{}: not valid PEM: {e}", path.display())))?;
    if chain.is_empty() {
        return Err(TlsError(format!(
            "{}: no PEM \"CERTIFICATE\" found",
            path.display()
        )));
    }
    Ok(chain)
}

fn client_roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(path, &read_pem(path)?)? {
        roots.add(cert).map_err(|e| {
            TlsError(format!(
                "{}: not a usable CA certificate: {e}",
                path.display()
            ))
        })?;
    }
    Ok(Arc::new(roots))
}

fn digest(cert_pem: &[u8], key_pem: &[u8]) -> [u8; 32] {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    context.update(&(cert_pem.len() as u64).to_be_bytes());
    context.update(cert_pem);
    context.update(key_pem);
    let mut out = [0u8; 32];
    out.copy_from_slice(context.finish().as_ref());
    out
}

fn fingerprint(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use micromcp_testkit::tls::{Ca, Issued};

    fn testdata(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata")
            .join(name)
    }

    fn tls(cert: PathBuf, key: PathBuf) -> Tls {
        Tls {
            cert,
            key,
            client_ca: None,
            client_auth: ClientAuth::None,
        }
    }

    fn write(dir: &Path, issued: &Issued) -> (PathBuf, PathBuf) {
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, &issued.cert_pem).expect("write");
        std::fs::write(&key, &issued.key_pem).expect("write");
        (cert, key)
    }

    fn error(tls: &Tls) -> String {
        ServerTls::load(tls).expect_err("refused").to_string()
    }

    #[test]
    fn loads_pkcs8_pkcs1_and_sec1_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = write(dir.path(), &Ca::new().server(&["localhost"], "pkcs8"));
        ServerTls::load(&tls(cert, key)).expect("PKCS#8 (P-256)");
        for name in ["rsa-pkcs1", "ec-sec1"] {
            let files = tls(
                testdata(&format!("{name}.cert.pem")),
                testdata(&format!("{name}.key.pem")),
            );
            ServerTls::load(&files).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn bad_files_are_refused_with_their_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::new();
        let (cert, key) = write(dir.path(), &ca.server(&["localhost"], "a"));
        let missing = dir.path().join("missing.pem");
        assert!(error(&tls(missing.clone(), key.clone())).contains(&missing.display().to_string()));

        let other_key = dir.path().join("other.key.pem");
        std::fs::write(&other_key, ca.server(&["localhost"], "b").key_pem).expect("write");
        let e = error(&tls(cert.clone(), other_key.clone()));
        assert!(e.contains("does not belong"), "{e}");
        assert!(
            e.contains(&other_key.display().to_string()) && e.contains(&cert.display().to_string()),
            "{e}"
        );

        // A key where the certificate should be, and the other way round.
        let e = error(&tls(key.clone(), key.clone()));
        assert!(e.contains("no PEM \"CERTIFICATE\""), "{e}");
        let e = error(&tls(cert.clone(), cert.clone()));
        assert!(e.contains("no private key"), "{e}");

        let encrypted = dir.path().join("encrypted.pem");
        std::fs::write(
            &encrypted,
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
        )
        .expect("write");
        assert!(error(&tls(cert.clone(), encrypted)).contains("unencrypted"));

        let huge = dir.path().join("huge.pem");
        std::fs::write(&huge, vec![b'a'; 2 * 1024 * 1024]).expect("write");
        assert!(error(&tls(huge, key.clone())).contains("larger than"));

        let mut with_ca = tls(cert, key.clone());
        with_ca.client_ca = Some(key);
        with_ca.client_auth = ClientAuth::Required;
        assert!(error(&with_ca).contains("no PEM \"CERTIFICATE\""));
    }

    #[test]
    fn the_watcher_applies_a_change_once_it_is_stable_and_skips_known_bad_contents() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::new();
        let first = ca.server(&["localhost"], "first");
        let (cert, key) = write(dir.path(), &first);
        let server = ServerTls::load(&tls(cert.clone(), key.clone())).expect("load");
        let in_use = || server.certificate.current().cert[0].to_vec();
        assert_eq!(in_use(), first.der.to_vec());

        let second = ca.server(&["localhost"], "second");
        write(dir.path(), &second);
        server.certificate.reload(Trigger::Watch);
        assert_eq!(in_use(), first.der.to_vec(), "seen once: not applied yet");
        server.certificate.reload(Trigger::Watch);
        assert_eq!(in_use(), second.der.to_vec(), "the same twice: applied");

        // The certificate is replaced before its key: a pair that does not match yet.
        let third = ca.server(&["localhost"], "third");
        std::fs::write(&cert, &third.cert_pem).expect("write");
        server.certificate.reload(Trigger::Watch);
        server.certificate.reload(Trigger::Watch);
        assert_eq!(
            in_use(),
            second.der.to_vec(),
            "a bad pair keeps the one in use"
        );
        let failed = server.certificate.watch.lock().expect("lock").failed;
        assert!(failed.is_some());
        server.certificate.reload(Trigger::Watch);
        assert_eq!(
            server.certificate.watch.lock().expect("lock").pending,
            None,
            "known bad: not retried"
        );

        std::fs::write(&key, &third.key_pem).expect("write");
        server.certificate.reload(Trigger::Watch);
        server.certificate.reload(Trigger::Watch);
        assert_eq!(in_use(), third.der.to_vec());

        // SIGHUP applies at once.
        let fourth = ca.server(&["localhost"], "fourth");
        write(dir.path(), &fourth);
        server.reload();
        assert_eq!(in_use(), fourth.der.to_vec());
        assert_eq!(server.fingerprint(), fingerprint(&fourth.der));
    }
}
