//! Property checks of the upstream output handling (child stdout/stderr lines and the escaping
//! of logged text), shared by fuzz/fuzz_targets/upstream_output.rs and the corpus replay in
//! crates/upstream/tests/fuzz_corpus.rs.

use micromcp_protocol::text::{escape, is_hidden_or_control};
use micromcp_upstream::lines::{Line, LineSplitter};

/// Line caps tried: tiny (every line cut), small, and the stderr cap.
const CAPS: [usize; 3] = [1, 16, 4096];
/// Read sizes tried: byte by byte, odd sizes, and everything at once (0).
const CHUNKS: [usize; 4] = [1, 7, 64, 0];

/// Splits `data` fed in pieces of `chunk` bytes (0: all at once), as the pipe reader does.
fn split(data: &[u8], cap: usize, chunk: usize) -> Vec<Line> {
    let mut splitter = LineSplitter::new(cap);
    let mut lines = Vec::new();
    let size = if chunk == 0 { data.len().max(1) } else { chunk };
    for mut piece in data.chunks(size) {
        while !piece.is_empty() {
            let (taken, line) = splitter.feed(piece);
            assert!(
                taken > 0 && taken <= piece.len(),
                "took {taken} of {}",
                piece.len()
            );
            piece = &piece[taken..];
            lines.extend(line);
        }
    }
    lines.extend(splitter.finish());
    assert_eq!(splitter.finish(), None, "finish twice yields a second line");
    lines
}

/// Undoes `escape`: `\\` is a backslash, `\u{hex}` a character.
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('u') => {
                assert_eq!(chars.next(), Some('{'), "escape without a brace in {s:?}");
                let hex: String = chars.by_ref().take_while(|&c| c != '}').collect();
                let code = u32::from_str_radix(&hex, 16).expect("hex escape");
                out.push(char::from_u32(code).expect("escape of a char"));
            }
            other => panic!("lone backslash before {other:?} in {s:?}"),
        }
    }
    out
}

/// What escaping must guarantee for any text: one visible line, nothing hidden, nothing lost.
pub fn check_escape(text: &str) {
    let escaped = escape(text).to_string();
    assert!(
        !escaped.chars().any(is_hidden_or_control),
        "hidden or control character left in {escaped:?}"
    );
    assert!(
        !escaped.contains(['\n', '\r']),
        "line break left in {escaped:?}"
    );
    assert_eq!(unescape(&escaped), text, "escaping is not reversible");
    // Escaping works character by character: splitting the text anywhere changes nothing.
    if let Some((at, _)) = text.char_indices().nth(text.chars().count() / 2) {
        let (a, b) = text.split_at(at);
        assert_eq!(escaped, format!("{}{}", escape(a), escape(b)));
    }
}

pub fn check_upstream_output(data: &[u8]) {
    // The lines a reader without a cap would see: split at every '\n'; a final '\n' ends the
    // last line rather than starting an empty one.
    let mut expected: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    if expected.last().is_some_and(|l| l.is_empty()) {
        expected.pop();
    }
    for cap in CAPS {
        let whole = split(data, cap, 0);
        for chunk in CHUNKS {
            assert_eq!(
                split(data, cap, chunk),
                whole,
                "read size {chunk} changes the lines"
            );
        }
        assert_eq!(whole.len(), expected.len(), "cap {cap}: line count");
        for (line, original) in whole.iter().zip(&expected) {
            assert!(line.bytes.len() <= cap, "a line exceeds the cap {cap}");
            let kept = original.len().min(cap);
            assert_eq!(
                line.bytes,
                &original[..kept],
                "a line is not the start of its original"
            );
            assert_eq!(
                line.dropped,
                original.len() - kept,
                "dropped bytes miscounted"
            );
            assert_eq!(line.is_truncated(), original.len() > cap);
            check_escape(&String::from_utf8_lossy(line.text()));
        }
    }
    check_escape(&String::from_utf8_lossy(data));
}
