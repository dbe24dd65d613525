//! The operations behind the tools and resources: blocking, bounded, and built only on the
//! fd-based primitives of `beneath`. Each takes the service state and caller input and
//! returns a serialisable result or an [`FsError`] naming the rule that refused it.

use std::{
    ops::ControlFlow,
    os::fd::BorrowedFd,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use globset::{GlobBuilder, GlobMatcher};
use regex_syntax::ast::{self, Ast, RepetitionKind, RepetitionRange};
use rmcp::schemars::{self, JsonSchema};
use rustix::fs::{FileType, Stat};
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::{
    beneath::{self, Root},
    error::FsError,
    guard::{DenyList, RelPath, has_temp_name},
    roots::{Roots, Target},
};

/// Every limit the operations enforce; set from flags.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_read_bytes: u64,
    pub max_write_bytes: u64,
    pub max_list_entries: usize,
    pub max_find_results: usize,
    pub max_walk_entries: usize,
    pub max_depth: usize,
    pub search_max_files: usize,
    pub search_max_file_bytes: u64,
    pub search_max_matches: usize,
    /// Most bytes one `search_files` reads, all files together.
    pub search_max_total_bytes: u64,
    pub resource_page_size: usize,
    pub allow_hard_links: bool,
    /// Wall-clock time one operation may run (and wait for a free slot).
    pub op_timeout: Duration,
    /// Most blocking file operations running at once, over all sessions.
    pub max_concurrent_ops: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_read_bytes: 1024 * 1024,
            max_write_bytes: 1024 * 1024,
            max_list_entries: 1000,
            max_find_results: 1000,
            max_walk_entries: 100_000,
            max_depth: 64,
            search_max_files: 10_000,
            search_max_file_bytes: 1024 * 1024,
            search_max_matches: 100,
            search_max_total_bytes: 64 * 1024 * 1024,
            resource_page_size: 100,
            allow_hard_links: false,
            op_timeout: Duration::from_secs(10),
            max_concurrent_ops: 4,
        }
    }
}

/// Longest regex or literal a caller may search for.
pub const MAX_QUERY_BYTES: usize = 1024;
/// Longest glob a caller may send to `find_files` / `search_files`.
pub const MAX_GLOB_BYTES: usize = 1024;
/// Matched lines longer than this are cut (a minified file is one huge line).
const MAX_LINE_BYTES: usize = 500;
/// Compiled-regex size cap. The regex crate is linear-time, but its cost per byte grows with
/// the compiled size: `[^\x01]{5000}` under a 1 MiB cap cost ~3 s per 64 KiB line. Under
/// 64 KiB (with the repetition bound below) the worst patterns we found cost a few ms per
/// 64 KiB line.
const REGEX_SIZE_LIMIT: usize = 64 * 1024;
/// Lazy-DFA cache per search. Kept at 1 MiB: a smaller cache makes the DFA give up on big
/// patterns and fall back to slower engines (measured: 100× slower at 64 KiB).
const REGEX_DFA_SIZE_LIMIT: usize = 1 << 20;
/// Largest count in a counted repetition (`x{n}`, `x{m,}`, `x{m,n}`) of a caller's regex.
pub const MAX_REGEX_REPETITION: u32 = 100;
/// Lines longer than this are searched in pieces of this size (overlapping by
/// [`LINE_PIECE_OVERLAP`]), with the stop checks between pieces: one huge line (a minified
/// file) cannot hold a search past its deadline or cancellation.
pub const LINE_PIECE_BYTES: usize = 64 * 1024;
/// Overlap between the pieces of a long line, so short matches across a boundary are found.
pub const LINE_PIECE_OVERLAP: usize = 1024;
/// Bytes inspected to tell text from binary.
const BINARY_SNIFF_BYTES: usize = 8192;

/// Set once the service is shutting down (stdin closed): every running operation stops at
/// its next check, so blocking threads cannot keep the process alive.
static SHUTTING_DOWN: AtomicBool = AtomicBool::new(false);

/// Makes every running and future operation of this process stop at its next check.
pub fn begin_shutdown() {
    SHUTTING_DOWN.store(true, Ordering::Relaxed);
}

/// Why a walking operation stopped before its natural end (its results are partial).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Stopped {
    /// `--op-timeout` ran out.
    Deadline,
    /// `--search-max-total-bytes` were read.
    Budget,
    /// The caller cancelled the request, the session ended, or the service is shutting down.
    Cancelled,
}

/// When a running operation must stop: its wall-clock deadline, the caller's cancellation
/// token (rmcp cancels it on `notifications/cancelled` and when the session ends), or process
/// shutdown. Checked between directory entries, files, lines and pieces of long lines.
#[derive(Debug, Clone)]
pub struct Stop {
    deadline: Instant,
    cancel: CancellationToken,
}

impl Stop {
    pub fn new(timeout: Duration, cancel: CancellationToken) -> Self {
        let now = Instant::now();
        let deadline = now
            .checked_add(timeout)
            .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365));
        Self { deadline, cancel }
    }

    /// A stop with only a deadline.
    pub fn after(timeout: Duration) -> Self {
        Self::new(timeout, CancellationToken::new())
    }

    /// `Err` with the reason once the operation must stop.
    pub fn check(&self) -> Result<(), Stopped> {
        if self.cancel.is_cancelled() || SHUTTING_DOWN.load(Ordering::Relaxed) {
            return Err(Stopped::Cancelled);
        }
        if Instant::now() >= self.deadline {
            return Err(Stopped::Deadline);
        }
        Ok(())
    }
}

/// The service's state, shared by all sessions.
#[derive(Debug)]
pub struct State {
    pub roots: Roots,
    pub deny: DenyList,
    pub limits: Limits,
    /// One permit per blocking operation allowed to run (`--max-concurrent-ops`).
    pub(crate) permits: Arc<Semaphore>,
    /// Files `search_files` has started reading since startup, all calls together.
    searched_files: AtomicU64,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Entry {
    /// The entry's name inside the listed directory.
    pub name: String,
    /// `file`, `directory`, `symlink`, `fifo`, `socket`, `character device`, `block device`.
    pub kind: String,
    /// Size in bytes (regular files only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Why the entry cannot be read, when it cannot (symlinks, hard links).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ListOutput {
    /// The listed directory, as the caller addresses it.
    pub path: String,
    /// Sorted by name; denied entries are left out.
    pub entries: Vec<Entry>,
    /// More entries exist than were returned (see `--max-list-entries`), or the listing
    /// stopped early (`stopped`).
    pub truncated: bool,
    /// Why the listing stopped early, when it did: `deadline` (`--op-timeout`) or `cancelled`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<Stopped>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ReadOutput {
    pub path: String,
    /// Byte offset of `text` in the file (moved forward past a split UTF-8 character).
    pub offset: u64,
    /// Bytes of the file covered by `text`.
    pub length: u64,
    /// The file's size in bytes.
    pub size: u64,
    /// Where to continue reading, when the file goes on after `text`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_offset: Option<u64>,
    pub text: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct StatOutput {
    pub path: String,
    pub kind: String,
    pub size: u64,
    /// Last modification, seconds since the Unix epoch.
    pub modified_unix: i64,
    /// Permission bits in octal, e.g. `0644`.
    pub mode: String,
    /// Number of hard links.
    pub links: u64,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Found {
    /// The path as the caller addresses it.
    pub path: String,
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct FindOutput {
    /// In directory order (depth first, names sorted).
    pub matches: Vec<Found>,
    /// Entries examined.
    pub scanned: usize,
    /// Stopped early at a limit (results, walked entries, depth, time): there may be more.
    pub truncated: bool,
    /// Why the walk stopped early, when it was time or cancellation: `deadline` or `cancelled`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<Stopped>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct SearchMatch {
    pub path: String,
    /// 1-based line number.
    pub line: u64,
    /// The matching line (cut to 500 bytes; invalid UTF-8 replaced).
    pub text: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct SearchOutput {
    pub matches: Vec<SearchMatch>,
    pub files_scanned: usize,
    /// Files searched only in their first `--search-max-file-bytes` bytes.
    pub files_cut: usize,
    /// Files skipped as binary (a NUL byte in their first 8 KiB).
    pub skipped_binary: usize,
    /// Files skipped because they are hard links (see `--allow-hard-links`).
    pub skipped_hard_links: usize,
    /// Bytes read from files, all together (bounded by `--search-max-total-bytes`).
    pub bytes_searched: u64,
    /// Stopped early at a limit (matches, files, walked entries, depth, bytes or time).
    pub truncated: bool,
    /// Why the search stopped early, when it was time, bytes or cancellation: `deadline`
    /// (`--op-timeout`), `budget` (`--search-max-total-bytes`) or `cancelled`. The matches
    /// found until then are returned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<Stopped>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct WriteOutput {
    pub path: String,
    pub bytes_written: u64,
    /// True when the file did not exist before.
    pub created: bool,
}

impl State {
    pub fn new(roots: Roots, deny: DenyList, limits: Limits) -> Self {
        let permits = Arc::new(Semaphore::new(limits.max_concurrent_ops.max(1)));
        Self {
            roots,
            deny,
            limits,
            permits,
            searched_files: AtomicU64::new(0),
        }
    }

    /// Files `search_files` has started reading since startup, over all calls (a
    /// diagnostic; tests use it to see that a cancelled search stopped).
    pub fn files_searched_total(&self) -> u64 {
        self.searched_files.load(Ordering::Relaxed)
    }

    /// Refuses `rel` when the deny list matches it, or when it is a `write_file` temp name.
    fn check_allowed(&self, root: &Root, rel: &RelPath) -> Result<(), FsError> {
        if let Some(rule) = self.deny.denied(rel) {
            return Err(FsError::Denied {
                path: self.roots.caller_path(root, rel),
                rule,
            });
        }
        if has_temp_name(rel.as_str()) {
            return Err(FsError::Reserved {
                path: self.roots.caller_path(root, rel),
            });
        }
        Ok(())
    }

    /// Whether a walked or listed entry is left out: denied, or a `write_file` temp file.
    fn hidden(&self, rel: &RelPath) -> bool {
        self.deny.denied(rel).is_some() || has_temp_name(rel.as_str())
    }

    pub fn list_directory(&self, path: &str, stop: &Stop) -> Result<ListOutput, FsError> {
        let (root, rel) = match self.roots.resolve(path)? {
            Target::In(root, rel) => (root, rel),
            Target::AllRoots => return Ok(self.list_roots()),
        };
        self.check_allowed(root, &rel)?;
        let dir = root.open_dir(&rel)?;
        let max = self.limits.max_list_entries;
        let names = beneath::read_names(dir.as_fd_ref(), self.limits.max_walk_entries)?;
        let mut entries = Vec::new();
        let mut truncated = names.incomplete;
        let mut stopped = None;
        for name in names.names {
            if self.hidden(&rel.join(&name)) {
                continue;
            }
            if let Err(why) = stop.check() {
                stopped = Some(why);
                truncated = true;
                break;
            }
            if entries.len() == max {
                truncated = true;
                break;
            }
            // An entry that vanished since getdents is simply not listed.
            if let Ok(stat) = beneath::stat_entry(dir.as_fd_ref(), &name) {
                let (kind, size, note) = self.describe(&stat);
                entries.push(Entry {
                    name,
                    kind,
                    size,
                    note,
                });
            }
        }
        Ok(ListOutput {
            path: self.roots.caller_path(root, &rel),
            entries,
            truncated,
            stopped,
        })
    }

    fn list_roots(&self) -> ListOutput {
        ListOutput {
            path: ".".to_owned(),
            entries: self
                .roots
                .iter()
                .map(|root| Entry {
                    name: root.name.clone(),
                    kind: "directory".to_owned(),
                    size: None,
                    note: (!root.writable).then(|| "root (read-only)".to_owned()),
                })
                .collect(),
            truncated: false,
            stopped: None,
        }
    }

    /// Kind, size and why it cannot be read, for listings: sizes only for readable files.
    fn describe(&self, stat: &Stat) -> (String, Option<u64>, Option<String>) {
        let file_type = beneath::file_type(stat);
        let kind = beneath::kind_name(file_type).to_owned();
        match file_type {
            FileType::Symlink => (kind, None, Some("symlink: never followed".to_owned())),
            FileType::RegularFile => {
                match beneath::check_readable(stat, self.limits.allow_hard_links) {
                    Ok(()) => (kind, Some(size_of(stat)), None),
                    Err(err) => (kind, None, Some(err.to_string())),
                }
            }
            _ => (kind, None, None),
        }
    }

    pub fn read_file(
        &self,
        path: &str,
        offset: Option<u64>,
        length: Option<u64>,
    ) -> Result<ReadOutput, FsError> {
        let (root, rel) = self.roots.resolve_in(path, "read a file")?;
        self.check_allowed(root, &rel)?;
        let (file, stat) =
            beneath::open_file(root.fd(), rel.as_open_arg(), self.limits.allow_hard_links)?;
        let size = size_of(&stat);
        let offset = offset.unwrap_or(0);
        let cap = self.limits.max_read_bytes;
        let want = length.unwrap_or(cap).min(cap);
        let want = usize::try_from(want.min(size.saturating_sub(offset))).unwrap_or(usize::MAX);
        let bytes = beneath::read_at(&file, offset, want)?;
        let end = offset.saturating_add(bytes.len() as u64);
        let text = decode_text(&bytes, offset > 0, end < size)?;
        let start = offset + text.skipped as u64;
        let covered = text.text.len() as u64;
        let next = start + covered;
        Ok(ReadOutput {
            path: self.roots.caller_path(root, &rel),
            offset: start,
            length: covered,
            size,
            next_offset: (next < size).then_some(next),
            text: text.text,
        })
    }

    pub fn stat(&self, path: &str) -> Result<StatOutput, FsError> {
        let (root, rel) = self.roots.resolve_in(path, "stat a file")?;
        self.check_allowed(root, &rel)?;
        let fd = beneath::open_beneath(root.fd(), rel.as_open_arg(), rustix::fs::OFlags::PATH)?;
        let stat = rustix::fs::fstat(&fd)?;
        if beneath::file_type(&stat) == FileType::RegularFile {
            // Same rule as reading: a hard link's metadata is the outside file's.
            beneath::check_readable(&stat, self.limits.allow_hard_links)?;
        }
        Ok(StatOutput {
            path: self.roots.caller_path(root, &rel),
            kind: beneath::kind_name(beneath::file_type(&stat)).to_owned(),
            size: size_of(&stat),
            modified_unix: stat.st_mtime,
            mode: format!("{:04o}", stat.st_mode & 0o7777),
            links: beneath::link_count(&stat),
        })
    }

    pub fn find_files(
        &self,
        pattern: &str,
        path: &str,
        max_results: Option<usize>,
        stop: &Stop,
    ) -> Result<FindOutput, FsError> {
        let glob = CallerGlob::new(pattern)?;
        let max = max_results
            .unwrap_or(self.limits.max_find_results)
            .min(self.limits.max_find_results);
        let mut out = FindOutput {
            matches: Vec::new(),
            scanned: 0,
            truncated: false,
            stopped: None,
        };
        for (root, start) in self.walk_starts(path)? {
            let stats = self.walk(root, &start, stop, |visit| {
                let relative = visit.rel.as_str().get(start.as_str().len()..).unwrap_or("");
                if !glob.matches(relative.trim_start_matches('/')) {
                    return ControlFlow::Continue(());
                }
                if out.matches.len() == max {
                    out.truncated = true;
                    return ControlFlow::Break(());
                }
                let (kind, size, note) = self.describe(visit.stat);
                out.matches.push(Found {
                    path: self.roots.caller_path(root, &visit.rel),
                    kind,
                    size,
                    note,
                });
                ControlFlow::Continue(())
            })?;
            out.scanned += stats.visited;
            out.truncated |= stats.truncated;
            out.stopped = stats.stopped;
            if out.truncated {
                break;
            }
        }
        Ok(out)
    }

    pub fn search_files(
        &self,
        query: &SearchQuery,
        path: &str,
        stop: &Stop,
    ) -> Result<SearchOutput, FsError> {
        let mut out = SearchOutput {
            matches: Vec::new(),
            files_scanned: 0,
            files_cut: 0,
            skipped_binary: 0,
            skipped_hard_links: 0,
            bytes_searched: 0,
            truncated: false,
            stopped: None,
        };
        let max_matches = query.max_matches.min(self.limits.search_max_matches);
        for (root, start) in self.walk_starts(path)? {
            let stats = self.walk(root, &start, stop, |visit| {
                if beneath::file_type(visit.stat) != FileType::RegularFile {
                    return ControlFlow::Continue(());
                }
                let relative = visit.rel.as_str().get(start.as_str().len()..).unwrap_or("");
                if let Some(glob) = &query.glob
                    && !glob.matches(relative.trim_start_matches('/'))
                {
                    return ControlFlow::Continue(());
                }
                if out.files_scanned == self.limits.search_max_files {
                    out.truncated = true;
                    return ControlFlow::Break(());
                }
                if out.bytes_searched >= self.limits.search_max_total_bytes {
                    out.stopped = Some(Stopped::Budget);
                    return ControlFlow::Break(());
                }
                out.files_scanned += 1;
                self.searched_files.fetch_add(1, Ordering::Relaxed);
                let caller_path = self.roots.caller_path(root, &visit.rel);
                self.search_one(visit, &caller_path, query, max_matches, stop, &mut out)
            })?;
            out.truncated |= stats.truncated;
            // A stop met inside a file (recorded by `search_one`) comes first.
            out.stopped = out.stopped.or(stats.stopped);
            out.truncated |= out.stopped.is_some();
            if out.truncated {
                break;
            }
        }
        Ok(out)
    }

    /// Searches one file, opened by name through its parent directory's fd, within what is
    /// left of the byte budget; checks `stop` between lines.
    fn search_one(
        &self,
        visit: &Visit<'_>,
        caller_path: &str,
        query: &SearchQuery,
        max_matches: usize,
        stop: &Stop,
        out: &mut SearchOutput,
    ) -> ControlFlow<()> {
        let opened = beneath::open_file(visit.parent, visit.name, self.limits.allow_hard_links);
        let (file, stat) = match opened {
            Ok(opened) => opened,
            Err(FsError::HardLink { .. }) => {
                out.skipped_hard_links += 1;
                return ControlFlow::Continue(());
            }
            // Vanished, swapped for a symlink, unreadable: not searched.
            Err(_) => return ControlFlow::Continue(()),
        };
        let size = size_of(&stat);
        let per_file = size.min(self.limits.search_max_file_bytes);
        let left = self
            .limits
            .search_max_total_bytes
            .saturating_sub(out.bytes_searched);
        let want = per_file.min(left);
        if want < size {
            out.files_cut += 1;
        }
        // The budget ran out inside this file: search what fits, then stop.
        let flow_after = if want < per_file {
            out.stopped = Some(Stopped::Budget);
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        };
        let Ok(bytes) = beneath::read_at(&file, 0, usize::try_from(want).unwrap_or(0)) else {
            return flow_after;
        };
        out.bytes_searched += bytes.len() as u64;
        if looks_binary(&bytes) {
            out.skipped_binary += 1;
            return flow_after;
        }
        for (index, line) in bytes.split(|&b| b == b'\n').enumerate() {
            let matched = stop
                .check()
                .and_then(|()| line_matches(&query.regex, line, stop));
            match matched {
                Ok(true) => {}
                Ok(false) => continue,
                Err(why) => {
                    out.stopped = Some(why);
                    return ControlFlow::Break(());
                }
            }
            if out.matches.len() == max_matches {
                out.truncated = true;
                return ControlFlow::Break(());
            }
            out.matches.push(SearchMatch {
                path: caller_path.to_owned(),
                line: index as u64 + 1,
                text: cut_line(line),
            });
        }
        flow_after
    }

    /// The (root, directory) pairs a find or search starts from: one, or every root for `.`
    /// with several roots.
    fn walk_starts(&self, path: &str) -> Result<Vec<(&Root, RelPath)>, FsError> {
        Ok(match self.roots.resolve(path)? {
            Target::In(root, rel) => {
                self.check_allowed(root, &rel)?;
                vec![(root, rel)]
            }
            Target::AllRoots => self.roots.iter().map(|r| (r, RelPath::root())).collect(),
        })
    }

    /// Depth-first walk below `start` in sorted order, through directory fds only. Denied
    /// entries are skipped (and never descended into); symlinks are reported, never followed.
    ///
    /// `stop` is checked before each entry: at the deadline or on cancellation the walk ends
    /// with `stopped` and `truncated` set, keeping what was visited.
    fn walk(
        &self,
        root: &Root,
        start: &RelPath,
        stop: &Stop,
        mut visit: impl FnMut(&Visit<'_>) -> ControlFlow<()>,
    ) -> Result<WalkStats, FsError> {
        let budget = self.limits.max_walk_entries;
        let top = root.open_dir(start)?;
        let names = beneath::read_names(top.as_fd_ref(), budget)?;
        let mut stats = WalkStats {
            visited: 0,
            truncated: names.incomplete,
            stopped: None,
        };
        let mut stack = vec![Frame {
            fd: top,
            rel: start.clone(),
            names: names.names.into_iter(),
            depth: 0,
        }];
        while let Some(frame) = stack.last_mut() {
            let Some(name) = frame.names.next() else {
                stack.pop();
                continue;
            };
            let rel = frame.rel.join(&name);
            if self.hidden(&rel) {
                continue;
            }
            if let Err(why) = stop.check() {
                stats.stopped = Some(why);
                stats.truncated = true;
                break;
            }
            if stats.visited == budget {
                stats.truncated = true;
                break;
            }
            stats.visited += 1;
            let Ok(stat) = beneath::stat_entry(frame.fd.as_fd_ref(), &name) else {
                continue;
            };
            let parent = frame.fd.as_fd_ref();
            let flow = visit(&Visit {
                rel: rel.clone(),
                stat: &stat,
                parent,
                name: &name,
            });
            if flow.is_break() {
                break;
            }
            if beneath::file_type(&stat) != FileType::Directory {
                continue;
            }
            if frame.depth + 1 >= self.limits.max_depth {
                stats.truncated = true;
                continue;
            }
            // Swapped for a symlink since the stat? openat2 refuses it: not descended.
            let Ok(child) = beneath::open_child_dir(parent, &name) else {
                continue;
            };
            let remaining = budget - stats.visited;
            let Ok(names) = beneath::read_names(child.as_fd_ref(), remaining + 1) else {
                continue;
            };
            let depth = frame.depth + 1;
            stack.push(Frame {
                fd: child,
                rel,
                names: names.names.into_iter(),
                depth,
            });
        }
        Ok(stats)
    }

    pub fn write_file(&self, path: &str, content: &str) -> Result<WriteOutput, FsError> {
        let (root, rel) = self.roots.resolve_in(path, "write a file")?;
        if !root.writable {
            return Err(FsError::ReadOnly {
                root: root.name.clone(),
            });
        }
        self.check_allowed(root, &rel)?;
        let size = content.len() as u64;
        if size > self.limits.max_write_bytes {
            return Err(FsError::TooLarge {
                what: "content",
                size,
                cap: self.limits.max_write_bytes,
            });
        }
        let Some((parent, name)) = rel.split_last() else {
            return Err(FsError::IsADirectory);
        };
        let dir = root.open_dir(&parent)?;
        let created = beneath::write_atomic(dir.as_fd_ref(), name, content.as_bytes())?;
        tracing::info!(root = %root.name, bytes = size, created, "write_file: written");
        Ok(WriteOutput {
            path: self.roots.caller_path(root, &rel),
            bytes_written: size,
            created,
        })
    }

    /// Regular, readable files for `resources/list`, in walk order.
    /// Skips the first `skip`, returns at most `take`, and whether more follow (also when
    /// the walk stopped early: `stopped`).
    pub fn resource_files(
        &self,
        skip: usize,
        take: usize,
        stop: &Stop,
    ) -> Result<ResourcePage<'_>, FsError> {
        let mut seen = 0;
        let mut files = Vec::new();
        let mut more = false;
        let mut stopped = None;
        for root in self.roots.iter() {
            let stats = self.walk(root, &RelPath::root(), stop, |visit| {
                let readable = beneath::file_type(visit.stat) == FileType::RegularFile
                    && beneath::check_readable(visit.stat, self.limits.allow_hard_links).is_ok();
                if !readable {
                    return ControlFlow::Continue(());
                }
                seen += 1;
                if seen <= skip {
                    return ControlFlow::Continue(());
                }
                if files.len() == take {
                    more = true;
                    return ControlFlow::Break(());
                }
                files.push(ResourceFile {
                    root,
                    rel: visit.rel.clone(),
                    size: size_of(visit.stat),
                });
                ControlFlow::Continue(())
            })?;
            if stats.stopped.is_some() {
                stopped = stats.stopped;
                more = true;
            }
            if more {
                break;
            }
        }
        Ok(ResourcePage {
            files,
            more,
            stopped,
        })
    }

    /// Reads a whole file for `resources/read`: same guards as `read_file`, and a file
    /// larger than `--max-read-bytes` is refused rather than cut.
    pub fn read_whole(&self, root: &Root, rel: &RelPath) -> Result<String, FsError> {
        self.check_allowed(root, rel)?;
        let (file, stat) =
            beneath::open_file(root.fd(), rel.as_open_arg(), self.limits.allow_hard_links)?;
        let size = size_of(&stat);
        if size > self.limits.max_read_bytes {
            return Err(FsError::TooLarge {
                what: "file",
                size,
                cap: self.limits.max_read_bytes,
            });
        }
        let bytes = beneath::read_at(&file, 0, usize::try_from(size).unwrap_or(0))?;
        Ok(decode_text(&bytes, false, false)?.text)
    }
}

/// One page of `resources/list`.
#[derive(Debug)]
pub struct ResourcePage<'a> {
    pub files: Vec<ResourceFile<'a>>,
    /// More files may follow this page.
    pub more: bool,
    /// The walk stopped early (deadline or cancellation).
    pub stopped: Option<Stopped>,
}

/// A file listed as a resource.
#[derive(Debug)]
pub struct ResourceFile<'a> {
    pub root: &'a Root,
    pub rel: RelPath,
    pub size: u64,
}

/// One entry met by [`State::walk`].
struct Visit<'a> {
    rel: RelPath,
    stat: &'a Stat,
    /// The directory holding the entry, to open it by `name` without re-resolving a path.
    parent: BorrowedFd<'a>,
    name: &'a str,
}

struct Frame {
    fd: std::os::fd::OwnedFd,
    rel: RelPath,
    names: std::vec::IntoIter<String>,
    depth: usize,
}

struct WalkStats {
    visited: usize,
    truncated: bool,
    stopped: Option<Stopped>,
}

/// A compiled caller search: the regex (or escaped literal), an optional file glob, a cap.
#[derive(Debug)]
pub struct SearchQuery {
    regex: regex::bytes::Regex,
    glob: Option<CallerGlob>,
    max_matches: usize,
}

impl SearchQuery {
    pub fn new(
        query: &str,
        is_regex: bool,
        case_insensitive: bool,
        glob: Option<&str>,
        max_matches: Option<usize>,
    ) -> Result<Self, FsError> {
        if query.is_empty() || query.len() > MAX_QUERY_BYTES {
            return Err(FsError::Invalid(format!(
                "query must be 1 to {MAX_QUERY_BYTES} bytes"
            )));
        }
        let pattern = if is_regex {
            check_repetitions(query)?;
            query.to_owned()
        } else {
            regex::escape(query)
        };
        let regex = regex::bytes::RegexBuilder::new(&pattern)
            .case_insensitive(case_insensitive)
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_DFA_SIZE_LIMIT)
            .build()
            .map_err(|err| match err {
                regex::Error::CompiledTooBig(_) => FsError::Invalid(format!(
                    "invalid regex: it compiles to more than the {} KiB size limit: refused \
                     (Unicode classes such as \\w, \\d or . are large: (?-u) or ASCII \
                     classes such as [A-Za-z0-9_] are much smaller)",
                    REGEX_SIZE_LIMIT / 1024
                )),
                other => FsError::Invalid(format!("invalid regex: {other}")),
            })?;
        Ok(Self {
            regex,
            glob: glob.map(CallerGlob::new).transpose()?,
            max_matches: max_matches.unwrap_or(usize::MAX),
        })
    }
}

/// Refuses counted repetitions above [`MAX_REGEX_REPETITION`] (`x{5000}`): their cost per
/// searched byte grows with the count. A pattern that does not parse is left to the regex
/// builder, which reports the syntax error.
fn check_repetitions(pattern: &str) -> Result<(), FsError> {
    struct Counts<'p>(&'p str);
    impl ast::Visitor for Counts<'_> {
        type Output = ();
        type Err = String;
        fn finish(self) -> Result<(), String> {
            Ok(())
        }
        fn visit_pre(&mut self, node: &Ast) -> Result<(), String> {
            if let Ast::Repetition(repetition) = node
                && let RepetitionKind::Range(range) = &repetition.op.kind
            {
                let count = match *range {
                    RepetitionRange::Exactly(n) | RepetitionRange::AtLeast(n) => n,
                    RepetitionRange::Bounded(m, n) => m.max(n),
                };
                if count > MAX_REGEX_REPETITION {
                    let span = &repetition.op.span;
                    let text = self.0.get(span.start.offset..span.end.offset).unwrap_or("");
                    return Err(text.to_owned());
                }
            }
            Ok(())
        }
    }
    let Ok(parsed) = ast::parse::Parser::new().parse(pattern) else {
        return Ok(());
    };
    ast::visit(&parsed, Counts(pattern)).map_err(|text| {
        FsError::Invalid(format!(
            "invalid regex: the counted repetition \"{text}\" exceeds the limit: repetition \
             counts are at most {MAX_REGEX_REPETITION}: refused"
        ))
    })
}

/// Whether `line` matches. A line longer than [`LINE_PIECE_BYTES`] is searched in pieces of
/// that size overlapping by [`LINE_PIECE_OVERLAP`], checking `stop` between pieces: a match
/// longer than the overlap across a piece boundary is missed, and each piece is searched as
/// if it were a whole line (`^`, `$`, `\b` at its ends).
fn line_matches(regex: &regex::bytes::Regex, line: &[u8], stop: &Stop) -> Result<bool, Stopped> {
    if line.len() <= LINE_PIECE_BYTES {
        return Ok(regex.is_match(line));
    }
    let mut start = 0;
    loop {
        let end = (start + LINE_PIECE_BYTES).min(line.len());
        if regex.is_match(&line[start..end]) {
            return Ok(true);
        }
        if end == line.len() {
            return Ok(false);
        }
        stop.check()?;
        start = end - LINE_PIECE_OVERLAP;
    }
}

/// A caller's glob: matched against the path relative to the start directory, or against
/// the file name alone when the glob has no `/` (as in `.gitignore`).
#[derive(Debug)]
struct CallerGlob {
    matcher: GlobMatcher,
    basename_only: bool,
}

impl CallerGlob {
    fn new(pattern: &str) -> Result<Self, FsError> {
        if pattern.is_empty() || pattern.len() > MAX_GLOB_BYTES {
            return Err(FsError::Invalid(format!(
                "glob must be 1 to {MAX_GLOB_BYTES} bytes"
            )));
        }
        let matcher = GlobBuilder::new(pattern)
            .literal_separator(true)
            .build()
            .map_err(|err| FsError::Invalid(format!("invalid glob: {err}")))?
            .compile_matcher();
        Ok(Self {
            matcher,
            basename_only: !pattern.contains('/'),
        })
    }

    fn matches(&self, relative: &str) -> bool {
        let candidate = if self.basename_only {
            relative.rsplit('/').next().unwrap_or(relative)
        } else {
            relative
        };
        self.matcher.is_match(candidate)
    }
}

trait AsFdRef {
    fn as_fd_ref(&self) -> BorrowedFd<'_>;
}

impl AsFdRef for std::os::fd::OwnedFd {
    fn as_fd_ref(&self) -> BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(self)
    }
}

fn size_of(stat: &Stat) -> u64 {
    u64::try_from(stat.st_size).unwrap_or(0)
}

/// Text of a chunk read at some offset.
struct Decoded {
    text: String,
    /// Leading bytes skipped because the chunk began inside a UTF-8 character.
    skipped: usize,
}

/// Turns bytes read from a file into text, or refuses them as binary (a NUL byte, or bytes
/// that are not UTF-8). A chunk may start or end inside a multi-byte character when it was
/// cut by `offset`/`length`: those partial characters are dropped, not called binary.
fn decode_text(
    bytes: &[u8],
    starts_mid_file: bool,
    ends_mid_file: bool,
) -> Result<Decoded, FsError> {
    if looks_binary(bytes) {
        return Err(FsError::Binary);
    }
    let skipped = if starts_mid_file {
        bytes
            .iter()
            .take(3)
            .take_while(|&&b| b & 0xC0 == 0x80)
            .count()
    } else {
        0
    };
    let body = &bytes[skipped..];
    let text = match std::str::from_utf8(body) {
        Ok(text) => text,
        // Incomplete character at the very end of a cut chunk: keep what precedes it.
        Err(err) if ends_mid_file && err.error_len().is_none() => {
            std::str::from_utf8(&body[..err.valid_up_to()]).map_err(|_| FsError::Binary)?
        }
        Err(_) => return Err(FsError::Binary),
    };
    Ok(Decoded {
        text: text.to_owned(),
        skipped,
    })
}

fn looks_binary(bytes: &[u8]) -> bool {
    bytes.iter().take(BINARY_SNIFF_BYTES).any(|&b| b == 0)
}

fn cut_line(line: &[u8]) -> String {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let text = String::from_utf8_lossy(line);
    if text.len() <= MAX_LINE_BYTES {
        return text.into_owned();
    }
    let mut end = MAX_LINE_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_cut_mid_character_is_trimmed_not_binary() {
        let bytes = "aé".as_bytes(); // 61 c3 a9
        let cut = decode_text(&bytes[..2], false, true).expect("text");
        assert_eq!((cut.text.as_str(), cut.skipped), ("a", 0));
        let tail = decode_text(&bytes[2..], true, false).expect("text");
        assert_eq!((tail.text.as_str(), tail.skipped), ("", 1));
    }

    #[test]
    fn nul_and_invalid_utf8_are_binary() {
        assert!(matches!(
            decode_text(b"a\0b", false, false),
            Err(FsError::Binary)
        ));
        assert!(matches!(
            decode_text(b"a\xffb", false, false),
            Err(FsError::Binary)
        ));
        // An incomplete character at the real end of the file is invalid, not cut.
        assert!(matches!(
            decode_text(b"a\xc3", false, false),
            Err(FsError::Binary)
        ));
    }

    #[test]
    fn long_lines_are_cut_on_a_char_boundary() {
        let line = "é".repeat(400);
        let cut = cut_line(line.as_bytes());
        assert!(cut.len() <= MAX_LINE_BYTES + "…".len());
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn caller_glob_without_slash_matches_the_name() {
        let glob = CallerGlob::new("*.rs").expect("glob");
        assert!(glob.matches("src/deep/main.rs"));
        let anchored = CallerGlob::new("src/*.rs").expect("glob");
        assert!(anchored.matches("src/main.rs"));
        assert!(!anchored.matches("src/deep/main.rs"));
        assert!(
            CallerGlob::new("**/*.rs")
                .expect("glob")
                .matches("a/b/c.rs")
        );
        assert!(CallerGlob::new("").is_err());
    }

    #[test]
    fn counted_repetitions_are_bounded() {
        for ok in [
            "a{100}", "a{0,100}", "a{100,}", "a*b+c?", r"\{500\}", "[{]500}",
        ] {
            assert!(check_repetitions(ok).is_ok(), "{ok}");
        }
        for (bad, shown) in [
            ("a{101}", "{101}"),
            ("a{1,5000}", "{1,5000}"),
            ("x(a{2}){101,}?", "{101,}?"),
        ] {
            let err = check_repetitions(bad).expect_err(bad).to_string();
            assert!(
                err.contains(&format!("\"{shown}\"")) && err.contains("at most 100"),
                "{bad}: {err}"
            );
        }
        // A pattern that does not parse is left to the regex builder's own error.
        assert!(check_repetitions("a{").is_ok());
        assert!(SearchQuery::new("a{", true, false, None, None).is_err());
    }

    #[test]
    fn long_lines_are_searched_in_overlapping_pieces() {
        let stop = Stop::after(Duration::from_secs(60));
        let regex = regex::bytes::Regex::new("needle").expect("regex");
        let mut line = vec![b'x'; LINE_PIECE_BYTES * 3];
        assert_eq!(line_matches(&regex, &line, &stop), Ok(false));
        // Far into the line, and across the first piece boundary: both found.
        line[LINE_PIECE_BYTES * 2 + 10..LINE_PIECE_BYTES * 2 + 16].copy_from_slice(b"needle");
        assert_eq!(line_matches(&regex, &line, &stop), Ok(true));
        let mut across = vec![b'x'; LINE_PIECE_BYTES * 2];
        across[LINE_PIECE_BYTES - 3..LINE_PIECE_BYTES + 3].copy_from_slice(b"needle");
        assert_eq!(line_matches(&regex, &across, &stop), Ok(true));
        // A stop is seen between pieces.
        let stopped = Stop::after(Duration::from_nanos(1));
        std::thread::sleep(Duration::from_millis(1));
        assert_eq!(
            line_matches(&regex, &vec![b'x'; LINE_PIECE_BYTES * 2], &stopped),
            Err(Stopped::Deadline)
        );
        let cancel = CancellationToken::new();
        let cancelled = Stop::new(Duration::from_secs(60), cancel.clone());
        cancel.cancel();
        assert_eq!(cancelled.check(), Err(Stopped::Cancelled));
    }

    #[test]
    fn literal_queries_are_escaped() {
        let query = SearchQuery::new("a.b(", false, false, None, None).expect("literal");
        assert!(query.regex.is_match(b"xa.b(y"));
        assert!(!query.regex.is_match(b"axb("));
        assert!(SearchQuery::new("a(", true, false, None, None).is_err());
        assert!(SearchQuery::new("", false, false, None, None).is_err());
    }
}
