//! Policy reloads without downtime: on SIGHUP and when a policy file changes, the files are
//! read, parsed and validated against the live catalog's schema, then swapped in at once
//! (requests in flight finish under the set they started with). An invalid set is refused with
//! its errors and the set in force stays. Each attempt is logged and audited.

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use micromcp_audit::{AuditRecord, Decision};

use crate::Gateway;

/// How often policy files are checked for changes.
const POLL: Duration = Duration::from_secs(1);

impl Gateway {
    /// Reloads the policies now; `why` is for the log and the audit (`SIGHUP`, `file change`).
    pub fn reload_policies(&self, why: &str) -> bool {
        let started = std::time::Instant::now();
        let outcome = self.authz.reload();
        let mut record = AuditRecord {
            request_id: self.next_request_id(),
            transport: "gateway",
            method: Some("policy/reload".into()),
            reason: Some(why.into()),
            latency_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            ..Default::default()
        };
        let ok = match outcome {
            Ok(loaded) => {
                tracing::info!(target: "micromcp::policy", "policies reloaded on {why}: {} policies ({}), checked against {} catalog tools", loaded.policies, loaded.digest, loaded.tools);
                record.decision = Some(Decision::Allow);
                record.status = "ok".into();
                record.rule = Some(loaded.digest);
                true
            }
            Err(errors) => {
                tracing::error!(target: "micromcp::policy", "policies NOT reloaded on {why}; the policies in force stay:\n  {}", errors.join("\n  "));
                record.decision = Some(Decision::Deny);
                record.status = "invalid".into();
                record.rule = Some(self.authz.digest());
                record.reason = Some(format!("{why}: {}", errors.join("; ")));
                false
            }
        };
        self.audit.record(record);
        ok
    }
}

/// The files' modification times and sizes (a change in any means: reload).
fn stamp(files: &[PathBuf]) -> Vec<Option<(SystemTime, u64)>> {
    let mut paths = Vec::new();
    for f in files {
        paths.push(f.clone());
        if let Ok(entries) = std::fs::read_dir(f) {
            let mut inner: Vec<PathBuf> =
                entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
            inner.sort();
            paths.extend(inner);
        }
    }
    paths
        .iter()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
        })
        .collect()
}

/// Reloads when a policy file changes, until the gateway is gone.
pub async fn watch_policies(gateway: Weak<Gateway>) {
    let files = match gateway.upgrade() {
        Some(g) if g.authz.has_policy_files() => g.authz.files().to_vec(),
        _ => return,
    };
    let mut last = stamp(&files);
    loop {
        tokio::time::sleep(POLL).await;
        let now = stamp(&files);
        if now == last {
            continue;
        }
        last = now;
        let Some(gateway): Option<Arc<Gateway>> = gateway.upgrade() else {
            return;
        };
        let _ = tokio::task::spawn_blocking(move || gateway.reload_policies("file change")).await;
    }
}
