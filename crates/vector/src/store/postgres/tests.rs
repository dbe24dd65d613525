//! The PostgreSQL store on the real server (see `testdb`): the shared store behaviour,
//! then what is specific to PostgreSQL.

use super::*;
use crate::store::{behaviour, testdb::TestDb};

use std::time::Duration;

use crate::{embed::HashEmbedder, identity::CallerIdentity, query::SearchFilter};

#[tokio::test]
async fn scope_is_applied_in_the_query() {
    let db = TestDb::new();
    behaviour::scope_is_applied_in_the_query(&db.open().await).await;
}

#[tokio::test]
async fn filter_values_are_data_not_query_syntax() {
    let db = TestDb::new();
    let store = db.open().await;
    behaviour::filter_values_are_data_not_query_syntax(&store).await;
    // Every table is still there and still holds the fixture.
    let client = db.client().await;
    for suffix in ["meta", "documents", "chunks"] {
        let row = client
            .query_one(&format!("SELECT count(*) FROM {}", db.table(suffix)), &[])
            .await
            .expect("table intact");
        assert!(row.get::<_, i64>(0) > 0, "{suffix}");
    }
}

#[tokio::test]
async fn a_new_identity_empties_the_index_and_removal_drops_chunks() {
    let db = TestDb::new();
    behaviour::a_new_identity_empties_the_index_and_removal_drops_chunks(&db.open().await).await;
}

#[tokio::test]
async fn vectors_of_another_dimension_fail_the_search() {
    let db = TestDb::new();
    behaviour::vectors_of_another_dimension_fail_the_search(&db.open().await).await;
}

#[tokio::test]
async fn put_replaces_a_document_and_file_states_round_trip() {
    let db = TestDb::new();
    behaviour::put_replaces_a_document_and_file_states_round_trip(&db.open().await).await;
}

#[tokio::test]
async fn ranking_is_by_cosine_similarity_best_first() {
    let db = TestDb::new();
    behaviour::ranking_is_by_cosine_similarity_best_first(&db.open().await).await;
}

#[tokio::test]
async fn the_scope_filters_before_k_is_applied() {
    let db = TestDb::new();
    behaviour::the_scope_filters_before_k_is_applied(&db.open().await).await;
}

#[tokio::test]
async fn vectors_of_another_dimension_or_not_finite_are_not_stored() {
    let db = TestDb::new();
    let store = db.open().await;
    behaviour::fill(&store).await;
    let mut short = behaviour::doc(
        "acme/short.md",
        "revenue",
        behaviour::labels("acme", Classification::Public, None),
    );
    short.chunks[0].embedding = HashEmbedder::new(16).embed_one("revenue");
    let err = store.put_document(short).await.expect_err("16 into 512");
    assert!(
        err.0.contains("16 dimensions") && err.0.contains("512"),
        "{err}"
    );
    let mut nan = behaviour::doc(
        "acme/nan.md",
        "revenue",
        behaviour::labels("acme", Classification::Public, None),
    );
    nan.chunks[0].embedding[3] = f32::NAN;
    let err = store.put_document(nan).await.expect_err("NaN");
    assert!(err.0.contains("non-finite"), "{err}");
    assert!(
        !store
            .files()
            .await
            .expect("files")
            .contains_key("acme/nan.md")
    );
    assert_eq!(store.chunk_count().await.expect("count"), 6);
}

#[tokio::test]
async fn the_schema_has_a_typed_column_an_hnsw_index_and_the_identity() {
    let db = TestDb::new();
    let store = db.open().await;
    let client = db.client().await;
    let column_type = || async {
        client
            .query_one(
                "SELECT format_type(atttypid, atttypmod) FROM pg_attribute
                 WHERE attrelid = $1::text::regclass AND attname = 'embedding'",
                &[&db.table("chunks")],
            )
            .await
            .expect("column")
            .get::<_, String>(0)
    };
    let hnsw = || async {
        client
            .query_opt(
                "SELECT indexdef FROM pg_indexes WHERE indexname = $1",
                &[&format!("{}_chunks_hnsw", db.prefix)],
            )
            .await
            .expect("pg_indexes")
            .map(|row| row.get::<_, String>(0))
    };
    assert_eq!(
        column_type().await,
        "vector",
        "untyped until the first document"
    );
    assert_eq!(hnsw().await, None);
    behaviour::fill(&store).await;
    assert_eq!(column_type().await, "vector(512)");
    let definition = hnsw().await.expect("an HNSW index");
    assert!(
        definition.contains("USING hnsw (embedding vector_cosine_ops)"),
        "{definition}"
    );
    let identity: String = client
        .query_one(
            &format!(
                "SELECT value FROM {} WHERE key = 'index_identity'",
                db.table("meta")
            ),
            &[],
        )
        .await
        .expect("identity")
        .get(0);
    assert_eq!(identity, behaviour::IDENTITY);
    // A new identity resets the column, so another dimension fits.
    assert!(store.prepare("other".into()).await.expect("prepare"));
    assert_eq!(column_type().await, "vector");
    assert_eq!(hnsw().await, None);
}

#[tokio::test]
async fn indexes_with_other_prefixes_are_independent_and_data_persists() {
    let one = TestDb::new();
    let two = TestDb::new();
    let first = one.open().await;
    behaviour::fill(&first).await;
    let second = two.open().await;
    assert!(
        !second
            .prepare("another-embedder".into())
            .await
            .expect("prepare")
    );
    assert_eq!(second.chunk_count().await.expect("count"), 0);
    assert!(second.files().await.expect("files").is_empty());
    assert_eq!(first.chunk_count().await.expect("count"), 6, "untouched");
    // Re-opening the same tables finds the same index and identity.
    drop(first);
    let reopened = one.open().await;
    assert!(
        !reopened
            .prepare(behaviour::IDENTITY.into())
            .await
            .expect("same")
    );
    assert_eq!(reopened.chunk_count().await.expect("count"), 6);
    assert_eq!(reopened.files().await.expect("files").len(), 6);
}

/// With sequential scans off the planner must use the HNSW index; 40 foreign chunks closer
/// to the query than the caller's own would fill a plain scan's candidate list
/// (`hnsw.ef_search` = 40): the iterative scan keeps going until `k` rows pass the filter.
#[tokio::test]
async fn a_filtered_hnsw_scan_still_returns_k_rows() {
    let db = TestDb::new();
    let mut config = db.config();
    config.options("-c enable_seqscan=off -c enable_bitmapscan=off");
    let store = db.open_with(config).await;
    assert!(store.iterative_scan, "this machine has pgvector 0.8");
    assert!(!store.prepare("hnsw".into()).await.expect("prepare"));
    let exact = "merger negotiation timeline with initech";
    for i in 0..200 {
        store
            .put_document(behaviour::doc(
                &format!("globex/m{i:03}.md"),
                &format!("{exact} {i}"),
                behaviour::labels("globex", Classification::Public, None),
            ))
            .await
            .expect("put");
    }
    for i in 0..5 {
        store
            .put_document(behaviour::doc(
                &format!("acme/own{i}.md"),
                &format!("merger rumours {i}"),
                behaviour::labels("acme", Classification::Public, None),
            ))
            .await
            .expect("put");
    }
    // The scope index would let the planner avoid HNSW: without it, HNSW is the only index.
    let client = db.client().await;
    client
        .batch_execute(&format!(
            "DROP INDEX {}; ANALYZE {}",
            db.table("chunks_scope"),
            db.table("chunks")
        ))
        .await
        .expect("drop scope index");
    let caller = CallerIdentity {
        tenant: "acme".into(),
        clearance: Classification::Public,
    };
    let scope = Scope::new(&caller, &SearchFilter::default());
    let query = HashEmbedder::default().embed_one(exact);
    let hits = store
        .search(query.clone(), scope.clone(), 5)
        .await
        .expect("search");
    assert_eq!(hits.len(), 5, "{hits:?}");
    assert!(hits.iter().all(|h| h.path.starts_with("acme/")), "{hits:?}");
    for pair in hits.windows(2) {
        assert!(pair[0].score >= pair[1].score, "{hits:?}");
    }
    // The statement the store ran is served by the HNSW index under the same settings.
    client
        .batch_execute(
            "SET enable_seqscan = off; SET enable_bitmapscan = off;
             SET hnsw.iterative_scan = relaxed_order",
        )
        .await
        .expect("settings");
    let plan: Vec<String> = client
        .query(
            &format!("EXPLAIN {}", search_sql(&store.names, &scope)),
            &[&"acme", &0_i32, &vector_literal(&query), &5_i64],
        )
        .await
        .expect("explain")
        .iter()
        .map(|row| row.get(0))
        .collect();
    let plan = plan.join("\n");
    assert!(plan.contains("chunks_hnsw"), "{plan}");
    // And without the iterative scan the same plan loses the caller's rows: the test above
    // is not passing by luck.
    client
        .batch_execute("SET hnsw.iterative_scan = off")
        .await
        .expect("off");
    let rows = client
        .query(
            &search_sql(&store.names, &scope),
            &[&"acme", &0_i32, &vector_literal(&query), &5_i64],
        )
        .await
        .expect("plain scan");
    assert!(rows.len() < 5, "{} rows", rows.len());
}

#[tokio::test]
async fn vectors_travel_exactly() {
    let db = TestDb::new();
    let _store = db.open().await; // pgvector enabled
    let client = db.client().await;
    let vector: Vec<f32> = vec![
        0.1,
        -0.333_333_34,
        1e-30,
        -7.5e12,
        f32::MIN_POSITIVE,
        f32::MAX,
        0.0,
        123_456.79,
    ];
    let text: String = client
        .query_one("SELECT $1::text::vector::text", &[&vector_literal(&vector)])
        .await
        .expect("round trip")
        .get(0);
    let back: Vec<f32> = text
        .trim_matches(['[', ']'])
        .split(',')
        .map(|x| x.parse().expect("float"))
        .collect();
    assert_eq!(
        back.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        vector.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn the_connection_is_reopened_after_the_server_closes_it() {
    let db = TestDb::new();
    let mut config = db.config();
    let name = format!("mmv-{}", db.prefix);
    config.application_name(&name);
    let store = db.open_with(config).await;
    behaviour::fill(&store).await;
    let client = db.client().await;
    let killed: i64 = client
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE application_name = $1",
            &[&name],
        )
        .await
        .expect("terminate")
        .get(0);
    assert_eq!(killed, 1);
    // Let the connection task see the close.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(store.chunk_count().await.expect("reconnected"), 6);
}

#[tokio::test]
async fn an_unreachable_server_is_named_without_the_password() {
    let mut config: Config = "postgres://someone@127.0.0.1:1/db".parse().expect("config");
    config.password("s3cret-pw");
    config.connect_timeout(Duration::from_secs(2));
    let err = PostgresStore::open(config, &TablePrefix::default())
        .await
        .expect_err("nothing listens on port 1");
    assert!(
        err.0.contains("cannot connect to PostgreSQL")
            && err
                .0
                .contains("host=127.0.0.1 port=1 user=someone dbname=db"),
        "{err}"
    );
    assert!(!err.0.contains("s3cret"), "{err}");
}

/// A role that may not create extensions, in a database without pgvector: the error tells
/// the operator what to run, as whom.
#[tokio::test]
async fn without_pgvector_and_rights_the_error_says_to_create_the_extension_as_superuser() {
    let db = TestDb::new();
    let admin = db.client().await;
    let name = format!("{}_noext", db.prefix);
    // One statement per call: CREATE DATABASE cannot run in a transaction block.
    for sql in [
        format!("CREATE ROLE \"{name}\" LOGIN"),
        format!("CREATE DATABASE \"{name}\" OWNER postgres"),
    ] {
        admin.batch_execute(&sql).await.expect("role and database");
    }
    let mut config = db.config();
    config.user(&name).dbname(&name);
    let result = PostgresStore::open(config, &db.prefix).await;
    for sql in [
        format!("DROP DATABASE \"{name}\" WITH (FORCE)"),
        format!("DROP ROLE \"{name}\""),
    ] {
        admin.batch_execute(&sql).await.expect("cleanup");
    }
    let err = result.expect_err("no rights to create the extension");
    assert!(
        err.0.contains("CREATE EXTENSION vector") && err.0.contains("superuser"),
        "{err}"
    );
    assert!(err.0.contains(&name), "names the database: {err}");
}

#[test]
fn table_prefixes_are_identifiers() {
    for good in ["micromcp_vector", "_x", "a", "a1_b2", &"a".repeat(41)] {
        assert_eq!(good.parse::<TablePrefix>().expect(good).as_str(), good);
    }
    for bad in [
        "",
        "1abc",
        "Abc",
        "a-b",
        "a b",
        "a\"b",
        "a;drop",
        "é",
        &"a".repeat(42),
    ] {
        let err = bad.parse::<TablePrefix>().expect_err(bad);
        assert!(err.contains("lowercase"), "{err}");
    }
    // The longest name stays within PostgreSQL's 63 bytes.
    let longest = Names::new(&"a".repeat(41).parse().expect("prefix"));
    for name in [
        &longest.meta,
        &longest.documents,
        &longest.chunks,
        &longest.scope_index,
        &longest.path_index,
        &longest.hnsw_index,
    ] {
        assert!(name.len() - 2 <= 63, "{name}");
    }
}

#[test]
fn path_prefixes_become_literal_like_patterns() {
    assert_eq!(like_prefix("acme/"), "acme/%");
    assert_eq!(like_prefix("100%_\\x"), "100\\%\\_\\\\x%");
    assert_eq!(like_prefix("o'brien"), "o'brien%");
}

#[test]
fn pgvector_versions_are_read() {
    assert_eq!(parse_version("0.8.0"), (0, 8));
    assert_eq!(parse_version("0.7.4"), (0, 7));
    assert_eq!(parse_version("1.0"), (1, 0));
    assert_eq!(parse_version("garbage"), (0, 0));
}

/// The labelled corpus of `tests/data/`, indexed by the real indexer into PostgreSQL: every
/// document's text, asked verbatim by every other tenant (and an unknown one) at the
/// highest clearance, never returns a document of another tenant; its own tenant finds it
/// first, so the isolation is the filter at work, not a ranking that happens to miss.
#[tokio::test]
async fn no_tenant_ever_sees_another_tenants_corpus_document_even_verbatim() {
    use crate::index::{IndexSettings, Progress, index_folder};

    let db = TestDb::new();
    let store = db.open().await;
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/corpus");
    let settings = IndexSettings {
        docs: corpus.clone(),
        default_tenant: None,
        default_classification: Classification::Restricted,
        chunk: crate::chunk::ChunkOptions::default(),
        max_file_bytes: 1 << 20,
    };
    let report = index_folder(
        &settings,
        &store,
        &HashEmbedder::default(),
        &Progress::default(),
    )
    .await
    .expect("index");
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    assert!(report.embedded.len() >= 20, "{}", report.embedded.len());
    let top = |tenant: &str, text: &str, k: usize| {
        let caller = CallerIdentity {
            tenant: tenant.to_owned(),
            clearance: Classification::Restricted,
        };
        let query = HashEmbedder::default().embed_one(text);
        let store = &store;
        async move {
            store
                .search(query, Scope::new(&caller, &SearchFilter::default()), k)
                .await
                .expect("search")
                .into_iter()
                .map(|hit| hit.path)
                .collect::<Vec<_>>()
        }
    };
    let mut checked = 0;
    for owner in ["acme", "globex", "initech"] {
        for entry in std::fs::read_dir(corpus.join(owner)).expect("read_dir") {
            let path = entry.expect("entry").path();
            let text = std::fs::read_to_string(&path).expect("read");
            let rel = format!(
                "{owner}/{}",
                path.file_name().expect("name").to_string_lossy()
            );
            assert_eq!(top(owner, &text, 1).await, [rel.as_str()], "own tenant");
            for caller in ["acme", "globex", "initech", "nobody"] {
                if caller == owner {
                    continue;
                }
                let found = top(caller, &text, 50).await;
                assert!(
                    found.iter().all(|p| p.starts_with(&format!("{caller}/"))),
                    "{caller} asked {rel} and saw {found:?}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 60, "{checked}");
}
