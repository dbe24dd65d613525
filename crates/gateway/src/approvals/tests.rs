//! The pending-approval store: binding, single use, expiry, self-approval, mismatched
//! arguments, replays, voiding, bounds and progress (with Tokio's paused clock).

use std::time::Duration;

use micromcp_auth::{AuthMethod, Principal};
use micromcp_config::ApprovalSettings;
use serde_json::{Value, json};

use super::*;

fn settings() -> ApprovalSettings {
    ApprovalSettings {
        timeout: Duration::from_secs(600),
        progress_interval: Duration::from_secs(5),
        max_pending: 4,
        max_pending_per_principal: 2,
        webhook: None,
    }
}

fn approver(user: &str) -> Principal {
    let mut p = Principal::named(user, None, AuthMethod::ApiToken);
    p.roles = vec![APPROVER_ROLE.into()];
    p
}

fn call_by(user: &str, arguments: Value) -> HeldCall {
    HeldCall {
        method: "tools/call".into(),
        tool: "bank.refund".into(),
        arguments,
        requester: Requester {
            user: user.into(),
            agent: Some("bot".into()),
            tenant: None,
        },
        policies: vec!["refunds-over-100".into()],
    }
}

fn refund() -> Value {
    json!({ "order": "A-17", "amount": 250, "currency": "EUR" })
}

/// Registers a call and lets it wait in a task; returns its id and the task.
async fn held(
    approvals: &std::sync::Arc<Approvals>,
    call: HeldCall,
) -> (String, tokio::task::JoinHandle<Resolution>) {
    held_with(approvals, call, None).await
}

async fn held_with(
    approvals: &std::sync::Arc<Approvals>,
    call: HeldCall,
    progress: Option<Progress>,
) -> (String, tokio::task::JoinHandle<Resolution>) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let store = approvals.clone();
    let task = tokio::spawn(async move {
        let ticket = store.register(call).expect("held");
        let _ = tx.send(ticket.id.clone());
        ticket.wait(progress).await
    });
    (rx.await.expect("registered"), task)
}

fn store() -> std::sync::Arc<Approvals> {
    std::sync::Arc::new(Approvals::new(&settings(), true))
}

#[test]
fn the_arguments_hash_is_canonical_and_binds_every_value() {
    let a = arguments_sha256(&json!({ "b": [1, {"y": 2, "x": "é"}], "a": null }));
    let b = arguments_sha256(&json!({ "a": null, "b": [1, {"x": "é", "y": 2}] }));
    assert_eq!(a, b, "key order does not matter");
    assert_eq!(a.len(), 64);
    // sha256 of the canonical text itself, computed independently:
    // printf '{"a":null,"b":[1,{"x":"é","y":2}]}' | sha256sum
    assert_eq!(
        a,
        hex::encode(Sha256::digest(r#"{"a":null,"b":[1,{"x":"é","y":2}]}"#))
    );
    for other in [
        json!({ "a": null, "b": [1, {"x": "é", "y": 3}] }),
        json!({ "a": null, "b": [{"x": "é", "y": 2}, 1] }),
        json!({ "a": null, "b": [1, {"x": "é", "y": "2"}] }),
        json!({ "b": [1, {"x": "é", "y": 2}] }),
    ] {
        assert_ne!(arguments_sha256(&other), a, "{other}");
    }
}

#[tokio::test(start_paused = true)]
async fn an_approval_lets_the_call_go_on_with_the_approver_and_reason() {
    let approvals = store();
    let (id, task) = held(&approvals, call_by("alice", refund())).await;
    let pending = approvals.get(&id).expect("pending");
    assert_eq!(pending.tool, "bank.refund");
    assert_eq!(pending.requester.user, "alice");
    assert_eq!(pending.requester.agent.as_deref(), Some("bot"));
    assert_eq!(pending.arguments, refund());
    assert_eq!(pending.arguments_sha256, arguments_sha256(&refund()));
    assert_eq!(
        pending.expires.duration_since(pending.created).ok(),
        Some(Duration::from_secs(600))
    );
    assert!(id.starts_with("apr_") && id.len() == 28, "{id}");
    let decided = approvals
        .decide(
            &id,
            &approver("carol"),
            true,
            Some("customer called".into()),
            Some(&pending.arguments_sha256),
        )
        .expect("approved");
    assert_eq!(decided.id, id);
    assert_eq!(
        task.await.expect("task"),
        Resolution::Approved {
            approver: "carol".into(),
            reason: Some("customer called".into())
        }
    );
    assert_eq!(approvals.pending_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_denial_fails_the_call_and_needs_no_hash() {
    let approvals = store();
    let (id, task) = held(&approvals, call_by("alice", refund())).await;
    approvals
        .decide(&id, &approver("carol"), false, None, None)
        .expect("denied");
    assert_eq!(
        task.await.expect("task"),
        Resolution::Denied {
            approver: "carol".into(),
            reason: None
        }
    );
}

#[tokio::test(start_paused = true)]
async fn an_approval_is_single_use_and_a_replay_is_refused_as_such() {
    let approvals = store();
    let (id, task) = held(&approvals, call_by("alice", refund())).await;
    let hash = arguments_sha256(&refund());
    approvals
        .decide(&id, &approver("carol"), true, None, Some(&hash))
        .expect("approved");
    task.await.expect("task");
    for (who, approve) in [("carol", true), ("dave", true), ("dave", false)] {
        let replay = approvals.decide(&id, &approver(who), approve, None, Some(&hash));
        assert_eq!(
            replay,
            Err(DecideError::Settled {
                id: id.clone(),
                settled: Settled::Approved {
                    approver: "carol".into()
                }
            }),
            "{who} {approve}"
        );
    }
    let message = approvals.get(&id).unwrap_err().to_string();
    assert!(message.contains("already approved by carol"), "{message}");
    // A second call with the same arguments gets its own approval: the first one is spent.
    let (second, task) = held(&approvals, call_by("alice", refund())).await;
    assert_ne!(second, id);
    approvals
        .decide(&second, &approver("dave"), false, None, None)
        .expect("denied");
    assert!(matches!(
        task.await.expect("task"),
        Resolution::Denied { .. }
    ));
}

#[tokio::test(start_paused = true)]
async fn nobody_approves_their_own_call_whatever_the_agent() {
    let approvals = store();
    let (id, task) = held(&approvals, call_by("alice", refund())).await;
    let hash = arguments_sha256(&refund());
    let mut alice_elsewhere = approver("alice");
    alice_elsewhere.agent = Some("another-agent".into());
    for alice in [approver("alice"), alice_elsewhere] {
        for approve in [true, false] {
            assert_eq!(
                approvals.decide(&id, &alice, approve, None, Some(&hash)),
                Err(DecideError::SelfApproval {
                    approver: "alice".into()
                })
            );
        }
    }
    assert!(
        approvals.get(&id).is_ok(),
        "still pending after the refusals"
    );
    approvals
        .decide(&id, &approver("carol"), true, None, Some(&hash))
        .expect("another approver");
    assert!(matches!(
        task.await.expect("task"),
        Resolution::Approved { .. }
    ));
}

#[tokio::test(start_paused = true)]
async fn approving_other_arguments_or_none_is_refused_and_the_call_keeps_waiting() {
    let approvals = store();
    let (id, task) = held(&approvals, call_by("alice", refund())).await;
    let mut smaller = refund();
    smaller["amount"] = json!(25);
    let wrong = arguments_sha256(&smaller);
    let refused = approvals.decide(&id, &approver("carol"), true, None, Some(&wrong));
    assert!(
        matches!(&refused, Err(DecideError::ArgumentsMismatch { confirmed, actual, .. })
            if *confirmed == wrong && *actual == arguments_sha256(&refund())),
        "{refused:?}"
    );
    assert_eq!(
        approvals.decide(&id, &approver("carol"), true, None, None),
        Err(DecideError::MissingHash(id.clone()))
    );
    assert!(
        matches!(
            approvals.decide(&id, &approver("carol"), false, None, Some(&wrong)),
            Err(DecideError::ArgumentsMismatch { .. })
        ),
        "a denial that names a hash must name the right one"
    );
    assert!(approvals.get(&id).is_ok(), "still pending");
    let upper = arguments_sha256(&refund()).to_ascii_uppercase();
    approvals
        .decide(&id, &approver("carol"), true, None, Some(&upper))
        .expect("hex digits in any case");
    assert!(matches!(
        task.await.expect("task"),
        Resolution::Approved { .. }
    ));
}

#[tokio::test(start_paused = true)]
async fn only_approvers_decide_and_unknown_ids_are_named() {
    let approvals = store();
    let (id, _task) = held(&approvals, call_by("alice", refund())).await;
    let mut viewer = approver("carol");
    viewer.roles = vec!["viewer".into()];
    let hash = arguments_sha256(&refund());
    assert_eq!(
        approvals.decide(&id, &viewer, true, None, Some(&hash)),
        Err(DecideError::NotApprover)
    );
    assert_eq!(
        approvals.decide("apr_nope", &approver("carol"), true, None, Some(&hash)),
        Err(DecideError::Unknown("apr_nope".into()))
    );
}

#[tokio::test(start_paused = true)]
async fn an_undecided_call_expires_after_the_timeout() {
    let approvals = store();
    let (id, task) = held(&approvals, call_by("alice", refund())).await;
    tokio::time::sleep(Duration::from_secs(599)).await;
    assert!(approvals.get(&id).is_ok(), "pending until the timeout");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(task.await.expect("task"), Resolution::Expired);
    assert_eq!(
        approvals.decide(
            &id,
            &approver("carol"),
            true,
            None,
            Some(&arguments_sha256(&refund()))
        ),
        Err(DecideError::Settled {
            id,
            settled: Settled::Expired
        })
    );
    assert_eq!(approvals.pending_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_held_call_voids_its_approval() {
    let approvals = store();
    let (id, task) = held(&approvals, call_by("alice", refund())).await;
    task.abort();
    let _ = task.await;
    assert_eq!(approvals.pending_count(), 0);
    assert_eq!(
        approvals.decide(
            &id,
            &approver("carol"),
            true,
            None,
            Some(&arguments_sha256(&refund()))
        ),
        Err(DecideError::Settled {
            id: id.clone(),
            settled: Settled::Voided
        })
    );
    // The slot is free again.
    let (_, _a) = held(&approvals, call_by("alice", refund())).await;
    let (_, _b) = held(&approvals, call_by("alice", refund())).await;
}

#[tokio::test(start_paused = true)]
async fn pending_approvals_are_bounded_per_requester_and_in_total() {
    let approvals = store(); // at most 2 per requester, 4 in total
    let _a1 = held(&approvals, call_by("alice", refund())).await;
    let _a2 = held(&approvals, call_by("alice", refund())).await;
    assert_eq!(
        approvals.register(call_by("alice", refund())).map(|_| ()),
        Err(HoldRefused::FullForRequester(2))
    );
    let _b1 = held(&approvals, call_by("bob", refund())).await;
    let _b2 = held(&approvals, call_by("bob", refund())).await;
    assert_eq!(
        approvals.register(call_by("erin", refund())).map(|_| ()),
        Err(HoldRefused::Full(4))
    );
    let message = HoldRefused::FullForRequester(2).to_string();
    assert!(message.contains("max_pending_per_principal"), "{message}");
}

#[tokio::test(start_paused = true)]
async fn without_an_admin_api_nothing_is_held() {
    let approvals = Approvals::new(&settings(), false);
    let refused = approvals.register(call_by("alice", refund())).map(|_| ());
    assert_eq!(refused, Err(HoldRefused::NoApprovers));
    assert!(refused.unwrap_err().to_string().contains("[admin]"));
}

#[tokio::test(start_paused = true)]
async fn a_waiting_caller_gets_progress_naming_the_approval() {
    let approvals = store();
    let (sink, mut inbox) = crate::outbox::outbox();
    let progress = Progress {
        sink,
        token: json!("client-token-7"),
    };
    let (id, waiting) = held_with(&approvals, call_by("alice", refund()), Some(progress)).await;
    tokio::time::sleep(Duration::from_millis(10_500)).await;
    let mut seen = Vec::new();
    while let Some(Some(n)) = futures::FutureExt::now_or_never(futures::StreamExt::next(&mut inbox))
    {
        seen.push(n);
    }
    assert_eq!(
        seen.len(),
        3,
        "at once, after 5 s and after 10 s: {seen:#?}"
    );
    for (i, n) in seen.iter().enumerate() {
        assert_eq!(n["method"], "notifications/progress");
        assert_eq!(n["params"]["progressToken"], "client-token-7");
        assert_eq!(n["params"]["progress"], json!(i + 1), "increasing");
        let message = n["params"]["message"].as_str().expect("message");
        assert!(message.contains(&id), "{message}");
    }
    assert!(
        seen[0]["params"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("expires in 10m")),
        "{}",
        seen[0]
    );
    approvals
        .decide(&id, &approver("carol"), false, None, None)
        .expect("denied");
    assert!(matches!(
        waiting.await.expect("task"),
        Resolution::Denied { .. }
    ));
}

#[tokio::test(start_paused = true)]
async fn stopping_the_gateway_fails_every_held_call_at_once() {
    let approvals = store();
    let (first, a) = held(&approvals, call_by("alice", refund())).await;
    let (_, b) = held(&approvals, call_by("bob", refund())).await;
    approvals.stop();
    assert_eq!(a.await.expect("task"), Resolution::Stopped);
    assert_eq!(b.await.expect("task"), Resolution::Stopped);
    assert!(matches!(
        approvals.get(&first),
        Err(DecideError::Settled {
            settled: Settled::Voided,
            ..
        })
    ));
}

#[test]
fn reasons_are_trimmed_bounded_and_free_of_control_characters() {
    assert_eq!(clean_reason(None), Ok(None));
    assert_eq!(clean_reason(Some("  ")), Ok(None));
    assert_eq!(clean_reason(Some(" ok ")), Ok(Some("ok".into())));
    assert!(clean_reason(Some("line\nbreak")).is_err());
    assert!(clean_reason(Some("\u{1b}[31mred")).is_err());
    assert!(clean_reason(Some(&"x".repeat(MAX_REASON_CHARS + 1))).is_err());
    assert!(clean_reason(Some(&"é".repeat(MAX_REASON_CHARS))).is_ok());
}

#[tokio::test(start_paused = true)]
async fn the_list_is_oldest_first_and_leaves_out_the_arguments() {
    let approvals = store();
    let (first, _a) = held(&approvals, call_by("alice", refund())).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    std::thread::sleep(Duration::from_millis(5)); // `created` is wall-clock time
    let (second, _b) = held(
        &approvals,
        call_by("bob", json!({ "big": "x".repeat(1000) })),
    )
    .await;
    let list = approvals.list();
    let ids: Vec<&str> = list.iter().filter_map(|c| c["id"].as_str()).collect();
    assert_eq!(ids, [first.as_str(), second.as_str()]);
    assert!(
        list.iter().all(|c| c.get("arguments").is_none()),
        "{list:#?}"
    );
    assert_eq!(list[1]["requester"]["user"], "bob");
    assert_eq!(list[0]["policies"], json!(["refunds-over-100"]));
    assert_eq!(
        approvals.get(&second).expect("pending").arguments["big"]
            .as_str()
            .map(str::len),
        Some(1000)
    );
}
