//! Federation: public names to services, and lists merged across services.
//!
//! Lists query, in parallel, every service that offers the capability *and* on which the caller
//! holds a grant of that kind ([`micromcp_policy::Authorizer::may_use_any`]); the others are
//! never asked, so a list reveals nothing about them, not even that they paginate. A service
//! that is down or slow is left out of the page (and logged), never failing the whole list.
//!
//! When services paginate, the gateway's cursor remembers each service's own cursor, so
//! `nextCursor` continues exactly where every service left off. That cursor is opaque and bound
//! ([`CursorSeal`]): AES-256-GCM under a key drawn when the gateway starts, with the list method
//! and the caller (user, agent, tenant) as associated data. A cursor that was altered, issued to
//! another principal or for another list, or issued before a restart is refused with one and the
//! same error, so none can be crafted to probe service names or to repeat a service; a decoded
//! cursor names each service at most once, so a request never asks more services than exist.
//!
//! Items whose names or texts carry control or invisible characters are left out
//! ([`crate::output`]), and names with them never route.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use micromcp_auth::Principal;
use micromcp_policy::{Action, Authorizer, Kind};
use micromcp_protocol::names::Namer;
use micromcp_protocol::text;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use serde_json::{Map, Value, json};

use micromcp_protocol::{ErrorObject, error_codes};

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

/// Per service still to list: its name and its own cursor (`None`: from the start).
type Cursor = Vec<(String, Option<String>)>;

/// The text every sealed cursor starts with (a version, so the format can change).
const CURSOR_PREFIX: &str = "mm2.";
/// Plaintexts are padded to a multiple of this, so a cursor's length says little about which
/// services it names and how long their cursors are.
const CURSOR_PADDING: usize = 64;
const INVALID_CURSOR: &str = "invalid cursor";

/// Seals and opens list cursors with a key that never leaves this process.
pub(crate) struct CursorSeal {
    /// `None` if the system's random number generator failed at start: lists then work, but a
    /// list that would need a cursor fails rather than hand out an unsealed one.
    key: Option<LessSafeKey>,
}

impl CursorSeal {
    pub(crate) fn new() -> Self {
        let mut key = [0u8; 32];
        let key = getrandom::fill(&mut key)
            .ok()
            .and_then(|()| UnboundKey::new(&AES_256_GCM, &key).ok())
            .map(LessSafeKey::new);
        if key.is_none() {
            tracing::error!("no random key for list cursors: lists that need a cursor will fail");
        }
        Self { key }
    }

    fn seal(&self, cursor: &Cursor, principal: &Principal, list: ListKind) -> Option<String> {
        let key = self.key.as_ref()?;
        let mut bytes = serde_json::to_vec(cursor).ok()?;
        // JSON ignores trailing whitespace: padding needs no framing.
        bytes.resize(bytes.len().next_multiple_of(CURSOR_PADDING), b' ');
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).ok()?;
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(binding(principal, list)),
            &mut bytes,
        )
        .ok()?;
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&bytes);
        Some(format!("{CURSOR_PREFIX}{}", URL_SAFE_NO_PAD.encode(sealed)))
    }

    /// The cursor in `text`, if this gateway sealed it for this principal and list.
    fn open(&self, text: &str, principal: &Principal, list: ListKind) -> Option<Cursor> {
        let key = self.key.as_ref()?;
        if text.len() > MAX_CURSOR_BYTES {
            return None;
        }
        let mut sealed = URL_SAFE_NO_PAD
            .decode(text.strip_prefix(CURSOR_PREFIX)?)
            .ok()?;
        if sealed.len() < NONCE_LEN {
            return None;
        }
        let mut ciphertext = sealed.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&sealed).ok()?;
        let plain = key
            .open_in_place(nonce, Aad::from(binding(principal, list)), &mut ciphertext)
            .ok()?;
        serde_json::from_slice(plain).ok()
    }
}

/// What a cursor is bound to: the list method and the caller. Each part is length-prefixed, so
/// no two different bindings give the same bytes.
fn binding(principal: &Principal, list: ListKind) -> Vec<u8> {
    let mut aad = Vec::new();
    for part in [
        Some(list.method),
        Some(principal.user.as_str()),
        principal.agent.as_deref(),
        principal.tenant.as_deref(),
    ] {
        match part {
            None => aad.push(0),
            Some(p) => {
                aad.push(1);
                aad.extend_from_slice(&u64::try_from(p.len()).unwrap_or(u64::MAX).to_be_bytes());
                aad.extend_from_slice(p.as_bytes());
            }
        }
    }
    aad
}

impl Gateway {
    /// The service and the service's own name for a public tool/prompt name or resource URI
    /// (for `micromcp policy explain`).
    pub fn resolve<'p>(&self, kind: Kind, public: &'p str) -> Option<(&str, &'p str)> {
        let route = if kind == Kind::Resource {
            self.route_uri(public)
        } else {
            self.route_name(public)
        };
        route.map(|(s, name)| (s.name.as_str(), name))
    }

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
            None | Some(Value::Null) => self
                .services
                .keys()
                .filter(|s| self.may_list(caller, list, s))
                .map(|s| (s.clone(), None))
                .collect(),
            Some(Value::String(c)) => self
                .decode_cursor(c, caller, list)
                .ok_or_else(|| Failure::invalid_params(INVALID_CURSOR))?,
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
                    self.request_for(service, &caller.principal, list.method, params),
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
                    arguments: None,
                };
                // Listed when some arguments could be allowed (and when only a scope is
                // missing: a token with it can call them, step-up; calling without gets 403).
                let listed = (list.kind == Kind::Tool)
                    .then(|| micromcp_policy::ToolEntry::from_listed(&item))
                    .flatten();
                if !self.authz.may_list(
                    &caller.principal,
                    action,
                    listed.as_ref(),
                    &caller.policy_context(None),
                ) {
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
        while !next.is_empty() {
            let sealed = self
                .cursors
                .seal(&next, &caller.principal, list)
                .ok_or_else(|| {
                    Failure::client(ErrorObject::new(
                        error_codes::INTERNAL_ERROR,
                        "the list continues, but no cursor could be sealed",
                    ))
                })?;
            if sealed.len() <= MAX_CURSOR_BYTES {
                result.insert("nextCursor".into(), sealed.into());
                break;
            }
            // A cursor the gateway would refuse to read back breaks every service's next page:
            // the service with the longest cursor of its own stops here instead.
            let longest = (0..next.len())
                .max_by_key(|&i| next[i].1.as_ref().map_or(0, String::len))
                .unwrap_or_default();
            let (service, _) = next.remove(longest);
            tracing::warn!(service = %service, method = list.method, "listing stops here: the service's cursor is too long to carry");
        }
        Ok(Value::Object(result))
    }

    /// Whether a list of `list`'s kind asks `service` for the caller at all.
    fn may_list(&self, caller: &Caller, list: ListKind, service: &str) -> bool {
        self.authz
            .may_use_any(&caller.principal, list.kind, service)
    }

    /// A cursor this gateway sealed for this caller and list, naming each service at most once,
    /// only configured services, and only those the caller may list (grants can change).
    fn decode_cursor(&self, text: &str, caller: &Caller, list: ListKind) -> Option<Cursor> {
        let cursor = self.cursors.open(text, &caller.principal, list)?;
        let mut seen = std::collections::HashSet::new();
        cursor
            .iter()
            .all(|(s, _)| {
                seen.insert(s.as_str())
                    && self.services.contains_key(s)
                    && self.may_list(caller, list, s)
            })
            .then_some(cursor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(user: &str, agent: Option<&str>) -> Principal {
        Principal {
            tenant: Some("acme".into()),
            ..Principal::named(user, agent, micromcp_auth::AuthMethod::ApiToken)
        }
    }

    fn list(method: &str) -> ListKind {
        ListKind::for_method(method).expect("a list method")
    }

    fn cursor() -> Cursor {
        vec![
            ("secret-service".into(), Some("page-2-of-upstream".into())),
            ("other".into(), None),
        ]
    }

    #[test]
    fn a_sealed_cursor_opens_only_for_its_principal_and_list() {
        let seal = CursorSeal::new();
        let alice = principal("alice", Some("bot"));
        let tools = list("tools/list");
        let text = seal.seal(&cursor(), &alice, tools).expect("sealed");
        assert_eq!(seal.open(&text, &alice, tools), Some(cursor()));
        assert_eq!(seal.open(&text, &principal("bob", None), tools), None);
        assert_eq!(seal.open(&text, &principal("alice", None), tools), None);
        assert_eq!(
            seal.open(&text, &principal("alice", Some("other")), tools),
            None
        );
        let mut other_tenant = alice.clone();
        other_tenant.tenant = None;
        assert_eq!(seal.open(&text, &other_tenant, tools), None);
        assert_eq!(seal.open(&text, &alice, list("prompts/list")), None);
        assert_eq!(seal.open(&text, &alice, list("resources/list")), None);
        assert_eq!(
            CursorSeal::new().open(&text, &alice, tools),
            None,
            "another gateway process (another key)"
        );
    }

    /// The bytes inside a sealed cursor's text.
    fn sealed_bytes(text: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD
            .decode(text.strip_prefix(CURSOR_PREFIX).expect("prefix"))
            .expect("base64")
    }

    #[test]
    fn any_altered_byte_or_garbage_is_refused() {
        let seal = CursorSeal::new();
        let alice = principal("alice", None);
        let tools = list("tools/list");
        let text = seal.seal(&cursor(), &alice, tools).expect("sealed");
        let raw = sealed_bytes(&text);
        for i in 0..raw.len() {
            let mut altered = raw.clone();
            altered[i] ^= 0x01;
            let altered = format!("{CURSOR_PREFIX}{}", URL_SAFE_NO_PAD.encode(altered));
            assert_eq!(seal.open(&altered, &alice, tools), None, "byte {i}");
        }
        let truncated = &text[..text.len() - 4];
        let old_format = format!(
            "mm1.{}",
            URL_SAFE_NO_PAD.encode(br#"[["secret-service",null]]"#)
        );
        let oversized = format!("{CURSOR_PREFIX}{}", "A".repeat(MAX_CURSOR_BYTES));
        for garbage in [
            "",
            "mm2.",
            "mm2.!!",
            "mm2.AAAA",
            truncated,
            &old_format,
            &oversized,
        ] {
            assert_eq!(seal.open(garbage, &alice, tools), None, "{garbage:?}");
        }
    }

    #[test]
    fn a_cursor_reveals_no_service_and_little_length() {
        let seal = CursorSeal::new();
        let alice = principal("alice", None);
        let tools = list("tools/list");
        let text = seal.seal(&cursor(), &alice, tools).expect("sealed");
        let raw = sealed_bytes(&text);
        let shown = String::from_utf8_lossy(&raw);
        assert!(!shown.contains("secret"), "{shown}");
        assert!(!shown.contains("page-2"), "{shown}");
        assert_ne!(
            text,
            seal.seal(&cursor(), &alice, tools).expect("again"),
            "a fresh nonce each time"
        );
        let short: Cursor = vec![("a".into(), None)];
        let longer: Cursor = vec![("abcdefghij".into(), Some("0123456789".into()))];
        assert_eq!(
            seal.seal(&short, &alice, tools).expect("short").len(),
            seal.seal(&longer, &alice, tools).expect("longer").len(),
            "both pad to the same length"
        );
    }

    #[test]
    fn bindings_are_unambiguous() {
        let tools = list("tools/list");
        let mut a = principal("ab", None);
        a.tenant = Some("c".into());
        let mut b = principal("a", None);
        b.tenant = Some("bc".into());
        assert_ne!(binding(&a, tools), binding(&b, tools));
        let with_agent = principal("a", Some("x"));
        let mut with_tenant = principal("a", None);
        with_tenant.tenant = Some("x".into());
        assert_ne!(binding(&with_agent, tools), binding(&with_tenant, tools));
    }
}
