//! Public names from clients: `Namer::split_name` and `Namer::split_uri`.
//!
//! Input: any string. If it has the form `<separator>\n<service>\n<name>` it is also used as a
//! structured case. Properties (mirrored in crates/protocol/tests/fuzz_corpus.rs):
//! - whatever splits, splits into a valid service and a non-empty rest that rebuild the input;
//! - for a separator the config accepts (1 to 4 ASCII punctuation bytes, not `*` or `+`) and a
//!   valid service name, `split_name(public_name(service, name)) == (service, name)`, and
//!   `split_uri(public_uri(service, name)) == (service, name)`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use micromcp_protocol::names::{Namer, is_valid_service_name};

const SEPARATORS: [&str; 4] = [".", "__", "/", "-"];

/// Mirrors the check on `gateway.separator` in crates/config/src/validate.rs.
fn config_accepts(sep: &str) -> bool {
    !sep.is_empty() && sep.len() <= 4 && sep.bytes().all(|b| b.is_ascii_punctuation() && b != b'*' && b != b'+')
}

fn check_split(namer: &Namer, s: &str) {
    if let Some((service, name)) = namer.split_name(s) {
        assert!(is_valid_service_name(service) && !name.is_empty(), "{s:?} -> {service:?}, {name:?}");
        assert_eq!(namer.public_name(service, name), s);
    }
    if let Some((service, uri)) = Namer::split_uri(s) {
        assert!(is_valid_service_name(service) && !uri.is_empty(), "{s:?} -> {service:?}, {uri:?}");
        assert_eq!(Namer::public_uri(service, uri), s);
    }
}

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    for sep in SEPARATORS {
        check_split(&Namer::new(sep), &s);
    }
    let mut parts = s.splitn(3, '\n');
    if let (Some(sep), Some(service), Some(name)) = (parts.next(), parts.next(), parts.next()) {
        if config_accepts(sep) {
            let namer = Namer::new(sep);
            check_split(&namer, name);
            if is_valid_service_name(service) && !name.is_empty() {
                let public = namer.public_name(service, name);
                assert_eq!(namer.split_name(&public), Some((service, name)), "separator {sep:?}: {public:?}");
                let uri = Namer::public_uri(service, name);
                assert_eq!(Namer::split_uri(&uri), Some((service, name)), "{uri:?}");
            }
        }
    }
});
