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
        Self::with_backoff(settings, FIRST_BACKOFF)
    }

    fn with_backoff(settings: &micromcp_config::Webhook, first_backoff: Duration) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let target = Target {
            url: settings.url.clone(),
            secret: settings.secret.clone(),
            http: client(),
            first_backoff,
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
    first_backoff: Duration,
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
    let mut backoff = target.first_backoff;
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
    use std::sync::Mutex;

    use axum::http::{HeaderMap, StatusCode};
    use serde_json::Value;

    use super::*;
    use crate::approvals::{PendingCall, Requester};

    const SECRET: &str = "webhook-test-secret-0123456789";

    #[test]
    fn the_signature_is_hmac_sha256_over_timestamp_dot_body() {
        // Computed independently: printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac 0123456789abcdef
        assert_eq!(
            signature(b"0123456789abcdef", 1_700_000_000, br#"{"a":1}"#),
            "t=1700000000,sha256=9eb18f493f8ec135d9eb2dad817c369bb4e9cbfa818657897a7437c1cd8c3a23"
        );
    }

    /// What a receiver got: the signature header and the body.
    type Delivery = (Option<String>, Vec<u8>);

    /// A real HTTP receiver on loopback: answers with `statuses` in turn (then 200) and keeps
    /// every delivery (signature header, body).
    struct Receiver {
        url: String,
        seen: Arc<Mutex<Vec<Delivery>>>,
    }

    async fn receiver(statuses: Vec<u16>) -> Receiver {
        let seen: Arc<Mutex<Vec<Delivery>>> = Arc::default();
        let statuses = Arc::new(Mutex::new(statuses.into_iter()));
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post({
                let seen = seen.clone();
                move |headers: HeaderMap, body: axum::body::Bytes| async move {
                    let signature = headers
                        .get(SIGNATURE_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    seen.lock().expect("lock").push((signature, body.to_vec()));
                    let status = statuses.lock().expect("lock").next().unwrap_or(200);
                    StatusCode::from_u16(status).expect("status")
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { url, seen }
    }

    impl Receiver {
        async fn wait_for(&self, n: usize) -> Vec<Delivery> {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                let seen = self.seen.lock().expect("lock").clone();
                if seen.len() >= n || tokio::time::Instant::now() > deadline {
                    return seen;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    fn settings(url: &str, include_arguments: bool) -> micromcp_config::Webhook {
        micromcp_config::Webhook {
            url: url.parse().expect("url"),
            secret: Secret::new(SECRET),
            include_arguments,
        }
    }

    fn pending() -> PendingCall {
        let created = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        PendingCall {
            id: "apr_0123456789abcdef01234567".into(),
            method: "tools/call".into(),
            tool: "bank.refund".into(),
            arguments: json!({ "order": "A-17", "amount": 250 }),
            arguments_sha256: crate::approvals::arguments_sha256(
                &json!({ "order": "A-17", "amount": 250 }),
            ),
            requester: Requester {
                user: "alice".into(),
                agent: Some("bot".into()),
                tenant: None,
            },
            created,
            expires: created + Duration::from_secs(600),
            policies: vec!["refunds".into()],
        }
    }

    /// Checks a delivery as a receiver would, with another HMAC implementation (ring): the
    /// header's timestamp is recent and its MAC covers "<t>.<body>".
    fn verified(signature: Option<&str>, body: &[u8]) -> Value {
        let signature = signature.expect("signed");
        let (t, mac) = signature
            .strip_prefix("t=")
            .and_then(|rest| rest.split_once(",sha256="))
            .expect("t=…,sha256=…");
        let t: u64 = t.parse().expect("unix seconds");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        assert!(now.abs_diff(t) < 60, "fresh timestamp");
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
        let signed = [format!("{t}.").as_bytes(), body].concat();
        ring::hmac::verify(&key, &signed, &hex::decode(mac).expect("hex")).expect("valid MAC");
        let mut tampered = signed.clone();
        *tampered.last_mut().expect("body") ^= 1;
        assert!(ring::hmac::verify(&key, &tampered, &hex::decode(mac).expect("hex")).is_err());
        serde_json::from_slice(body).expect("JSON body")
    }

    #[tokio::test]
    async fn deliveries_are_signed_retried_until_accepted_and_leave_out_the_arguments() {
        let r = receiver(vec![503, 500]).await;
        let hook = Webhook::with_backoff(&settings(&r.url, false), Duration::from_millis(20));
        hook.notify(&pending());
        let seen = r.wait_for(3).await;
        assert_eq!(seen.len(), 3, "two failures, then delivered");
        for (signature, body) in &seen {
            let v = verified(signature.as_deref(), body);
            assert_eq!(v["type"], "approval.pending");
            let a = &v["approval"];
            assert_eq!(a["id"], "apr_0123456789abcdef01234567");
            assert_eq!(a["tool"], "bank.refund");
            assert_eq!(a["requester"]["user"], "alice");
            assert_eq!(a["requester"]["agent"], "bot");
            assert_eq!(a["arguments_sha256"], pending().arguments_sha256);
            assert_eq!(a["created"], "2023-11-14T22:13:20Z");
            assert_eq!(a["expires"], "2023-11-14T22:23:20Z");
            assert!(
                a.get("arguments").is_none(),
                "arguments only when configured"
            );
            assert!(!String::from_utf8_lossy(body).contains("A-17"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(r.seen.lock().expect("lock").len(), 3, "nothing after a 2xx");
    }

    #[tokio::test]
    async fn arguments_are_sent_when_configured() {
        let r = receiver(vec![]).await;
        let hook = Webhook::with_backoff(&settings(&r.url, true), Duration::from_millis(20));
        hook.notify(&pending());
        let seen = r.wait_for(1).await;
        let v = verified(seen[0].0.as_deref(), &seen[0].1);
        assert_eq!(v["approval"]["arguments"], pending().arguments);
    }

    #[tokio::test]
    async fn a_receiver_that_keeps_failing_gets_a_bounded_number_of_attempts() {
        let r = receiver(vec![500; 50]).await;
        let hook = Webhook::with_backoff(&settings(&r.url, false), Duration::from_millis(5));
        hook.notify(&pending());
        // 5 + 10 + 20 + 40 ms of backoff; then give up.
        let seen = r.wait_for(ATTEMPTS as usize).await;
        assert_eq!(seen.len(), ATTEMPTS as usize);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            r.seen.lock().expect("lock").len(),
            ATTEMPTS as usize,
            "no attempt after the last"
        );
    }

    #[tokio::test]
    async fn notifying_never_waits_even_when_the_receiver_is_unreachable() {
        // Nothing listens here (a port just closed): every delivery fails to connect.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr")
        };
        let hook = Webhook::with_backoff(
            &settings(&format!("http://{closed}/hook"), false),
            Duration::from_secs(60),
        );
        let started = std::time::Instant::now();
        for _ in 0..(QUEUE * 2) {
            hook.notify(&pending());
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "a full queue drops, it does not wait"
        );
    }
}
