//! The Cedar schema of the gateway: fixed entity types for callers and what they use, and one
//! action per tool generated from the live catalog, whose context types the tool's arguments.
//!
//! ```text
//! entity Role;  entity Service;
//! entity User in [Role] = { user: String, agent?: String, tenant?: String, roles: Set<String>,
//!                           scopes: Set<String>, clearance?: String, auth_method: String, issuer?: String };
//! entity Tool in [Service] = { name: String, service: String, tool: String,
//!                              read_only: Bool, destructive: Bool, idempotent: Bool, open_world: Bool };
//! entity Prompt in [Service] = { name: String, service: String, prompt: String };
//! entity Resource in [Service] = { name: String, service: String, uri: String };
//! action call_tool;                                  // the group of every tool action
//! action "fs.read_file" in [call_tool] appliesTo { principal: User, resource: Tool,
//!     context: { arguments: { path: String, … }, time: Time, transport: String,
//!                protocol_version: String, client_ip?: ipaddr, session?: String } };
//! action get_prompt appliesTo { principal: User, resource: Prompt, context: Request };
//! action read_resource appliesTo { principal: User, resource: Resource, context: Request };
//! ```

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::arguments::Record;

/// A tool as the catalog describes it (untrusted: it comes from the service).
#[derive(Debug, Clone, PartialEq)]
pub struct ToolEntry {
    /// The service's own name for it.
    pub name: String,
    pub input_schema: Value,
    pub hints: ToolHints,
}

/// MCP tool annotations, with the spec's defaults when absent. They are the service's claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToolHints {
    pub read_only: bool,
    pub destructive: bool,
    pub idempotent: bool,
    pub open_world: bool,
}

impl Default for ToolHints {
    fn default() -> Self {
        Self {
            read_only: false,
            destructive: true,
            idempotent: false,
            open_world: true,
        }
    }
}

impl ToolEntry {
    /// A tool from a `tools/list` item; `None` if it has no string name.
    pub fn from_listed(item: &Map<String, Value>) -> Option<ToolEntry> {
        let name = item.get("name")?.as_str()?.to_owned();
        let hint = |key: &str, default: bool| {
            item.get("annotations")
                .and_then(|a| a.get(key))
                .and_then(Value::as_bool)
                .unwrap_or(default)
        };
        let defaults = ToolHints::default();
        Some(ToolEntry {
            name,
            input_schema: item.get("inputSchema").cloned().unwrap_or(Value::Null),
            hints: ToolHints {
                read_only: hint("readOnlyHint", defaults.read_only),
                destructive: hint("destructiveHint", defaults.destructive),
                idempotent: hint("idempotentHint", defaults.idempotent),
                open_world: hint("openWorldHint", defaults.open_world),
            },
        })
    }
}

/// Every service's tools: `service → tools`.
pub type Catalog = BTreeMap<String, Vec<ToolEntry>>;

/// One tool's typing, ready for requests.
#[derive(Debug, Clone)]
pub struct ToolType {
    /// `<service><sep><tool>`: its action id and its resource's `name`.
    pub public: String,
    pub arguments: Record,
    pub hints: ToolHints,
}

/// Types every tool of the catalog (keyed by service, then the service's tool name).
pub fn tool_types(catalog: &Catalog, separator: &str) -> BTreeMap<(String, String), ToolType> {
    catalog
        .iter()
        .flat_map(|(service, tools)| {
            tools.iter().map(move |t| {
                (
                    (service.clone(), t.name.clone()),
                    ToolType {
                        public: format!("{service}{separator}{}", t.name),
                        arguments: Record::of_input_schema(&t.input_schema),
                        hints: t.hints,
                    },
                )
            })
        })
        .collect()
}

fn request_context(arguments: Option<Value>) -> Value {
    let mut attributes = json!({
        "time": { "type": "Time" },
        "transport": { "type": "String" },
        "protocol_version": { "type": "String" },
        "client_ip": { "type": "Extension", "name": "ipaddr", "required": false },
        "session": { "type": "String", "required": false },
    });
    if let Some(arguments) = arguments {
        attributes["arguments"] = arguments;
    }
    json!({ "type": "Record", "attributes": attributes })
}

fn string_attrs(names: &[&str]) -> Map<String, Value> {
    names
        .iter()
        .map(|n| ((*n).to_owned(), json!({ "type": "String" })))
        .collect()
}

/// The Cedar schema (JSON form) for `tools`.
pub fn cedar_schema<'a>(tools: impl IntoIterator<Item = &'a ToolType>) -> Value {
    let optional = |ty: &str| json!({ "type": ty, "required": false });
    let string_set = json!({ "type": "Set", "element": { "type": "String" } });
    let user = json!({
        "memberOfTypes": ["Role"],
        "shape": { "type": "Record", "attributes": {
            "user": { "type": "String" },
            "agent": optional("String"),
            "tenant": optional("String"),
            "roles": string_set,
            "scopes": string_set,
            "clearance": optional("String"),
            "auth_method": { "type": "String" },
            "issuer": optional("String"),
        }},
    });
    let mut tool_attrs = string_attrs(&["name", "service", "tool"]);
    for hint in ["read_only", "destructive", "idempotent", "open_world"] {
        tool_attrs.insert(hint.into(), json!({ "type": "Boolean" }));
    }
    let member = |attrs: Map<String, Value>| json!({ "memberOfTypes": ["Service"], "shape": { "type": "Record", "attributes": attrs } });
    let applies = |resource: &str, context: Value| json!({ "appliesTo": { "principalTypes": ["User"], "resourceTypes": [resource], "context": context } });
    let mut actions = Map::new();
    actions.insert("call_tool".into(), json!({}));
    actions.insert(
        "get_prompt".into(),
        applies("Prompt", request_context(None)),
    );
    actions.insert(
        "read_resource".into(),
        applies("Resource", request_context(None)),
    );
    for tool in tools {
        let mut action = applies("Tool", request_context(Some(tool.arguments.cedar_type())));
        action["memberOf"] = json!([{ "id": "call_tool" }]);
        actions.insert(tool.public.clone(), action);
    }
    json!({ "": {
        "commonTypes": {
            "Time": { "type": "Record", "attributes": {
                "now": { "type": "Extension", "name": "datetime" },
                "weekday": { "type": "String" },
                "hour": { "type": "Long" },
            }},
        },
        "entityTypes": {
            "Role": {},
            "Service": {},
            "User": user,
            "Tool": member(tool_attrs),
            "Prompt": member(string_attrs(&["name", "service", "prompt"])),
            "Resource": member(string_attrs(&["name", "service", "uri"])),
        },
        "actions": actions,
    }})
}
