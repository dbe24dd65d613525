//! The approval webhook: a signed POST for each new pending approval, so a chat bot or a
//! ticketing system can ask someone to decide.
//!
//! - Body (JSON): `{"type": "approval.pending", "approval": {id, tool, requester,
//!   arguments_sha256, created, expires, policies}}`; the arguments themselves only with
//!   `include_arguments = true` (they may hold what the webhook's receiver should not see).
//! - Header `X-Micromcp-Signature: t=<unix seconds>,sha256=<hex>`, the HMAC-SHA256 under
//!   `approvals.webhook.secret` of `"<t>.<body>"`. Receivers check it in constant time and
//!   refuse a `t` far from their clock (a replayed delivery). Each attempt is signed anew.
//! - Delivery never holds up the call: [`Webhook::notify`] queues (at most [`QUEUE`]
//!   deliveries waiting; beyond, the delivery is dropped and logged) and a task sends. A
//!   delivery is tried up to [`ATTEMPTS`] times, waiting 1 s, 2 s, 4 s… between tries, until
//!   the receiver answers 2xx; each try has [`ATTEMPT_TIMEOUT`]. No proxy, no redirects.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use micromcp_config::Secret;
use serde_json::json;
use sha2::Sha256;
use tokio::sync::{Semaphore, mpsc};

use super::PendingCall;

/// Deliveries waiting to be sent; one more is dropped (and logged).
pub const QUEUE: usize = 256;
/// Tries per delivery.
pub const ATTEMPTS: u32 = 5;
/// The wait before the second try; it doubles for each further one.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Time for one try (connect, send, answer).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Deliveries in flight at once.
const CONCURRENT: usize = 4;
/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "x-micromcp-signature";

/// The sending side; the task that delivers runs until this is dropped.
#[derive(Debug)]
pub struct Webhook {
    tx: mpsc::Sender<Vec<u8>>,
    include_arguments: bool,
}

impl Webhook {
    /// Starts the delivery task (inside a Tokio runtime).
    pub fn start(settings: &micromcp_config::Webhook) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let target = Target {
            url: settings.url.clone(),
            secret: settings.secret.clone(),
            http: client(),
        };
        tokio::spawn(deliver_all(Arc::new(target), rx));
        Self {
            tx,
            include_arguments: settings.include_arguments,
        }
    }

    /// Queues the announcement of a new pending approval; never waits.
    pub fn notify(&self, call: &PendingCall) {
        let body = json!({
            "type": "approval.pending",
            "approval": call.to_json(self.include_arguments),
        });
        if self.tx.try_send(body.to_string().into_bytes()).is_err() {
            tracing::warn!(
                approval = %call.id,
                "approval webhook: {QUEUE} deliveries are already waiting; this one is dropped"
            );
        }
    }
}

/// `t=<unix>,sha256=<hex of HMAC-SHA256(secret, "<unix>.<body>")>`.
pub fn signature(secret: &[u8], unix: u64, body: &[u8]) -> String {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(unix.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "t={unix},sha256={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

struct Target {
    url: url::Url,
    secret: Secret,
    http: Option<reqwest::Client>,
}

fn client() -> Option<reqwest::Client> {
    // reqwest is built without a crypto provider; `Err` = one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .referer(false)
        .connect_timeout(ATTEMPT_TIMEOUT)
        .timeout(ATTEMPT_TIMEOUT)
        .user_agent(concat!("micromcp/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| tracing::warn!("approval webhook disabled: no HTTP client: {e}"))
        .ok()
}

async fn deliver_all(target: Arc<Target>, mut rx: mpsc::Receiver<Vec<u8>>) {
    let slots = Arc::new(Semaphore::new(CONCURRENT));
    while let Some(body) = rx.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let target = target.clone();
        tokio::spawn(async move {
            deliver(&target, &body).await;
            drop(slot);
        });
    }
}

/// Tries one delivery up to [`ATTEMPTS`] times with exponential backoff.
async fn deliver(target: &Target, body: &[u8]) {
    let Some(http) = &target.http else { return };
    let mut backoff = FIRST_BACKOFF;
    for attempt in 1..=ATTEMPTS {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let sent = http
            .post(target.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(
                SIGNATURE_HEADER,
                signature(target.secret.expose().as_bytes(), unix, body),
            )
            .body(body.to_vec())
            .send()
            .await;
        let failure = match sent {
            Ok(r) if r.status().is_success() => return,
            Ok(r) => format!("HTTP {}", r.status().as_u16()),
            Err(e) if e.is_timeout() => format!("no answer within {ATTEMPT_TIMEOUT:?}"),
            Err(e) if e.is_connect() => "cannot connect".into(),
            Err(_) => "the request failed".into(),
        };
        if attempt == ATTEMPTS {
            tracing::warn!(
                url = %target.url,
                "approval webhook: giving up after {ATTEMPTS} attempts ({failure})"
            );
            return;
        }
        tracing::info!(
            url = %target.url,
            "approval webhook: attempt {attempt} failed ({failure}); retrying in {backoff:?}"
        );
        tokio::time::sleep(backoff).await;
        backoff *= 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_over_timestamp_dot_body() {
        // Computed independently: printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac 0123456789abcdef
        assert_eq!(
            signature(b"0123456789abcdef", 1_700_000_000, br#"{"a":1}"#),
            "t=1700000000,sha256=9eb18f493f8ec135d9eb2dad817c369bb4e9cbfa818657897a7437c1cd8c3a23"
        );
    }
}
