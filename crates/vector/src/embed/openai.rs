//! An OpenAI-compatible `/embeddings` endpoint as an [`Embedder`].
//!
//! The answer is checked before any vector is used: exactly one vector per input (by
//! `index`, each once), each of the configured dimension, finite and non-zero. Anything
//! else is [`EmbedError::Malformed`]: a wrong-sized vector stored in the index would
//! silently rank garbage. The API key is read once from a file or an environment variable
//! (never a flag value, which would show in `ps`), sent only as a bearer header, never
//! logged, and requests do not follow redirects (which could carry it elsewhere).

use std::{fmt, path::PathBuf, time::Duration};

use serde::Deserialize;

use super::{BoxFuture, EmbedError, Embedder, normalise};

/// Largest answer body read, in bytes: bounds memory whatever the endpoint sends.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// A secret string whose `Debug` and `Display` print `[redacted]`.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }

    fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Where the API key is read from: `file:PATH` or `env:NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRef {
    File(PathBuf),
    Env(String),
}

impl std::str::FromStr for KeyRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("file:").filter(|p| !p.is_empty()) {
            Ok(Self::File(PathBuf::from(path)))
        } else if let Some(name) = s.strip_prefix("env:").filter(|n| !n.is_empty()) {
            Ok(Self::Env(name.to_owned()))
        } else {
            // Never echo the value: it may be the key itself, pasted by mistake.
            Err("an API key is given by reference only: file:PATH or env:NAME".to_owned())
        }
    }
}

impl KeyRef {
    /// Reads the key; the error names the file or variable, never a value.
    pub fn load(&self) -> anyhow::Result<Secret> {
        let value = match self {
            Self::File(path) => std::fs::read_to_string(path).map_err(|err| {
                anyhow::anyhow!("cannot read the API key file {}: {err}", path.display())
            })?,
            Self::Env(name) => std::env::var(name).map_err(|_| {
                anyhow::anyhow!(
                    "the API key variable {name} is not set (the gateway starts services with an \
                     empty environment: prefer file:PATH)"
                )
            })?,
        };
        let value = value.trim();
        anyhow::ensure!(!value.is_empty(), "the API key ({self:?}) is empty");
        Ok(Secret::new(value.to_owned()))
    }
}

/// How to reach the endpoint.
#[derive(Debug, Clone)]
pub struct OpenAiConfig {
    /// The endpoint, e.g. `https://api.openai.com/v1/embeddings`; a base URL such as
    /// `http://127.0.0.1:8000/v1` gets `/embeddings` appended.
    pub url: String,
    pub model: String,
    /// The dimension every returned vector must have.
    pub dimension: usize,
    pub key: Option<Secret>,
    /// Texts per request.
    pub batch_size: usize,
    /// Whole-request timeout (connect, send, answer).
    pub timeout: Duration,
}

/// Embeds through an OpenAI-compatible HTTP endpoint.
#[derive(Debug, Clone)]
pub struct OpenAiEmbedder {
    config: OpenAiConfig,
    endpoint: reqwest::Url,
    client: reqwest::Client,
}

impl OpenAiEmbedder {
    /// Checks the configuration and builds the HTTP client (no request is sent).
    pub fn new(mut config: OpenAiConfig) -> anyhow::Result<Self> {
        let endpoint = endpoint_url(&config.url)?;
        anyhow::ensure!(config.dimension > 0, "--embeddings-dim must be at least 1");
        anyhow::ensure!(
            !config.model.trim().is_empty(),
            "--embeddings-model is empty"
        );
        config.batch_size = config.batch_size.max(1);
        // reqwest needs a process-wide TLS provider even for http:// URLs; `Err` only means
        // one is installed already (the gateway installs the same one).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            // The child's environment is empty anyway; an inherited proxy would be a
            // surprise route for the API key.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(config.timeout)
            .timeout(config.timeout)
            .build()?;
        Ok(Self {
            config,
            endpoint,
            client,
        })
    }

    /// Embeds one batch with one request.
    async fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let body = serde_json::json!({
            "model": self.config.model,
            "input": texts,
            "encoding_format": "float",
        });
        let mut request = self.client.post(self.endpoint.clone()).json(&body);
        if let Some(key) = &self.config.key {
            request = request.bearer_auth(key.expose());
        }
        let response = request.send().await.map_err(unavailable)?;
        let status = response.status();
        if !status.is_success() {
            // The log names the endpoint (never a query or userinfo: refused at start-up, and
            // stripped again here); the caller, who may be any tenant's model, does not.
            tracing::warn!(
                endpoint = %redacted(&self.endpoint),
                status = status.as_u16(),
                "the embeddings endpoint answered an HTTP error"
            );
            return Err(EmbedError::Unavailable(format!(
                "the embeddings endpoint failed (HTTP {})",
                status.as_u16()
            )));
        }
        let bytes = read_capped(response).await?;
        parse_embeddings(&bytes, texts.len(), self.config.dimension)
    }
}

impl Embedder for OpenAiEmbedder {
    fn identity(&self) -> String {
        format!(
            "openai/{}/{}/{}",
            redacted(&self.endpoint),
            self.config.model,
            self.config.dimension
        )
    }

    fn dimension(&self) -> usize {
        self.config.dimension
    }

    fn embed<'a>(
        &'a self,
        texts: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Vec<f32>>, EmbedError>> {
        Box::pin(async move {
            let mut vectors = Vec::with_capacity(texts.len());
            for batch in texts.chunks(self.config.batch_size) {
                vectors.extend(self.embed_batch(batch).await?);
            }
            Ok(vectors)
        })
    }
}

/// The `/embeddings` URL for `url`; only http and https.
fn endpoint_url(url: &str) -> anyhow::Result<reqwest::Url> {
    let mut parsed = reqwest::Url::parse(url)
        .map_err(|err| anyhow::anyhow!("--embeddings-url {url:?} is not a URL: {err}"))?;
    anyhow::ensure!(
        matches!(parsed.scheme(), "http" | "https"),
        "--embeddings-url must be http or https, got {}",
        parsed.scheme()
    );
    // Never echo the URL from here on: a key may sit in its userinfo or query.
    anyhow::ensure!(
        parsed.username().is_empty() && parsed.password().is_none(),
        "--embeddings-url must not carry credentials: use --embeddings-key"
    );
    anyhow::ensure!(
        parsed.query().is_none() && parsed.fragment().is_none(),
        "--embeddings-url must not have a query string or fragment (it would be logged and \
         stored in the index identity): pass an API key with --embeddings-key"
    );
    if !parsed.path().trim_end_matches('/').ends_with("/embeddings") {
        let path = format!("{}/embeddings", parsed.path().trim_end_matches('/'));
        parsed.set_path(&path);
    }
    Ok(parsed)
}

/// `url` without userinfo, query or fragment: what logs and the index identity may show.
fn redacted(url: &reqwest::Url) -> String {
    let mut url = url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.set_fragment(None);
    url.to_string()
}

/// The text of a transport error, without the URL's query (which some proxies use for keys).
fn unavailable(err: reqwest::Error) -> EmbedError {
    let kind = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    EmbedError::Unavailable(format!("{kind}: {}", err.without_url()))
}

/// Reads the body, refusing more than [`MAX_RESPONSE_BYTES`].
async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, EmbedError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(unavailable)? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(EmbedError::Malformed(format!(
                "answer larger than {MAX_RESPONSE_BYTES} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[derive(Deserialize)]
struct EmbeddingsResponse {
    data: Vec<EmbeddingItem>,
}

#[derive(Deserialize)]
struct EmbeddingItem {
    index: usize,
    embedding: Vec<f64>,
}

/// Checks and orders an `/embeddings` answer for `count` inputs of `dimension`. Pure: a
/// fuzz target can feed it any bytes.
pub fn parse_embeddings(
    body: &[u8],
    count: usize,
    dimension: usize,
) -> Result<Vec<Vec<f32>>, EmbedError> {
    let parsed: EmbeddingsResponse = serde_json::from_slice(body)
        .map_err(|err| EmbedError::Malformed(format!("not an embeddings answer: {err}")))?;
    if parsed.data.len() != count {
        return Err(EmbedError::Malformed(format!(
            "{} vectors for {count} inputs",
            parsed.data.len()
        )));
    }
    let mut slots: Vec<Option<Vec<f32>>> = vec![None; count];
    for item in parsed.data {
        let index = item.index;
        let slot = slots.get_mut(index).ok_or_else(|| {
            EmbedError::Malformed(format!("index {index} out of range for {count} inputs"))
        })?;
        if slot.is_some() {
            return Err(EmbedError::Malformed(format!(
                "index {index} appears twice"
            )));
        }
        *slot = Some(check_vector(index, &item.embedding, dimension)?);
    }
    // Count matched and no index repeated, so every slot is filled.
    Ok(slots.into_iter().flatten().collect())
}

/// One vector, checked for size and finiteness, then normalised.
fn check_vector(index: usize, values: &[f64], dimension: usize) -> Result<Vec<f32>, EmbedError> {
    if values.len() != dimension {
        return Err(EmbedError::Malformed(format!(
            "vector {index} has dimension {}, expected {dimension}",
            values.len()
        )));
    }
    #[allow(clippy::cast_possible_truncation)]
    let vector: Vec<f32> = values.iter().map(|&x| x as f32).collect();
    if vector.iter().any(|x| !x.is_finite()) {
        return Err(EmbedError::Malformed(format!(
            "vector {index} has a value out of f32 range"
        )));
    }
    normalise(vector).ok_or_else(|| EmbedError::Malformed(format!("vector {index} is all zeros")))
}

#[cfg(test)]
mod tests;
