//! The SQLite store on real files: scope pushdown, filter values as data, identity resets.

use super::*;
use crate::{
    embed::{Embedder, HashEmbedder},
    identity::CallerIdentity,
    query::SearchFilter,
    store::NewChunk,
};

fn labels(tenant: &str, classification: Classification, owner: Option<&str>) -> Labels {
    Labels {
        tenant: tenant.to_owned(),
        classification,
        owner: owner.map(str::to_owned),
    }
}

fn doc(path: &str, text: &str, labels: Labels) -> NewDocument {
    NewDocument {
        path: path.to_owned(),
        state: FileState {
            size: text.len() as u64,
            mtime_ns: 1,
            hash: format!("hash-of-{path}"),
        },
        title: path.to_owned(),
        labels,
        chunks: vec![NewChunk {
            heading: None,
            text: text.to_owned(),
            embedding: HashEmbedder::default().embed_one(text),
        }],
    }
}

/// A store with the same text under several tenants, levels, owners and tricky paths.
async fn fixture(dir: &tempfile::TempDir) -> SqliteStore {
    let store = SqliteStore::open(&dir.path().join("index.sqlite3")).expect("open");
    assert!(
        !store
            .prepare("test-identity".into())
            .await
            .expect("prepare")
    );
    let text = "quarterly revenue forecast";
    for document in [
        doc(
            "acme/public.md",
            text,
            labels("acme", Classification::Public, Some("ann")),
        ),
        doc(
            "acme/internal.md",
            text,
            labels("acme", Classification::Internal, Some("50%")),
        ),
        doc(
            "acme/secret.md",
            text,
            labels("acme", Classification::Restricted, None),
        ),
        doc(
            "100%/odd.md",
            text,
            labels("acme", Classification::Public, Some("o'brien")),
        ),
        doc(
            "globex/public.md",
            text,
            labels("globex", Classification::Public, Some("ann")),
        ),
    ] {
        store.put_document(document).await.expect("put");
    }
    store
}

async fn search(
    store: &SqliteStore,
    clearance: Classification,
    filter: SearchFilter,
) -> Vec<String> {
    let caller = CallerIdentity {
        tenant: "acme".into(),
        clearance,
    };
    let query = HashEmbedder::default().embed_one("revenue forecast");
    let mut paths: Vec<String> = store
        .search(query, Scope::new(&caller, &filter), 50)
        .await
        .expect("search")
        .into_iter()
        .map(|hit| hit.path)
        .collect();
    paths.sort();
    paths
}

#[tokio::test]
async fn scope_is_applied_in_the_query() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = fixture(&dir).await;
    assert_eq!(
        search(&store, Classification::Internal, SearchFilter::default()).await,
        ["100%/odd.md", "acme/internal.md", "acme/public.md"]
    );
    assert_eq!(
        search(&store, Classification::Restricted, SearchFilter::default()).await,
        [
            "100%/odd.md",
            "acme/internal.md",
            "acme/public.md",
            "acme/secret.md"
        ]
    );
    let owner_ann = SearchFilter {
        owner: Some("ann".into()),
        ..SearchFilter::default()
    };
    // globex/public.md has owner ann too, but another tenant.
    assert_eq!(
        search(&store, Classification::Restricted, owner_ann).await,
        ["acme/public.md"]
    );
}

#[tokio::test]
async fn filter_values_are_data_not_query_syntax() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = fixture(&dir).await;
    let before = store.chunk_count().await.expect("count");
    let owner = |o: &str| SearchFilter {
        owner: Some(o.into()),
        ..SearchFilter::default()
    };
    let prefix = |p: &str| SearchFilter {
        path_prefix: Some(p.into()),
        ..SearchFilter::default()
    };
    for hostile in [
        "' OR '1'='1",
        "ann' OR tenant = 'globex",
        "%",
        "_%",
        "\"; DROP TABLE chunks; --",
        "') UNION SELECT * FROM documents --",
    ] {
        let by_owner = search(&store, Classification::Restricted, owner(hostile)).await;
        assert!(
            by_owner.is_empty(),
            "owner {hostile:?} matched {by_owner:?}"
        );
        let by_prefix = search(&store, Classification::Restricted, prefix(hostile)).await;
        assert!(
            by_prefix.is_empty(),
            "prefix {hostile:?} matched {by_prefix:?}"
        );
    }
    // Wildcard characters are literal: "50%" is an owner, "100%" a folder.
    assert_eq!(
        search(&store, Classification::Restricted, owner("50%")).await,
        ["acme/internal.md"]
    );
    assert!(
        search(&store, Classification::Restricted, owner("5%"))
            .await
            .is_empty()
    );
    assert_eq!(
        search(&store, Classification::Restricted, owner("o'brien")).await,
        ["100%/odd.md"]
    );
    assert_eq!(
        search(&store, Classification::Restricted, prefix("100%/")).await,
        ["100%/odd.md"]
    );
    assert!(
        search(&store, Classification::Restricted, prefix("1_0"))
            .await
            .is_empty()
    );
    assert_eq!(
        store.chunk_count().await.expect("count"),
        before,
        "tables intact"
    );
}

#[tokio::test]
async fn a_new_identity_empties_the_index_and_removal_drops_chunks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = fixture(&dir).await;
    assert_eq!(store.chunk_count().await.expect("count"), 5);
    store
        .remove_document("acme/public.md".into())
        .await
        .expect("remove");
    assert_eq!(store.chunk_count().await.expect("count"), 4);
    assert!(
        !store
            .files()
            .await
            .expect("files")
            .contains_key("acme/public.md")
    );
    // Same identity: kept. Another one: wiped.
    assert!(!store.prepare("test-identity".into()).await.expect("same"));
    assert_eq!(store.chunk_count().await.expect("count"), 4);
    assert!(store.prepare("other-embedder".into()).await.expect("other"));
    assert_eq!(store.chunk_count().await.expect("count"), 0);
    assert!(store.files().await.expect("files").is_empty());
}

#[tokio::test]
async fn vectors_of_another_dimension_fail_the_search_instead_of_ranking_garbage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = fixture(&dir).await;
    let caller = CallerIdentity {
        tenant: "acme".into(),
        clearance: Classification::Restricted,
    };
    let short = HashEmbedder::new(16).embed_one("revenue");
    assert_eq!(HashEmbedder::new(16).dimension(), 16);
    let err = store
        .search(short, Scope::new(&caller, &SearchFilter::default()), 5)
        .await
        .expect_err("dimension mismatch");
    assert!(err.0.contains("cannot be compared"), "{err}");
}
