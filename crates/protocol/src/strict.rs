//! A strict JSON parser for untrusted input.
//!
//! It builds an ordinary [`serde_json::Value`] but fails on inputs that serde_json would accept
//! yet that a security gateway must not: objects with duplicate keys (two parsers in the chain
//! could disagree on which one wins) and nesting deeper than a configured bound (stack and CPU
//! exhaustion further down the chain). Invalid UTF-8, lone surrogates and numbers that do not fit
//! an `f64` are rejected by serde_json itself.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Why a body was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StrictError {
    #[error("invalid JSON: {0}")]
    Syntax(String),
}

/// Parses `bytes` as one JSON value, nesting at most `max_depth` arrays/objects deep.
pub fn parse(bytes: &[u8], max_depth: usize) -> Result<Value, StrictError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = Bounded {
        depth_left: max_depth,
    }
    .deserialize(&mut de)
    .map_err(|e| StrictError::Syntax(e.to_string()))?;
    de.end().map_err(|e| StrictError::Syntax(e.to_string()))?;
    Ok(value)
}

struct Bounded {
    depth_left: usize,
}

impl Bounded {
    fn child<E: serde::de::Error>(&self) -> Result<Bounded, E> {
        match self.depth_left.checked_sub(1) {
            Some(depth_left) => Ok(Bounded { depth_left }),
            None => Err(E::custom("nesting too deep")),
        }
    }
}

impl<'de> DeserializeSeed<'de> for Bounded {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Bounded {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number out of range"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let child = self.child()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Bounded {
            depth_left: child.depth_left,
        })? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let child = self.child()?;
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(A::Error::custom(format_args!("duplicate key {key:?}")));
            }
            let value = map.next_value_seed(Bounded {
                depth_left: child.depth_left,
            })?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_json() {
        let v = parse(br#"{"a":[1,2.5,"x",null,true,{"b":{}}]}"#, 8).expect("valid");
        assert_eq!(v["a"][2], "x");
    }

    #[test]
    fn rejects_duplicate_keys_at_any_depth() {
        let err = parse(br#"{"a":{"method":"x","method":"y"}}"#, 8).unwrap_err();
        assert!(err.to_string().contains("duplicate key"), "{err}");
    }

    #[test]
    fn bounds_nesting() {
        let deep = format!("{}{}", "[".repeat(5), "]".repeat(5));
        assert!(parse(deep.as_bytes(), 5).is_ok());
        let err = parse(deep.as_bytes(), 4).unwrap_err();
        assert!(err.to_string().contains("nesting too deep"), "{err}");
    }

    #[test]
    fn deep_input_far_past_the_bound_fails_without_overflowing_the_stack() {
        let deep = "[".repeat(100_000);
        assert!(parse(deep.as_bytes(), 64).is_err());
    }

    #[test]
    fn rejects_lone_surrogates_invalid_utf8_trailing_data_and_huge_numbers() {
        assert!(parse(br#""\ud800""#, 4).is_err());
        assert!(parse(b"\"\xff\"", 4).is_err());
        assert!(parse(b"{} {}", 4).is_err());
        assert!(parse(b"1e400", 4).is_err());
    }
}
