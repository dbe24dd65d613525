//! Splits a document body into search-sized chunks.
//!
//! Headings (`#` … `######`, outside code fences) start a new section, and chunks never span
//! two sections, so each hit can name the heading it sits under. Inside a section,
//! paragraphs are packed into chunks of at most `max_chars` characters; when a chunk fills
//! up, the next one starts with the last `overlap_chars` of it (cut at a word boundary) so a
//! sentence split across the seam is still found. Paragraphs longer than a chunk are cut
//! between words (between characters only for a "word" longer than a chunk).

/// Sizes, in characters (not bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkOptions {
    pub max_chars: usize,
    pub overlap_chars: usize,
}

impl Default for ChunkOptions {
    fn default() -> Self {
        Self {
            max_chars: 1000,
            overlap_chars: 150,
        }
    }
}

impl ChunkOptions {
    /// Options that always make progress: a cap of at least 40 characters and an overlap of
    /// at most a quarter of it.
    pub fn sane(self) -> Self {
        let max_chars = self.max_chars.max(40);
        Self {
            max_chars,
            overlap_chars: self.overlap_chars.min(max_chars / 4),
        }
    }
}

/// One piece of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// The nearest heading above the chunk, without its `#` marks.
    pub heading: Option<String>,
    pub text: String,
}

/// Chunks a Markdown or plain-text body.
pub fn chunk_text(body: &str, options: ChunkOptions) -> Vec<Chunk> {
    let options = options.sane();
    split_sections(body)
        .into_iter()
        .flat_map(|section| {
            let heading = section.heading;
            pack(&section.paragraphs, options)
                .into_iter()
                .map(move |text| Chunk {
                    heading: heading.clone(),
                    text,
                })
        })
        .collect()
}

struct Section {
    heading: Option<String>,
    paragraphs: Vec<String>,
}

/// Groups lines into sections (by heading) of paragraphs (by blank line).
fn split_sections(body: &str) -> Vec<Section> {
    let mut sections = vec![Section {
        heading: None,
        paragraphs: Vec::new(),
    }];
    let mut paragraph: Vec<&str> = Vec::new();
    let mut in_code = false;
    for line in body.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            in_code = !in_code;
        }
        let heading = if in_code { None } else { heading_of(trimmed) };
        if trimmed.is_empty() || heading.is_some() {
            flush(&mut paragraph, &mut sections);
        }
        if let Some(heading) = heading {
            sections.push(Section {
                heading: Some(heading.to_owned()),
                paragraphs: Vec::new(),
            });
        } else if !trimmed.is_empty() {
            paragraph.push(trimmed);
        }
    }
    flush(&mut paragraph, &mut sections);
    sections.retain(|s| !s.paragraphs.is_empty());
    sections
}

fn flush(paragraph: &mut Vec<&str>, sections: &mut [Section]) {
    if paragraph.is_empty() {
        return;
    }
    if let Some(section) = sections.last_mut() {
        section.paragraphs.push(paragraph.join("\n"));
    }
    paragraph.clear();
}

/// The text of an ATX heading line (`# Title`), if it is one.
fn heading_of(line: &str) -> Option<&str> {
    let hashes = line.chars().take_while(|&c| c == '#').count();
    if !(1..=6).contains(&hashes) {
        return None;
    }
    let rest = &line[hashes..];
    // `#hashtag` is text, not a heading.
    if !rest.is_empty() && !rest.starts_with(' ') {
        return None;
    }
    let text = rest.trim().trim_end_matches('#').trim();
    (!text.is_empty()).then_some(text)
}

/// Packs paragraphs into chunks of at most `max_chars`, with overlap between neighbours.
fn pack(paragraphs: &[String], options: ChunkOptions) -> Vec<String> {
    // A piece plus the overlap and a separator must still fit in one chunk.
    let piece_cap = options.max_chars - options.overlap_chars - 2;
    let mut chunks = Vec::new();
    let mut current = String::new();
    for piece in paragraphs.iter().flat_map(|p| split_long(p, piece_cap)) {
        if !current.is_empty() && char_len(&current) + 2 + char_len(&piece) > options.max_chars {
            let tail = overlap_tail(&current, options.overlap_chars).to_owned();
            chunks.push(std::mem::replace(&mut current, tail));
        }
        if !current.is_empty() {
            current.push_str("\n\n");
        }
        current.push_str(&piece);
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

/// Cuts `text` into pieces of at most `cap` characters, between words where possible.
fn split_long(text: &str, cap: usize) -> Vec<String> {
    if char_len(text) <= cap {
        return vec![text.to_owned()];
    }
    let mut pieces = Vec::new();
    let mut current = String::new();
    for word in text.split_whitespace() {
        for part in split_chars(word, cap) {
            if !current.is_empty() && char_len(&current) + 1 + char_len(part) > cap {
                pieces.push(std::mem::take(&mut current));
            }
            if !current.is_empty() {
                current.push(' ');
            }
            current.push_str(part);
        }
    }
    if !current.is_empty() {
        pieces.push(current);
    }
    pieces
}

/// `word` cut into runs of at most `cap` characters.
fn split_chars(word: &str, cap: usize) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut count = 0;
    for (index, _) in word.char_indices() {
        if count == cap {
            parts.push(&word[start..index]);
            start = index;
            count = 0;
        }
        count += 1;
    }
    parts.push(&word[start..]);
    parts
}

/// The last `overlap` characters of `text`, starting at a word boundary (may be empty).
fn overlap_tail(text: &str, overlap: usize) -> &str {
    let total = char_len(text);
    if overlap == 0 || total <= overlap {
        return if overlap == 0 { "" } else { text };
    }
    let start = text
        .char_indices()
        .nth(total - overlap)
        .map_or(text.len(), |(i, _)| i);
    let tail = &text[start..];
    // Drop the partial word we landed in, unless the tail is one single word.
    match tail.find(char::is_whitespace) {
        Some(space) if start > 0 && !text[..start].ends_with(char::is_whitespace) => {
            tail[space..].trim_start()
        }
        _ => tail.trim_start(),
    }
}

fn char_len(text: &str) -> usize {
    text.chars().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> ChunkOptions {
        ChunkOptions {
            max_chars: 80,
            overlap_chars: 20,
        }
    }

    #[test]
    fn headings_start_sections_and_name_their_chunks() {
        let body = "Intro line.\n\n# First\nAlpha para.\n\nBeta para.\n## Second ##\nGamma.\n#hashtag is text\n";
        let chunks = chunk_text(body, ChunkOptions::default());
        assert_eq!(chunks.len(), 3, "{chunks:?}");
        assert_eq!(chunks[0].heading, None);
        assert_eq!(chunks[0].text, "Intro line.");
        assert_eq!(chunks[1].heading.as_deref(), Some("First"));
        assert_eq!(chunks[1].text, "Alpha para.\n\nBeta para.");
        assert_eq!(chunks[2].heading.as_deref(), Some("Second"));
        assert_eq!(chunks[2].text, "Gamma.\n#hashtag is text");
    }

    #[test]
    fn hashes_inside_code_fences_are_not_headings() {
        let body = "# Real\n```\n# comment in code\n```\n";
        let chunks = chunk_text(body, ChunkOptions::default());
        assert_eq!(chunks.len(), 1, "{chunks:?}");
        assert_eq!(chunks[0].heading.as_deref(), Some("Real"));
        assert!(chunks[0].text.contains("# comment in code"));
    }

    #[test]
    fn chunks_respect_the_cap_and_overlap_their_neighbour() {
        // Every word is unique, so a repeated word can only come from the overlap.
        let paragraphs: Vec<String> = (0..12)
            .map(|i| format!("p{i}a p{i}b p{i}c p{i}d p{i}e p{i}f"))
            .collect();
        let body = paragraphs.join("\n\n");
        let chunks = chunk_text(&body, small());
        assert!(chunks.len() > 3, "{chunks:?}");
        for chunk in &chunks {
            assert!(
                char_len(&chunk.text) <= 80,
                "{} chars: {:?}",
                char_len(&chunk.text),
                chunk.text
            );
        }
        for pair in chunks.windows(2) {
            // Each chunk starts with a few words that end the previous one.
            let (prev, next) = (&pair[0].text, &pair[1].text);
            let seam = (3..=20).any(|n| next.get(..n).is_some_and(|p| prev.ends_with(p)));
            assert!(seam, "no overlap between {prev:?} and {next:?}");
        }
        // Nothing is lost: every paragraph appears in some chunk.
        for p in &paragraphs {
            assert!(chunks.iter().any(|c| c.text.contains(p.as_str())), "{p}");
        }
    }

    #[test]
    fn a_paragraph_longer_than_a_chunk_is_cut_between_words() {
        let long = "word ".repeat(100);
        let chunks = chunk_text(&long, small());
        assert!(chunks.len() >= 7, "{}", chunks.len());
        for chunk in &chunks {
            assert!(char_len(&chunk.text) <= 80);
            assert!(
                chunk.text.split_whitespace().all(|w| w == "word"),
                "{:?}",
                chunk.text
            );
        }
    }

    #[test]
    fn a_giant_word_and_multibyte_text_are_cut_safely() {
        let body = format!("{} ünïcødé", "é".repeat(500));
        let chunks = chunk_text(&body, small());
        assert!(chunks.iter().all(|c| char_len(&c.text) <= 80));
        let joined: usize = chunks.iter().map(|c| c.text.matches('é').count()).sum();
        assert!(joined >= 500);
    }

    #[test]
    fn empty_and_heading_only_bodies_have_no_chunks() {
        assert!(chunk_text("", ChunkOptions::default()).is_empty());
        assert!(chunk_text("# Only a heading\n\n\n", ChunkOptions::default()).is_empty());
    }
}
