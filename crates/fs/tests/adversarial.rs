//! The attack classes of SECURITY.md "Files", each tried against the running service: the
//! attempt must fail with an error naming the rule, and nothing from outside the root (or
//! from a denied file) may appear in any answer.

#![allow(clippy::unwrap_used)]

mod common;

use std::{
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use common::{arg, put, serve, state};
use micromcp_fs::{error::FsError, ops::Stop};
use serde_json::json;

/// Text that only exists outside the root (or in denied files): it must never be returned.
const OUTSIDE: &str = "OUTSIDE-CONTENT";

/// `parent/data` is the root; `parent/secret.txt` and the sibling `parent/data-evil` are not.
struct Layout {
    _dir: tempfile::TempDir,
    parent: PathBuf,
    data: PathBuf,
}

fn layout() -> Layout {
    let dir = tempfile::tempdir().expect("tempdir");
    let parent = std::fs::canonicalize(dir.path()).expect("canonical");
    let data = parent.join("data");
    put(&data, "ok.txt", "inside");
    put(&data, "sub/inner.txt", "inside too");
    put(&data, ".env", &format!("KEY={OUTSIDE}"));
    put(&parent, "secret.txt", OUTSIDE);
    put(&parent.join("data-evil"), "secret.txt", OUTSIDE);
    Layout {
        _dir: dir,
        parent,
        data,
    }
}

#[tokio::test]
async fn traversal_in_every_encoding_is_refused_or_stays_inside() {
    let l = layout();
    let mut client = serve(&["--root", &arg(&l.data)]).await;
    let absolute_secret = arg(&l.parent.join("secret.txt"));
    let evil_sibling = arg(&l.parent.join("data-evil/secret.txt"));
    let paths = [
        "..",
        "../secret.txt",
        "../data-evil/secret.txt",
        "sub/../../secret.txt",
        "sub/../..",
        "./../secret.txt",
        "%2e%2e/secret.txt",
        "%2e%2e%2fsecret.txt",
        "..%2fsecret.txt",
        "..%252fsecret.txt",
        ".%2e/secret.txt",
        "..\\secret.txt",
        "..%5csecret.txt",
        "\u{c0}\u{ae}\u{c0}\u{ae}/secret.txt",
        "\u{2025}/secret.txt",
        "\u{ff0e}\u{ff0e}/secret.txt",
        "\u{2024}\u{2024}/secret.txt",
        "....//secret.txt",
        "..;/secret.txt",
        "~/secret.txt",
        "/etc/passwd",
        "//etc/passwd",
        "/proc/self/root/etc/passwd",
        "/proc/self/environ",
        "file:///etc/passwd",
        &absolute_secret,
        &evil_sibling,
        "ok.txt\0../../secret.txt",
        "ok.txt\n../secret.txt",
    ];
    for path in paths {
        for (tool, args) in [
            ("read_file", json!({"path": path})),
            ("stat", json!({"path": path})),
            ("list_directory", json!({"path": path})),
            ("find_files", json!({"pattern": "*", "path": path})),
            ("search_files", json!({"query": "OUTSIDE", "path": path})),
        ] {
            let result = client
                .call("tools/call", json!({"name": tool, "arguments": args}))
                .await;
            let text = result.to_string();
            assert!(!text.contains(OUTSIDE), "{tool} {path:?} leaked: {text}");
            assert_eq!(result["isError"], true, "{tool} {path:?}: {text}");
        }
    }
    // The refusals name their rule.
    let dotdot = client
        .tool_err("read_file", json!({"path": "../secret.txt"}))
        .await;
    assert!(
        dotdot.contains("\"..\" component refused: path escapes the root"),
        "{dotdot}"
    );
    let absolute = client
        .tool_err("read_file", json!({"path": absolute_secret}))
        .await;
    assert!(absolute.contains("absolute path refused"), "{absolute}");
    let nul = client
        .tool_err("read_file", json!({"path": "ok.txt\0.png"}))
        .await;
    assert!(nul.contains("NUL byte"), "{nul}");
    let literal = client
        .tool_err("read_file", json!({"path": "%2e%2e/secret.txt"}))
        .await;
    assert!(literal.ends_with("not found"), "{literal}");
    let empty = client.tool_err("read_file", json!({"path": ""})).await;
    assert!(empty.contains("empty path"), "{empty}");
    let long = client
        .tool_err("read_file", json!({"path": "a/".repeat(3000)}))
        .await;
    assert!(long.contains("limit"), "{long}");
}

#[tokio::test]
async fn symlinks_are_never_followed() {
    let l = layout();
    symlink(l.parent.join("secret.txt"), l.data.join("file_out")).expect("symlink");
    symlink(l.parent.join("data-evil"), l.data.join("dir_out")).expect("symlink");
    symlink("../data-evil", l.data.join("relative_out")).expect("symlink");
    symlink("/etc", l.data.join("etc")).expect("symlink");
    // Links that stay inside the root are refused too: one points at a denied file.
    symlink(".env", l.data.join("innocent.txt")).expect("symlink");
    symlink("ok.txt", l.data.join("ok_link.txt")).expect("symlink");
    symlink("sub", l.data.join("sub_link")).expect("symlink");
    let mut client = serve(&["--root", &arg(&l.data)]).await;
    for path in [
        "file_out",
        "dir_out/secret.txt",
        "relative_out/secret.txt",
        "etc/passwd",
        "innocent.txt",
        "ok_link.txt",
        "sub_link/inner.txt",
    ] {
        let error = client.tool_err("read_file", json!({"path": path})).await;
        assert!(error.contains("symlink"), "{path}: {error}");
        let error = client.tool_err("stat", json!({"path": path})).await;
        assert!(error.contains("symlink"), "{path}: {error}");
    }
    let error = client
        .tool_err("list_directory", json!({"path": "dir_out"}))
        .await;
    assert!(error.contains("symlink"), "{error}");
    // Listed as symlinks, with no size and a note; never descended into by find/search.
    let listing = client.tool_ok("list_directory", json!({"path": "."})).await;
    let link = listing["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["name"] == "innocent.txt")
        .expect("listed");
    assert_eq!(link["kind"], "symlink");
    assert!(link.get("size").is_none());
    let found = client
        .tool_ok("find_files", json!({"pattern": "secret*"}))
        .await;
    assert_eq!(found["matches"], json!([]), "{found}");
    let passwd = client
        .tool_ok("find_files", json!({"pattern": "passwd"}))
        .await;
    assert_eq!(passwd["matches"], json!([]), "{passwd}");
    let searched = client
        .tool_ok("search_files", json!({"query": OUTSIDE}))
        .await;
    assert_eq!(searched["matches"], json!([]), "{searched}");
    let resources = client.all_resources().await;
    let text = serde_json::to_string(&resources).expect("json");
    for name in ["file_out", "dir_out", "innocent", "ok_link", "sub_link/"] {
        assert!(!text.contains(name), "{name}: {text}");
    }
    let base = l.data.display();
    for rel in ["file_out", "innocent.txt", "dir_out/secret.txt"] {
        let error = client
            .read_resource(&format!("file://{base}/{rel}"))
            .await
            .expect_err(rel);
        assert!(
            error["message"]
                .as_str()
                .expect("message")
                .contains("symlink"),
            "{error}"
        );
    }
}

#[tokio::test]
async fn proc_magic_links_are_refused() {
    // Even a root inside /proc cannot be escaped through its magic links.
    let mut client = serve(&["--root", "/proc/self"]).await;
    for path in ["root/etc/passwd", "cwd", "exe", "fd/0", "root"] {
        let error = client.tool_err("read_file", json!({"path": path})).await;
        assert!(error.contains("symlink"), "{path}: {error}");
    }
    let error = client
        .tool_err("list_directory", json!({"path": "root/etc"}))
        .await;
    assert!(error.contains("symlink"), "{error}");
}

#[tokio::test]
async fn hard_links_are_refused_unless_allowed() {
    let l = layout();
    std::fs::hard_link(l.parent.join("secret.txt"), l.data.join("linked.txt")).expect("link");
    let mut client = serve(&["--root", &arg(&l.data)]).await;
    let error = client
        .tool_err("read_file", json!({"path": "linked.txt"}))
        .await;
    assert!(error.contains("2 hard links: refused"), "{error}");
    assert!(error.contains("--allow-hard-links"), "{error}");
    let error = client.tool_err("stat", json!({"path": "linked.txt"})).await;
    assert!(error.contains("hard links"), "{error}");
    let searched = client
        .tool_ok("search_files", json!({"query": OUTSIDE}))
        .await;
    assert_eq!(searched["matches"], json!([]));
    assert_eq!(searched["skipped_hard_links"], 1);
    let listing = client.tool_ok("list_directory", json!({"path": "."})).await;
    let linked = listing["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["name"] == "linked.txt")
        .expect("listed");
    assert!(linked.get("size").is_none(), "{linked}");
    assert!(
        linked["note"]
            .as_str()
            .expect("note")
            .contains("hard links")
    );
    let uri = format!("file://{}/linked.txt", l.data.display());
    let resources = client.all_resources().await;
    assert!(!resources.iter().any(|r| r["uri"] == uri.as_str()));
    assert!(client.read_resource(&uri).await.is_err());

    let mut allowed = serve(&["--root", &arg(&l.data), "--allow-hard-links"]).await;
    let read = allowed
        .tool_ok("read_file", json!({"path": "linked.txt"}))
        .await;
    assert_eq!(read["text"], OUTSIDE);
}

#[tokio::test]
async fn deny_globs_apply_everywhere() {
    let l = layout();
    put(&l.data, "private/plan.txt", OUTSIDE);
    put(&l.data, "keys/prod.KEY", OUTSIDE);
    put(&l.data, "app/.Env.local", OUTSIDE);
    let mut client = serve(&["--root", &arg(&l.data), "--deny", "private/"]).await;
    for (path, rule) in [
        (".env", ".env*"),
        ("app/.Env.local", ".env*"),
        ("./app//.Env.local", ".env*"),
        ("keys/prod.KEY", "*.key"),
        ("private/plan.txt", "private/"),
        ("private", "private/"),
    ] {
        let error = client.tool_err("read_file", json!({"path": path})).await;
        assert!(
            error.contains(&format!("denied by the rule \"{rule}\"")),
            "{path}: {error}"
        );
    }
    let error = client
        .tool_err("list_directory", json!({"path": "private"}))
        .await;
    assert!(error.contains("denied"), "{error}");
    let error = client
        .tool_err("search_files", json!({"query": "x", "path": "private"}))
        .await;
    assert!(error.contains("denied"), "{error}");
    let listing = client.tool_ok("list_directory", json!({"path": "."})).await;
    let text = listing.to_string();
    assert!(
        !text.contains("private") && !text.contains(".env"),
        "{text}"
    );
    let searched = client
        .tool_ok("search_files", json!({"query": OUTSIDE}))
        .await;
    assert_eq!(searched["matches"], json!([]));
    let found = client.tool_ok("find_files", json!({"pattern": "**"})).await;
    let text = found.to_string();
    assert!(!text.contains("plan") && !text.contains("prod") && !text.contains("Env"));

    // Without the defaults, only what --deny names is refused.
    let mut bare = serve(&[
        "--root",
        &arg(&l.data),
        "--no-default-deny",
        "--deny",
        "*.KEY",
    ])
    .await;
    let env = bare.tool_ok("read_file", json!({"path": ".env"})).await;
    assert!(env["text"].as_str().expect("text").starts_with("KEY="));
    let error = bare
        .tool_err("read_file", json!({"path": "keys/prod.KEY"}))
        .await;
    assert!(error.contains("denied"), "{error}");
}

/// Renames `dir` away and puts a symlink pointing outside in its place, and back, until
/// told to stop.
fn keep_swapping(root: &Path, outside: &Path, stop: &AtomicBool) -> usize {
    let real = root.join("d");
    let parked = root.join("d.real");
    let link = root.join("d.link");
    symlink(outside, &link).expect("symlink");
    let mut swaps = 0;
    while !stop.load(Ordering::Relaxed) {
        std::fs::rename(&real, &parked).expect("park dir");
        std::fs::rename(&link, &real).expect("link in");
        std::thread::yield_now();
        std::fs::rename(&real, &link).expect("link out");
        std::fs::rename(&parked, &real).expect("dir back");
        swaps += 1;
    }
    swaps
}

#[test]
fn a_directory_swapped_for_a_symlink_mid_use_never_leaks() {
    let l = layout();
    put(&l.data, "d/f.txt", "inside");
    let outside = l.parent.join("data-evil");
    put(&outside, "f.txt", OUTSIDE);
    let state = state(&["--root", &arg(&l.data)]);
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (root, outside, stop) = (l.data.clone(), outside.clone(), Arc::clone(&stop));
        std::thread::spawn(move || keep_swapping(&root, &outside, &stop))
    };
    let (mut served, mut refused) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && (served < 50 || refused < 50) {
        match state.read_file("d/f.txt", None, None) {
            Ok(read) => {
                assert_eq!(read.text, "inside");
                served += 1;
            }
            // Mid-swap the path is a symlink (refused) or briefly absent.
            Err(FsError::Symlink | FsError::NotFound) => refused += 1,
            Err(other) => panic!("unexpected: {other}"),
        }
        let stop = Stop::after(Duration::from_secs(10));
        if let Ok(listing) = state.list_directory("d", &stop) {
            assert!(listing.entries.iter().all(|e| e.name == "f.txt"));
        }
        let searched = state
            .search_files(
                &micromcp_fs::ops::SearchQuery::new("CONTENT", false, false, None, None)
                    .expect("query"),
                ".",
                &stop,
            )
            .expect("search");
        assert!(searched.matches.is_empty(), "{:?}", searched.matches);
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().expect("swapper");
    assert!(swaps > 0);
    // Both sides of the race were hit: real reads succeeded and swapped-in links were refused.
    assert!(
        served > 0 && refused > 0,
        "served {served}, refused {refused}"
    );
}

#[tokio::test]
async fn conventional_secret_files_are_denied_by_default() {
    let l = layout();
    // Each file named by a default deny glob added after the review, with its rule.
    let secrets = [
        ("deploy/id_rsa", "id_rsa*"),
        ("deploy/id_rsa.pub", "id_rsa*"),
        ("keys/id_dsa", "id_dsa*"),
        ("keys/id_ecdsa", "id_ecdsa*"),
        ("keys/id_ed25519", "id_ed25519*"),
        ("cert.p12", "*.p12"),
        ("cert.pfx", "*.pfx"),
        ("java/release.jks", "*.jks"),
        ("android/debug.keystore", "*.keystore"),
        (".netrc", ".netrc"),
        ("web/.npmrc", ".npmrc"),
        (".pypirc", ".pypirc"),
        (".pgpass", ".pgpass"),
        (".git-credentials", ".git-credentials"),
        ("site/.htpasswd", ".htpasswd"),
        ("gcp/credentials.json", "credentials.json"),
        ("infra/terraform.tfstate", "*.tfstate*"),
        ("infra/terraform.tfstate.backup", "*.tfstate*"),
        (".aws/credentials", ".aws/"),
        (".kube/config", ".kube/"),
        (".gnupg/pubring.kbx", ".gnupg/"),
        (".docker/config.json", ".docker/"),
    ];
    for (path, _) in secrets {
        put(&l.data, path, OUTSIDE);
    }
    let mut client = serve(&["--root", &arg(&l.data)]).await;
    for (path, rule) in secrets {
        let error = client.tool_err("read_file", json!({"path": path})).await;
        assert!(
            error.contains(&format!("denied by the rule \"{rule}\"")),
            "{path}: {error}"
        );
        let error = client.tool_err("stat", json!({"path": path})).await;
        assert!(error.contains("denied"), "{path}: {error}");
    }
    let searched = client
        .tool_ok("search_files", json!({"query": OUTSIDE}))
        .await;
    assert_eq!(searched["matches"], json!([]), "{searched}");
    let found = client.tool_ok("find_files", json!({"pattern": "**"})).await;
    let text = found.to_string();
    for (path, _) in secrets {
        let name = path.rsplit('/').next().expect("name");
        assert!(!text.contains(name), "{name} listed: {text}");
    }
    let resources = client.all_resources().await;
    let text = serde_json::to_string(&resources).expect("json");
    for (path, _) in secrets {
        let name = path.rsplit('/').next().expect("name");
        assert!(!text.contains(name), "{name} listed as a resource");
    }
    // The directories in between are still there; only the secrets are hidden.
    let deploy = client
        .tool_ok("list_directory", json!({"path": "deploy"}))
        .await;
    assert_eq!(deploy["entries"], json!([]), "{deploy}");
}

#[tokio::test]
async fn write_temp_files_are_hidden_and_refused() {
    let l = layout();
    // What a crash between create and rename leaves behind.
    let temp = ".micromcp-0123456789abcdef0123456789abcdef.tmp";
    put(&l.data, temp, OUTSIDE);
    put(&l.data, &format!("sub/{temp}"), OUTSIDE);
    // Hidden and refused even with no deny globs at all, and in a writable root.
    let mut client = serve(&[
        "--root",
        &arg(&l.data),
        "--no-default-deny",
        "--writable",
        "data",
    ])
    .await;
    for path in [temp.to_owned(), format!("sub/{temp}")] {
        let error = client.tool_err("read_file", json!({"path": path})).await;
        assert!(
            error.contains("write_file temp name") && error.contains("refused"),
            "{path}: {error}"
        );
        let error = client
            .tool_err("write_file", json!({"path": path, "content": "x"}))
            .await;
        assert!(error.contains("write_file temp name"), "{path}: {error}");
    }
    let listing = client.tool_ok("list_directory", json!({"path": "."})).await;
    assert!(!listing.to_string().contains(".micromcp-"), "{listing}");
    let found = client.tool_ok("find_files", json!({"pattern": "*"})).await;
    assert!(!found.to_string().contains(".micromcp-"), "{found}");
    let searched = client
        .tool_ok("search_files", json!({"query": OUTSIDE, "glob": "*.tmp"}))
        .await;
    assert_eq!(searched["matches"], json!([]), "{searched}");
    assert_eq!(searched["files_scanned"], 0);
    let resources = client.all_resources().await;
    let text = serde_json::to_string(&resources).expect("json");
    assert!(!text.contains(".micromcp-"), "{text}");
    let uri = format!(
        "file://{}",
        arg(&l.data.join(temp)) // plain ASCII name: no encoding needed
    );
    let error = client.read_resource(&uri).await.expect_err("refused");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("write_file temp name")),
        "{error}"
    );
    // The files are still there (the service never deletes what it did not create now).
    assert!(l.data.join(temp).exists());
}
