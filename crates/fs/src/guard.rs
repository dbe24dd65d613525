//! Pure checks on what callers send, before any syscall: path syntax and the deny list.
//!
//! Nothing here touches the file system, so every function can be unit-tested and fuzzed.
//! These checks are defence in depth and give clear errors; the guarantee that a path stays
//! beneath its root comes from the kernel (`openat2` with `RESOLVE_BENEATH`, see `beneath`).

use std::fmt;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

/// Longest path a caller may send, in bytes (Linux `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;
/// Longest single path component, in bytes (Linux `NAME_MAX`).
pub const MAX_COMPONENT_BYTES: usize = 255;

/// The deny globs used unless `--no-default-deny` is given: names that hold secrets by
/// convention. Each entry is documented in `docs/services/fs.md`.
pub const DEFAULT_DENY: [&str; 25] = [
    // Environment files and keys.
    ".env*",
    "*.pem",
    "*.key",
    // SSH keys, also outside `.ssh/` (e.g. `deploy/id_rsa`).
    "id_rsa*",
    "id_dsa*",
    "id_ecdsa*",
    "id_ed25519*",
    // Key stores: PKCS#12 bundles, Java key stores.
    "*.p12",
    "*.pfx",
    "*.jks",
    "*.keystore",
    // Credential files of common tools.
    ".netrc",
    ".npmrc",
    ".pypirc",
    ".pgpass",
    ".git-credentials",
    ".htpasswd",
    "credentials.json",
    // Terraform state (holds resource secrets in clear), with its backups.
    "*.tfstate*",
    // Directories of credentials and keys.
    ".ssh/",
    ".git/",
    ".aws/",
    ".kube/",
    ".gnupg/",
    ".docker/",
];

/// Names `write_file` gives its temp files: `.micromcp-<hex>.tmp`. They are the service's
/// own, so they are hidden from listings and refused to callers whatever the deny list.
pub const TEMP_PREFIX: &str = ".micromcp-";
/// See [`TEMP_PREFIX`].
pub const TEMP_SUFFIX: &str = ".tmp";

/// Whether one path component is a `write_file` temp name (`.micromcp-*.tmp`).
pub fn is_temp_name(component: &str) -> bool {
    component.len() > TEMP_PREFIX.len() + TEMP_SUFFIX.len()
        && component.starts_with(TEMP_PREFIX)
        && component.ends_with(TEMP_SUFFIX)
}

/// Whether any component of a `/`-separated relative path is a `write_file` temp name.
pub fn has_temp_name(path: &str) -> bool {
    path.split('/').any(is_temp_name)
}

/// Why a caller's path was refused before any syscall.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("empty path: use \".\" for the root")]
    Empty,
    #[error("path is not valid UTF-8: refused")]
    NotUtf8,
    #[error("path is {len} bytes, longer than the {MAX_PATH_BYTES}-byte limit: refused")]
    TooLong { len: usize },
    #[error("a path component is longer than {MAX_COMPONENT_BYTES} bytes: refused")]
    ComponentTooLong,
    #[error("path contains a NUL byte: refused")]
    Nul,
    #[error("path contains a control character: refused")]
    ControlCharacter,
    #[error("absolute path refused: paths are relative to a root (e.g. \"docs/readme.md\")")]
    Absolute,
    #[error("\"..\" component refused: path escapes the root")]
    DotDot,
}

/// A checked path relative to a root: no `..`, no empty or `.` components, never absolute.
/// The empty path is the root itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelPath(String);

impl RelPath {
    /// The root itself.
    pub fn root() -> Self {
        Self::default()
    }

    /// The path as given to `openat2` ("." for the root).
    pub fn as_open_arg(&self) -> &str {
        if self.0.is_empty() { "." } else { &self.0 }
    }

    /// The path with `/` separators; empty for the root.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|c| !c.is_empty())
    }

    /// The parent directory and the last component; `None` for the root.
    pub fn split_last(&self) -> Option<(RelPath, &str)> {
        if self.is_root() {
            return None;
        }
        Some(match self.0.rsplit_once('/') {
            Some((parent, name)) => (RelPath(parent.to_owned()), name),
            None => (RelPath::root(), self.0.as_str()),
        })
    }

    /// This path with one more component. `name` must be a single checked component
    /// (it comes from a directory listing, never from a caller).
    pub fn join(&self, name: &str) -> RelPath {
        if self.is_root() {
            RelPath(name.to_owned())
        } else {
            RelPath(format!("{}/{name}", self.0))
        }
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_open_arg())
    }
}

/// Checks raw bytes as a caller path; the entry point for fuzzing.
pub fn check_path_bytes(input: &[u8]) -> Result<RelPath, PathError> {
    // NUL first: it is the classic truncation trick, and deserves its own message.
    if input.contains(&0) {
        return Err(PathError::Nul);
    }
    let text = std::str::from_utf8(input).map_err(|_| PathError::NotUtf8)?;
    check_path(text)
}

/// Checks a caller's path and normalises it to a [`RelPath`].
///
/// Paths are taken literally: they are not URL-decoded, and `\` is an ordinary character on
/// Linux, so `%2e%2e`, `..%2f` or `..\` name files with those exact names (which the kernel
/// then resolves beneath the root like any other name). Empty and `.` components are
/// dropped (they cannot move anywhere); `..` is refused outright.
pub fn check_path(input: &str) -> Result<RelPath, PathError> {
    if input.is_empty() {
        return Err(PathError::Empty);
    }
    if input.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong { len: input.len() });
    }
    if input.contains('\0') {
        return Err(PathError::Nul);
    }
    // Control characters are never needed in a name a model types, and they forge log lines.
    if input.chars().any(char::is_control) {
        return Err(PathError::ControlCharacter);
    }
    if input.starts_with('/') {
        return Err(PathError::Absolute);
    }
    let mut kept = Vec::new();
    for component in input.split('/') {
        match component {
            "" | "." => {}
            ".." => return Err(PathError::DotDot),
            c if c.len() > MAX_COMPONENT_BYTES => return Err(PathError::ComponentTooLong),
            c => kept.push(c),
        }
    }
    Ok(RelPath(kept.join("/")))
}

/// A deny-list rule that matched, named in refusals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenyRule(pub String);

impl fmt::Display for DenyRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Deny globs, matched case-insensitively against every component of a path and against
/// every leading part of it (`a`, `a/b`, `a/b/c`), so a denied directory hides all below it.
#[derive(Debug, Clone)]
pub struct DenyList {
    set: GlobSet,
    patterns: Vec<String>,
}

impl DenyList {
    /// Builds the list; a trailing `/` (as in `.ssh/`) and a leading `/` are dropped, since
    /// every component is matched anyway.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self, globset::Error> {
        let mut builder = GlobSetBuilder::new();
        let mut kept = Vec::new();
        for pattern in patterns {
            let pattern = pattern.as_ref();
            let trimmed = pattern.trim_matches('/');
            if trimmed.is_empty() {
                continue;
            }
            // Case-insensitive: `.ENV` on a case-folding file system is still `.env`.
            let glob = GlobBuilder::new(trimmed)
                .literal_separator(true)
                .case_insensitive(true)
                .backslash_escape(true)
                .build()?;
            builder.add(glob);
            kept.push(pattern.to_owned());
        }
        Ok(Self {
            set: builder.build()?,
            patterns: kept,
        })
    }

    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// The first rule that denies `path` (relative to its root), if any.
    pub fn denied(&self, path: &RelPath) -> Option<DenyRule> {
        self.denied_str(path.as_str())
    }

    /// Same as [`DenyList::denied`] on a `/`-separated string; also fuzzable.
    pub fn denied_str(&self, path: &str) -> Option<DenyRule> {
        let mut prefix_end = 0;
        for component in path.split('/') {
            if component.is_empty() {
                prefix_end += 1;
                continue;
            }
            prefix_end += component.len();
            let prefix = path.get(..prefix_end).unwrap_or(path);
            for candidate in [component, prefix] {
                if let Some(&index) = self.set.matches(candidate).first() {
                    return Some(DenyRule(self.patterns[index].clone()));
                }
            }
            prefix_end += 1;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> DenyList {
        DenyList::new(&DEFAULT_DENY).expect("default globs")
    }

    #[test]
    fn plain_relative_paths_are_normalised() {
        assert_eq!(check_path("a/b.txt").map(|p| p.0), Ok("a/b.txt".into()));
        assert_eq!(check_path("./a//b/").map(|p| p.0), Ok("a/b".into()));
        assert_eq!(check_path(".").map(|p| p.is_root()), Ok(true));
        assert_eq!(check_path("./"), Ok(RelPath::root()));
    }

    #[test]
    fn dotdot_is_refused_wherever_it_appears() {
        for path in ["..", "../x", "a/../b", "a/..", "./..", "a/b/../../.."] {
            assert_eq!(check_path(path), Err(PathError::DotDot), "{path}");
        }
    }

    #[test]
    fn encoded_traversal_forms_are_literal_names() {
        // Not decoded: these are odd file names, not `..`, and stay beneath the root.
        for path in [
            "%2e%2e/etc/passwd",
            "..%2fetc",
            "%2e%2e%2f",
            "..\\..\\etc",
            "\u{2025}/x",         // two dot leader
            "\u{ff0e}\u{ff0e}/x", // fullwidth full stops
            "...",
        ] {
            let checked = check_path(path).expect(path);
            assert!(!checked.is_root(), "{path}");
            assert!(checked.components().all(|c| c != ".."), "{path}");
        }
    }

    #[test]
    fn overlong_utf8_dot_is_not_utf8() {
        assert_eq!(
            check_path_bytes(b"\xc0\xae\xc0\xae/x"),
            Err(PathError::NotUtf8)
        );
        assert_eq!(check_path_bytes(b"\xe0\x80\xae/x"), Err(PathError::NotUtf8));
    }

    #[test]
    fn absolute_nul_control_and_empty_are_refused() {
        assert_eq!(check_path("/etc/passwd"), Err(PathError::Absolute));
        assert_eq!(check_path("//etc"), Err(PathError::Absolute));
        assert_eq!(check_path("/proc/self/root"), Err(PathError::Absolute));
        assert_eq!(check_path("a\0b"), Err(PathError::Nul));
        assert_eq!(check_path_bytes(b"ok.txt\0.png"), Err(PathError::Nul));
        assert_eq!(check_path("a\nb"), Err(PathError::ControlCharacter));
        assert_eq!(check_path("a\u{1b}[31m"), Err(PathError::ControlCharacter));
        assert_eq!(check_path(""), Err(PathError::Empty));
    }

    #[test]
    fn overlong_paths_and_components_are_refused() {
        let long = "a/".repeat(MAX_PATH_BYTES);
        assert_eq!(
            check_path(&long),
            Err(PathError::TooLong { len: long.len() })
        );
        assert_eq!(
            check_path(&"x".repeat(256)),
            Err(PathError::ComponentTooLong)
        );
        assert!(check_path(&"x".repeat(255)).is_ok());
    }

    #[test]
    fn split_and_join_round_trip() {
        let path = check_path("a/b/c").expect("ok");
        let (parent, name) = path.split_last().expect("not root");
        assert_eq!((parent.as_str(), name), ("a/b", "c"));
        assert_eq!(parent.join(name), path);
        assert_eq!(RelPath::root().join("x").as_str(), "x");
        assert!(RelPath::root().split_last().is_none());
        assert_eq!(RelPath::root().as_open_arg(), ".");
    }

    #[test]
    fn default_deny_matches_components_anywhere() {
        let deny = defaults();
        for (path, rule) in [
            (".env", ".env*"),
            ("app/.env.local", ".env*"),
            ("app/.ENV", ".env*"),
            ("certs/server.pem", "*.pem"),
            ("id.key", "*.key"),
            (".ssh", ".ssh/"),
            ("home/.ssh/id_ed25519", ".ssh/"),
            (".git/config", ".git/"),
            ("sub/.git/HEAD", ".git/"),
            ("deploy/id_rsa", "id_rsa*"),
            ("id_rsa.pub", "id_rsa*"),
            ("id_dsa", "id_dsa*"),
            ("keys/id_ecdsa_sk", "id_ecdsa*"),
            ("ID_ED25519", "id_ed25519*"),
            ("cert.p12", "*.p12"),
            ("a/b.PFX", "*.pfx"),
            ("release.jks", "*.jks"),
            ("android/debug.keystore", "*.keystore"),
            (".netrc", ".netrc"),
            ("web/.npmrc", ".npmrc"),
            (".pypirc", ".pypirc"),
            (".pgpass", ".pgpass"),
            (".git-credentials", ".git-credentials"),
            ("site/.htpasswd", ".htpasswd"),
            ("gcp/credentials.json", "credentials.json"),
            ("infra/terraform.tfstate", "*.tfstate*"),
            ("terraform.tfstate.backup", "*.tfstate*"),
            (".aws/credentials", ".aws/"),
            ("home/.kube/config", ".kube/"),
            (".gnupg/private-keys-v1.d/x", ".gnupg/"),
            (".docker/config.json", ".docker/"),
        ] {
            assert_eq!(deny.denied_str(path), Some(DenyRule(rule.into())), "{path}");
        }
        for path in [
            "",
            "env",
            "readme.md",
            "a/b.txt",
            "my.env.example/x",
            "keys/x.keys",
            "aws/credentials",
            "npmrc",
            "my_id_rsa",
            "credentials.json.example/x",
            "terraform.tf",
            "docker/compose.yml",
        ] {
            assert_eq!(deny.denied_str(path), None, "{path}");
        }
    }

    #[test]
    fn write_temp_names_are_recognised_in_any_component() {
        assert!(is_temp_name(
            ".micromcp-0123456789abcdef0123456789abcdef.tmp"
        ));
        assert!(is_temp_name(".micromcp-x.tmp"));
        assert!(!is_temp_name(".micromcp-.tmp"));
        assert!(!is_temp_name("micromcp-x.tmp"));
        assert!(!is_temp_name(".micromcp-x.tmp.txt"));
        assert!(has_temp_name("a/.micromcp-x.tmp"));
        assert!(has_temp_name(".micromcp-x.tmp/b"));
        assert!(!has_temp_name("a/b.tmp"));
        assert!(!has_temp_name(""));
    }

    #[test]
    fn path_globs_match_relative_prefixes() {
        let deny = DenyList::new(&["secrets/*.txt", "private"]).expect("globs");
        assert!(deny.denied_str("secrets/a.txt").is_some());
        assert!(deny.denied_str("secrets/a.txt/inner").is_some());
        // `*` does not cross `/`: only direct children match.
        assert!(deny.denied_str("secrets/sub/a.txt").is_none());
        assert!(deny.denied_str("other/secrets/a.txt").is_none());
        assert!(deny.denied_str("x/private/y").is_some());
        assert!(deny.denied_str("privately").is_none());
    }

    #[test]
    fn empty_deny_list_denies_nothing() {
        let deny = DenyList::new::<&str>(&[]).expect("empty");
        assert_eq!(deny.denied_str(".env"), None);
        assert!(deny.patterns().is_empty());
    }

    #[test]
    fn bad_globs_are_errors() {
        assert!(DenyList::new(&["a[b"]).is_err());
    }
}
