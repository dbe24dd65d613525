//! Hostile upstreams: a stdio service (tests/fixtures/hostile_server.py) that forges audit
//! records on its stderr, floods it, writes invalid UTF-8 on it, writes garbage on its stdout,
//! leaks its own URIs in results and poisons its names and descriptions. The gateway keeps
//! audit and logs apart, escapes what it logs, bounds what it buffers, keeps reading, publishes
//! only public URIs and leaves poisoned items out.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// Every call is bounded, also when the defence fails and the service never answers.
const CALL_LIMIT: Duration = Duration::from_secs(60);

fn hostile_service(flags: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hostile_server.py");
    let mut command = vec![json!("python3"), json!(script.display().to_string())];
    command.extend(flags.iter().map(|f| json!(f)));
    format!(
        r#"
[[policy.grants]]
principal = "alice"
tools = ["hostile.*"]
prompts = ["hostile.*"]
resources = ["hostile.*"]

[services.hostile]
command = {}
timeout = "30s"
"#,
        Value::Array(command)
    )
}

async fn call(c: &mut Client, method: &str, params: Value) -> Reply {
    tokio::time::timeout(CALL_LIMIT, c.call(method, params))
        .await
        .unwrap_or_else(|_| panic!("{method} got no answer within {CALL_LIMIT:?}"))
}

async fn tool(c: &mut Client, name: &str, arguments: Value) -> Reply {
    call(
        c,
        "tools/call",
        json!({"name": format!("hostile.{name}"), "arguments": arguments}),
    )
    .await
}

fn first_text(reply: &Reply) -> String {
    reply.result()["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text in {}", reply.body))
        .to_owned()
}

/// The service's process id, as it reports it (a restart would change it).
async fn service_pid(c: &mut Client) -> String {
    first_text(&tool(c, "pid", json!({})).await)
}

/// Calls `echo` `n` times; each must answer with its own text.
async fn echo_works(c: &mut Client, n: usize) {
    for i in 0..n {
        let text = format!("still here {i}");
        let reply = tool(c, "echo", json!({"text": text})).await;
        assert_eq!(first_text(&reply), text, "{}", reply.body);
    }
}

/// A gateway without `[audit] file`, so its records go to the default stream; that stream
/// (stdout when serving HTTP) is captured byte for byte until the gateway exits.
fn start_with_default_audit(rest: &str) -> (Gateway, std::thread::JoinHandle<Vec<u8>>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (alice, bob) = (token(), token());
    let preamble = preamble(&alice, &bob);
    let without_audit = preamble.replace("[audit]\nfile = \"audit.jsonl\"\n", "");
    assert_ne!(
        without_audit, preamble,
        "the harness preamble changed shape"
    );
    let config = format!("{without_audit}\n{rest}");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("gateway.toml"), config).expect("write config");
    let mut child = Command::new(BIN)
        .args(["gateway", "--config"])
        .arg(dir.path().join("gateway.toml"))
        .env("MICROMCP_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start micromcp");
    let stdout = {
        let mut pipe = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            let mut all = Vec::new();
            let _ = pipe.read_to_end(&mut all);
            all
        })
    };
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let (url_tx, url_rx) = std::sync::mpsc::channel();
    {
        let stderr = stderr.clone();
        let mut pipe = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            // Raw bytes, split on '\n' only: a CR or invalid UTF-8 in the gateway's log must be
            // seen as it is.
            let mut pending = Vec::new();
            let mut buf = [0u8; 8192];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                pending.extend_from_slice(&buf[..n]);
                while let Some(at) = pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=at).collect();
                    let line = String::from_utf8_lossy(&line[..at]).into_owned();
                    if let Some(url) = line.strip_prefix("micromcp: listening on ") {
                        let _ = url_tx.send(url.to_owned());
                    }
                    stderr.lock().expect("lock").push(line);
                }
            }
        });
    }
    let Ok(url) = url_rx.recv_timeout(Duration::from_secs(20)) else {
        let _ = child.kill();
        panic!(
            "gateway did not start:\n{}",
            stderr.lock().expect("lock").join("\n")
        );
    };
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("http client");
    let gateway = Gateway {
        child: Some(child),
        dir,
        url,
        alice: alice.token,
        bob: bob.token,
        stderr,
        http,
    };
    (gateway, stdout)
}

/// Splits a stream the way a careless reader might: on LF, CR and the Unicode line separators.
fn pieces(text: &str) -> impl Iterator<Item = &str> {
    text.split(['\n', '\r', '\u{2028}', '\u{2029}'])
        .map(str::trim)
        .filter(|p| !p.is_empty())
}

fn is_gateway_request_id(id: &str) -> bool {
    id.split_once('-').is_some_and(|(instance, n)| {
        instance.len() == 8
            && instance.bytes().all(|b| b.is_ascii_hexdigit())
            && n.parse::<u64>().is_ok()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_cannot_forge_audit_records_or_gateway_log_lines() {
    let (mut gw, audit_stream) = start_with_default_audit(&hostile_service(&["--forge-audit"]));
    gw.wait_ready(&["hostile"]).await;
    let mut c = gw.client(&gw.alice);
    c.initialize().await;
    assert_eq!(
        first_text(&tool(&mut c, "misbehave", json!({})).await),
        "misbehaved"
    );
    echo_works(&mut c, 2).await;
    gw.terminate();

    // The audit stream holds genuine records only, however it is split.
    let audit = String::from_utf8(audit_stream.join().expect("stdout reader"))
        .expect("the audit stream is UTF-8");
    let mut calls = 0;
    for piece in pieces(&audit) {
        let record: Value = serde_json::from_str(piece)
            .unwrap_or_else(|e| panic!("not an audit record ({e}): {piece:?}"));
        let id = record["request_id"].as_str().unwrap_or_default();
        assert!(is_gateway_request_id(id), "forged record: {record}");
        assert_ne!(record["principal"], "mallory", "forged record: {record}");
        if record["method"] == "tools/call" {
            calls += 1;
        }
    }
    assert_eq!(calls, 3, "one genuine record per call:\n{audit}");

    // The log holds no audit-looking line, no raw CR or terminal escape, and the service's
    // stderr is there, escaped, as a field of the gateway's own log event.
    let log = gw.stderr_text();
    for piece in pieces(&log) {
        let looks_like_a_record = serde_json::from_str::<Value>(piece)
            .is_ok_and(|v| v.get("decision").is_some() || v.get("request_id").is_some());
        assert!(
            !looks_like_a_record,
            "audit-looking line in the log: {piece:?}"
        );
    }
    assert!(
        !log.contains(['\r', '\u{1b}', '\u{7}', '\u{2028}', '\u{202e}']),
        "raw control characters in the log:\n{log:?}"
    );
    let escaped = log
        .lines()
        .find(|l| l.contains(r"starting\u{d}{"))
        .unwrap_or_else(|| panic!("the forged line is not logged escaped:\n{log}"));
    assert!(
        escaped.contains("service=hostile")
            && escaped.contains(r#""principal":"mallory""#)
            && escaped.contains(r"\u{d}\u{1b}[2K\u{1b}[1A\u{1b}]0;pwned\u{7}done"),
        "{escaped}"
    );
    assert!(
        log.contains(r"\u{2028}{") && log.contains(r"\u{2029}\u{202e}\u{200b}"),
        "{log}"
    );
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Calls `misbehave` and watches the gateway's resident memory until the call has answered and
/// half a second more (what was queued is drained): it must stay within 64 MiB of where it was.
async fn misbehave_without_growing(gw: &Gateway, c: &Client, what: &str) {
    let gateway_pid = gw.child.as_ref().expect("running").id();
    let before = rss_kib(gateway_pid);
    let mut flooder = c.clone();
    let flood = tokio::spawn(async move { tool(&mut flooder, "misbehave", json!({})).await });
    let started = Instant::now();
    let mut answered_at = None;
    loop {
        let now = rss_kib(gateway_pid);
        assert!(
            now.saturating_sub(before) < 64 * 1024,
            "gateway grew from {before} KiB to {now} KiB while {what}"
        );
        assert!(started.elapsed() < CALL_LIMIT, "the flood did not end");
        if answered_at.is_none() && flood.is_finished() {
            answered_at = Some(Instant::now());
        }
        if answered_at.is_some_and(|t| t.elapsed() > Duration::from_millis(500)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reply = flood.await.expect("flood task");
    assert_eq!(first_text(&reply), "misbehaved", "{}", reply.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_writing_300_mb_without_a_newline_does_not_grow_the_gateway() {
    let gw = Gateway::start(&hostile_service(&["--flood-stderr-mb", "300"]));
    gw.wait_ready(&["hostile"]).await;
    let mut c = gw.client(&gw.alice);
    c.initialize().await;
    let pid = service_pid(&mut c).await;
    echo_works(&mut c, 1).await;
    misbehave_without_growing(&gw, &c, "the service flooded its stderr").await;

    // The service still answers, without a restart, and the cut line was logged as such.
    echo_works(&mut c, 3).await;
    assert_eq!(service_pid(&mut c).await, pid, "the service was restarted");
    let log = gw.stderr_text();
    assert!(
        log.lines().any(|l| l.contains("service=hostile")
            && l.contains("AAAA")
            && l.contains("truncated=true")),
        "the flood's first bytes are logged as a cut line"
    );
    assert!(
        log.lines().all(|l| l.len() < 8192),
        "no log line is longer than the cut plus the event around it"
    );
}

/// A service emits notifications in a tight loop while a client holds its notification
/// stream open and never reads it: every queue on the way (to the router, to that client) is
/// bounded, so the gateway does not grow, and it keeps answering.
#[tokio::test(flavor = "multi_thread")]
async fn a_notification_flood_towards_a_client_that_never_reads_does_not_grow_the_gateway() {
    let gw = Gateway::start(&hostile_service(&["--flood-notifications", "1000000"]));
    gw.wait_ready(&["hostile"]).await;
    let mut c = gw.client(&gw.alice);
    c.initialize().await;
    echo_works(&mut c, 1).await;
    // Opened and never read: hyper stops writing once the socket buffers are full.
    let unread_stream = c.open_session_stream().await;
    misbehave_without_growing(&gw, &c, "the service flooded notifications").await;
    echo_works(&mut c, 3).await;
    drop(unread_stream);
}

/// A service stops reading its stdin while callers keep sending requests: the gateway holds at
/// most a bounded backlog for it (16 MiB), and calls beyond fail at once instead of piling up
/// in gateway memory until they time out (1,200 calls of 60 KB: 72 MB if nothing were bounded).
#[tokio::test(flavor = "multi_thread")]
async fn a_service_that_stops_reading_its_input_does_not_grow_the_gateway() {
    let gw = Gateway::start(&hostile_service(&["--stop-reading", "40"]));
    gw.wait_ready(&["hostile"]).await;
    let mut c = gw.client(&gw.alice);
    c.initialize().await;
    echo_works(&mut c, 1).await;
    let gateway_pid = gw.child.as_ref().expect("running").id();
    let before = rss_kib(gateway_pid);
    assert_eq!(
        first_text(&tool(&mut c, "misbehave", json!({})).await),
        "misbehaved"
    );
    // The service now reads nothing for 40 s. Calls of 60 KB (under the test's 64 KiB body
    // limit), 60 at a time (under the per-principal cap of requests in progress).
    let text = "x".repeat(60 * 1024);
    let mut refused_at_once = 0;
    for _ in 0..20 {
        let calls: Vec<_> = (0..60)
            .map(|_| {
                let mut caller = c.clone();
                let text = text.clone();
                tokio::spawn(async move {
                    let started = Instant::now();
                    let reply = tokio::time::timeout(
                        Duration::from_secs(1),
                        tool(&mut caller, "echo", json!({"text": text})),
                    )
                    .await;
                    (started.elapsed(), reply)
                })
            })
            .collect();
        for call in calls {
            let (took, reply) = call.await.expect("call task");
            if let Ok(reply) = reply
                && reply.body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("not reading its input"))
                && took < Duration::from_millis(900)
            {
                refused_at_once += 1;
            }
        }
        let now = rss_kib(gateway_pid);
        assert!(
            now.saturating_sub(before) < 48 * 1024,
            "gateway grew from {before} KiB to {now} KiB holding requests for a service that reads nothing"
        );
    }
    assert!(
        refused_at_once >= 800,
        "calls beyond the backlog fail at once: {refused_at_once} of 1200 did"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_utf8_on_stderr_does_not_stop_the_gateway_reading_it() {
    let gw = Gateway::start(&hostile_service(&["--bad-utf8-stderr"]));
    gw.wait_ready(&["hostile"]).await;
    let mut c = gw.client(&gw.alice);
    c.initialize().await;
    let pid = service_pid(&mut c).await;
    assert_eq!(
        first_text(&tool(&mut c, "misbehave", json!({})).await),
        "misbehaved"
    );
    // Every request makes the service write to stderr: a gateway that stopped reading it would
    // leave it to die of a broken pipe here.
    echo_works(&mut c, 5).await;
    assert_eq!(service_pid(&mut c).await, pid, "the service was restarted");
    let audit = gw.audit_at_least(10).await;
    let calls: Vec<&Value> = audit
        .iter()
        .filter(|r| r["method"] == "tools/call")
        .collect();
    assert_eq!(calls.len(), 8, "{audit:?}");
    assert!(calls.iter().all(|r| r["status"] == "ok"), "{calls:?}");
    let log = gw.stderr_text();
    let line = log
        .lines()
        .find(|l| l.contains("after-bad-bytes"))
        .unwrap_or_else(|| panic!("the invalid line is not logged:\n{log}"));
    assert!(
        line.contains('\u{fffd}') && line.contains(r"\u{0}"),
        "logged lossily, NUL escaped: {line}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_and_overlong_lines_on_stdout_do_not_kill_the_connection() {
    let gw = Gateway::start(&hostile_service(&[
        "--bad-stdout",
        "--long-stdout-mb",
        "65",
    ]));
    gw.wait_ready(&["hostile"]).await;
    let mut c = gw.client(&gw.alice);
    c.initialize().await;
    let pid = service_pid(&mut c).await;
    for _ in 0..2 {
        let reply = tool(&mut c, "misbehave", json!({})).await;
        assert_eq!(first_text(&reply), "misbehaved", "{}", reply.body);
        echo_works(&mut c, 2).await;
    }
    assert_eq!(service_pid(&mut c).await, pid, "the service was restarted");
    let log = gw.stderr_text();
    for expected in [
        "skipping a line that is not UTF-8",
        "ignoring a line that is not JSON-RPC",
        "skipping a message longer than",
    ] {
        assert!(log.contains(expected), "missing {expected:?} in:\n{log}");
    }
}

/// Every `uri` anywhere in `value`.
fn uris(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(fields) => {
            for (key, v) in fields {
                match (key.as_str(), v) {
                    ("uri", Value::String(uri)) => out.push(uri.clone()),
                    _ => uris(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| uris(v, out)),
        _ => {}
    }
}

fn all_uris(value: &Value) -> Vec<String> {
    let mut out = Vec::new();
    uris(value, &mut out);
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn results_carry_only_public_uris() {
    let gw = Gateway::start(&hostile_service(&[]));
    gw.wait_ready(&["hostile"]).await;
    let mut c = gw.client(&gw.alice);
    c.initialize().await;

    let read = call(
        &mut c,
        "resources/read",
        json!({"uri": "hostile+file:///srv/notes.txt"}),
    )
    .await;
    assert_eq!(
        all_uris(read.result()),
        [
            "hostile+file:///srv/notes.txt",
            "hostile+file:///srv/other.txt"
        ]
    );

    let links = tool(&mut c, "links", json!({})).await;
    assert_eq!(
        all_uris(links.result()),
        [
            "hostile+file:///srv/secret.txt",
            "hostile+file:///srv/linked.txt"
        ]
    );

    let prompt = call(&mut c, "prompts/get", json!({"name": "hostile.brief"})).await;
    assert_eq!(
        all_uris(prompt.result()),
        [
            "hostile+file:///srv/notes.txt",
            "hostile+file:///srv/linked.txt"
        ]
    );

    // The public URIs route back to the service.
    for uri in [
        "hostile+file:///srv/secret.txt",
        "hostile+file:///srv/linked.txt",
    ] {
        let again = call(&mut c, "resources/read", json!({"uri": uri})).await;
        assert_eq!(all_uris(again.result())[0], uri);
    }

    // Update notifications name the resource as the client subscribed to it.
    let stream = c.open_session_stream().await;
    let subscribe = call(
        &mut c,
        "resources/subscribe",
        json!({"uri": "hostile+file:///srv/notes.txt"}),
    )
    .await;
    subscribe.result();
    let seen = read_stream_until(stream, "notifications/resources/updated").await;
    assert!(
        seen.contains(r#""uri":"hostile+file:///srv/notes.txt""#) && !seen.contains("\"file:///"),
        "{seen}"
    );
}

fn listed(reply: &Reply, items: &str, id: &str) -> Vec<String> {
    reply.result()[items]
        .as_array()
        .unwrap_or_else(|| panic!("no {items} in {}", reply.body))
        .iter()
        .map(|item| item[id].as_str().expect("id").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn poisoned_names_and_descriptions_are_left_out_logged_and_never_routed() {
    let gw = Gateway::start(&hostile_service(&["--poison-tools"]));
    gw.wait_ready(&["hostile"]).await;
    let mut c = gw.client(&gw.alice);
    c.initialize().await;

    let tools = listed(
        &call(&mut c, "tools/list", json!({})).await,
        "tools",
        "name",
    );
    assert_eq!(
        tools,
        [
            "hostile.echo",
            "hostile.pid",
            "hostile.links",
            "hostile.misbehave",
            "hostile.crlf_ok"
        ]
    );
    let prompts = listed(
        &call(&mut c, "prompts/list", json!({})).await,
        "prompts",
        "name",
    );
    assert_eq!(prompts, ["hostile.brief"]);
    let resources = listed(
        &call(&mut c, "resources/list", json!({})).await,
        "resources",
        "uri",
    );
    assert_eq!(resources, ["hostile+file:///srv/notes.txt"]);

    let log = gw.stderr_text();
    for (item, field) in [
        (r#""evil\u{a}name""#, "name"),
        (r#""evil name""#, "name"),
        (r#""evil\u{1b}[31mred""#, "name"),
        (r#""zero\u{200b}width""#, "name"),
        (r#""sneaky""#, "description"),
        (r#""bidi""#, "description"),
        (r#""tagged""#, "description"),
        (
            r#""schema_poison""#,
            "inputSchema.properties.path.description",
        ),
        (r#""evil\u{2066}prompt""#, "name"),
        (r#""file:///srv/\u{1b}[2Jclear.txt""#, "uri"),
    ] {
        assert!(
            log.lines().any(|l| l.contains("WARN")
                && l.contains("left out of the list")
                && l.contains("service=hostile")
                && l.contains(&format!("item={item}"))
                && l.contains(&format!("field=\"{field}\""))),
            "no warning for {item} ({field}) in:\n{log}"
        );
    }
    assert!(!log.contains(['\u{1b}', '\u{200b}', '\u{2066}']), "{log:?}");

    // Names with hidden characters never route, although the grant `hostile.*` matches them.
    for name in [
        "hostile.evil\nname",
        "hostile.evil name",
        "hostile.evil\u{1b}[31mred",
        "hostile.zero\u{200b}width",
    ] {
        let reply = call(&mut c, "tools/call", json!({"name": name, "arguments": {}})).await;
        assert_eq!(reply.error_code(), -32602, "{name:?}: {}", reply.body);
    }
    let reply = call(
        &mut c,
        "prompts/get",
        json!({"name": "hostile.evil\u{2066}prompt"}),
    )
    .await;
    assert_eq!(reply.error_code(), -32602, "{}", reply.body);
    let reply = call(
        &mut c,
        "resources/read",
        json!({"uri": "hostile+file:///srv/\u{1b}[2Jclear.txt"}),
    )
    .await;
    assert_eq!(reply.error_code(), -32002, "{}", reply.body);
    let audit = gw.audit_at_least(11).await;
    let refused: Vec<&Value> = audit.iter().filter(|r| r["rule"] == "no-route").collect();
    assert_eq!(refused.len(), 6, "{audit:?}");
    assert!(
        !gw.stderr_text()
            .contains("hostile: handling tools/call \"evil"),
        "a poisoned name reached the service"
    );
}
