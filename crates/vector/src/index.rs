//! Keeps the store in step with the docs folder, incrementally.
//!
//! One pass: list the folder (`.md`, `.markdown`, `.txt`; no symlinks, no hidden entries),
//! then
//! 1. remove documents whose file is gone;
//! 2. for files whose size or mtime changed, hash the content: same hash → only the file
//!    state is updated; new hash → the old version is **withdrawn at once** (so its old
//!    labels never outlive the file) and the file is queued;
//! 3. embed the queue, one transaction per document, reporting progress.
//!
//! Labels come from front matter with the launch defaults applied. A document that cannot
//! be labelled safely (malformed front matter, unknown classification, no tenant and no
//! `--default-tenant`) is skipped with a warning naming the file and the line.

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use sha2::{Digest, Sha256};

use crate::{
    chunk::{ChunkOptions, chunk_text},
    embed::Embedder,
    frontmatter::parse_front_matter,
    labels::{Classification, Labels},
    store::{FileState, NewChunk, NewDocument, Store},
};

/// File extensions indexed (compared lowercase).
const EXTENSIONS: [&str; 3] = ["md", "markdown", "txt"];
/// Log progress at least every this many documents…
const PROGRESS_EVERY_FILES: usize = 100;
/// …or this often, whichever comes first.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// How documents are found and labelled.
#[derive(Debug, Clone)]
pub struct IndexSettings {
    pub docs: PathBuf,
    /// The tenant of documents whose front matter names none; `None`: such documents are
    /// visible to nobody (skipped).
    pub default_tenant: Option<String>,
    /// The classification of documents whose front matter names none.
    pub default_classification: Classification,
    pub chunk: ChunkOptions,
    /// Larger files are skipped with a warning.
    pub max_file_bytes: u64,
}

impl IndexSettings {
    /// Everything besides the embedder that changes what is stored. Part of the index
    /// identity: changing a default re-labels (re-indexes) every document.
    pub fn fingerprint(&self) -> String {
        let chunk = self.chunk.sane();
        format!(
            "default-tenant={:?};default-classification={};chunk={}/{};schema=1",
            self.default_tenant, self.default_classification, chunk.max_chars, chunk.overlap_chars
        )
    }
}

/// Indexing progress, shared with searches so they can say the index is incomplete.
#[derive(Debug, Default)]
pub struct Progress {
    running: AtomicBool,
    done: AtomicUsize,
    total: AtomicUsize,
}

impl Progress {
    /// `Some((done, total))` while a pass is running.
    pub fn snapshot(&self) -> Option<(usize, usize)> {
        self.running.load(Ordering::SeqCst).then(|| {
            (
                self.done.load(Ordering::SeqCst),
                self.total.load(Ordering::SeqCst),
            )
        })
    }

    /// Marks a pass as started before anything is listed, so early searches know.
    pub fn start(&self) {
        self.done.store(0, Ordering::SeqCst);
        self.total.store(0, Ordering::SeqCst);
        self.running.store(true, Ordering::SeqCst);
    }

    fn finish(&self) {
        self.running.store(false, Ordering::SeqCst);
    }
}

/// What one pass did, by relative path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexReport {
    /// Whether the embedder or settings changed, so everything was re-embedded.
    pub reset: bool,
    /// (Re-)chunked and (re-)embedded.
    pub embedded: Vec<String>,
    /// Touched (new size or mtime) but the same content: not re-embedded.
    pub touched: Vec<String>,
    pub unchanged: usize,
    pub removed: Vec<String>,
    /// Not indexed, with the reason.
    pub skipped: Vec<(String, String)>,
}

/// A file found in the docs folder.
struct Found {
    rel: String,
    path: PathBuf,
    size: u64,
    mtime_ns: i64,
}

/// Runs one indexing pass. Errors are store or embedder failures that stop the pass; the
/// store then holds whatever was finished (each document is all or nothing).
pub async fn index_folder(
    settings: &IndexSettings,
    store: &dyn Store,
    embedder: &dyn Embedder,
    progress: &Progress,
) -> anyhow::Result<IndexReport> {
    progress.start();
    let result = run_pass(settings, store, embedder, progress).await;
    progress.finish();
    result
}

async fn run_pass(
    settings: &IndexSettings,
    store: &dyn Store,
    embedder: &dyn Embedder,
    progress: &Progress,
) -> anyhow::Result<IndexReport> {
    let mut report = IndexReport::default();
    let identity = format!("{}|{}", embedder.identity(), settings.fingerprint());
    report.reset = store.prepare(identity).await?;
    if report.reset {
        tracing::info!("embedder or labelling settings changed: re-indexing every document");
    }
    let found = list_folder(&settings.docs, &mut report)?;
    let mut stored = store.files().await?;
    // 1. Gone from disk.
    let on_disk: std::collections::BTreeSet<&str> = found.iter().map(|f| f.rel.as_str()).collect();
    let gone: Vec<String> = stored
        .keys()
        .filter(|path| !on_disk.contains(path.as_str()))
        .cloned()
        .collect();
    for path in gone {
        store.remove_document(path.clone()).await?;
        tracing::info!(path, "removed from the index: file deleted");
        report.removed.push(path);
    }
    // 2. Changed on disk: same content is only touched, new content is withdrawn and queued.
    let mut queue = Vec::new();
    for file in found {
        let previous = stored.remove(&file.rel);
        if let Some(previous) = &previous
            && previous.size == file.size
            && previous.mtime_ns == file.mtime_ns
        {
            report.unchanged += 1;
            continue;
        }
        if file.size > settings.max_file_bytes {
            skip(
                &mut report,
                &file.rel,
                format!(
                    "larger than --max-file-bytes ({} bytes)",
                    settings.max_file_bytes
                ),
            );
            if previous.is_some() {
                store.remove_document(file.rel.clone()).await?;
            }
            continue;
        }
        let Some(previous) = previous else {
            queue.push(file);
            continue;
        };
        match std::fs::read(&file.path) {
            Ok(bytes) if hash_hex(&bytes) == previous.hash => {
                let state = FileState {
                    size: file.size,
                    mtime_ns: file.mtime_ns,
                    hash: previous.hash,
                };
                store.set_file_state(file.rel.clone(), state).await?;
                report.touched.push(file.rel);
            }
            _ => {
                store.remove_document(file.rel.clone()).await?;
                queue.push(file);
            }
        }
    }
    // 3. Embed the queue.
    embed_queue(settings, store, embedder, progress, queue, &mut report).await?;
    Ok(report)
}

async fn embed_queue(
    settings: &IndexSettings,
    store: &dyn Store,
    embedder: &dyn Embedder,
    progress: &Progress,
    queue: Vec<Found>,
    report: &mut IndexReport,
) -> anyhow::Result<()> {
    let total = queue.len();
    progress.total.store(total, Ordering::SeqCst);
    let mut last_log = Instant::now();
    for (done, file) in queue.into_iter().enumerate() {
        match prepare_document(settings, &file) {
            Ok((document, texts)) => {
                let vectors = embedder.embed(&texts).await?;
                let document = attach_vectors(document, vectors)?;
                store.put_document(document).await?;
                report.embedded.push(file.rel);
            }
            Err(reason) => skip(report, &file.rel, reason),
        }
        progress.done.store(done + 1, Ordering::SeqCst);
        if (done + 1) % PROGRESS_EVERY_FILES == 0 || last_log.elapsed() >= PROGRESS_EVERY {
            tracing::info!(done = done + 1, total, "indexing");
            last_log = Instant::now();
        }
    }
    if total > 0 {
        tracing::info!(done = total, total, "indexing finished");
    }
    Ok(())
}

/// Reads, labels and chunks one file; returns the document (vectors still empty) and the
/// texts to embed, one per chunk.
fn prepare_document(
    settings: &IndexSettings,
    file: &Found,
) -> Result<(NewDocument, Vec<String>), String> {
    let bytes = std::fs::read(&file.path).map_err(|err| format!("cannot read: {err}"))?;
    if bytes.len() as u64 > settings.max_file_bytes {
        return Err(format!(
            "larger than --max-file-bytes ({} bytes)",
            settings.max_file_bytes
        ));
    }
    let hash = hash_hex(&bytes);
    let text = String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_owned())?;
    let parsed = parse_front_matter(&text).map_err(|err| err.to_string())?;
    let labels = resolve_labels(settings, &parsed.front)?;
    let chunks = chunk_text(parsed.body, settings.chunk);
    let title = parsed
        .front
        .title
        .clone()
        .or_else(|| chunks.iter().find_map(|c| c.heading.clone()))
        .unwrap_or_else(|| file_stem(&file.rel));
    let texts = chunks
        .iter()
        .map(|c| embedding_text(&title, c.heading.as_deref(), &c.text))
        .collect();
    let document = NewDocument {
        path: file.rel.clone(),
        state: FileState {
            size: text.len() as u64,
            mtime_ns: file.mtime_ns,
            hash,
        },
        title,
        labels,
        chunks: chunks
            .into_iter()
            .map(|c| NewChunk {
                heading: c.heading,
                text: c.text,
                embedding: Vec::new(),
            })
            .collect(),
    };
    Ok((document, texts))
}

/// Front matter plus defaults, failing closed.
fn resolve_labels(
    settings: &IndexSettings,
    front: &crate::frontmatter::FrontMatter,
) -> Result<Labels, String> {
    let tenant = front
        .tenant
        .clone()
        .or_else(|| settings.default_tenant.clone())
        .ok_or_else(|| {
            "no `tenant` in its front matter and no --default-tenant: visible to nobody, not indexed"
                .to_owned()
        })?;
    Ok(Labels {
        tenant,
        classification: front
            .classification
            .unwrap_or(settings.default_classification),
        owner: front.owner.clone(),
    })
}

/// What is embedded for a chunk: its title and heading give short chunks their context.
fn embedding_text(title: &str, heading: Option<&str>, text: &str) -> String {
    match heading {
        Some(heading) if heading != title => format!("{title}\n{heading}\n{text}"),
        _ => format!("{title}\n{text}"),
    }
}

fn attach_vectors(
    mut document: NewDocument,
    vectors: Vec<Vec<f32>>,
) -> anyhow::Result<NewDocument> {
    anyhow::ensure!(
        vectors.len() == document.chunks.len(),
        "the embedder returned {} vectors for {} chunks",
        vectors.len(),
        document.chunks.len()
    );
    for (chunk, vector) in document.chunks.iter_mut().zip(vectors) {
        chunk.embedding = vector;
    }
    Ok(document)
}

fn skip(report: &mut IndexReport, path: &str, reason: String) {
    tracing::warn!(path, %reason, "document skipped");
    report.skipped.push((path.to_owned(), reason));
}

fn hash_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn file_stem(rel: &str) -> String {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    name.rsplit_once('.')
        .map_or(name, |(stem, _)| stem)
        .to_owned()
}

/// Every indexable file under `root`, sorted by relative path.
fn list_folder(root: &Path, report: &mut IndexReport) -> anyhow::Result<Vec<Found>> {
    let mut found = Vec::new();
    let mut folders = vec![(root.to_path_buf(), String::new())];
    while let Some((folder, prefix)) = folders.pop() {
        let entries = std::fs::read_dir(&folder)
            .map_err(|err| anyhow::anyhow!("cannot list {}: {err}", folder.display()))?;
        for entry in entries {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                skip(
                    report,
                    &format!("{prefix}{}", entry.file_name().to_string_lossy()),
                    "name is not UTF-8".into(),
                );
                continue;
            };
            // Hidden entries (.git, editor swap files) are not documents.
            if name.starts_with('.') {
                continue;
            }
            let rel = format!("{prefix}{name}");
            // `file_type` does not follow symlinks: a link out of the folder is never read.
            let file_type = entry.file_type()?;
            if file_type.is_dir() {
                folders.push((entry.path(), format!("{rel}/")));
            } else if file_type.is_file() && has_document_extension(&name) {
                let metadata = entry.metadata()?;
                found.push(Found {
                    rel,
                    path: entry.path(),
                    size: metadata.len(),
                    mtime_ns: mtime_ns(metadata.modified().ok()),
                });
            } else if file_type.is_symlink() && has_document_extension(&name) {
                skip(report, &rel, "symbolic links are not followed".into());
            }
        }
    }
    found.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(found)
}

fn has_document_extension(name: &str) -> bool {
    name.rsplit_once('.')
        .is_some_and(|(_, ext)| EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()))
}

fn mtime_ns(modified: Option<SystemTime>) -> i64 {
    modified
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .and_then(|d| i64::try_from(d.as_nanos()).ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
