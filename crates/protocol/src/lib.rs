//! MCP wire handling: everything that turns untrusted bytes into typed values.
//!
//! - [`strict`]: a JSON parser that bounds nesting and rejects duplicate keys (serde_json
//!   alone silently keeps the last duplicate and recurses to 128 levels).
//! - [`jsonrpc`]: the JSON-RPC 2.0 envelope (request / notification / response) with the id
//!   rules MCP adds (string or integer, never null).
//! - [`era`]: the two protocol eras the gateway speaks and the version strings of each.
//! - [`headers`]: the `=?base64?…?=` header-value codec of the 2026-07-28 HTTP transport.
//! - [`names`]: public names (`<service><sep><name>`, `<service>+<uri>`) and their parsing.
//! - [`text`]: upstream text shown to people and models: escaping, and which names and
//!   descriptions are clean enough to publish.

pub mod era;
pub mod headers;
pub mod jsonrpc;
pub mod names;
pub mod strict;
pub mod text;

pub use era::{Era, ProtocolVersion};
pub use jsonrpc::{ErrorObject, Message, Notification, Request, RequestId, Response, error_codes};
