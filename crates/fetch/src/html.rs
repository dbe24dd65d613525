//! HTML → readable text, in one streaming pass with bounded output.
//!
//! Built on `html5gum`'s tokenizer (WHATWG tokenization, entities decoded, safe Rust) driven
//! through its callback emitter: tags, attributes and text arrive as events borrowed from the
//! tokenizer's buffers, and this module keeps only a few counters and flags plus the output.
//! There is no tree, no recursion and no table layout, so:
//!
//! - time is linear in the input (every event costs O(its length); attribute names are not
//!   even collected, so there is no duplicate-attribute scan — html5ever's tokenizer does one
//!   per attribute, quadratic in a tag's attributes);
//! - memory is proportional to the input (its UTF-8 copy, the tokenizer's current run of
//!   text or attribute value) plus the output (at most `max_len` bytes);
//! - nesting depth costs nothing: a depth is a counter.
//!
//! The conversion also stops as soon as the output is full, and checks a deadline every
//! [`EVENTS_PER_CLOCK_CHECK`] events.
//!
//! Rendering, markdown-flavoured: headings become `#` lines, list items `- ` lines (indented
//! by nesting, up to [`MAX_INDENT`] levels), table rows lines with cells joined by ` | `,
//! paragraphs and other blocks are separated by line breaks; whitespace is collapsed except
//! in `pre`; a link with an http(s) target becomes `text (url)`; the content of `script`,
//! `style`, `title`, `noscript`, `iframe`, `noembed`, `noframes`, `template`, `svg` and
//! `math` is dropped, as are comments and control characters.

use std::time::Instant;

use html5gum::{
    Span, State, Tokenizer,
    emitters::callback::{CallbackEmitter, CallbackEvent},
};
use url::Url;

/// How many tokenizer events pass between two looks at the clock.
pub const EVENTS_PER_CLOCK_CHECK: u32 = 256;

/// List nesting deeper than this is not indented further.
pub const MAX_INDENT: u32 = 8;

/// Longest link target kept (in bytes, before and after resolution); longer ones are dropped.
const MAX_URL_LEN: usize = 2048;

/// The converted text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Converted {
    /// At most `max_len` bytes of UTF-8.
    pub text: String,
    /// Whether the text was cut at `max_len`.
    pub truncated: bool,
}

/// Renders HTML as text of at most `max_len` bytes. Links are resolved against `base`
/// (without one, only absolute http(s) targets are shown). Invalid UTF-8 is replaced.
pub fn html_to_text(html: &[u8], base: Option<&Url>, max_len: usize) -> Converted {
    run(html, base, max_len, || false).0
}

/// [`html_to_text`] that gives up (returns `None`) once `deadline` has passed.
pub fn html_to_text_until(
    html: &[u8],
    base: Option<&Url>,
    max_len: usize,
    deadline: Instant,
) -> Option<Converted> {
    let (converted, out_of_time) = run(html, base, max_len, || Instant::now() >= deadline);
    (!out_of_time).then_some(converted)
}

/// What the event callback tells the loop driving the tokenizer.
enum Flow {
    /// Switch the tokenizer to this state (after a `script`, `style`, `textarea`… start tag:
    /// the tokenizer alone cannot know that their content is raw text).
    Switch(State),
    /// The output is full: stop.
    Stop,
    /// Time to look at the clock.
    Tick,
}

/// Converts; returns the text and whether `out_of_time` stopped the conversion.
fn run(
    html: &[u8],
    base: Option<&Url>,
    max_len: usize,
    mut out_of_time: impl FnMut() -> bool,
) -> (Converted, bool) {
    let input = String::from_utf8_lossy(html);
    let mut converter = Converter::new(base, max_len);
    let mut stopped = false;
    {
        let emitter =
            CallbackEmitter::new(|event: CallbackEvent<'_>, _: Span<()>| converter.on_event(event));
        let mut tokenizer = Tokenizer::new_with_emitter(input.as_ref(), emitter);
        // The reader of a `&str` cannot fail: its error type is `Infallible`.
        while let Some(Ok(flow)) = tokenizer.next() {
            match flow {
                Flow::Switch(state) => tokenizer.set_state(state),
                Flow::Stop => break,
                Flow::Tick => {
                    if out_of_time() {
                        stopped = true;
                        break;
                    }
                }
            }
        }
    }
    (converter.out.finish(), stopped)
}

/// The output: a string that never grows past its cap.
#[derive(Debug)]
pub struct Output {
    text: String,
    max_len: usize,
    full: bool,
}

impl Output {
    pub fn new(max_len: usize) -> Self {
        Self {
            text: String::new(),
            max_len,
            full: false,
        }
    }

    /// Appends `s`, or as much of it as fits (cut on a character boundary).
    pub fn push_str(&mut self, s: &str) {
        if self.full {
            return;
        }
        let room = self.max_len - self.text.len();
        if s.len() <= room {
            self.text.push_str(s);
            return;
        }
        let mut end = room;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.text.push_str(&s[..end]);
        self.full = true;
    }

    /// Whether something did not fit.
    pub fn is_full(&self) -> bool {
        self.full
    }

    pub fn finish(self) -> Converted {
        Converted {
            text: self.text,
            truncated: self.full,
        }
    }

    fn push(&mut self, c: char) {
        self.push_str(c.encode_utf8(&mut [0; 4]));
    }

    fn at_line_start(&self) -> bool {
        self.text.is_empty() || self.text.ends_with('\n')
    }

    /// Newlines at the end of the text (0, 1 or 2: no more are ever needed).
    fn trailing_newlines(&self) -> u8 {
        let bytes = self.text.as_bytes();
        match bytes {
            [.., b'\n', b'\n'] => 2,
            [.., b'\n'] => 1,
            _ => 0,
        }
    }
}

/// A start tag being read (its attributes come as separate events).
#[derive(Default)]
struct OpenTag {
    name: Vec<u8>,
    /// Reading the `href` attribute of an `a` tag.
    in_href: bool,
    href: Option<String>,
}

/// The link being rendered: its target, and where its text starts in the output.
struct Link {
    href: String,
    text_start: usize,
}

struct Converter<'u> {
    base: Option<&'u Url>,
    out: Output,
    events: u32,
    tag: OpenTag,
    // Layout waiting for the next visible text (so nothing trails at the end).
    /// Line breaks wanted before the next text: 1 = new line, 2 = blank line.
    newlines: u8,
    /// Whitespace was seen since the last text.
    space: bool,
    /// A table cell started since the last text.
    cell: bool,
    /// Written at the start of the next line of text (`## `, `  - `).
    prefix: Option<String>,
    // Context: depths are counters, never stacks.
    /// Inside `script`, `style`, `title`… (raw text, dropped until the next end tag).
    skip_raw: bool,
    /// Inside `textarea`, `xmp` (raw text, kept until the next end tag).
    keep_raw: bool,
    /// Inside `plaintext`: the rest of the document is text.
    plaintext: bool,
    /// `svg` / `math` depth (dropped).
    foreign: u32,
    /// `template` depth (dropped).
    template: u32,
    /// `pre` / `listing` depth (whitespace kept).
    pre: u32,
    /// Drop one newline right after `<pre>`, as browsers do.
    pre_newline: bool,
    /// `ul` / `ol` depth.
    lists: u32,
    link: Option<Link>,
}

impl<'u> Converter<'u> {
    fn new(base: Option<&'u Url>, max_len: usize) -> Self {
        Self {
            base,
            out: Output::new(max_len),
            events: 0,
            tag: OpenTag::default(),
            newlines: 0,
            space: false,
            cell: false,
            prefix: None,
            skip_raw: false,
            keep_raw: false,
            plaintext: false,
            foreign: 0,
            template: 0,
            pre: 0,
            pre_newline: false,
            lists: 0,
            link: None,
        }
    }

    fn on_event(&mut self, event: CallbackEvent<'_>) -> Option<Flow> {
        let flow = match event {
            CallbackEvent::OpenStartTag { name } => {
                self.tag.name.clear();
                self.tag.name.extend_from_slice(name);
                self.tag.in_href = false;
                self.tag.href = None;
                None
            }
            CallbackEvent::AttributeName { name } => {
                // The first `href` wins, as in browsers (later duplicates are ignored).
                self.tag.in_href =
                    self.tag.name == b"a" && name == b"href" && self.tag.href.is_none();
                None
            }
            CallbackEvent::AttributeValue { value } => {
                if std::mem::take(&mut self.tag.in_href) && value.len() <= MAX_URL_LEN {
                    self.tag.href = Some(String::from_utf8_lossy(value).trim().to_owned());
                }
                None
            }
            CallbackEvent::CloseStartTag { self_closing } => {
                let tag = std::mem::take(&mut self.tag);
                let flow = self.start_tag(&tag.name, self_closing, tag.href);
                // Keep the name's buffer for the next tag.
                self.tag.name = tag.name;
                flow
            }
            CallbackEvent::EndTag { name } => {
                self.tag.in_href = false;
                self.end_tag(name);
                None
            }
            CallbackEvent::String { value } => {
                self.text(&String::from_utf8_lossy(value));
                None
            }
            CallbackEvent::Comment { .. }
            | CallbackEvent::Doctype { .. }
            | CallbackEvent::Error(_) => None,
        };
        if self.out.full {
            return Some(Flow::Stop);
        }
        if flow.is_some() {
            return flow;
        }
        self.events += 1;
        if self.events >= EVENTS_PER_CLOCK_CHECK {
            self.events = 0;
            return Some(Flow::Tick);
        }
        None
    }

    fn hidden(&self) -> bool {
        self.skip_raw || self.foreign > 0 || self.template > 0
    }

    fn start_tag(&mut self, name: &[u8], self_closing: bool, href: Option<String>) -> Option<Flow> {
        // Elements whose content the tokenizer must read as raw text (the tree builder's
        // job in a browser). Self-closing syntax does not change that for them.
        let raw = match name {
            b"script" => Some((State::ScriptData, true)),
            b"style" | b"iframe" | b"noscript" | b"noembed" | b"noframes" => {
                Some((State::RawText, true))
            }
            b"title" => Some((State::RcData, true)),
            b"textarea" => Some((State::RcData, false)),
            b"xmp" => Some((State::RawText, false)),
            b"plaintext" => Some((State::PlainText, false)),
            _ => None,
        };
        if let Some((state, skip)) = raw {
            if name == b"plaintext" {
                self.plaintext = true;
            } else if skip {
                self.skip_raw = true;
            } else {
                self.keep_raw = true;
            }
            if !skip && !self.hidden() {
                self.block(1);
            }
            return Some(Flow::Switch(state));
        }
        match name {
            // svg and math may be self-closing (foreign elements honour `/>`).
            b"svg" | b"math" if !self_closing => self.foreign += 1,
            b"template" => self.template += 1,
            // These tags leave foreign content in a browser ("breakout"), even unclosed.
            _ if self.foreign > 0 && breaks_out_of_foreign_content(name) => self.foreign = 0,
            _ => {}
        }
        if self.hidden() {
            return None;
        }
        match name {
            b"p" | b"blockquote" | b"table" | b"dl" | b"hr" | b"figure" => self.block(2),
            b"pre" | b"listing" => {
                self.block(2);
                self.pre += 1;
                self.pre_newline = true;
            }
            b"ul" | b"ol" | b"menu" => {
                self.block(2);
                self.lists = self.lists.saturating_add(1);
            }
            b"li" => {
                self.block(1);
                let depth = self.lists.saturating_sub(1).min(MAX_INDENT) as usize;
                let indent = "  ".repeat(depth);
                self.prefix = Some(format!("{indent}- "));
            }
            b"h1" | b"h2" | b"h3" | b"h4" | b"h5" | b"h6" => {
                self.block(2);
                let level = usize::from(name[1] - b'0');
                self.prefix = Some(format!("{} ", "#".repeat(level)));
            }
            b"br" => self.newlines = (self.newlines + 1).min(2),
            b"tr" => {
                self.block(1);
                self.cell = false;
            }
            b"td" | b"th" => self.cell = true,
            b"a" => {
                self.link = href.map(|href| Link {
                    href,
                    text_start: self.out.text.len(),
                });
            }
            _ if is_line_block(name) => self.block(1),
            _ => {}
        }
        None
    }

    fn end_tag(&mut self, name: &[u8]) {
        // In a raw-text state the tokenizer's only end tag is the one closing it.
        if std::mem::take(&mut self.skip_raw) {
            return;
        }
        if std::mem::take(&mut self.keep_raw) {
            self.block(1);
            return;
        }
        match name {
            b"svg" | b"math" => {
                self.foreign = self.foreign.saturating_sub(1);
                return;
            }
            b"template" => {
                self.template = self.template.saturating_sub(1);
                return;
            }
            _ => {}
        }
        if self.hidden() {
            return;
        }
        match name {
            b"p" | b"blockquote" | b"table" | b"dl" | b"figure" => self.block(2),
            b"pre" | b"listing" => {
                self.pre = self.pre.saturating_sub(1);
                self.block(2);
            }
            b"ul" | b"ol" | b"menu" => {
                self.lists = self.lists.saturating_sub(1);
                self.block(2);
            }
            b"h1" | b"h2" | b"h3" | b"h4" | b"h5" | b"h6" => {
                self.prefix = None;
                self.block(2);
            }
            b"li" => {
                self.prefix = None;
                self.block(1);
            }
            b"tr" => self.block(1),
            b"a" => self.end_link(),
            _ if is_line_block(name) => self.block(1),
            _ => {}
        }
    }

    /// Asks for `n` line breaks (1: new line, 2: blank line) before the next text.
    fn block(&mut self, n: u8) {
        self.newlines = self.newlines.max(n);
    }

    /// Writes ` (url)` after a link's text, when it had text and an http(s) target other
    /// than that text.
    fn end_link(&mut self) {
        let Some(link) = self.link.take() else {
            return;
        };
        let text = self.out.text.get(link.text_start..).unwrap_or("").trim();
        if text.is_empty() || link.href.starts_with('#') {
            return;
        }
        let resolved = match self.base {
            Some(base) => base.join(&link.href),
            None => Url::parse(&link.href),
        };
        let Ok(url) = resolved else {
            return;
        };
        let url = url.as_str();
        if !matches!(url.split(':').next(), Some("http" | "https"))
            || url.len() > MAX_URL_LEN
            || text == url
        {
            return;
        }
        self.space = true;
        self.word(&format!("({url})"));
    }

    fn text(&mut self, s: &str) {
        if self.hidden() {
            return;
        }
        if self.pre > 0 || self.plaintext {
            self.verbatim(s);
            return;
        }
        let mut first = true;
        for word in s.split(is_html_space) {
            if !first {
                self.space = true;
            }
            first = false;
            if !word.is_empty() {
                self.word(word);
            }
        }
    }

    /// Writes pending layout, then one word (no HTML whitespace in it).
    fn word(&mut self, word: &str) {
        let visible: std::borrow::Cow<'_, str> = if word.chars().any(char::is_control) {
            word.chars()
                .filter(|c| !c.is_control())
                .collect::<String>()
                .into()
        } else {
            word.into()
        };
        if visible.is_empty() {
            return;
        }
        self.before_text();
        self.out.push_str(&visible);
    }

    /// Text inside `pre`: whitespace kept, control characters other than tab and newline
    /// dropped.
    fn verbatim(&mut self, s: &str) {
        let mut s = s;
        if std::mem::take(&mut self.pre_newline) {
            s = s.strip_prefix('\n').unwrap_or(s);
        }
        if s.is_empty() {
            return;
        }
        self.before_text();
        for c in s.chars() {
            if !c.is_control() || c == '\n' || c == '\t' {
                self.out.push(c);
            }
            if self.out.full {
                return;
            }
        }
    }

    /// Writes what the layout asked for since the last text: line breaks, or a cell
    /// separator, or a space; then a line prefix.
    fn before_text(&mut self) {
        if self.out.text.is_empty() {
            // Nothing leads the text.
        } else if self.newlines > 0 {
            for _ in self.out.trailing_newlines()..self.newlines {
                self.out.push('\n');
            }
        } else if self.out.at_line_start() {
            // A new line already.
        } else if self.cell {
            self.out.push_str(" | ");
        } else if self.space {
            self.out.push(' ');
        }
        self.newlines = 0;
        self.space = false;
        self.cell = false;
        self.pre_newline = false;
        if let Some(prefix) = self.prefix.take()
            && self.out.at_line_start()
        {
            self.out.push_str(&prefix);
        }
    }
}

/// HTML's ASCII whitespace.
fn is_html_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0c')
}

/// Block elements rendered as their own lines.
fn is_line_block(name: &[u8]) -> bool {
    matches!(
        name,
        b"div"
            | b"section"
            | b"article"
            | b"header"
            | b"footer"
            | b"nav"
            | b"main"
            | b"aside"
            | b"address"
            | b"details"
            | b"summary"
            | b"dt"
            | b"dd"
            | b"figcaption"
            | b"caption"
            | b"fieldset"
            | b"legend"
            | b"form"
            | b"center"
            | b"hgroup"
            | b"search"
            | b"dialog"
            | b"option"
            | b"body"
            | b"html"
    )
}

/// Start tags that end foreign (`svg`, `math`) content in a browser.
fn breaks_out_of_foreign_content(name: &[u8]) -> bool {
    matches!(
        name,
        b"b" | b"big"
            | b"blockquote"
            | b"body"
            | b"br"
            | b"center"
            | b"code"
            | b"dd"
            | b"div"
            | b"dl"
            | b"dt"
            | b"em"
            | b"embed"
            | b"h1"
            | b"h2"
            | b"h3"
            | b"h4"
            | b"h5"
            | b"h6"
            | b"head"
            | b"hr"
            | b"i"
            | b"img"
            | b"li"
            | b"listing"
            | b"menu"
            | b"meta"
            | b"nobr"
            | b"ol"
            | b"p"
            | b"pre"
            | b"ruby"
            | b"s"
            | b"small"
            | b"span"
            | b"strong"
            | b"strike"
            | b"sub"
            | b"sup"
            | b"table"
            | b"tt"
            | b"u"
            | b"ul"
            | b"var"
    )
}

#[cfg(test)]
mod tests;
