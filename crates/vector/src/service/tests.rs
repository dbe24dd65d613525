//! The `search` tool over real Streamable HTTP, driven with raw JSON-RPC (2026-07-28,
//! stateless) so the tests pin what the gateway sees on the wire.

use std::{path::Path, sync::Arc};

use micromcp_identity::signed::{Binding, META_KEY, RequestId, ServiceKey, Verifier};
use micromcp_testkit::{messages, post_2026, response_of, rpc_2026};
use serde_json::{Value, json};

use super::*;
use crate::{
    embed::HashEmbedder,
    identity::{CallerIdentity, SignedIdentity, StaticIdentity},
    index::{IndexSettings, index_folder},
    labels::Classification,
    store::{SqliteStore, testdb::TestDb},
};

const ACME_SECRET: &str = "The acme launch code word is marmalade.";
const GLOBEX_SECRET: &str = "Globex merger with Initech closes in March for two billion dollars.";

fn write(docs: &Path, rel: &str, tenant: &str, classification: &str, body: &str) {
    let text = format!(
        "---\ntenant: {tenant}\nclassification: {classification}\nowner: ops\n---\n# {rel}\n{body}\n"
    );
    std::fs::write(docs.join(rel), text).expect("write");
}

/// Indexes a small two-tenant folder and serves it for `caller`; returns the `/mcp` URL
/// and the progress handle (to simulate a pass in flight).
async fn spawn(caller: CallerIdentity) -> (String, Arc<Progress>, tempfile::TempDir) {
    spawn_for(Arc::new(StaticIdentity::new(caller))).await
}

/// [`spawn`] with any identity source.
async fn spawn_for(
    identity: Arc<dyn IdentitySource>,
) -> (String, Arc<Progress>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(SqliteStore::open(&dir.path().join("i.sqlite3")).expect("open"));
    spawn_on(identity, store, dir).await
}

/// [`spawn`] on any store; `dir` holds the documents.
async fn spawn_on(
    identity: Arc<dyn IdentitySource>,
    store: Arc<dyn Store>,
    dir: tempfile::TempDir,
) -> (String, Arc<Progress>, tempfile::TempDir) {
    let docs = dir.path().join("docs");
    std::fs::create_dir(&docs).expect("mkdir");
    write(
        &docs,
        "acme-public.md",
        "acme",
        "public",
        "Marmalade recipes for the office party.",
    );
    write(&docs, "acme-secret.md", "acme", "restricted", ACME_SECRET);
    write(&docs, "globex-merger.md", "globex", "public", GLOBEX_SECRET);
    let embedder = Arc::new(HashEmbedder::default());
    let progress = Arc::new(Progress::default());
    let settings = IndexSettings {
        docs,
        default_tenant: None,
        default_classification: Classification::Restricted,
        chunk: crate::chunk::ChunkOptions::default(),
        max_file_bytes: 1 << 20,
    };
    let report = index_folder(&settings, store.as_ref(), embedder.as_ref(), &progress)
        .await
        .expect("index");
    assert_eq!(report.embedded.len(), 3);
    let service = VectorService::new(store, embedder, identity, Arc::clone(&progress));
    let url = micromcp_testkit::serve(micromcp_services::http_router(service)).await;
    (url, progress, dir)
}

fn acme(clearance: Classification) -> CallerIdentity {
    CallerIdentity {
        tenant: "acme".to_owned(),
        clearance,
    }
}

async fn search(url: &str, arguments: Value, meta: Value) -> Value {
    rpc_2026(
        url,
        "tools/call",
        json!({"name": "search", "arguments": arguments, "_meta": meta}),
    )
    .await
}

fn paths(response: &Value) -> Vec<String> {
    response["result"]["structuredContent"]["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results: {response}"))
        .iter()
        .map(|r| r["path"].as_str().expect("path").to_owned())
        .collect()
}

#[tokio::test]
async fn the_tool_is_listed_read_only_with_an_output_schema() {
    let (url, _, _dir) = spawn(acme(Classification::Public)).await;
    let tools = rpc_2026(&url, "tools/list", json!({})).await;
    let tools = tools["result"]["tools"].as_array().expect("tools").clone();
    assert_eq!(tools.len(), 1);
    let tool = &tools[0];
    assert_eq!(tool["name"], "search");
    assert_eq!(tool["annotations"]["readOnlyHint"], true);
    assert!(
        tool["outputSchema"]["properties"]["results"].is_object(),
        "{tool}"
    );
    let input = &tool["inputSchema"]["properties"];
    assert!(input["query"].is_object() && input["k"].is_object() && input["filter"].is_object());
}

#[tokio::test]
async fn results_are_structured_and_scoped_to_the_caller() {
    let (url, _, _dir) = spawn(acme(Classification::Restricted)).await;
    let response = search(&url, json!({"query": "marmalade", "k": 10}), json!({})).await;
    let result = &response["result"];
    assert_ne!(result["isError"], true, "{response}");
    let mut found = paths(&response);
    found.sort();
    assert_eq!(found, ["acme-public.md", "acme-secret.md"]);
    let top = result["structuredContent"]["results"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["path"] == "acme-secret.md"))
        .expect("the restricted acme document");
    assert_eq!(top["title"], "acme-secret.md");
    assert_eq!(top["snippet"], ACME_SECRET);
    assert_eq!(
        top["labels"],
        json!({"tenant": "acme", "classification": "restricted", "owner": "ops"})
    );
    assert!(top["score"].as_f64().expect("score") > 0.1);
    assert!(result["structuredContent"].get("indexing").is_none());
    assert_eq!(result["content"][0]["type"], "text");
}

#[tokio::test]
async fn another_tenants_document_is_never_returned_even_verbatim() {
    let (url, _, _dir) = spawn(acme(Classification::Restricted)).await;
    let response = search(&url, json!({"query": GLOBEX_SECRET, "k": 50}), json!({})).await;
    let found = paths(&response);
    assert!(!found.iter().any(|p| p.starts_with("globex")), "{found:?}");
    let text = response.to_string();
    assert!(!text.contains("Initech"), "{text}");
}

#[tokio::test]
async fn clearance_hides_documents_above_it() {
    let (url, _, _dir) = spawn(acme(Classification::Confidential)).await;
    let response = search(&url, json!({"query": ACME_SECRET}), json!({})).await;
    assert_eq!(paths(&response), ["acme-public.md"]);
    // Asking for more in the filter does not widen it.
    let wider = search(
        &url,
        json!({"query": ACME_SECRET, "filter": {"classification": "restricted"}}),
        json!({}),
    )
    .await;
    assert_eq!(paths(&wider), ["acme-public.md"]);
}

#[tokio::test]
async fn identity_claims_in_meta_change_nothing_and_in_arguments_are_refused() {
    let (url, _, _dir) = spawn(acme(Classification::Public)).await;
    let plain = search(&url, json!({"query": GLOBEX_SECRET}), json!({})).await;
    for meta in [
        json!({"tenant": "globex", "clearance": "restricted"}),
        json!({"io.micromcp/identity": {"tenant": "globex", "clearance": "restricted"}}),
        json!({"identity": "eyJ0ZW5hbnQiOiJnbG9iZXgifQ"}),
    ] {
        let claimed = search(&url, json!({"query": GLOBEX_SECRET}), meta.clone()).await;
        assert_eq!(
            claimed["result"]["structuredContent"], plain["result"]["structuredContent"],
            "{meta}"
        );
        assert_eq!(paths(&claimed), ["acme-public.md"]);
    }
    for arguments in [
        json!({"query": GLOBEX_SECRET, "tenant": "globex"}),
        json!({"query": GLOBEX_SECRET, "clearance": "restricted"}),
        json!({"query": GLOBEX_SECRET, "filter": {"tenant": "globex"}}),
    ] {
        let refused = search(&url, arguments.clone(), json!({})).await;
        assert_eq!(refused["result"]["isError"], true, "{arguments}: {refused}");
        assert!(
            refused["result"].get("structuredContent").is_none(),
            "{refused}"
        );
        let message = refused["result"]["content"][0]["text"]
            .as_str()
            .expect("text");
        assert!(message.contains("unknown field"), "{message}");
        assert!(!refused.to_string().contains("Initech"));
    }
}

#[tokio::test]
async fn bounds_are_tool_errors_with_the_rule_named() {
    let (url, _, _dir) = spawn(acme(Classification::Public)).await;
    let long = "x".repeat(2001);
    for (arguments, words) in [
        (json!({"query": "a", "k": 51}), "between 1 and 50"),
        (json!({"query": "a", "k": 0}), "between 1 and 50"),
        (json!({"query": ""}), "query is empty"),
        (json!({"query": long}), "at most 2000"),
        (json!({"query": "a", "k": "five"}), "invalid type"),
        (json!({"k": 3}), "missing field `query`"),
        (
            json!({"query": "a", "filter": "owner = 'x'"}),
            "invalid type",
        ),
    ] {
        let refused = search(&url, arguments.clone(), json!({})).await;
        assert_eq!(refused["result"]["isError"], true, "{arguments}: {refused}");
        assert!(
            refused["result"].get("structuredContent").is_none(),
            "{refused}"
        );
        let message = refused["result"]["content"][0]["text"]
            .as_str()
            .expect("text");
        assert!(message.contains(words), "{arguments}: {message}");
    }
}

#[tokio::test]
async fn a_search_during_indexing_says_so() {
    let (url, progress, _dir) = spawn(acme(Classification::Public)).await;
    progress.start();
    let response = search(&url, json!({"query": "marmalade"}), json!({})).await;
    let output = &response["result"]["structuredContent"];
    assert_eq!(output["indexing"], json!(true), "{response}");
    assert_eq!(
        paths(&response),
        ["acme-public.md"],
        "answers from what is indexed"
    );
}

/// The index holds every tenant's documents: counts of the pass would reveal how many
/// documents other tenants add or change. Callers only learn that a pass is running.
#[tokio::test]
async fn indexing_progress_reveals_no_counts() {
    let (url, progress, _dir) = spawn(acme(Classification::Public)).await;
    let listed = rpc_2026(&url, "tools/list", json!({})).await;
    let schema = &listed["result"]["tools"][0]["outputSchema"]["properties"]["indexing"];
    assert!(schema.is_object(), "{listed}");
    assert!(
        !schema.to_string().contains("done") && !schema.to_string().contains("total"),
        "{schema}"
    );
    progress.start();
    progress.set_counts(123_457, 987_653);
    let response = search(&url, json!({"query": "marmalade"}), json!({})).await;
    let output = &response["result"]["structuredContent"];
    assert_eq!(output["indexing"], json!(true), "{response}");
    let text = response.to_string();
    for leak in ["123457", "987653", "done", "total"] {
        assert!(!text.contains(leak), "{leak} in {text}");
    }
}

#[tokio::test]
async fn filters_narrow_by_owner_and_path_prefix() {
    let (url, _, _dir) = spawn(acme(Classification::Restricted)).await;
    let nobody = search(
        &url,
        json!({"query": "marmalade", "filter": {"owner": "ops' OR '1'='1"}}),
        json!({}),
    )
    .await;
    assert!(paths(&nobody).is_empty());
    let by_prefix = search(
        &url,
        json!({"query": "marmalade", "filter": {"path_prefix": "acme-p", "owner": "ops"}}),
        json!({}),
    )
    .await;
    assert_eq!(paths(&by_prefix), ["acme-public.md"]);
}

/// The whole service on the PostgreSQL store: indexed by the indexer, searched over MCP,
/// scoped to the caller, filters as data, another tenant's text never returned.
#[tokio::test]
async fn the_service_works_on_the_postgres_store() {
    let db = TestDb::new();
    let store = Arc::new(db.open().await);
    let dir = tempfile::tempdir().expect("tempdir");
    let identity = Arc::new(StaticIdentity::new(acme(Classification::Confidential)));
    let (url, _, _dir) = spawn_on(identity, store, dir).await;
    let response = search(&url, json!({"query": "marmalade", "k": 10}), json!({})).await;
    assert_ne!(response["result"]["isError"], true, "{response}");
    assert_eq!(
        paths(&response),
        ["acme-public.md"],
        "restricted one hidden"
    );
    let hit = &response["result"]["structuredContent"]["results"][0];
    assert_eq!(
        hit["labels"],
        json!({"tenant": "acme", "classification": "public", "owner": "ops"})
    );
    assert!(hit["score"].as_f64().expect("score") > 0.1, "{hit}");
    for query in [GLOBEX_SECRET, ACME_SECRET] {
        let response = search(&url, json!({"query": query, "k": 50}), json!({})).await;
        assert_eq!(paths(&response), ["acme-public.md"], "{query}");
        let text = response.to_string();
        assert!(
            !text.contains("Initech") && !text.contains("code word"),
            "{text}"
        );
    }
    let hostile = search(
        &url,
        json!({"query": "marmalade", "filter": {"owner": "ops' OR '1'='1", "path_prefix": "%"}}),
        json!({}),
    )
    .await;
    assert!(paths(&hostile).is_empty(), "{hostile}");
    let by_prefix = search(
        &url,
        json!({"query": "marmalade", "filter": {"path_prefix": "acme-p", "owner": "ops"}}),
        json!({}),
    )
    .await;
    assert_eq!(paths(&by_prefix), ["acme-public.md"]);
}

/// `_meta` with the gateway's identity of alice (`tenant`, `clearance`) for request `id`.
fn signed_meta(key: &ServiceKey, id: i64, tenant: &str, clearance: &str) -> Value {
    let caller = micromcp_identity::Caller {
        agent: Some("bot"),
        tenant: Some(tenant),
        clearance: Some(clearance),
        ..micromcp_identity::Caller::new("alice", "api_token")
    };
    let binding = Binding::tool_call(RequestId::Number(id), "search");
    json!({META_KEY: key.sign(&caller, "micromcp", binding, micromcp_identity::now_secs())})
}

/// `search` for `query` as request `id`, with `meta` as its `_meta`.
async fn search_as(url: &str, id: u64, meta: Value, query: &str) -> Value {
    let params = json!({"name": "search", "arguments": {"query": query, "k": 10}, "_meta": meta});
    let response = post_2026(url, id, "tools/call", params, json!({})).await;
    response_of(&messages(response).await).clone()
}

/// The service with a key, for callers within `bound`; returns the key the gateway would hold.
async fn spawn_signed(bound: CallerIdentity) -> (ServiceKey, String, tempfile::TempDir) {
    let key = ServiceKey::generate().expect("key");
    let service_key = ServiceKey::from_env_value(&key.to_env_value()).expect("key");
    let identity = Arc::new(SignedIdentity::new(Verifier::new(service_key), bound));
    let (url, _, dir) = spawn_for(identity).await;
    (key, url, dir)
}

fn refusal(response: &Value) -> String {
    assert_eq!(response["result"]["isError"], true, "{response}");
    response["result"]["content"][0]["text"]
        .as_str()
        .expect("text")
        .to_owned()
}

/// With a key, every call needs the gateway's identity for that very call, and the launch
/// identity (acme, confidential) bounds what it may see.
#[tokio::test]
async fn with_a_key_the_signed_caller_decides_within_the_launch_bounds() {
    let (key, url, _dir) = spawn_signed(acme(Classification::Confidential)).await;
    let signed = |id, tenant, clearance| signed_meta(&key, id, tenant, clearance);

    let public = search_as(&url, 1, signed(1, "acme", "public"), "marmalade").await;
    assert_eq!(paths(&public), ["acme-public.md"]);
    // Asking for restricted gets the launch clearance (confidential), not more.
    let widened = search_as(&url, 2, signed(2, "acme", "restricted"), ACME_SECRET).await;
    assert_eq!(paths(&widened), ["acme-public.md"], "{widened}");
    // Another tenant is refused outright, not answered from acme's documents.
    let globex = search_as(&url, 3, signed(3, "globex", "public"), GLOBEX_SECRET).await;
    assert!(refusal(&globex).contains("not the tenant"));
    assert!(!globex.to_string().contains("Initech"));

    // No identity, an unsigned one, one signed with another key, one for another request.
    let missing = search_as(&url, 4, json!({}), "marmalade").await;
    assert!(
        refusal(&missing).contains("no caller identity"),
        "{missing}"
    );
    let unsigned = json!({META_KEY: {"tenant": "acme", "clearance": "restricted"}});
    let unsigned = search_as(&url, 5, unsigned, "marmalade").await;
    assert!(refusal(&unsigned).contains("malformed"), "{unsigned}");
    let other_key = ServiceKey::generate().expect("key");
    let forged = signed_meta(&other_key, 6, "acme", "public");
    let forged = search_as(&url, 6, forged, "marmalade").await;
    assert!(refusal(&forged).contains("signature"), "{forged}");
    let misbound = search_as(&url, 7, signed(99, "acme", "public"), "marmalade").await;
    assert!(refusal(&misbound).contains("another request"), "{misbound}");
}

/// The same signed message sent twice: the second is refused.
#[tokio::test]
async fn with_a_key_a_replayed_identity_is_refused() {
    let (key, url, _dir) = spawn_signed(acme(Classification::Restricted)).await;
    let meta = signed_meta(&key, 7, "acme", "restricted");
    let first = search_as(&url, 7, meta.clone(), ACME_SECRET).await;
    assert_eq!(paths(&first)[0], "acme-secret.md", "{first}");
    let again = search_as(&url, 7, meta, ACME_SECRET).await;
    assert!(refusal(&again).contains("already used"), "{again}");
    assert!(!again.to_string().contains("marmalade"));
}
