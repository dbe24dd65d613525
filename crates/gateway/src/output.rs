//! Protect output: what upstream results and list items may carry to clients.
//!
//! - Resource URIs inside results — `resources/read` contents, embedded resources (`resource`)
//!   and resource links (`resource_link`) in tool results and prompt messages — become public
//!   URIs (`<service>+<uri>`), so a client sees only names that route back through the gateway
//!   and never the upstream's own.
//! - A list item whose name or URI has whitespace (names) or a control or invisible character,
//!   or any of whose other texts (title, description, schema, annotations…) has a control or
//!   invisible character other than tab and line ends, is left out: such characters are how
//!   instructions are hidden from the people who approve tools. The item is logged, escaped.

use micromcp_policy::Kind;
use micromcp_protocol::text;
use serde_json::{Map, Value};

use crate::{Gateway, ServiceHandle};

impl Gateway {
    /// Rewrites the upstream URIs in a `tools/call`, `prompts/get` or `resources/read` result of
    /// `service` to their public form.
    pub(crate) fn publish_result(
        &self,
        service: &ServiceHandle,
        method: &str,
        mut result: Value,
    ) -> Value {
        let publish = |holder: &mut Value| {
            if let Some(Value::String(uri)) = holder.get_mut("uri") {
                *uri = self.public_uri(&service.name, uri);
            }
        };
        let publish_content = |item: &mut Value| match item.get("type").and_then(Value::as_str) {
            Some("resource") => {
                if let Some(resource) = item.get_mut("resource") {
                    publish(resource);
                }
            }
            Some("resource_link") => publish(item),
            _ => {}
        };
        match method {
            "resources/read" => each(result.get_mut("contents"), publish),
            "tools/call" => each(result.get_mut("content"), publish_content),
            "prompts/get" => each(result.get_mut("messages"), |message| {
                match message.get_mut("content") {
                    Some(content @ Value::Array(_)) => each(Some(content), publish_content),
                    Some(content) => publish_content(content),
                    None => {}
                }
            }),
            _ => {}
        }
        result
    }
}

fn each(items: Option<&mut Value>, f: impl Fn(&mut Value)) {
    if let Some(Value::Array(items)) = items {
        items.iter_mut().for_each(f);
    }
}

/// Why a list item may not be published: the path of its first unclean field, or `None` when
/// it is clean. `id` is the field that names the item (`name`, `uri`, `uriTemplate`).
pub(crate) fn unclean_field(item: &Map<String, Value>, id: &str, kind: Kind) -> Option<String> {
    let id_is_clean = match (item.get(id), kind) {
        (Some(Value::String(name)), Kind::Tool | Kind::Prompt) => text::is_clean_name(name),
        (Some(Value::String(uri)), Kind::Resource) => text::is_clean_id(uri),
        _ => false,
    };
    if !id_is_clean {
        return Some(id.to_owned());
    }
    item.iter()
        .filter(|(key, _)| key.as_str() != id)
        .find_map(|(key, value)| unclean_text(key, value, key))
}

/// The path of the first key or string below `value` that is not clean text.
fn unclean_text(key: &str, value: &Value, path: &str) -> Option<String> {
    if !text::is_clean_text(key) {
        return Some(path.to_owned());
    }
    match value {
        Value::String(s) => (!text::is_clean_text(s)).then(|| path.to_owned()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| unclean_text("", v, &format!("{path}[{i}]"))),
        Value::Object(fields) => fields
            .iter()
            .find_map(|(k, v)| unclean_text(k, v, &format!("{path}.{k}"))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(item: Value, id: &str, kind: Kind) -> Option<String> {
        unclean_field(item.as_object().expect("object"), id, kind)
    }

    #[test]
    fn clean_items_pass() {
        let tool = json!({
            "name": "read_file",
            "title": "Read a file",
            "description": "Reads a file.\n\tArgs:\r\n  path ⚠️",
            "inputSchema": {"type": "object", "properties": {"path": {"type": "string", "enum": ["a b"]}}},
        });
        assert_eq!(check(tool, "name", Kind::Tool), None);
        let resource = json!({"uri": "file:///on call.md", "name": "On call"});
        assert_eq!(check(resource, "uri", Kind::Resource), None);
    }

    #[test]
    fn hidden_characters_anywhere_leave_the_item_out() {
        let cases = [
            (json!({"name": "a b"}), "name"),
            (json!({"name": "evil\n"}), "name"),
            (
                json!({"name": "x", "description": "ok\u{1b}[8mhidden"}),
                "description",
            ),
            (json!({"name": "x", "title": "\u{202e}txt.exe"}), "title"),
            (json!({"name": "x", "description": "a\rb"}), "description"),
            (
                json!({"name": "x", "inputSchema": {"properties": {"p": {"default": "\u{e0049}"}}}}),
                "inputSchema.properties.p.default",
            ),
            (
                json!({"name": "x", "inputSchema": {"properties": {"p\u{200b}": {}}}}),
                "inputSchema.properties.p\u{200b}",
            ),
            (
                json!({"name": "x", "annotations": {"enum": ["ok", "\u{7}"]}}),
                "annotations.enum[1]",
            ),
            (json!({"description": "no name"}), "name"),
            (json!({"name": 5}), "name"),
        ];
        for (item, path) in cases {
            assert_eq!(
                check(item.clone(), "name", Kind::Tool).as_deref(),
                Some(path),
                "{item}"
            );
        }
        let resource = json!({"uri": "file:///a\u{85}b", "name": "a"});
        assert_eq!(
            check(resource, "uri", Kind::Resource).as_deref(),
            Some("uri")
        );
    }
}
