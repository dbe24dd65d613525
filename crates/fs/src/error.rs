//! Every refusal and failure of the service, each naming the rule that decided it.
//!
//! Messages go to the caller (as tool results with `isError: true`, or as JSON-RPC errors for
//! `resources/read`), so they hold only what the caller sent plus the rule: never file
//! contents, never paths outside the roots.

use rustix::io::Errno;

use crate::guard::{DenyRule, PathError};

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("{0}")]
    Path(#[from] PathError),
    #[error("\"{path}\" is denied by the rule \"{rule}\": refused")]
    Denied { path: String, rule: DenyRule },
    #[error(
        "no root named \"{name}\" (roots: {known}); with several roots, paths start with a root name"
    )]
    UnknownRoot { name: String, known: String },
    #[error("\".\" lists the roots; name a root to {action} (roots: {known})")]
    NeedsRoot { action: &'static str, known: String },
    #[error(
        "\"{path}\" is a write_file temp name (.micromcp-*.tmp), reserved for the service: \
         refused"
    )]
    Reserved { path: String },
    #[error(
        "busy: {limit} file operations are already running (--max-concurrent-ops) and none \
         finished within the {timeout_secs}-second --op-timeout; try again later"
    )]
    Busy { limit: usize, timeout_secs: f64 },
    #[error("cancelled")]
    Cancelled,
    #[error("not found")]
    NotFound,
    #[error("a symlink is on the path: refused (symlinks are never followed)")]
    Symlink,
    #[error("path escapes the root: refused")]
    Escapes,
    #[error("not a directory")]
    NotADirectory,
    #[error("is a directory")]
    IsADirectory,
    #[error("not a regular file ({kind}): refused")]
    NotRegular { kind: &'static str },
    #[error(
        "file has {links} hard links: refused (a hard link can point at a file outside the \
         root; allow with --allow-hard-links)"
    )]
    HardLink { links: u64 },
    #[error("binary file (not UTF-8 text): refused")]
    Binary,
    #[error("{what} is {size} bytes, more than the {cap}-byte cap: refused")]
    TooLarge {
        what: &'static str,
        size: u64,
        cap: u64,
    },
    #[error("root \"{root}\" is read-only: writes are not enabled for it (--writable {root})")]
    ReadOnly { root: String },
    #[error("permission denied")]
    PermissionDenied,
    #[error("the file changed while it was being opened: refused, try again")]
    Changed,
    #[error("{0}")]
    Invalid(String),
    #[error("file system error: {0}")]
    Io(String),
}

impl FsError {
    /// Maps an errno from a beneath-the-root operation to the rule it reports.
    pub fn from_errno(errno: Errno) -> Self {
        match errno {
            Errno::NOENT => Self::NotFound,
            // RESOLVE_NO_SYMLINKS / RESOLVE_NO_MAGICLINKS / O_NOFOLLOW.
            Errno::LOOP => Self::Symlink,
            // RESOLVE_BENEATH: resolution would leave the root.
            Errno::XDEV => Self::Escapes,
            Errno::NOTDIR => Self::NotADirectory,
            Errno::ISDIR => Self::IsADirectory,
            Errno::ACCESS | Errno::PERM => Self::PermissionDenied,
            Errno::NAMETOOLONG => Self::Path(PathError::ComponentTooLong),
            other => Self::Io(other.to_string()),
        }
    }
}

impl From<Errno> for FsError {
    fn from(errno: Errno) -> Self {
        Self::from_errno(errno)
    }
}

impl From<std::io::Error> for FsError {
    fn from(err: std::io::Error) -> Self {
        match err.raw_os_error() {
            Some(code) => Self::from_errno(Errno::from_raw_os_error(code)),
            None => Self::Io(err.kind().to_string()),
        }
    }
}
