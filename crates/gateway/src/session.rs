//! Session-era sessions (`Mcp-Session-Id`), and the per-client state both eras share.
//!
//! A session id is 32 random bytes, base64url: an unguessable handle, never a credential. Every
//! request still authenticates, and a session answers only to the principal that created it
//! (another principal presenting the id gets 404, exactly as for an unknown id).
//!
//! Bounds, so that one principal cannot lock out the others:
//! - each principal (user, agent, tenant) holds at most `gateway.max_sessions_per_principal`
//!   sessions: a new one beyond that evicts *its own* least recently used session (idle ones
//!   first), whose subscriptions are released and whose notification stream is closed;
//! - all principals together hold at most `gateway.max_sessions`; beyond that `initialize` is
//!   refused (503) rather than evicting someone else's session, so filling the table takes
//!   `max_sessions / max_sessions_per_principal` principals acting together;
//! - a session is dropped after `gateway.session_idle_timeout` without activity. A request in
//!   progress or an open notification stream is activity: a client that only listens is not idle;
//! - at most one notification stream per session: a new GET supersedes (ends) the old one.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use micromcp_auth::Principal;
use micromcp_protocol::{ProtocolVersion, RequestId};
use serde_json::Value;
use tokio::sync::oneshot;

use crate::Gateway;
use crate::limits::{PrincipalKey, Slot};
use crate::outbox::{Inbox, Outbox, outbox};

/// State of one connected client (a session-era session, or the single stdio client).
pub struct Session {
    /// Empty for the stdio client, which needs no id.
    pub id: String,
    pub principal: Principal,
    version: Mutex<ProtocolVersion>,
    last_seen: Mutex<Instant>,
    /// The open GET stream for notifications that belong to no request (list changes, updates).
    stream: Mutex<Option<OpenStream>>,
    /// Numbers the streams, so a stream that ends clears only its own entry.
    stream_generation: AtomicU64,
    /// Set when the session is removed (ended, evicted, expired): no stream opens any more.
    closed: AtomicBool,
    /// Public URIs this client subscribed to.
    pub(crate) subscriptions: Mutex<HashSet<String>>,
    /// Requests in flight, by the client's id, so `notifications/cancelled` can stop them.
    inflight: Mutex<HashMap<RequestId, oneshot::Sender<()>>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("principal", &self.principal.user)
            .finish_non_exhaustive()
    }
}

impl Session {
    pub fn new(id: String, principal: Principal, version: ProtocolVersion) -> Self {
        Self {
            id,
            principal,
            version: Mutex::new(version),
            last_seen: Mutex::new(Instant::now()),
            stream: Mutex::new(None),
            stream_generation: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            subscriptions: Mutex::new(HashSet::new()),
            inflight: Mutex::new(HashMap::new()),
        }
    }

    pub fn version(&self) -> ProtocolVersion {
        *lock(&self.version)
    }

    pub fn set_version(&self, v: ProtocolVersion) {
        *lock(&self.version) = v;
    }

    pub fn touch(&self) {
        *lock(&self.last_seen) = Instant::now();
    }

    /// Opens the stdio client's notification stream.
    pub fn open_stream(&self) -> Inbox<Value> {
        let (tx, rx) = outbox();
        *lock(&self.stream) = Some(OpenStream {
            tx,
            generation: 0,
            _slot: None,
        });
        rx
    }

    /// Opens this session's GET notification stream, superseding the one open before: that one
    /// ends (its sender is dropped) and gives its stream slot back *before* `take_slot` asks
    /// for a new one, so re-opening a stream never counts twice against the principal's cap.
    pub(crate) fn open_http_stream(
        self: &Arc<Self>,
        take_slot: impl FnOnce() -> Option<Slot>,
    ) -> Result<SessionStream, StreamRefused> {
        let mut stream = lock(&self.stream);
        if self.closed.load(Ordering::Acquire) {
            return Err(StreamRefused::SessionGone);
        }
        drop(stream.take());
        let slot = take_slot().ok_or(StreamRefused::Limit)?;
        let generation = self.stream_generation.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = outbox();
        *stream = Some(OpenStream {
            tx,
            generation,
            _slot: Some(slot),
        });
        Ok(SessionStream {
            rx,
            session: Arc::downgrade(self),
            generation,
        })
    }

    /// Whether the session was removed (ended, evicted, expired).
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Marks the session removed and ends its stream.
    fn close(&self) {
        let mut stream = lock(&self.stream);
        self.closed.store(true, Ordering::Release);
        drop(stream.take());
    }

    /// Sends a notification on this client's stream, if one is open.
    pub fn send(&self, notification: Value) {
        let mut stream = lock(&self.stream);
        if let Some(open) = stream.as_ref()
            && open.tx.send(notification).is_err()
        {
            *stream = None;
        }
    }

    /// A request in progress or an open notification stream: the client is still there.
    fn is_active(&self) -> bool {
        lock(&self.stream)
            .as_ref()
            .is_some_and(|open| !open.tx.is_closed())
            || !lock(&self.inflight).is_empty()
    }

    /// Sort key for eviction: idle sessions first, then the least recently seen.
    fn eviction_order(&self) -> (bool, Instant) {
        (self.is_active(), *lock(&self.last_seen))
    }

    fn idle_longer_than(&self, timeout: Duration) -> bool {
        !self.is_active() && lock(&self.last_seen).elapsed() > timeout
    }

    /// Registers an in-flight request; the receiver fires if the client cancels it.
    pub(crate) fn begin(&self, id: &RequestId) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        lock(&self.inflight).insert(id.clone(), tx);
        rx
    }

    pub(crate) fn end(&self, id: &RequestId) {
        lock(&self.inflight).remove(id);
    }

    /// Cancels one of *this client's* requests. Ids are looked up in this session only, so no
    /// client can cancel another's request.
    pub fn cancel(&self, id: &RequestId) -> bool {
        lock(&self.inflight)
            .remove(id)
            .is_some_and(|tx| tx.send(()).is_ok())
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The open notification stream of a session.
struct OpenStream {
    tx: Outbox<Value>,
    generation: u64,
    /// The principal's stream slot (HTTP only), given back when the stream is dropped.
    _slot: Option<Slot>,
}

/// Why a GET stream was not opened.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum StreamRefused {
    /// The principal holds `gateway.max_streams_per_principal` streams already.
    Limit,
    /// The session was removed meanwhile.
    SessionGone,
}

/// The receiving end of a session's GET stream. When the client goes away (the response body
/// is dropped), the session forgets the stream at once, which frees its slot.
pub(crate) struct SessionStream {
    rx: Inbox<Value>,
    session: Weak<Session>,
    generation: u64,
}

impl futures::Stream for SessionStream {
    type Item = Value;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Value>> {
        std::pin::Pin::new(&mut self.rx).poll_next(cx)
    }
}

impl Drop for SessionStream {
    fn drop(&mut self) {
        if let Some(session) = self.session.upgrade() {
            let mut stream = lock(&session.stream);
            if stream
                .as_ref()
                .is_some_and(|open| open.generation == self.generation)
            {
                drop(stream.take());
            }
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// No such session, or it belongs to someone else: 404 either way.
    NotFound,
}

/// Why `initialize` got no session.
#[derive(Debug, PartialEq, Eq)]
pub enum NotCreated {
    /// `gateway.max_sessions` sessions exist.
    TableFull,
    /// The system's random number generator failed.
    NoRandomness,
}

/// A new session, and the principal's own session it displaced (if it was at its quota).
#[derive(Debug)]
pub struct Created {
    pub session: Arc<Session>,
    pub evicted: Option<Arc<Session>>,
}

#[derive(Default)]
struct Table {
    by_id: HashMap<String, Arc<Session>>,
    by_principal: HashMap<PrincipalKey, Vec<Arc<Session>>>,
}

impl Table {
    fn remove(&mut self, id: &str) -> Option<Arc<Session>> {
        let session = self.by_id.remove(id)?;
        let key = PrincipalKey::from(&session.principal);
        if let Some(own) = self.by_principal.get_mut(&key) {
            own.retain(|s| s.id != id);
            if own.is_empty() {
                self.by_principal.remove(&key);
            }
        }
        session.close();
        Some(session)
    }
}

/// All session-era sessions of the HTTP transport.
pub struct Sessions {
    table: RwLock<Table>,
    max: usize,
    max_per_principal: usize,
}

impl Sessions {
    pub fn new(max: usize, max_per_principal: usize) -> Self {
        Self {
            table: RwLock::new(Table::default()),
            max,
            max_per_principal,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        self.table
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Table> {
        self.table
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Creates a session for `principal`. At its quota, its own least recently used session is
    /// evicted (the caller releases that one's subscriptions); when the whole table is full,
    /// nothing is evicted and the answer is [`NotCreated::TableFull`].
    pub fn create(
        &self,
        principal: Principal,
        version: ProtocolVersion,
    ) -> Result<Created, NotCreated> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|_| NotCreated::NoRandomness)?;
        let session = Arc::new(Session::new(
            URL_SAFE_NO_PAD.encode(bytes),
            principal,
            version,
        ));
        let key = PrincipalKey::from(&session.principal);
        let mut table = self.write();
        let own = table.by_principal.get(&key).map_or(0, Vec::len);
        let evicted = if own >= self.max_per_principal {
            let victim = table
                .by_principal
                .get(&key)
                .and_then(|own| own.iter().min_by_key(|s| s.eviction_order()))
                .map(|s| s.id.clone());
            victim.and_then(|id| table.remove(&id))
        } else if table.by_id.len() >= self.max {
            return Err(NotCreated::TableFull);
        } else {
            None
        };
        table.by_id.insert(session.id.clone(), session.clone());
        table
            .by_principal
            .entry(key)
            .or_default()
            .push(session.clone());
        Ok(Created { session, evicted })
    }

    /// The session `id`, only if `principal` owns it.
    pub fn get(&self, id: &str, principal: &Principal) -> Result<Arc<Session>, Lookup> {
        match self.read().by_id.get(id) {
            Some(s) if s.principal.same_caller(principal) => {
                s.touch();
                Ok(s.clone())
            }
            _ => Err(Lookup::NotFound),
        }
    }

    pub fn remove(&self, id: &str, principal: &Principal) -> Option<Arc<Session>> {
        let mut table = self.write();
        match table.by_id.get(id) {
            Some(s) if s.principal.same_caller(principal) => table.remove(id),
            _ => None,
        }
    }

    pub fn all(&self) -> Vec<Arc<Session>> {
        self.read().by_id.values().cloned().collect()
    }

    /// How many sessions exist.
    pub fn len(&self) -> usize {
        self.read().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes the sessions idle for longer than `timeout`. The scan takes only the read lock;
    /// the write lock is taken when there is something to remove.
    fn expire(&self, timeout: Duration) -> Vec<Arc<Session>> {
        let idle: Vec<String> = self
            .read()
            .by_id
            .values()
            .filter(|s| s.idle_longer_than(timeout))
            .map(|s| s.id.clone())
            .collect();
        if idle.is_empty() {
            return Vec::new();
        }
        let mut table = self.write();
        idle.iter()
            .filter(|id| {
                table
                    .by_id
                    .get(id.as_str())
                    .is_some_and(|s| s.idle_longer_than(timeout))
            })
            .cloned()
            .collect::<Vec<_>>()
            .iter()
            .filter_map(|id| table.remove(id))
            .collect()
    }
}

/// How often idle sessions are looked for: a quarter of the timeout, so a session lives at most
/// 1.25 × the timeout; never more often than every 10 ms, never less often than every 30 s.
fn expiry_tick(timeout: Duration) -> Duration {
    (timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(30))
}

/// Drops idle sessions, releasing their subscriptions.
pub(crate) async fn expire_idle(gateway: Weak<Gateway>, timeout: Duration) {
    let mut tick = tokio::time::interval(expiry_tick(timeout));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(gateway) = gateway.upgrade() else {
            return;
        };
        for session in gateway.sessions.expire(timeout) {
            gateway.release_subscriptions(&session).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(user: &str) -> Principal {
        Principal::named(user, None, micromcp_auth::AuthMethod::ApiToken)
    }

    const V: ProtocolVersion = ProtocolVersion::LATEST_SESSION;

    #[test]
    fn at_its_quota_a_principal_evicts_its_own_least_recently_used_session() {
        let sessions = Sessions::new(100, 3);
        let alice = principal("alice");
        let bob = principal("bob");
        let bobs = sessions.create(bob.clone(), V).expect("bob").session;
        let first = sessions.create(alice.clone(), V).expect("1").session;
        let second = sessions.create(alice.clone(), V).expect("2").session;
        let third = sessions.create(alice.clone(), V).expect("3").session;
        // The first is used again: the second is now the least recently used.
        std::thread::sleep(Duration::from_millis(5));
        sessions.get(&first.id, &alice).expect("first");
        let fourth = sessions.create(alice.clone(), V).expect("4");
        let evicted = fourth.evicted.expect("one evicted");
        assert_eq!(evicted.id, second.id);
        assert_eq!(
            sessions.get(&second.id, &alice).err(),
            Some(Lookup::NotFound)
        );
        for s in [&first, &third, &fourth.session] {
            assert!(sessions.get(&s.id, &alice).is_ok());
        }
        assert!(sessions.get(&bobs.id, &bob).is_ok(), "bob is untouched");
        assert_eq!(sessions.len(), 4);
    }

    #[test]
    fn a_session_with_an_open_stream_is_evicted_after_the_idle_ones() {
        let sessions = Sessions::new(100, 2);
        let alice = principal("alice");
        let listening = sessions.create(alice.clone(), V).expect("1").session;
        let _stream = listening.open_http_stream(no_limit);
        std::thread::sleep(Duration::from_millis(5));
        let idle = sessions.create(alice.clone(), V).expect("2").session;
        let third = sessions.create(alice.clone(), V).expect("3");
        assert_eq!(third.evicted.expect("evicted").id, idle.id);
        assert!(sessions.get(&listening.id, &alice).is_ok());
    }

    #[test]
    fn a_full_table_refuses_instead_of_evicting_someone_else() {
        let sessions = Sessions::new(2, 2);
        sessions.create(principal("alice"), V).expect("1");
        sessions.create(principal("alice"), V).expect("2");
        assert_eq!(
            sessions.create(principal("bob"), V).unwrap_err(),
            NotCreated::TableFull
        );
        // At her own quota, alice replaces one of hers even with the table full.
        let again = sessions.create(principal("alice"), V).expect("3");
        assert!(again.evicted.is_some());
        assert_eq!(sessions.len(), 2);
    }

    #[test]
    fn evicted_and_removed_sessions_end_their_stream_and_open_no_new_one() {
        let sessions = Sessions::new(10, 1);
        let alice = principal("alice");
        let first = sessions.create(alice.clone(), V).expect("1").session;
        let mut stream = first.open_http_stream(no_limit).expect("stream");
        sessions.create(alice.clone(), V).expect("2");
        assert_eq!(
            futures::FutureExt::now_or_never(futures::StreamExt::next(&mut stream)),
            Some(None),
            "the evicted session's stream ended"
        );
        assert_eq!(
            first.open_http_stream(no_limit).err(),
            Some(StreamRefused::SessionGone)
        );
    }

    #[test]
    fn a_new_stream_supersedes_the_old_one_and_reuses_its_slot() {
        let counter = crate::limits::Counter::new(1);
        let alice = principal("alice");
        let session = Arc::new(Session::new("s".into(), alice.clone(), V));
        let mut old = session
            .open_http_stream(|| counter.try_acquire(&alice))
            .expect("first");
        let new = session
            .open_http_stream(|| counter.try_acquire(&alice))
            .expect("the old stream's slot was given back first");
        assert_eq!(
            futures::FutureExt::now_or_never(futures::StreamExt::next(&mut old)),
            Some(None)
        );
        drop(old);
        assert_eq!(
            counter.held_by(&alice),
            1,
            "the old stream's end left the new one"
        );
        session.send(serde_json::json!({"n": 1}));
        drop(new);
        assert_eq!(
            counter.held_by(&alice),
            0,
            "a dropped stream frees its slot"
        );
    }

    #[test]
    fn idle_means_no_request_no_stream_and_not_seen_for_the_timeout() {
        let sessions = Sessions::new(10, 10);
        let alice = principal("alice");
        let idle = sessions.create(alice.clone(), V).expect("idle").session;
        let listening = sessions
            .create(alice.clone(), V)
            .expect("listening")
            .session;
        let busy = sessions.create(alice.clone(), V).expect("busy").session;
        let _stream = listening.open_http_stream(no_limit).expect("stream");
        let _request = busy.begin(&RequestId::from_value(&serde_json::json!(1)).expect("id"));
        std::thread::sleep(Duration::from_millis(30));
        let expired = sessions.expire(Duration::from_millis(20));
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].id, idle.id);
        assert_eq!(sessions.len(), 2);
        assert!(sessions.expire(Duration::from_secs(60)).is_empty());
    }

    #[test]
    fn expiry_is_checked_often_enough_for_short_timeouts() {
        assert_eq!(
            expiry_tick(Duration::from_secs(1)),
            Duration::from_millis(250)
        );
        assert_eq!(
            expiry_tick(Duration::from_secs(600)),
            Duration::from_secs(30)
        );
        assert_eq!(
            expiry_tick(Duration::from_millis(10)),
            Duration::from_millis(10)
        );
    }

    fn no_limit() -> Option<Slot> {
        crate::limits::Counter::new(usize::MAX).try_acquire(&principal("x"))
    }
}
