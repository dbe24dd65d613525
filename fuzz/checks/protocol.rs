//! Property checks shared by the fuzz targets (fuzz/fuzz_targets/) and the corpus replay tests
//! (crates/protocol/tests/fuzz_corpus.rs), included by both with `#[path]`, so the fuzzer and
//! `cargo test` check exactly the same properties.
// Each fuzz target uses only its own part of these checks.
#![allow(dead_code)]

use micromcp_protocol::headers::{decode_value, encode_value};
use micromcp_protocol::names::{Namer, is_valid_separator, is_valid_service_name};
use micromcp_protocol::{Message, strict};
use serde_json::Value;

// --- jsonrpc_message ---------------------------------------------------------------------------

const BOUNDS: [usize; 3] = [4, 64, 128];

pub fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

pub fn check_jsonrpc_message(data: &[u8]) {
    let mut accepted: Option<Value> = None;
    for max_depth in BOUNDS {
        let Ok(value) = strict::parse(data, max_depth) else {
            assert!(
                accepted.is_none(),
                "accepted at a lower bound but refused at {max_depth}"
            );
            continue;
        };
        if let Some(previous) = &accepted {
            assert_eq!(previous, &value, "value changed with the bound");
        }
        let d = depth(&value);
        assert!(d <= max_depth, "depth {d} exceeds bound {max_depth}");
        assert_eq!(
            strict::parse(data, d).as_ref(),
            Ok(&value),
            "refused at its own depth {d}"
        );
        if d > 0 {
            assert!(
                strict::parse(data, d - 1).is_err(),
                "accepted one level below its depth {d}"
            );
        }
        assert_eq!(
            serde_json::from_slice::<Value>(data).ok().as_ref(),
            Some(&value),
            "differs from serde_json"
        );

        if let Ok(msg) = Message::from_value(value.clone()) {
            let out = msg.to_value();
            assert!(
                depth(&out) <= d,
                "re-emitted message nests deeper than its input"
            );
            assert_eq!(
                Message::from_value(out.clone()).as_ref(),
                Ok(&msg),
                "message does not round-trip"
            );
            let bytes = serde_json::to_vec(&out).expect("a Value always serializes");
            assert!(
                strict::parse(&bytes, max_depth).is_ok(),
                "re-emitted message is refused under the same bound"
            );
        }
        accepted = Some(value);
    }
    if accepted.is_none()
        && let Ok(value) = serde_json::from_slice::<Value>(data)
    {
        let _ = Message::from_value(value);
    }
}

// --- header_value ------------------------------------------------------------------------------

pub fn header_round_trip(s: &str) {
    let encoded = encode_value(s);
    assert!(
        encoded.bytes().all(|b| (0x20..0x7f).contains(&b)),
        "not a header value: {encoded:?}"
    );
    assert!(
        !encoded.starts_with(' ') && !encoded.ends_with(' '),
        "edge space: {encoded:?}"
    );
    assert_eq!(
        decode_value(&encoded).as_deref(),
        Ok(s),
        "round trip of {s:?} via {encoded:?}"
    );
}

pub fn check_header_value(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    if let Ok(decoded) = decode_value(&s) {
        header_round_trip(&decoded);
    }
    header_round_trip(&s);
}

// --- public_names ------------------------------------------------------------------------------

const SEPARATORS: [&str; 4] = [".", "__", "/", "-"];

pub fn check_split(namer: &Namer, s: &str) {
    if let Some((service, name)) = namer.split_name(s) {
        assert!(
            is_valid_service_name(service) && !name.is_empty(),
            "{s:?} -> {service:?}, {name:?}"
        );
        assert_eq!(namer.public_name(service, name), s);
    }
    if let Some((service, uri)) = Namer::split_uri(s) {
        assert!(
            is_valid_service_name(service) && !uri.is_empty(),
            "{s:?} -> {service:?}, {uri:?}"
        );
        assert_eq!(Namer::public_uri(service, uri), s);
    }
}

pub fn check_public_names(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    for sep in SEPARATORS {
        check_split(&Namer::new(sep), &s);
    }
    let mut parts = s.splitn(3, '\n');
    if let (Some(sep), Some(service), Some(name)) = (parts.next(), parts.next(), parts.next())
        && is_valid_separator(sep)
    {
        let namer = Namer::new(sep);
        check_split(&namer, name);
        if is_valid_service_name(service) && !name.is_empty() {
            let public = namer.public_name(service, name);
            assert_eq!(
                namer.split_name(&public),
                Some((service, name)),
                "separator {sep:?}: {public:?}"
            );
            let uri = Namer::public_uri(service, name);
            assert_eq!(Namer::split_uri(&uri), Some((service, name)), "{uri:?}");
        }
    }
}
