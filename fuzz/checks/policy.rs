//! Checks for the policy engine's typing of untrusted input: a tool's `inputSchema` (from the
//! service) mapped to a Cedar type, and a call's `arguments` (from the client) converted to it.
//! Input: the schema JSON, a newline, the arguments JSON.
//! Properties: no panic; a schema always gives a type; converted arguments read back from Cedar
//! are exactly the JSON values (the value the policy sees is the value forwarded).

use micromcp_policy::arguments::Record;

pub fn check_policy_arguments(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (schema, arguments) = text.split_once('\n').unwrap_or((text, "{}"));
    let Ok(schema) = serde_json::from_str::<serde_json::Value>(schema) else {
        return;
    };
    let record = Record::of_input_schema(&schema);
    let _ = record.cedar_type();
    let Ok(serde_json::Value::Object(arguments)) = serde_json::from_str(arguments) else {
        return;
    };
    if let Ok(seen) = record.convert(&arguments) {
        assert!(
            record.seen_equals(&arguments, &seen),
            "what the policy sees differs from the arguments: {arguments:?}"
        );
    }
}
