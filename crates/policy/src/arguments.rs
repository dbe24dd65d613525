//! A tool's arguments as Cedar sees them: its `inputSchema` mapped to a Cedar record type, and
//! each call's JSON arguments converted to a value of that type — once, from the same parsed
//! value the gateway forwards, so what the policy saw is what the service gets.
//!
//! | JSON Schema                     | Cedar                        |
//! |---------------------------------|------------------------------|
//! | `string` (and string `enum`)    | `String`                     |
//! | `integer`                       | `Long` (64-bit)              |
//! | `number`                        | `decimal` (4 decimal places) |
//! | `boolean`                       | `Bool`                       |
//! | `array` of a mapped type        | `Set<T>`                     |
//! | `object` with `properties`      | record (`required` ones required) |
//! | `[T, "null"]`                   | T, optional (null = absent)  |
//!
//! Anything else (`anyOf`, `$ref`, no `type`, too deep) is *unseen*: the argument is forwarded
//! but policies cannot name it (`micromcp policy check` says so). An argument the schema does not
//! declare is refused, unless the object allows `additionalProperties` (then it is unseen too).
//! A value that does not fit its type (a string for an integer, 0.00001 for a decimal, an
//! integer beyond 64 bits) is refused before policy, naming its path.

use std::collections::{BTreeMap, HashMap};

use cedar_policy::{EvalResult, RestrictedExpression};
use serde_json::{Map, Value, json};

/// Nesting beyond this in an `inputSchema` is unseen (upstream schemas are untrusted input).
const MAX_DEPTH: usize = 8;
/// Properties mapped per tool, at most; the rest are unseen.
const MAX_PROPERTIES: usize = 512;

/// The Cedar type of one argument.
#[derive(Debug, Clone, PartialEq)]
pub enum ArgType {
    String,
    Long,
    Decimal,
    Bool,
    Set(Box<ArgType>),
    Record(Record),
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Record {
    pub fields: BTreeMap<String, Field>,
    /// `additionalProperties` allowed: undeclared members are forwarded unseen.
    pub open: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// `None`: the schema says something Cedar cannot type; the value is forwarded unseen.
    pub ty: Option<ArgType>,
    pub required: bool,
    /// `null` is allowed, and means absent.
    pub nullable: bool,
}

/// Why a call's arguments were refused before policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("arguments{path}: {message}")]
pub struct ArgumentError {
    /// JSON path below `arguments`, like `.amount` or `.items[2]`.
    pub path: String,
    pub message: String,
}

impl Record {
    /// The record type of a tool's `inputSchema` (an unusable schema gives an empty, open record).
    pub fn of_input_schema(schema: &Value) -> Record {
        let mut budget = MAX_PROPERTIES;
        match arg_type(schema, 0, &mut budget) {
            Some((ArgType::Record(r), _)) => r,
            _ => Record {
                fields: BTreeMap::new(),
                open: true,
            },
        }
    }

    /// The Cedar schema (JSON form) of this record type.
    pub fn cedar_type(&self) -> Value {
        let attributes: Map<String, Value> = self
            .fields
            .iter()
            .filter_map(|(name, field)| {
                let mut ty = field.ty.as_ref()?.cedar_type();
                ty["required"] = Value::Bool(field.required && !field.nullable);
                Some((name.clone(), ty))
            })
            .collect();
        json!({ "type": "Record", "attributes": attributes })
    }

    /// Arguments the policy cannot see, for `policy check` (dotted paths).
    pub fn unseen(&self, prefix: &str, out: &mut Vec<String>) {
        for (name, field) in &self.fields {
            let path = format!("{prefix}.{name}");
            match &field.ty {
                None => out.push(path),
                Some(ArgType::Record(r)) => r.unseen(&path, out),
                Some(_) => {}
            }
        }
    }

    /// Converts a call's arguments to this record type.
    pub fn convert(
        &self,
        arguments: &Map<String, Value>,
    ) -> Result<RestrictedExpression, ArgumentError> {
        self.convert_at(arguments, &mut String::new())
    }

    /// Whether `seen` (what [`Record::convert`] made of `arguments`) holds exactly the
    /// arguments' values, read back from Cedar: every typed argument with its value, nothing
    /// else. The fuzz target and the tests check this for every conversion.
    pub fn seen_equals(&self, arguments: &Map<String, Value>, seen: &RestrictedExpression) -> bool {
        let Ok(context) = cedar_policy::Context::from_pairs([("a".to_owned(), seen.clone())])
        else {
            return false;
        };
        context
            .get("a")
            .is_some_and(|seen| record_equals(self, arguments, &seen))
    }

    fn convert_at(
        &self,
        object: &Map<String, Value>,
        path: &mut String,
    ) -> Result<RestrictedExpression, ArgumentError> {
        let mut attributes = HashMap::with_capacity(object.len());
        for (name, value) in object {
            let len = path.len();
            push_member(path, name);
            let Some(field) = self.fields.get(name) else {
                if self.open {
                    path.truncate(len);
                    continue;
                }
                return Err(error(path, "not declared by the tool's inputSchema"));
            };
            if value.is_null() && field.nullable {
                path.truncate(len);
                continue;
            }
            if let Some(ty) = &field.ty {
                attributes.insert(name.clone(), ty.convert(value, path)?);
            }
            path.truncate(len);
        }
        for (name, field) in &self.fields {
            if field.required && !field.nullable && !object.contains_key(name) {
                let mut path = path.clone();
                push_member(&mut path, name);
                return Err(error(&path, "is required by the tool's inputSchema"));
            }
        }
        RestrictedExpression::new_record(attributes)
            .map_err(|e| error(path, &format!("cannot be used: {e}")))
    }
}

impl ArgType {
    fn cedar_type(&self) -> Value {
        match self {
            ArgType::String => json!({ "type": "String" }),
            ArgType::Long => json!({ "type": "Long" }),
            ArgType::Decimal => json!({ "type": "Extension", "name": "decimal" }),
            ArgType::Bool => json!({ "type": "Boolean" }),
            ArgType::Set(element) => json!({ "type": "Set", "element": element.cedar_type() }),
            ArgType::Record(record) => record.cedar_type(),
        }
    }

    fn convert(
        &self,
        value: &Value,
        path: &mut String,
    ) -> Result<RestrictedExpression, ArgumentError> {
        match (self, value) {
            (ArgType::String, Value::String(s)) => Ok(RestrictedExpression::new_string(s.clone())),
            (ArgType::Bool, Value::Bool(b)) => Ok(RestrictedExpression::new_bool(*b)),
            (ArgType::Long, Value::Number(n)) => n
                .as_i64()
                .map(RestrictedExpression::new_long)
                .ok_or_else(|| error(path, "must be an integer that fits in 64 bits")),
            (ArgType::Decimal, Value::Number(n)) => decimal_text(n)
                .map(RestrictedExpression::new_decimal)
                .ok_or_else(|| {
                    error(
                        path,
                        "must be a number with at most 4 decimal places, between -922337203685477.5808 and 922337203685477.5807",
                    )
                }),
            (ArgType::Set(element), Value::Array(items)) => {
                let mut values = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    values.push(element.convert(item, path)?);
                    path.truncate(len);
                }
                Ok(RestrictedExpression::new_set(values))
            }
            (ArgType::Record(record), Value::Object(object)) => record.convert_at(object, path),
            (ty, _) => Err(error(path, &format!("must be {}", ty.described()))),
        }
    }

    fn described(&self) -> &'static str {
        match self {
            ArgType::String => "a string",
            ArgType::Long => "an integer",
            ArgType::Decimal => "a number",
            ArgType::Bool => "a boolean",
            ArgType::Set(_) => "an array",
            ArgType::Record(_) => "an object",
        }
    }
}

fn record_equals(record: &Record, object: &Map<String, Value>, seen: &EvalResult) -> bool {
    let EvalResult::Record(seen) = seen else {
        return false;
    };
    let mut expected = 0;
    for (name, value) in object {
        let Some(Field { ty: Some(ty), .. }) = record.fields.get(name) else {
            continue;
        };
        if value.is_null() {
            continue;
        }
        expected += 1;
        if !seen.get(name).is_some_and(|s| value_equals(ty, value, s)) {
            return false;
        }
    }
    seen.iter().count() == expected
}

fn value_equals(ty: &ArgType, value: &Value, seen: &EvalResult) -> bool {
    match (ty, value, seen) {
        (ArgType::String, Value::String(a), EvalResult::String(b)) => a == b,
        (ArgType::Bool, Value::Bool(a), EvalResult::Bool(b)) => a == b,
        (ArgType::Long, Value::Number(a), EvalResult::Long(b)) => a.as_i64() == Some(*b),
        (ArgType::Decimal, Value::Number(a), EvalResult::ExtensionValue(b)) => {
            decimal_text(a).and_then(|t| ten_thousandths(&t)) == ten_thousandths(b)
        }
        (ArgType::Set(element), Value::Array(items), EvalResult::Set(set)) => {
            // A set: every item is in it, and it holds nothing else.
            items
                .iter()
                .all(|item| set.iter().any(|s| value_equals(element, item, s)))
                && set
                    .iter()
                    .all(|s| items.iter().any(|item| value_equals(element, item, s)))
        }
        (ArgType::Record(record), Value::Object(object), seen) => {
            record_equals(record, object, seen)
        }
        _ => false,
    }
}

/// A decimal's text (`12.5`, or Cedar's `decimal("12.5000")`) as ten-thousandths.
fn ten_thousandths(text: &str) -> Option<i64> {
    let text = text
        .trim_start_matches("decimal(\"")
        .trim_end_matches("\")");
    let (whole, fraction) = text.split_once('.')?;
    if fraction.len() > 4 {
        return None;
    }
    format!("{whole}{fraction:0<4}").parse().ok()
}

fn push_member(path: &mut String, name: &str) {
    if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        path.push('.');
        path.push_str(name);
    } else {
        let shown: String = name.chars().take(64).collect();
        path.push_str(&format!("[{shown:?}]"));
    }
}

fn error(path: &str, message: &str) -> ArgumentError {
    ArgumentError {
        path: path.to_owned(),
        message: message.to_owned(),
    }
}

/// The text Cedar's `decimal()` takes for `n`, if `n` has at most 4 decimal places and fits.
fn decimal_text(n: &serde_json::Number) -> Option<String> {
    let text = if let Some(i) = n.as_i64() {
        format!("{i}.0")
    } else if n.is_u64() {
        return None;
    } else {
        // Rust prints f64 in plain decimal notation, the shortest that reads back exactly.
        let f = n.as_f64()?;
        let plain = format!("{f}");
        if plain.contains('.') {
            plain
        } else {
            format!("{plain}.0")
        }
    };
    let (whole, fraction) = text.split_once('.')?;
    if fraction.is_empty() || fraction.len() > 4 {
        return None;
    }
    // decimal is an i64 count of ten-thousandths.
    let scaled: i128 = format!("{whole}{fraction:0<4}").parse().ok()?;
    i64::try_from(scaled).ok()?;
    Some(text)
}

/// The Cedar type of a JSON Schema, and whether it allows `null`.
fn arg_type(schema: &Value, depth: usize, budget: &mut usize) -> Option<(ArgType, bool)> {
    if depth > MAX_DEPTH {
        return None;
    }
    let schema = schema.as_object()?;
    let (name, nullable) = match schema.get("type") {
        Some(Value::String(t)) => (t.as_str(), false),
        Some(Value::Array(types)) => {
            let named: Vec<&str> = types.iter().filter_map(Value::as_str).collect();
            let nullable = named.contains(&"null");
            match named.iter().filter(|t| **t != "null").collect::<Vec<_>>()[..] {
                [one] if named.len() == types.len() => (*one, nullable),
                _ => return None,
            }
        }
        None if schema
            .get("enum")
            .and_then(Value::as_array)
            .is_some_and(|e| !e.is_empty() && e.iter().all(Value::is_string)) =>
        {
            ("string", false)
        }
        _ => return None,
    };
    let ty = match name {
        "string" => ArgType::String,
        "integer" => ArgType::Long,
        "number" => ArgType::Decimal,
        "boolean" => ArgType::Bool,
        "array" => {
            let (element, element_nullable) = arg_type(schema.get("items")?, depth + 1, budget)?;
            if element_nullable {
                return None;
            }
            ArgType::Set(Box::new(element))
        }
        "object" => ArgType::Record(record_type(schema, depth, budget)),
        _ => return None,
    };
    Some((ty, nullable))
}

fn record_type(schema: &Map<String, Value>, depth: usize, budget: &mut usize) -> Record {
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut fields = BTreeMap::new();
    let properties = schema.get("properties").and_then(Value::as_object);
    for (name, property) in properties.into_iter().flatten() {
        let mapped = if *budget == 0 {
            None
        } else {
            *budget -= 1;
            arg_type(property, depth + 1, budget)
        };
        let (ty, nullable) = match mapped {
            Some((ty, nullable)) => (Some(ty), nullable),
            None => (None, true),
        };
        fields.insert(
            name.clone(),
            Field {
                ty,
                required: required.contains(&name.as_str()),
                nullable,
            },
        );
    }
    // JSON Schema allows undeclared members by default; MCP tool schemas mostly mean "these and
    // no others", so only an explicit `additionalProperties` (true or a schema) opens a record.
    let open = match schema.get("additionalProperties") {
        Some(Value::Bool(b)) => *b,
        Some(Value::Object(_)) => true,
        _ => properties.is_none(),
    };
    Record { fields, open }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refund_schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "order": {"type": "string"},
                "amount": {"type": "number"},
                "count": {"type": "integer"},
                "notify": {"type": ["boolean", "null"]},
                "tags": {"type": "array", "items": {"type": "string"}},
                "address": {"type": "object", "properties": {"country": {"type": "string"}}, "required": ["country"]},
                "anything": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                "odd-name": {"enum": ["a", "b"]}
            },
            "required": ["order", "amount"]
        })
    }

    #[test]
    fn input_schemas_map_to_cedar_record_types() {
        let record = Record::of_input_schema(&refund_schema());
        assert_eq!(
            record.cedar_type(),
            json!({"type": "Record", "attributes": {
                "order": {"type": "String", "required": true},
                "amount": {"type": "Extension", "name": "decimal", "required": true},
                "count": {"type": "Long", "required": false},
                "notify": {"type": "Boolean", "required": false},
                "tags": {"type": "Set", "element": {"type": "String"}, "required": false},
                "address": {"type": "Record", "attributes": {"country": {"type": "String", "required": true}}, "required": false},
                "odd-name": {"type": "String", "required": false}
            }})
        );
        let mut unseen = vec![];
        record.unseen("arguments", &mut unseen);
        assert_eq!(unseen, ["arguments.anything"]);
        assert!(!record.open);
    }

    #[test]
    fn values_convert_or_are_refused_with_their_path() {
        let record = Record::of_input_schema(&refund_schema());
        let ok = |v: Value| record.convert(v.as_object().expect("object"));
        assert!(
            ok(json!({"order": "A1", "amount": 100.5, "notify": null, "anything": [1]})).is_ok()
        );
        assert!(ok(json!({"order": "A1", "amount": 100})).is_ok());
        let refused = |v: Value| ok(v).expect_err("refused").to_string();
        assert_eq!(
            refused(json!({"order": 1, "amount": 1})),
            "arguments.order: must be a string"
        );
        assert!(
            refused(json!({"order": "A", "amount": 0.00001}))
                .starts_with("arguments.amount: must be a number with at most 4")
        );
        assert!(refused(json!({"order": "A", "amount": 1e300})).starts_with("arguments.amount:"));
        assert_eq!(
            refused(json!({"order": "A", "amount": 1, "count": 1.5})),
            "arguments.count: must be an integer that fits in 64 bits"
        );
        assert_eq!(
            refused(json!({"order": "A", "amount": 1, "tags": ["x", 2]})),
            "arguments.tags[1]: must be a string"
        );
        assert_eq!(
            refused(json!({"order": "A", "amount": 1, "address": {}})),
            "arguments.address.country: is required by the tool's inputSchema"
        );
        assert_eq!(
            refused(json!({"amount": 1})),
            "arguments.order: is required by the tool's inputSchema"
        );
        assert_eq!(
            refused(json!({"order": "A", "amount": 1, "smuggled": "x"})),
            "arguments.smuggled: not declared by the tool's inputSchema"
        );
        assert_eq!(
            refused(json!({"order": "A", "amount": 1, "odd-name": 3})),
            "arguments[\"odd-name\"]: must be a string"
        );
    }

    #[test]
    fn decimals_are_exact_or_refused() {
        let text = |v: Value| match v {
            Value::Number(n) => decimal_text(&n),
            _ => None,
        };
        assert_eq!(text(json!(100)).as_deref(), Some("100.0"));
        assert_eq!(text(json!(100.25)).as_deref(), Some("100.25"));
        assert_eq!(text(json!(-0.0001)).as_deref(), Some("-0.0001"));
        assert_eq!(text(json!(0.00001)), None);
        assert_eq!(text(json!(0.1 + 0.2)), None, "0.30000000000000004");
        assert_eq!(
            text(json!(922337203685477_i64)).as_deref(),
            Some("922337203685477.0")
        );
        assert_eq!(text(json!(922337203685478_i64)), None);
        assert_eq!(text(json!(u64::MAX)), None);
    }

    #[test]
    fn hostile_schemas_are_bounded() {
        let mut deep = json!({"type": "string"});
        for _ in 0..100 {
            deep = json!({"type": "object", "properties": {"a": deep}});
        }
        let record = Record::of_input_schema(&deep);
        let mut unseen = vec![];
        record.unseen("arguments", &mut unseen);
        assert_eq!(unseen.len(), 1, "the part beyond the depth bound is unseen");
        let wide: Map<String, Value> = (0..2000)
            .map(|i| (format!("p{i}"), json!({"type": "string"})))
            .collect();
        let record = Record::of_input_schema(&json!({"type": "object", "properties": wide}));
        let typed = record.fields.values().filter(|f| f.ty.is_some()).count();
        assert_eq!(typed, MAX_PROPERTIES);
    }
}
