//! `micromcp serve vector`: semantic search filtered by the caller's tenant and clearance.
//!
//! Documents in a folder (`--docs`) carry front-matter labels (`tenant`, `classification`,
//! `owner`). They are chunked ([`chunk`]), embedded ([`embed`]: a built-in hashing embedder
//! or an OpenAI-compatible endpoint) and stored ([`store`]: SQLite in `--state-dir`),
//! incrementally and in the background ([`index`]). The one tool, `search` ([`service`]),
//! answers only from documents of the caller's tenant at or below its clearance; the caller
//! comes from an [`identity::IdentitySource`] (today: `--tenant`/`--clearance`), never from
//! the request, and the scope is applied inside the store query, before ranking.
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
    identity::{CallerIdentity, StaticIdentity},
    index::{IndexSettings, Progress, index_folder},
    labels::{Classification, check_tenant},
    service::VectorService,
    store::{SqliteStore, Store},
};

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

    /// Folder for the index (created if missing; holds vector-index.sqlite3).
    #[arg(long, value_name = "DIR")]
    pub state_dir: PathBuf,

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
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("cannot create --state-dir {}", args.state_dir.display()))?;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&args.state_dir.join(INDEX_FILE))?);
    let progress = Arc::new(Progress::default());
    // Mark the pass as running before serving, so the first search already says so.
    progress.start();
    tokio::spawn(index_in_background(
        settings,
        Arc::clone(&store),
        Arc::clone(&embedder),
        Arc::clone(&progress),
    ));
    tracing::info!(tenant = %caller.tenant, clearance = %caller.clearance, "vector service ready");
    let service = VectorService::new(
        store,
        embedder,
        Arc::new(StaticIdentity::new(caller)),
        progress,
    );
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

    fn parse(extra: &[&str]) -> Result<VectorArgs, String> {
        let base = ["vector", "--docs", ".", "--state-dir", "s"];
        Cli::try_parse_from(base.iter().chain(extra))
            .map(|cli| cli.args)
            .map_err(|err| err.to_string())
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
}
