//! Federation: public names to services, and lists merged across services.
//!
//! Lists query every service that offers the capability, in parallel, and merge the pages. A
//! service that is down or slow is left out of the page (and logged), never failing the whole
//! list. When services paginate, the gateway's cursor remembers each service's own cursor, so
//! `nextCursor` continues exactly where every service left off. Items whose names or texts
//! carry control or invisible characters are left out ([`crate::output`]), and names with them
//! never route.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use micromcp_policy::{Action, Kind};
use micromcp_protocol::names::Namer;
use micromcp_protocol::text;
use serde_json::{Map, Value, json};

use crate::pipeline::{Caller, Failure};
use crate::{Gateway, ServiceHandle, output};

const MAX_CURSOR_BYTES: usize = 8192;
/// How long a request waits for a service that is still on its first start.
pub(crate) const STARTUP_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The four list methods.
#[derive(Debug, Clone, Copy)]
pub struct ListKind {
    pub method: &'static str,
    /// Field holding the items in the result.
    pub items: &'static str,
    /// Field of an item that names it (and is rewritten to the public form).
    pub id: &'static str,
    pub kind: Kind,
    /// Capability an upstream must advertise.
    pub capability: &'static str,
}

impl ListKind {
    pub fn for_method(method: &str) -> Option<ListKind> {
        let (method, items, id, kind, capability) = match method {
            "tools/list" => ("tools/list", "tools", "name", Kind::Tool, "tools"),
            "prompts/list" => ("prompts/list", "prompts", "name", Kind::Prompt, "prompts"),
            "resources/list" => (
                "resources/list",
                "resources",
                "uri",
                Kind::Resource,
                "resources",
            ),
            "resources/templates/list" => (
                "resources/templates/list",
                "resourceTemplates",
                "uriTemplate",
                Kind::Resource,
                "resources",
            ),
            _ => return None,
        };
        Some(ListKind {
            method,
            items,
            id,
            kind,
            capability,
        })
    }
}

type Cursor = Vec<(String, Option<String>)>;

impl Gateway {
    /// Routes a public tool or prompt name to its service and upstream name.
    /// Names with whitespace or hidden characters are never listed, so they never route.
    pub(crate) fn route_name<'p>(&self, public: &'p str) -> Option<(&ServiceHandle, &'p str)> {
        if !text::is_clean_name(public) {
            return None;
        }
        if let Some(only) = self.unprefixed_service() {
            return Some((only, public));
        }
        let (service, name) = self.namer.split_name(public)?;
        self.services.get(service).map(|s| (s, name))
    }

    /// Routes a public resource URI (or URI template) to its service and upstream URI.
    /// URIs with hidden characters are never listed, so they never route.
    pub(crate) fn route_uri<'p>(&self, public: &'p str) -> Option<(&ServiceHandle, &'p str)> {
        if !text::is_clean_id(public) {
            return None;
        }
        if let Some(only) = self.unprefixed_service() {
            return Some((only, public));
        }
        let (service, uri) = Namer::split_uri(public)?;
        self.services.get(service).map(|s| (s, uri))
    }

    fn unprefixed_service(&self) -> Option<&ServiceHandle> {
        self.services.values().find(|s| !s.prefix)
    }

    fn public_id(&self, service: &ServiceHandle, list: ListKind, id: &str) -> String {
        if !service.prefix {
            id.to_owned()
        } else if list.kind == Kind::Resource {
            Namer::public_uri(&service.name, id)
        } else {
            self.namer.public_name(&service.name, id)
        }
    }

    /// One merged page of a list, showing the caller only what it may use.
    pub(crate) async fn list(
        &self,
        caller: &Caller,
        list: ListKind,
        params: Option<&Value>,
    ) -> Result<Value, Failure> {
        let cursor = match params.and_then(|p| p.get("cursor")) {
            None | Some(Value::Null) => self.services.keys().map(|s| (s.clone(), None)).collect(),
            Some(Value::String(c)) => self
                .decode_cursor(c)
                .ok_or_else(|| Failure::invalid_params("invalid cursor"))?,
            Some(_) => return Err(Failure::invalid_params("cursor must be a string")),
        };
        let pages = cursor.into_iter().filter_map(|(name, upstream_cursor)| {
            let service = self.services.get(&name)?;
            Some(async move {
                service
                    .upstream
                    .wait_started(STARTUP_WAIT.min(service.timeout))
                    .await;
                let offers = service
                    .upstream
                    .capabilities()
                    .is_some_and(|c| c.get(list.capability).is_some());
                if !offers {
                    return None;
                }
                let params = upstream_cursor.as_ref().map(|c| json!({ "cursor": c }));
                let page = tokio::time::timeout(
                    service.timeout,
                    service.upstream.request(list.method, params),
                )
                .await;
                Some((service, page))
            })
        });
        let mut items = Vec::new();
        let mut next: Cursor = Vec::new();
        for (service, page) in futures::future::join_all(pages).await.into_iter().flatten() {
            let page = match page {
                Ok(Ok(page)) => page,
                Ok(Err(e)) => {
                    tracing::warn!(
                        service = %service.name,
                        method = list.method,
                        "left out of the list: {}",
                        text::escape(&e.to_string())
                    );
                    continue;
                }
                Err(_) => {
                    tracing::warn!(service = %service.name, method = list.method, "left out of the list: timed out");
                    continue;
                }
            };
            for item in page
                .get(list.items)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let Some(mut item) = item.as_object().cloned() else {
                    continue;
                };
                if let Some(field) = output::unclean_field(&item, list.id, list.kind) {
                    let id = match item.get(list.id) {
                        Some(Value::String(id)) => id.chars().take(200).collect(),
                        other => other.map(Value::to_string).unwrap_or_default(),
                    };
                    tracing::warn!(
                        service = %service.name,
                        method = list.method,
                        item = %format_args!("\"{}\"", text::escape(&id)),
                        field = %format_args!("\"{}\"", text::escape(&field)),
                        "left out of the list: control or invisible characters"
                    );
                    continue;
                }
                let Some(id) = item.get(list.id).and_then(Value::as_str).map(str::to_owned) else {
                    continue;
                };
                let action = Action {
                    kind: list.kind,
                    service: &service.name,
                    name: &id,
                };
                if !self.authz.authorize(&caller.principal, action).allowed {
                    continue;
                }
                item.insert(list.id.into(), self.public_id(service, list, &id).into());
                items.push(Value::Object(item));
            }
            if let Some(c) = page.get("nextCursor").and_then(Value::as_str) {
                next.push((service.name.clone(), Some(c.to_owned())));
            }
        }
        let mut result = Map::new();
        result.insert(list.items.into(), Value::Array(items));
        if !next.is_empty() {
            result.insert("nextCursor".into(), encode_cursor(&next).into());
        }
        Ok(Value::Object(result))
    }

    fn decode_cursor(&self, text: &str) -> Option<Cursor> {
        if text.len() > MAX_CURSOR_BYTES {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(text.strip_prefix("mm1.")?).ok()?;
        let cursor: Cursor = serde_json::from_slice(&bytes).ok()?;
        cursor
            .iter()
            .all(|(s, _)| self.services.contains_key(s))
            .then_some(cursor)
    }
}

fn encode_cursor(cursor: &Cursor) -> String {
    format!(
        "mm1.{}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(cursor).unwrap_or_default())
    )
}
