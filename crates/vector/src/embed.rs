//! Turning text into vectors, behind the [`Embedder`] trait.
//!
//! - [`HashEmbedder`]: built in, no download, deterministic everywhere (feature hashing).
//! - [`OpenAiEmbedder`]: any OpenAI-compatible `/embeddings` endpoint.
//!
//! Every vector an embedder returns is L2-normalised, so cosine similarity is a dot product.

mod hash;
mod openai;

use std::{future::Future, pin::Pin};

pub use hash::HashEmbedder;
pub use openai::{KeyRef, OpenAiConfig, OpenAiEmbedder, Secret, parse_embeddings};

/// The built-in embedder's default dimension (for the `--hash-dim` default).
pub const fn hash_default_dimension() -> usize {
    hash::DEFAULT_DIMENSION
}

/// A boxed, sendable future: what the object-safe async traits of this crate return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why texts could not be embedded. Messages never carry the API key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmbedError {
    /// The endpoint could not be reached, timed out or answered an HTTP error.
    #[error("embeddings endpoint unavailable: {0}")]
    Unavailable(String),
    /// The endpoint answered, but not with one well-formed vector per text.
    #[error("embeddings endpoint answered malformed vectors: {0}")]
    Malformed(String),
}

/// Something that maps texts to unit vectors of a fixed dimension.
pub trait Embedder: Send + Sync {
    /// Names the model and every setting that changes its vectors. The index is keyed by it:
    /// a different identity (or dimension) re-embeds every document.
    fn identity(&self) -> String;

    /// The length of every vector this embedder returns.
    fn dimension(&self) -> usize;

    /// One unit vector per text, in order.
    fn embed<'a>(&'a self, texts: &'a [String])
    -> BoxFuture<'a, Result<Vec<Vec<f32>>, EmbedError>>;
}

/// Scales `vector` to length 1; `None` for a zero (or non-finite) vector, which has no
/// direction to compare.
pub fn normalise(mut vector: Vec<f32>) -> Option<Vec<f32>> {
    let norm = vector
        .iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt();
    if !norm.is_finite() || norm == 0.0 {
        return None;
    }
    for x in &mut vector {
        // Narrowing back to f32 is the point: vectors are stored as f32.
        #[allow(clippy::cast_possible_truncation)]
        let scaled = (f64::from(*x) / norm) as f32;
        *x = scaled;
    }
    Some(vector)
}

/// Dot product; the cosine similarity of two unit vectors.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
