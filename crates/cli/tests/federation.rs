//! Federation through the real binary: namespacing, both eras, resources, prompts, completion,
//! HTTP upstreams, era normalisation.

mod common;

use common::*;
use serde_json::{Value, json};

const TWO_SERVICES: &str = r#"
[[policy.grants]]
principal = "alice"
tools = ["echo.*", "second.echo", "second.add"]
prompts = ["echo.*"]
resources = ["echo.*"]

[services.echo]
builtin = "echo"

[services.second]
builtin = "echo"
"#;

#[tokio::test(flavor = "multi_thread")]
async fn session_era_client_sees_namespaced_tools_of_every_service_and_calls_them() {
    let gw = Gateway::start(TWO_SERVICES);
    gw.wait_ready(&["echo", "second"]).await;
    let mut c = gw.client(&gw.alice);
    let init = c.initialize().await;
    assert_eq!(init.result()["protocolVersion"], "2025-11-25");
    assert_eq!(init.result()["serverInfo"]["name"], "micromcp");

    let mut names = tool_names(&c.call("tools/list", json!({})).await);
    names.sort();
    let expected = [
        "echo.add",
        "echo.confirm",
        "echo.echo",
        "echo.env",
        "echo.exit",
        "echo.fail",
        "echo.now",
        "echo.refund",
        "echo.slow",
        "second.add",
        "second.echo",
    ];
    assert_eq!(
        names, expected,
        "only granted tools, each under its service"
    );

    let r = c
        .call(
            "tools/call",
            json!({"name": "second.add", "arguments": {"a": 2, "b": 40}}),
        )
        .await;
    assert_eq!(r.result()["structuredContent"]["sum"], 42.0);
    assert!(
        r.result().get("resultType").is_none(),
        "session-era results carry no resultType"
    );
    let r = c
        .call(
            "tools/call",
            json!({"name": "echo.echo", "arguments": {"text": "hello"}}),
        )
        .await;
    assert_eq!(text_of(&r), "hello");
}

#[tokio::test(flavor = "multi_thread")]
async fn stateless_2026_client_works_without_a_session_and_gets_2026_result_shapes() {
    let gw = Gateway::start(ECHO);
    gw.wait_ready(&["echo"]).await;
    let mut c = gw.client(&gw.alice);
    let d = c.call_2026("server/discover", json!({})).await;
    assert_eq!(d.status, 200);
    assert!(d.headers.get("mcp-session-id").is_none());
    let d = d.result();
    assert!(
        d["supportedVersions"]
            .as_array()
            .expect("versions")
            .contains(&json!("2026-07-28"))
    );
    assert_eq!(d["resultType"], "complete");
    assert_eq!(d["cacheScope"], "private");

    let list = c.call_2026("tools/list", json!({})).await;
    assert_eq!(list.result()["resultType"], "complete");
    assert_eq!(list.result()["ttlMs"], 0);
    assert!(tool_names(&list).contains(&"echo.echo".to_owned()));

    let r = c
        .call_2026(
            "tools/call",
            json!({"name": "echo.echo", "arguments": {"text": "stateless"}}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(text_of(&r), "stateless");
    assert_eq!(r.result()["resultType"], "complete");
}

#[tokio::test(flavor = "multi_thread")]
async fn resources_templates_prompts_and_completion_are_federated() {
    let gw = Gateway::start(ECHO);
    gw.wait_ready(&["echo"]).await;
    let mut c = gw.client(&gw.alice);
    c.initialize().await;

    let resources = c.call("resources/list", json!({})).await;
    let uris: Vec<&str> = resources.result()["resources"]
        .as_array()
        .expect("list")
        .iter()
        .map(|r| r["uri"].as_str().expect("uri"))
        .collect();
    assert_eq!(uris, ["echo+echo://readme"]);
    let read = c
        .call("resources/read", json!({"uri": "echo+echo://readme"}))
        .await;
    assert!(
        read.result()["contents"][0]["text"]
            .as_str()
            .expect("text")
            .contains("echo")
    );

    let templates = c.call("resources/templates/list", json!({})).await;
    assert_eq!(
        templates.result()["resourceTemplates"][0]["uriTemplate"],
        "echo+echo://text/{value}"
    );
    let read = c
        .call("resources/read", json!({"uri": "echo+echo://text/hi"}))
        .await;
    assert_eq!(read.result()["contents"][0]["text"], "hi");

    let prompts = c.call("prompts/list", json!({})).await;
    assert_eq!(prompts.result()["prompts"][0]["name"], "echo.greet");
    let prompt = c
        .call(
            "prompts/get",
            json!({"name": "echo.greet", "arguments": {"name": "Ada"}}),
        )
        .await;
    assert_eq!(
        prompt.result()["messages"][0]["content"]["text"],
        "Say hello to Ada."
    );

    let completion = c.call("completion/complete", json!({"ref": {"type": "ref/prompt", "name": "echo.greet"}, "argument": {"name": "name", "value": "b"}})).await;
    assert_eq!(completion.result()["completion"]["values"], json!(["bob"]));

    let sub = c
        .call("resources/subscribe", json!({"uri": "echo+echo://readme"}))
        .await;
    assert_eq!(sub.result(), &json!({}));
    let unsub = c
        .call(
            "resources/unsubscribe",
            json!({"uri": "echo+echo://readme"}),
        )
        .await;
    assert_eq!(unsub.result(), &json!({}));

    let missing = c
        .call("resources/read", json!({"uri": "nosuch+file:///x"}))
        .await;
    assert_eq!(missing.error_code(), -32002);
    assert_eq!(
        missing.body["error"]["data"]["uri"], "nosuch+file:///x",
        "SEP-2164: the error names the resource"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn progress_notifications_reach_only_the_requesting_client_with_its_own_token() {
    let gw = Gateway::start(ECHO);
    gw.wait_ready(&["echo"]).await;
    let mut a = gw.client(&gw.alice);
    a.initialize().await;
    let mut b = gw.client(&gw.alice);
    b.initialize().await;
    let params = |token: &str| json!({"name": "echo.slow", "arguments": {"seconds": 0.3, "steps": 3}, "_meta": {"progressToken": token}});
    let (ra, rb) = tokio::join!(
        a.call("tools/call", params("same")),
        b.call("tools/call", params("same"))
    );
    for r in [&ra, &rb] {
        assert_eq!(r.status, 200);
        let progress: Vec<&Value> = r
            .events
            .iter()
            .filter(|e| e["method"] == "notifications/progress")
            .collect();
        assert_eq!(
            progress.len(),
            3,
            "each client gets exactly its own 3 progress notifications: {:?}",
            r.events
        );
        assert!(
            progress
                .iter()
                .all(|p| p["params"]["progressToken"] == "same")
        );
        assert_eq!(text_of(r), "done after 3 steps");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn http_upstreams_work_in_both_eras_and_results_are_normalised_for_each_client() {
    // An HTTP upstream: the built-in echo service in --http mode on a free port.
    let upstream = HttpEcho::start();
    let url = &upstream.url;
    let config = format!(
        r#"
[[policy.grants]]
principal = "alice"
tools = ["legacy.*", "modern.*"]

[services.legacy]
url = "{url}"

[services.modern]
url = "{url}"
protocol = "2026-07-28"
"#
    );
    let gw = Gateway::start(&config);
    gw.wait_ready(&["legacy", "modern"]).await;
    let mut c = gw.client(&gw.alice);
    c.initialize().await;
    for service in ["legacy", "modern"] {
        let r = c
            .call(
                "tools/call",
                json!({"name": format!("{service}.echo"), "arguments": {"text": service}}),
            )
            .await;
        assert_eq!(text_of(&r), service);
        assert!(
            r.result().get("resultType").is_none(),
            "2025 client must not see resultType from {service}: {}",
            r.body
        );
    }
    let mut s = gw.client(&gw.alice);
    for service in ["legacy", "modern"] {
        let r = s
            .call_2026(
                "tools/call",
                json!({"name": format!("{service}.add"), "arguments": {"a": 1, "b": 1}}),
            )
            .await;
        assert_eq!(r.result()["structuredContent"]["sum"], 2.0);
        assert_eq!(
            r.result()["resultType"],
            "complete",
            "2026 client gets resultType from {service}"
        );
    }
    let list = s.call_2026("tools/list", json!({})).await;
    assert_eq!(tool_names(&list).len(), 18);
}

#[tokio::test(flavor = "multi_thread")]
async fn configurable_separator_for_hosts_that_only_accept_simple_names() {
    let gw = Gateway::start(
        r#"
[gateway]
separator = "__"

[[policy.grants]]
principal = "alice"
tools = ["echo__echo"]

[services.echo]
builtin = "echo"
"#,
    );
    gw.wait_ready(&["echo"]).await;
    let mut c = gw.client(&gw.alice);
    c.initialize().await;
    assert_eq!(
        tool_names(&c.call("tools/list", json!({})).await),
        ["echo__echo"]
    );
    let r = c
        .call(
            "tools/call",
            json!({"name": "echo__echo", "arguments": {"text": "ok"}}),
        )
        .await;
    assert_eq!(text_of(&r), "ok");
}

#[tokio::test(flavor = "multi_thread")]
async fn list_changed_reaches_open_session_streams_when_a_service_restarts() {
    let gw = Gateway::start(TWO_SERVICES);
    gw.wait_ready(&["echo", "second"]).await;
    let mut c = gw.client(&gw.alice);
    c.initialize().await;
    let stream = c.open_session_stream().await;
    // Crash one service; its restart announces that lists changed.
    let grant = c
        .call("tools/call", json!({"name": "echo.exit", "arguments": {}}))
        .await;
    assert!(grant.body.get("error").is_some());
    let seen = read_stream_until(stream, "notifications/tools/list_changed").await;
    // Another principal's session never sees this principal's requests, only content-free
    // list changes; nothing else was sent on this stream.
    assert!(
        !seen.contains("\"result\""),
        "responses never travel on the notification stream: {seen}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_single_service_can_be_published_without_a_prefix() {
    let gw = Gateway::start(
        r#"
[[policy.grants]]
principal = "alice"
tools = ["echo.echo"]
resources = ["echo.*"]

[services.echo]
builtin = "echo"
prefix = false
"#,
    );
    gw.wait_ready(&["echo"]).await;
    let mut c = gw.client(&gw.alice);
    c.initialize().await;
    assert_eq!(tool_names(&c.call("tools/list", json!({})).await), ["echo"]);
    assert_eq!(
        text_of(
            &c.call(
                "tools/call",
                json!({"name": "echo", "arguments": {"text": "plain"}})
            )
            .await
        ),
        "plain"
    );
    let read = c
        .call("resources/read", json!({"uri": "echo://readme"}))
        .await;
    assert!(read.result()["contents"][0]["text"].is_string());
}
