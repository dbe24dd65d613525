//! The client-facing TCP listener: limits that hold before a single byte is parsed.
//!
//! Nobody without a token may exhaust file descriptors, memory or tasks:
//! - at most `listen.max_connections_per_address` open connections from one IPv4 address or
//!   one IPv6 /64 (one host usually owns a whole /64); one beyond is closed as soon as it is
//!   accepted;
//! - at most `listen.max_connections` in total. At that cap a new connection does not lock
//!   everyone out: the connection that has waited longest for a request (idle, or still
//!   sending a slow head) is closed to make room. Connections with a request in progress —
//!   including open SSE streams — are never closed for room, so many addresses holding idle
//!   sockets cannot deny service, and only when every connection is busy is the new one refused;
//! - request headers must arrive within `listen.header_timeout`, counted from the moment the
//!   connection is ready for a request (hyper's header read timer): slow headers (slowloris)
//!   and idle keep-alive connections are both closed when it runs out;
//! - request heads are at most [`MAX_HEADER_BYTES`] (431 beyond);
//! - HTTP/1.1 only (docs/adr/0006): there is no second authority (`:authority`) that could
//!   disagree with the `Host` header that [`crate::http`] checks;
//! - with `[listen.tls]`, the TLS handshake ([`crate::tls`]) runs in the connection's task
//!   after it is admitted, within `listen.header_timeout`; a connection still in its handshake
//!   counts as waiting for a request. The client certificate it verified, if any, goes with
//!   every request of the connection as a request extension.
//!
//! Concurrent requests are bounded by connections (HTTP/1.1 serves one request at a time per
//! connection, and pipelined requests wait their turn).
//!
//! What this layer refuses has no HTTP request to audit (a connection over a limit, headers
//! that never completed): those refusals are counted and logged at most once per
//! [`REFUSAL_LOG_INTERVAL`] with their counts. Requests that hyper itself refuses after reading
//! them (malformed HTTP: 400; headers too large: 431) are audited like every other request. A
//! client that goes away mid-request was not refused: that is a debug line only.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use micromcp_auth::ClientCertificate;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use crate::Gateway;
use crate::session::lock;
use crate::tls::ServerTls;

/// Largest request head (request line and headers) a client may send.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Refusals are logged with their counts at most this often.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Pause after a failed `accept` (out of file descriptors, say) before the next one.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);

/// Serves HTTP/1.1 on `listener` — over TLS when `tls` is given — until `shutdown` resolves,
/// then waits for open connections to finish (the caller bounds that wait with
/// `gateway.shutdown_grace`).
pub async fn serve(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listen = &gateway.config.listen;
    let limits = Arc::new(ConnectionLimits::new(
        listen.max_connections,
        listen.max_connections_per_address,
    ));
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(listen.header_timeout)
        .max_header_size(MAX_HEADER_BYTES);
    let http1 = Arc::new(http1);
    let router = crate::http::router(gateway.clone());
    let acceptor = tls.as_deref().map(ServerTls::acceptor);
    tokio::pin!(shutdown);
    let mut summary = tokio::time::interval(REFUSAL_LOG_INTERVAL);
    summary.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = summary.tick() => {
                gateway.refusals.flush();
                continue;
            }
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    gateway.refusals.count(&format!("accept failed: {e}"));
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let permit = match limits.admit(peer.ip()) {
            Ok(permit) => permit,
            Err(limit) => {
                gateway.refusals.count(limit);
                continue; // dropping `tcp` closes it
            }
        };
        // No Nagle delay: SSE events and small JSON answers must leave at once (with Nagle and
        // the peer's delayed ACK, a response written in pieces stalls for ~40 ms).
        let _ = tcp.set_nodelay(true);
        let connection = Connection {
            gateway: gateway.clone(),
            limits: limits.clone(),
            http1: http1.clone(),
            router: router.clone(),
            permit,
        };
        match &acceptor {
            None => tokio::spawn(connection.serve(tcp, peer.ip(), None)),
            Some(acceptor) => tokio::spawn(connection.serve_tls(acceptor.clone(), tcp, peer.ip())),
        };
    }
    drop(listener);
    limits.close_all().await;
    Ok(())
}

/// One admitted connection, served by its own task. The permit (its slot in the limits) is
/// held until the task ends.
struct Connection {
    gateway: Arc<Gateway>,
    limits: Arc<ConnectionLimits>,
    http1: Arc<hyper::server::conn::http1::Builder>,
    router: axum::Router,
    permit: Permit,
}

impl Connection {
    /// The TLS handshake, then HTTP/1.1. The handshake must finish within
    /// `listen.header_timeout` (the connection holds a slot meanwhile, and counts as waiting
    /// for a request, so it is also the first to be closed to make room).
    async fn serve_tls(
        self,
        acceptor: tokio_rustls::TlsAcceptor,
        tcp: TcpStream,
        peer: std::net::IpAddr,
    ) {
        let activity = self.permit.activity.clone();
        let timeout = self.gateway.config.listen.header_timeout;
        let handshake = tokio::select! {
            done = tokio::time::timeout(timeout, acceptor.accept(tcp)) => done,
            () = activity.close.notified() => {
                if !self.limits.shutting_down.load(Ordering::Acquire) {
                    self.gateway.refusals.count(
                        "connection still in its TLS handshake closed to make room (listen.max_connections reached)",
                    );
                }
                return;
            }
        };
        let stream = match handshake {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                self.gateway.handshake_failed(&e);
                return;
            }
            Err(_) => {
                self.gateway
                    .refusals
                    .count("TLS handshake not completed in time (listen.header_timeout)");
                return;
            }
        };
        let presented = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first());
        let certificate = match presented.map(|der| ClientCertificate::from_der(der)) {
            None => None,
            Some(Ok(certificate)) => Some(Arc::new(certificate)),
            Some(Err(e)) => {
                tracing::debug!(target: "micromcp::listener", "client certificate not readable: {e}");
                self.gateway
                    .refusals
                    .count("client certificate verified but not readable");
                return;
            }
        };
        self.serve(stream, peer, certificate).await;
    }

    /// Serves HTTP/1.1 on `io` until the client closes, the connection is chosen to make room,
    /// or the gateway shuts down (after the request in progress).
    async fn serve<I>(
        self,
        io: I,
        peer: std::net::IpAddr,
        certificate: Option<Arc<ClientCertificate>>,
    ) where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Connection {
            gateway,
            limits,
            http1,
            router,
            permit,
        } = self;
        let activity = permit.activity.clone();
        let service = TowerToHyperService::new(Tracked {
            router,
            activity: activity.clone(),
            peer,
            certificate,
        });
        let connection = http1.serve_connection(TokioIo::new(io), service);
        let _permit = permit;
        let started = Instant::now();
        tokio::pin!(connection);
        let outcome = loop {
            tokio::select! {
                outcome = connection.as_mut() => break outcome,
                () = activity.close.notified() => {
                    if limits.shutting_down.load(Ordering::Acquire) {
                        // Finish the request in progress, then close.
                        connection.as_mut().graceful_shutdown();
                        break connection.as_mut().await;
                    }
                    // Chosen to make room, but a request started before this task saw it:
                    // that request is kept (nothing runs on the connection while we look).
                    if activity.requests.load(Ordering::Acquire) > 0 {
                        activity.evicting.store(false, Ordering::Release);
                        continue;
                    }
                    gateway.refusals.count(
                        "longest-idle connection closed to make room (listen.max_connections reached)",
                    );
                    return;
                }
            }
        };
        if let Err(e) = outcome {
            gateway.connection_failed(&e, started);
        }
    }
}

impl Gateway {
    /// A connection ended with an error: requests hyper refused after reading them are audited,
    /// a head that did not arrive in time is counted as a refusal, and a client that went away
    /// is only a debug line.
    fn connection_failed(&self, e: &hyper::Error, started: Instant) {
        let refused = if e.is_parse_too_large() {
            Some((431, "header-size", "request headers are too large"))
        } else if e.is_parse() {
            Some((400, "malformed-http", "the request is not valid HTTP/1.1"))
        } else {
            None
        };
        match refused {
            Some((status, rule, reason)) => {
                self.audit_rejection("http", None, None, Some(status), rule, reason, started);
            }
            None if e.is_timeout() => self.refusals.count("request headers not received in time"),
            // The client's doing (it went away mid-request, or reset): nothing was refused.
            None => tracing::debug!(target: "micromcp::listener", "connection ended: {e}"),
        }
    }

    /// A TLS handshake failed: what rustls refused is counted as a refusal (an untrusted or
    /// missing client certificate, no common protocol or ALPN); a client that went away is only
    /// a debug line.
    fn handshake_failed(&self, e: &std::io::Error) {
        match e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            Some(refused) => self
                .refusals
                .count(&format!("TLS handshake failed: {refused}")),
            None => tracing::debug!(target: "micromcp::listener", "TLS handshake ended: {e}"),
        }
    }
}

/// What the listener knows about one open connection: whether an authenticated request is in
/// progress, and since when it has been waiting for one. Only authenticated requests protect a
/// connection from being closed for room: a client without a token that pipelines requests and
/// never reads the answers holds a request "in progress" forever, and must not be able to make
/// every connection look busy.
pub(crate) struct Activity {
    requests: AtomicUsize,
    idle_since: Mutex<Instant>,
    /// Tells the connection's task to close it: at once when chosen to make room (`evicting`),
    /// after its request in progress when the gateway shuts down.
    close: Notify,
    evicting: AtomicBool,
}

/// The router, with each request carrying its connection's [`Activity`] (as a request
/// extension), so the HTTP transport can mark an authenticated request in progress, and the
/// client certificate verified in the connection's TLS handshake, if any.
#[derive(Clone)]
struct Tracked {
    router: axum::Router,
    activity: Arc<Activity>,
    peer: std::net::IpAddr,
    certificate: Option<Arc<ClientCertificate>>,
}

/// One authenticated request in progress on a connection; kept until the response body — an
/// SSE stream, say — has been sent or dropped.
pub(crate) struct Busy(Arc<Activity>);

impl Busy {
    pub(crate) fn new(activity: Arc<Activity>) -> Self {
        activity.requests.fetch_add(1, Ordering::AcqRel);
        Busy(activity)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        *lock(&self.0.idle_since) = Instant::now();
        self.0.requests.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The client's address, on every request of its connection.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub std::net::IpAddr);

impl tower_service::Service<hyper::Request<Incoming>> for Tracked {
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = axum::routing::future::RouteFuture<Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: hyper::Request<Incoming>) -> Self::Future {
        request.extensions_mut().insert(self.activity.clone());
        request.extensions_mut().insert(ClientAddr(self.peer));
        if let Some(certificate) = &self.certificate {
            request.extensions_mut().insert(certificate.clone());
        }
        tower_service::Service::call(&mut self.router, request)
    }
}

/// Open connections, in total and per client address.
struct ConnectionLimits {
    max_total: usize,
    max_per_address: usize,
    open: Mutex<Open>,
    shutting_down: AtomicBool,
}

#[derive(Default)]
struct Open {
    per_address: HashMap<IpAddr, usize>,
    connections: HashMap<u64, Arc<Activity>>,
    next_id: u64,
}

/// One admitted connection; dropping it frees the slot.
struct Permit {
    limits: Arc<ConnectionLimits>,
    address: IpAddr,
    id: u64,
    activity: Arc<Activity>,
}

impl ConnectionLimits {
    fn new(max_total: usize, max_per_address: usize) -> Self {
        Self {
            max_total,
            max_per_address,
            open: Mutex::new(Open::default()),
            shutting_down: AtomicBool::new(false),
        }
    }

    /// Asks every connection to finish its request in progress and close, then waits until
    /// all have (the caller bounds the wait with `gateway.shutdown_grace`).
    async fn close_all(&self) {
        self.shutting_down.store(true, Ordering::Release);
        for activity in lock(&self.open).connections.values() {
            activity.close.notify_one();
        }
        while !lock(&self.open).connections.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Permit, &'static str> {
        let address = address_key(peer);
        let mut open = lock(&self.open);
        if open.per_address.get(&address).copied().unwrap_or(0) >= self.max_per_address {
            return Err(
                "per-address connection limit (listen.max_connections_per_address) reached",
            );
        }
        if open.connections.len() >= self.max_total {
            // Room is made by closing the longest-idle connection (its slot is freed when its
            // task ends, a moment later); with every connection busy, the new one is refused.
            let longest_idle = open
                .connections
                .values()
                .filter(|a| {
                    a.requests.load(Ordering::Acquire) == 0 && !a.evicting.load(Ordering::Acquire)
                })
                .min_by_key(|a| *lock(&a.idle_since));
            let Some(victim) = longest_idle else {
                return Err(
                    "connection limit (listen.max_connections) reached, every connection busy",
                );
            };
            victim.evicting.store(true, Ordering::Release);
            victim.close.notify_one();
        }
        *open.per_address.entry(address).or_insert(0) += 1;
        open.next_id += 1;
        let id = open.next_id;
        let activity = Arc::new(Activity {
            requests: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
            close: Notify::new(),
            evicting: AtomicBool::new(false),
        });
        open.connections.insert(id, activity.clone());
        Ok(Permit {
            limits: self.clone(),
            address,
            id,
            activity,
        })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut open = lock(&self.limits.open);
        open.connections.remove(&self.id);
        if let Some(count) = open.per_address.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                open.per_address.remove(&self.address);
            }
        }
    }
}

/// The address a connection counts against: IPv4 as is (also when it arrives IPv4-mapped on a
/// dual-stack socket), IPv6 by its /64.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
        v4 @ IpAddr::V4(_) => v4,
    }
}

/// Counts refusals that have no request to audit, and logs them at most once per interval.
#[derive(Default)]
pub struct RefusalLog {
    state: Mutex<RefusalState>,
}

#[derive(Default)]
struct RefusalState {
    counts: HashMap<String, u64>,
    last_logged: Option<Instant>,
}

impl RefusalLog {
    /// Counts one refusal; logs the counts so far unless that was done less than an interval ago.
    pub fn count(&self, what: &str) {
        let mut state = lock(&self.state);
        if let Some(n) = state.counts.get_mut(what) {
            *n += 1;
        } else {
            state.counts.insert(what.to_owned(), 1);
        }
        if state
            .last_logged
            .is_none_or(|t| t.elapsed() >= REFUSAL_LOG_INTERVAL)
        {
            Self::log(&mut state);
        }
    }

    /// Logs the counts not logged yet, so a burst followed by silence is still reported.
    fn flush(&self) {
        let mut state = lock(&self.state);
        if !state.counts.is_empty() {
            Self::log(&mut state);
        }
    }

    fn log(state: &mut RefusalState) {
        state.last_logged = Some(Instant::now());
        let mut counts: Vec<(String, u64)> = state.counts.drain().collect();
        counts.sort();
        let summary = counts
            .iter()
            .map(|(what, n)| format!("{n} × {what}"))
            .collect::<Vec<_>>()
            .join("; ");
        tracing::warn!(target: "micromcp::listener", "connections refused before any request (logged at most every {}s): {summary}", REFUSAL_LOG_INTERVAL.as_secs());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_hold_per_address_and_in_total_and_free_on_drop() {
        let limits = Arc::new(ConnectionLimits::new(3, 2));
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        let c: IpAddr = "10.0.0.3".parse().expect("ip");
        let a1 = limits.admit(a).expect("first from a");
        let a2 = limits.admit(a).expect("second from a");
        assert!(
            limits.admit(a).is_err(),
            "third from a is over the per-address limit"
        );
        let b1 = limits.admit(b).expect("b has its own budget");
        // All three busy: at the total cap with nothing idle, a new connection is refused.
        let busy: Vec<Busy> = [&a1, &a2, &b1]
            .iter()
            .map(|p| Busy::new(p.activity.clone()))
            .collect();
        assert!(limits.admit(c).is_err(), "every connection busy: refused");
        drop(busy);
        drop(a1);
        let _a3 = limits.admit(a).expect("a slot was freed");
        assert_eq!(lock(&limits.open).connections.len(), 3);
        drop(a2);
        drop(b1);
    }

    #[test]
    fn at_the_total_cap_the_longest_idle_connection_makes_room() {
        let limits = Arc::new(ConnectionLimits::new(3, 3));
        let attacker: IpAddr = "10.0.0.1".parse().expect("ip");
        let oldest = limits.admit(attacker).expect("1");
        std::thread::sleep(Duration::from_millis(5));
        let newer = limits.admit(attacker).expect("2");
        let working = limits.admit("10.0.0.9".parse().expect("ip")).expect("3");
        let _request = Busy::new(working.activity.clone());
        let _newcomer = limits
            .admit("10.0.0.7".parse().expect("ip"))
            .expect("room is made");
        assert!(
            oldest.activity.evicting.load(Ordering::Acquire),
            "the longest-idle one goes"
        );
        assert!(!newer.activity.evicting.load(Ordering::Acquire));
        assert!(
            !working.activity.evicting.load(Ordering::Acquire),
            "busy ones never go"
        );
        // The next newcomer takes the next idle one, never the same one twice.
        let _another = limits
            .admit("10.0.0.8".parse().expect("ip"))
            .expect("room again");
        assert!(newer.activity.evicting.load(Ordering::Acquire));
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let one: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let other: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("ip");
        assert_eq!(address_key(one), address_key(other));
        let next_net: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_ne!(address_key(one), address_key(next_net));
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().expect("ip");
        assert_eq!(
            address_key(mapped),
            "127.0.0.1".parse::<IpAddr>().expect("ip")
        );
    }
}
