//! What every [`Store`] must do, written once over `&dyn Store` and run by each store's
//! tests (`sqlite/tests.rs`, `postgres/tests.rs`) on a real database: scope pushdown,
//! filter values as data, identity resets, dimension checks, document replacement and
//! file states.

use super::{FileState, NewChunk, NewDocument, Store};
use crate::{
    embed::{Embedder, HashEmbedder},
    identity::CallerIdentity,
    labels::{Classification, Labels},
    query::{Scope, SearchFilter},
};

pub(crate) const IDENTITY: &str = "test-identity";

pub(crate) fn labels(tenant: &str, classification: Classification, owner: Option<&str>) -> Labels {
    Labels {
        tenant: tenant.to_owned(),
        classification,
        owner: owner.map(str::to_owned),
    }
}

pub(crate) fn doc(path: &str, text: &str, labels: Labels) -> NewDocument {
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

/// Fills an empty store with the same text under several tenants, levels, owners and
/// tricky paths.
pub(crate) async fn fill(store: &dyn Store) {
    assert!(
        !store.prepare(IDENTITY.into()).await.expect("prepare"),
        "a fresh index is not reported as reset"
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
            "a\\b/back.md",
            text,
            labels("acme", Classification::Public, Some("back\\slash")),
        ),
        doc(
            "globex/public.md",
            text,
            labels("globex", Classification::Public, Some("ann")),
        ),
    ] {
        store.put_document(document).await.expect("put");
    }
}

/// Sorted paths `acme` at `clearance` finds for "revenue forecast" under `filter`.
pub(crate) async fn search(
    store: &dyn Store,
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

fn owner(value: &str) -> SearchFilter {
    SearchFilter {
        owner: Some(value.into()),
        ..SearchFilter::default()
    }
}

fn prefix(value: &str) -> SearchFilter {
    SearchFilter {
        path_prefix: Some(value.into()),
        ..SearchFilter::default()
    }
}

pub(crate) async fn scope_is_applied_in_the_query(store: &dyn Store) {
    fill(store).await;
    assert_eq!(
        search(store, Classification::Internal, SearchFilter::default()).await,
        [
            "100%/odd.md",
            "a\\b/back.md",
            "acme/internal.md",
            "acme/public.md"
        ]
    );
    assert_eq!(
        search(store, Classification::Restricted, SearchFilter::default()).await,
        [
            "100%/odd.md",
            "a\\b/back.md",
            "acme/internal.md",
            "acme/public.md",
            "acme/secret.md"
        ]
    );
    assert_eq!(
        search(store, Classification::Public, SearchFilter::default()).await,
        ["100%/odd.md", "a\\b/back.md", "acme/public.md"]
    );
    // globex/public.md has owner ann too, but another tenant.
    assert_eq!(
        search(store, Classification::Restricted, owner("ann")).await,
        ["acme/public.md"]
    );
    // A classification filter narrows, never widens.
    let at_most_internal = SearchFilter {
        classification: Some(Classification::Internal),
        ..SearchFilter::default()
    };
    assert!(
        !search(store, Classification::Restricted, at_most_internal)
            .await
            .contains(&"acme/secret.md".to_owned())
    );
    let wider = SearchFilter {
        classification: Some(Classification::Restricted),
        ..SearchFilter::default()
    };
    assert!(
        !search(store, Classification::Public, wider)
            .await
            .contains(&"acme/internal.md".to_owned())
    );
    assert_eq!(
        search(store, Classification::Restricted, prefix("acme/")).await,
        ["acme/internal.md", "acme/public.md", "acme/secret.md"]
    );
}

pub(crate) async fn filter_values_are_data_not_query_syntax(store: &dyn Store) {
    fill(store).await;
    let before = store.chunk_count().await.expect("count");
    for hostile in [
        "' OR '1'='1",
        "ann' OR tenant = 'globex",
        "'; DROP TABLE x; --",
        "'; DROP TABLE chunks; --",
        "\"; DROP TABLE documents; --",
        "') UNION SELECT * FROM documents --",
        "%",
        "_%",
        "_",
        "\\",
        "\\%",
        "%%",
        "$1",
    ] {
        let by_owner = search(store, Classification::Restricted, owner(hostile)).await;
        assert!(
            by_owner.is_empty(),
            "owner {hostile:?} matched {by_owner:?}"
        );
        let by_prefix = search(store, Classification::Restricted, prefix(hostile)).await;
        assert!(
            by_prefix.is_empty(),
            "prefix {hostile:?} matched {by_prefix:?}"
        );
    }
    // Wildcard and escape characters are literal: "50%" is an owner, "100%" a folder,
    // "a\b" a folder.
    assert_eq!(
        search(store, Classification::Restricted, owner("50%")).await,
        ["acme/internal.md"]
    );
    for no_match in ["5%", "5_%", "50_"] {
        assert!(
            search(store, Classification::Restricted, owner(no_match))
                .await
                .is_empty(),
            "owner {no_match:?}"
        );
    }
    assert_eq!(
        search(store, Classification::Restricted, owner("o'brien")).await,
        ["100%/odd.md"]
    );
    assert_eq!(
        search(store, Classification::Restricted, owner("back\\slash")).await,
        ["a\\b/back.md"]
    );
    assert_eq!(
        search(store, Classification::Restricted, prefix("100%/")).await,
        ["100%/odd.md"]
    );
    assert_eq!(
        search(store, Classification::Restricted, prefix("100%")).await,
        ["100%/odd.md"]
    );
    assert_eq!(
        search(store, Classification::Restricted, prefix("a\\")).await,
        ["a\\b/back.md"]
    );
    assert_eq!(
        search(store, Classification::Restricted, prefix("a\\b/back.md")).await,
        ["a\\b/back.md"]
    );
    for no_match in [
        "1_0",
        "10%/",
        "100\\%",
        "a_b",
        "a\\\\",
        "a\\_",
        "_cme",
        "acme/public.md/",
        "ACME/",
    ] {
        assert!(
            search(store, Classification::Restricted, prefix(no_match))
                .await
                .is_empty(),
            "prefix {no_match:?}"
        );
    }
    assert_eq!(
        store.chunk_count().await.expect("count"),
        before,
        "tables intact"
    );
    assert_eq!(
        store.files().await.expect("files").len(),
        6,
        "tables intact"
    );
}

pub(crate) async fn a_new_identity_empties_the_index_and_removal_drops_chunks(store: &dyn Store) {
    fill(store).await;
    assert_eq!(store.chunk_count().await.expect("count"), 6);
    store
        .remove_document("acme/public.md".into())
        .await
        .expect("remove");
    store
        .remove_document("never/stored.md".into())
        .await
        .expect("removing an absent document is not an error");
    assert_eq!(store.chunk_count().await.expect("count"), 5);
    assert!(
        !store
            .files()
            .await
            .expect("files")
            .contains_key("acme/public.md")
    );
    assert!(
        !search(store, Classification::Restricted, SearchFilter::default())
            .await
            .contains(&"acme/public.md".to_owned())
    );
    // Same identity: kept. Another one: wiped.
    assert!(!store.prepare(IDENTITY.into()).await.expect("same"));
    assert_eq!(store.chunk_count().await.expect("count"), 5);
    assert!(store.prepare("other-embedder".into()).await.expect("other"));
    assert_eq!(store.chunk_count().await.expect("count"), 0);
    assert!(store.files().await.expect("files").is_empty());
    assert!(
        search(store, Classification::Restricted, SearchFilter::default())
            .await
            .is_empty()
    );
    // The wiped index takes vectors of the new embedder, whatever their dimension.
    let mut small = doc(
        "acme/small.md",
        "revenue",
        labels("acme", Classification::Public, None),
    );
    small.chunks[0].embedding = HashEmbedder::new(16).embed_one("revenue");
    store.put_document(small).await.expect("put 16-dim");
    let caller = CallerIdentity {
        tenant: "acme".into(),
        clearance: Classification::Public,
    };
    let hits = store
        .search(
            HashEmbedder::new(16).embed_one("revenue"),
            Scope::new(&caller, &SearchFilter::default()),
            5,
        )
        .await
        .expect("search 16-dim");
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].path, "acme/small.md");
}

pub(crate) async fn vectors_of_another_dimension_fail_the_search(store: &dyn Store) {
    fill(store).await;
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

pub(crate) async fn put_replaces_a_document_and_file_states_round_trip(store: &dyn Store) {
    assert!(!store.prepare(IDENTITY.into()).await.expect("prepare"));
    let mut first = doc(
        "notes/plan.md",
        "zebra migration schedule",
        labels("acme", Classification::Internal, Some("ops")),
    );
    first.chunks.push(NewChunk {
        heading: Some("Second".into()),
        text: "giraffe feeding times".into(),
        embedding: HashEmbedder::default().embed_one("giraffe feeding times"),
    });
    store.put_document(first).await.expect("put");
    assert_eq!(store.chunk_count().await.expect("count"), 2);
    let acme = CallerIdentity {
        tenant: "acme".into(),
        clearance: Classification::Restricted,
    };
    let globex = CallerIdentity {
        tenant: "globex".into(),
        clearance: Classification::Restricted,
    };
    let ask = |caller: &CallerIdentity, text: &str| {
        let scope = Scope::new(caller, &SearchFilter::default());
        let query = HashEmbedder::default().embed_one(text);
        async move { store.search(query, scope, 10).await.expect("search") }
    };
    let hits = ask(&acme, "giraffe feeding").await;
    assert_eq!(hits.len(), 2);
    assert_eq!(hits[0].text, "giraffe feeding times");
    assert_eq!(hits[0].heading.as_deref(), Some("Second"));
    assert_eq!(hits[0].title, "notes/plan.md");
    assert_eq!(
        hits[0].labels,
        labels("acme", Classification::Internal, Some("ops"))
    );
    assert!(hits[1].heading.is_none());

    // A new version replaces every chunk and label of the old one.
    let mut second = doc(
        "notes/plan.md",
        "penguin colony census",
        labels("globex", Classification::Public, None),
    );
    second.state = FileState {
        size: 99,
        mtime_ns: 42,
        hash: "new-hash".into(),
    };
    second.title = "Census".into();
    store.put_document(second).await.expect("replace");
    assert_eq!(store.chunk_count().await.expect("count"), 1);
    assert!(
        ask(&acme, "giraffe feeding").await.is_empty(),
        "the old labels and text are gone"
    );
    let hits = ask(&globex, "penguin colony census").await;
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].title, "Census");
    assert_eq!(
        hits[0].labels,
        labels("globex", Classification::Public, None)
    );
    assert!(hits[0].score > 0.99, "{}", hits[0].score);

    let files = store.files().await.expect("files");
    assert_eq!(files.len(), 1);
    assert_eq!(
        files["notes/plan.md"],
        FileState {
            size: 99,
            mtime_ns: 42,
            hash: "new-hash".into()
        }
    );
    // A touched file keeps its chunks and gets its new size and mtime.
    let touched = FileState {
        size: 100,
        mtime_ns: -5,
        hash: "new-hash".into(),
    };
    store
        .set_file_state("notes/plan.md".into(), touched.clone())
        .await
        .expect("set state");
    store
        .set_file_state("absent.md".into(), touched.clone())
        .await
        .expect("absent: nothing to update");
    let files = store.files().await.expect("files");
    assert_eq!(files.len(), 1, "no document is created by a file state");
    assert_eq!(files["notes/plan.md"], touched);
    assert_eq!(store.chunk_count().await.expect("count"), 1);

    // A document without chunks is remembered (so it is not re-read) but never found.
    let mut empty = doc(
        "empty.md",
        "",
        labels("globex", Classification::Public, None),
    );
    empty.chunks.clear();
    store.put_document(empty).await.expect("put empty");
    assert!(store.files().await.expect("files").contains_key("empty.md"));
    assert_eq!(store.chunk_count().await.expect("count"), 1);
}

/// Scores are cosine similarities, best first, and `k` bounds the answer.
pub(crate) async fn ranking_is_by_cosine_similarity_best_first(store: &dyn Store) {
    assert!(!store.prepare(IDENTITY.into()).await.expect("prepare"));
    let texts = [
        "database password rotation for operators",
        "rotating passwords every ninety days",
        "the cafeteria serves vegetarian lunch on fridays",
        "office plants need watering",
    ];
    for (i, text) in texts.iter().enumerate() {
        store
            .put_document(doc(
                &format!("doc{i}.md"),
                text,
                labels("acme", Classification::Public, None),
            ))
            .await
            .expect("put");
    }
    let caller = CallerIdentity {
        tenant: "acme".into(),
        clearance: Classification::Public,
    };
    let embedder = HashEmbedder::default();
    let query = embedder.embed_one(texts[0]);
    let hits = store
        .search(
            query.clone(),
            Scope::new(&caller, &SearchFilter::default()),
            10,
        )
        .await
        .expect("search");
    assert_eq!(hits.len(), 4);
    assert_eq!(hits[0].path, "doc0.md");
    assert!((hits[0].score - 1.0).abs() < 1e-4, "{}", hits[0].score);
    assert_eq!(hits[1].path, "doc1.md");
    for pair in hits.windows(2) {
        assert!(pair[0].score >= pair[1].score, "{hits:?}");
    }
    for hit in &hits {
        let index: usize = hit.path[3..4].parse().expect("index");
        let expected = crate::embed::dot(&query, &embedder.embed_one(texts[index]));
        assert!(
            (hit.score - expected).abs() < 1e-4,
            "{}: {} vs {expected}",
            hit.path,
            hit.score
        );
    }
    let two = store
        .search(query, Scope::new(&caller, &SearchFilter::default()), 2)
        .await
        .expect("search");
    assert_eq!(
        two.iter().map(|h| h.path.as_str()).collect::<Vec<_>>(),
        ["doc0.md", "doc1.md"]
    );
}

/// Many foreign or too-secret chunks closer to the query than the caller's own: the caller
/// still gets its own `k` (the filter runs before the ranking and its `LIMIT`).
pub(crate) async fn the_scope_filters_before_k_is_applied(store: &dyn Store) {
    assert!(!store.prepare(IDENTITY.into()).await.expect("prepare"));
    let exact = "merger negotiation timeline with initech";
    for i in 0..30 {
        store
            .put_document(doc(
                &format!("globex/m{i}.md"),
                exact,
                labels("globex", Classification::Public, None),
            ))
            .await
            .expect("put");
    }
    for i in 0..10 {
        store
            .put_document(doc(
                &format!("acme/secret{i}.md"),
                exact,
                labels("acme", Classification::Restricted, None),
            ))
            .await
            .expect("put");
    }
    for (i, text) in [
        "merger rumours",
        "negotiation skills workshop",
        "lunch menu",
    ]
    .iter()
    .enumerate()
    {
        store
            .put_document(doc(
                &format!("acme/own{i}.md"),
                text,
                labels("acme", Classification::Internal, None),
            ))
            .await
            .expect("put");
    }
    let caller = CallerIdentity {
        tenant: "acme".into(),
        clearance: Classification::Internal,
    };
    let query = HashEmbedder::default().embed_one(exact);
    for k in [1, 3, 5] {
        let hits = store
            .search(
                query.clone(),
                Scope::new(&caller, &SearchFilter::default()),
                k,
            )
            .await
            .expect("search");
        assert_eq!(hits.len(), k.min(3), "k={k}: {hits:?}");
        assert!(
            hits.iter().all(|h| h.path.starts_with("acme/own")),
            "k={k}: {hits:?}"
        );
    }
}
