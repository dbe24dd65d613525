//! One fetch: check the URL, send, follow redirects ourselves (each hop re-checked), read
//! a bounded body, convert it to text.
//!
//! The HTTP client is reqwest with: the [`GuardedResolver`] (every address checked, the
//! connection pinned to it), no proxies (environment proxies would bypass the resolver),
//! no cookie store, no automatic redirects, no decompression, a fixed User-Agent and no
//! credentials of any kind.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use reqwest::{StatusCode, header, redirect};
use url::Url;

use crate::{
    html,
    policy::{Policy, Refusal},
    resolve::{GuardedResolver, ResolveError, StaticNames},
};

/// The User-Agent of every request; fixed, so it reveals nothing about the caller.
pub const USER_AGENT: &str = concat!("micromcp-fetch/", env!("CARGO_PKG_VERSION"));

/// Content types fetched when no `--content-type` is given.
pub const DEFAULT_CONTENT_TYPES: [&str; 7] = [
    "text/html",
    "text/plain",
    "text/markdown",
    "application/json",
    "application/xml",
    "text/xml",
    "application/xhtml+xml",
];

/// Content types converted from HTML to text; the others are returned as they are.
const HTML_TYPES: [&str; 2] = ["text/html", "application/xhtml+xml"];

/// The bounds of every fetch.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most response-body bytes read; a tool call may lower it, never raise it.
    pub max_bytes: usize,
    /// The whole fetch, redirects and body included.
    pub timeout: Duration,
    /// One TCP connect.
    pub connect_timeout: Duration,
    /// Most redirects followed.
    pub max_redirects: usize,
    /// Allowed media types (lowercase essence, e.g. `text/html`).
    pub content_types: Vec<String>,
}

/// What a successful fetch returns.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub url: Url,
    pub status: StatusCode,
    pub content_type: String,
    /// The body was cut at the cap, or the text was (it is never longer than the cap).
    pub truncated: bool,
    /// Body bytes read (at most the cap).
    pub bytes: usize,
    /// Every URL redirected to, in order (the last one is `url`).
    pub redirects: Vec<String>,
    /// The body as text: at most as many bytes as the cap.
    pub text: String,
}

/// Why a fetch failed. Messages name the rule and never repeat a URL's path or query.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0}")]
    Refused(#[from] Refusal),
    #[error("redirect from {from} refused: {refusal}")]
    RedirectRefused { from: String, refusal: Refusal },
    #[error("{0}")]
    Resolve(ResolveError),
    #[error("too many redirects: more than {0} (the --max-redirects bound)")]
    TooManyRedirects(usize),
    #[error("redirect from {0} has an invalid Location header")]
    BadLocation(String),
    #[error("content type {got} is not allowed (allowed: {allowed})")]
    ContentType { got: String, allowed: String },
    #[error("response from {0} has no Content-Type: refused")]
    NoContentType(String),
    #[error("content encoding {0:?} is not supported: refused")]
    ContentEncoding(String),
    #[error("fetch took longer than {0:?} (the --timeout bound)")]
    Timeout(Duration),
    #[error("request to {host} failed: {reason}")]
    Http { host: String, reason: String },
    #[error("converting HTML to text failed: {0}")]
    Convert(String),
}

/// Fetches URLs under a [`Policy`] and [`Limits`]. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Fetcher {
    client: reqwest::Client,
    policy: Arc<Policy>,
    limits: Limits,
}

impl Fetcher {
    /// Builds the client. `extra_roots` are trusted on top of the system's roots.
    pub fn new(
        policy: Policy,
        static_names: StaticNames,
        limits: Limits,
        extra_roots: Vec<reqwest::Certificate>,
    ) -> anyhow::Result<Self> {
        // The workspace builds reqwest without a crypto provider; `Err` = already installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let policy = Arc::new(policy);
        let mut builder = reqwest::Client::builder()
            // Stage by stage, why each setting is there:
            // names resolve only through the guard, which pins the checked addresses;
            .dns_resolver(GuardedResolver::new(policy.clone(), static_names))
            // a proxy would connect to the name itself, bypassing the guard;
            .no_proxy()
            // redirects are followed by `fetch`, which re-checks every hop;
            .redirect(redirect::Policy::none())
            // never tell one site where we came from;
            .referer(false)
            .user_agent(USER_AGENT)
            .connect_timeout(limits.connect_timeout)
            .timeout(limits.timeout);
        for root in extra_roots {
            builder = builder.add_root_certificate(root);
        }
        Ok(Self {
            client: builder.build()?,
            policy,
            limits,
        })
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Fetches `url`, reading at most `max_bytes` (capped by [`Limits::max_bytes`]) and
    /// returning at most as many bytes of text.
    pub async fn fetch(&self, url: &str, max_bytes: Option<usize>) -> Result<Fetched, FetchError> {
        let cap = max_bytes.map_or(self.limits.max_bytes, |n| n.min(self.limits.max_bytes));
        let timeout = self.limits.timeout;
        // The blocking HTML conversion cannot be cancelled: it watches this deadline itself.
        let deadline = Instant::now() + timeout;
        tokio::time::timeout(timeout, self.fetch_within(url, cap, deadline))
            .await
            .map_err(|_| FetchError::Timeout(timeout))?
    }

    async fn fetch_within(
        &self,
        input: &str,
        cap: usize,
        deadline: Instant,
    ) -> Result<Fetched, FetchError> {
        let mut url = self.policy.check_url(input)?;
        let mut redirects = Vec::new();
        loop {
            let response = self.send(&url).await?;
            let Some(next) = redirect_target(&response, &url)? else {
                return self.read(response, url, redirects, cap, deadline).await;
            };
            if redirects.len() >= self.limits.max_redirects {
                return Err(FetchError::TooManyRedirects(self.limits.max_redirects));
            }
            let next = self.policy.check_url(next.as_str()).map_err(|refusal| {
                FetchError::RedirectRefused {
                    from: host_of(&url),
                    refusal,
                }
            })?;
            tracing::debug!(from = %host_of(&url), to = %host_of(&next), "following redirect");
            redirects.push(next.to_string());
            url = next;
        }
    }

    /// One GET, with no body, cookies or credentials.
    async fn send(&self, url: &Url) -> Result<reqwest::Response, FetchError> {
        let accept = self.limits.content_types.join(", ");
        self.client
            .get(url.clone())
            .header(header::ACCEPT, accept)
            // Ask for the identity encoding: we do not decompress (see `read`).
            .header(header::ACCEPT_ENCODING, "identity")
            .send()
            .await
            .map_err(|err| send_error(&err, url, self.limits.timeout))
    }

    /// Checks the response's type and encoding, reads at most `cap` body bytes and turns
    /// them into at most `cap` bytes of text.
    async fn read(
        &self,
        mut response: reqwest::Response,
        url: Url,
        redirects: Vec<String>,
        cap: usize,
        deadline: Instant,
    ) -> Result<Fetched, FetchError> {
        let content_type = self.allowed_content_type(&response, &url)?;
        refuse_encoded_body(&response)?;
        let status = response.status();
        let (body, body_truncated) =
            read_capped(&mut response, cap, &url, self.limits.timeout).await?;
        let bytes = body.len();
        let converted = to_text(body, &content_type, &url, cap, deadline)
            .await?
            .ok_or(FetchError::Timeout(self.limits.timeout))?;
        let truncated = body_truncated || converted.truncated;
        let text = converted.text;
        tracing::info!(host = %host_of(&url), status = status.as_u16(), bytes, truncated, "fetched");
        Ok(Fetched {
            url,
            status,
            content_type,
            truncated,
            bytes,
            redirects,
            text,
        })
    }

    /// The response's media type (lowercase essence), if it is an allowed one.
    fn allowed_content_type(
        &self,
        response: &reqwest::Response,
        url: &Url,
    ) -> Result<String, FetchError> {
        let raw = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| FetchError::NoContentType(host_of(url)))?;
        let essence = raw
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if self.limits.content_types.contains(&essence) {
            Ok(essence)
        } else {
            Err(FetchError::ContentType {
                // Bounded: a hostile header should not flood the error.
                got: essence.chars().take(100).collect(),
                allowed: self.limits.content_types.join(", "),
            })
        }
    }
}

/// The checked-later target of a redirect response, or `None` for any other response.
fn redirect_target(response: &reqwest::Response, url: &Url) -> Result<Option<Url>, FetchError> {
    let status = response.status();
    let is_redirect = matches!(
        status,
        StatusCode::MOVED_PERMANENTLY
            | StatusCode::FOUND
            | StatusCode::SEE_OTHER
            | StatusCode::TEMPORARY_REDIRECT
            | StatusCode::PERMANENT_REDIRECT
    );
    if !is_redirect {
        return Ok(None);
    }
    // A redirect without a Location is an ordinary response: return it as fetched.
    let Some(location) = response.headers().get(header::LOCATION) else {
        return Ok(None);
    };
    let location = location
        .to_str()
        .map_err(|_| FetchError::BadLocation(host_of(url)))?;
    url.join(location)
        .map(Some)
        .map_err(|_| FetchError::BadLocation(host_of(url)))
}

/// We never ask for compression and do not decompress, so an encoded body would be
/// returned as garbage (or be a decompression bomb for whoever decodes it later).
fn refuse_encoded_body(response: &reqwest::Response) -> Result<(), FetchError> {
    match response
        .headers()
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase())
    {
        None => Ok(()),
        Some(enc) if enc.is_empty() || enc == "identity" => Ok(()),
        Some(enc) => Err(FetchError::ContentEncoding(enc.chars().take(50).collect())),
    }
}

/// Streams the body, keeping at most `cap` bytes. Returns the bytes and whether more
/// were there.
async fn read_capped(
    response: &mut reqwest::Response,
    cap: usize,
    url: &Url,
    timeout: Duration,
) -> Result<(Vec<u8>, bool), FetchError> {
    let hint = response.content_length().unwrap_or(0);
    let mut body = Vec::with_capacity(usize::try_from(hint).unwrap_or(cap).min(cap));
    loop {
        let chunk = response
            .chunk()
            .await
            .map_err(|err| send_error(&err, url, timeout))?;
        let Some(chunk) = chunk else {
            return Ok((body, false));
        };
        let room = cap - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
        if body.len() == cap && cap > 0 {
            // Exactly at the cap: truncated only if anything follows.
            let more = response.chunk().await.ok().flatten();
            return Ok((body, more.is_some_and(|c| !c.is_empty())));
        }
    }
}

/// The body as at most `max_len` bytes of text: HTML rendered to plain text (links
/// resolved against `url`), everything else decoded as UTF-8. `None` when the conversion
/// ran past `deadline`.
async fn to_text(
    mut body: Vec<u8>,
    content_type: &str,
    url: &Url,
    max_len: usize,
    deadline: Instant,
) -> Result<Option<html::Converted>, FetchError> {
    // A body cut at the cap may end inside a character: drop the partial one.
    if let Err(err) = std::str::from_utf8(&body)
        && err.error_len().is_none()
    {
        body.truncate(err.valid_up_to());
    }
    if !HTML_TYPES.contains(&content_type) {
        return Ok(Some(decode_capped(&body, max_len)));
    }
    // Linear, but 2 MiB of HTML is still milliseconds of CPU: keep it off the async
    // workers. It cannot be cancelled, so it stops by itself at the deadline.
    let base = url.clone();
    tokio::task::spawn_blocking(move || {
        html::html_to_text_until(&body, Some(&base), max_len, deadline)
    })
    .await
    .map_err(|err| FetchError::Convert(err.to_string()))
}

/// `body` decoded as UTF-8 (an invalid sequence becomes U+FFFD, which can triple its
/// size), cut to at most `max_len` bytes on a character boundary.
pub fn decode_capped(body: &[u8], max_len: usize) -> html::Converted {
    let mut out = html::Output::new(max_len);
    for chunk in body.utf8_chunks() {
        out.push_str(chunk.valid());
        if !chunk.invalid().is_empty() {
            out.push_str(char::REPLACEMENT_CHARACTER.encode_utf8(&mut [0; 4]));
        }
        if out.is_full() {
            break;
        }
    }
    out.finish()
}

/// `scheme://host[:port]` of a URL: enough to say where, never the path or query.
pub fn host_of(url: &Url) -> String {
    let host = url.host_str().unwrap_or("?");
    match url.port() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    }
}

/// Maps a reqwest error to ours: our resolver's refusal is passed on as it is (reqwest
/// wraps it); other errors are reduced to their innermost cause, without the URL.
fn send_error(err: &reqwest::Error, url: &Url, timeout: Duration) -> FetchError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    let mut innermost = String::new();
    let mut unknown_issuer = false;
    while let Some(cause) = source {
        if let Some(resolve) = cause.downcast_ref::<ResolveError>() {
            return FetchError::Resolve(resolve.clone());
        }
        unknown_issuer |= matches!(
            tls_error(cause),
            Some(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer
            ))
        );
        innermost = cause.to_string();
        source = cause.source();
    }
    if err.is_timeout() {
        return FetchError::Timeout(timeout);
    }
    let mut reason = if err.is_connect() {
        format!("could not connect: {innermost}")
    } else {
        innermost
    };
    if unknown_issuer {
        // The one certificate error a flag can lift: a CA the system does not trust.
        reason
            .push_str(" (the certificate's CA is not trusted: trust a private CA with --ca-file)");
    }
    FetchError::Http {
        host: host_of(url),
        reason,
    }
}

/// The rustls error of a failed handshake, if `cause` is one. It arrives wrapped in
/// `io::Error`s (two: tokio-rustls's, then the connector's), whose `source()` skips what
/// they wrap, so they are unwrapped here.
fn tls_error<'a>(cause: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cause = cause;
    loop {
        if let Some(tls) = cause.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        cause = cause.downcast_ref::<std::io::Error>()?.get_ref()?;
    }
}
