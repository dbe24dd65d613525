//! Client and upstream bytes: `strict::parse` then `Message::from_value`.
//!
//! Properties (mirrored in crates/protocol/tests/fuzz_corpus.rs):
//! - a parsed value never nests deeper than the bound, and the bound is exact (the value parses
//!   at its own depth, not one less) and monotonic;
//! - strict parsing accepts a subset of what serde_json accepts, with the same value;
//! - `Message::from_value` is total, and an accepted message round-trips through `to_value`,
//!   nests no deeper than its input and re-parses under the same bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use micromcp_protocol::{Message, strict};
use serde_json::Value;

/// The config's lowest allowed bound, its default, and the bound used towards upstreams.
const BOUNDS: [usize; 3] = [4, 64, 128];

fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut accepted: Option<Value> = None;
    for max_depth in BOUNDS {
        let Ok(value) = strict::parse(data, max_depth) else {
            assert!(accepted.is_none(), "accepted at a lower bound but refused at {max_depth}");
            continue;
        };
        if let Some(previous) = &accepted {
            assert_eq!(previous, &value, "value changed with the bound");
        }
        let d = depth(&value);
        assert!(d <= max_depth, "depth {d} exceeds bound {max_depth}");
        assert_eq!(strict::parse(data, d).as_ref(), Ok(&value), "refused at its own depth {d}");
        if d > 0 {
            assert!(strict::parse(data, d - 1).is_err(), "accepted one level below its depth {d}");
        }
        assert_eq!(serde_json::from_slice::<Value>(data).ok().as_ref(), Some(&value), "differs from serde_json");

        if let Ok(msg) = Message::from_value(value.clone()) {
            let out = msg.to_value();
            assert!(depth(&out) <= d, "re-emitted message nests deeper than its input");
            assert_eq!(Message::from_value(out.clone()).as_ref(), Ok(&msg), "message does not round-trip");
            let bytes = serde_json::to_vec(&out).expect("a Value always serializes");
            assert!(strict::parse(&bytes, max_depth).is_ok(), "re-emitted message is refused under the same bound");
        }
        accepted = Some(value);
    }
    // Whatever serde_json alone accepts (duplicate keys, deeper nesting) must not panic the
    // envelope reader either.
    if accepted.is_none() {
        if let Ok(value) = serde_json::from_slice::<Value>(data) {
            let _ = Message::from_value(value);
        }
    }
});
