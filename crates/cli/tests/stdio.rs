//! The client-facing stdio transport: one client on stdin/stdout as the `[stdio]` principal.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

#[test]
fn stdio_client_speaks_both_eras_and_gets_clear_errors_for_bad_lines() {
    let (alice, bob) = (token(), token());
    let dir = tempfile::tempdir().expect("tempdir");
    let config = format!(
        "{}\n[stdio]\nprincipal = \"alice\"\nagent = \"desktop\"\n{ECHO}",
        preamble(&alice, &bob)
    );
    std::fs::write(dir.path().join("gateway.toml"), config).expect("write");
    let mut child = Command::new(BIN)
        .args(["gateway", "--stdio", "--config"])
        .arg(dir.path().join("gateway.toml"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut notifications = Vec::new();
    let mut exchange = |line: &str| -> Value {
        writeln!(stdin, "{line}").expect("write");
        loop {
            let mut reply = String::new();
            stdout.read_line(&mut reply).expect("read");
            let message: Value = serde_json::from_str(&reply)
                .unwrap_or_else(|e| panic!("stdout must carry only JSON-RPC ({e}): {reply}"));
            if message.get("method").is_some() {
                notifications.push(message);
                continue;
            }
            return message;
        }
    };
    let init = exchange(
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}"#,
    );
    assert_eq!(init["result"]["protocolVersion"], "2025-06-18");
    // Wait for the echo service to be ready.
    let mut names = Vec::new();
    for _ in 0..100 {
        let list = exchange(r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#);
        names = list["result"]["tools"]
            .as_array()
            .expect("tools")
            .iter()
            .map(|t| t["name"].as_str().expect("name").to_owned())
            .collect();
        if !names.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(names.contains(&"echo.echo".to_owned()), "{names:?}");
    let call = exchange(
        r#"{"jsonrpc":"2.0","id":"x","method":"tools/call","params":{"name":"echo.echo","arguments":{"text":"via stdio"}}}"#,
    );
    assert_eq!(call["id"], "x");
    assert_eq!(call["result"]["content"][0]["text"], "via stdio");

    let modern = json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo.echo","arguments":{"text":"2026"},"_meta":meta_2026()}});
    let modern = exchange(&modern.to_string());
    assert_eq!(modern["result"]["resultType"], "complete");

    assert_eq!(exchange("not json")["error"]["code"], -32700);
    assert_eq!(
        exchange(r#"{"jsonrpc":"2.0","id":4,"method":"ping","method":"x"}"#)["error"]["code"],
        -32700
    );
    assert_eq!(
        exchange(r#"[{"jsonrpc":"2.0","id":5,"method":"ping"}]"#)["error"]["code"],
        -32600
    );
    let unsupported = exchange(
        r#"{"jsonrpc":"2.0","id":6,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2099-01-01"}}}"#,
    );
    assert_eq!(unsupported["error"]["code"], -32022);
    assert_eq!(unsupported["id"], 6);

    assert!(
        notifications
            .iter()
            .any(|n| n["method"] == "notifications/tools/list_changed"),
        "a client that connected before the service was ready is told to list again: {notifications:?}"
    );
    drop(stdin);
    let status = child.wait().expect("wait");
    assert!(
        status.success(),
        "stdin EOF ends the gateway cleanly: {status}"
    );
    let audit = read_jsonl(&dir.path().join("audit.jsonl"));
    assert!(audit.iter().all(|r| r["transport"] == "stdio"));
    assert!(audit.iter().any(|r| r["principal"] == "alice"
        && r["agent"] == "desktop"
        && r["target"] == "echo.echo"));
}

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}
{"jsonrpc":"2.0","method":"notifications/initialized"}
{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"text":"over a socket"}}}
"#;

/// Node's child_process (so most MCP clients) hands a stdio server Unix sockets, not pipes; a
/// built-in service must serve those on its async path too — and keep blocking writes when
/// stderr is the same socket (`2>&1`), where non-blocking would reach its logs too.
#[test]
fn stdio_service_serves_a_client_on_a_unix_socket() {
    for stderr_too in [false, true] {
        use std::os::fd::OwnedFd;
        use std::os::unix::net::UnixStream;

        let (ours, theirs) = UnixStream::pair().expect("socketpair");
        let theirs_out = theirs.try_clone().expect("dup");
        let stderr = if stderr_too {
            Stdio::from(OwnedFd::from(theirs.try_clone().expect("dup")))
        } else {
            Stdio::null()
        };
        let mut child = Command::new(BIN)
            .args(["serve", "echo"])
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::from(OwnedFd::from(theirs_out)))
            .stderr(stderr)
            .spawn()
            .expect("start");
        ours.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        (&ours).write_all(INITIALIZE.as_bytes()).expect("write");
        let mut replies = BufReader::new(&ours).lines();
        let init: Value =
            serde_json::from_str(&replies.next().expect("line").expect("read")).expect("JSON");
        assert_eq!(init["id"], 1);
        let call: Value =
            serde_json::from_str(&replies.next().expect("line").expect("read")).expect("JSON");
        assert_eq!(call["id"], 2);
        assert_eq!(call["result"]["content"][0]["text"], "over a socket");
        ours.shutdown(std::net::Shutdown::Write).expect("shutdown");
        let status = child.wait().expect("wait");
        assert!(
            status.success(),
            "EOF on the socket ends the service: {status}"
        );
    }
}

/// Stdout that is neither a pipe nor a socket (a regular file) still gets every answer.
#[test]
fn stdio_service_writes_to_a_regular_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_path = dir.path().join("out.jsonl");
    let out = std::fs::File::create(&out_path).expect("create");
    let mut child = Command::new(BIN)
        .args(["serve", "echo"])
        .stdin(Stdio::piped())
        .stdout(Stdio::from(out))
        .stderr(Stdio::null())
        .spawn()
        .expect("start");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(INITIALIZE.as_bytes()).expect("write");
    let mut written = String::new();
    for _ in 0..400 {
        written = std::fs::read_to_string(&out_path).expect("read");
        if written.lines().count() >= 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(stdin);
    assert!(child.wait().expect("wait").success());
    let replies: Vec<Value> = written
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(replies.len(), 2, "{written}");
    assert_eq!(replies[1]["result"]["content"][0]["text"], "over a socket");
}
