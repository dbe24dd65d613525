//! Result shapes per protocol era, so either era of client works with either era of upstream.
//!
//! To 2026-07-28 clients: every result has `resultType` (absent means `"complete"`); list and
//! read results carry `ttlMs` and `cacheScope`. The gateway filters lists per principal, so
//! merged lists are always `cacheScope: "private"`. To session-era clients: those fields are
//! removed, and an `input_required` result (MRTR), which they cannot express, becomes an error.

use micromcp_protocol::{Era, ErrorObject, ProtocolVersion, error_codes};
use serde_json::Value;

/// Results that carry cache hints in 2026-07-28.
const CACHEABLE: [&str; 6] = [
    "tools/list",
    "prompts/list",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "server/discover",
];

pub fn result_for_client(
    version: ProtocolVersion,
    method: &str,
    mut result: Value,
) -> Result<Value, ErrorObject> {
    let Some(obj) = result.as_object_mut() else {
        return Ok(result);
    };
    match version.era() {
        Era::Stateless => {
            obj.entry("resultType").or_insert_with(|| "complete".into());
            if CACHEABLE.contains(&method)
                && obj.get("resultType").and_then(Value::as_str) == Some("complete")
            {
                obj.entry("ttlMs").or_insert_with(|| 0.into());
                obj.entry("cacheScope").or_insert_with(|| "private".into());
            }
        }
        Era::Session => {
            if let Some(kind) = obj.remove("resultType")
                && kind != "complete"
            {
                return Err(ErrorObject::new(
                    error_codes::INVALID_REQUEST,
                    format!(
                        "the service asked for more input ({kind}), which protocol version {version} cannot express; connect with protocol version 2026-07-28"
                    ),
                ));
            }
            obj.remove("ttlMs");
            obj.remove("cacheScope");
        }
    }
    Ok(result)
}

/// Error codes whose meaning moved between eras.
pub fn error_for_client(version: ProtocolVersion, mut error: ErrorObject) -> ErrorObject {
    match version.era() {
        Era::Stateless if error.code == error_codes::RESOURCE_NOT_FOUND => {
            error.code = error_codes::INVALID_PARAMS
        }
        // A 2026 upstream asks for a client capability (to request input mid-call); a
        // session-era client cannot provide it through the gateway.
        Era::Session if error.code == error_codes::MISSING_CLIENT_CAPABILITY => {
            error = ErrorObject::new(
                error_codes::INVALID_REQUEST,
                format!(
                    "the service needs to ask for input during this call, which protocol version {version} cannot express; connect with protocol version 2026-07-28 ({})",
                    error.message
                ),
            );
        }
        _ => {}
    }
    error
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn v(s: &str) -> ProtocolVersion {
        ProtocolVersion::parse(s).expect("supported")
    }

    #[test]
    fn session_results_gain_2026_fields_for_stateless_clients() {
        let out =
            result_for_client(v("2026-07-28"), "tools/list", json!({"tools": []})).expect("ok");
        assert_eq!(
            out,
            json!({"tools": [], "resultType": "complete", "ttlMs": 0, "cacheScope": "private"})
        );
        let call =
            result_for_client(v("2026-07-28"), "tools/call", json!({"content": []})).expect("ok");
        assert_eq!(call, json!({"content": [], "resultType": "complete"}));
    }

    #[test]
    fn stateless_results_lose_2026_fields_for_session_clients() {
        let out = result_for_client(
            v("2025-06-18"),
            "tools/list",
            json!({"tools": [], "resultType": "complete", "ttlMs": 5, "cacheScope": "public"}),
        );
        assert_eq!(out.expect("ok"), json!({"tools": []}));
    }

    #[test]
    fn input_required_passes_to_stateless_clients_and_is_an_error_for_session_clients() {
        let mrtr =
            json!({"resultType": "input_required", "requestState": "abc", "inputRequests": {}});
        assert_eq!(
            result_for_client(v("2026-07-28"), "tools/call", mrtr.clone()).expect("passes"),
            mrtr
        );
        let err = result_for_client(v("2025-11-25"), "tools/call", mrtr).unwrap_err();
        assert_eq!(err.code, error_codes::INVALID_REQUEST);
    }

    #[test]
    fn missing_capability_becomes_a_clear_error_for_session_clients() {
        let e = ErrorObject::new(error_codes::MISSING_CLIENT_CAPABILITY, "needs elicitation");
        let out = error_for_client(v("2025-11-25"), e.clone());
        assert_eq!(out.code, error_codes::INVALID_REQUEST);
        assert!(out.message.contains("2026-07-28"));
        assert_eq!(
            error_for_client(v("2026-07-28"), e).code,
            error_codes::MISSING_CLIENT_CAPABILITY
        );
    }

    #[test]
    fn resource_not_found_code_follows_the_era() {
        let e = ErrorObject::new(error_codes::RESOURCE_NOT_FOUND, "nope");
        assert_eq!(
            error_for_client(v("2026-07-28"), e.clone()).code,
            error_codes::INVALID_PARAMS
        );
        assert_eq!(
            error_for_client(v("2025-11-25"), e).code,
            error_codes::RESOURCE_NOT_FOUND
        );
    }
}
