//! The built-in embedder: feature hashing, no model download, same vectors on every machine.
//!
//! Text is lowercased and split into alphanumeric words; English stop words are dropped and
//! plural/-ing/-ed endings lightly stripped. Features are the word unigrams, word bigrams
//! and character trigrams of each word (padded `<word>`, which catches shared roots and
//! typos). Each feature is hashed with 64-bit FNV-1a (fixed constants, unlike std's seeded
//! `RandomState`) into one of `dimension` buckets with a sign taken from the hash, weighted
//! `kind_weight × (1 + ln tf)`, and the vector is L2-normalised.

use std::collections::BTreeMap;

use super::{BoxFuture, EmbedError, Embedder, normalise};

/// Bump when anything below changes the vectors: the index is keyed by it.
const VERSION: &str = "hash-v1";
/// The default dimension: enough buckets that collisions stay rare for short chunks.
pub const DEFAULT_DIMENSION: usize = 512;

const UNIGRAM_WEIGHT: f64 = 1.0;
const BIGRAM_WEIGHT: f64 = 0.6;
const TRIGRAM_WEIGHT: f64 = 0.25;

/// Words too common to say anything about a topic.
const STOP_WORDS: &[&str] = &[
    "a", "about", "after", "all", "also", "am", "an", "and", "any", "are", "as", "at", "be",
    "been", "before", "being", "but", "by", "can", "could", "did", "do", "does", "doing", "for",
    "from", "had", "has", "have", "having", "he", "her", "here", "him", "his", "how", "i", "if",
    "in", "into", "is", "it", "its", "just", "me", "more", "most", "my", "no", "not", "now", "of",
    "on", "once", "only", "or", "other", "our", "out", "over", "own", "same", "she", "should",
    "so", "some", "such", "than", "that", "the", "their", "them", "then", "there", "these", "they",
    "this", "those", "through", "to", "too", "under", "until", "up", "very", "was", "we", "were",
    "what", "when", "where", "which", "while", "who", "whom", "why", "will", "with", "would",
    "you", "your",
];

/// Feature hashing into `dimension` signed buckets.
#[derive(Debug, Clone)]
pub struct HashEmbedder {
    dimension: usize,
}

impl Default for HashEmbedder {
    fn default() -> Self {
        Self::new(DEFAULT_DIMENSION)
    }
}

impl HashEmbedder {
    /// An embedder with `dimension` buckets (at least 1).
    pub fn new(dimension: usize) -> Self {
        Self {
            dimension: dimension.max(1),
        }
    }

    /// The unit vector of one text (all zeros for a text without any word).
    pub fn embed_one(&self, text: &str) -> Vec<f32> {
        let mut vector = vec![0.0_f32; self.dimension];
        for (feature, weight) in features(text) {
            let hash = fnv1a64(feature.as_bytes());
            let bucket = usize::try_from(hash % self.dimension as u64).unwrap_or(0);
            let sign = if hash >> 63 == 1 { -1.0 } else { 1.0 };
            #[allow(clippy::cast_possible_truncation)]
            let value = (sign * weight) as f32;
            vector[bucket] += value;
        }
        normalise(vector.clone()).unwrap_or(vector)
    }
}

impl Embedder for HashEmbedder {
    fn identity(&self) -> String {
        format!("{VERSION}/fnv1a64/{}", self.dimension)
    }

    fn dimension(&self) -> usize {
        self.dimension
    }

    fn embed<'a>(
        &'a self,
        texts: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Vec<f32>>, EmbedError>> {
        Box::pin(async move { Ok(texts.iter().map(|t| self.embed_one(t)).collect()) })
    }
}

/// Each feature of `text` with its weight, `kind × (1 + ln tf)`, in a stable order.
fn features(text: &str) -> BTreeMap<String, f64> {
    let terms: Vec<String> = words(text)
        .filter(|w| !STOP_WORDS.contains(&w.as_str()))
        .collect();
    let mut counts: BTreeMap<String, (f64, u32)> = BTreeMap::new();
    let mut add = |feature: String, weight: f64| {
        counts.entry(feature).or_insert((weight, 0)).1 += 1;
    };
    for term in &terms {
        add(format!("w:{}", stem(term)), UNIGRAM_WEIGHT);
        let padded: Vec<char> = format!("<{term}>").chars().collect();
        for gram in padded.windows(3) {
            add(
                format!("c:{}", gram.iter().collect::<String>()),
                TRIGRAM_WEIGHT,
            );
        }
    }
    for pair in terms.windows(2) {
        add(
            format!("b:{} {}", stem(&pair[0]), stem(&pair[1])),
            BIGRAM_WEIGHT,
        );
    }
    counts
        .into_iter()
        .map(|(feature, (weight, tf))| (feature, weight * (1.0 + f64::from(tf).ln())))
        .collect()
}

/// Lowercased alphanumeric runs.
fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

/// Light suffix stripping, so "invoices", "invoicing", "invoiced" and "invoice" meet.
fn stem(word: &str) -> &str {
    let base = strip(word, "ies", 5)
        .or_else(|| strip(word, "ing", 6))
        .or_else(|| strip(word, "ed", 5))
        .or_else(|| strip(word, "es", 5).filter(|s| s.ends_with(['s', 'x', 'z', 'h'])))
        .or_else(|| strip(word, "s", 4).filter(|s| !s.ends_with(['s', 'u'])))
        .unwrap_or(word);
    // A final e or y goes too: "rotate"/"rotating", "policy"/"policies".
    strip(base, "e", 5)
        .or_else(|| strip(base, "y", 5))
        .unwrap_or(base)
}

/// `word` without `suffix`, if it has it and is at least `min_len` characters long.
fn strip<'a>(word: &'a str, suffix: &str, min_len: usize) -> Option<&'a str> {
    if word.chars().count() < min_len {
        return None;
    }
    word.strip_suffix(suffix)
}

/// 64-bit FNV-1a: tiny, fixed, and the same on every platform and run.
fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET, |hash, &b| (hash ^ u64::from(b)).wrapping_mul(PRIME))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::dot;

    const PINNED_TOP_AND_NONZERO: (usize, usize) = (436, 47);
    const PINNED_TOP_VALUE: f32 = 0.310_772_3;

    #[test]
    fn fnv_matches_the_published_test_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn vectors_are_deterministic_unit_length() {
        let embedder = HashEmbedder::default();
        let text = "Rotate the database credentials every ninety days.";
        let a = embedder.embed_one(text);
        let b = HashEmbedder::default().embed_one(text);
        assert_eq!(a, b);
        assert_eq!(a.len(), DEFAULT_DIMENSION);
        assert!((dot(&a, &a) - 1.0).abs() < 1e-5);
        // Pinned (measured once) so a platform or toolchain change that alters the vectors
        // is caught: an index would otherwise mix incompatible vectors.
        let (top, value) = a
            .iter()
            .enumerate()
            .max_by(|x, y| x.1.abs().total_cmp(&y.1.abs()))
            .expect("non-empty");
        let nonzero = a.iter().filter(|&&x| x != 0.0).count();
        println!("top bucket {top} value {value} nonzero {nonzero}");
        assert_eq!((top, nonzero), PINNED_TOP_AND_NONZERO);
        assert!((value - PINNED_TOP_VALUE).abs() < 1e-6, "{value}");
    }

    #[test]
    fn similar_texts_are_closer_than_unrelated_ones() {
        let e = HashEmbedder::default();
        let query = e.embed_one("how do I rotate database passwords");
        let related = e.embed_one("Rotating the database password: steps for operators.");
        let unrelated = e.embed_one("The cafeteria serves vegetarian lunch on Fridays.");
        assert!(
            dot(&query, &related) > dot(&query, &unrelated) + 0.2,
            "related {} unrelated {}",
            dot(&query, &related),
            dot(&query, &unrelated)
        );
    }

    #[test]
    fn stop_words_only_text_is_the_zero_vector() {
        let v = HashEmbedder::default().embed_one("the of and to");
        assert!(v.iter().all(|&x| x == 0.0));
    }

    #[test]
    fn stemming_is_light() {
        for group in [
            &["invoice", "invoices", "invoicing", "invoiced"][..],
            &["rotate", "rotating", "rotated", "rotates"],
            &["policy", "policies"],
            &["box", "boxes"],
        ] {
            let stems: Vec<&str> = group.iter().map(|w| stem(w)).collect();
            assert!(
                stems.iter().all(|s| *s == stems[0]),
                "{group:?} -> {stems:?}"
            );
        }
        assert_eq!(stem("class"), "class");
        assert_eq!(stem("status"), "status");
        assert_eq!(stem("key"), "key");
        assert_eq!(stem("keys"), "key");
    }
}
