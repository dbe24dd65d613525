//! From flags (`FsArgs`) to the service state: validate everything without I/O and report
//! every problem at once, then open the roots.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use crate::{
    FsArgs,
    beneath::Root,
    guard::{DEFAULT_DENY, DenyList},
    ops::{Limits, State},
    roots::Roots,
};

/// Largest `--max-concurrent-ops`: tokio's default blocking thread pool size.
pub const MAX_CONCURRENT_OPS: usize = 512;
/// Longest `--op-timeout`: one day.
pub const MAX_OP_TIMEOUT_SECS: f64 = 86_400.0;

/// Parses `--op-timeout SECS`: a positive number of seconds, fractions allowed (`0.5`).
pub fn parse_op_timeout(value: &str) -> Result<Duration, String> {
    let secs: f64 = value
        .trim()
        .parse()
        .map_err(|_| format!("{value:?} is not a number of seconds"))?;
    if !(secs > 0.0 && secs <= MAX_OP_TIMEOUT_SECS) {
        return Err(format!(
            "must be more than 0 and at most {MAX_OP_TIMEOUT_SECS} seconds"
        ));
    }
    Duration::try_from_secs_f64(secs).map_err(|err| err.to_string())
}

/// A `--root` value: `NAME=PATH` or just `PATH` (named after its last component).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootSpec {
    pub name: String,
    pub path: PathBuf,
}

/// Parses a `--root` value. A prefix before the first `=` is a name only when it is a valid
/// one, so a path that happens to contain `=` still works as a plain path.
pub fn parse_root_spec(value: &str) -> Result<RootSpec, String> {
    if let Some((name, path)) = value.split_once('=')
        && is_valid_name(name)
        && !path.is_empty()
    {
        return Ok(RootSpec {
            name: name.to_owned(),
            path: PathBuf::from(path),
        });
    }
    let path = PathBuf::from(value);
    let name = default_name(&path)
        .ok_or_else(|| format!("--root {value}: cannot derive a root name; use NAME=PATH"))?;
    Ok(RootSpec { name, path })
}

/// Root names are the first component of paths when there are several roots.
fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn default_name(path: &Path) -> Option<String> {
    // `.` or `./` (the config folder) has no last component of its own: resolve it.
    let absolute = std::path::absolute(path).ok()?;
    let normal = absolute
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(n) => n.to_str(),
            _ => None,
        })
        .next_back()
        .unwrap_or("root");
    is_valid_name(normal).then(|| normal.to_owned())
}

/// Validates the flags (no I/O) and returns every problem found.
pub fn validate(args: &FsArgs) -> Result<(Vec<RootSpec>, DenyList, Limits), Vec<String>> {
    let mut errors = Vec::new();
    let mut specs: Vec<RootSpec> = Vec::new();
    for value in &args.root {
        match parse_root_spec(value) {
            Ok(spec) if specs.iter().any(|s| s.name == spec.name) => errors.push(format!(
                "--root {value}: the root name \"{}\" is used twice; name roots with NAME=PATH",
                spec.name
            )),
            Ok(spec) => specs.push(spec),
            Err(err) => errors.push(err),
        }
    }
    if args.root.is_empty() {
        errors.push("at least one --root is required".to_owned());
    }
    for name in &args.writable {
        if !specs.iter().any(|s| &s.name == name) {
            errors.push(format!("--writable {name}: no root has that name"));
        }
    }
    let mut patterns: Vec<String> = if args.no_default_deny {
        Vec::new()
    } else {
        DEFAULT_DENY.iter().map(|p| (*p).to_owned()).collect()
    };
    patterns.extend(args.deny.iter().cloned());
    let deny = DenyList::new(&patterns).map_err(|err| format!("--deny: {err}"));
    let deny = match deny {
        Ok(deny) => Some(deny),
        Err(err) => {
            errors.push(err);
            None
        }
    };
    for (flag, value) in [
        ("--max-read-bytes", args.max_read_bytes),
        ("--max-write-bytes", args.max_write_bytes),
        ("--search-max-file-bytes", args.search_max_file_bytes),
        ("--search-max-total-bytes", args.search_max_total_bytes),
    ] {
        if value == 0 {
            errors.push(format!("{flag} must be at least 1"));
        }
    }
    for (flag, value) in [
        ("--max-list-entries", args.max_list_entries),
        ("--max-find-results", args.max_find_results),
        ("--max-walk-entries", args.max_walk_entries),
        ("--max-depth", args.max_depth),
        ("--search-max-files", args.search_max_files),
        ("--search-max-matches", args.search_max_matches),
        ("--resource-page-size", args.resource_page_size),
        ("--max-concurrent-ops", args.max_concurrent_ops),
    ] {
        if value == 0 {
            errors.push(format!("{flag} must be at least 1"));
        }
    }
    if args.max_concurrent_ops > MAX_CONCURRENT_OPS {
        errors.push(format!(
            "--max-concurrent-ops must be at most {MAX_CONCURRENT_OPS} (the runtime's blocking \
             thread pool)"
        ));
    }
    match deny {
        Some(deny) if errors.is_empty() => Ok((specs, deny, limits_of(args))),
        _ => Err(errors),
    }
}

fn limits_of(args: &FsArgs) -> Limits {
    Limits {
        max_read_bytes: args.max_read_bytes,
        max_write_bytes: args.max_write_bytes,
        max_list_entries: args.max_list_entries,
        max_find_results: args.max_find_results,
        max_walk_entries: args.max_walk_entries,
        max_depth: args.max_depth,
        search_max_files: args.search_max_files,
        search_max_file_bytes: args.search_max_file_bytes,
        search_max_matches: args.search_max_matches,
        search_max_total_bytes: args.search_max_total_bytes,
        resource_page_size: args.resource_page_size,
        allow_hard_links: args.allow_hard_links,
        op_timeout: args.op_timeout,
        max_concurrent_ops: args.max_concurrent_ops,
    }
}

/// Validates the flags and opens the roots.
pub fn build_state(args: &FsArgs) -> anyhow::Result<State> {
    let (specs, deny, limits) = validate(args)
        .map_err(|errors| anyhow::anyhow!("invalid fs options:\n  {}", errors.join("\n  ")))?;
    let mut roots = Vec::new();
    for spec in specs {
        let writable = args.writable.contains(&spec.name);
        roots.push(Root::open(spec.name, &spec.path, writable)?);
    }
    Ok(State::new(Roots::new(roots), deny, limits))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        fs: FsArgs,
    }

    fn args(line: &[&str]) -> FsArgs {
        Cli::parse_from(std::iter::once("fs").chain(line.iter().copied())).fs
    }

    #[test]
    fn root_specs_take_an_optional_name() {
        assert_eq!(
            parse_root_spec("docs=/srv/docs"),
            Ok(RootSpec {
                name: "docs".into(),
                path: "/srv/docs".into()
            })
        );
        // The part before `=` is not a valid name: the whole value is a path.
        let plain = parse_root_spec("/srv/x=y/data").expect("plain path");
        assert_eq!(
            (plain.name.as_str(), plain.path),
            ("data", PathBuf::from("/srv/x=y/data"))
        );
        assert!(
            parse_root_spec("/srv/a=b").is_err(),
            "no valid name to derive"
        );
        assert_eq!(parse_root_spec("./data").map(|s| s.name), Ok("data".into()));
    }

    #[test]
    fn all_errors_are_reported_at_once() {
        let errors = validate(&args(&[
            "--root",
            "a=/x",
            "--root",
            "a=/y",
            "--writable",
            "nope",
            "--deny",
            "a[",
            "--max-read-bytes",
            "0",
        ]))
        .expect_err("invalid");
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(errors[0].contains("used twice"));
        assert!(errors[1].contains("--writable nope"));
        assert!(errors[2].contains("--deny"));
        assert!(errors[3].contains("--max-read-bytes"));
        let none = validate(&args(&[])).expect_err("no root");
        assert!(none[0].contains("--root"));
    }

    #[test]
    fn default_deny_can_be_replaced() {
        let (_, deny, _) = validate(&args(&["--root", "/x"])).expect("valid");
        assert!(deny.denied_str(".env").is_some());
        let (_, deny, _) = validate(&args(&[
            "--root",
            "/x",
            "--no-default-deny",
            "--deny",
            "*.secret",
        ]))
        .expect("valid");
        assert!(deny.denied_str(".env").is_none());
        assert!(deny.denied_str("a.secret").is_some());
    }

    #[test]
    fn time_and_concurrency_flags_are_validated() {
        assert_eq!(parse_op_timeout("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_op_timeout("0.25"), Ok(Duration::from_millis(250)));
        for bad in ["0", "-1", "NaN", "inf", "x", "100000"] {
            assert!(parse_op_timeout(bad).is_err(), "{bad}");
        }
        let (_, _, limits) = validate(&args(&["--root", "/x"])).expect("valid");
        assert_eq!(limits.op_timeout, Duration::from_secs(10));
        assert_eq!(limits.max_concurrent_ops, 4);
        assert_eq!(limits.search_max_total_bytes, 64 * 1024 * 1024);
        let errors = validate(&args(&[
            "--root",
            "/x",
            "--max-concurrent-ops",
            "0",
            "--search-max-total-bytes",
            "0",
        ]))
        .expect_err("invalid");
        assert_eq!(errors.len(), 2, "{errors:?}");
        let errors =
            validate(&args(&["--root", "/x", "--max-concurrent-ops", "513"])).expect_err("invalid");
        assert!(errors[0].contains("at most 512"), "{errors:?}");
    }
}
