//! Per-principal limits, so that one principal cannot lock out the others.
//!
//! What one principal may hold at once:
//! - requests in progress (`gateway.max_requests_per_principal`): counted from the moment the
//!   HTTP transport has authenticated a request until its answer is complete (for an SSE answer,
//!   until the stream ends);
//! - open SSE streams (`gateway.max_streams_per_principal`): GET notification streams,
//!   2026-07-28 `subscriptions/listen` streams and SSE answers;
//! - sessions (`gateway.max_sessions_per_principal`): counted by [`crate::session::Sessions`],
//!   which needs the list of a principal's sessions anyway to evict the least recently used.
//!
//! Beyond a limit the answer is an immediate refusal (HTTP 429), never a queue: a queue would
//! only move the exhaustion elsewhere. A [`Slot`] is taken when the work starts and given back
//! when it is dropped, so a stream that ends, a client that disconnects and a task that is
//! aborted all free their slot without any bookkeeping at the call sites.
//!
//! Quotas count per [`PrincipalKey`] (issuer, user, agent, tenant): the identity that session binding
//! and authorization use, without the roles (which do not make a different caller).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use micromcp_auth::Principal;

use crate::session::lock;

/// Who a quota is counted for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PrincipalKey {
    issuer: Option<String>,
    user: String,
    agent: Option<String>,
    tenant: Option<String>,
}

impl From<&Principal> for PrincipalKey {
    fn from(p: &Principal) -> Self {
        Self {
            issuer: p.issuer.clone(),
            user: p.user.clone(),
            agent: p.agent.clone(),
            tenant: p.tenant.clone(),
        }
    }
}

/// Keys are shared with the slots that hold them, so taking and giving back a slot copies no
/// strings; foldhash because this map is consulted on every request.
type Held = Arc<Mutex<HashMap<Arc<PrincipalKey>, usize, foldhash::fast::RandomState>>>;

/// How many of one thing each principal holds, up to `max`.
#[derive(Debug)]
pub struct Counter {
    max: usize,
    held: Held,
}

impl Counter {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            held: Held::default(),
        }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// A slot for `principal`, or `None` when it already holds `max`.
    pub fn try_acquire(&self, principal: &Principal) -> Option<Slot> {
        let key = PrincipalKey::from(principal);
        let mut held = lock(&self.held);
        let key = match held.get_key_value(&key) {
            Some((_, &count)) if count >= self.max => return None,
            Some((shared, _)) => {
                let shared = shared.clone();
                *held.get_mut(&key).expect("present") += 1;
                shared
            }
            None => {
                let shared = Arc::new(key);
                held.insert(shared.clone(), 1);
                shared
            }
        };
        Some(Slot {
            held: self.held.clone(),
            key,
        })
    }

    /// What `principal` holds now (for tests and diagnostics).
    pub fn held_by(&self, principal: &Principal) -> usize {
        lock(&self.held)
            .get(&PrincipalKey::from(principal))
            .copied()
            .unwrap_or(0)
    }
}

/// One unit of a [`Counter`], given back when dropped.
#[derive(Debug)]
pub struct Slot {
    held: Held,
    key: Arc<PrincipalKey>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = lock(&self.held);
        if let Some(count) = held.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                // Principals that hold nothing take no memory.
                held.remove(&self.key);
            }
        }
    }
}

/// The per-principal counters of the gateway.
#[derive(Debug)]
pub struct Limits {
    pub requests: Counter,
    pub streams: Counter,
}

impl Limits {
    pub fn new(settings: &micromcp_config::GatewaySettings) -> Self {
        Self {
            requests: Counter::new(settings.max_requests_per_principal),
            streams: Counter::new(settings.max_streams_per_principal),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(user: &str, agent: Option<&str>) -> Principal {
        Principal::named(user, agent, micromcp_auth::AuthMethod::ApiToken)
    }

    #[test]
    fn slots_are_counted_per_principal_and_given_back_on_drop() {
        let counter = Counter::new(2);
        let alice = principal("alice", Some("bot"));
        let a1 = counter.try_acquire(&alice).expect("first");
        let a2 = counter.try_acquire(&alice).expect("second");
        assert!(counter.try_acquire(&alice).is_none(), "third is refused");
        assert!(
            counter.try_acquire(&principal("bob", None)).is_some(),
            "bob has his own quota"
        );
        assert!(
            counter
                .try_acquire(&principal("alice", Some("other")))
                .is_some(),
            "another agent of alice is another caller"
        );
        drop(a1);
        let a3 = counter.try_acquire(&alice).expect("a slot was freed");
        assert_eq!(counter.held_by(&alice), 2);
        drop((a2, a3));
        assert_eq!(counter.held_by(&alice), 0);
        assert!(
            lock(&counter.held).is_empty(),
            "nothing kept for idle principals"
        );
    }

    #[test]
    fn roles_do_not_make_another_caller() {
        let counter = Counter::new(1);
        let mut admin = principal("alice", None);
        let _slot = counter.try_acquire(&admin).expect("first");
        admin.roles.push("admin".into());
        assert!(counter.try_acquire(&admin).is_none());
    }
}
