//! The client certificate property check shared by fuzz/fuzz_targets/client_certificate.rs and
//! crates/auth/tests/fuzz_corpus.rs (both include this file with `#[path]`).
//!
//! The gateway reads only certificates whose chain TLS verified, but what a CA signed is still
//! someone else's bytes: whatever they hold, the names read stay within their bounds.

use micromcp_auth::certificate::{
    ClientCertificate, MAX_COMMON_NAME_BYTES, MAX_DNS_BYTES, MAX_NAMES, MAX_URI_BYTES,
};

pub fn check_client_certificate(data: &[u8]) {
    let Ok(c) = ClientCertificate::from_der(data) else {
        return;
    };
    assert!(c.uris.len() <= MAX_NAMES && c.dns_names.len() <= MAX_NAMES);
    for (names, max) in [(&c.uris, MAX_URI_BYTES), (&c.dns_names, MAX_DNS_BYTES)] {
        for name in names {
            assert!(!name.is_empty() && name.len() <= max, "{name:?}");
            assert!(name.bytes().all(|b| b.is_ascii_graphic()), "{name:?}");
        }
    }
    if let Some(cn) = &c.common_name {
        assert!(
            !cn.is_empty() && cn.len() <= MAX_COMMON_NAME_BYTES,
            "{cn:?}"
        );
        assert!(!cn.chars().any(char::is_control), "{cn:?}");
    }
}
