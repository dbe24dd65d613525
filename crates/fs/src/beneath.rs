//! File-system access that cannot leave a root: every open is `openat2` from a directory fd
//! with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`, and everything after
//! the open (fstat, read, getdents, child opens) goes through the fd it returned.
//!
//! The kernel, not string checks, keeps paths beneath the root: `..` that would climb out,
//! absolute symlinks, symlinks inside the root (even to allowed files: that is what stops a
//! link to `.env`), `/proc` magic links and mount tricks are refused during resolution,
//! atomically, so a directory swapped for a symlink mid-request is refused too.

use std::{
    fs::File,
    os::{
        fd::{AsFd, BorrowedFd, OwnedFd},
        unix::fs::FileExt,
    },
    path::{Path, PathBuf},
};

use rustix::{
    fs::{AtFlags, Dir, FileType, Mode, OFlags, ResolveFlags, Stat},
    io::Errno,
};

use crate::{error::FsError, guard::RelPath};

/// How every path is resolved: beneath the directory fd, no symlinks of any kind.
const RESOLVE: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

/// `openat2` may fail with EAGAIN when a rename races the resolution; it is safe to retry.
const EAGAIN_RETRIES: usize = 8;

/// One configured root, held open for the life of the process.
#[derive(Debug)]
pub struct Root {
    /// How callers address it when there are several roots.
    pub name: String,
    /// The canonical absolute path at startup; used for `file://` URIs only, never reopened.
    pub path: PathBuf,
    pub writable: bool,
    fd: OwnedFd,
}

impl Root {
    /// Opens `path` (trusted: it comes from the operator) as a root directory.
    pub fn open(name: String, path: &Path, writable: bool) -> anyhow::Result<Self> {
        let canonical = std::fs::canonicalize(path)
            .map_err(|err| anyhow::anyhow!("root {}: {err}", path.display()))?;
        let fd = rustix::fs::open(
            &canonical,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|err| anyhow::anyhow!("root {}: {err}", canonical.display()))?;
        let root = Self {
            name,
            path: canonical,
            writable,
            fd,
        };
        // Probe openat2 now: without it (Linux < 5.6, or a seccomp filter) we must not run.
        root.open_dir(&RelPath::root()).map_err(|err| {
            anyhow::anyhow!(
                "root {}: openat2 with RESOLVE_BENEATH failed ({err}); Linux 5.6 or newer is \
                 required",
                root.path.display()
            )
        })?;
        Ok(root)
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Opens a directory beneath the root for listing and child opens.
    pub fn open_dir(&self, rel: &RelPath) -> Result<OwnedFd, FsError> {
        open_beneath(
            self.fd(),
            rel.as_open_arg(),
            OFlags::RDONLY | OFlags::DIRECTORY,
        )
    }
}

/// `openat2(dir, path, flags, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`.
pub fn open_beneath(dir: BorrowedFd<'_>, path: &str, flags: OFlags) -> Result<OwnedFd, FsError> {
    open_beneath_mode(dir, path, flags, Mode::empty())
}

fn open_beneath_mode(
    dir: BorrowedFd<'_>,
    path: &str,
    flags: OFlags,
    mode: Mode,
) -> Result<OwnedFd, FsError> {
    // NOCTTY: a terminal device must never become our controlling tty. (openat2 rejects
    // any flag but DIRECTORY/NOFOLLOW/CLOEXEC together with O_PATH.)
    let flags = if flags.contains(OFlags::PATH) {
        flags | OFlags::CLOEXEC
    } else {
        flags | OFlags::CLOEXEC | OFlags::NOCTTY
    };
    let mut attempts = 0;
    loop {
        match rustix::fs::openat2(dir, path, flags, mode, RESOLVE) {
            Err(Errno::AGAIN) if attempts < EAGAIN_RETRIES => attempts += 1,
            other => return other.map_err(FsError::from),
        }
    }
}

/// What kind of file a mode describes, as callers see it.
pub fn kind_name(file_type: FileType) -> &'static str {
    match file_type {
        FileType::RegularFile => "file",
        FileType::Directory => "directory",
        FileType::Symlink => "symlink",
        FileType::Fifo => "fifo",
        FileType::Socket => "socket",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        FileType::Unknown => "unknown",
    }
}

/// `st_nlink` is `u64` on x86_64 but `u32` on aarch64 and riscv64.
#[allow(clippy::useless_conversion)]
pub fn link_count(stat: &Stat) -> u64 {
    u64::from(stat.st_nlink)
}

pub fn file_type(stat: &Stat) -> FileType {
    FileType::from_raw_mode(stat.st_mode)
}

/// Refuses what must not be read: anything but a regular file, and hard-linked files unless
/// allowed (a hard link inside the root may be the only name of a file outside it).
pub fn check_readable(stat: &Stat, allow_hard_links: bool) -> Result<(), FsError> {
    match file_type(stat) {
        FileType::RegularFile => {}
        FileType::Directory => return Err(FsError::IsADirectory),
        other => {
            return Err(FsError::NotRegular {
                kind: kind_name(other),
            });
        }
    }
    let links = link_count(stat);
    if links > 1 && !allow_hard_links {
        return Err(FsError::HardLink { links });
    }
    Ok(())
}

/// Opens a regular file for reading beneath `dir` and returns it with its metadata.
///
/// First an `O_PATH` open checks the type without opening the file for real (opening a FIFO
/// would block, opening a device can have side effects); then the real open is checked
/// again through its own fd, so a file swapped in between is caught.
pub fn open_file(
    dir: BorrowedFd<'_>,
    path: &str,
    allow_hard_links: bool,
) -> Result<(File, Stat), FsError> {
    let probe = open_beneath(dir, path, OFlags::PATH)?;
    let before = rustix::fs::fstat(&probe)?;
    check_readable(&before, allow_hard_links)?;
    // NONBLOCK: if a FIFO is swapped in after the probe, the open still cannot hang.
    let fd = open_beneath(dir, path, OFlags::RDONLY | OFlags::NONBLOCK)?;
    let stat = rustix::fs::fstat(&fd)?;
    check_readable(&stat, allow_hard_links)?;
    if (stat.st_dev, stat.st_ino) != (before.st_dev, before.st_ino) {
        return Err(FsError::Changed);
    }
    Ok((File::from(fd), stat))
}

/// Reads up to `len` bytes at `offset` (fewer only at end of file).
pub fn read_at(file: &File, offset: u64, len: usize) -> Result<Vec<u8>, FsError> {
    let mut buf = vec![0; len];
    let mut filled = 0;
    while filled < len {
        let pos = offset.saturating_add(filled as u64);
        match file.read_at(&mut buf[filled..], pos) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err.into()),
        }
    }
    buf.truncate(filled);
    Ok(buf)
}

/// The metadata of `name` inside `dir`, without following it if it is a symlink. `name` is
/// one component from `getdents`, so no path resolution happens beyond `dir` itself.
pub fn stat_entry(dir: BorrowedFd<'_>, name: &str) -> Result<Stat, FsError> {
    Ok(rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?)
}

/// The names in a directory (without `.` and `..`), sorted, at most `max` of them read.
/// Names that are not UTF-8 cannot be addressed by callers (paths are JSON strings), so they
/// are left out and counted.
pub fn read_names(dir: BorrowedFd<'_>, max: usize) -> Result<DirNames, FsError> {
    let mut stream = Dir::read_from(dir)?;
    let mut names = DirNames::default();
    while let Some(entry) = stream.read() {
        let entry = entry?;
        let bytes = entry.file_name().to_bytes();
        if bytes == b"." || bytes == b".." {
            continue;
        }
        if names.names.len() >= max {
            names.incomplete = true;
            break;
        }
        match std::str::from_utf8(bytes) {
            Ok(name) => names.names.push(name.to_owned()),
            Err(_) => names.not_utf8 += 1,
        }
    }
    names.names.sort_unstable();
    Ok(names)
}

#[derive(Debug, Default)]
pub struct DirNames {
    pub names: Vec<String>,
    /// Names skipped because they are not UTF-8.
    pub not_utf8: usize,
    /// More names were there than we were allowed to read.
    pub incomplete: bool,
}

/// Opens a child directory of `dir` by a single name, under the same resolve rules.
pub fn open_child_dir(dir: BorrowedFd<'_>, name: &str) -> Result<OwnedFd, FsError> {
    open_beneath(dir, name, OFlags::RDONLY | OFlags::DIRECTORY)
}

/// Writes `content` to `name` in `dir` atomically: a temp file with a random name in the same
/// directory (created with `O_EXCL`, never through a symlink), fsync, `renameat` over the
/// target, fsync of the directory. Returns whether the file was created (vs replaced).
pub fn write_atomic(dir: BorrowedFd<'_>, name: &str, content: &[u8]) -> Result<bool, FsError> {
    // An existing symlink or directory at the target is refused rather than replaced: the
    // caller asked to write a file, and `rename` would silently drop the link.
    let (created, mode) = match stat_entry(dir, name) {
        Ok(stat) => match file_type(&stat) {
            FileType::RegularFile => (false, Mode::from_raw_mode(stat.st_mode & 0o777)),
            FileType::Symlink => return Err(FsError::Symlink),
            FileType::Directory => return Err(FsError::IsADirectory),
            other => {
                return Err(FsError::NotRegular {
                    kind: kind_name(other),
                });
            }
        },
        Err(FsError::NotFound) => (true, Mode::from_raw_mode(0o644)),
        Err(err) => return Err(err),
    };
    let temp = temp_name()?;
    let fd = open_beneath_mode(
        dir,
        &temp,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL,
        mode,
    )?;
    let result = finish_write(dir, File::from(fd), &temp, name, content);
    if result.is_err() {
        // Best effort: the temp file is ours (O_EXCL) and must not linger.
        let _ = rustix::fs::unlinkat(dir, temp.as_str(), AtFlags::empty());
    }
    result.map(|()| created)
}

fn finish_write(
    dir: BorrowedFd<'_>,
    mut file: File,
    temp: &str,
    name: &str,
    content: &[u8],
) -> Result<(), FsError> {
    use std::io::Write;
    file.write_all(content)?;
    file.sync_all()?;
    drop(file);
    // renameat never follows a symlink at either name; both names are single components.
    rustix::fs::renameat(dir, temp, dir, name)?;
    rustix::fs::fsync(dir)?;
    Ok(())
}

/// `.micromcp-<32 hex>.tmp`: unguessable, so nobody can pre-create it, and short enough for
/// any directory.
fn temp_name() -> Result<String, FsError> {
    let mut bytes = [0u8; 16];
    rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty())?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!(".micromcp-{hex}.tmp"))
}
