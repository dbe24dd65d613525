//! The JSON-RPC 2.0 envelope as MCP uses it.
//!
//! Parsing is total: any JSON value becomes either a [`Message`] or an [`EnvelopeError`] that says
//! what is wrong. Ids are kept exactly as sent (string or integer) so they can be restored on the
//! way back; MCP forbids `null` ids and we also refuse fractional ones.

use serde_json::{Map, Value, json};

/// Standard JSON-RPC and MCP error codes used by the gateway.
pub mod error_codes {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    pub const INTERNAL_ERROR: i64 = -32603;
    /// Implementation-defined server error range: the gateway refuses or cannot complete the call.
    pub const SERVER_ERROR: i64 = -32000;
    /// MCP 2026-07-28: a request's headers disagree with its body.
    pub const HEADER_MISMATCH: i64 = -32020;
    /// MCP 2026-07-28: the request needs a client capability it did not declare.
    pub const MISSING_CLIENT_CAPABILITY: i64 = -32021;
    /// MCP 2026-07-28: the requested protocol version is not supported.
    pub const UNSUPPORTED_VERSION: i64 = -32022;
    /// MCP session era: resource not found (2026-07-28 uses INVALID_PARAMS instead).
    pub const RESOURCE_NOT_FOUND: i64 = -32002;
    /// micromcp: the call is granted, but the token lacks a scope it needs (HTTP 403).
    pub const INSUFFICIENT_SCOPE: i64 = -32030;
}

/// Longest string id accepted; longer ids are refused rather than echoed into logs.
pub const MAX_ID_LEN: usize = 256;

/// A request id exactly as the peer sent it: a JSON string or integer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestId(Value);

impl RequestId {
    pub fn from_value(v: &Value) -> Result<Self, &'static str> {
        match v {
            Value::String(s) if s.len() <= MAX_ID_LEN => Ok(Self(v.clone())),
            Value::String(_) => Err("id is too long"),
            Value::Number(n) if n.is_i64() || n.is_u64() => Ok(Self(v.clone())),
            Value::Null => Err("id must not be null"),
            _ => Err("id must be a string or an integer"),
        }
    }
    pub fn number(n: u64) -> Self {
        Self(Value::from(n))
    }
    pub fn as_value(&self) -> &Value {
        &self.0
    }
    pub fn as_u64(&self) -> Option<u64> {
        self.0.as_u64()
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub id: RequestId,
    pub method: String,
    pub params: Option<Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub method: String,
    pub params: Option<Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub id: RequestId,
    pub outcome: Result<Value, ErrorObject>,
}

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorObject {
    pub code: i64,
    pub message: String,
    pub data: Option<Value>,
}

impl ErrorObject {
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            data: None,
        }
    }
    pub fn to_value(&self) -> Value {
        let mut v = json!({ "code": self.code, "message": self.message });
        if let Some(data) = &self.data {
            v["data"] = data.clone();
        }
        v
    }
    fn from_value(v: &Value) -> Option<Self> {
        let obj = v.as_object()?;
        Some(Self {
            code: obj.get("code")?.as_i64()?,
            message: obj.get("message")?.as_str()?.to_owned(),
            data: obj.get("data").cloned(),
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Request(Request),
    Notification(Notification),
    Response(Response),
}

/// Why a JSON value is not a JSON-RPC message. `id` is the request id when one could be read, so
/// the error response can carry it.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvelopeError {
    pub id: Option<RequestId>,
    pub reason: String,
}

impl Message {
    /// Reads one JSON-RPC message. Arrays (batches) are refused: no MCP era the gateway speaks
    /// on its client side accepts them (2025-06-18 removed them).
    pub fn from_value(value: Value) -> Result<Message, EnvelopeError> {
        let Value::Object(mut obj) = value else {
            let reason = if value.is_array() {
                "batches are not supported"
            } else {
                "a JSON-RPC message must be an object"
            };
            return Err(EnvelopeError {
                id: None,
                reason: reason.into(),
            });
        };
        let id = match obj.get("id") {
            None => None,
            Some(v) => Some(RequestId::from_value(v).map_err(|r| EnvelopeError {
                id: None,
                reason: r.into(),
            })?),
        };
        let err_id = id.clone();
        let fail = |reason: &str| EnvelopeError {
            id: err_id.clone(),
            reason: reason.into(),
        };
        if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return Err(fail("\"jsonrpc\" must be \"2.0\""));
        }
        let params = match obj.remove("params") {
            None => None,
            Some(p @ Value::Object(_)) => Some(p),
            Some(_) => return Err(fail("\"params\" must be an object")),
        };
        if let Some(method) = obj.get("method") {
            let Some(method) = method.as_str() else {
                return Err(fail("\"method\" must be a string"));
            };
            if method.is_empty() || method.len() > 128 {
                return Err(fail("\"method\" must be 1 to 128 bytes"));
            }
            let method = method.to_owned();
            return Ok(match id {
                Some(id) => Message::Request(Request { id, method, params }),
                None => Message::Notification(Notification { method, params }),
            });
        }
        let Some(id) = id else {
            return Err(fail("a message needs a \"method\" or an \"id\""));
        };
        let outcome = match (obj.remove("result"), obj.get("error")) {
            (Some(result), None) => Ok(result),
            (None, Some(error)) => {
                Err(ErrorObject::from_value(error).ok_or_else(|| fail("malformed \"error\""))?)
            }
            _ => {
                return Err(fail(
                    "a response needs exactly one of \"result\" and \"error\"",
                ));
            }
        };
        Ok(Message::Response(Response { id, outcome }))
    }

    pub fn to_value(&self) -> Value {
        let mut obj = Map::new();
        obj.insert("jsonrpc".into(), "2.0".into());
        match self {
            Message::Request(r) => {
                obj.insert("id".into(), r.id.0.clone());
                obj.insert("method".into(), r.method.clone().into());
                if let Some(p) = &r.params {
                    obj.insert("params".into(), p.clone());
                }
            }
            Message::Notification(n) => {
                obj.insert("method".into(), n.method.clone().into());
                if let Some(p) = &n.params {
                    obj.insert("params".into(), p.clone());
                }
            }
            Message::Response(r) => {
                obj.insert("id".into(), r.id.0.clone());
                match &r.outcome {
                    Ok(result) => obj.insert("result".into(), result.clone()),
                    Err(e) => obj.insert("error".into(), e.to_value()),
                };
            }
        }
        Value::Object(obj)
    }
}

impl Response {
    pub fn ok(id: RequestId, result: Value) -> Self {
        Self {
            id,
            outcome: Ok(result),
        }
    }
    pub fn err(id: RequestId, error: ErrorObject) -> Self {
        Self {
            id,
            outcome: Err(error),
        }
    }
    pub fn to_value(&self) -> Value {
        Message::Response(self.clone()).to_value()
    }
}

/// An error response for a message whose id could not be read (JSON-RPC uses `null` there).
pub fn error_without_id(error: &ErrorObject) -> Value {
    json!({ "jsonrpc": "2.0", "id": null, "error": error.to_value() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value) -> Result<Message, EnvelopeError> {
        Message::from_value(v)
    }

    #[test]
    fn classifies_requests_notifications_and_responses() {
        assert!(matches!(
            parse(json!({"jsonrpc":"2.0","id":1,"method":"ping"})),
            Ok(Message::Request(_))
        ));
        assert!(matches!(
            parse(json!({"jsonrpc":"2.0","method":"notifications/initialized"})),
            Ok(Message::Notification(_))
        ));
        assert!(matches!(
            parse(json!({"jsonrpc":"2.0","id":"a","result":{}})),
            Ok(Message::Response(_))
        ));
    }

    #[test]
    fn refuses_null_fractional_and_structured_ids() {
        for id in [json!(null), json!(1.5), json!({}), json!([1])] {
            let err = parse(json!({"jsonrpc":"2.0","id":id,"method":"ping"})).unwrap_err();
            assert!(err.reason.contains("id"), "{err:?}");
        }
    }

    #[test]
    fn refuses_batches_and_non_objects() {
        assert_eq!(
            parse(json!([])).unwrap_err().reason,
            "batches are not supported"
        );
        assert!(parse(json!("x")).is_err());
    }

    #[test]
    fn refuses_wrong_version_and_non_object_params_keeping_the_id() {
        let err = parse(json!({"jsonrpc":"1.0","id":7,"method":"ping"})).unwrap_err();
        assert_eq!(err.id, Some(RequestId::number(7)));
        assert!(parse(json!({"jsonrpc":"2.0","id":7,"method":"ping","params":[1]})).is_err());
    }

    #[test]
    fn round_trips_ids_exactly() {
        let v = json!({"jsonrpc":"2.0","id":"abc","method":"tools/list","params":{}});
        assert_eq!(parse(v.clone()).expect("valid").to_value(), v);
        let big = json!({"jsonrpc":"2.0","id":u64::MAX,"result":{}});
        assert_eq!(parse(big.clone()).expect("valid").to_value(), big);
    }
}
