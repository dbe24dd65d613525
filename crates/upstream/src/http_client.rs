//! The HTTP/1.1 client that talks to HTTP upstreams, on hyper's connection API.
//!
//! Keep-alive connections are pooled per upstream; a connection is used by one request at a
//! time and is driven by the task that sends that request — there is no connection task to
//! hand the request to and the response back from. A general-purpose client (reqwest, or
//! hyper-util's pool) runs every connection as its own task, which costs a cross-task wake-up
//! for the request, the response head and each body chunk; on the gateway's hot path that was
//! about a third of its CPU time per proxied call (docs/benchmarks.md).
//!
//! What it does not do, on purpose: redirects (an upstream that redirects is misconfigured),
//! proxies, cookies, HTTP/2. TLS is rustls with the platform's roots (ALPN `http/1.1`).

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body as _, Incoming};
use hyper::client::conn::http1;
use hyper::header::{HOST, HeaderMap, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::either::Either;

/// An idle connection older than this is closed rather than reused: servers close idle
/// keep-alive connections after their own timeout (5 s for uvicorn and Node), and a request
/// written just as the server closes fails without being safe to send again.
const IDLE_TIMEOUT: Duration = Duration::from_secs(4);
/// Idle connections kept per upstream; more are closed when they become idle.
const MAX_IDLE: usize = 32;

type Io = TokioIo<Either<TcpStream, TlsStream<TcpStream>>>;

struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
    driver: http1::Connection<Io, Full<Bytes>>,
    idle_since: Instant,
}

impl Conn {
    /// Drives the connection until it can take a request; false if it has closed.
    async fn ready(&mut self) -> bool {
        poll_fn(|cx| {
            if self.driver.poll_without_shutdown(cx).is_ready() {
                return Poll::Ready(false);
            }
            self.sender.poll_ready(cx).map(|r| r.is_ok())
        })
        .await
    }
}

/// Why a request got no complete response.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect")]
    Connect,
    #[error("connection timed out")]
    ConnectTimeout,
    #[error("TLS handshake failed")]
    Tls,
    #[error("request failed")]
    Request,
    #[error("connection lost while reading the response")]
    Body,
    #[error("response too large")]
    TooLarge,
}

/// A pooled HTTP/1.1 client for one origin (scheme, host, port).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    host: String,
    port: u16,
    /// The `Host` header: the URL's authority without credentials.
    authority: HeaderValue,
    path: hyper::Uri,
    tls: Option<(TlsConnector, rustls::pki_types::ServerName<'static>)>,
    headers: HeaderMap,
    connect_timeout: Duration,
    idle: Mutex<Vec<Conn>>,
}

/// A response whose body is read through the connection that carries it. Reading the body to
/// the end returns the connection to the pool; dropping it early closes the connection.
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    body: Incoming,
    conn: Option<Conn>,
    pool: Arc<Inner>,
}

impl Client {
    /// A client for `url`'s origin and path; every request carries `headers` (the upstream's
    /// configured credentials). Fails for URLs that are not http(s) with a host.
    pub fn new(
        url: &url::Url,
        headers: HeaderMap,
        connect_timeout: Duration,
    ) -> Result<Client, String> {
        let host = url.host_str().ok_or("the URL has no host")?;
        let port = url.port_or_known_default().ok_or("the URL has no port")?;
        let tls = match url.scheme() {
            "http" => None,
            "https" => Some(tls_connector(host)?),
            other => return Err(format!("unsupported URL scheme {other:?}")),
        };
        let authority = match url.port() {
            Some(port) => format!("{}:{port}", url_host(url)),
            None => url_host(url),
        };
        let mut path = url.path().to_owned();
        if let Some(query) = url.query() {
            path.push('?');
            path.push_str(query);
        }
        Ok(Client {
            inner: Arc::new(Inner {
                // IPv6 literals are bracketed in URLs, not in socket addresses.
                host: host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned(),
                port,
                authority: HeaderValue::from_str(&authority).map_err(|e| e.to_string())?,
                path: path.parse().map_err(|e| format!("invalid URL path: {e}"))?,
                tls,
                headers,
                connect_timeout,
                idle: Mutex::new(Vec::new()),
            }),
        })
    }

    /// Sends one request to the upstream URL and waits for the response head.
    pub async fn send(
        &self,
        method: Method,
        headers: &[(&'static str, HeaderValue)],
        body: Bytes,
    ) -> Result<Response, Error> {
        let inner = &self.inner;
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = method;
        *request.uri_mut() = inner.path.clone();
        let h = request.headers_mut();
        h.insert(HOST, inner.authority.clone());
        for (name, value) in &inner.headers {
            h.insert(name, value.clone());
        }
        for (name, value) in headers {
            h.insert(*name, value.clone());
        }
        let mut request = Some(request);
        // A pooled connection the server has just closed takes the request back unsent; then
        // the request goes out once more, on a fresh connection.
        loop {
            let (mut conn, fresh) = match self.idle_connection().await {
                Some(conn) => (conn, false),
                None => (inner.connect().await?, true),
            };
            let pending = conn
                .sender
                .try_send_request(request.take().ok_or(Error::Request)?);
            let mut pending = std::pin::pin!(pending);
            let mut closed = false;
            let outcome = poll_fn(|cx| {
                if !closed && conn.driver.poll_without_shutdown(cx).is_ready() {
                    closed = true;
                }
                match pending.as_mut().poll(cx) {
                    Poll::Pending if closed => Poll::Ready(None),
                    other => other.map(Some),
                }
            })
            .await;
            match outcome {
                Some(Ok(response)) => {
                    let (parts, body) = response.into_parts();
                    return Ok(Response {
                        status: parts.status,
                        headers: parts.headers,
                        body,
                        conn: (!closed).then_some(conn),
                        pool: inner.clone(),
                    });
                }
                Some(Err(mut failed)) => match failed.take_message() {
                    Some(unsent) if !fresh => request = Some(unsent),
                    _ => return Err(Error::Request),
                },
                // Closed before answering. Dropping the connection hands back a request it had
                // not taken yet; one it had taken may have reached the server: not sent again.
                None => {
                    drop(conn);
                    match pending.await {
                        Err(mut failed) if !fresh => match failed.take_message() {
                            Some(unsent) => request = Some(unsent),
                            None => return Err(Error::Request),
                        },
                        _ => return Err(Error::Request),
                    }
                }
            }
        }
    }

    async fn idle_connection(&self) -> Option<Conn> {
        loop {
            let mut conn = lock(&self.inner.idle).pop()?;
            if conn.idle_since.elapsed() < IDLE_TIMEOUT && conn.ready().await {
                return Some(conn);
            }
        }
    }
}

impl Inner {
    async fn connect(&self) -> Result<Conn, Error> {
        let connect = async {
            let tcp = TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|_| Error::Connect)?;
            // Requests and answers are small and written whole: no Nagle delay.
            let _ = tcp.set_nodelay(true);
            let io = match &self.tls {
                None => Either::Left(tcp),
                Some((connector, name)) => Either::Right(
                    connector
                        .connect(name.clone(), tcp)
                        .await
                        .map_err(|_| Error::Tls)?,
                ),
            };
            http1::handshake(TokioIo::new(io))
                .await
                .map_err(|_| Error::Connect)
        };
        let (sender, driver) = tokio::time::timeout(self.connect_timeout, connect)
            .await
            .map_err(|_| Error::ConnectTimeout)??;
        Ok(Conn {
            sender,
            driver,
            idle_since: Instant::now(),
        })
    }
}

impl Response {
    /// The next piece of the body, `None` at its end.
    pub async fn chunk(&mut self) -> Option<Result<Bytes, Error>> {
        loop {
            let frame = poll_fn(|cx| {
                let mut closed = false;
                if let Some(conn) = &mut self.conn
                    && conn.driver.poll_without_shutdown(cx).is_ready()
                {
                    // The server closed the connection: what it sent is in the body already.
                    self.conn = None;
                    closed = true;
                }
                match Pin::new(&mut self.body).poll_frame(cx) {
                    Poll::Pending if closed || self.conn.is_none() => {
                        Poll::Ready(Some(Err(Error::Body)))
                    }
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(None) => Poll::Ready(None),
                    Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
                    Poll::Ready(Some(Err(_))) => Poll::Ready(Some(Err(Error::Body))),
                }
            })
            .await;
            match frame {
                None => {
                    self.release();
                    return None;
                }
                Some(Ok(frame)) => {
                    // Trailers carry nothing we read.
                    if let Ok(data) = frame.into_data() {
                        return Some(Ok(data));
                    }
                }
                Some(Err(e)) => {
                    self.conn = None;
                    return Some(Err(e));
                }
            }
        }
    }

    /// Reads the whole body, at most `limit` bytes.
    pub async fn bytes(self, limit: usize) -> Result<Vec<u8>, String> {
        let mut body = Vec::new();
        let mut chunks = std::pin::pin!(self.into_stream(limit));
        while let Some(chunk) = futures::StreamExt::next(&mut chunks).await {
            body.extend_from_slice(&chunk.map_err(|e| e.to_string())?);
        }
        Ok(body)
    }

    /// The body as a stream of chunks; it ends after an error, and fails once more than
    /// `limit` bytes have come.
    pub fn into_stream(
        self,
        limit: usize,
    ) -> impl futures::Stream<Item = Result<Bytes, Error>> + Send {
        futures::stream::unfold(Some((self, 0usize)), move |state| async move {
            let (mut response, read) = state?;
            match response.chunk().await? {
                Ok(chunk) if read + chunk.len() <= limit => {
                    let read = read + chunk.len();
                    Some((Ok(chunk), Some((response, read))))
                }
                // Dropping the response closes its connection.
                Ok(_) => Some((Err(Error::TooLarge), None)),
                Err(e) => Some((Err(e), None)),
            }
        })
    }

    /// Reads and discards the body, so the connection can be reused; a body that has not ended
    /// within 2 s, or passes 1 MiB, costs the connection instead.
    pub async fn discard(self) {
        let drain = async {
            let mut chunks = std::pin::pin!(self.into_stream(1024 * 1024));
            while let Some(Ok(_)) = futures::StreamExt::next(&mut chunks).await {}
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
    }

    fn release(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            conn.idle_since = Instant::now();
            let mut idle = lock(&self.pool.idle);
            // Expired connections would otherwise wait, half-closed, until the pool reached them.
            idle.retain(|c| c.idle_since.elapsed() < IDLE_TIMEOUT);
            if idle.len() < MAX_IDLE {
                idle.push(conn);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The URL's host as written in a `Host` header (IPv6 literals in brackets).
fn url_host(url: &url::Url) -> String {
    match url.host() {
        Some(url::Host::Ipv6(ip)) => format!("[{ip}]"),
        Some(host) => host.to_string(),
        None => String::new(),
    }
}

/// rustls with the platform's trusted roots (the process-wide crypto provider, ring).
fn tls_connector(
    host: &str,
) -> Result<(TlsConnector, rustls::pki_types::ServerName<'static>), String> {
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
    let verifier = rustls_platform_verifier::Verifier::new(provider.clone())
        .map_err(|e| format!("cannot load the platform's trusted roots: {e}"))?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|_| format!("{host:?} is not a valid TLS server name"))?;
    Ok((TlsConnector::from(Arc::new(config)), name))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A raw HTTP/1.1 server: for each connection, answers requests with `reply(n)` (n counts
    /// requests over all connections) and closes the connection after `per_conn` answers.
    async fn server(per_conn: usize, reply: fn(usize) -> String) -> (url::Url, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/mcp", listener.local_addr().expect("addr"));
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        let requests = Arc::new(AtomicUsize::new(0));
        tokio::spawn(async move {
            loop {
                let Ok((mut tcp, _)) = listener.accept().await else {
                    return;
                };
                counted.fetch_add(1, Ordering::SeqCst);
                let requests = requests.clone();
                tokio::spawn(async move {
                    for _ in 0..per_conn {
                        let mut buf = vec![0u8; 4096];
                        let mut got = Vec::new();
                        // Requests here are small: headers and body arrive together.
                        while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
                            match tcp.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => got.extend_from_slice(&buf[..n]),
                            }
                        }
                        let n = requests.fetch_add(1, Ordering::SeqCst);
                        if tcp.write_all(reply(n).as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (url.parse().expect("url"), connections)
    }

    fn ok(body: &str) -> String {
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    fn client(url: &url::Url) -> Client {
        Client::new(url, HeaderMap::new(), Duration::from_secs(5)).expect("client")
    }

    async fn post(client: &Client) -> Result<Vec<u8>, String> {
        let response = client
            .send(Method::POST, &[], Bytes::from_static(b"{}"))
            .await
            .map_err(|e| e.to_string())?;
        response.bytes(1024).await
    }

    #[tokio::test]
    async fn keeps_one_connection_alive_across_requests() {
        let (url, connections) = server(usize::MAX, |_| ok("{\"a\":1}")).await;
        let client = client(&url);
        for _ in 0..5 {
            assert_eq!(post(&client).await.expect("answer"), b"{\"a\":1}");
        }
        assert_eq!(connections.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_while_idle_is_replaced() {
        let (url, connections) = server(1, |_| ok("{}")).await;
        let client = client(&url);
        for _ in 0..3 {
            assert_eq!(post(&client).await.expect("answer"), b"{}");
            // Let the server's close arrive before the next request.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(connections.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_body_cut_short_is_an_error_not_a_short_answer() {
        let (url, _) = server(1, |_| {
            "HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"partial\"".to_owned()
        })
        .await;
        assert_eq!(
            post(&client(&url)).await.expect_err("cut short"),
            "connection lost while reading the response"
        );
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_refused() {
        let (url, _) = server(1, |_| ok(&"x".repeat(2000))).await;
        assert_eq!(
            post(&client(&url)).await.expect_err("too large"),
            "response too large"
        );
    }

    #[tokio::test]
    async fn unreachable_and_unsupported_urls_get_clear_errors() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url: url::Url = format!("http://{}/mcp", listener.local_addr().expect("addr"))
            .parse()
            .expect("url");
        drop(listener);
        assert_eq!(
            post(&client(&url)).await.expect_err("closed port"),
            "cannot connect"
        );
        let ftp: url::Url = "ftp://127.0.0.1/mcp".parse().expect("url");
        assert!(
            Client::new(&ftp, HeaderMap::new(), Duration::from_secs(1))
                .err()
                .is_some_and(|e| e.contains("unsupported URL scheme"))
        );
    }

    #[tokio::test]
    async fn sends_host_path_and_configured_headers() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.expect("accept");
            let mut buf = vec![0u8; 4096];
            let n = tcp.read(&mut buf).await.expect("read");
            tcp.write_all(ok("{}").as_bytes()).await.expect("write");
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        let url: url::Url = format!("http://{addr}/mcp?x=1").parse().expect("url");
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static("Bearer upstream"));
        let client = Client::new(&url, headers, Duration::from_secs(5)).expect("client");
        let response = client
            .send(
                Method::POST,
                &[("mcp-method", HeaderValue::from_static("tools/call"))],
                Bytes::from_static(b"{}"),
            )
            .await
            .expect("send");
        assert_eq!(response.status, StatusCode::OK);
        let request = seen.await.expect("server").to_ascii_lowercase();
        assert!(
            request.starts_with("post /mcp?x=1 http/1.1\r\n"),
            "{request}"
        );
        assert!(request.contains(&format!("host: {addr}\r\n")), "{request}");
        assert!(
            request.contains("authorization: bearer upstream\r\n"),
            "{request}"
        );
        assert!(request.contains("mcp-method: tools/call\r\n"), "{request}");
        assert!(request.ends_with("\r\n\r\n{}"), "{request}");
    }
}
