//! The live catalog: every service's tools as it lists them, kept for the policy engine, which
//! types each call's arguments by the tool's `inputSchema` and generates its Cedar schema from
//! it (docs/policy.md).
//!
//! The gateway asks each service for its whole `tools/list` when the service first starts and
//! whenever it says `notifications/tools/list_changed`; a call to a tool the catalog does not
//! know yet asks again first (at most once per service per [`REFRESH_INTERVAL`]). Lists are
//! upstream output: bounded in pages and tools, and item names with hidden characters are
//! left out like everywhere else.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use micromcp_auth::Principal;
use micromcp_policy::ToolEntry;
use micromcp_upstream::UpstreamError;
use serde_json::{Value, json};

use crate::session::lock;
use crate::{Gateway, ServiceHandle};

/// Pages of `tools/list` read per refresh, at most.
const MAX_PAGES: usize = 100;
/// Tools kept per service, at most.
const MAX_TOOLS: usize = 10_000;
/// A call to an unknown tool refreshes its service's catalog at most this often.
const REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// When each service's catalog was last asked for on a miss, and which services have a
/// refresh running (and whether another was asked for meanwhile).
#[derive(Default)]
pub(crate) struct Refreshes {
    /// Per service: when a miss last refreshed it; held while that refresh runs, so concurrent
    /// misses wait for it instead of each asking the service.
    misses: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Instant>>>>>,
    running: Mutex<HashMap<String, bool>>,
    /// Every service was asked once: from now on a catalog change that breaks the policies
    /// is worth a warning (before, the catalog is simply incomplete).
    loaded: std::sync::atomic::AtomicBool,
}

impl Gateway {
    /// Reads `service`'s tools (as the gateway, or as `caller` for services that are told
    /// who asks) and hands them to the policy engine.
    /// (`report`: warn when the policies no longer validate against the new tools; not while
    /// the catalog is first loaded service by service.)
    pub(crate) async fn refresh_catalog(
        &self,
        service: &ServiceHandle,
        caller: Option<&Principal>,
        report: bool,
    ) -> Result<(), UpstreamError> {
        if service
            .upstream
            .capabilities()
            .is_some_and(|c| c.get("tools").is_none())
        {
            return Ok(());
        }
        service
            .upstream
            .wait_started(crate::federation::STARTUP_WAIT)
            .await;
        let mut tools = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let params = cursor.as_ref().map(|c| json!({ "cursor": c }));
            let page = tokio::time::timeout(service.timeout, async {
                match caller {
                    Some(p) => self.request_for(service, p, "tools/list", params).await,
                    None => service.upstream.request("tools/list", params).await,
                }
            })
            .await;
            let page = match page {
                Ok(Ok(page)) => page,
                Ok(Err(e)) => {
                    tracing::debug!(service = %service.name, "tools/list for the catalog failed: {e}");
                    return Err(e);
                }
                Err(_) => {
                    tracing::debug!(service = %service.name, "tools/list for the catalog timed out");
                    return Err(UpstreamError::Timeout {
                        service: service.name.clone(),
                        timeout: service.timeout,
                    });
                }
            };
            for item in page
                .get("tools")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if tools.len() >= MAX_TOOLS {
                    break;
                }
                let visible = item
                    .get("name")
                    .and_then(Value::as_str)
                    .is_some_and(micromcp_protocol::text::is_clean_name);
                let tool = item.as_object().and_then(ToolEntry::from_listed);
                if let Some(tool) = tool.filter(|_| visible) {
                    tools.push(tool);
                }
            }
            cursor = page
                .get("nextCursor")
                .and_then(Value::as_str)
                .map(str::to_owned);
            if cursor.is_none() {
                break;
            }
        }
        let problems = self.authz.set_catalog(&service.name, tools);
        let loaded = self
            .refreshes
            .loaded
            .load(std::sync::atomic::Ordering::Acquire);
        for problem in problems.into_iter().filter(|_| report && loaded) {
            tracing::warn!(service = %service.name, "the policies no longer match this service's tools: {problem}");
        }
        Ok(())
    }

    /// Refreshes the catalog after a miss (the caller then looks again). Concurrent misses
    /// share one refresh; a miss right after one (within [`REFRESH_INTERVAL`]) does not ask the
    /// service again. The service's error if it could not be asked.
    pub(crate) async fn refresh_catalog_on_miss(
        &self,
        service: &ServiceHandle,
        caller: &Principal,
    ) -> Result<(), UpstreamError> {
        let slot = lock(&self.refreshes.misses)
            .entry(service.name.clone())
            .or_default()
            .clone();
        let mut last = slot.lock().await;
        if last.is_some_and(|t| t.elapsed() < REFRESH_INTERVAL) {
            return Ok(());
        }
        *last = Some(Instant::now());
        self.refresh_catalog(service, Some(caller), true).await
    }

    /// Refreshes `service`'s catalog after it said its tools changed. A flood of such
    /// notifications runs one refresh at a time, plus at most one more after it.
    pub(crate) fn tools_changed(self: &Arc<Self>, service: &str) {
        {
            let mut running = lock(&self.refreshes.running);
            if let Some(again) = running.get_mut(service) {
                *again = true;
                return;
            }
            running.insert(service.to_owned(), false);
        }
        let weak = Arc::downgrade(self);
        let service = service.to_owned();
        tokio::spawn(async move {
            loop {
                let Some(gateway) = weak.upgrade() else {
                    return;
                };
                if let Some(s) = gateway.services.get(&service) {
                    let _ = gateway.refresh_catalog(s, None, true).await;
                }
                let mut running = lock(&gateway.refreshes.running);
                if running.get(&service) == Some(&true) {
                    running.insert(service.clone(), false);
                } else {
                    running.remove(&service);
                    return;
                }
            }
        });
    }

    /// Reads every service's catalog (each waits for its service's first start).
    pub async fn load_catalog(&self) {
        futures::future::join_all(self.services.values().map(|s| async move {
            s.upstream
                .wait_started(crate::federation::STARTUP_WAIT)
                .await;
            let _ = self.refresh_catalog(s, None, false).await;
        }))
        .await;
        self.refreshes
            .loaded
            .store(true, std::sync::atomic::Ordering::Release);
    }
}
