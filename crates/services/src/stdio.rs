//! Stdin and stdout as non-blocking streams on the async reactor.
//!
//! `tokio::io::stdin()`/`stdout()` do every read and write on the blocking thread pool: one
//! hand-off to another thread, and back, per message. A stdio service answers one message per
//! request, so that hand-off was most of its cost (see docs/benchmarks.md). When stdin or stdout
//! is a pipe or a Unix socket — the way a gateway or an MCP client launches a stdio server —
//! it is made non-blocking and registered with the reactor instead; anything else (a terminal,
//! a regular file) keeps tokio's blocking-pool streams, which work with every kind of file.
//!
//! Non-blocking is a property of the open file, shared with every descriptor of it. Logs and
//! the default audit output go to stderr with blocking writes, so a stdin or stdout that is the
//! same file as stderr (`2>&1`, one socket for everything) keeps the blocking streams too.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use tokio::io::{AsyncRead, AsyncWrite};

pub type Reader = Box<dyn AsyncRead + Send + Unpin>;
pub type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// This process's stdin and stdout, non-blocking where the kind of file allows it.
/// Must be called inside a tokio runtime.
pub fn streams() -> (Reader, Writer) {
    let reader = match async_fd(io::stdin().as_fd()) {
        Some(Stream::Pipe(fd)) => tokio::net::unix::pipe::Receiver::from_owned_fd(fd)
            .map(|r| Box::new(r) as Reader)
            .ok(),
        Some(Stream::Socket(fd)) => unix_stream(fd).map(|s| Box::new(s) as Reader),
        None => None,
    };
    let writer = match async_fd(io::stdout().as_fd()) {
        Some(Stream::Pipe(fd)) => tokio::net::unix::pipe::Sender::from_owned_fd(fd)
            .map(|w| Box::new(w) as Writer)
            .ok(),
        Some(Stream::Socket(fd)) => unix_stream(fd).map(|s| Box::new(s) as Writer),
        None => None,
    };
    (
        reader.unwrap_or_else(|| Box::new(tokio::io::stdin())),
        writer.unwrap_or_else(|| Box::new(tokio::io::stdout())),
    )
}

enum Stream {
    Pipe(OwnedFd),
    Socket(OwnedFd),
}

/// A duplicate of `fd` if it is a pipe or a socket, and not the same file as stderr.
fn async_fd(fd: BorrowedFd<'_>) -> Option<Stream> {
    let file = std::fs::File::from(fd.try_clone_to_owned().ok()?);
    let meta = file.metadata().ok()?;
    let stderr = std::fs::File::from(io::stderr().as_fd().try_clone_to_owned().ok()?)
        .metadata()
        .ok()?;
    if (meta.dev(), meta.ino()) == (stderr.dev(), stderr.ino()) {
        return None;
    }
    let kind = meta.file_type();
    let owned = OwnedFd::from(file);
    if kind.is_fifo() {
        Some(Stream::Pipe(owned))
    } else if kind.is_socket() {
        Some(Stream::Socket(owned))
    } else {
        None
    }
}

fn unix_stream(fd: OwnedFd) -> Option<tokio::net::UnixStream> {
    let stream = std::os::unix::net::UnixStream::from(fd);
    stream.set_nonblocking(true).ok()?;
    tokio::net::UnixStream::from_std(stream).ok()
}
