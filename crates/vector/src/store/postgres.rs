//! The server store: PostgreSQL with the pgvector extension (`--postgres`).
//!
//! Tables are named `{prefix}_meta`, `{prefix}_documents` and `{prefix}_chunks`, so several
//! indexes share one database (`--postgres-table`, validated as `[a-z_][a-z0-9_]{0,40}`).
//! Chunks carry their document's scope labels (`tenant`, `level`, `owner`), so the search is
//! one statement on one table: `WHERE tenant = $1 AND level <= $2 [AND owner = $n]
//! [AND path LIKE $n ESCAPE '\'] ORDER BY embedding <=> $q LIMIT $k`, every value bound as a
//! parameter (the path prefix with `\`, `%` and `_` escaped). Score = 1 − cosine distance.
//!
//! The embedding column is `vector` until the first document fixes its dimension
//! (`vector(N)`, recorded in `{prefix}_meta`); then an HNSW index (`vector_cosine_ops`) is
//! built, for N ≤ 2000 (pgvector's limit; larger vectors are scanned exactly). A filtered
//! HNSW scan can return fewer than `k` rows; with pgvector ≥ 0.8 every search sets
//! `hnsw.iterative_scan = relaxed_order` for its transaction (results re-sorted by distance)
//! and `hnsw.ef_search` to at least `k`.
//!
//! One connection, serialised by a mutex (as with SQLite), re-opened when it has closed.
//! No TLS yet (`NoTls`): use a local socket, a loopback address or a trusted network.

use std::{collections::BTreeMap, fmt, time::Duration};

use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};
use tokio_postgres::{Client, Config, NoTls, error::SqlState, types::ToSql};

use super::{FileState, Hit, NewDocument, Store, StoreError};
use crate::{
    embed::BoxFuture,
    index::root_of_identity,
    labels::{Classification, Labels},
    query::Scope,
};

/// Default `--postgres-table`.
pub const DEFAULT_TABLE_PREFIX: &str = "micromcp_vector";
/// Longest table prefix: with the longest suffix (`_documents_scope`) it stays within
/// PostgreSQL's 63-byte identifiers.
const MAX_PREFIX_LEN: usize = 41;
/// pgvector indexes (HNSW) `vector` columns of at most this many dimensions.
const MAX_HNSW_DIMENSION: usize = 2000;
/// pgvector's largest `vector`.
const MAX_DIMENSION: usize = 16_000;
/// Serialises schema changes of every micromcp vector index in the database (an arbitrary
/// constant: "mmvector").
const SCHEMA_LOCK: i64 = 0x6d6d_7665_6374_6f72;
const IDENTITY_KEY: &str = "index_identity";
const DIMENSION_KEY: &str = "dimension";

/// A validated table prefix: `[a-z_][a-z0-9_]{0,40}`. Only such names are ever formatted
/// into SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePrefix(String);

impl TablePrefix {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for TablePrefix {
    fn default() -> Self {
        Self(DEFAULT_TABLE_PREFIX.to_owned())
    }
}

impl std::str::FromStr for TablePrefix {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        let mut chars = name.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
        let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if first_ok && rest_ok && name.len() <= MAX_PREFIX_LEN {
            Ok(Self(name.to_owned()))
        } else {
            Err(format!(
                "a table name is 1 to {MAX_PREFIX_LEN} characters: a lowercase letter or `_`, \
                 then lowercase letters, digits or `_`"
            ))
        }
    }
}

impl fmt::Display for TablePrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Quoted table and index names of one prefix.
#[derive(Debug, Clone)]
struct Names {
    /// The unquoted prefix, for messages.
    prefix: String,
    meta: String,
    documents: String,
    chunks: String,
    scope_index: String,
    path_index: String,
    hnsw_index: String,
}

impl Names {
    fn new(prefix: &TablePrefix) -> Self {
        let quoted = |suffix: &str| format!("\"{prefix}_{suffix}\"");
        Self {
            prefix: prefix.to_string(),
            meta: quoted("meta"),
            documents: quoted("documents"),
            chunks: quoted("chunks"),
            scope_index: quoted("chunks_scope"),
            path_index: quoted("chunks_path"),
            hnsw_index: quoted("chunks_hnsw"),
        }
    }

    fn schema(&self) -> String {
        let Self {
            meta,
            documents,
            chunks,
            scope_index,
            path_index,
            ..
        } = self;
        format!(
            "CREATE TABLE IF NOT EXISTS {meta} (
                 key text PRIMARY KEY,
                 value text NOT NULL
             );
             CREATE TABLE IF NOT EXISTS {documents} (
                 path text PRIMARY KEY,
                 size bigint NOT NULL,
                 mtime_ns bigint NOT NULL,
                 hash text NOT NULL,
                 title text NOT NULL,
                 tenant text NOT NULL,
                 level integer NOT NULL,
                 owner text
             );
             CREATE TABLE IF NOT EXISTS {chunks} (
                 id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                 path text NOT NULL REFERENCES {documents} (path) ON DELETE CASCADE,
                 tenant text NOT NULL,
                 level integer NOT NULL,
                 owner text,
                 heading text,
                 text text NOT NULL,
                 embedding vector NOT NULL
             );
             CREATE INDEX IF NOT EXISTS {scope_index} ON {chunks} (tenant, level);
             CREATE INDEX IF NOT EXISTS {path_index} ON {chunks} (path);"
        )
    }
}

/// A [`Store`] in PostgreSQL + pgvector.
pub struct PostgresStore {
    config: Config,
    names: Names,
    /// pgvector ≥ 0.8: `hnsw.iterative_scan` exists.
    iterative_scan: bool,
    client: Mutex<Option<Client>>,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("server", &describe(&self.config))
            .field("tables", &self.names.documents)
            .finish_non_exhaustive()
    }
}

/// Where `config` points, for logs and errors: never the password.
pub fn describe(config: &Config) -> String {
    use tokio_postgres::config::Host;
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|host| match host {
            Host::Tcp(name) => name.clone(),
            #[cfg(unix)]
            Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
    format!(
        "host={} port={} user={} dbname={}",
        if hosts.is_empty() {
            "(default)".to_owned()
        } else {
            hosts.join(",")
        },
        if ports.is_empty() {
            "5432".to_owned()
        } else {
            ports.join(",")
        },
        config.get_user().unwrap_or("(default)"),
        config.get_dbname().unwrap_or("(default)"),
    )
}

impl PostgresStore {
    /// Connects, makes sure pgvector is enabled and creates the tables of `prefix` if
    /// missing. `config` may hold a password (set from a file, never from the command line);
    /// no error or log line repeats it.
    pub async fn open(mut config: Config, prefix: &TablePrefix) -> Result<Self, StoreError> {
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        if config.get_application_name().is_none() {
            config.application_name("micromcp-vector");
        }
        let client = connect(&config).await?;
        let version = enable_pgvector(&client, &config).await?;
        let names = Names::new(prefix);
        let store = Self {
            iterative_scan: version >= (0, 8),
            config,
            names,
            client: Mutex::new(Some(client)),
        };
        store.create_schema().await?;
        tracing::info!(
            server = %describe(&store.config),
            tables = %prefix,
            pgvector = %format!("{}.{}", version.0, version.1),
            iterative_scan = store.iterative_scan,
            "PostgreSQL vector store ready"
        );
        Ok(store)
    }

    async fn create_schema(&self) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
            .await
            .map_err(pg)?;
        tx.batch_execute(&self.names.schema()).await.map_err(pg)?;
        tx.commit().await.map_err(pg)
    }

    /// The connection, re-opened if it closed (server restart, network cut).
    async fn client(&self) -> Result<MappedMutexGuard<'_, Client>, StoreError> {
        let mut guard = self.client.lock().await;
        if guard.as_ref().is_none_or(Client::is_closed) {
            *guard = None;
            *guard = Some(connect(&self.config).await?);
        }
        MutexGuard::try_map(guard, Option::as_mut)
            .map_err(|_| StoreError("no PostgreSQL connection".to_owned()))
    }

    /// The dimension fixed by the first stored document, if any.
    async fn dimension(
        tx: &tokio_postgres::Transaction<'_>,
        names: &Names,
    ) -> Result<Option<usize>, StoreError> {
        let row = tx
            .query_opt(
                &format!("SELECT value FROM {} WHERE key = $1", names.meta),
                &[&DIMENSION_KEY],
            )
            .await
            .map_err(pg)?;
        row.map(|row| {
            let value: String = row.get(0);
            value
                .parse::<usize>()
                .map_err(|_| StoreError(format!("corrupted index: dimension {value:?}")))
        })
        .transpose()
    }

    /// The statements of [`Store::put_document`], in its transaction.
    async fn put_in(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        doc: &NewDocument,
        dimension: Option<usize>,
    ) -> Result<(), StoreError> {
        let Names {
            meta,
            documents,
            chunks,
            hnsw_index,
            ..
        } = &self.names;
        if let Some(dimension) = dimension {
            let stored = match Self::dimension(tx, &self.names).await? {
                Some(stored) => Some(stored),
                None => {
                    // The first vectors fix the column's dimension; lock, then re-check.
                    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
                        .await
                        .map_err(pg)?;
                    Self::dimension(tx, &self.names).await?
                }
            };
            match stored {
                Some(stored) if stored != dimension => {
                    return Err(StoreError(format!(
                        "vectors of {dimension} dimensions cannot be stored in an index of \
                         {stored}-dimension vectors"
                    )));
                }
                Some(_) => {}
                None => {
                    let mut ddl = format!(
                        "ALTER TABLE {chunks} ALTER COLUMN embedding TYPE vector({dimension});"
                    );
                    if dimension <= MAX_HNSW_DIMENSION {
                        ddl.push_str(&format!(
                            "CREATE INDEX IF NOT EXISTS {hnsw_index} ON {chunks}
                             USING hnsw (embedding vector_cosine_ops);"
                        ));
                    } else {
                        tracing::warn!(
                            dimension,
                            "vectors above {MAX_HNSW_DIMENSION} dimensions get no HNSW \
                             index: searches scan every chunk of the caller's scope"
                        );
                    }
                    tx.batch_execute(&ddl).await.map_err(pg)?;
                    tx.execute(
                        &format!("INSERT INTO {meta} (key, value) VALUES ($1, $2)"),
                        &[&DIMENSION_KEY, &dimension.to_string()],
                    )
                    .await
                    .map_err(pg)?;
                }
            }
        }
        tx.execute(
            &format!("DELETE FROM {documents} WHERE path = $1"),
            &[&doc.path],
        )
        .await
        .map_err(pg)?;
        let level = i32::from(doc.labels.classification.level());
        tx.execute(
            &format!(
                "INSERT INTO {documents}
                     (path, size, mtime_ns, hash, title, tenant, level, owner)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            ),
            &[
                &doc.path,
                &i64::try_from(doc.state.size).unwrap_or(i64::MAX),
                &doc.state.mtime_ns,
                &doc.state.hash,
                &doc.title,
                &doc.labels.tenant,
                &level,
                &doc.labels.owner,
            ],
        )
        .await
        .map_err(pg)?;
        if !doc.chunks.is_empty() {
            let headings: Vec<Option<&str>> =
                doc.chunks.iter().map(|c| c.heading.as_deref()).collect();
            let texts: Vec<&str> = doc.chunks.iter().map(|c| c.text.as_str()).collect();
            let vectors: Vec<String> = doc
                .chunks
                .iter()
                .map(|c| vector_literal(&c.embedding))
                .collect();
            // One statement for every chunk, in order (ids follow the array order).
            tx.execute(
                &format!(
                    "INSERT INTO {chunks} (path, tenant, level, owner, heading, text, embedding)
                     SELECT $1, $2, $3, $4, u.heading, u.text, u.embedding::vector
                     FROM unnest($5::text[], $6::text[], $7::text[])
                          WITH ORDINALITY AS u (heading, text, embedding, n)
                     ORDER BY u.n"
                ),
                &[
                    &doc.path,
                    &doc.labels.tenant,
                    &level,
                    &doc.labels.owner,
                    &headings,
                    &texts,
                    &vectors,
                ],
            )
            .await
            .map_err(pg)?;
        }
        Ok(())
    }

    /// The search statements of one read-only transaction.
    async fn search_in(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        query: &[f32],
        scope: &Scope,
        k: usize,
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        let Some(dimension) = Self::dimension(tx, &self.names).await? else {
            return Ok(Vec::new()); // Nothing stored yet.
        };
        if query.len() != dimension {
            return Err(StoreError(format!(
                "vectors of {} and {dimension} dimensions cannot be compared",
                query.len()
            )));
        }
        if self.iterative_scan {
            // A filtered HNSW scan keeps scanning until k rows pass the filter.
            tx.execute(
                "SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true)",
                &[],
            )
            .await
            .map_err(pg)?;
        }
        // ef_search bounds what one HNSW scan returns: never fewer than k (max 1000).
        let ef_search = k.clamp(40, 1000).to_string();
        tx.execute(
            "SELECT set_config('hnsw.ef_search', $1, true)",
            &[&ef_search],
        )
        .await
        .map_err(pg)?;
        let sql = search_sql(&self.names, scope);
        let level = i32::from(scope.max_classification().level());
        let vector = vector_literal(query);
        let limit = i64::try_from(k).unwrap_or(i64::MAX);
        let pattern = scope.path_prefix().map(like_prefix);
        let tenant = scope.tenant();
        let owner = scope.owner();
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&tenant, &level, &vector, &limit];
        if let Some(owner) = &owner {
            params.push(owner);
        }
        if let Some(pattern) = &pattern {
            params.push(pattern);
        }
        tx.query(&sql, &params).await.map_err(pg)
    }
}

async fn connect(config: &Config) -> Result<Client, StoreError> {
    let (client, connection) = config.connect(NoTls).await.map_err(|err| {
        StoreError(format!(
            "cannot connect to PostgreSQL ({}): {}",
            describe(config),
            error_text(&err)
        ))
    })?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::warn!("PostgreSQL connection closed: {}", error_text(&err));
        }
    });
    Ok(client)
}

/// Enables pgvector if needed; returns its (major, minor) version.
async fn enable_pgvector(client: &Client, config: &Config) -> Result<(u32, u32), StoreError> {
    const VERSION: &str = "SELECT extversion FROM pg_extension WHERE extname = 'vector'";
    let mut row = client.query_opt(VERSION, &[]).await.map_err(pg)?;
    if row.is_none() {
        let created = client
            .batch_execute("CREATE EXTENSION IF NOT EXISTS vector")
            .await;
        row = client.query_opt(VERSION, &[]).await.map_err(pg)?;
        if let (Err(err), None) = (created, &row) {
            let database = config.get_dbname().unwrap_or("(default)");
            return Err(StoreError(match err.code() {
                Some(&SqlState::INSUFFICIENT_PRIVILEGE) => format!(
                    "the pgvector extension is not enabled in database {database} and this \
                     role may not enable it: run `CREATE EXTENSION vector;` in that database \
                     as a superuser (or the database owner), then restart"
                ),
                Some(&SqlState::UNDEFINED_FILE) => format!(
                    "pgvector is not installed on the PostgreSQL server ({}): install it \
                     (scripts/install-pgvector builds it for a local server), then run \
                     `CREATE EXTENSION vector;` in database {database}",
                    error_text(&err)
                ),
                _ => format!("cannot enable pgvector: {}", error_text(&err)),
            }));
        }
    }
    let version: String = row
        .map(|row| row.get(0))
        .ok_or_else(|| StoreError("pgvector is not enabled".to_owned()))?;
    Ok(parse_version(&version))
}

/// `"0.8.0"` → `(0, 8)`; anything unreadable counts as `(0, 0)` (no optional features).
fn parse_version(version: &str) -> (u32, u32) {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor),
        _ => (0, 0),
    }
}

impl Store for PostgresStore {
    fn prepare(&self, identity: String) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            let Names {
                meta,
                documents,
                chunks,
                hnsw_index,
                ..
            } = &self.names;
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(pg)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
                .await
                .map_err(pg)?;
            let stored: Option<String> = tx
                .query_opt(
                    &format!("SELECT value FROM {meta} WHERE key = $1"),
                    &[&IDENTITY_KEY],
                )
                .await
                .map_err(pg)?
                .map(|row| row.get(0));
            // Tables are shared by name: another instance indexing another folder under the
            // same prefix would otherwise wipe this index at each start, and this one wipe it.
            if let Some(stored_root) = stored.as_deref().and_then(root_of_identity)
                && root_of_identity(&identity).is_some_and(|root| root != stored_root)
            {
                return Err(StoreError(format!(
                    "the tables {prefix}_* hold the index of another docs folder: give this \
                     service its own --postgres-table (or, if that folder's index is no longer \
                     wanted, drop {prefix}_chunks, {prefix}_documents and {prefix}_meta)",
                    prefix = self.names.prefix
                )));
            }
            let changed = stored.as_deref() != Some(identity.as_str());
            if changed {
                // The new embedder may have another dimension: back to an untyped column.
                tx.batch_execute(&format!(
                    "TRUNCATE {chunks}, {documents};
                     DROP INDEX IF EXISTS {hnsw_index};
                     ALTER TABLE {chunks} ALTER COLUMN embedding TYPE vector;"
                ))
                .await
                .map_err(pg)?;
                tx.execute(
                    &format!("DELETE FROM {meta} WHERE key = $1"),
                    &[&DIMENSION_KEY],
                )
                .await
                .map_err(pg)?;
                tx.execute(
                    &format!(
                        "INSERT INTO {meta} (key, value) VALUES ($1, $2)
                         ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
                    ),
                    &[&IDENTITY_KEY, &identity],
                )
                .await
                .map_err(pg)?;
            }
            tx.commit().await.map_err(pg)?;
            Ok(changed && stored.is_some())
        })
    }

    fn files(&self) -> BoxFuture<'_, Result<BTreeMap<String, FileState>, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            let rows = client
                .query(
                    &format!(
                        "SELECT path, size, mtime_ns, hash FROM {}",
                        self.names.documents
                    ),
                    &[],
                )
                .await
                .map_err(pg)?;
            Ok(rows
                .into_iter()
                .map(|row| {
                    let size: i64 = row.get(1);
                    (
                        row.get(0),
                        FileState {
                            size: u64::try_from(size).unwrap_or(0),
                            mtime_ns: row.get(2),
                            hash: row.get(3),
                        },
                    )
                })
                .collect())
        })
    }

    fn put_document(&self, doc: NewDocument) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let dimension = document_dimension(&doc)?;
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(pg)?;
            if let Err(err) = self.put_in(&tx, &doc, dimension).await {
                tx.rollback().await.map_err(pg)?;
                return Err(err);
            }
            tx.commit().await.map_err(pg)
        })
    }

    fn set_file_state(
        &self,
        path: String,
        state: FileState,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            client
                .execute(
                    &format!(
                        "UPDATE {} SET size = $2, mtime_ns = $3, hash = $4 WHERE path = $1",
                        self.names.documents
                    ),
                    &[
                        &path,
                        &i64::try_from(state.size).unwrap_or(i64::MAX),
                        &state.mtime_ns,
                        &state.hash,
                    ],
                )
                .await
                .map_err(pg)?;
            Ok(())
        })
    }

    fn remove_document(&self, path: String) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            // Chunks go with it (ON DELETE CASCADE).
            client
                .execute(
                    &format!("DELETE FROM {} WHERE path = $1", self.names.documents),
                    &[&path],
                )
                .await
                .map_err(pg)?;
            Ok(())
        })
    }

    fn search(
        &self,
        query: Vec<f32>,
        scope: Scope,
        k: usize,
    ) -> BoxFuture<'_, Result<Vec<Hit>, StoreError>> {
        Box::pin(async move {
            check_vector(&query)?;
            let mut client = self.client().await?;
            let tx = client
                .build_transaction()
                .read_only(true)
                .start()
                .await
                .map_err(pg)?;
            let rows = match self.search_in(&tx, &query, &scope, k).await {
                Ok(rows) => rows,
                Err(err) => {
                    tx.rollback().await.map_err(pg)?;
                    return Err(err);
                }
            };
            tx.commit().await.map_err(pg)?;
            rows.iter().map(hit_of_row).collect()
        })
    }

    fn chunk_count(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            let row = client
                .query_one(&format!("SELECT count(*) FROM {}", self.names.chunks), &[])
                .await
                .map_err(pg)?;
            let count: i64 = row.get(0);
            Ok(u64::try_from(count).unwrap_or(0))
        })
    }
}

/// The search statement for `scope`: $1 tenant, $2 level, $3 query vector, $4 k, then the
/// owner and the path pattern when the scope has them. The inner query is what the HNSW
/// index serves (filter + `ORDER BY embedding <=> $3 LIMIT $4`); the outer one adds titles
/// and restores exact distance order (relaxed iterative scans may return rows slightly out
/// of order).
fn search_sql(names: &Names, scope: &Scope) -> String {
    let mut filter = String::from("c.tenant = $1 AND c.level <= $2");
    let mut next = 5;
    if scope.owner().is_some() {
        filter.push_str(&format!(" AND c.owner = ${next}"));
        next += 1;
    }
    if scope.path_prefix().is_some() {
        filter.push_str(&format!(r" AND c.path LIKE ${next} ESCAPE '\'"));
    }
    let Names {
        documents, chunks, ..
    } = names;
    format!(
        "WITH ranked AS MATERIALIZED (
             SELECT c.id, c.path, c.heading, c.text, c.tenant, c.level, c.owner,
                    c.embedding <=> $3::text::vector AS distance
             FROM {chunks} AS c
             WHERE {filter}
             ORDER BY c.embedding <=> $3::text::vector
             LIMIT $4
         )
         SELECT r.path, d.title, r.heading, r.text, r.tenant, r.level, r.owner,
                1 - r.distance AS score
         FROM ranked AS r JOIN {documents} AS d ON d.path = r.path
         ORDER BY r.distance, r.id"
    )
}

/// A `LIKE` pattern matching paths that start with `prefix`, literally.
fn like_prefix(prefix: &str) -> String {
    let mut pattern = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '\\' | '%' | '_') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// pgvector's text form, `[0.1,-0.2,…]`; Rust prints the shortest decimal that reads back
/// as the same `f32`, so nothing is lost.
fn vector_literal(vector: &[f32]) -> String {
    let mut text = String::with_capacity(vector.len() * 12 + 2);
    text.push('[');
    for (i, x) in vector.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        text.push_str(&x.to_string());
    }
    text.push(']');
    text
}

fn check_vector(vector: &[f32]) -> Result<(), StoreError> {
    if vector.is_empty() || vector.len() > MAX_DIMENSION {
        return Err(StoreError(format!(
            "a vector of {} dimensions cannot be stored or compared (1 to {MAX_DIMENSION})",
            vector.len()
        )));
    }
    if vector.iter().any(|x| !x.is_finite()) {
        return Err(StoreError("a vector holds a non-finite value".to_owned()));
    }
    Ok(())
}

/// The one dimension of every chunk of `doc` (`None` without chunks).
fn document_dimension(doc: &NewDocument) -> Result<Option<usize>, StoreError> {
    let mut dimension = None;
    for chunk in &doc.chunks {
        check_vector(&chunk.embedding)?;
        match dimension {
            None => dimension = Some(chunk.embedding.len()),
            Some(d) if d != chunk.embedding.len() => {
                return Err(StoreError(format!(
                    "{}: chunks of {d} and {} dimensions",
                    doc.path,
                    chunk.embedding.len()
                )));
            }
            Some(_) => {}
        }
    }
    Ok(dimension)
}

fn hit_of_row(row: &tokio_postgres::Row) -> Result<Hit, StoreError> {
    let level: i32 = row.get(5);
    // A level we never write means corruption or a foreign table: fail rather than guess.
    let classification = Classification::from_level(i64::from(level))
        .ok_or_else(|| StoreError(format!("corrupted index: level {level}")))?;
    let score: f64 = row.get(7);
    #[allow(clippy::cast_possible_truncation)]
    let score = score as f32;
    Ok(Hit {
        path: row.get(0),
        title: row.get(1),
        heading: row.get(2),
        text: row.get(3),
        score,
        labels: Labels {
            tenant: row.get(4),
            classification,
            owner: row.get(6),
        },
    })
}

/// A PostgreSQL error with the server's message (tokio-postgres' `Display` says only
/// "db error"). Server messages name objects and values, never the connection password.
fn error_text(err: &tokio_postgres::Error) -> String {
    if let Some(db) = err.as_db_error() {
        return format!("{}: {} ({})", db.severity(), db.message(), db.code().code());
    }
    // "error connecting to server" alone hides the reason (refused, timed out, …).
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn pg(err: tokio_postgres::Error) -> StoreError {
    StoreError(format!("PostgreSQL: {}", error_text(&err)))
}

#[cfg(test)]
pub(crate) mod testdb;

#[cfg(test)]
mod tests;
