//! Notifications from upstreams, each delivered only to the client it belongs to.
//!
//! - `notifications/progress`: the gateway replaced the client's progress token with one of its
//!   own before forwarding, so the token says exactly which request (and client) it is for.
//! - `notifications/resources/updated`: only to sessions that subscribed to that resource.
//! - `notifications/*/list_changed`: carry no data; to every session's notification stream.
//! - Everything else (logging, upstream-initiated cancellation…) cannot be attributed to one
//!   client over a shared connection, and is dropped (logged at debug level).
//!
//! A 2026-07-28 `subscriptions/listen` stream is registered with a [`ListenerGuard`] that the
//! stream owns: when the client goes away, the listener is removed at once (not on the next
//! list change).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use micromcp_protocol::names::Namer;
use micromcp_protocol::text;
use micromcp_upstream::UpstreamEvent;
use serde_json::{Value, json};

use crate::Gateway;
use crate::outbox::{Inbox, Outbox};
use crate::session::lock;

type Sink = Outbox<Value>;

/// A `subscriptions/listen` stream.
struct Listener {
    /// Numbers the listeners, so a guard removes exactly its own.
    key: u64,
    sink: Sink,
    /// The list-change notifications it accepted.
    accepted: serde_json::Map<String, Value>,
    /// The client's subscription id (its request id), echoed in every notification.
    subscription_id: Value,
}

/// Removes its listener when dropped (the stream ended or the client went away).
pub struct ListenerGuard {
    routes: Weak<Routes>,
    key: u64,
}

impl Drop for ListenerGuard {
    fn drop(&mut self) {
        if let Some(routes) = self.routes.upgrade() {
            lock(&routes.listeners).retain(|l| l.key != self.key);
        }
    }
}

#[derive(Default)]
pub struct Routes {
    next_token: AtomicU64,
    progress: Mutex<HashMap<String, (Sink, Value)>>,
    /// Subscribers per (service, upstream URI); the upstream is subscribed once.
    pub(crate) subscribers: Mutex<HashMap<(String, String), usize>>,
    /// 2026-07-28 `subscriptions/listen` streams: sink, accepted filter, subscription id.
    listeners: Mutex<Vec<Listener>>,
}

/// Unregisters a progress token when the request ends.
pub struct ProgressGuard<'a> {
    routes: &'a Routes,
    token: String,
}

impl Drop for ProgressGuard<'_> {
    fn drop(&mut self) {
        lock(&self.routes.progress).remove(&self.token);
    }
}

impl Routes {
    /// Registers a client's progress token; returns the gateway token to send upstream.
    pub fn register_progress(
        &self,
        sink: Sink,
        client_token: Value,
    ) -> (String, ProgressGuard<'_>) {
        let token = format!(
            "mmcp-progress-{}",
            self.next_token.fetch_add(1, Ordering::Relaxed) + 1
        );
        lock(&self.progress).insert(token.clone(), (sink, client_token));
        (
            token.clone(),
            ProgressGuard {
                routes: self,
                token,
            },
        )
    }

    /// Registers a listen stream until the returned guard is dropped.
    pub fn add_listener(
        self: &Arc<Self>,
        sink: Sink,
        accepted: serde_json::Map<String, Value>,
        subscription_id: Value,
    ) -> ListenerGuard {
        let key = self.next_token.fetch_add(1, Ordering::Relaxed) + 1;
        lock(&self.listeners).push(Listener {
            key,
            sink,
            accepted,
            subscription_id,
        });
        ListenerGuard {
            routes: Arc::downgrade(self),
            key,
        }
    }

    /// How many listen streams are registered.
    pub fn listener_count(&self) -> usize {
        lock(&self.listeners).len()
    }

    /// Sends a list change to the listen streams that asked for it; forgets closed streams.
    fn deliver_list_changed(&self, method: &str) {
        let key = match method {
            "notifications/tools/list_changed" => "toolsListChanged",
            "notifications/prompts/list_changed" => "promptsListChanged",
            _ => "resourcesListChanged",
        };
        lock(&self.listeners).retain(|l| {
            if l.accepted.get(key) != Some(&Value::Bool(true)) {
                return !l.sink.is_closed();
            }
            let n = json!({ "jsonrpc": "2.0", "method": method, "params": { "_meta": { "io.modelcontextprotocol/subscriptionId": l.subscription_id } } });
            l.sink.send(n).is_ok()
        });
    }

    pub(crate) fn deliver_progress(&self, params: Option<Value>) {
        let Some(mut params) = params else { return };
        let Some(token) = params
            .get("progressToken")
            .and_then(Value::as_str)
            .map(str::to_owned)
        else {
            return;
        };
        let routes = lock(&self.progress);
        let Some((sink, client_token)) = routes.get(&token) else {
            return;
        };
        params["progressToken"] = client_token.clone();
        let _ = sink.send(
            json!({ "jsonrpc": "2.0", "method": "notifications/progress", "params": params }),
        );
    }
}

pub(crate) async fn route_events(gateway: Weak<Gateway>, mut rx: Inbox<UpstreamEvent>) {
    while let Some(event) = rx.recv().await {
        let Some(gateway) = gateway.upgrade() else {
            return;
        };
        match event.method.as_str() {
            "notifications/tools/list_changed"
            | "notifications/prompts/list_changed"
            | "notifications/resources/list_changed" => {
                if event.method == "notifications/tools/list_changed" {
                    // The policies type calls by the tools as they are now.
                    gateway.tools_changed(&event.service);
                }
                let notification = json!({ "jsonrpc": "2.0", "method": event.method });
                for session in gateway.sessions.all() {
                    session.send(notification.clone());
                }
                if let Some(stdio) = gateway.stdio_session() {
                    stdio.send(notification);
                }
                gateway.routes.deliver_list_changed(&event.method);
            }
            "notifications/resources/updated" => {
                let Some(uri) = event
                    .params
                    .as_ref()
                    .and_then(|p| p.get("uri"))
                    .and_then(Value::as_str)
                else {
                    continue;
                };
                let public = gateway.public_uri(&event.service, uri);
                let notification = json!({ "jsonrpc": "2.0", "method": "notifications/resources/updated", "params": { "uri": public } });
                let sessions = gateway
                    .sessions
                    .all()
                    .into_iter()
                    .chain(gateway.stdio_session());
                for session in sessions {
                    if lock(&session.subscriptions).contains(&public) {
                        session.send(notification.clone());
                    }
                }
            }
            other => {
                tracing::debug!(service = %event.service, method = %text::escape(other), "upstream notification not forwarded")
            }
        }
    }
}

impl Gateway {
    /// The public URI for an upstream URI of `service`.
    pub(crate) fn public_uri(&self, service: &str, uri: &str) -> String {
        match self.services.get(service) {
            Some(s) if !s.prefix => uri.to_owned(),
            _ => Namer::public_uri(service, uri),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_is_removed_as_soon_as_its_stream_is_dropped() {
        let routes = Arc::new(Routes::default());
        let (tx, _rx) = crate::outbox::outbox();
        let first = routes.add_listener(tx.clone(), serde_json::Map::new(), json!(1));
        let second = routes.add_listener(tx, serde_json::Map::new(), json!(2));
        assert_eq!(routes.listener_count(), 2);
        drop(first);
        assert_eq!(routes.listener_count(), 1, "removed without a list change");
        drop(second);
        assert_eq!(routes.listener_count(), 0);
    }
}
