//! Text from upstreams shown to people and models: characters that hide, reorder or break it.
//!
//! An upstream's stderr, error messages, names and descriptions are untrusted. Logged raw, a
//! carriage return or newline starts what looks like a new log or audit line, and ANSI escapes
//! rewrite a terminal; shown to a model, bidi controls, zero-width and tag characters hide
//! instructions. [`escape`] makes such text one visible line; [`is_clean_name`] and
//! [`is_clean_text`] decide whether an upstream's names and descriptions may reach clients.

use std::fmt;

/// Whether `c` is a control or an invisible format character: C0 and C1 controls and DEL, line
/// and paragraph separators, bidi embeddings, overrides, isolates and marks, zero-width
/// characters, word joiners and invisible operators, the byte-order mark, interlinear
/// annotations, tag characters (which spell hidden ASCII), supplementary variation selectors,
/// the soft hyphen and the Hangul and Mongolian fillers that render as nothing.
pub fn is_hidden_or_control(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{ad}'
                | '\u{61c}'
                | '\u{115f}'
                | '\u{1160}'
                | '\u{180e}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{206f}'
                | '\u{3164}'
                | '\u{feff}'
                | '\u{ffa0}'
                | '\u{fff9}'..='\u{fffb}'
                | '\u{e0000}'..='\u{e007f}'
                | '\u{e0100}'..='\u{e01ef}'
        )
}

/// `s` as one line of visible text: every [`is_hidden_or_control`] character becomes `\u{..}`
/// (lower-case hex) and `\` becomes `\\`, so nothing in it can start a new line, drive a
/// terminal or pass for an escape, and different inputs stay different.
pub fn escape(s: &str) -> Escaped<'_> {
    Escaped(s)
}

/// Displays its text escaped (see [`escape`]), without allocating.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(&'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(|c: char| c == '\\' || is_hidden_or_control(c)) {
            f.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().unwrap_or_default();
            if c == '\\' {
                f.write_str("\\\\")?;
            } else {
                write!(f, "\\u{{{:x}}}", u32::from(c))?;
            }
            rest = &rest[at + c.len_utf8()..];
        }
        f.write_str(rest)
    }
}

/// Whether an upstream name (tool or prompt name) may be published: not empty, no whitespace,
/// no control or invisible character.
pub fn is_clean_name(s: &str) -> bool {
    // Most names are plain ASCII: checked per call when a name is routed.
    if s.bytes().all(|b| b.is_ascii_graphic()) {
        return !s.is_empty();
    }
    !s.is_empty()
        && !s
            .chars()
            .any(|c| c.is_whitespace() || is_hidden_or_control(c))
}

/// Whether an upstream identifier that may contain spaces (a resource URI or URI template) may be
/// published: no control or invisible character.
pub fn is_clean_id(s: &str) -> bool {
    !s.is_empty() && !s.chars().any(is_hidden_or_control)
}

/// Whether free text (a title, a description) may be published: no control or invisible
/// character except tab, newline and a carriage return that ends a line (`\r\n`).
pub fn is_clean_text(s: &str) -> bool {
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        let allowed = match c {
            '\t' | '\n' => true,
            '\r' => chars.peek() == Some(&'\n'),
            c => !is_hidden_or_control(c),
        };
        if !allowed {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(s: &str) -> String {
        escape(s).to_string()
    }

    #[test]
    fn escaping_leaves_ordinary_text_alone() {
        assert_eq!(
            escaped("plain text: ü, 日本, emoji ⚠️ 👍"),
            "plain text: ü, 日本, emoji ⚠️ 👍"
        );
        assert_eq!(escaped(""), "");
    }

    #[test]
    fn escaping_makes_line_breaks_terminal_codes_and_invisible_characters_visible() {
        assert_eq!(
            escaped("a\r{\"decision\":\"allow\"}\rb"),
            "a\\u{d}{\"decision\":\"allow\"}\\u{d}b"
        );
        assert_eq!(
            escaped("\n\u{1b}[31m\0\u{7f}"),
            "\\u{a}\\u{1b}[31m\\u{0}\\u{7f}"
        );
        assert_eq!(escaped("\u{85}\u{9b}"), "\\u{85}\\u{9b}");
        assert_eq!(escaped("x\u{2028}y\u{2029}"), "x\\u{2028}y\\u{2029}");
        assert_eq!(
            escaped("\u{202e}evil\u{2066}\u{200b}\u{feff}"),
            "\\u{202e}evil\\u{2066}\\u{200b}\\u{feff}"
        );
        assert_eq!(escaped("\u{e0041}"), "\\u{e0041}");
    }

    #[test]
    fn escaping_keeps_different_inputs_different() {
        assert_eq!(escaped("\\"), "\\\\");
        assert_ne!(escaped("\\u{d}"), escaped("\r"));
        assert_eq!(escaped("C:\\dir"), "C:\\\\dir");
    }

    #[test]
    fn names_refuse_whitespace_and_hidden_characters() {
        assert!(is_clean_name("read_file"));
        assert!(is_clean_name("données-v2"));
        for bad in [
            "",
            "a b",
            "a\nb",
            "a\tb",
            "a\u{a0}b",
            "a\u{200b}b",
            "a\u{1b}[0m",
            "a\u{202e}",
        ] {
            assert!(!is_clean_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn ids_may_contain_spaces_but_no_hidden_characters() {
        assert!(is_clean_id("file:///notes/on call.md"));
        assert!(!is_clean_id("file:///a\r\nb"));
        assert!(!is_clean_id("file:///a\u{2067}b"));
        assert!(!is_clean_id(""));
    }

    #[test]
    fn text_allows_tabs_and_line_ends_only() {
        assert!(is_clean_text("Reads a file.\n\tpath: relative\r\nDone ⚠️"));
        assert!(is_clean_text(""));
        for bad in [
            "a\rb",
            "trailing\r",
            "\u{1b}[2J",
            "x\u{200b}",
            "\u{202e}",
            "\u{7f}",
            "\u{e0069}",
        ] {
            assert!(!is_clean_text(bad), "{bad:?}");
        }
    }
}
