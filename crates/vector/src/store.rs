//! Where chunks and their vectors live, behind the [`Store`] trait.
//!
//! The trait is shaped for a database that filters before it ranks: [`Store::search`] gets
//! the caller's [`Scope`] and must apply it inside the same query that orders by similarity
//! (SQLite: `WHERE tenant = ?1 AND level <= ?2 … ORDER BY score DESC LIMIT ?k`; a pgvector
//! store: `WHERE tenant = $1 AND level <= $2 … ORDER BY embedding <=> $3 LIMIT $k`). A store
//! never ranks first and filters after, which would leak through counts and timing and
//! could return fewer than `k` visible hits.
//!
//! Two stores: [`SqliteStore`] (embedded, brute force) and [`PostgresStore`] (pgvector, HNSW
//! index, iterative scans). Both pass the same behaviour tests (`behaviour`, run by each
//! store's tests against a real database).

mod postgres;
mod sqlite;

#[cfg(test)]
pub(crate) mod behaviour;

use std::collections::BTreeMap;

#[cfg(test)]
pub(crate) use postgres::testdb;
pub use postgres::{
    DEFAULT_TABLE_PREFIX, PostgresStore, TablePrefix, describe as describe_postgres,
};
pub use sqlite::SqliteStore;

use crate::{embed::BoxFuture, labels::Labels, query::Scope};

/// What the index remembers about a file to decide whether to re-embed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileState {
    pub size: u64,
    /// Modification time in nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// SHA-256 of the content, hex.
    pub hash: String,
}

/// One chunk ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewChunk {
    pub heading: Option<String>,
    pub text: String,
    pub embedding: Vec<f32>,
}

/// A document ready to store, replacing any previous version of the same path.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDocument {
    /// Relative to the docs folder, `/`-separated.
    pub path: String,
    pub state: FileState,
    pub title: String,
    pub labels: Labels,
    pub chunks: Vec<NewChunk>,
}

/// One search result.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub path: String,
    pub title: String,
    pub heading: Option<String>,
    pub text: String,
    /// Cosine similarity with the query, -1 to 1.
    pub score: f32,
    pub labels: Labels,
}

/// A storage failure (I/O, corruption, a vector of the wrong size).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("index store: {0}")]
pub struct StoreError(pub String);

/// Persistent chunks and vectors, searchable within a [`Scope`].
pub trait Store: Send + Sync {
    /// Makes the store hold vectors of `identity` (embedder + labelling settings): when it
    /// held another one, everything is deleted and `true` returned.
    fn prepare(&self, identity: String) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// Every stored document's path and file state.
    fn files(&self) -> BoxFuture<'_, Result<BTreeMap<String, FileState>, StoreError>>;

    /// Stores `doc` and its chunks atomically, replacing the previous version.
    fn put_document(&self, doc: NewDocument) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Records a new size/mtime for content that did not change.
    fn set_file_state(
        &self,
        path: String,
        state: FileState,
    ) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Deletes a document and its chunks (nothing if absent).
    fn remove_document(&self, path: String) -> BoxFuture<'_, Result<(), StoreError>>;

    /// The `k` chunks most similar to `query` among those `scope` allows, best first. The
    /// scope is applied before ranking.
    fn search(
        &self,
        query: Vec<f32>,
        scope: Scope,
        k: usize,
    ) -> BoxFuture<'_, Result<Vec<Hit>, StoreError>>;

    /// How many chunks are stored, for progress and tests.
    fn chunk_count(&self) -> BoxFuture<'_, Result<u64, StoreError>>;
}
