//! The SQLite store on real files: the shared store behaviour (`store::behaviour`), one
//! fresh file per test.

use super::*;
use crate::store::behaviour;

fn open() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("index.sqlite3")).expect("open");
    (dir, store)
}

#[tokio::test]
async fn scope_is_applied_in_the_query() {
    let (_dir, store) = open();
    behaviour::scope_is_applied_in_the_query(&store).await;
}

#[tokio::test]
async fn filter_values_are_data_not_query_syntax() {
    let (_dir, store) = open();
    behaviour::filter_values_are_data_not_query_syntax(&store).await;
}

#[tokio::test]
async fn a_new_identity_empties_the_index_and_removal_drops_chunks() {
    let (_dir, store) = open();
    behaviour::a_new_identity_empties_the_index_and_removal_drops_chunks(&store).await;
}

#[tokio::test]
async fn vectors_of_another_dimension_fail_the_search_instead_of_ranking_garbage() {
    let (_dir, store) = open();
    behaviour::vectors_of_another_dimension_fail_the_search(&store).await;
}

#[tokio::test]
async fn put_replaces_a_document_and_file_states_round_trip() {
    let (_dir, store) = open();
    behaviour::put_replaces_a_document_and_file_states_round_trip(&store).await;
}

#[tokio::test]
async fn ranking_is_by_cosine_similarity_best_first() {
    let (_dir, store) = open();
    behaviour::ranking_is_by_cosine_similarity_best_first(&store).await;
}

#[tokio::test]
async fn the_scope_filters_before_k_is_applied() {
    let (_dir, store) = open();
    behaviour::the_scope_filters_before_k_is_applied(&store).await;
}

#[test]
fn blob_dot_refuses_blobs_of_different_sizes() {
    assert_eq!(
        blob_dot(&vector_blob(&[1.0, 2.0]), &vector_blob(&[3.0, 4.0])),
        Ok(11.0)
    );
    let err = blob_dot(&vector_blob(&[1.0]), &vector_blob(&[1.0, 2.0])).expect_err("sizes");
    assert!(err.contains("cannot be compared"), "{err}");
}
