//! Per-principal limits: one principal cannot lock out the others by holding sessions, streams
//! or requests in progress. Each test holds far fewer than the defaults would allow, with the
//! limits configured small, and is bounded in time even when the defence fails.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use serde_json::{Value, json};

fn initialize_body() -> Value {
    json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
        "protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"0"}}})
}

/// Sends `initialize` and returns the reply (status and, on success, the session id).
async fn try_initialize(client: &Client) -> (Reply, Option<String>) {
    let mut fresh = client.clone();
    fresh.session = None;
    let reply = fresh.send(&[], &initialize_body()).await;
    let id = reply
        .headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (reply, id)
}

fn in_session(client: &Client, id: &str) -> Client {
    let mut c = client.clone();
    c.session = Some(id.to_owned());
    c
}

/// Reads a stream until it ends; panics if it is still open after `limit`.
async fn assert_stream_ends(stream: reqwest::Response, limit: Duration, what: &str) {
    let mut body = stream.bytes_stream();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, body.next()).await {
            Ok(None | Some(Err(_))) => return,
            Ok(Some(Ok(_))) => {}
            Err(_) => panic!("{what}: the stream is still open after {limit:?}"),
        }
    }
}

/// Opens a GET notification stream and returns the response, whatever its status.
async fn get_stream(client: &Client) -> reqwest::Response {
    client
        .http
        .get(&client.url)
        .header("accept", "text/event-stream")
        .header(
            "authorization",
            format!("Bearer {}", client.token.as_deref().expect("token")),
        )
        .header(
            "mcp-session-id",
            client.session.as_deref().expect("session"),
        )
        .send()
        .await
        .expect("GET")
}

/// Opens a 2026-07-28 `subscriptions/listen` stream and returns the response.
async fn listen(client: &Client) -> reqwest::Response {
    let body = json!({"jsonrpc":"2.0","id":"listen-1","method":"subscriptions/listen","params":{
        "notifications": {"toolsListChanged": true}, "_meta": meta_2026()}});
    let mut stateless = client.clone();
    stateless.session = None;
    stateless
        .request(
            &[
                ("mcp-protocol-version", V2026),
                ("mcp-method", "subscriptions/listen"),
            ],
            &body,
        )
        .send()
        .await
        .expect("listen")
}

/// The audit records with `rule`, once at least one has been written.
/// The audit records with `rule`, once there are at least `n` of them (10 s at most: the
/// writer batches, so records of refusals made a moment ago may not be on disk yet).
async fn audited(gw: &Gateway, rule: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found: Vec<Value> = gw
            .audit()
            .into_iter()
            .filter(|r| r["rule"] == rule)
            .collect();
        if found.len() >= n || Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const SESSIONS: &str = r#"
[gateway]
max_sessions = 6
max_sessions_per_principal = 3
"#;

#[tokio::test(flavor = "multi_thread")]
async fn one_principal_opening_many_sessions_evicts_its_own_oldest_and_locks_out_nobody() {
    let gw = Gateway::start(&format!("{SESSIONS}{ECHO}"));
    let alice = gw.client(&gw.alice);
    let (_, listening) = try_initialize(&alice).await;
    let listening = listening.expect("alice's first session");
    let listening_stream = get_stream(&in_session(&alice, &listening)).await;
    assert_eq!(listening_stream.status(), 200);
    let (_, oldest_idle) = try_initialize(&alice).await;
    let oldest_idle = oldest_idle.expect("alice's second session");
    let mut newest = Vec::new();
    for i in 0..20 {
        let (reply, id) = try_initialize(&alice).await;
        assert_eq!(reply.status, 200, "alice's initialize {i}: {}", reply.body);
        newest.push(id.expect("session id"));
    }
    // Bob is not locked out by alice's twenty-two sessions.
    let (bob, id) = try_initialize(&gw.client(&gw.bob)).await;
    assert_eq!(bob.status, 200, "{}", bob.body);
    assert!(id.is_some());

    // Alice's idle sessions went first, oldest first; the one with an open stream is active.
    let gone = in_session(&alice, &oldest_idle)
        .call("tools/list", json!({}))
        .await;
    assert_eq!(gone.status, 404, "{}", gone.body);
    let kept = in_session(&alice, &listening)
        .call("tools/list", json!({}))
        .await;
    assert_eq!(kept.status, 200, "{}", kept.body);
    let last = newest.pop().expect("newest");
    let works = in_session(&alice, &last)
        .call("tools/list", json!({}))
        .await;
    assert!(tool_names(&works).contains(&"echo.add".to_owned()));

    // When all of them are active, the least recently used goes: its stream ends, it is 404.
    let second = newest.pop().expect("second newest");
    let mut streams = Vec::new();
    for id in [&second, &last] {
        let stream = get_stream(&in_session(&alice, id)).await;
        assert_eq!(stream.status(), 200);
        streams.push(stream);
    }
    let (reply, _) = try_initialize(&alice).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_stream_ends(listening_stream, Duration::from_secs(5), "evicted session").await;
    let evicted = in_session(&alice, &listening)
        .call("tools/list", json!({}))
        .await;
    assert_eq!(evicted.status, 404, "{}", evicted.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_session_table_refuses_new_sessions_but_never_evicts_another_principals() {
    let gw = Gateway::start(&format!(
        "[gateway]\nmax_sessions = 3\nmax_sessions_per_principal = 2\n{ECHO}"
    ));
    let bob = gw.client(&gw.bob);
    let (_, bobs) = try_initialize(&bob).await;
    let bobs = bobs.expect("bob's session");
    let alice = gw.client(&gw.alice);
    for _ in 0..2 {
        let (reply, _) = try_initialize(&alice).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    // The table is full, alice at her quota: her next session replaces her own oldest.
    let (again, _) = try_initialize(&alice).await;
    assert_eq!(again.status, 200, "{}", again.body);
    let still = in_session(&bob, &bobs).call("tools/list", json!({})).await;
    assert_eq!(still.status, 200, "{}", still.body);
    // Bob (1 of his 2) finds the table full: a clear 503, audited; nobody is evicted.
    let (refused, _) = try_initialize(&bob).await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    let message = refused.body["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains("gateway.max_sessions"), "{message}");
    assert!(!audited(&gw, "sessions-full", 1).await.is_empty());
    let still = in_session(&bob, &bobs).call("tools/list", json!({})).await;
    assert_eq!(still.status, 200, "{}", still.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_sessions_expire_after_the_configured_timeout_unless_their_stream_is_open() {
    let gw = Gateway::start(&format!("[gateway]\nsession_idle_timeout = \"1s\"\n{ECHO}"));
    let mut idle = gw.client(&gw.alice);
    idle.initialize().await;
    let mut listening = gw.client(&gw.alice);
    listening.initialize().await;
    let stream = get_stream(&listening).await;
    assert_eq!(stream.status(), 200);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let expired = idle.call("tools/list", json!({})).await;
    assert_eq!(expired.status, 404, "{}", expired.body);
    let alive = listening.call("tools/list", json!({})).await;
    assert_eq!(
        alive.status, 200,
        "an open stream keeps the session: {}",
        alive.body
    );
    drop(stream);
}

const STREAMS: &str = r#"
[gateway]
max_streams_per_principal = 2
"#;

#[tokio::test(flavor = "multi_thread")]
async fn streams_beyond_the_per_principal_cap_are_refused_audited_and_freed_when_closed() {
    let gw = Gateway::start(&format!("{STREAMS}{ECHO}"));
    let mut a = gw.client(&gw.alice);
    a.initialize().await;
    let mut b = gw.client(&gw.alice);
    b.initialize().await;

    let get = get_stream(&a).await;
    assert_eq!(get.status(), 200);
    let listening = listen(&a).await;
    assert_eq!(listening.status(), 200);

    // A third stream of any kind is refused: GET, listen, and an SSE answer.
    let refused = read_reply(get_stream(&b).await).await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert!(
        refused.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("too many open streams")),
        "{}",
        refused.body
    );
    let refused = read_reply(listen(&a).await).await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_eq!(refused.body["id"], "listen-1");
    let progress = b
        .call(
            "tools/call",
            json!({"name": "echo.slow", "arguments": {"seconds": 0.1, "steps": 1},
                   "_meta": {"progressToken": "p"}}),
        )
        .await;
    assert_eq!(progress.status, 429, "{}", progress.body);
    let records = audited(&gw, "stream-limit", 3).await;
    assert!(records.len() >= 3, "{records:?}");
    assert!(
        records
            .iter()
            .all(|r| r["principal"] == "alice" && r["http_status"] == 429)
    );

    // Bob has his own streams.
    let bobs = listen(&gw.client(&gw.bob)).await;
    assert_eq!(bobs.status(), 200);

    // Closing a stream (the client goes away) frees its slot.
    drop(listening);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let again = get_stream(&b).await;
        if again.status() == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the closed stream's slot was not freed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(get);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_get_stream_supersedes_the_old_one_which_ends_and_frees_its_slot() {
    let gw = Gateway::start(&format!("{STREAMS}{ECHO}"));
    let mut a = gw.client(&gw.alice);
    a.initialize().await;
    let old = get_stream(&a).await;
    assert_eq!(old.status(), 200);
    // With two slots, superseding five times works: each new stream takes the old one's slot.
    let mut newest = None;
    for i in 0..5 {
        let next = get_stream(&a).await;
        assert_eq!(next.status(), 200, "GET {i}");
        newest = Some(next);
    }
    assert_stream_ends(old, Duration::from_secs(5), "superseded stream").await;
    // The newest is the session's stream: it still holds one slot, so one more fits.
    let other = listen(&a).await;
    assert_eq!(other.status(), 200);
    let refused = listen(&a).await;
    assert_eq!(refused.status(), 429);
    drop(newest);
}

const REQUESTS: &str = r#"
[gateway]
max_requests_per_principal = 2

[[policy.grants]]
principal = "bob"
tools = ["echo.*"]
"#;

#[tokio::test(flavor = "multi_thread")]
async fn requests_beyond_the_per_principal_cap_get_429_at_once_and_others_are_unaffected() {
    let gw = Gateway::start(&format!("{REQUESTS}{ECHO}"));
    gw.wait_ready(&["echo"]).await;
    let mut alice = gw.client(&gw.alice);
    alice.initialize().await;
    let slow = |mut c: Client| async move {
        c.call(
            "tools/call",
            json!({"name": "echo.slow", "arguments": {"seconds": 2, "steps": 1}}),
        )
        .await
    };
    let (mut one, mut two) = (alice.clone(), alice.clone());
    (one.next_id, two.next_id) = (100, 200);
    let first = tokio::spawn(slow(one));
    let second = tokio::spawn(slow(two));
    tokio::time::sleep(Duration::from_millis(500)).await;

    let started = Instant::now();
    let refused = alice
        .call(
            "tools/call",
            json!({"name": "echo.add", "arguments": {"a": 1, "b": 2}}),
        )
        .await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused at once, not queued"
    );
    assert!(
        refused.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("too many requests in progress")),
        "{}",
        refused.body
    );

    // Bob is not held up by alice's requests.
    let mut bob = gw.client(&gw.bob);
    bob.initialize().await;
    let added = bob
        .call(
            "tools/call",
            json!({"name": "echo.add", "arguments": {"a": 1, "b": 2}}),
        )
        .await;
    assert_eq!(text_of(&added), "{\"sum\":3.0}");

    let records = audited(&gw, "request-limit", 1).await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["principal"], "alice");
    assert_eq!(records[0]["http_status"], 429);

    // Once hers finish, alice is served again.
    for call in [first, second] {
        let reply = call.await.expect("task");
        assert_eq!(text_of(&reply), "done after 1 steps");
    }
    let added = alice
        .call(
            "tools/call",
            json!({"name": "echo.add", "arguments": {"a": 2, "b": 2}}),
        )
        .await;
    assert_eq!(text_of(&added), "{\"sum\":4.0}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_sse_answer_counts_as_a_request_in_progress_until_its_stream_ends() {
    let gw = Gateway::start(&format!(
        "[gateway]\nmax_requests_per_principal = 1\n{ECHO}"
    ));
    gw.wait_ready(&["echo"]).await;
    let mut alice = gw.client(&gw.alice);
    alice.initialize().await;
    let with_progress = {
        let mut c = alice.clone();
        c.next_id = 100;
        tokio::spawn(async move {
            c.call(
                "tools/call",
                json!({"name": "echo.slow", "arguments": {"seconds": 2, "steps": 2},
                       "_meta": {"progressToken": "p"}}),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let refused = alice.call("tools/list", json!({})).await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    let done = with_progress.await.expect("task");
    assert_eq!(text_of(&done), "done after 2 steps");
    // The slot is given back when the server drops the finished stream, a moment after the
    // client has read its end.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let listed = alice.call("tools/list", json!({})).await;
        if listed.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "{}", listed.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One session cannot hold upstream subscriptions without bound: beyond 256 a subscribe is
/// refused with a clear error (and nothing is subscribed upstream); unsubscribing makes room.
#[tokio::test(flavor = "multi_thread")]
async fn resource_subscriptions_per_session_are_capped() {
    let gw = Gateway::start(ECHO);
    gw.wait_ready(&["echo"]).await;
    let mut alice = gw.client(&gw.alice);
    alice.initialize().await;
    for i in 0..256 {
        let reply = alice
            .call(
                "resources/subscribe",
                json!({"uri": format!("echo+echo://sub/{i}")}),
            )
            .await;
        assert_eq!(reply.result(), &json!({}), "subscription {i}");
    }
    let refused = alice
        .call("resources/subscribe", json!({"uri": "echo+echo://sub/256"}))
        .await;
    assert_eq!(refused.error_code(), -32602, "{}", refused.body);
    assert!(
        refused.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("at most 256 resource subscriptions")),
        "{}",
        refused.body
    );
    // Subscribing again to one it holds is no new subscription.
    let again = alice
        .call("resources/subscribe", json!({"uri": "echo+echo://sub/0"}))
        .await;
    assert_eq!(again.result(), &json!({}));
    let reply = alice
        .call("resources/unsubscribe", json!({"uri": "echo+echo://sub/0"}))
        .await;
    assert_eq!(reply.result(), &json!({}));
    let reply = alice
        .call("resources/subscribe", json!({"uri": "echo+echo://sub/256"}))
        .await;
    assert_eq!(reply.result(), &json!({}), "room was made");
}
