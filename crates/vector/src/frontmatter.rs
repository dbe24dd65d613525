//! A strict parser for the few `key: value` lines that label a document.
//!
//! Labels decide who may read a document, so the parser accepts only what it fully
//! understands: a first line `---`, then `key: value` lines with the keys `tenant`,
//! `classification`, `owner` and `title` (each at most once; blank lines and `#` comments
//! allowed), then a closing `---`. Anything else is an error naming the line, and the caller
//! skips the document rather than guess its labels. No YAML: no anchors, no multi-line
//! values, no type coercion.
//!
//! A document without front matter gets the launch defaults, so "no front matter" must be
//! unambiguous: a text whose first non-blank line looks like a fence (`--- `, `---` after a
//! blank line, `+++`, `...`) or with a label-like line (`tenant:`, `classification:`,
//! `owner:`, `title:`) in its first ten lines is refused, not treated as unlabelled.

use crate::labels::{Classification, check_owner, check_tenant};

/// The front-matter keys we understand.
const KNOWN_KEYS: [&str; 4] = ["tenant", "classification", "owner", "title"];
/// Longest title accepted, in bytes.
const MAX_TITLE_LEN: usize = 200;
const FENCE: &str = "---";
/// A document without front matter is refused when a label-like line (`tenant:` …) appears
/// within its first this many lines: its author meant to label it.
const LABEL_LOOKUP_LINES: usize = 10;

/// The labels a document's front matter states; `None` where it says nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FrontMatter {
    pub tenant: Option<String>,
    pub classification: Option<Classification>,
    pub owner: Option<String>,
    pub title: Option<String>,
}

/// A document split into its front matter and its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedDocument<'a> {
    pub front: FrontMatter,
    /// The text after the closing fence (the whole text without front matter).
    pub body: &'a str,
}

/// Why a document's front matter was refused; `line` is 1-based.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed front matter at line {line}: {message}")]
pub struct FrontMatterError {
    pub line: usize,
    pub message: String,
}

/// Splits `text` into front matter and body. Pure and total: fuzz it with any UTF-8.
pub fn parse_front_matter(text: &str) -> Result<ParsedDocument<'_>, FrontMatterError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = LineCursor::new(text);
    match lines.next() {
        Some((_, first)) if first == FENCE => {}
        // No opening fence: the whole text is the body, unlabelled, unless it looks like
        // an attempt at front matter.
        _ => {
            if let Some(err) = attempted_front_matter(text) {
                return Err(err);
            }
            return Ok(ParsedDocument {
                front: FrontMatter::default(),
                body: text,
            });
        }
    }
    let mut front = FrontMatter::default();
    while let Some((number, line)) = lines.next() {
        if line == FENCE {
            return Ok(ParsedDocument {
                front,
                body: lines.rest(),
            });
        }
        parse_line(&mut front, line).map_err(|message| FrontMatterError {
            line: number,
            message,
        })?;
    }
    Err(FrontMatterError {
        line: 1,
        message: format!("the front matter opened here is never closed by a {FENCE:?} line"),
    })
}

/// For a text that does not open with an exact `---` line: the error to refuse it with when
/// its author evidently meant to label it. An unlabelled document gets the launch defaults
/// (`--default-tenant`, `--default-classification`), so mistaking a near-miss (`--- `, a
/// blank line before `---`, Hugo's `+++`, YAML's `...`, labels without fences) for "no
/// labels" would hand one tenant's document to another.
fn attempted_front_matter(text: &str) -> Option<FrontMatterError> {
    let mut lines = LineCursor::new(text);
    let mut first_content = true;
    while let Some((number, line)) = lines.next() {
        if number > LABEL_LOOKUP_LINES {
            break;
        }
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        if first_content && is_fence_like(trimmed) {
            return Some(FrontMatterError {
                line: number,
                message: format!(
                    "{trimmed:?} looks like a front-matter fence, but front matter must start \
                     with a line that is exactly {FENCE:?} on the first line (no spaces, no \
                     blank lines before it; TOML `+++` is not supported)"
                ),
            });
        }
        first_content = false;
        if let Some(key) = label_key(line) {
            return Some(FrontMatterError {
                line: number,
                message: format!(
                    "{key:?} looks like a label outside front matter: put labels between \
                     {FENCE:?} lines at the very top of the file"
                ),
            });
        }
    }
    None
}

/// `---`, `+++`, `...` and longer runs of one of those characters.
fn is_fence_like(trimmed: &str) -> bool {
    ['-', '+', '.']
        .iter()
        .any(|&c| trimmed.len() >= 3 && trimmed.chars().all(|x| x == c))
}

/// The known key a line starts with (case ignored, `key:` or `key :`), if any.
fn label_key(line: &str) -> Option<&'static str> {
    let line = line.trim_start();
    KNOWN_KEYS.into_iter().find(|key| {
        line.get(..key.len())
            .is_some_and(|start| start.eq_ignore_ascii_case(key))
            && line[key.len()..].trim_start().starts_with(':')
    })
}

/// Applies one line inside the fences to `front`.
fn parse_line(front: &mut FrontMatter, line: &str) -> Result<(), String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(());
    }
    let Some((key, value)) = line.split_once(':') else {
        return Err(format!("expected `key: value`, got {line:?}"));
    };
    let key = key.trim();
    let value = unquote(value.trim());
    if value.is_empty() {
        return Err(format!("{key:?} has an empty value"));
    }
    let slot_taken = match key {
        "tenant" => front.tenant.is_some(),
        "classification" => front.classification.is_some(),
        "owner" => front.owner.is_some(),
        "title" => front.title.is_some(),
        _ => {
            return Err(format!(
                "unknown key {key:?} (known: {})",
                KNOWN_KEYS.join(", ")
            ));
        }
    };
    if slot_taken {
        return Err(format!("{key:?} is given twice"));
    }
    match key {
        "tenant" => {
            check_tenant(value)?;
            front.tenant = Some(value.to_owned());
        }
        "classification" => {
            front.classification = Some(value.parse().map_err(|e| format!("{e}"))?);
        }
        "owner" => {
            check_owner(value)?;
            front.owner = Some(value.to_owned());
        }
        _ => {
            check_title(value)?;
            front.title = Some(value.to_owned());
        }
    }
    Ok(())
}

/// Strips one pair of matching surrounding quotes, as people write them out of YAML habit.
fn unquote(value: &str) -> &str {
    for quote in ['"', '\''] {
        if let Some(inner) = value
            .strip_prefix(quote)
            .and_then(|v| v.strip_suffix(quote))
        {
            return inner;
        }
    }
    value
}

fn check_title(title: &str) -> Result<(), String> {
    if title.len() > MAX_TITLE_LEN {
        return Err(format!("title is longer than {MAX_TITLE_LEN} bytes"));
    }
    if title.chars().any(char::is_control) {
        return Err("title contains a control character".to_owned());
    }
    Ok(())
}

/// Walks lines (LF or CRLF) while remembering where the rest of the text starts.
struct LineCursor<'a> {
    text: &'a str,
    offset: usize,
    number: usize,
}

impl<'a> LineCursor<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            text,
            offset: 0,
            number: 0,
        }
    }

    /// The next line without its line ending, and its 1-based number.
    fn next(&mut self) -> Option<(usize, &'a str)> {
        let rest = self.text.get(self.offset..)?;
        if rest.is_empty() {
            return None;
        }
        let (line, consumed) = match rest.find('\n') {
            Some(end) => (&rest[..end], end + 1),
            None => (rest, rest.len()),
        };
        self.offset += consumed;
        self.number += 1;
        Some((self.number, line.strip_suffix('\r').unwrap_or(line)))
    }

    fn rest(&self) -> &'a str {
        self.text.get(self.offset..).unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_front_matter_is_parsed_and_split_from_the_body() {
        let text = "---\ntenant: acme\nclassification: internal\n# a comment\n\nowner: \"Ada L\"\ntitle: 'Payroll runbook'\n---\n# Heading\nBody.\n";
        let doc = parse_front_matter(text).expect("parses");
        assert_eq!(doc.front.tenant.as_deref(), Some("acme"));
        assert_eq!(doc.front.classification, Some(Classification::Internal));
        assert_eq!(doc.front.owner.as_deref(), Some("Ada L"));
        assert_eq!(doc.front.title.as_deref(), Some("Payroll runbook"));
        assert_eq!(doc.body, "# Heading\nBody.\n");
    }

    #[test]
    fn crlf_and_bom_are_accepted() {
        let doc = parse_front_matter("\u{feff}---\r\ntenant: acme\r\n---\r\nBody").expect("parses");
        assert_eq!(doc.front.tenant.as_deref(), Some("acme"));
        assert_eq!(doc.body, "Body");
    }

    #[test]
    fn a_document_without_front_matter_is_all_body() {
        let text = "# Title\nThe acme tenant: its owner is ops.\n\n---\n\nMore text.\n";
        let doc = parse_front_matter(text).expect("parses");
        assert_eq!(doc.front, FrontMatter::default());
        assert_eq!(doc.body, text);
        // A label-like line far enough down is body text.
        let late = format!("# Title\n{}tenant: acme\n", "Text.\n".repeat(10));
        let doc = parse_front_matter(&late).expect("parses");
        assert_eq!(doc.front, FrontMatter::default());
        assert_eq!(doc.body, late);
    }

    /// Near-misses of front matter would otherwise be unlabelled, i.e. get the launch
    /// defaults: another tenant's document served under `--default-tenant`.
    #[test]
    fn a_malformed_fence_skips_the_document_instead_of_relabelling_it() {
        let cases = [
            ("--- \ntenant: globex\n---\nBody\n", 1, "exactly"),
            ("---\t\ntenant: globex\n---\nBody\n", 1, "exactly"),
            ("\n---\ntenant: globex\n---\nBody\n", 2, "exactly"),
            ("  \r\n---\ntenant: globex\n---\nBody\n", 2, "exactly"),
            ("\u{feff}\n---\ntenant: globex\n---\n", 2, "exactly"),
            ("+++\ntenant = \"globex\"\n+++\nBody\n", 1, "+++"),
            ("...\ntenant: globex\n...\nBody\n", 1, "exactly"),
            ("----\ntenant: globex\n----\nBody\n", 1, "exactly"),
            (
                "tenant: globex\nclassification: restricted\n\nBody\n",
                1,
                "label",
            ),
            ("# Title\ntenant: globex\n", 2, "label"),
            ("Title: Q3 numbers\nBody\n", 1, "label"),
            ("  owner : finance\nBody\n", 1, "label"),
            ("Intro.\n\nCLASSIFICATION: restricted\n", 3, "label"),
        ];
        for (text, line, words) in cases {
            let err = parse_front_matter(text).expect_err(text);
            assert_eq!(err.line, line, "{text:?}: {err}");
            assert!(err.to_string().contains(words), "{text:?}: {err}");
        }
        // Words that merely start like a key are not labels.
        for text in [
            "titled: x\n",
            "tenants are many\n",
            "owner-ship: x\n",
            "- - -\n",
        ] {
            parse_front_matter(text).expect(text);
        }
    }

    /// Each malformed input, and the line and words its error must name.
    #[test]
    fn malformed_front_matter_names_the_line_and_the_rule() {
        let cases = [
            ("---\ntenant: acme\n", 1, "never closed"),
            ("---\ntenant acme\n---\n", 2, "expected `key: value`"),
            ("---\ntenant: acme\ntenant: other\n---\n", 3, "given twice"),
            ("---\nteam: x\n---\n", 2, "unknown key \"team\""),
            (
                "---\nclassification: secret\n---\n",
                2,
                "unknown classification",
            ),
            (
                "---\nclassification: Public\n---\n",
                2,
                "unknown classification",
            ),
            ("---\ntenant:\n---\n", 2, "empty value"),
            ("---\ntenant: \"\"\n---\n", 2, "empty value"),
            ("---\ntenant: acme corp\n---\n", 2, "only ASCII letters"),
            ("---\nowner: a\u{7}b\n---\n", 2, "control character"),
        ];
        for (text, line, words) in cases {
            let err = parse_front_matter(text).expect_err(text);
            assert_eq!(err.line, line, "{text:?}: {err}");
            assert!(err.to_string().contains(words), "{text:?}: {err}");
        }
    }
}
