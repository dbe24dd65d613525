//! The real PostgreSQL the tests run against: one random table prefix per test, dropped when
//! the test ends (even when it fails), so tests run in parallel on one database.
//!
//! There is no fallback: when the server is unreachable or lacks pgvector, the test fails
//! and says what to start or install.

use std::{
    hash::{BuildHasher, Hasher},
    sync::atomic::{AtomicUsize, Ordering},
};

use tokio_postgres::{Config, NoTls};

use super::{PostgresStore, TablePrefix};

/// Overrides the test server's connection string.
pub(crate) const URL_ENV: &str = "MICROMCP_TEST_POSTGRES";
/// This machine's server: trust auth, database `test`.
pub(crate) const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A unique set of tables in the test database.
pub(crate) struct TestDb {
    pub(crate) prefix: TablePrefix,
    url: String,
}

impl TestDb {
    pub(crate) fn new() -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let name = format!(
            "mmv_t{}_{}_{random:x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        Self {
            prefix: name.parse().expect("valid prefix"),
            url: std::env::var(URL_ENV).unwrap_or_else(|_| DEFAULT_URL.to_owned()),
        }
    }

    pub(crate) fn config(&self) -> Config {
        self.url.parse().expect("test connection string")
    }

    /// Opens the store on this test's tables; fails the test, saying why, when it cannot.
    pub(crate) async fn open(&self) -> PostgresStore {
        self.open_with(self.config()).await
    }

    pub(crate) async fn open_with(&self, config: Config) -> PostgresStore {
        PostgresStore::open(config, &self.prefix)
            .await
            .unwrap_or_else(|err| panic!("{}", self.unavailable(&err.to_string())))
    }

    /// A plain client on the test database, to inspect or tamper with the tables.
    pub(crate) async fn client(&self) -> tokio_postgres::Client {
        let (client, connection) = self
            .config()
            .connect(NoTls)
            .await
            .unwrap_or_else(|err| panic!("{}", self.unavailable(&err.to_string())));
        tokio::spawn(connection);
        client
    }

    fn unavailable(&self, err: &str) -> String {
        format!(
            "the PostgreSQL tests need a real server with pgvector ({}; {URL_ENV} overrides \
             {DEFAULT_URL}): {err}. Start PostgreSQL (user postgres, trust auth on 127.0.0.1, \
             database `test`) and run scripts/install-pgvector so `CREATE EXTENSION vector` \
             works.",
            super::describe(&self.config())
        )
    }

    /// `{prefix}_{suffix}`, quoted.
    pub(crate) fn table(&self, suffix: &str) -> String {
        format!("\"{}_{suffix}\"", self.prefix)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop runs inside a test's runtime, maybe while unwinding: clean up on a thread of
        // its own with its own runtime.
        let config = self.config();
        let sql = format!(
            "SET lock_timeout = '20s'; DROP TABLE IF EXISTS {}, {}, {} CASCADE",
            self.table("chunks"),
            self.table("documents"),
            self.table("meta")
        );
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                if let Ok((client, connection)) = config.connect(NoTls).await {
                    tokio::spawn(connection);
                    if let Err(err) = client.batch_execute(&sql).await {
                        eprintln!("cannot drop the test tables: {err}");
                    }
                }
            });
        });
        let _ = cleanup.join();
    }
}
