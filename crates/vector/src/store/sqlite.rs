//! The embedded store: one SQLite file, brute-force cosine inside the query.
//!
//! Vectors are little-endian `f32` BLOBs; `vec_dot(a, b)` is a deterministic SQL function,
//! so the scope filter and the ranking run in one statement (see [`Store`]). Every call runs
//! on tokio's blocking pool behind one connection; writes are one transaction per document,
//! so a search during indexing sees whole documents only.

use std::{
    collections::BTreeMap,
    path::Path,
    sync::{Arc, Mutex, PoisonError},
};

use rusqlite::{Connection, OptionalExtension, functions::FunctionFlags, params};

use super::{FileState, Hit, NewDocument, Store, StoreError};
use crate::{embed::BoxFuture, labels::Classification, labels::Labels, query::Scope};

const SCHEMA: &str = "
PRAGMA foreign_keys = ON;
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS documents (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    hash TEXT NOT NULL,
    title TEXT NOT NULL,
    tenant TEXT NOT NULL,
    level INTEGER NOT NULL,
    owner TEXT
) STRICT;
CREATE INDEX IF NOT EXISTS documents_scope ON documents (tenant, level);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL REFERENCES documents (path) ON DELETE CASCADE,
    heading TEXT,
    text TEXT NOT NULL,
    embedding BLOB NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS chunks_path ON chunks (path);
";

/// The scope is bound as parameters (?1 tenant, ?2 level, ?4 owner, ?5 path prefix): values
/// are data, never SQL, and the prefix is compared with `substr`, not `LIKE`, so `%` and `_`
/// in it are literal characters.
const SEARCH: &str = "
SELECT d.path, d.title, c.heading, c.text, d.tenant, d.level, d.owner,
       vec_dot(c.embedding, ?3) AS score
FROM chunks AS c JOIN documents AS d ON d.path = c.path
WHERE d.tenant = ?1 AND d.level <= ?2
  AND (?4 IS NULL OR d.owner = ?4)
  AND (?5 IS NULL OR substr(d.path, 1, length(?5)) = ?5)
ORDER BY score DESC, c.id ASC
LIMIT ?6
";

const IDENTITY_KEY: &str = "index_identity";

/// A [`Store`] in one SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the index at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path).map_err(|err| {
            StoreError(format!("cannot open the index {}: {err}", path.display()))
        })?;
        // WAL: readers are not blocked by the indexer's transactions at the file level.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql)?;
        conn.execute_batch(SCHEMA).map_err(sql)?;
        conn.create_scalar_function(
            "vec_dot",
            2,
            FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
            |ctx| {
                let a = ctx.get_raw(0).as_blob().map_err(user_error)?;
                let b = ctx.get_raw(1).as_blob().map_err(user_error)?;
                blob_dot(a, b).map(f64::from).map_err(user_error)
            },
        )
        .map_err(sql)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `work` on the blocking pool with the connection.
    fn blocking<T, F>(&self, work: F) -> BoxFuture<'static, Result<T, StoreError>>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                // A panic mid-transaction rolled it back; the connection is still usable.
                let mut conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
                work(&mut conn).map_err(sql)
            })
            .await
            .map_err(|err| StoreError(format!("index task failed: {err}")))?
        })
    }
}

impl Store for SqliteStore {
    fn prepare(&self, identity: String) -> BoxFuture<'_, Result<bool, StoreError>> {
        self.blocking(move |conn| {
            let tx = conn.transaction()?;
            let stored: Option<String> = tx
                .query_row(
                    "SELECT value FROM meta WHERE key = ?1",
                    [IDENTITY_KEY],
                    |row| row.get(0),
                )
                .optional()?;
            let changed = stored.as_deref() != Some(identity.as_str());
            if changed {
                tx.execute("DELETE FROM chunks", [])?;
                tx.execute("DELETE FROM documents", [])?;
                tx.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                    [IDENTITY_KEY, identity.as_str()],
                )?;
            }
            tx.commit()?;
            // A fresh index is not a reset worth reporting.
            Ok(changed && stored.is_some())
        })
    }

    fn files(&self) -> BoxFuture<'_, Result<BTreeMap<String, FileState>, StoreError>> {
        self.blocking(|conn| {
            let mut statement = conn.prepare("SELECT path, size, mtime_ns, hash FROM documents")?;
            let rows = statement.query_map([], |row| {
                let size: i64 = row.get(1)?;
                Ok((
                    row.get::<_, String>(0)?,
                    FileState {
                        size: u64::try_from(size).unwrap_or(0),
                        mtime_ns: row.get(2)?,
                        hash: row.get(3)?,
                    },
                ))
            })?;
            rows.collect()
        })
    }

    fn put_document(&self, doc: NewDocument) -> BoxFuture<'_, Result<(), StoreError>> {
        self.blocking(move |conn| {
            let tx = conn.transaction()?;
            tx.execute("DELETE FROM documents WHERE path = ?1", [&doc.path])?;
            tx.execute(
                "INSERT INTO documents (path, size, mtime_ns, hash, title, tenant, level, owner)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    doc.path,
                    i64::try_from(doc.state.size).unwrap_or(i64::MAX),
                    doc.state.mtime_ns,
                    doc.state.hash,
                    doc.title,
                    doc.labels.tenant,
                    doc.labels.classification.level(),
                    doc.labels.owner,
                ],
            )?;
            {
                let mut insert = tx.prepare(
                    "INSERT INTO chunks (path, heading, text, embedding) VALUES (?1, ?2, ?3, ?4)",
                )?;
                for chunk in &doc.chunks {
                    insert.execute(params![
                        doc.path,
                        chunk.heading,
                        chunk.text,
                        vector_blob(&chunk.embedding)
                    ])?;
                }
            }
            tx.commit()
        })
    }

    fn set_file_state(
        &self,
        path: String,
        state: FileState,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        self.blocking(move |conn| {
            conn.execute(
                "UPDATE documents SET size = ?2, mtime_ns = ?3, hash = ?4 WHERE path = ?1",
                params![
                    path,
                    i64::try_from(state.size).unwrap_or(i64::MAX),
                    state.mtime_ns,
                    state.hash
                ],
            )?;
            Ok(())
        })
    }

    fn remove_document(&self, path: String) -> BoxFuture<'_, Result<(), StoreError>> {
        self.blocking(move |conn| {
            // Chunks go with it (ON DELETE CASCADE).
            conn.execute("DELETE FROM documents WHERE path = ?1", [path])?;
            Ok(())
        })
    }

    fn search(
        &self,
        query: Vec<f32>,
        scope: Scope,
        k: usize,
    ) -> BoxFuture<'_, Result<Vec<Hit>, StoreError>> {
        self.blocking(move |conn| {
            let mut statement = conn.prepare_cached(SEARCH)?;
            let rows = statement.query_map(
                params![
                    scope.tenant(),
                    scope.max_classification().level(),
                    vector_blob(&query),
                    scope.owner(),
                    scope.path_prefix(),
                    i64::try_from(k).unwrap_or(i64::MAX),
                ],
                hit_of_row,
            )?;
            rows.collect()
        })
    }

    fn chunk_count(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.blocking(|conn| {
            let count: i64 = conn.query_row("SELECT count(*) FROM chunks", [], |row| row.get(0))?;
            Ok(u64::try_from(count).unwrap_or(0))
        })
    }
}

fn hit_of_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Hit> {
    let level: i64 = row.get(5)?;
    // A level we never write means a corrupted or foreign file: fail rather than guess.
    let classification = Classification::from_level(level)
        .ok_or_else(|| rusqlite::Error::IntegralValueOutOfRange(5, level))?;
    let score: f64 = row.get(7)?;
    #[allow(clippy::cast_possible_truncation)]
    let score = score as f32;
    Ok(Hit {
        path: row.get(0)?,
        title: row.get(1)?,
        heading: row.get(2)?,
        text: row.get(3)?,
        score,
        labels: Labels {
            tenant: row.get(4)?,
            classification,
            owner: row.get(6)?,
        },
    })
}

fn vector_blob(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The dot product of two `f32` LE blobs of equal length.
fn blob_dot(a: &[u8], b: &[u8]) -> Result<f32, String> {
    if a.len() != b.len() || !a.len().is_multiple_of(4) {
        return Err(format!(
            "vectors of {} and {} bytes cannot be compared",
            a.len(),
            b.len()
        ));
    }
    let floats = |bytes: &[u8]| -> Vec<f32> {
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    Ok(crate::embed::dot(&floats(a), &floats(b)))
}

fn user_error(err: impl ToString) -> rusqlite::Error {
    rusqlite::Error::UserFunctionError(err.to_string().into())
}

fn sql(err: rusqlite::Error) -> StoreError {
    StoreError(err.to_string())
}

#[cfg(test)]
mod tests;
