//! Requests awaiting a response on one upstream connection, keyed by the gateway's own ids.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use micromcp_protocol::ErrorObject;
use serde_json::Value;
use tokio::sync::oneshot;

pub type Reply = Result<Value, ErrorObject>;

#[derive(Default)]
pub struct Pending {
    next_id: AtomicU64,
    waiting: Mutex<HashMap<u64, oneshot::Sender<Reply>>>,
}

impl Pending {
    pub fn register(&self) -> (u64, oneshot::Receiver<Reply>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = oneshot::channel();
        self.lock().insert(id, tx);
        (id, rx)
    }

    /// Delivers a response; false if nobody waits for `id` (late, cancelled or forged).
    pub fn complete(&self, id: u64, reply: Reply) -> bool {
        match self.lock().remove(&id) {
            Some(tx) => tx.send(reply).is_ok(),
            None => false,
        }
    }

    /// Forgets `id`; true if it was still waiting (so the upstream should be told to cancel).
    pub fn forget(&self, id: u64) -> bool {
        self.lock().remove(&id).is_some()
    }

    /// Fails every waiting request (the connection is gone).
    pub fn fail_all(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Reply>>> {
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
