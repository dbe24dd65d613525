//! The fs service over real Streamable HTTP: every tool, resources, deny globs, writes.

#![allow(clippy::unwrap_used)]

mod common;

use common::{arg, put, serve};
use serde_json::{Value, json};

fn sample() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    put(dir.path(), "readme.md", "# Hello\nsecond line\n");
    put(
        dir.path(),
        "src/main.rs",
        "fn main() {\n    println!(\"hi\");\n}\n",
    );
    put(dir.path(), "src/lib.rs", "pub fn answer() -> u32 { 42 }\n");
    put(dir.path(), "src/deep/mod.rs", "// note: answer later\n");
    put(dir.path(), ".env", "API_KEY=topsecret\n");
    put(
        dir.path(),
        "config/.env.production",
        "DB_PASSWORD=topsecret\n",
    );
    put(dir.path(), "certs/server.pem", "-----BEGIN topsecret\n");
    put(dir.path(), ".git/config", "[core] topsecret\n");
    put(dir.path(), ".ssh/id_ed25519", "topsecret\n");
    dir
}

fn names(listing: &Value) -> Vec<&str> {
    listing["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["name"].as_str().expect("name"))
        .collect()
}

#[tokio::test]
async fn tools_are_listed_read_only_with_output_schemas() {
    let dir = sample();
    let mut client = serve(&["--root", &arg(dir.path())]).await;
    assert_eq!(client.init["result"]["serverInfo"]["name"], "micromcp-fs");
    assert!(client.init["result"]["capabilities"]["resources"].is_object());
    let tools = client.call("tools/list", json!({})).await;
    let tools = tools["tools"].as_array().expect("tools");
    let mut listed: Vec<&str> = tools.iter().filter_map(|t| t["name"].as_str()).collect();
    listed.sort_unstable();
    // write_file is not even listed without --writable.
    assert_eq!(
        listed,
        [
            "find_files",
            "list_directory",
            "read_file",
            "search_files",
            "stat"
        ]
    );
    for tool in tools {
        assert_eq!(tool["annotations"]["readOnlyHint"], true, "{tool}");
        assert_eq!(tool["outputSchema"]["type"], "object", "{tool}");
    }
}

#[tokio::test]
async fn list_directory_sorts_and_hides_denied_entries() {
    let dir = sample();
    let mut client = serve(&["--root", &arg(dir.path())]).await;
    let root = client.tool_ok("list_directory", json!({"path": "."})).await;
    assert_eq!(root["path"], ".");
    assert_eq!(names(&root), ["certs", "config", "readme.md", "src"]);
    let readme = &root["entries"][2];
    assert_eq!(readme["kind"], "file");
    assert_eq!(readme["size"], 20);
    assert_eq!(root["truncated"], false);
    let src = client
        .tool_ok("list_directory", json!({"path": "src/"}))
        .await;
    assert_eq!(names(&src), ["deep", "lib.rs", "main.rs"]);
    assert_eq!(src["entries"][0]["kind"], "directory");
    // Denied files inside listed directories disappear too.
    let certs = client
        .tool_ok("list_directory", json!({"path": "certs"}))
        .await;
    assert!(names(&certs).is_empty(), "{certs}");
    let error = client
        .tool_err("list_directory", json!({"path": "readme.md"}))
        .await;
    assert!(error.contains("not a directory"), "{error}");
}

#[tokio::test]
async fn list_directory_is_capped() {
    let dir = tempfile::tempdir().expect("tempdir");
    for i in 0..5 {
        put(dir.path(), &format!("f{i}.txt"), "x");
    }
    let mut client = serve(&["--root", &arg(dir.path()), "--max-list-entries", "3"]).await;
    let listing = client.tool_ok("list_directory", json!({"path": "."})).await;
    assert_eq!(names(&listing), ["f0.txt", "f1.txt", "f2.txt"]);
    assert_eq!(listing["truncated"], true);
}

#[tokio::test]
async fn read_file_returns_text_ranges_within_the_cap() {
    let dir = sample();
    put(dir.path(), "big.txt", &"0123456789".repeat(10));
    put(dir.path(), "utf8.txt", "aé€z");
    let mut client = serve(&["--root", &arg(dir.path()), "--max-read-bytes", "64"]).await;
    let whole = client
        .tool_ok("read_file", json!({"path": "readme.md"}))
        .await;
    assert_eq!(whole["text"], "# Hello\nsecond line\n");
    assert_eq!(whole["size"], 20);
    assert!(whole.get("next_offset").is_none(), "{whole}");

    let range = client
        .tool_ok(
            "read_file",
            json!({"path": "readme.md", "offset": 2, "length": 5}),
        )
        .await;
    assert_eq!(range["text"], "Hello");
    assert_eq!(range["next_offset"], 7);

    // Larger than the cap: one capped chunk and where to continue.
    let capped = client
        .tool_ok("read_file", json!({"path": "big.txt", "length": 1000}))
        .await;
    assert_eq!(capped["length"], 64);
    assert_eq!(capped["next_offset"], 64);
    let rest = client
        .tool_ok("read_file", json!({"path": "big.txt", "offset": 64}))
        .await;
    assert_eq!(rest["text"], "0123456789".repeat(10)[64..]);
    assert!(rest.get("next_offset").is_none());

    // A range that cuts `é` (bytes 1..3) and `€` (3..6) in half returns whole characters.
    let cut = client
        .tool_ok(
            "read_file",
            json!({"path": "utf8.txt", "offset": 2, "length": 3}),
        )
        .await;
    assert_eq!(cut["text"], "");
    assert_eq!(cut["offset"], 3);
    let cut = client
        .tool_ok(
            "read_file",
            json!({"path": "utf8.txt", "offset": 0, "length": 4}),
        )
        .await;
    assert_eq!(cut["text"], "aé");
    assert_eq!(cut["next_offset"], 3);

    let past = client
        .tool_ok("read_file", json!({"path": "readme.md", "offset": 1000}))
        .await;
    assert_eq!(past["text"], "");
}

#[tokio::test]
async fn read_file_refuses_binary_directories_and_fifos() {
    let dir = sample();
    std::fs::write(dir.path().join("image.bin"), b"\x89PNG\0\0\x01").expect("write");
    std::fs::write(dir.path().join("latin1.txt"), b"caf\xe9").expect("write");
    let fifo = dir.path().join("pipe");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo")
            .success()
    );
    let mut client = serve(&["--root", &arg(dir.path())]).await;
    for path in ["image.bin", "latin1.txt"] {
        let error = client.tool_err("read_file", json!({"path": path})).await;
        assert!(error.contains("binary file"), "{error}");
    }
    let error = client.tool_err("read_file", json!({"path": "src"})).await;
    assert!(error.contains("is a directory"), "{error}");
    // Opening a FIFO for reading would block forever; it is refused by type first.
    let error = client.tool_err("read_file", json!({"path": "pipe"})).await;
    assert!(error.contains("not a regular file (fifo)"), "{error}");
    let error = client
        .tool_err("read_file", json!({"path": "nope.txt"}))
        .await;
    assert!(error.ends_with("not found"), "{error}");
}

#[tokio::test]
async fn malformed_arguments_are_tool_errors() {
    // rmcp 3.11 reports arguments that do not fit the schema as `isError` results.
    let dir = sample();
    let mut client = serve(&["--root", &arg(dir.path())]).await;
    let error = client.tool_err("read_file", json!({"path": 7})).await;
    assert!(
        error.contains("failed to deserialize parameters"),
        "{error}"
    );
    let error = client.tool_err("read_file", json!({})).await;
    assert!(error.contains("path"), "{error}");
}

#[tokio::test]
async fn stat_reports_metadata() {
    let dir = sample();
    let mut client = serve(&["--root", &arg(dir.path())]).await;
    let file = client.tool_ok("stat", json!({"path": "src/lib.rs"})).await;
    assert_eq!(file["kind"], "file");
    assert_eq!(file["size"], 30);
    assert_eq!(file["links"], 1);
    assert!(file["mode"].as_str().expect("mode").starts_with('0'));
    assert!(file["modified_unix"].as_i64().expect("mtime") > 1_600_000_000);
    let root = client.tool_ok("stat", json!({"path": "."})).await;
    assert_eq!(root["kind"], "directory");
    let error = client.tool_err("stat", json!({"path": ".env"})).await;
    assert!(error.contains("denied by the rule \".env*\""), "{error}");
}

#[tokio::test]
async fn find_files_matches_names_or_paths_and_skips_denied() {
    let dir = sample();
    let mut client = serve(&["--root", &arg(dir.path())]).await;
    let found = client
        .tool_ok("find_files", json!({"pattern": "*.rs"}))
        .await;
    let paths: Vec<&str> = found["matches"]
        .as_array()
        .expect("matches")
        .iter()
        .map(|m| m["path"].as_str().expect("path"))
        .collect();
    assert_eq!(paths, ["src/deep/mod.rs", "src/lib.rs", "src/main.rs"]);
    let anchored = client
        .tool_ok("find_files", json!({"pattern": "*.rs", "path": "src/deep"}))
        .await;
    assert_eq!(anchored["matches"][0]["path"], "src/deep/mod.rs");
    let by_path = client
        .tool_ok("find_files", json!({"pattern": "src/*.rs"}))
        .await;
    assert_eq!(by_path["matches"].as_array().expect("matches").len(), 2);
    // Denied names never show up, whatever the pattern.
    for pattern in ["*env*", "*.pem", "*", "**", "config", "id_*"] {
        let found = client
            .tool_ok("find_files", json!({"pattern": pattern}))
            .await;
        let text = found.to_string();
        for secret in [".env", "server.pem", ".git", ".ssh", "id_ed25519"] {
            assert!(!text.contains(secret), "{pattern}: {text}");
        }
    }
    let limited = client
        .tool_ok("find_files", json!({"pattern": "*", "max_results": 2}))
        .await;
    assert_eq!(limited["matches"].as_array().expect("matches").len(), 2);
    assert_eq!(limited["truncated"], true);
    let error = client
        .tool_err("find_files", json!({"pattern": "a[", "path": "."}))
        .await;
    assert!(error.contains("invalid glob"), "{error}");
}

#[tokio::test]
async fn search_files_finds_literals_and_regexes_within_bounds() {
    let dir = sample();
    std::fs::write(dir.path().join("blob.bin"), b"answer\0answer").expect("write");
    let mut client = serve(&["--root", &arg(dir.path())]).await;
    let literal = client
        .tool_ok("search_files", json!({"query": "answer"}))
        .await;
    assert_eq!(
        literal["matches"],
        json!([
            {"path": "src/deep/mod.rs", "line": 1, "text": "// note: answer later"},
            {"path": "src/lib.rs", "line": 1, "text": "pub fn answer() -> u32 { 42 }"}
        ])
    );
    assert_eq!(literal["skipped_binary"], 1);
    // A literal is not a regex: `(` needs no escaping and `.` is not a wildcard.
    let parens = client
        .tool_ok("search_files", json!({"query": "answer()"}))
        .await;
    assert_eq!(parens["matches"].as_array().expect("matches").len(), 1);
    let regex = client
        .tool_ok(
            "search_files",
            json!({"query": r"println!\(.*\)", "regex": true, "glob": "*.rs"}),
        )
        .await;
    assert_eq!(regex["matches"][0]["path"], "src/main.rs");
    assert_eq!(regex["matches"][0]["line"], 2);
    let caseless = client
        .tool_ok(
            "search_files",
            json!({"query": "hello", "case_insensitive": true, "path": "."}),
        )
        .await;
    assert_eq!(caseless["matches"][0]["path"], "readme.md");
    // Denied files are never searched: their contents never match.
    let secret = client
        .tool_ok("search_files", json!({"query": "topsecret"}))
        .await;
    assert_eq!(secret["matches"], json!([]), "{secret}");
    let limited = client
        .tool_ok("search_files", json!({"query": "e", "max_matches": 1}))
        .await;
    assert_eq!(limited["matches"].as_array().expect("matches").len(), 1);
    assert_eq!(limited["truncated"], true);
    let error = client
        .tool_err("search_files", json!({"query": "(", "regex": true}))
        .await;
    assert!(error.contains("invalid regex"), "{error}");
}

#[tokio::test]
async fn search_files_respects_file_and_byte_limits() {
    let dir = tempfile::tempdir().expect("tempdir");
    for i in 0..4 {
        put(dir.path(), &format!("f{i}.txt"), "needle\n");
    }
    put(
        dir.path(),
        "long.txt",
        &format!("{}\nneedle\n", "x".repeat(100)),
    );
    let mut client = serve(&[
        "--root",
        &arg(dir.path()),
        "--search-max-files",
        "2",
        "--search-max-file-bytes",
        "50",
    ])
    .await;
    let out = client
        .tool_ok("search_files", json!({"query": "needle"}))
        .await;
    assert_eq!(out["files_scanned"], 2);
    assert_eq!(out["truncated"], true);
    let long = client
        .tool_ok(
            "search_files",
            json!({"query": "needle", "glob": "long.txt"}),
        )
        .await;
    // The needle sits after byte 50: not searched, and the cut is reported.
    assert_eq!(long["matches"], json!([]));
    assert_eq!(long["files_cut"], 1);
}

#[tokio::test]
async fn resources_list_and_read_files_under_the_roots() {
    let dir = sample();
    put(dir.path(), "odd name %41.txt", "odd");
    let mut client = serve(&["--root", &arg(dir.path()), "--resource-page-size", "2"]).await;
    let resources = client.all_resources().await;
    let mut names: Vec<&str> = resources
        .iter()
        .map(|r| r["name"].as_str().expect("name"))
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "odd name %41.txt",
            "readme.md",
            "src/deep/mod.rs",
            "src/lib.rs",
            "src/main.rs"
        ]
    );
    let root = std::fs::canonicalize(dir.path()).expect("canonical");
    let readme = format!("file://{}/readme.md", root.display());
    assert!(resources.iter().any(|r| r["uri"] == readme.as_str()));
    assert_eq!(
        client.read_resource(&readme).await.as_deref(),
        Ok("# Hello\nsecond line\n")
    );
    let odd = resources
        .iter()
        .find(|r| r["name"] == "odd name %41.txt")
        .expect("odd resource");
    let odd_uri = odd["uri"].as_str().expect("uri");
    assert!(odd_uri.ends_with("/odd%20name%20%2541.txt"), "{odd_uri}");
    assert_eq!(client.read_resource(odd_uri).await.as_deref(), Ok("odd"));

    // Denied files are neither listed nor readable; nothing else outside roots either.
    let text = serde_json::to_string(&resources).expect("json");
    assert!(!text.contains(".env") && !text.contains(".pem") && !text.contains(".git"));
    for uri in [
        format!("file://{}/.env", root.display()),
        format!("file://{}/config/.env.production", root.display()),
        format!("file://{}/%2Eenv", root.display()),
    ] {
        let error = client.read_resource(&uri).await.expect_err("denied");
        assert!(
            error["message"]
                .as_str()
                .expect("message")
                .contains("denied"),
            "{error}"
        );
    }
    let missing = client
        .read_resource(&format!("file://{}/nope", root.display()))
        .await
        .expect_err("missing");
    assert_eq!(missing["code"], -32002, "{missing}");
    let bad_cursor = client
        .request("resources/list", json!({"cursor": "x"}))
        .await;
    assert_eq!(bad_cursor["error"]["code"], -32602);
}

#[tokio::test]
async fn resources_outside_the_roots_are_refused() {
    let parent = tempfile::tempdir().expect("tempdir");
    let data = parent.path().join("data");
    put(&data, "ok.txt", "ok");
    // Prefix confusion: a sibling whose name starts with the root's name.
    put(&parent.path().join("data-evil"), "secret.txt", "outside");
    let mut client = serve(&["--root", &arg(&data)]).await;
    let data = std::fs::canonicalize(&data).expect("canonical");
    let base = data.display().to_string();
    for uri in [
        "file:///etc/passwd".to_owned(),
        "file:///proc/self/environ".to_owned(),
        format!("file://{base}-evil/secret.txt"),
        format!("file://{base}/../data-evil/secret.txt"),
        format!("file://{base}/%2e%2e/data-evil/secret.txt"),
        format!("file://{base}/ok.txt%00.png"),
        format!("file://evil.example{base}/ok.txt"),
        format!("http://127.0.0.1{base}/ok.txt"),
        format!("file://{base}/ok.txt?x"),
    ] {
        let error = client.read_resource(&uri).await.expect_err(&uri);
        assert_eq!(error["code"], -32602, "{uri}: {error}");
        assert!(!error.to_string().contains("outside\""), "{error}");
    }
    assert_eq!(
        client
            .read_resource(&format!("file://{base}/ok.txt"))
            .await
            .as_deref(),
        Ok("ok")
    );
    assert_eq!(
        client
            .read_resource(&format!("file://localhost{base}/./ok.txt"))
            .await
            .as_deref(),
        Ok("ok")
    );
}

#[tokio::test]
async fn write_file_is_absent_unless_enabled() {
    let dir = sample();
    let mut client = serve(&["--root", &arg(dir.path())]).await;
    let response = client
        .request(
            "tools/call",
            json!({"name": "write_file", "arguments": {"path": "x.txt", "content": "x"}}),
        )
        .await;
    assert!(response["error"]["code"].is_i64(), "{response}");
    assert!(!dir.path().join("x.txt").exists());
}

#[tokio::test]
async fn write_file_replaces_atomically_when_enabled() {
    let parent = tempfile::tempdir().expect("tempdir");
    let docs = parent.path().join("docs");
    let refs = parent.path().join("refs");
    put(&docs, "notes.txt", "old");
    put(&refs, "r.txt", "ref");
    std::os::unix::fs::symlink(docs.join("notes.txt"), docs.join("link.txt")).expect("symlink");
    let docs_root = format!("docs={}", arg(&docs));
    let refs_root = format!("refs={}", arg(&refs));
    let mut client = serve(&[
        "--root",
        &docs_root,
        "--root",
        &refs_root,
        "--writable",
        "docs",
        "--max-write-bytes",
        "16",
    ])
    .await;
    let tools = client.call("tools/list", json!({})).await;
    let write = tools["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .find(|t| t["name"] == "write_file")
        .expect("write_file listed");
    assert_eq!(write["annotations"]["readOnlyHint"], false);

    let replaced = client
        .tool_ok(
            "write_file",
            json!({"path": "docs/notes.txt", "content": "new"}),
        )
        .await;
    assert_eq!(
        replaced,
        json!({"path": "docs/notes.txt", "bytes_written": 3, "created": false})
    );
    assert_eq!(
        std::fs::read_to_string(docs.join("notes.txt")).expect("read"),
        "new"
    );
    let created = client
        .tool_ok(
            "write_file",
            json!({"path": "docs/fresh.txt", "content": "é"}),
        )
        .await;
    assert_eq!(created["created"], true);
    assert_eq!(
        std::fs::read_to_string(docs.join("fresh.txt")).expect("read"),
        "é"
    );

    for (path, content, rule) in [
        ("refs/r.txt", "x", "read-only"),
        ("docs/link.txt", "x", "symlink"),
        ("docs/.env", "x", "denied"),
        ("docs/big.txt", "0123456789abcdefg", "cap"),
        ("docs/missing/x.txt", "x", "not found"),
        ("docs/../refs/r.txt", "x", "\"..\""),
        ("docs", "x", "is a directory"),
        (".", "x", "name a root"),
    ] {
        let error = client
            .tool_err("write_file", json!({"path": path, "content": content}))
            .await;
        assert!(error.contains(rule), "{path}: {error}");
    }
    // Nothing changed by the refusals; no temp file left behind.
    assert_eq!(
        std::fs::read_to_string(refs.join("r.txt")).expect("read"),
        "ref"
    );
    assert_eq!(
        std::fs::read_to_string(docs.join("notes.txt")).expect("read"),
        "new"
    );
    assert!(
        std::fs::symlink_metadata(docs.join("link.txt"))
            .expect("link")
            .is_symlink()
    );
    let mut left: Vec<String> = std::fs::read_dir(&docs)
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf8"))
        .collect();
    left.sort_unstable();
    assert_eq!(left, ["fresh.txt", "link.txt", "notes.txt"]);
}

#[tokio::test]
async fn several_roots_are_addressed_by_name() {
    let parent = tempfile::tempdir().expect("tempdir");
    put(&parent.path().join("a"), "one.txt", "one");
    put(&parent.path().join("b"), "two.txt", "two");
    let a = arg(&parent.path().join("a"));
    let b = format!("bee={}", arg(&parent.path().join("b")));
    let mut client = serve(&["--root", &a, "--root", &b]).await;
    let roots = client.tool_ok("list_directory", json!({"path": "."})).await;
    assert_eq!(names(&roots), ["a", "bee"]);
    let one = client
        .tool_ok("read_file", json!({"path": "a/one.txt"}))
        .await;
    assert_eq!(
        (one["path"].as_str(), one["text"].as_str()),
        (Some("a/one.txt"), Some("one"))
    );
    let two = client
        .tool_ok("read_file", json!({"path": "bee/two.txt"}))
        .await;
    assert_eq!(two["text"], "two");
    let found = client
        .tool_ok("find_files", json!({"pattern": "*.txt"}))
        .await;
    assert_eq!(found["matches"][0]["path"], "a/one.txt");
    assert_eq!(found["matches"][1]["path"], "bee/two.txt");
    let error = client
        .tool_err("read_file", json!({"path": "c/one.txt"}))
        .await;
    assert!(error.contains("no root named \"c\""), "{error}");
    let error = client.tool_err("read_file", json!({"path": "."})).await;
    assert!(error.contains("name a root"), "{error}");
}
