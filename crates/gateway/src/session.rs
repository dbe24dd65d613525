//! Session-era sessions (`Mcp-Session-Id`), and the per-client state both eras share.
//!
//! A session id is 32 random bytes, base64url: an unguessable handle, never a credential. Every
//! request still authenticates, and a session answers only to the principal that created it
//! (another principal presenting the id gets 404, exactly as for an unknown id).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use micromcp_auth::Principal;
use micromcp_protocol::{ProtocolVersion, RequestId};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::Gateway;

const IDLE_EXPIRY: Duration = Duration::from_secs(3600);

/// State of one connected client (a session-era session, or the single stdio client).
pub struct Session {
    /// Empty for the stdio client, which needs no id.
    pub id: String,
    pub principal: Principal,
    version: Mutex<ProtocolVersion>,
    last_seen: Mutex<Instant>,
    /// The open GET stream for notifications that belong to no request (list changes, updates).
    stream: Mutex<Option<mpsc::UnboundedSender<Value>>>,
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

    /// Replaces the notification stream (one per session; a new GET supersedes the old one).
    pub fn open_stream(&self) -> mpsc::UnboundedReceiver<Value> {
        let (tx, rx) = mpsc::unbounded_channel();
        *lock(&self.stream) = Some(tx);
        rx
    }

    /// Sends a notification on this client's stream, if one is open.
    pub fn send(&self, notification: Value) {
        let mut stream = lock(&self.stream);
        if let Some(tx) = stream.as_ref()
            && tx.send(notification).is_err()
        {
            *stream = None;
        }
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

#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// No such session, or it belongs to someone else: 404 either way.
    NotFound,
}

/// All session-era sessions of the HTTP transport.
pub struct Sessions {
    map: RwLock<HashMap<String, Arc<Session>>>,
    max: usize,
}

impl Sessions {
    pub fn new(max: usize) -> Self {
        Self {
            map: RwLock::new(HashMap::new()),
            max,
        }
    }

    /// Creates a session for `principal`; `None` when the session table is full.
    pub fn create(&self, principal: Principal, version: ProtocolVersion) -> Option<Arc<Session>> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).ok()?;
        let session = Arc::new(Session::new(
            URL_SAFE_NO_PAD.encode(bytes),
            principal,
            version,
        ));
        let mut map = self
            .map
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= self.max {
            return None;
        }
        map.insert(session.id.clone(), session.clone());
        Some(session)
    }

    /// The session `id`, only if `principal` owns it.
    pub fn get(&self, id: &str, principal: &Principal) -> Result<Arc<Session>, Lookup> {
        let map = self
            .map
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match map.get(id) {
            Some(s) if s.principal == *principal => {
                s.touch();
                Ok(s.clone())
            }
            _ => Err(Lookup::NotFound),
        }
    }

    pub fn remove(&self, id: &str, principal: &Principal) -> Option<Arc<Session>> {
        let mut map = self
            .map
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match map.get(id) {
            Some(s) if s.principal == *principal => map.remove(id),
            _ => None,
        }
    }

    pub fn all(&self) -> Vec<Arc<Session>> {
        self.map
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    fn expire(&self, older_than: Duration) -> Vec<Arc<Session>> {
        let mut map = self
            .map
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let expired: Vec<String> = map
            .iter()
            .filter(|(_, s)| lock(&s.last_seen).elapsed() > older_than)
            .map(|(k, _)| k.clone())
            .collect();
        expired.iter().filter_map(|k| map.remove(k)).collect()
    }
}

/// Drops sessions idle for an hour, releasing their subscriptions.
pub(crate) async fn expire_idle(gateway: Weak<Gateway>) {
    loop {
        tokio::time::sleep(Duration::from_secs(60)).await;
        let Some(gateway) = gateway.upgrade() else {
            return;
        };
        for session in gateway.sessions.expire(IDLE_EXPIRY) {
            gateway.release_subscriptions(&session).await;
        }
    }
}
