//! Audit: exactly one [`AuditRecord`] per request, allowed, denied or failed.
//!
//! Records are typed, so nothing free-form (and no secret) can slip in: argument values are never
//! recorded, only their size and a keyed hash ([`ArgumentDigest`]); the key is random per gateway
//! process, so equal arguments can be correlated within one run but short values cannot be
//! recovered by hashing guesses. Records go through a channel to one writer task that keeps their
//! order and flushes when idle; [`AuditWriter::finish`] drains everything on shutdown.
//!
//! Records never share a stream with logs ([`AuditDestination`]): logs go to stderr, where
//! anything an upstream writes is logged too, so a reader of the audit stream never has to tell
//! a record from a log line.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use sha2::Sha256;
use tokio::sync::mpsc;

/// How the request ended for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Authorized and forwarded (or answered by the gateway itself).
    Allow,
    /// Refused by authentication, authorization or a transport check.
    Deny,
    /// Allowed, but it failed (upstream error, timeout, unavailable service, bad input).
    Error,
}

/// One audit record. Field names are part of the audit format (`docs/audit.md`).
#[derive(Debug, Clone, Serialize, Default)]
pub struct AuditRecord {
    pub time: String,
    pub request_id: String,
    pub transport: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// How the caller authenticated: `api_token`, `oidc`, `certificate`, `stdio`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_method: Option<&'static str>,
    /// The OIDC issuer that vouched for the caller.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// The `jti` of the caller's token (never the token itself).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    /// A short hash of the session id (the id itself is a handle worth keeping out of logs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jsonrpc_id: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    pub decision: Option<Decision>,
    /// The rule or check that decided (`grants[0]`, `default-deny`, `auth`, `origin`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `ok`, or the JSON-RPC error code / HTTP status that the caller received.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    pub latency_us: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments: Option<ArgumentDigest>,
    /// A call held for a human's approval (or an admin action on one): which approval, and
    /// what became of it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalNote>,
}

/// The approval part of a record (`docs/approvals.md`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ApprovalNote {
    pub id: String,
    /// What became of the approval; absent when the record only read it (admin `show`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<ApprovalOutcome>,
    /// Who decided (an admin principal).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approver: Option<String>,
    /// The approver's reason, as given (bounded, without control characters).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalOutcome {
    /// An approver approved; the call went on.
    Approved,
    /// An approver denied; the call failed.
    Denied,
    /// Nobody decided within `approvals.timeout`; the call failed.
    Expired,
    /// The call ended before a decision (its client went away, or the gateway stopped).
    Voided,
    /// An admin action on the approval was refused (see `rule`); the approval is unchanged.
    Refused,
}

/// What is recorded about request arguments instead of their values.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ArgumentDigest {
    pub bytes: usize,
    pub hmac_sha256: String,
}

/// Where records go, and the key for argument digests.
#[derive(Debug, Clone)]
pub struct AuditLog {
    tx: mpsc::UnboundedSender<Entry>,
    mac: Hmac<Sha256>,
}

#[derive(Debug)]
enum Entry {
    Record(Box<AuditRecord>),
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// The writer thread; [`AuditWriter::finish`] waits for it.
#[derive(Debug)]
pub struct AuditWriter(std::thread::JoinHandle<()>);

impl AuditWriter {
    /// Waits until every record sent before all [`AuditLog`] clones were dropped is written.
    pub async fn finish(self) {
        let thread = self.0;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
}

/// Where audit records go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditDestination {
    /// Standard output: the default when serving HTTP (logs go to stderr).
    Stdout,
    /// A file, appended to and created with mode 0600.
    File(PathBuf),
}

/// Where `micromcp gateway --stdio` writes records by default, relative to the config file's
/// folder: its stdout is the protocol stream and its stderr the log.
pub const DEFAULT_STDIO_FILE: &str = ".micromcp/audit.jsonl";

impl AuditDestination {
    /// The configured file if there is one; otherwise stdout when serving HTTP, and
    /// [`DEFAULT_STDIO_FILE`] beside the config file when serving stdio.
    pub fn resolve(configured: Option<&Path>, stdio: bool, config_dir: &Path) -> Self {
        match configured {
            Some(file) => AuditDestination::File(file.to_owned()),
            None if stdio => AuditDestination::File(config_dir.join(DEFAULT_STDIO_FILE)),
            None => AuditDestination::Stdout,
        }
    }
}

impl std::fmt::Display for AuditDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuditDestination::Stdout => f.write_str("stdout"),
            AuditDestination::File(path) => write!(f, "{}", path.display()),
        }
    }
}

impl AuditLog {
    /// Starts the writer task on `destination` (a file is appended to, created with mode 0600,
    /// its folder created if needed).
    pub fn start(destination: &AuditDestination) -> std::io::Result<(AuditLog, AuditWriter)> {
        let out: Box<dyn Write + Send> = match destination {
            AuditDestination::File(path) => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                let mut options = std::fs::OpenOptions::new();
                options.append(true).create(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                Box::new(options.open(path)?)
            }
            AuditDestination::Stdout => Box::new(std::io::stdout()),
        };
        Self::with_writer(out)
    }

    /// Starts the writer task on `out`. Fails only if the OS gives no randomness for the key
    /// (a known key would let anyone confirm guessed argument values from their digests).
    pub fn with_writer(out: Box<dyn Write + Send>) -> std::io::Result<(AuditLog, AuditWriter)> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| {
            std::io::Error::other(format!("no randomness for the audit digest key: {e}"))
        })?;
        // Keyed once; each digest clones the keyed state instead of hashing the key again.
        let mac =
            <Hmac<Sha256> as KeyInit>::new_from_slice(&key).expect("HMAC takes keys of any length");
        // A thread of its own: file writes block, and must not take a runtime worker with them.
        let thread = std::thread::Builder::new()
            .name("micromcp-audit".into())
            .spawn(move || write_records(rx, out))
            .expect("the audit writer thread starts");
        Ok((AuditLog { tx, mac }, AuditWriter(thread)))
    }

    /// Records one request. Never blocks; the time is stamped here.
    pub fn record(&self, mut record: AuditRecord) {
        record.time = humantime::format_rfc3339_micros(SystemTime::now()).to_string();
        if self.tx.send(Entry::Record(Box::new(record))).is_err() {
            eprintln!("micromcp: audit writer has stopped; a record was lost");
        }
    }

    /// Waits until every record sent before this call is written and flushed.
    pub async fn flush(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.tx.send(Entry::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Size and keyed hash of a JSON value (e.g. tool arguments).
    pub fn digest(&self, value: &impl serde::Serialize) -> ArgumentDigest {
        let bytes = serde_json::to_vec(value).unwrap_or_default();
        ArgumentDigest {
            bytes: bytes.len(),
            hmac_sha256: hex::encode(self.mac(&bytes)),
        }
    }

    /// A short, non-reversible label for a session id.
    pub fn session_label(&self, session_id: &str) -> String {
        hex::encode(&self.mac(session_id.as_bytes())[..6])
    }

    /// HMAC-SHA256 of `bytes` under this process's key.
    fn mac(&self, bytes: &[u8]) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(bytes);
        mac.finalize().into_bytes().into()
    }
}

/// Under load, the writer waits this long after a batch before taking the next, so records
/// gather into batches instead of waking the thread once per request (a context switch each,
/// the biggest cost of a proxied call on a small machine). An idle writer starts at once.
const LINGER: Duration = Duration::from_millis(2);

/// Writes records in order, in batches of whatever has queued up, flushing after each batch.
fn write_records(mut rx: mpsc::UnboundedReceiver<Entry>, mut out: Box<dyn Write + Send>) {
    let mut batch = Vec::new();
    let mut last_batch = Instant::now().checked_sub(LINGER);
    while let Some(first) = rx.blocking_recv() {
        if let Some(since) = last_batch.map(|t| t.elapsed())
            && since < LINGER
        {
            std::thread::sleep(LINGER - since);
        }
        last_batch = Some(Instant::now());
        batch.push(first);
        while batch.len() < 256 {
            match rx.try_recv() {
                Ok(entry) => batch.push(entry),
                Err(_) => break,
            }
        }
        let mut buf = Vec::with_capacity(batch.len() * 256);
        let mut flushed = Vec::new();
        for entry in batch.drain(..) {
            match entry {
                Entry::Record(record) => {
                    if serde_json::to_writer(&mut buf, &record).is_ok() {
                        buf.push(b'\n');
                    }
                }
                Entry::Flush(done) => flushed.push(done),
            }
        }
        let written = out.write_all(&buf).and_then(|()| out.flush());
        if let Err(e) = written {
            eprintln!("micromcp: cannot write audit records: {e}");
        }
        for done in flushed {
            let _ = done.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// RFC 4231 test case 2 (a key shorter than the block is zero-padded, so "Jefe" followed by
    /// zero bytes is the same key): the digest is a real HMAC, not a hash of key || message.
    #[test]
    fn argument_digests_are_hmac_sha256() {
        let (log, _writer) = AuditLog::with_writer(Box::new(std::io::sink())).expect("audit");
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(b"Jefe");
        let log = AuditLog {
            mac: <Hmac<Sha256> as KeyInit>::new_from_slice(&key).expect("key"),
            ..log
        };
        assert_eq!(
            hex::encode(log.mac(b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn audit_and_logs_never_share_a_stream_by_default() {
        let dir = Path::new("/etc/micromcp");
        assert_eq!(
            AuditDestination::resolve(None, false, dir),
            AuditDestination::Stdout,
            "HTTP: logs are on stderr"
        );
        assert_eq!(
            AuditDestination::resolve(None, true, dir),
            AuditDestination::File(dir.join(".micromcp/audit.jsonl")),
            "stdio: stdout is the protocol"
        );
        let configured = Path::new("/var/log/audit.jsonl");
        for stdio in [false, true] {
            assert_eq!(
                AuditDestination::resolve(Some(configured), stdio, dir),
                AuditDestination::File(configured.to_owned())
            );
        }
    }

    #[test]
    fn a_file_destination_is_created_private_with_its_folder() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(".micromcp/audit.jsonl");
        let (log, writer) =
            AuditLog::start(&AuditDestination::File(path.clone())).expect("audit file");
        drop((log, writer));
        let mode = std::fs::metadata(&path)
            .expect("created")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn every_record_is_written_in_order_before_finish_returns() {
        let sink = Shared::default();
        let (log, writer) = AuditLog::with_writer(Box::new(sink.clone())).expect("audit");
        for i in 0..1000 {
            log.record(AuditRecord {
                request_id: format!("r{i}"),
                status: "ok".into(),
                ..Default::default()
            });
        }
        drop(log);
        writer.finish().await;
        let text = String::from_utf8(sink.0.lock().expect("lock").clone()).expect("utf8");
        let ids: Vec<String> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).expect("json")["request_id"]
                    .as_str()
                    .expect("id")
                    .to_owned()
            })
            .collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids.iter().enumerate().all(|(i, id)| *id == format!("r{i}")));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn digests_hide_values_and_are_keyed() {
        let (a, _wa) = AuditLog::with_writer(Box::new(std::io::sink())).expect("audit");
        let (b, _wb) = AuditLog::with_writer(Box::new(std::io::sink())).expect("audit");
        let v = serde_json::json!({"password": "hunter2"});
        let da = a.digest(&v);
        assert_eq!(da, a.digest(&v));
        assert_ne!(da.hmac_sha256, b.digest(&v).hmac_sha256);
        assert!(
            !serde_json::to_string(&da)
                .expect("json")
                .contains("hunter2")
        );
    }
}
