//! Lines from a child's output pipes, with bounded memory whatever the child writes.
//!
//! A line longer than the cap is cut *while it is read*: the bytes past the cap are counted and
//! dropped, never buffered, so a child writing hundreds of megabytes without a newline costs the
//! gateway at most the cap plus one read chunk. Lines are bytes: invalid UTF-8 is the caller's
//! to judge (stderr is shown lossily, a stdout line that is not UTF-8 is skipped), and nothing a
//! child writes stops the reading — only the end of the stream does. A child whose pipe is no
//! longer read blocks or dies of a broken pipe, so reading must go on.

use tokio::io::{AsyncRead, AsyncReadExt};

/// Bytes read from the pipe at a time.
const CHUNK: usize = 64 * 1024;

/// One line, without its `\n` (a `\r` before it is kept: see [`Line::text`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The line's first bytes, at most the cap.
    pub bytes: Vec<u8>,
    /// How many bytes past the cap were dropped (0: the line is complete).
    pub dropped: usize,
}

impl Line {
    pub fn is_truncated(&self) -> bool {
        self.dropped > 0
    }

    /// The line without a trailing `\r` (CRLF line ends), as bytes.
    pub fn text(&self) -> &[u8] {
        self.bytes.strip_suffix(b"\r").unwrap_or(&self.bytes)
    }
}

/// Splits a byte stream into lines of at most `max` bytes, without doing I/O: feed it bytes as
/// they arrive, and call [`LineSplitter::finish`] at the end of the stream.
#[derive(Debug)]
pub struct LineSplitter {
    max: usize,
    line: Vec<u8>,
    dropped: usize,
}

impl LineSplitter {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            line: Vec::new(),
            dropped: 0,
        }
    }

    /// Takes bytes from the start of `input` up to and including the first `\n`. Returns how
    /// many bytes it took and the line that `\n` completed, if any; call again with the rest.
    pub fn feed(&mut self, input: &[u8]) -> (usize, Option<Line>) {
        let newline = memchr::memchr(b'\n', input);
        let body = &input[..newline.unwrap_or(input.len())];
        let room = self.max.saturating_sub(self.line.len());
        let kept = body.len().min(room);
        // Grow by doubling, but never past the cap (a plain `extend` could double beyond it).
        let needed = self.line.len() + kept;
        if needed > self.line.capacity() {
            let target = needed.max(self.line.capacity() * 2).min(self.max);
            self.line.reserve_exact(target - self.line.len());
        }
        self.line.extend_from_slice(&body[..kept]);
        self.dropped = self.dropped.saturating_add(body.len() - kept);
        match newline {
            Some(at) => (at + 1, Some(self.take())),
            None => (input.len(), None),
        }
    }

    /// The last line, if the stream ended without a `\n` after it.
    pub fn finish(&mut self) -> Option<Line> {
        (!self.line.is_empty() || self.dropped > 0).then(|| self.take())
    }

    fn take(&mut self) -> Line {
        Line {
            bytes: std::mem::take(&mut self.line),
            dropped: std::mem::take(&mut self.dropped),
        }
    }
}

/// Reads lines of at most `max` bytes from a pipe (see the module docs).
pub struct LineReader<R> {
    reader: R,
    splitter: LineSplitter,
    chunk: Box<[u8]>,
    start: usize,
    end: usize,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    pub fn new(reader: R, max: usize) -> Self {
        Self {
            reader,
            splitter: LineSplitter::new(max),
            chunk: vec![0; CHUNK].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    /// The next line; `None` once the stream has ended. A read error ends the stream too: a
    /// pipe only fails when the other side is gone.
    pub async fn next_line(&mut self) -> Option<Line> {
        loop {
            if self.start < self.end {
                let (taken, line) = self.splitter.feed(&self.chunk[self.start..self.end]);
                self.start += taken;
                if line.is_some() {
                    return line;
                }
                continue;
            }
            match self.reader.read(&mut self.chunk).await {
                Ok(0) | Err(_) => return self.splitter.finish(),
                Ok(n) => {
                    self.start = 0;
                    self.end = n;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(input: &[u8], max: usize) -> Vec<Line> {
        let mut reader = LineReader::new(input, max);
        let mut lines = Vec::new();
        while let Some(line) = reader.next_line().await {
            lines.push(line);
        }
        lines
    }

    fn line(bytes: &[u8], dropped: usize) -> Line {
        Line {
            bytes: bytes.to_vec(),
            dropped,
        }
    }

    #[tokio::test]
    async fn splits_on_newlines_and_keeps_the_last_unterminated_line() {
        assert_eq!(
            read_all(b"one\ntwo\r\n\nlast", 100).await,
            [
                line(b"one", 0),
                line(b"two\r", 0),
                line(b"", 0),
                line(b"last", 0)
            ]
        );
        assert_eq!(read_all(b"", 100).await, []);
        assert_eq!(read_all(b"x\n", 100).await, [line(b"x", 0)]);
        assert_eq!(line(b"two\r", 0).text(), b"two");
    }

    #[tokio::test]
    async fn long_lines_are_cut_while_reading_and_reading_goes_on() {
        let mut input = vec![b'a'; 3 * CHUNK + 7];
        input.extend_from_slice(b"\nafter\n");
        let lines = read_all(&input, 10).await;
        assert_eq!(
            lines,
            [line(b"aaaaaaaaaa", 3 * CHUNK - 3), line(b"after", 0)]
        );
        assert!(lines[0].is_truncated());
    }

    #[tokio::test]
    async fn invalid_utf8_and_nul_do_not_stop_reading() {
        let lines = read_all(b"\xff\xfe\0\xc0\xaf\nok\n", 100).await;
        assert_eq!(lines, [line(b"\xff\xfe\0\xc0\xaf", 0), line(b"ok", 0)]);
    }

    #[test]
    fn the_splitter_never_holds_more_than_its_cap() {
        let mut splitter = LineSplitter::new(4);
        assert_eq!(splitter.feed(b"abcdefgh"), (8, None));
        assert_eq!(splitter.feed(b"ij"), (2, None));
        assert!(splitter.line.capacity() <= 4, "never more than the cap");
        assert_eq!(splitter.feed(b"k\nrest"), (2, Some(line(b"abcd", 7))));
        assert_eq!(splitter.finish(), None);
        assert_eq!(splitter.feed(b"rest"), (4, None));
        assert_eq!(splitter.finish(), Some(line(b"rest", 0)));
    }
}
