//! Keeps the store in step with the docs folder, incrementally.
//!
//! One pass: list the folder (`.md`, `.markdown`, `.txt`; no symlinks, no hidden entries,
//! no hard-linked files), then
//! 1. remove documents whose file is gone;
//! 2. read and hash every listed file (hashing is cheap next to embedding, and size and
//!    mtime can be kept or reset by whoever edits a file): same hash → at most the file
//!    state is updated; new hash → the old version is **withdrawn at once** (so its old
//!    labels never outlive the file) and the file is queued;
//! 3. embed the queue, one transaction per document, reporting progress.
//!
//! Every file is opened relative to directory fds, one component at a time, without
//! following symlinks (`openat(…, O_NOFOLLOW)`), then checked through the opened fd: a
//! regular file, with one link, the very file (device and inode) the listing saw, no larger
//! than `--max-file-bytes`; it is read through a cap. A file swapped for a symlink, a device
//! or a FIFO after the listing is refused without being read.
//!
//! Labels come from front matter with the launch defaults applied. A document that cannot
//! be labelled safely (malformed front matter, unknown classification, no tenant and no
//! `--default-tenant`) is skipped with a warning naming the file and the line.

use std::{
    io::Read as _,
    os::fd::{AsFd, BorrowedFd, OwnedFd},
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, Stat};
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
    /// identity: changing a default re-labels (re-indexes) every document. It names the
    /// docs folder by a hash of its canonical path ([`ROOT_TAG`]), so an index is never
    /// silently shared by two folders (see [`root_of_identity`]).
    pub fn fingerprint(&self) -> String {
        let chunk = self.chunk.sane();
        let root = std::fs::canonicalize(&self.docs).unwrap_or_else(|_| self.docs.clone());
        let root_hash = hex::encode(&Sha256::digest(root.as_os_str().as_encoded_bytes())[..16]);
        format!(
            "default-tenant={:?};default-classification={};chunk={}/{};schema=2;{ROOT_TAG}{root_hash}",
            self.default_tenant, self.default_classification, chunk.max_chars, chunk.overlap_chars
        )
    }
}

/// Marks the docs folder in an index identity: `docs-root=` and 32 hex digits.
pub const ROOT_TAG: &str = "docs-root=";

/// The docs-folder hash an index identity names; `None` for identities written before it
/// was recorded.
pub fn root_of_identity(identity: &str) -> Option<&str> {
    identity
        .rsplit_once(ROOT_TAG)
        .map(|(_, rest)| rest.split([';', '|']).next().unwrap_or(rest))
}

/// The index identity for these settings and embedder.
pub fn index_identity(settings: &IndexSettings, embedder: &dyn Embedder) -> String {
    format!("{}|{}", embedder.identity(), settings.fingerprint())
}

/// Indexing progress, shared with searches so they can say the index is incomplete.
#[derive(Debug, Default)]
pub struct Progress {
    running: AtomicBool,
    done: AtomicUsize,
    total: AtomicUsize,
}

impl Progress {
    /// Whether a pass is running: all a caller is told (counts span every tenant).
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }

    /// `Some((done, total))` while a pass is running, for the log only: the counts cover
    /// every tenant's documents.
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

    /// Sets the counts of a running pass, as if `done` of `total` documents were embedded.
    #[cfg(test)]
    pub(crate) fn set_counts(&self, done: usize, total: usize) {
        self.done.store(done, Ordering::SeqCst);
        self.total.store(total, Ordering::SeqCst);
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
#[derive(Debug, Clone, PartialEq, Eq)]
struct Found {
    /// Relative to the docs folder, `/`-separated; no component is empty, `.` or `..`.
    rel: String,
    size: u64,
    mtime_ns: i64,
    /// Device and inode the listing saw: the file read must be this one.
    dev: u64,
    ino: u64,
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
    let mut report = IndexReport {
        reset: store.prepare(index_identity(settings, embedder)).await?,
        ..IndexReport::default()
    };
    if report.reset {
        tracing::info!(
            "embedder, labelling settings or docs folder changed: re-indexing every document"
        );
    }
    let root = open_root(&settings.docs)?;
    let found = list_folder(root.as_fd(), &mut report)?;
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
    // 2. Every file is read and hashed: size and mtime alone can hide a relabel (same
    //    length, `touch -d`). Same content is at most touched; new content is withdrawn
    //    and queued; an unreadable file is withdrawn.
    let mut queue = Vec::new();
    for file in found {
        let previous = stored.remove(&file.rel);
        if file.size > settings.max_file_bytes {
            skip(&mut report, &file.rel, too_large(settings.max_file_bytes));
            if previous.is_some() {
                store.remove_document(file.rel.clone()).await?;
            }
            continue;
        }
        let Some(previous) = previous else {
            queue.push(file);
            continue;
        };
        match read_document(root.as_fd(), &file, settings.max_file_bytes) {
            Ok(bytes) if hash_hex(&bytes) == previous.hash => {
                if previous.size == file.size && previous.mtime_ns == file.mtime_ns {
                    report.unchanged += 1;
                    continue;
                }
                let state = FileState {
                    size: file.size,
                    mtime_ns: file.mtime_ns,
                    hash: previous.hash,
                };
                store.set_file_state(file.rel.clone(), state).await?;
                report.touched.push(file.rel);
            }
            Ok(_) => {
                store.remove_document(file.rel.clone()).await?;
                queue.push(file);
            }
            Err(reason) => {
                store.remove_document(file.rel.clone()).await?;
                skip(&mut report, &file.rel, reason);
            }
        }
    }
    // 3. Embed the queue.
    embed_queue(
        settings,
        root.as_fd(),
        store,
        embedder,
        progress,
        queue,
        &mut report,
    )
    .await?;
    Ok(report)
}

async fn embed_queue(
    settings: &IndexSettings,
    root: BorrowedFd<'_>,
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
        match prepare_document(settings, root, &file) {
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
    root: BorrowedFd<'_>,
    file: &Found,
) -> Result<(NewDocument, Vec<String>), String> {
    let bytes = read_document(root, file, settings.max_file_bytes)?;
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

fn too_large(max_file_bytes: u64) -> String {
    format!("larger than --max-file-bytes ({max_file_bytes} bytes)")
}

/// The docs folder itself (the one path resolved normally: the operator chose it).
fn open_root(docs: &Path) -> anyhow::Result<OwnedFd> {
    rustix::fs::open(
        docs,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|err| anyhow::anyhow!("cannot open --docs {}: {err}", docs.display()))
}

/// Opens the folder `rel` (`""`, or `/`-separated components with an optional trailing
/// `/`) beneath `root`, one component at a time, refusing symlinks at every step.
fn open_dir(root: BorrowedFd<'_>, rel: &str) -> rustix::io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut dir = rustix::fs::openat(root, ".", flags, Mode::empty())?;
    for name in rel.split('/').filter(|c| !c.is_empty()) {
        dir = rustix::fs::openat(&dir, name, flags, Mode::empty())?;
    }
    Ok(dir)
}

/// Why `stat` is not the regular, singly-linked file `file` the listing saw, if it is not.
fn refusal(stat: &Stat, file: &Found, max_file_bytes: u64) -> Option<String> {
    let kind = FileType::from_raw_mode(stat.st_mode);
    if kind != FileType::RegularFile {
        return Some(format!(
            "not a regular file ({}): not read",
            kind_name(kind)
        ));
    }
    if link_count(stat) > 1 {
        return Some(hard_link_reason(link_count(stat)));
    }
    if (dev_of(stat), ino_of(stat)) != (file.dev, file.ino) {
        return Some("replaced by another file since it was listed: not read".to_owned());
    }
    if size_of(stat) > max_file_bytes {
        return Some(too_large(max_file_bytes));
    }
    None
}

/// Reads the file `file` names beneath `root`, refusing (without reading) anything but the
/// regular file the listing saw: no symlink at any component, no FIFO or device, no other
/// inode, at most `max_file_bytes` (read through a cap, so a file growing meanwhile is not
/// read whole either).
fn read_document(
    root: BorrowedFd<'_>,
    file: &Found,
    max_file_bytes: u64,
) -> Result<Vec<u8>, String> {
    let cannot = |err: rustix::io::Errno| match err {
        rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => {
            "a symbolic link was found in its path: not read".to_owned()
        }
        err => format!("cannot read: {err}"),
    };
    let (folder, name) = file.rel.rsplit_once('/').unwrap_or(("", &file.rel));
    let dir = open_dir(root, folder).map_err(cannot)?;
    // O_PATH opens nothing for real (a FIFO would block, a device could act on the open):
    // the type is checked before the real open. O_PATH | O_NOFOLLOW yields the symlink
    // itself, refused as not a regular file.
    let probe = rustix::fs::openat(
        &dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(cannot)?;
    let before = rustix::fs::fstat(&probe).map_err(cannot)?;
    if let Some(reason) = refusal(&before, file, max_file_bytes) {
        return Err(reason);
    }
    // NONBLOCK and NOCTTY: should a FIFO or a terminal be swapped in after the probe, the
    // open neither hangs nor takes a controlling terminal; the fstat below then refuses it.
    let fd = rustix::fs::openat(
        &dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(cannot)?;
    let stat = rustix::fs::fstat(&fd).map_err(cannot)?;
    if let Some(reason) = refusal(&stat, file, max_file_bytes) {
        return Err(reason);
    }
    let mut bytes = Vec::new();
    std::fs::File::from(fd)
        .take(max_file_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|err| format!("cannot read: {err}"))?;
    if bytes.len() as u64 > max_file_bytes {
        return Err(too_large(max_file_bytes));
    }
    Ok(bytes)
}

/// Every indexable file beneath `root`, sorted by relative path. Folders are listed through
/// their own fds (opened without following symlinks) and entries are `statat`ed without
/// following them: the device and inode recorded here are checked again when reading.
fn list_folder(root: BorrowedFd<'_>, report: &mut IndexReport) -> anyhow::Result<Vec<Found>> {
    let mut found = Vec::new();
    let mut folders = vec![String::new()];
    while let Some(prefix) = folders.pop() {
        let dir = match open_dir(root, &prefix) {
            Ok(dir) => dir,
            Err(err) if prefix.is_empty() => anyhow::bail!("cannot list --docs: {err}"),
            // Swapped for a symlink or removed since it was listed: its documents are
            // withdrawn (they are no longer found), nothing outside is read.
            Err(err) => {
                skip(report, &prefix, format!("folder not listed: {err}"));
                continue;
            }
        };
        let entries =
            Dir::read_from(&dir).map_err(|err| anyhow::anyhow!("cannot list {prefix:?}: {err}"))?;
        for entry in entries {
            let entry = entry.map_err(|err| anyhow::anyhow!("cannot list {prefix:?}: {err}"))?;
            let raw = entry.file_name();
            let Ok(name) = raw.to_str() else {
                skip(
                    report,
                    &format!("{prefix}{}", raw.to_string_lossy()),
                    "name is not UTF-8".into(),
                );
                continue;
            };
            // Hidden entries (.git, editor swap files, `.` and `..`) are not documents.
            if name.starts_with('.') {
                continue;
            }
            let rel = format!("{prefix}{name}");
            let stat = match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(stat) => stat,
                // Deleted since it was listed.
                Err(rustix::io::Errno::NOENT) => continue,
                Err(err) => {
                    skip(report, &rel, format!("cannot stat: {err}"));
                    continue;
                }
            };
            let kind = FileType::from_raw_mode(stat.st_mode);
            if kind == FileType::Directory {
                folders.push(format!("{rel}/"));
            } else if !has_document_extension(name) {
                continue;
            } else if kind == FileType::RegularFile && link_count(&stat) > 1 {
                skip(report, &rel, hard_link_reason(link_count(&stat)));
            } else if kind == FileType::RegularFile {
                found.push(Found {
                    rel,
                    size: size_of(&stat),
                    mtime_ns: mtime_ns(&stat),
                    dev: dev_of(&stat),
                    ino: ino_of(&stat),
                });
            } else if kind == FileType::Symlink {
                skip(report, &rel, "symbolic links are not followed".into());
            } else {
                skip(
                    report,
                    &rel,
                    format!("not a regular file ({}): not read", kind_name(kind)),
                );
            }
        }
    }
    found.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(found)
}

fn hard_link_reason(links: u64) -> String {
    format!(
        "has {links} hard links: not indexed (another name of the file may lie outside the \
         docs folder)"
    )
}

fn kind_name(kind: FileType) -> &'static str {
    match kind {
        FileType::RegularFile => "regular file",
        FileType::Directory => "directory",
        FileType::Symlink => "symbolic link",
        FileType::Fifo => "FIFO",
        FileType::Socket => "socket",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        FileType::Unknown => "unknown",
    }
}

/// `st_nlink`, `st_dev` and `st_ino` differ in width between architectures.
#[allow(clippy::useless_conversion)]
fn link_count(stat: &Stat) -> u64 {
    u64::from(stat.st_nlink)
}

#[allow(clippy::useless_conversion)]
fn dev_of(stat: &Stat) -> u64 {
    u64::from(stat.st_dev)
}

#[allow(clippy::useless_conversion)]
fn ino_of(stat: &Stat) -> u64 {
    u64::from(stat.st_ino)
}

fn size_of(stat: &Stat) -> u64 {
    u64::try_from(stat.st_size).unwrap_or(0)
}

fn has_document_extension(name: &str) -> bool {
    name.rsplit_once('.')
        .is_some_and(|(_, ext)| EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()))
}

/// Modification time in nanoseconds since the Unix epoch (0 before it or beyond i64).
#[allow(clippy::useless_conversion)]
fn mtime_ns(stat: &Stat) -> i64 {
    i64::from(stat.st_mtime)
        .checked_mul(1_000_000_000)
        .and_then(|s| s.checked_add(i64::try_from(stat.st_mtime_nsec).ok()?))
        .filter(|&ns| ns >= 0)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
