//! Supervision: a service that fails to start, crashes or hangs affects no other service;
//! children get only their configured environment; SIGTERM shuts down cleanly.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const SERVICES: &str = r#"
[[policy.grants]]
principal = "alice"
tools = ["steady.*", "crashy.*", "slowpoke.*", "broken.*"]

[services.steady]
builtin = "echo"
env = { ONLY_THIS = "1" }

[services.crashy]
builtin = "echo"

[services.slowpoke]
builtin = "echo"
timeout = "300ms"

[services.broken]
command = ["/nonexistent/mcp-server"]
"#;

#[tokio::test(flavor = "multi_thread")]
async fn failing_crashing_and_hanging_services_do_not_affect_the_others() {
    let gw = Gateway::start(SERVICES);
    gw.wait_ready(&["steady", "crashy", "slowpoke"]).await;
    let mut c = gw.client(&gw.alice);
    c.initialize().await;

    // A service that cannot start: its tools are left out; calls fail fast, naming it.
    let names = tool_names(&c.call("tools/list", json!({})).await);
    assert!(
        names.iter().any(|n| n == "steady.echo") && !names.iter().any(|n| n.starts_with("broken.")),
        "{names:?}"
    );
    let started = Instant::now();
    let r = c
        .call(
            "tools/call",
            json!({"name": "broken.anything", "arguments": {}}),
        )
        .await;
    let message = r.body["error"]["message"]
        .as_str()
        .expect("error")
        .to_owned();
    assert!(
        message.contains("\"broken\"") && message.contains("unavailable"),
        "{message}"
    );
    assert!(started.elapsed() < Duration::from_secs(1), "fails fast");
    let ready = gw
        .http
        .get(gw.url.replace("/mcp", "/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 503);

    // A hung call times out with a clear error; the service keeps working.
    let started = Instant::now();
    let r = c
        .call(
            "tools/call",
            json!({"name": "slowpoke.slow", "arguments": {"seconds": 30}}),
        )
        .await;
    let message = r.body["error"]["message"]
        .as_str()
        .expect("error")
        .to_owned();
    assert!(
        message.contains("\"slowpoke\"") && message.contains("did not answer within 300ms"),
        "{message}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(
        !message.contains("panicked") && !message.contains("stack"),
        "no internals: {message}"
    );
    assert_eq!(
        text_of(
            &c.call(
                "tools/call",
                json!({"name": "slowpoke.echo", "arguments": {"text": "still here"}})
            )
            .await
        ),
        "still here"
    );

    // A crash: the call fails naming the service, the others keep working, and it restarts.
    let r = c
        .call(
            "tools/call",
            json!({"name": "crashy.exit", "arguments": {"code": 7}}),
        )
        .await;
    let message = r.body["error"]["message"]
        .as_str()
        .expect("error")
        .to_owned();
    assert!(message.contains("\"crashy\""), "{message}");
    assert_eq!(
        text_of(
            &c.call(
                "tools/call",
                json!({"name": "steady.echo", "arguments": {"text": "unaffected"}})
            )
            .await
        ),
        "unaffected"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = c
            .call(
                "tools/call",
                json!({"name": "crashy.echo", "arguments": {"text": "back"}}),
            )
            .await;
        if r.body.get("result").is_some() {
            assert_eq!(text_of(&r), "back");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "crashy did not restart: {}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn children_see_only_their_configured_environment() {
    let gw = Gateway::start(SERVICES);
    gw.wait_ready(&["steady", "crashy"]).await;
    let mut c = gw.client(&gw.alice);
    c.initialize().await;
    assert_eq!(
        text_of(
            &c.call("tools/call", json!({"name": "steady.env", "arguments": {}}))
                .await
        ),
        "ONLY_THIS"
    );
    assert_eq!(
        text_of(
            &c.call("tools/call", json!({"name": "crashy.env", "arguments": {}}))
                .await
        ),
        ""
    );
}

/// Process ids whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .expect("proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(") ")
                        .map(|(_, rest)| rest.split(' ').nth(1).map(str::to_owned))
                })
                .flatten()
                == Some(pid.to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_in_flight_calls_finish_and_leaves_no_child_processes() {
    let mut gw = Gateway::start(SERVICES);
    gw.wait_ready(&["steady", "crashy", "slowpoke"]).await;
    let gateway_pid = gw.child.as_ref().expect("running").id();
    let children = children_of(gateway_pid);
    assert!(
        children.len() >= 3,
        "the gateway runs one process per stdio service: {children:?}"
    );

    let mut c = gw.client(&gw.alice);
    c.initialize().await;
    let call = tokio::spawn(async move {
        c.call(
            "tools/call",
            json!({"name": "steady.slow", "arguments": {"seconds": 1, "steps": 2}}),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let status = tokio::task::spawn_blocking(move || {
        let status = gw.terminate();
        (status, gw)
    });
    let r = call.await.expect("join");
    assert_eq!(
        text_of(&r),
        "done after 2 steps",
        "the in-flight call finished during shutdown"
    );
    let (status, gw) = status.await.expect("join");
    assert!(status.success(), "clean exit: {status}");
    for child in children {
        assert!(
            !std::path::Path::new(&format!("/proc/{child}")).exists(),
            "child {child} outlived the gateway"
        );
    }
    let audit = gw.audit();
    assert!(
        audit
            .iter()
            .any(|r| r["target"] == "steady.slow" && r["status"] == "ok"),
        "the finished call was audited before exit"
    );
}
