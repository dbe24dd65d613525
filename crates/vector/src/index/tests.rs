//! Incremental indexing on a real folder and a real SQLite file.

use std::{
    collections::BTreeMap,
    fs,
    io::Write as _,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use super::*;
use crate::{
    embed::{BoxFuture, EmbedError, HashEmbedder},
    identity::CallerIdentity,
    query::{Scope, SearchFilter},
    store::{SqliteStore, testdb::TestDb},
};

/// The real hashing embedder, recording every text it is asked to embed.
struct Recording {
    inner: HashEmbedder,
    texts: Mutex<Vec<String>>,
}

impl Recording {
    fn new(inner: HashEmbedder) -> Self {
        Self {
            inner,
            texts: Mutex::default(),
        }
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.texts.lock().expect("lock"))
    }
}

impl Embedder for Recording {
    fn identity(&self) -> String {
        self.inner.identity()
    }

    fn dimension(&self) -> usize {
        self.inner.dimension()
    }

    fn embed<'a>(
        &'a self,
        texts: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Vec<f32>>, EmbedError>> {
        self.texts
            .lock()
            .expect("lock")
            .extend(texts.iter().cloned());
        self.inner.embed(texts)
    }
}

fn settings(docs: &Path) -> IndexSettings {
    IndexSettings {
        docs: docs.to_path_buf(),
        default_tenant: None,
        default_classification: Classification::Restricted,
        chunk: ChunkOptions::default(),
        max_file_bytes: 1024 * 1024,
    }
}

fn write(docs: &Path, rel: &str, text: &str) {
    let path = docs.join(rel);
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    fs::write(path, text).expect("write");
}

fn labelled(tenant: &str, classification: &str, body: &str) -> String {
    format!("---\ntenant: {tenant}\nclassification: {classification}\n---\n{body}\n")
}

struct Fixture {
    _dir: tempfile::TempDir,
    docs: std::path::PathBuf,
    store: Box<dyn Store>,
    embedder: Recording,
    progress: Progress,
    /// The PostgreSQL tables, dropped after the store.
    _db: Option<TestDb>,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let docs = dir.path().join("docs");
        fs::create_dir(&docs).expect("mkdir");
        let store = SqliteStore::open(&dir.path().join("index.sqlite3")).expect("open");
        Self {
            _dir: dir,
            docs,
            store: Box::new(store),
            embedder: Recording::new(HashEmbedder::default()),
            progress: Progress::default(),
            _db: None,
        }
    }

    /// The same, on the PostgreSQL store.
    async fn postgres() -> Self {
        let db = TestDb::new();
        let store = db.open().await;
        Self {
            store: Box::new(store),
            _db: Some(db),
            ..Self::new()
        }
    }

    async fn index(&self, settings: &IndexSettings) -> IndexReport {
        index_folder(
            settings,
            self.store.as_ref(),
            &self.embedder,
            &self.progress,
        )
        .await
        .expect("index")
    }

    /// Paths of every chunk `tenant` at `restricted` sees for `query`.
    async fn search(&self, tenant: &str, query: &str) -> Vec<(String, String)> {
        let caller = CallerIdentity {
            tenant: tenant.to_owned(),
            clearance: Classification::Restricted,
        };
        let vector = HashEmbedder::default().embed_one(query);
        self.store
            .search(vector, Scope::new(&caller, &SearchFilter::default()), 50)
            .await
            .expect("search")
            .into_iter()
            .map(|hit| (hit.path, hit.text))
            .collect()
    }
}

#[tokio::test]
async fn only_touched_modified_and_deleted_files_are_reprocessed() {
    only_touched_modified_and_deleted_files_are_reprocessed_on(Fixture::new()).await;
}

#[tokio::test]
async fn only_touched_modified_and_deleted_files_are_reprocessed_on_postgres() {
    only_touched_modified_and_deleted_files_are_reprocessed_on(Fixture::postgres().await).await;
}

async fn only_touched_modified_and_deleted_files_are_reprocessed_on(f: Fixture) {
    write(
        &f.docs,
        "a.md",
        &labelled("acme", "public", "# Alpha\nApples grow on trees."),
    );
    write(
        &f.docs,
        "sub/b.md",
        &labelled("acme", "public", "Bananas are yellow."),
    );
    write(
        &f.docs,
        "c.txt",
        &labelled("acme", "public", "Cherries are red."),
    );
    let s = settings(&f.docs);

    let first = f.index(&s).await;
    assert_eq!(first.embedded, ["a.md", "c.txt", "sub/b.md"]);
    assert_eq!(f.embedder.take().len(), 3);
    assert_eq!(f.progress.snapshot(), None, "pass finished");

    // Nothing changed: read and hashed, nothing embedded.
    let second = f.index(&s).await;
    assert_eq!((second.unchanged, second.embedded.len()), (3, 0));
    assert!(f.embedder.take().is_empty());

    // Touch: new mtime, same bytes: recorded, not re-embedded.
    let file = fs::File::options()
        .write(true)
        .open(f.docs.join("a.md"))
        .expect("open");
    file.set_modified(SystemTime::now() + Duration::from_secs(5))
        .expect("touch");
    let touched = f.index(&s).await;
    assert_eq!(touched.touched, ["a.md"]);
    assert!(touched.embedded.is_empty());
    assert!(f.embedder.take().is_empty());
    assert_eq!(f.index(&s).await.unchanged, 3, "the new mtime was stored");

    // Modify: only that file is re-chunked and re-embedded; the old text is gone.
    write(
        &f.docs,
        "sub/b.md",
        &labelled("acme", "public", "Blueberries are blue."),
    );
    let modified = f.index(&s).await;
    assert_eq!(modified.embedded, ["sub/b.md"]);
    let texts = f.embedder.take();
    assert_eq!(texts.len(), 1);
    assert!(texts[0].contains("Blueberries"), "{texts:?}");
    let hits = f.search("acme", "bananas blueberries").await;
    assert!(hits.iter().any(|(_, t)| t.contains("Blueberries")));
    assert!(!hits.iter().any(|(_, t)| t.contains("Bananas")), "{hits:?}");

    // Delete: removed, nothing embedded.
    fs::remove_file(f.docs.join("c.txt")).expect("rm");
    let deleted = f.index(&s).await;
    assert_eq!(deleted.removed, ["c.txt"]);
    assert!(f.embedder.take().is_empty());
    assert!(
        !f.search("acme", "cherries")
            .await
            .iter()
            .any(|(p, _)| p == "c.txt")
    );
}

#[tokio::test]
async fn a_new_embedder_or_new_defaults_reindex_everything() {
    a_new_embedder_or_new_defaults_reindex_everything_on(Fixture::new()).await;
}

#[tokio::test]
async fn a_new_embedder_or_new_defaults_reindex_everything_on_postgres() {
    a_new_embedder_or_new_defaults_reindex_everything_on(Fixture::postgres().await).await;
}

async fn a_new_embedder_or_new_defaults_reindex_everything_on(f: Fixture) {
    write(&f.docs, "a.md", &labelled("acme", "public", "Apples."));
    write(&f.docs, "b.md", &labelled("acme", "public", "Bananas."));
    let s = settings(&f.docs);
    f.index(&s).await;
    f.embedder.take();

    let other = Recording::new(HashEmbedder::new(256));
    let report = index_folder(&s, f.store.as_ref(), &other, &f.progress)
        .await
        .expect("index");
    assert!(report.reset);
    assert_eq!(report.embedded.len(), 2);
    assert_eq!(other.take().len(), 2);

    let mut relabelled = s.clone();
    relabelled.default_classification = Classification::Public;
    let report = index_folder(&relabelled, f.store.as_ref(), &other, &f.progress)
        .await
        .expect("index");
    assert!(
        report.reset,
        "changing a labelling default re-labels everything"
    );
    assert_eq!(report.embedded.len(), 2);
}

#[tokio::test]
async fn unlabelled_or_malformed_documents_fail_closed() {
    unlabelled_or_malformed_documents_fail_closed_on(Fixture::new()).await;
}

#[tokio::test]
async fn unlabelled_or_malformed_documents_fail_closed_on_postgres() {
    unlabelled_or_malformed_documents_fail_closed_on(Fixture::postgres().await).await;
}

async fn unlabelled_or_malformed_documents_fail_closed_on(f: Fixture) {
    write(
        &f.docs,
        "no-tenant.md",
        "---\nclassification: public\n---\nOrphan text.\n",
    );
    write(
        &f.docs,
        "bad.md",
        "---\ntenant: acme\nclassification: top-secret\n---\nText.\n",
    );
    write(
        &f.docs,
        "no-class.md",
        "---\ntenant: acme\n---\nUnclassified text.\n",
    );
    write(&f.docs, "plain.txt", "No front matter at all.\n");
    write(&f.docs, "notes.pdf", "not a document type we index");
    write(
        &f.docs,
        ".hidden/x.md",
        &labelled("acme", "public", "hidden"),
    );
    let report = f.index(&settings(&f.docs)).await;
    assert_eq!(report.embedded, ["no-class.md"]);
    let reasons: BTreeMap<&str, &str> = report
        .skipped
        .iter()
        .map(|(p, r)| (p.as_str(), r.as_str()))
        .collect();
    assert!(
        reasons["no-tenant.md"].contains("visible to nobody"),
        "{reasons:?}"
    );
    assert!(
        reasons["plain.txt"].contains("visible to nobody"),
        "{reasons:?}"
    );
    assert!(reasons["bad.md"].contains("line 3"), "{reasons:?}");
    assert!(
        reasons["bad.md"].contains("unknown classification"),
        "{reasons:?}"
    );
    assert_eq!(reasons.len(), 3, "{reasons:?}");

    // Missing classification counts as restricted.
    let caller = CallerIdentity {
        tenant: "acme".to_owned(),
        clearance: Classification::Confidential,
    };
    let vector = HashEmbedder::default().embed_one("unclassified text");
    let hits = f
        .store
        .search(
            vector.clone(),
            Scope::new(&caller, &SearchFilter::default()),
            5,
        )
        .await
        .expect("search");
    assert!(
        hits.is_empty(),
        "confidential clearance saw a restricted doc: {hits:?}"
    );

    // With a default tenant, unlabelled documents belong to it.
    let mut with_default = settings(&f.docs);
    with_default.default_tenant = Some("acme".to_owned());
    let report = f.index(&with_default).await;
    assert!(
        report.embedded.contains(&"plain.txt".to_owned()),
        "{report:?}"
    );
    assert!(
        report.embedded.contains(&"no-tenant.md".to_owned()),
        "{report:?}"
    );
}

#[tokio::test]
async fn a_document_that_becomes_malformed_is_withdrawn() {
    a_document_that_becomes_malformed_is_withdrawn_on(Fixture::new()).await;
}

#[tokio::test]
async fn a_document_that_becomes_malformed_is_withdrawn_on_postgres() {
    a_document_that_becomes_malformed_is_withdrawn_on(Fixture::postgres().await).await;
}

async fn a_document_that_becomes_malformed_is_withdrawn_on(f: Fixture) {
    write(&f.docs, "a.md", &labelled("acme", "public", "Apples."));
    let s = settings(&f.docs);
    f.index(&s).await;
    assert_eq!(f.search("acme", "apples").await.len(), 1);
    write(
        &f.docs,
        "a.md",
        "---\ntenant: acme\nclassification: publik\n---\nApples.\n",
    );
    let report = f.index(&s).await;
    assert_eq!(report.skipped.len(), 1);
    assert!(
        f.search("acme", "apples").await.is_empty(),
        "old labels outlived the file"
    );
}

#[tokio::test]
async fn a_relabelled_document_moves_tenant_at_once() {
    a_relabelled_document_moves_tenant_at_once_on(Fixture::new()).await;
}

#[tokio::test]
async fn a_relabelled_document_moves_tenant_at_once_on_postgres() {
    a_relabelled_document_moves_tenant_at_once_on(Fixture::postgres().await).await;
}

async fn a_relabelled_document_moves_tenant_at_once_on(f: Fixture) {
    write(
        &f.docs,
        "a.md",
        &labelled("acme", "public", "Quarterly numbers."),
    );
    let s = settings(&f.docs);
    f.index(&s).await;
    write(
        &f.docs,
        "a.md",
        &labelled("globex", "public", "Quarterly numbers."),
    );
    f.index(&s).await;
    assert!(f.search("acme", "quarterly numbers").await.is_empty());
    assert_eq!(f.search("globex", "quarterly numbers").await.len(), 1);
}

#[cfg(unix)]
#[tokio::test]
async fn symlinks_are_not_followed() {
    let f = Fixture::new();
    let outside = f.docs.parent().expect("parent").join("outside.md");
    fs::write(
        &outside,
        labelled("acme", "public", "Secret outside the folder."),
    )
    .expect("write");
    std::os::unix::fs::symlink(&outside, f.docs.join("link.md")).expect("symlink");
    let report = f.index(&settings(&f.docs)).await;
    assert!(report.embedded.is_empty());
    assert_eq!(report.skipped[0].0, "link.md");
    assert!(f.search("acme", "secret outside").await.is_empty());
}

#[tokio::test]
async fn oversized_files_are_skipped() {
    let f = Fixture::new();
    write(
        &f.docs,
        "big.md",
        &labelled("acme", "public", &"word ".repeat(100)),
    );
    let mut s = settings(&f.docs);
    s.max_file_bytes = 100;
    let report = f.index(&s).await;
    assert!(
        report.skipped[0].1.contains("--max-file-bytes"),
        "{report:?}"
    );
    assert!(f.embedder.take().is_empty());
}

#[test]
fn progress_is_reported_only_while_running() {
    let progress = Arc::new(Progress::default());
    assert_eq!(progress.snapshot(), None);
    progress.start();
    progress.total.store(10, Ordering::SeqCst);
    progress.done.store(4, Ordering::SeqCst);
    assert_eq!(progress.snapshot(), Some((4, 10)));
    progress.finish();
    assert_eq!(progress.snapshot(), None);
}

/// Lists `docs` and returns the entry for `rel`.
fn listed(docs: &Path, rel: &str) -> Found {
    let root = open_root(docs).expect("root");
    let mut report = IndexReport::default();
    list_folder(root.as_fd(), &mut report)
        .expect("list")
        .into_iter()
        .find(|f| f.rel == rel)
        .unwrap_or_else(|| panic!("{rel} not listed: {report:?}"))
}

fn read(docs: &Path, file: &Found, max: u64) -> Result<Vec<u8>, String> {
    let root = open_root(docs).expect("root");
    read_document(root.as_fd(), file, max)
}

/// The listing sees a regular file; before it is read, the file (or a folder on its path)
/// becomes a symlink out of the docs folder, or another file. Nothing outside is read.
#[test]
fn a_file_swapped_for_a_symlink_after_listing_is_not_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let docs = dir.path().join("docs");
    let secret = labelled("acme", "public", "The private key is hunter2.");
    fs::write(dir.path().join("id_key.md"), &secret).expect("write");
    fs::create_dir_all(dir.path().join("outside/sub")).expect("mkdir");
    fs::write(dir.path().join("outside/sub/b.md"), &secret).expect("write");
    write(&docs, "a.md", &secret);
    write(&docs, "sub/b.md", &secret);
    let a = listed(&docs, "a.md");
    let b = listed(&docs, "sub/b.md");
    assert_eq!(
        read(&docs, &a, 1 << 20).expect("regular file"),
        secret.as_bytes()
    );

    // The file itself becomes a symlink.
    fs::remove_file(docs.join("a.md")).expect("rm");
    std::os::unix::fs::symlink(dir.path().join("id_key.md"), docs.join("a.md")).expect("ln");
    let err = read(&docs, &a, 1 << 20).expect_err("symlink followed");
    assert!(err.contains("not a regular file (symbolic link)"), "{err}");

    // A folder on its path becomes a symlink.
    fs::rename(docs.join("sub"), dir.path().join("old-sub")).expect("mv");
    std::os::unix::fs::symlink(dir.path().join("outside/sub"), docs.join("sub")).expect("ln");
    let err = read(&docs, &b, 1 << 20).expect_err("folder symlink followed");
    assert!(err.contains("symbolic link"), "{err}");

    // Another regular file is renamed over it (e.g. a hard link made elsewhere).
    fs::copy(dir.path().join("id_key.md"), docs.join(".new")).expect("cp");
    fs::rename(docs.join(".new"), docs.join("a.md")).expect("mv");
    let err = read(&docs, &a, 1 << 20).expect_err("another inode read");
    assert!(err.contains("replaced by another file"), "{err}");
}

/// `/dev/zero` behind a symlink, a FIFO (whose open would block) and a file that grew past
/// the cap after the listing are refused before any read.
#[test]
fn a_device_or_oversized_file_is_never_read_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let docs = dir.path().join("docs");
    for name in ["zero.md", "fifo.md", "grown.md"] {
        write(&docs, name, "small");
    }
    let zero = listed(&docs, "zero.md");
    let grown = listed(&docs, "grown.md");

    fs::remove_file(docs.join("zero.md")).expect("rm");
    std::os::unix::fs::symlink("/dev/zero", docs.join("zero.md")).expect("ln");
    let err = read(&docs, &zero, 1 << 20).expect_err("/dev/zero read");
    assert!(err.contains("not a regular file"), "{err}");

    // A FIFO with the inode the listing recorded: only its type stops the read.
    fs::remove_file(docs.join("fifo.md")).expect("rm");
    let root = open_root(&docs).expect("root");
    rustix::fs::mknodat(&root, "fifo.md", FileType::Fifo, Mode::RUSR | Mode::WUSR, 0)
        .expect("mkfifo");
    // The listing skips it (below); the read is given its own device and inode.
    let stat = rustix::fs::statat(&root, "fifo.md", AtFlags::SYMLINK_NOFOLLOW).expect("stat");
    let fifo = Found {
        rel: "fifo.md".to_owned(),
        size: 0,
        mtime_ns: 0,
        dev: dev_of(&stat),
        ino: ino_of(&stat),
    };
    let err = read(&docs, &fifo, 1 << 20).expect_err("FIFO read");
    assert!(err.contains("not a regular file (FIFO)"), "{err}");
    // And the pass skips it with the reason, without hanging.
    let mut report = IndexReport::default();
    list_folder(root.as_fd(), &mut report).expect("list");
    assert!(
        report
            .skipped
            .iter()
            .any(|(p, r)| p == "fifo.md" && r.contains("FIFO")),
        "{report:?}"
    );

    // Grown past --max-file-bytes since the listing (same inode).
    fs::OpenOptions::new()
        .append(true)
        .open(docs.join("grown.md"))
        .expect("open")
        .write_all(&vec![b'x'; 64 * 1024])
        .expect("grow");
    let err = read(&docs, &grown, 1024).expect_err("oversized read");
    assert!(err.contains("--max-file-bytes"), "{err}");
    assert_eq!(
        read(&docs, &grown, 1 << 20).expect("within the cap").len(),
        5 + 64 * 1024
    );
}

/// A hard link inside the folder may be another name of a file outside it: not indexed.
#[tokio::test]
async fn hard_linked_files_are_not_indexed() {
    let f = Fixture::new();
    let outside = f.docs.parent().expect("parent").join("outside.md");
    fs::write(
        &outside,
        labelled("acme", "public", "Secret outside the folder."),
    )
    .expect("write");
    fs::hard_link(&outside, f.docs.join("link.md")).expect("hard link");
    write(&f.docs, "ok.md", &labelled("acme", "public", "Inside."));
    let report = f.index(&settings(&f.docs)).await;
    assert_eq!(report.embedded, ["ok.md"]);
    assert_eq!(report.skipped.len(), 1, "{report:?}");
    assert_eq!(report.skipped[0].0, "link.md");
    assert!(report.skipped[0].1.contains("hard links"), "{report:?}");
    let hits = f.search("acme", "secret outside").await;
    assert!(hits.iter().all(|(p, _)| p == "ok.md"), "{hits:?}");
}

#[tokio::test]
async fn a_relabel_with_the_same_size_and_mtime_is_reindexed() {
    a_relabel_with_the_same_size_and_mtime_is_reindexed_on(Fixture::new()).await;
}

#[tokio::test]
async fn a_relabel_with_the_same_size_and_mtime_is_reindexed_on_postgres() {
    a_relabel_with_the_same_size_and_mtime_is_reindexed_on(Fixture::postgres().await).await;
}

/// Size and mtime can be kept by whoever edits a file (`touch -d`): the content decides.
async fn a_relabel_with_the_same_size_and_mtime_is_reindexed_on(f: Fixture) {
    let path = f.docs.join("a.md");
    write(
        &f.docs,
        "a.md",
        &labelled("acme", "public", "Quarterly numbers."),
    );
    let mtime = fs::metadata(&path)
        .expect("stat")
        .modified()
        .expect("mtime");
    let s = settings(&f.docs);
    f.index(&s).await;
    assert_eq!(f.search("acme", "quarterly numbers").await.len(), 1);

    write(
        &f.docs,
        "a.md",
        &labelled("zeta", "public", "Quarterly numbers."),
    );
    fs::File::options()
        .write(true)
        .open(&path)
        .expect("open")
        .set_modified(mtime)
        .expect("touch -d");
    let listed = listed(&f.docs, "a.md");
    let stored = &f.store.files().await.expect("files")["a.md"];
    assert_eq!(
        (listed.size, listed.mtime_ns),
        (stored.size, stored.mtime_ns)
    );

    let report = f.index(&s).await;
    assert_eq!(report.embedded, ["a.md"], "{report:?}");
    assert!(f.search("acme", "quarterly numbers").await.is_empty());
    assert_eq!(f.search("zeta", "quarterly numbers").await.len(), 1);
}

/// Two docs folders never share one index silently: SQLite (private to its --state-dir)
/// re-initialises; PostgreSQL (tables shared by name) refuses, naming --postgres-table.
#[tokio::test]
async fn an_index_of_another_docs_folder_is_rebuilt_on_sqlite() {
    let f = Fixture::new();
    write(&f.docs, "a.md", &labelled("acme", "public", "Apples."));
    f.index(&settings(&f.docs)).await;
    let other = f.docs.parent().expect("parent").join("other");
    write(&other, "b.md", &labelled("acme", "public", "Bananas."));
    let report = f.index(&settings(&other)).await;
    assert!(report.reset, "{report:?}");
    assert_eq!(report.embedded, ["b.md"]);
    let hits = f.search("acme", "apples").await;
    assert!(hits.iter().all(|(p, _)| p == "b.md"), "{hits:?}");
}

#[tokio::test]
async fn an_index_of_another_docs_folder_is_refused_on_postgres() {
    let f = Fixture::postgres().await;
    write(&f.docs, "a.md", &labelled("acme", "public", "Apples."));
    f.index(&settings(&f.docs)).await;
    let other = f.docs.parent().expect("parent").join("other");
    write(&other, "b.md", &labelled("acme", "public", "Bananas."));
    let err = index_folder(
        &settings(&other),
        f.store.as_ref(),
        &f.embedder,
        &f.progress,
    )
    .await
    .expect_err("another folder's tables taken over");
    assert!(err.to_string().contains("--postgres-table"), "{err}");
    assert_eq!(
        f.search("acme", "apples").await.len(),
        1,
        "the other index is intact"
    );
    // The same folder, by another spelling, is the same index.
    let same = f.docs.join("..").join("docs");
    let report = f.index(&settings(&same)).await;
    assert!(!report.reset && report.unchanged == 1, "{report:?}");
    // An identity written before folders were recorded is not refused: it is rebuilt.
    assert_eq!(
        root_of_identity("hash-v1/fnv1a64/512|default-tenant=None;schema=1"),
        None
    );
}
