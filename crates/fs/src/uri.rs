//! `file://` resource URIs: `file://` + the percent-encoded absolute path of the file as it
//! was beneath its root at startup (`file:///srv/data/docs/a.md`).
//!
//! Parsing is pure and fuzzable. The decoded path is only used to pick a root and a path
//! inside it; that inner path then goes through the same checks and `openat2` as tool paths,
//! so a decoded `..` is refused exactly as it would be in `read_file`. A decoded NUL is
//! refused here already.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

/// Everything but RFC 3986 unreserved characters and `/` is encoded.
const PATH_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Longest URI accepted by `resources/read`.
pub const MAX_URI_BYTES: usize = 3 * crate::guard::MAX_PATH_BYTES + 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    #[error("only file:// URIs are served: refused")]
    NotFile,
    #[error("file URIs with a host are refused (use file:///path)")]
    Host,
    #[error("URI is longer than {MAX_URI_BYTES} bytes: refused")]
    TooLong,
    #[error("file URIs with a query or fragment are refused")]
    QueryOrFragment,
    #[error("URI path holds a NUL byte after percent-decoding: refused")]
    Nul,
    #[error("URI path is not valid UTF-8 after percent-decoding: refused")]
    NotUtf8,
}

/// The URI of an absolute path.
pub fn file_uri(absolute: &str) -> String {
    format!("file://{}", utf8_percent_encode(absolute, PATH_ENCODE))
}

/// The decoded absolute path of a `file://` URI.
pub fn parse_file_uri(uri: &str) -> Result<String, UriError> {
    if uri.len() > MAX_URI_BYTES {
        return Err(UriError::TooLong);
    }
    let rest = uri.strip_prefix("file://").ok_or(UriError::NotFile)?;
    // The authority ends at the first `/`: only the empty one and `localhost` mean this host.
    let path = match rest.find('/') {
        Some(0) => rest,
        Some(slash) if rest[..slash].eq_ignore_ascii_case("localhost") => &rest[slash..],
        _ => return Err(UriError::Host),
    };
    if path.contains(['?', '#']) {
        return Err(UriError::QueryOrFragment);
    }
    let decoded = percent_decode_str(path)
        .decode_utf8()
        .map_err(|_| UriError::NotUtf8)?;
    // Refused here too (not only by the path checks later), so no caller of this parser can
    // hand a truncating NUL to anything.
    if decoded.contains('\0') {
        return Err(UriError::Nul);
    }
    Ok(decoded.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_encoded_nul_is_refused() {
        assert_eq!(parse_file_uri("file:///srv/a%00b"), Err(UriError::Nul));
    }

    #[test]
    fn round_trips_odd_names() {
        for path in ["/srv/data/a b.txt", "/srv/%41/ü?#x", "/srv/data/.."] {
            let uri = file_uri(path);
            assert!(!uri[7..].contains(['?', '#', ' ']), "{uri}");
            assert_eq!(parse_file_uri(&uri).as_deref(), Ok(path));
        }
    }

    #[test]
    fn decoding_reveals_traversal_for_the_path_checks() {
        // Decoded here, refused later by `guard::check_path` as a `..` component.
        assert_eq!(
            parse_file_uri("file:///srv/data/%2e%2e/etc").as_deref(),
            Ok("/srv/data/../etc")
        );
    }

    #[test]
    fn other_schemes_hosts_and_queries_are_refused() {
        assert_eq!(parse_file_uri("http://x/y"), Err(UriError::NotFile));
        assert_eq!(parse_file_uri("FILE:///etc"), Err(UriError::NotFile));
        assert_eq!(parse_file_uri("file://evil/etc"), Err(UriError::Host));
        assert_eq!(parse_file_uri("file://evil"), Err(UriError::Host));
        assert_eq!(
            parse_file_uri("file://localhost/etc").as_deref(),
            Ok("/etc")
        );
        assert_eq!(
            parse_file_uri("file:///a?b"),
            Err(UriError::QueryOrFragment)
        );
        assert_eq!(parse_file_uri("file:///%c0%ae"), Err(UriError::NotUtf8));
        let long = format!("file:///{}", "a".repeat(MAX_URI_BYTES));
        assert_eq!(parse_file_uri(&long), Err(UriError::TooLong));
    }
}
