//! Secrets by reference only.

use std::path::Path;

/// A resolved secret value. `Debug` and `Display` never print it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The value, for the one place that must send it (a header, a child's environment).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A value as written in the config: a literal, `env:NAME` or `file:PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    Literal(String),
    Env(String),
    File(String),
}

impl SecretRef {
    pub fn parse(s: &str) -> Self {
        if let Some(name) = s.strip_prefix("env:") {
            Self::Env(name.to_owned())
        } else if let Some(path) = s.strip_prefix("file:") {
            Self::File(path.to_owned())
        } else {
            Self::Literal(s.to_owned())
        }
    }

    pub fn is_reference(&self) -> bool {
        !matches!(self, Self::Literal(_))
    }

    /// Resolves the reference. Errors name the reference, never a value.
    pub fn resolve(&self, base_dir: &Path) -> Result<Secret, String> {
        match self {
            Self::Literal(v) => Ok(Secret::new(v.clone())),
            Self::Env(name) => std::env::var(name)
                .map(Secret::new)
                .map_err(|_| format!("environment variable {name} is not set (or not UTF-8)")),
            Self::File(path) => {
                let full = base_dir.join(path);
                std::fs::read_to_string(&full)
                    .map(|v| Secret::new(v.trim_end_matches(['\n', '\r'])))
                    .map_err(|e| format!("cannot read secret file {}: {e}", full.display()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "[redacted] [redacted]");
    }

    #[test]
    fn file_references_resolve_relative_to_the_config_and_drop_the_newline() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("k"), "abc\n").expect("write");
        let s = SecretRef::parse("file:k")
            .resolve(dir.path())
            .expect("resolves");
        assert_eq!(s.expose(), "abc");
        let err = SecretRef::parse("file:missing")
            .resolve(dir.path())
            .unwrap_err();
        assert!(err.contains("cannot read secret file"), "{err}");
    }
}
