//! `micromcp serve vector`: semantic search filtered by the caller's tenant and clearance.
//!
//! Documents in a folder (`--docs`) carry front-matter labels (`tenant`, `classification`,
//! `owner`). They are chunked ([`chunk`]), embedded ([`embed`]: a built-in hashing embedder
//! or an OpenAI-compatible endpoint) and stored ([`store`]: SQLite in `--state-dir`, or
//! PostgreSQL + pgvector with `--postgres URL`, password from `--postgres-password-file`,
//! tables prefixed by `--postgres-table`), incrementally and in the background ([`index`]). The one tool, `search` ([`service`]),
//! answers only from documents of the caller's tenant at or below its clearance; the caller
//! comes from an [`identity::IdentitySource`] — the gateway's signed identity of each call
//! when started with `MICROMCP_IDENTITY_KEY`, bounded by `--tenant`/`--clearance`; else those
//! flags — never from unsigned request content, and the scope is applied inside the store
//! query, before ranking.
//!
//! Pure, fuzzable guards: [`frontmatter::parse_front_matter`] (document labels),
//! [`query::parse_search_arguments`] (tool arguments) and
//! [`embed::parse_embeddings`] (embeddings endpoint answers).

pub mod chunk;
pub mod embed;
pub mod frontmatter;
pub mod identity;
pub mod index;
pub mod labels;
pub mod query;
pub mod service;
pub mod store;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;

use crate::{
    chunk::ChunkOptions,
    embed::{Embedder, HashEmbedder, KeyRef, OpenAiConfig, OpenAiEmbedder},
    identity::{CallerIdentity, IdentitySource, SignedIdentity, StaticIdentity},
    index::{IndexSettings, Progress, index_folder, index_identity},
    labels::{Classification, check_tenant},
    service::VectorService,
    store::{PostgresStore, SqliteStore, Store, TablePrefix},
};

use tokio_postgres::Config as PostgresConfig;

/// The index file inside `--state-dir`.
const INDEX_FILE: &str = "vector-index.sqlite3";

/// Command-line options of `micromcp serve vector`.
#[derive(Debug, Clone, clap::Args)]
pub struct VectorArgs {
    /// Serve Streamable HTTP at http://ADDR/mcp instead of stdio.
    #[arg(long)]
    pub http: Option<SocketAddr>,

    /// Folder of documents to index (.md, .markdown, .txt, recursively).
    #[arg(long, value_name = "DIR")]
    pub docs: PathBuf,

    /// Folder for the SQLite index (created if missing; holds vector-index.sqlite3).
    /// Required unless --postgres is given.
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present = "postgres",
        conflicts_with = "postgres"
    )]
    pub state_dir: Option<PathBuf>,

    /// Keep the index in PostgreSQL + pgvector instead of SQLite: a connection string
    /// without a password, e.g. postgres://micromcp@db.internal:5432/search (the password
    /// goes in --postgres-password-file).
    #[arg(long, value_name = "URL")]
    // A String, parsed by us: clap would echo an invalid value, and a password pasted into
    // it must not end up in an error message.
    pub postgres: Option<String>,

    /// File holding the PostgreSQL password (one trailing newline is ignored).
    #[arg(long, value_name = "PATH", requires = "postgres")]
    pub postgres_password_file: Option<PathBuf>,

    /// Prefix of the index's tables ({NAME}_documents, {NAME}_chunks, {NAME}_meta), so
    /// several indexes share a database: [a-z_][a-z0-9_]{0,40}.
    #[arg(long, value_name = "NAME", default_value = store::DEFAULT_TABLE_PREFIX)]
    pub postgres_table: String,

    /// The caller's tenant: only documents of this tenant are searched.
    #[arg(long, value_name = "T")]
    pub tenant: String,

    /// The caller's clearance: public, internal, confidential or restricted.
    #[arg(long, value_name = "LEVEL")]
    pub clearance: Classification,

    /// Tenant of documents whose front matter names none (default: such documents are
    /// visible to nobody and not indexed).
    #[arg(long, value_name = "NAME")]
    pub default_tenant: Option<String>,

    /// Classification of documents whose front matter names none.
    #[arg(long, value_name = "LEVEL", default_value = "restricted")]
    pub default_classification: Classification,

    /// Largest chunk, in characters.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub chunk_chars: usize,

    /// Characters repeated from the end of one chunk at the start of the next.
    #[arg(long, value_name = "N", default_value_t = 150)]
    pub chunk_overlap: usize,

    /// Files larger than this many bytes are skipped.
    #[arg(long, value_name = "BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_file_bytes: u64,

    /// Dimension of the built-in hashing embedder.
    #[arg(long, value_name = "N", default_value_t = embed::hash_default_dimension())]
    pub hash_dim: usize,

    /// Use an OpenAI-compatible embeddings endpoint instead of the built-in embedder, e.g.
    /// https://api.openai.com/v1 (`/embeddings` is appended unless present).
    #[arg(long, value_name = "URL", requires_all = ["embeddings_model", "embeddings_dim"])]
    pub embeddings_url: Option<String>,

    /// Model name sent to the embeddings endpoint.
    #[arg(long, value_name = "NAME", requires = "embeddings_url")]
    pub embeddings_model: Option<String>,

    /// Dimension every vector from the endpoint must have.
    #[arg(long, value_name = "N", requires = "embeddings_url")]
    pub embeddings_dim: Option<usize>,

    /// API key for the endpoint, by reference: file:PATH or env:NAME.
    #[arg(
        long,
        value_name = "REF",
        requires = "embeddings_url",
        conflicts_with = "embeddings_key_file"
    )]
    // A String, parsed by us: clap would echo an invalid value, and a key pasted here by
    // mistake must not end up in the error message.
    pub embeddings_key: Option<String>,

    /// API key file for the endpoint (same as --embeddings-key file:PATH).
    #[arg(long, value_name = "PATH", requires = "embeddings_url")]
    pub embeddings_key_file: Option<PathBuf>,

    /// Texts per embeddings request.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub embeddings_batch: usize,

    /// Timeout of one embeddings request, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub embeddings_timeout: u64,
}

/// Runs the service until stdin closes (stdio) or forever (HTTP).
pub async fn run(args: VectorArgs) -> anyhow::Result<()> {
    let caller = caller_of(&args)?;
    let settings = index_settings(&args)?;
    let embedder = embedder_of(&args)?;
    let store: Arc<dyn Store> = match postgres_of(&args)? {
        Some((config, prefix)) => Arc::new(PostgresStore::open(config, &prefix).await?),
        None => {
            let state_dir = args
                .state_dir
                .as_ref()
                .context("--state-dir or --postgres is required")?;
            std::fs::create_dir_all(state_dir)
                .with_context(|| format!("cannot create --state-dir {}", state_dir.display()))?;
            Arc::new(SqliteStore::open(&state_dir.join(INDEX_FILE))?)
        }
    };
    // Claim the index before serving: an index of another docs folder in the same PostgreSQL
    // tables stops the start-up here, with the error naming --postgres-table.
    if store
        .prepare(index_identity(&settings, embedder.as_ref()))
        .await?
    {
        tracing::info!(
            "embedder, labelling settings or docs folder changed: the index was emptied and \
             is rebuilt"
        );
    }
    let progress = Arc::new(Progress::default());
    // Mark the pass as running before serving, so the first search already says so.
    progress.start();
    tokio::spawn(index_in_background(
        settings,
        Arc::clone(&store),
        Arc::clone(&embedder),
        Arc::clone(&progress),
    ));
    let signed = std::env::var(micromcp_identity::signed::KEY_ENV).ok();
    tracing::info!(
        tenant = %caller.tenant,
        clearance = %caller.clearance,
        caller = if signed.is_some() { "signed by the gateway, within these bounds" } else { "these" },
        "vector service ready"
    );
    let identity = identity_source(caller, signed.as_deref())?;
    let service = VectorService::new(store, embedder, identity, progress);
    micromcp_services::serve(service, args.http).await
}

async fn index_in_background(
    settings: IndexSettings,
    store: Arc<dyn Store>,
    embedder: Arc<dyn Embedder>,
    progress: Arc<Progress>,
) {
    match index_folder(&settings, store.as_ref(), embedder.as_ref(), &progress).await {
        Ok(report) => tracing::info!(
            embedded = report.embedded.len(),
            unchanged = report.unchanged + report.touched.len(),
            removed = report.removed.len(),
            skipped = report.skipped.len(),
            "index up to date"
        ),
        // Searches keep answering from what was indexed; the next start resumes.
        Err(err) => tracing::error!("indexing stopped: {err:#}"),
    }
}

fn caller_of(args: &VectorArgs) -> anyhow::Result<CallerIdentity> {
    check_tenant(&args.tenant).map_err(|err| anyhow::anyhow!("--tenant: {err}"))?;
    Ok(CallerIdentity {
        tenant: args.tenant.clone(),
        clearance: args.clearance,
    })
}

/// Where each call's caller comes from: the gateway's signed identity when it handed this
/// process a key (the launch identity is then the upper bound), else the launch identity.
fn identity_source(
    launch: CallerIdentity,
    key: Option<&str>,
) -> anyhow::Result<Arc<dyn IdentitySource>> {
    Ok(match key {
        None => Arc::new(StaticIdentity::new(launch)),
        // The error never shows the value.
        Some(value) => Arc::new(SignedIdentity::new(
            micromcp_identity::signed::Verifier::new(
                micromcp_identity::signed::ServiceKey::from_env_value(value)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", micromcp_identity::signed::KEY_ENV))?,
            ),
            launch,
        )),
    })
}

fn index_settings(args: &VectorArgs) -> anyhow::Result<IndexSettings> {
    anyhow::ensure!(
        args.docs.is_dir(),
        "--docs {} is not a folder",
        args.docs.display()
    );
    if let Some(tenant) = &args.default_tenant {
        check_tenant(tenant).map_err(|err| anyhow::anyhow!("--default-tenant: {err}"))?;
    }
    Ok(IndexSettings {
        docs: args.docs.clone(),
        default_tenant: args.default_tenant.clone(),
        default_classification: args.default_classification,
        chunk: ChunkOptions {
            max_chars: args.chunk_chars,
            overlap_chars: args.chunk_overlap,
        },
        max_file_bytes: args.max_file_bytes,
    })
}

/// The PostgreSQL connection and table prefix, with `--postgres`. The connection string
/// must not hold a password (command lines are visible to every local user and end up in
/// logs): it comes from `--postgres-password-file`. Errors never repeat the string.
fn postgres_of(args: &VectorArgs) -> anyhow::Result<Option<(PostgresConfig, TablePrefix)>> {
    let Some(url) = &args.postgres else {
        // clap's `requires` is skipped when --postgres conflicts with a present --state-dir.
        anyhow::ensure!(
            args.postgres_password_file.is_none(),
            "--postgres-password-file needs --postgres"
        );
        anyhow::ensure!(
            args.postgres_table == store::DEFAULT_TABLE_PREFIX,
            "--postgres-table needs --postgres"
        );
        return Ok(None);
    };
    let prefix: TablePrefix = args
        .postgres_table
        .parse()
        .map_err(|err| anyhow::anyhow!("--postgres-table: {err}"))?;
    let mut config: PostgresConfig = url.parse().map_err(|_| {
        anyhow::anyhow!(
            "--postgres is not a valid connection string (expected \
             postgres://USER@HOST[:PORT]/DBNAME or `host=… user=… dbname=…`)"
        )
    })?;
    anyhow::ensure!(
        config.get_password().is_none(),
        "--postgres must not contain a password (a command line is visible to other \
         processes and in logs): put it in a file and pass --postgres-password-file PATH"
    );
    if let Some(path) = &args.postgres_password_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read --postgres-password-file {}", path.display()))?;
        let password = text
            .strip_suffix('\n')
            .map_or(text.as_str(), |t| t.strip_suffix('\r').unwrap_or(t));
        anyhow::ensure!(
            !password.is_empty(),
            "--postgres-password-file {} is empty",
            path.display()
        );
        config.password(password);
    }
    tracing::info!(server = %store::describe_postgres(&config), tables = %prefix, "index in PostgreSQL");
    Ok(Some((config, prefix)))
}

fn embedder_of(args: &VectorArgs) -> anyhow::Result<Arc<dyn Embedder>> {
    let Some(url) = &args.embeddings_url else {
        anyhow::ensure!(args.hash_dim >= 16, "--hash-dim must be at least 16");
        return Ok(Arc::new(HashEmbedder::new(args.hash_dim)));
    };
    let key_ref = match (&args.embeddings_key, &args.embeddings_key_file) {
        (Some(reference), _) => Some(
            reference
                .parse::<KeyRef>()
                .map_err(|err| anyhow::anyhow!("--embeddings-key: {err}"))?,
        ),
        (None, Some(path)) => Some(KeyRef::File(path.clone())),
        (None, None) => None,
    };
    let key = key_ref.map(|k| k.load()).transpose()?;
    let embedder = OpenAiEmbedder::new(OpenAiConfig {
        url: url.clone(),
        model: args.embeddings_model.clone().unwrap_or_default(),
        dimension: args.embeddings_dim.unwrap_or_default(),
        key,
        batch_size: args.embeddings_batch,
        timeout: Duration::from_secs(args.embeddings_timeout.max(1)),
    })?;
    Ok(Arc::new(embedder))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: VectorArgs,
    }

    /// `micromcp serve vector <base> <extra>` parsed as the CLI would.
    fn parse_after(base: &[&str], extra: &[&str]) -> Result<VectorArgs, String> {
        Cli::try_parse_from(["vector"].iter().chain(base).chain(extra))
            .map(|cli| cli.args)
            .map_err(|err| err.to_string())
    }

    fn parse(extra: &[&str]) -> Result<VectorArgs, String> {
        parse_after(&["--docs", ".", "--state-dir", "s"], extra)
    }

    #[test]
    fn refuses_to_start_without_an_identity() {
        let err = parse(&[]).expect_err("no identity");
        assert!(
            err.contains("--tenant") && err.contains("--clearance"),
            "{err}"
        );
        let err = parse(&["--tenant", "acme"]).expect_err("no clearance");
        assert!(err.contains("--clearance"), "{err}");
        let err = parse(&["--tenant", "acme", "--clearance", "secret"]).expect_err("bad level");
        assert!(err.contains("unknown classification"), "{err}");
        let args = parse(&["--tenant", "acme corp", "--clearance", "public"]).expect("parses");
        let err = caller_of(&args).expect_err("bad tenant");
        assert!(err.to_string().contains("--tenant"), "{err}");
    }

    #[test]
    fn a_key_from_the_gateway_must_be_well_formed_and_is_never_echoed() {
        let launch = CallerIdentity {
            tenant: "acme".into(),
            clearance: Classification::Internal,
        };
        let Err(err) = identity_source(launch.clone(), Some("hunter2-not-a-key")) else {
            panic!("a malformed key was accepted");
        };
        let err = err.to_string();
        assert!(
            err.contains(micromcp_identity::signed::KEY_ENV) && !err.contains("hunter2"),
            "{err}"
        );
        let key = micromcp_identity::signed::ServiceKey::generate().expect("key");
        assert!(identity_source(launch.clone(), Some(&key.to_env_value())).is_ok());
        assert!(identity_source(launch, None).is_ok());
    }

    #[test]
    fn defaults_fail_closed() {
        let args = parse(&["--tenant", "acme", "--clearance", "internal"]).expect("parses");
        assert_eq!(args.default_tenant, None);
        assert_eq!(args.default_classification, Classification::Restricted);
        assert_eq!(
            caller_of(&args).expect("caller").clearance,
            Classification::Internal
        );
        assert!(args.embeddings_url.is_none());
    }

    #[test]
    fn the_embeddings_endpoint_needs_model_and_dimension_and_a_key_by_reference() {
        let base = ["--tenant", "acme", "--clearance", "public"];
        let with = |more: &[&str]| parse(&[&base[..], more].concat());
        let err = with(&["--embeddings-url", "http://127.0.0.1:1/v1"]).expect_err("no model");
        assert!(
            err.contains("--embeddings-model") || err.contains("--embeddings-dim"),
            "{err}"
        );
        let err = with(&["--embeddings-model", "m"]).expect_err("no url");
        assert!(err.contains("--embeddings-url"), "{err}");
        let literal = with(&[
            "--embeddings-url",
            "http://127.0.0.1:1/v1",
            "--embeddings-model",
            "m",
            "--embeddings-dim",
            "8",
            "--embeddings-key",
            "sk-literal",
        ])
        .expect("parses");
        let Err(err) = embedder_of(&literal) else {
            panic!("a literal key was accepted");
        };
        let err = err.to_string();
        assert!(
            err.contains("by reference") && !err.contains("sk-literal"),
            "{err}"
        );
        let args = with(&[
            "--embeddings-url",
            "http://127.0.0.1:1/v1",
            "--embeddings-model",
            "m",
            "--embeddings-dim",
            "8",
        ])
        .expect("parses");
        assert_eq!(embedder_of(&args).expect("embedder").dimension(), 8);
    }

    fn parse_postgres(extra: &[&str]) -> Result<VectorArgs, String> {
        parse_after(
            &["--docs", ".", "--tenant", "acme", "--clearance", "public"],
            extra,
        )
    }

    #[test]
    fn postgres_replaces_the_state_dir() {
        let err = parse_postgres(&[]).expect_err("no store");
        assert!(err.contains("--state-dir"), "{err}");
        let args = parse_postgres(&["--postgres", "postgres://micromcp@db.internal:5433/search"])
            .expect("parses");
        assert_eq!(args.state_dir, None);
        let (config, prefix) = postgres_of(&args).expect("valid").expect("postgres");
        assert_eq!(prefix.as_str(), "micromcp_vector");
        assert_eq!(config.get_user(), Some("micromcp"));
        assert_eq!(config.get_dbname(), Some("search"));
        assert_eq!(config.get_ports(), [5433]);
        assert_eq!(config.get_password(), None);
        let err = parse_postgres(&[
            "--postgres",
            "postgres://micromcp@db/search",
            "--state-dir",
            "s",
        ])
        .expect_err("both stores");
        assert!(err.contains("cannot be used with"), "{err}");
        let err = parse(&["--tenant", "acme", "--clearance", "public"])
            .and_then(|args| postgres_of(&args).map(|_| ()).map_err(|e| e.to_string()));
        assert!(err.is_ok(), "SQLite stays the default: {err:?}");
        let err = parse_postgres(&["--postgres-password-file", "pw"]).expect_err("no store");
        assert!(err.contains("--postgres"), "{err}");
        let args = parse(&[
            "--tenant",
            "acme",
            "--clearance",
            "public",
            "--postgres-password-file",
            "pw",
        ])
        .expect("clap lets it through next to --state-dir");
        let err = postgres_of(&args).expect_err("password file without --postgres");
        assert!(err.to_string().contains("needs --postgres"), "{err}");
        let args = parse(&[
            "--tenant",
            "acme",
            "--clearance",
            "public",
            "--postgres-table",
            "other",
        ])
        .expect("parses");
        let err = postgres_of(&args).expect_err("table without --postgres");
        assert!(err.to_string().contains("needs --postgres"), "{err}");
    }

    #[test]
    fn a_postgres_password_is_only_read_from_a_file_and_never_echoed() {
        for url in [
            "postgres://micromcp:hunter2@db/search",
            "postgres://micromcp:hunter2@db:notaport/search",
            "host=db user=micromcp password=hunter2 dbname=search",
            "host=db password=hunter2 bogus",
            "postgres://micromcp:hunter2@db/search?sslmode=bogus",
        ] {
            let args = parse_postgres(&["--postgres", url]).expect("parses");
            let err = postgres_of(&args).expect_err(url).to_string();
            assert!(!err.contains("hunter2"), "{url}: {err}");
            assert!(err.contains("--postgres"), "{url}: {err}");
        }
        let args = parse_postgres(&["--postgres", "postgres://micromcp:hunter2@db/search"])
            .expect("parses");
        let err = postgres_of(&args).expect_err("password in URL").to_string();
        assert!(err.contains("--postgres-password-file"), "{err}");

        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret pw\r\n").expect("write");
        let file_arg = file.to_str().expect("utf-8");
        let args = parse_postgres(&[
            "--postgres",
            "postgres://micromcp@db/search",
            "--postgres-password-file",
            file_arg,
        ])
        .expect("parses");
        let (config, _) = postgres_of(&args).expect("valid").expect("postgres");
        assert_eq!(config.get_password(), Some(&b"s3cret pw"[..]));
        assert!(!format!("{config:?}").contains("s3cret"), "Debug redacts");
        assert!(!store::describe_postgres(&config).contains("s3cret"));

        std::fs::write(&file, "\n").expect("write");
        let err = postgres_of(&args).expect_err("empty file").to_string();
        assert!(err.contains("is empty"), "{err}");
        let missing = dir.path().join("missing");
        let args = parse_postgres(&[
            "--postgres",
            "postgres://micromcp@db/search",
            "--postgres-password-file",
            missing.to_str().expect("utf-8"),
        ])
        .expect("parses");
        let err = format!("{:#}", postgres_of(&args).expect_err("missing file"));
        assert!(err.contains("--postgres-password-file"), "{err}");
    }

    #[test]
    fn the_postgres_table_is_an_identifier() {
        for bad in ["Bad", "a-b", "x; DROP TABLE y", &"a".repeat(42)] {
            let args = parse_postgres(&[
                "--postgres",
                "postgres://micromcp@db/search",
                "--postgres-table",
                bad,
            ])
            .expect("parses");
            let err = postgres_of(&args).expect_err(bad).to_string();
            assert!(err.contains("--postgres-table"), "{bad}: {err}");
        }
        let args = parse_postgres(&[
            "--postgres",
            "postgres://micromcp@db/search",
            "--postgres-table",
            "team_a_docs",
        ])
        .expect("parses");
        let (_, prefix) = postgres_of(&args).expect("valid").expect("postgres");
        assert_eq!(prefix.as_str(), "team_a_docs");
    }

    /// `run` opens the PostgreSQL store from the flags against the real server and the
    /// connection error path never shows a password file's content.
    #[tokio::test]
    async fn the_flags_open_the_postgres_store() {
        let db = store::testdb::TestDb::new();
        let url = std::env::var(store::testdb::URL_ENV)
            .unwrap_or_else(|_| store::testdb::DEFAULT_URL.to_owned());
        let args = parse_postgres(&["--postgres", &url, "--postgres-table", db.prefix.as_str()])
            .expect("parses");
        let (config, prefix) = postgres_of(&args).expect("valid").expect("postgres");
        let store = PostgresStore::open(config, &prefix)
            .await
            .unwrap_or_else(|err| panic!("{err}: start PostgreSQL, run scripts/install-pgvector"));
        assert!(!store.prepare("x".into()).await.expect("prepare"));
        assert_eq!(store.chunk_count().await.expect("count"), 0);
    }
}
