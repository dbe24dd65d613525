//! Human approvals: a call whose permit carries `@approval("required")` waits here for a person.
//!
//! The request path ([`crate::pipeline`]) calls [`Approvals::hold`] right after authorization
//! (and rate limits): the call is registered as a pending approval and the request waits —
//! nothing reaches the service — until one of:
//! - an approver approves it through the admin API ([`crate::admin`]): the call goes on, with
//!   exactly the arguments that were approved (the request is never parsed again);
//! - an approver denies it: the call fails with the approver's reason;
//! - `approvals.timeout` passes (10 minutes by default): the call fails, "approval … expired";
//! - the request ends first (its client went away or cancelled it, the gateway stops): the
//!   pending approval is removed (voided), so nobody approves a call that no longer waits.
//!
//! An approval belongs to one held call: the requester (user and agent), the tool's public
//! name and the SHA-256 of the exact arguments ([`arguments_sha256`]). It is used once. An
//! approver must hold the `approver` admin role, must not be the requester (same user, whatever
//! the agent), and must confirm the arguments' hash, so a decision taken on what one screen
//! showed cannot approve other arguments. Decided, expired and voided ids are remembered (a
//! bounded number), so a replayed decision is refused as such rather than as "unknown".
//!
//! While a call waits, a caller that asked for progress (a `progressToken`, and a stream the
//! gateway can send on: see [`crate::pipeline::Caller::notify`]) gets `notifications/progress`
//! every `approvals.progress_interval`, naming the approval id. Both protocol eras hold the
//! same way (docs/adr/0009-approval-holds.md).
//!
//! Pending approvals live in this process only: a restart fails every held call (its
//! connection closes) and forgets the pending list; an approval never outlives its call.
//! The number of pending approvals is bounded, in total and per requester.

pub mod webhook;

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use micromcp_audit::{ApprovalNote, ApprovalOutcome, AuditRecord};
use micromcp_auth::Principal;
use micromcp_config::ApprovalSettings;
use micromcp_protocol::{ErrorObject, error_codes};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use crate::outbox::Outbox;
use crate::pipeline::{Caller, Failure};
use crate::session::lock;

/// The admin role that may decide approvals.
pub const APPROVER_ROLE: &str = "approver";
/// Decided, expired and voided approval ids remembered to refuse replays (oldest forgotten first).
const SETTLED_REMEMBERED: usize = 4096;
/// Longest reason kept from an approver, in characters.
pub const MAX_REASON_CHARS: usize = 500;

/// The SHA-256 (lowercase hex) of a call's arguments in canonical JSON: compact, object keys
/// sorted by their UTF-8 bytes, strings and numbers as `serde_json` writes them. What an
/// approver confirms; the CLI computes it from the arguments it displayed.
pub fn arguments_sha256(arguments: &Value) -> String {
    let mut canonical = Vec::new();
    write_canonical(arguments, &mut canonical);
    hex::encode(Sha256::digest(&canonical))
}

fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                let _ = serde_json::to_writer(&mut *out, key);
                out.push(b':');
                write_canonical(item, out);
            }
            out.push(b'}');
        }
        scalar => {
            let _ = serde_json::to_writer(&mut *out, scalar);
        }
    }
}

/// Who asked for a held call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requester {
    pub user: String,
    pub agent: Option<String>,
    pub tenant: Option<String>,
}

/// A call waiting for approval, as approvers (and the webhook) see it.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingCall {
    pub id: String,
    /// `tools/call` (or `prompts/get`, `resources/read`).
    pub method: String,
    /// The public name the client called (`<service>.<tool>`; a prompt's name, a resource's URI).
    pub tool: String,
    /// Exactly the arguments that go to the service if approved.
    pub arguments: Value,
    pub arguments_sha256: String,
    pub requester: Requester,
    pub created: SystemTime,
    pub expires: SystemTime,
    /// The policies that permitted the call and asked for approval.
    pub policies: Vec<String>,
}

impl PendingCall {
    /// JSON for the admin API and the webhook; the arguments only with `with_arguments`.
    pub fn to_json(&self, with_arguments: bool) -> Value {
        let mut v = json!({
            "id": self.id,
            "method": self.method,
            "tool": self.tool,
            "arguments_sha256": self.arguments_sha256,
            "requester": {
                "user": self.requester.user,
                "agent": self.requester.agent,
                "tenant": self.requester.tenant,
            },
            "created": rfc3339(self.created),
            "expires": rfc3339(self.expires),
            "policies": self.policies,
        });
        if with_arguments {
            v["arguments"] = self.arguments.clone();
        }
        v
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// What a held call needs to be registered.
#[derive(Debug, Clone)]
pub struct HeldCall {
    pub method: String,
    pub tool: String,
    pub arguments: Value,
    pub requester: Requester,
    pub policies: Vec<String>,
}

/// How a held call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    Approved {
        approver: String,
        reason: Option<String>,
    },
    Denied {
        approver: String,
        reason: Option<String>,
    },
    Expired,
    /// The gateway is stopping: no decision will come.
    Stopped,
}

/// What became of an approval that is no longer pending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    Approved {
        approver: String,
    },
    Denied {
        approver: String,
    },
    Expired,
    /// Its call ended before a decision (client gone, cancelled, gateway stopping).
    Voided,
}

impl Settled {
    pub fn describe(&self) -> String {
        match self {
            Settled::Approved { approver } => format!("was already approved by {approver}"),
            Settled::Denied { approver } => format!("was already denied by {approver}"),
            Settled::Expired => "has expired".into(),
            Settled::Voided => "was withdrawn: its call ended before a decision".into(),
        }
    }
}

/// Why a call was not held (it fails at once).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HoldRefused {
    #[error(
        "this call needs a person's approval, but the gateway has no admin API ([admin]) where anyone could give it"
    )]
    NoApprovers,
    #[error(
        "too many calls are waiting for approval (at most {0}, approvals.max_pending); retry later"
    )]
    Full(usize),
    #[error(
        "too many of your calls are waiting for approval (at most {0}, approvals.max_pending_per_principal); wait for a decision first"
    )]
    FullForRequester(usize),
    #[error("no approval id could be drawn; retry later")]
    NoRandomness,
}

/// Why a decision was refused. Each refusal is audited by the admin API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecideError {
    #[error("only a principal with the {APPROVER_ROLE:?} admin role may decide approvals")]
    NotApprover,
    #[error("no pending approval {0:?}")]
    Unknown(String),
    #[error("approval {id} {}", .settled.describe())]
    Settled { id: String, settled: Settled },
    #[error("{approver} asked for this call and cannot decide its approval: another approver must")]
    SelfApproval { approver: String },
    #[error(
        "approving needs the arguments_sha256 of the arguments you reviewed (micromcp approvals show {0})"
    )]
    MissingHash(String),
    #[error(
        "the arguments you confirmed (sha256 {confirmed}) are not the held call's (sha256 {actual}); review them again with `micromcp approvals show {id}`"
    )]
    ArgumentsMismatch {
        id: String,
        confirmed: String,
        actual: String,
    },
}

/// The pending approvals of this gateway process.
pub struct Approvals {
    timeout: Duration,
    progress_interval: Duration,
    max_pending: usize,
    max_per_requester: usize,
    /// Whether anyone can decide (an admin listener is configured).
    decidable: bool,
    state: Mutex<State>,
    webhook: Option<webhook::Webhook>,
}

#[derive(Default)]
struct State {
    pending: HashMap<String, Pending>,
    per_requester: HashMap<String, usize>,
    settled: HashMap<String, Settled>,
    settled_order: VecDeque<String>,
}

struct Pending {
    call: PendingCall,
    resolve: oneshot::Sender<Resolution>,
}

impl State {
    /// Takes `id` out of the pending set (if there) and remembers how it settled.
    fn settle(&mut self, id: &str, how: Settled) -> Option<Pending> {
        let pending = self.pending.remove(id)?;
        let user = &pending.call.requester.user;
        if let Some(n) = self.per_requester.get_mut(user) {
            *n -= 1;
            if *n == 0 {
                self.per_requester.remove(user);
            }
        }
        if self.settled_order.len() >= SETTLED_REMEMBERED
            && let Some(oldest) = self.settled_order.pop_front()
        {
            self.settled.remove(&oldest);
        }
        self.settled.insert(id.to_owned(), how);
        self.settled_order.push_back(id.to_owned());
        Some(pending)
    }
}

impl std::fmt::Debug for Approvals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Approvals")
            .field("pending", &lock(&self.state).pending.len())
            .finish_non_exhaustive()
    }
}

impl Approvals {
    /// The store; `decidable` says whether an admin API exists to decide. Starts the webhook
    /// sender (a task) when one is configured, so it must run inside a Tokio runtime then.
    pub fn new(settings: &ApprovalSettings, decidable: bool) -> Self {
        Self {
            timeout: settings.timeout,
            progress_interval: settings.progress_interval,
            max_pending: settings.max_pending,
            max_per_requester: settings.max_pending_per_principal,
            decidable,
            state: Mutex::new(State::default()),
            webhook: settings.webhook.as_ref().map(webhook::Webhook::start),
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn progress_interval(&self) -> Duration {
        self.progress_interval
    }

    /// Whether a held call could be decided at all (an admin API is configured); without one,
    /// a call that needs approval fails at once instead of being held.
    pub fn decidable(&self) -> bool {
        self.decidable
    }

    /// The approval-hold stage of the request path: registers the call (`method` on the public
    /// name `tool` with `params`, permitted by `policies`), waits for a decision and notes the
    /// approval in the request's audit record (whose `rule` stays the permitting policies).
    /// `Ok` means approved: forward it.
    pub(crate) async fn hold(
        &self,
        caller: &Caller,
        method: &str,
        tool: &str,
        params: &Map<String, Value>,
        policies: &[String],
        record: &mut AuditRecord,
    ) -> Result<(), Failure> {
        // The very object the policy saw (a resource read has no arguments).
        let arguments = match params.get("arguments") {
            Some(Value::Object(a)) if method != "resources/read" => Value::Object(a.clone()),
            _ => json!({}),
        };
        let call = HeldCall {
            method: method.to_owned(),
            tool: tool.to_owned(),
            arguments,
            requester: Requester::of(&caller.principal),
            policies: policies.to_vec(),
        };
        let progress_token = params.get("_meta").and_then(|m| m.get("progressToken"));
        let ticket = self.register(call).map_err(|refused| {
            // No approval exists: the hold stage itself is what decided.
            let rule = match refused {
                HoldRefused::NoApprovers => "approval-unavailable",
                HoldRefused::Full(_) | HoldRefused::FullForRequester(_) => "approval-limit",
                HoldRefused::NoRandomness => "approval-error",
            };
            record.rule = Some(rule.into());
            Failure::Denied(Box::new(ErrorObject::new(
                error_codes::SERVER_ERROR,
                refused.to_string(),
            )))
        })?;
        let id = ticket.id.clone();
        // What the record says if the request ends while held (the client went away): the
        // guard in `Gateway::handle` writes it; a decision below overwrites it.
        record.approval = Some(ApprovalNote {
            id: id.clone(),
            outcome: Some(ApprovalOutcome::Voided),
            approver: None,
            reason: None,
        });
        if let Some(on_hold) = &caller.on_hold {
            on_hold.notify_one();
        }
        let progress = match (progress_token, &caller.notify) {
            (Some(token), Some(sink)) => Some(Progress {
                sink: sink.clone(),
                token: token.clone(),
            }),
            _ => None,
        };
        let resolution = ticket.wait(progress).await;
        let note = record.approval.get_or_insert_with(|| ApprovalNote {
            id: id.clone(),
            outcome: None,
            approver: None,
            reason: None,
        });
        let refused = |outcome: &str, message: String| {
            Failure::Denied(Box::new(ErrorObject {
                code: error_codes::SERVER_ERROR,
                message,
                data: Some(json!({ "approval": id, "outcome": outcome })),
            }))
        };
        match resolution {
            Resolution::Approved { approver, reason } => {
                note.outcome = Some(ApprovalOutcome::Approved);
                note.approver = Some(approver);
                note.reason = reason;
                Ok(())
            }
            Resolution::Denied { approver, reason } => {
                let why = reason
                    .as_deref()
                    .map_or_else(String::new, |r| format!(": {r}"));
                let message = format!("approval {id} was denied by {approver}{why}");
                note.outcome = Some(ApprovalOutcome::Denied);
                note.approver = Some(approver);
                note.reason = reason;
                Err(refused("denied", message))
            }
            Resolution::Expired => {
                note.outcome = Some(ApprovalOutcome::Expired);
                Err(refused(
                    "expired",
                    format!(
                        "approval {id} expired after {}: nobody approved the call in time",
                        shown(self.timeout)
                    ),
                ))
            }
            Resolution::Stopped => {
                note.outcome = Some(ApprovalOutcome::Voided);
                Err(refused(
                    "voided",
                    format!("approval {id} was voided: the gateway is stopping; call again later"),
                ))
            }
        }
    }

    /// Registers a call as pending (and tells the webhook). The approval is voided when the
    /// returned ticket is dropped before it resolved.
    pub fn register(&self, call: HeldCall) -> Result<Ticket<'_>, HoldRefused> {
        if !self.decidable {
            return Err(HoldRefused::NoApprovers);
        }
        let id = new_id().ok_or(HoldRefused::NoRandomness)?;
        let created = SystemTime::now();
        let deadline = tokio::time::Instant::now() + self.timeout;
        let pending = PendingCall {
            id: id.clone(),
            arguments_sha256: arguments_sha256(&call.arguments),
            method: call.method,
            tool: call.tool,
            arguments: call.arguments,
            requester: call.requester,
            created,
            expires: created + self.timeout,
            policies: call.policies,
        };
        let (tx, rx) = oneshot::channel();
        let announced;
        {
            let mut state = lock(&self.state);
            if state.pending.len() >= self.max_pending {
                return Err(HoldRefused::Full(self.max_pending));
            }
            let mine = state.per_requester.get(&pending.requester.user).copied();
            if mine.unwrap_or(0) >= self.max_per_requester {
                return Err(HoldRefused::FullForRequester(self.max_per_requester));
            }
            *state
                .per_requester
                .entry(pending.requester.user.clone())
                .or_default() += 1;
            announced = self.webhook.as_ref().map(|_| pending.clone());
            state.pending.insert(
                id.clone(),
                Pending {
                    call: pending,
                    resolve: tx,
                },
            );
        }
        if let (Some(hook), Some(call)) = (&self.webhook, announced) {
            hook.notify(&call);
        }
        Ok(Ticket {
            approvals: self,
            id,
            rx,
            deadline,
            done: false,
        })
    }

    /// Approves or denies a pending call. Refused — and the call keeps waiting — unless
    /// `approver` has the approver role, is not the requester, and (to approve) confirms the
    /// held arguments' SHA-256. Returns the decided call.
    pub fn decide(
        &self,
        id: &str,
        approver: &Principal,
        approve: bool,
        reason: Option<String>,
        arguments_sha256: Option<&str>,
    ) -> Result<PendingCall, DecideError> {
        if !approver.roles.iter().any(|r| r == APPROVER_ROLE) {
            return Err(DecideError::NotApprover);
        }
        let mut state = lock(&self.state);
        let Some(pending) = state.pending.get(id) else {
            return Err(match state.settled.get(id) {
                Some(settled) => DecideError::Settled {
                    id: id.to_owned(),
                    settled: settled.clone(),
                },
                None => DecideError::Unknown(id.chars().take(64).collect()),
            });
        };
        let call = &pending.call;
        if call.requester.user == approver.user {
            return Err(DecideError::SelfApproval {
                approver: approver.user.clone(),
            });
        }
        match arguments_sha256 {
            None if approve => return Err(DecideError::MissingHash(id.to_owned())),
            Some(confirmed) if !confirmed.eq_ignore_ascii_case(&call.arguments_sha256) => {
                return Err(DecideError::ArgumentsMismatch {
                    id: id.to_owned(),
                    confirmed: confirmed.chars().take(64).collect(),
                    actual: call.arguments_sha256.clone(),
                });
            }
            _ => {}
        }
        let approver = approver.user.clone();
        let (settled, resolution) = if approve {
            (
                Settled::Approved {
                    approver: approver.clone(),
                },
                Resolution::Approved { approver, reason },
            )
        } else {
            (
                Settled::Denied {
                    approver: approver.clone(),
                },
                Resolution::Denied { approver, reason },
            )
        };
        let pending = state.settle(id, settled).expect("pending, checked above");
        // Sent under the lock: a ticket whose deadline passes now finds the call settled and
        // takes this resolution instead of expiring it. A ticket being dropped voids only
        // under the lock too, so its receiver is still there.
        if pending.resolve.send(resolution).is_err() {
            state.settled.insert(id.to_owned(), Settled::Voided);
            return Err(DecideError::Settled {
                id: id.to_owned(),
                settled: Settled::Voided,
            });
        }
        Ok(pending.call)
    }

    /// The pending calls, oldest first, as JSON without their arguments (which may be large;
    /// [`Approvals::get`] has them).
    pub fn list(&self) -> Vec<Value> {
        let state = lock(&self.state);
        let mut calls: Vec<&PendingCall> = state.pending.values().map(|p| &p.call).collect();
        calls.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
        calls.into_iter().map(|c| c.to_json(false)).collect()
    }

    /// One pending call, or how it settled.
    pub fn get(&self, id: &str) -> Result<PendingCall, DecideError> {
        let state = lock(&self.state);
        if let Some(p) = state.pending.get(id) {
            return Ok(p.call.clone());
        }
        Err(match state.settled.get(id) {
            Some(settled) => DecideError::Settled {
                id: id.to_owned(),
                settled: settled.clone(),
            },
            None => DecideError::Unknown(id.chars().take(64).collect()),
        })
    }

    /// The gateway is stopping: every held call fails now (with a clear error) instead of
    /// waiting for the end of the shutdown grace.
    pub fn stop(&self) {
        let mut state = lock(&self.state);
        let ids: Vec<String> = state.pending.keys().cloned().collect();
        for id in ids {
            if let Some(p) = state.settle(&id, Settled::Voided) {
                let _ = p.resolve.send(Resolution::Stopped);
            }
        }
    }

    /// Approvals waiting for a decision.
    pub fn pending_count(&self) -> usize {
        lock(&self.state).pending.len()
    }
}

/// Where to tell a waiting caller that it is still waiting.
#[derive(Debug, Clone)]
pub struct Progress {
    pub sink: Outbox<Value>,
    /// The client's own progress token.
    pub token: Value,
}

/// A registered pending approval; dropping it before it resolved voids the approval.
#[derive(Debug)]
pub struct Ticket<'a> {
    approvals: &'a Approvals,
    pub id: String,
    rx: oneshot::Receiver<Resolution>,
    deadline: tokio::time::Instant,
    done: bool,
}

impl Ticket<'_> {
    /// Waits for a decision or the deadline, telling `progress` every progress interval.
    pub async fn wait(mut self, progress: Option<Progress>) -> Resolution {
        let expiry = tokio::time::sleep_until(self.deadline);
        tokio::pin!(expiry);
        let mut ticks = tokio::time::interval(self.approvals.progress_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sent = 0u64;
        let resolution = loop {
            tokio::select! {
                biased;
                decided = &mut self.rx => break decided.unwrap_or(Resolution::Stopped),
                () = &mut expiry => {
                    let expired = lock(&self.approvals.state).settle(&self.id, Settled::Expired);
                    if expired.is_some() {
                        break Resolution::Expired;
                    }
                    // Decided at the same moment: the resolution is in the channel already.
                }
                _ = ticks.tick(), if progress.is_some() => {
                    if let Some(p) = &progress {
                        sent += 1;
                        let left = self.deadline.saturating_duration_since(tokio::time::Instant::now());
                        let _ = p.sink.send(json!({
                            "jsonrpc": "2.0",
                            "method": "notifications/progress",
                            "params": {
                                "progressToken": p.token,
                                "progress": sent,
                                "message": format!(
                                    "waiting for approval {} (expires in {}); an approver can run: micromcp approvals show {}",
                                    self.id, shown(Duration::from_secs(left.as_secs())), self.id
                                ),
                            },
                        }));
                    }
                }
            }
        };
        self.done = true;
        resolution
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if !self.done {
            lock(&self.approvals.state).settle(&self.id, Settled::Voided);
        }
    }
}

/// `apr_` and 96 random bits in hex: unique, and nothing to guess from.
fn new_id() -> Option<String> {
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).ok()?;
    Some(format!("apr_{}", hex::encode(bytes)))
}

/// A duration as config would write it (`10m`, `90s`, `1h 30m`).
fn shown(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// An approver's reason as it may be kept: trimmed, without control characters, bounded.
pub fn clean_reason(reason: Option<&str>) -> Result<Option<String>, String> {
    let Some(reason) = reason.map(str::trim).filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    if reason.chars().any(char::is_control) {
        return Err("reason must not contain control characters (newlines, escapes)".into());
    }
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(format!(
            "reason is longer than {MAX_REASON_CHARS} characters"
        ));
    }
    Ok(Some(reason.to_owned()))
}

impl Requester {
    pub fn of(principal: &Principal) -> Self {
        Self {
            user: principal.user.clone(),
            agent: principal.agent.clone(),
            tenant: principal.tenant.clone(),
        }
    }
}

#[cfg(test)]
mod tests;
