//! Header values of the 2026-07-28 Streamable HTTP transport.
//!
//! `Mcp-Name` carries a tool name, prompt name or resource URI, which may hold characters an HTTP
//! header cannot. Such values are sent as `=?base64?<standard base64 of the UTF-8 bytes>?=`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

const PREFIX: &str = "=?base64?";
const SUFFIX: &str = "?=";

/// Decodes a header value, undoing the base64 wrapper when present.
pub fn decode_value(raw: &str) -> Result<String, &'static str> {
    match raw
        .strip_prefix(PREFIX)
        .and_then(|r| r.strip_suffix(SUFFIX))
    {
        Some(encoded) => {
            let bytes = STANDARD
                .decode(encoded)
                .map_err(|_| "invalid base64 in header value")?;
            String::from_utf8(bytes).map_err(|_| "header value is not UTF-8")
        }
        None => Ok(raw.to_owned()),
    }
}

/// Encodes a value for a header, wrapping it in base64 when it is not plain visible ASCII or
/// could be mistaken for an encoded value.
pub fn encode_value(value: &str) -> String {
    let plain = value.bytes().all(|b| (0x20..0x7f).contains(&b))
        && !value.starts_with(' ')
        && !value.ends_with(' ')
        && !value.starts_with(PREFIX);
    if plain {
        value.to_owned()
    } else {
        format!("{PREFIX}{}{SUFFIX}", STANDARD.encode(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_plain_and_encoded_values() {
        for v in [
            "echo.echo",
            "file:///tmp/a b",
            "naïve",
            "line\nbreak",
            " lead",
            "=?base64?x?=",
        ] {
            assert_eq!(decode_value(&encode_value(v)).as_deref(), Ok(v));
        }
        assert_eq!(encode_value("plain"), "plain");
    }

    #[test]
    fn rejects_broken_encodings() {
        assert!(decode_value("=?base64?***?=").is_err());
        assert!(decode_value("=?base64?/w==?=").is_err());
    }
}
