//! Runs `micromcp-bench --quick` and checks that it measured every mode of every era and the
//! memory figures. No timing threshold is asserted: this only proves the bench works.

use std::path::PathBuf;
use std::process::Command;

/// `target/release/micromcp` if built, else `target/debug/micromcp` (which `cargo test
/// --workspace` always builds). `MICROMCP_BIN` overrides both.
fn micromcp() -> PathBuf {
    if let Some(p) = std::env::var_os("MICROMCP_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"),
        PathBuf::from,
    );
    for profile in ["release", "debug"] {
        let p = target.join(profile).join("micromcp");
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "no micromcp binary under {}/{{release,debug}}: run `cargo build -p micromcp` first \
         (or set MICROMCP_BIN)",
        target.display()
    );
}

#[test]
fn quick_run_measures_every_mode() {
    let out = Command::new(env!("CARGO_BIN_EXE_micromcp-bench"))
        .args(["--quick", "--clients", "2", "--micromcp"])
        .arg(micromcp())
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run micromcp-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for era in ["2026-07-28 stateless", "2025-11-25 session"] {
        for mode in [
            "direct (a)",
            "gw→http (b)",
            "gw→stdio (c)",
            "gw→stdio, 100 policies (e)",
        ] {
            let row = stdout
                .lines()
                .find(|l| l.starts_with(&format!("| {era} | {mode} | ")))
                .unwrap_or_else(|| panic!("no row for {era} {mode}:\n{stdout}"));
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            // | era | mode | req/s | p50 | p90 | p99 | max | errors | rss |
            for (i, cell) in cells.iter().enumerate().take(8).skip(3) {
                let v: f64 = cell
                    .parse()
                    .unwrap_or_else(|_| panic!("column {i} is not a number in {row}"));
                assert!(v > 0.0, "column {i} is zero in {row}");
            }
            assert_eq!(cells[8], "0", "errors in {row}");
        }
        for via in ["gw→http (b)", "gw→stdio (c)", "gw→stdio, 100 policies (e)"] {
            assert!(
                stdout.contains(&format!("| {era} | {via} | ")),
                "no ratio row for {era} {via}"
            );
        }
        // | era | grant µs | 100 policies µs | policies − grant µs |
        let row = stdout
            .lines()
            .skip_while(|l| !l.starts_with("## Policy cost"))
            .find(|l| l.starts_with(&format!("| {era} | ")))
            .unwrap_or_else(|| panic!("no policy cost row for {era}:\n{stdout}"));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        for cell in &cells[2..4] {
            assert!(cell.parse::<f64>().is_ok_and(|v| v > 0.0), "{row}");
        }
    }
    // The engine alone: each variant decided as expected (the bench checks it) and was timed.
    for (label, decision) in [
        ("grant only (as gw-stdio)", "allow: grants[0]"),
        (
            "100 policies, allowed (as gw-stdio-policy100)",
            "allow: support-echo",
        ),
        (
            "100 policies, refused by a forbid",
            "deny: dlp-echo-aws-access-key",
        ),
        (
            "100 policies, allowed, a new caller each call",
            "allow: support-echo",
        ),
    ] {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(&format!("| {label} | ")))
            .unwrap_or_else(|| panic!("no engine row {label:?}:\n{stdout}"));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        assert_eq!(cells[2], decision, "{row}");
        for cell in &cells[3..10] {
            assert!(cell.parse::<f64>().is_ok_and(|v| v > 0.0), "{row}");
        }
    }
    for state in [
        "| idle, 1 HTTP upstream | ",
        "| idle, 1 stdio service (echo) | ",
        "| peak under load, HTTP upstream | ",
        "| peak under load, stdio service | ",
        "| idle, 1 stdio services | ",
        "| idle, 10 stdio services | ",
    ] {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(state))
            .unwrap_or_else(|| panic!("no memory row {state:?}:\n{stdout}"));
        assert!(row.contains(" MiB"), "no RSS in {row}");
    }
}
