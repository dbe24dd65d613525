//! Header values from clients (`Mcp-Name` and friends): `headers::decode_value`.
//!
//! Properties (mirrored in crates/protocol/tests/fuzz_corpus.rs): decoding never panics; for any
//! string (the input itself, and whatever it decodes to) `encode_value` yields a valid header
//! value (visible ASCII and inner spaces only) and `decode_value` restores the string exactly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use micromcp_protocol::headers::{decode_value, encode_value};

fn round_trip(s: &str) {
    let encoded = encode_value(s);
    assert!(encoded.bytes().all(|b| (0x20..0x7f).contains(&b)), "not a header value: {encoded:?}");
    assert!(!encoded.starts_with(' ') && !encoded.ends_with(' '), "edge space: {encoded:?}");
    assert_eq!(decode_value(&encoded).as_deref(), Ok(s), "round trip of {s:?} via {encoded:?}");
}

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    if let Ok(decoded) = decode_value(&s) {
        round_trip(&decoded);
    }
    round_trip(&s);
});
