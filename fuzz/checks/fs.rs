//! Properties of the fs service's guards on untrusted input, shared by the fuzz target
//! (fuzz/fuzz_targets/fs_input.rs) and the corpus replay test (crates/fs/tests/fuzz_corpus.rs).

use micromcp_fs::guard::{DEFAULT_DENY, DenyList, check_path_bytes};
use micromcp_fs::uri::parse_file_uri;

/// The first byte picks the parser; the rest is its input.
pub fn check_fs_input(data: &[u8]) {
    let Some((selector, input)) = data.split_first() else {
        return;
    };
    if selector % 2 == 0 {
        check_caller_path(input);
    } else if let Ok(text) = std::str::from_utf8(input) {
        check_file_uri(text);
    }
}

/// An accepted caller path is relative, clean (no `.`, `..` or empty components, no NUL)
/// and every default-denied name in it is denied.
fn check_caller_path(input: &[u8]) {
    let Ok(path) = check_path_bytes(input) else {
        return;
    };
    let text = path.as_str();
    assert!(!text.starts_with('/'), "absolute path accepted: {text:?}");
    assert!(!text.contains('\0'), "NUL accepted: {text:?}");
    for component in text.split('/').filter(|_| !path.is_root()) {
        assert!(
            !component.is_empty() && component != "." && component != "..",
            "unclean component {component:?} in {text:?}"
        );
    }
    let deny = DenyList::new(&DEFAULT_DENY).expect("default deny globs compile");
    for component in path.components() {
        let lower = component.to_lowercase();
        let must_deny = [".env", "id_rsa", "id_dsa", "id_ecdsa", "id_ed25519"]
            .iter()
            .any(|prefix| lower.starts_with(prefix))
            || [".pem", ".key", ".p12", ".pfx", ".jks", ".keystore"]
                .iter()
                .any(|suffix| lower.ends_with(suffix))
            || lower.contains(".tfstate")
            || [
                ".ssh",
                ".git",
                ".netrc",
                ".npmrc",
                ".pypirc",
                ".pgpass",
                ".git-credentials",
                ".htpasswd",
                ".aws",
                ".kube",
                ".gnupg",
                ".docker",
            ]
            .contains(&lower.as_str());
        if must_deny {
            assert!(
                deny.denied_str(text).is_some(),
                "{text:?} holds the default-denied name {component:?} but is not denied"
            );
        }
    }
}

/// An accepted `file://` URI decodes to an absolute path without NUL.
fn check_file_uri(text: &str) {
    if let Ok(path) = parse_file_uri(text) {
        assert!(path.starts_with('/'), "{text:?} decoded to {path:?}");
        assert!(!path.contains('\0'), "{text:?} decoded to a path with NUL");
    }
}
