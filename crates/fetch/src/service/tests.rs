//! The fetch service end to end: a real test web server on 127.0.0.1, the rmcp handler
//! served over real Streamable HTTP, driven with raw JSON-RPC (2026-07-28, stateless).
//!
//! The test web server counts the requests it receives, so a refusal is proven twice: by
//! the error the tool returns and by the server seeing nothing.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    extract::State,
    http::{HeaderValue, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use clap::Parser;
use micromcp_testkit::rpc_2026;
use serde_json::{Value, json};

use crate::{FetchArgs, FetchService, build_fetcher};

const PAGE: &str = "<!doctype html><html><head><title>T</title><script>var secret = 1;</script>\
    </head><body><h1>Hello</h1><p>World of <b>text</b>.</p></body></html>";

/// The test web server: what it serves, and how many requests reached it.
struct Site {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

impl Site {
    async fn start() -> Self {
        let hits = Arc::new(AtomicUsize::new(0));
        let app = axum::Router::new()
            .fallback(site_handler)
            .with_state(hits.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind site");
        let addr = listener.local_addr().expect("site addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, hits }
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// Routes by path; `/redirect?TARGET` answers 302 to TARGET verbatim.
async fn site_handler(State(hits): State<Arc<AtomicUsize>>, uri: Uri) -> Response {
    hits.fetch_add(1, Ordering::SeqCst);
    let typed =
        |ct: &'static str, body: Vec<u8>| ([(header::CONTENT_TYPE, ct)], body).into_response();
    match uri.path() {
        "/page" => typed("text/html; charset=utf-8", PAGE.into()),
        "/big" => typed("text/plain", vec![b'a'; 10_000]),
        "/exact" => typed("text/plain", vec![b'b'; 100]),
        "/utf8" => typed("text/plain; charset=utf-8", "é".repeat(10).into_bytes()),
        "/json" => typed("application/json", br#"{"k":"v"}"#.to_vec()),
        "/nested-tables" => typed(
            "text/html",
            format!("{}x", "<table><tr><td>".repeat(30_000)).into(),
        ),
        "/wide-table" => typed(
            "text/html",
            format!(
                "<table><tr>{}</tr>{}",
                "<td>x".repeat(30_000),
                "<tr><td>y".repeat(30_000)
            )
            .into(),
        ),
        "/deep-divs" => typed(
            "text/html",
            format!("{}deep", "<div>".repeat(190_000)).into(),
        ),
        "/many-attributes" => typed("text/html", many_attributes().into()),
        "/tabs" => typed(
            "text/html",
            format!("<pre>{}</pre>", "\t".repeat(900_000)).into(),
        ),
        "/invalid-utf8" => typed("text/plain", vec![0xff; 1_000_000]),
        "/image" => typed("image/png", vec![0x89, b'P', b'N', b'G']),
        "/untyped" => b"no type".to_vec().into_response_without_type(),
        "/gzip" => (
            [
                (header::CONTENT_TYPE, "text/plain"),
                (header::CONTENT_ENCODING, "gzip"),
            ],
            vec![0x1f, 0x8b],
        )
            .into_response(),
        "/loop" => redirect("/loop"),
        "/redirect" => redirect(uri.query().unwrap_or("/page")),
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            typed("text/plain", b"late".to_vec())
        }
        "/cookie" => (
            [
                (header::CONTENT_TYPE, "text/plain"),
                (header::SET_COOKIE, "session=s3cret"),
            ],
            b"cookie set".to_vec(),
        )
            .into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

/// One start tag with 100,000 distinct attributes, then text.
fn many_attributes() -> String {
    let mut html = String::from("<p");
    for i in 0..100_000 {
        html.push_str(&format!(" a{i}"));
    }
    html + ">text"
}

trait UntypedBody {
    fn into_response_without_type(self) -> Response;
}

impl UntypedBody for Vec<u8> {
    /// A body with no Content-Type header at all.
    fn into_response_without_type(self) -> Response {
        let mut response = self.into_response();
        response.headers_mut().remove(header::CONTENT_TYPE);
        response
    }
}

fn redirect(location: &str) -> Response {
    let mut response = StatusCode::FOUND.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// `micromcp serve fetch` flags, parsed by clap exactly as the CLI does.
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: FetchArgs,
}

fn parse_args(flags: &[String]) -> FetchArgs {
    let argv = std::iter::once("fetch".to_owned()).chain(flags.iter().cloned());
    Cli::try_parse_from(argv).expect("flags parse").args
}

/// The usual test flags: `site.test` (http) and `secure.test` (https only) both map to
/// 127.0.0.1, which is lifted with --allow-cidr; the site's port is allowed.
fn site_flags(site: &Site) -> Vec<String> {
    strings(&[
        "--allow-http",
        "site.test",
        "--allow",
        "secure.test",
        "--resolve",
        "site.test=127.0.0.1",
        "--resolve",
        "secure.test=127.0.0.1",
        "--allow-cidr",
        "127.0.0.1/32",
        "--allow-port",
        &site.port().to_string(),
    ])
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// Serves the fetch service's MCP endpoint on loopback; returns its `/mcp` URL.
async fn start_service(flags: &[String]) -> String {
    let fetcher = build_fetcher(&parse_args(flags)).expect("fetcher");
    micromcp_testkit::serve(micromcp_services::http_router(FetchService::new(fetcher))).await
}

/// Calls `fetch_text` and returns the tool result (panics on a JSON-RPC error).
async fn fetch(mcp: &str, arguments: Value) -> Value {
    let response = rpc_2026(
        mcp,
        "tools/call",
        json!({"name": "fetch_text", "arguments": arguments}),
    )
    .await;
    response
        .get("result")
        .unwrap_or_else(|| panic!("JSON-RPC error: {response}"))
        .clone()
}

/// Calls `fetch_text` expecting a successful result; returns its structured content.
async fn fetch_ok(mcp: &str, arguments: Value) -> Value {
    let result = fetch(mcp, arguments).await;
    assert_ne!(result["isError"], true, "{result}");
    result["structuredContent"].clone()
}

/// Calls `fetch_text` expecting a refusal; returns its message.
async fn fetch_refused(mcp: &str, url: &str) -> String {
    let result = fetch(mcp, json!({"url": url})).await;
    assert_eq!(result["isError"], true, "{url}: {result}");
    assert!(result.get("structuredContent").is_none_or(Value::is_null));
    result["content"][0]["text"]
        .as_str()
        .expect("error text")
        .to_owned()
}

#[tokio::test]
async fn tools_list_declares_hints_and_output_schema() {
    let site = Site::start().await;
    let mcp = start_service(&site_flags(&site)).await;
    let listed = rpc_2026(&mcp, "tools/list", json!({})).await;
    let tools = listed["result"]["tools"].as_array().expect("tools");
    assert_eq!(tools.len(), 1, "{listed}");
    let tool = &tools[0];
    assert_eq!(tool["name"], "fetch_text");
    assert_eq!(tool["annotations"]["readOnlyHint"], true);
    assert_eq!(tool["annotations"]["openWorldHint"], true);
    assert_eq!(tool["inputSchema"]["required"], json!(["url"]));
    let output = &tool["outputSchema"]["properties"];
    for field in [
        "url",
        "status",
        "content_type",
        "truncated",
        "text",
        "redirects",
    ] {
        assert!(
            output.get(field).is_some(),
            "outputSchema lacks {field}: {tool}"
        );
    }
}

#[tokio::test]
async fn html_is_returned_as_text_with_metadata() {
    let site = Site::start().await;
    let mcp = start_service(&site_flags(&site)).await;
    let url = format!("http://site.test:{}/page", site.port());
    let out = fetch_ok(&mcp, json!({"url": url})).await;
    assert_eq!(out["url"], url);
    assert_eq!(out["status"], 200);
    assert_eq!(out["content_type"], "text/html");
    assert_eq!(out["truncated"], false);
    assert_eq!(out["bytes"], PAGE.len());
    let text = out["text"].as_str().expect("text");
    assert!(
        text.contains("Hello") && text.contains("World of"),
        "{text}"
    );
    assert!(
        !text.contains('<') && !text.contains("var secret"),
        "{text}"
    );

    let json_out = fetch_ok(
        &mcp,
        json!({"url": format!("http://site.test:{}/json", site.port())}),
    )
    .await;
    assert_eq!(json_out["content_type"], "application/json");
    assert_eq!(json_out["text"], r#"{"k":"v"}"#);
}

#[tokio::test]
async fn allowed_redirect_reports_the_final_url() {
    let site = Site::start().await;
    let mcp = start_service(&site_flags(&site)).await;
    let base = format!("http://site.test:{}", site.port());
    let out = fetch_ok(&mcp, json!({"url": format!("{base}/redirect?/page")})).await;
    assert_eq!(out["url"], format!("{base}/page"));
    assert_eq!(out["redirects"], json!([format!("{base}/page")]));
    assert!(out["text"].as_str().expect("text").contains("Hello"));
    assert_eq!(site.hits(), 2);
}

#[tokio::test]
async fn body_is_cut_at_max_bytes_and_the_cap_cannot_be_raised() {
    let site = Site::start().await;
    let mut flags = site_flags(&site);
    flags.extend(strings(&["--max-bytes", "1000"]));
    let mcp = start_service(&flags).await;
    let big = format!("http://site.test:{}/big", site.port());

    let out = fetch_ok(&mcp, json!({"url": big, "max_bytes": 100})).await;
    assert_eq!(out["truncated"], true);
    assert_eq!(out["bytes"], 100);
    assert_eq!(out["text"], "a".repeat(100));

    let out = fetch_ok(&mcp, json!({"url": big, "max_bytes": 1_000_000})).await;
    assert_eq!(out["truncated"], true);
    assert_eq!(out["bytes"], 1000, "max_bytes may not raise --max-bytes");

    // A body exactly at the cap is complete, not truncated.
    let exact = format!("http://site.test:{}/exact", site.port());
    let out = fetch_ok(&mcp, json!({"url": exact, "max_bytes": 100})).await;
    assert_eq!(out["truncated"], false, "{out}");
    assert_eq!(out["bytes"], 100);

    // A cut inside a multi-byte character drops the partial character.
    let utf8 = format!("http://site.test:{}/utf8", site.port());
    let out = fetch_ok(&mcp, json!({"url": utf8, "max_bytes": 5})).await;
    assert_eq!(out["text"], "éé");
}

#[tokio::test]
async fn max_bytes_zero_is_invalid_params() {
    let site = Site::start().await;
    let mcp = start_service(&site_flags(&site)).await;
    let url = format!("http://site.test:{}/page", site.port());
    let response = rpc_2026(
        &mcp,
        "tools/call",
        json!({"name": "fetch_text", "arguments": {"url": url, "max_bytes": 0}}),
    )
    .await;
    assert_eq!(response["error"]["code"], -32602, "{response}");
    assert_eq!(site.hits(), 0);
}

#[tokio::test]
async fn disallowed_content_types_and_encodings_are_refused() {
    let site = Site::start().await;
    let mcp = start_service(&site_flags(&site)).await;
    let base = format!("http://site.test:{}", site.port());
    let message = fetch_refused(&mcp, &format!("{base}/image")).await;
    assert!(
        message.contains("content type image/png is not allowed") && message.contains("text/html"),
        "{message}"
    );
    let message = fetch_refused(&mcp, &format!("{base}/untyped")).await;
    assert!(message.contains("no Content-Type"), "{message}");
    let message = fetch_refused(&mcp, &format!("{base}/gzip")).await;
    assert!(message.contains("content encoding \"gzip\""), "{message}");
}

#[tokio::test]
async fn content_type_flag_replaces_the_default_list() {
    let site = Site::start().await;
    let mut flags = site_flags(&site);
    flags.extend(strings(&["--content-type", "IMAGE/PNG"]));
    let mcp = start_service(&flags).await;
    let base = format!("http://site.test:{}", site.port());
    let out = fetch_ok(&mcp, json!({"url": format!("{base}/image")})).await;
    assert_eq!(out["content_type"], "image/png");
    let message = fetch_refused(&mcp, &format!("{base}/page")).await;
    assert!(message.contains("text/html is not allowed"), "{message}");
}

#[tokio::test]
async fn loopback_is_refused_without_allow_cidr_in_every_form() {
    let site = Site::start().await;
    let port = site.port().to_string();
    let flags = strings(&[
        "--allow-http",
        "site.test",
        "--allow-http",
        "localhost",
        "--resolve",
        "site.test=127.0.0.1",
        "--allow-port",
        &port,
    ]);
    let mcp = start_service(&flags).await;
    for url in [
        format!("http://127.0.0.1:{port}/page"),
        format!("http://2130706433:{port}/page"),
        format!("http://0x7f.1:{port}/page"),
        format!("http://0177.0.0.1:{port}/page"),
        format!("http://127.1:{port}/page"),
        format!("http://[::ffff:127.0.0.1]:{port}/page"),
        format!("http://[::1]:{port}/page"),
    ] {
        let message = fetch_refused(&mcp, &url).await;
        assert!(message.contains("is loopback"), "{url}: {message}");
    }
    // A name mapped to loopback, and `localhost` through the system resolver (/etc/hosts).
    let message = fetch_refused(&mcp, &format!("http://site.test:{port}/page")).await;
    assert!(
        message.contains("site.test resolves to address 127.0.0.1 is loopback"),
        "{message}"
    );
    let message = fetch_refused(&mcp, &format!("http://localhost:{port}/page")).await;
    assert!(
        message.contains("localhost resolves to address") && message.contains("loopback"),
        "{message}"
    );
    assert_eq!(site.hits(), 0, "a refused fetch reached the server");
}

#[tokio::test]
async fn the_service_cannot_fetch_its_own_endpoint() {
    // The gateway (or this service) listens on loopback: without --allow-cidr no URL reaches it.
    let mcp = start_service(&strings(&["--allow-http", "localhost"])).await;
    let own: Uri = mcp.parse().expect("own url");
    let port = own.port_u16().expect("port").to_string();
    let flags = strings(&[
        "--allow-http",
        "localhost",
        "--allow-http",
        "gateway.test",
        "--resolve",
        "gateway.test=127.0.0.1",
        "--allow-port",
        &port,
    ]);
    let guarded = start_service(&flags).await;
    for url in [
        format!("http://127.0.0.1:{port}/mcp"),
        format!("http://localhost:{port}/mcp"),
        format!("http://gateway.test:{port}/mcp"),
    ] {
        let message = fetch_refused(&guarded, &url).await;
        assert!(message.contains("loopback"), "{url}: {message}");
    }
}

#[tokio::test]
async fn names_resolving_to_internal_addresses_are_refused() {
    let site = Site::start().await;
    let mut flags = site_flags(&site);
    for (name, addr) in [
        ("private.test", "10.0.0.1"),
        ("metadata.test", "169.254.169.254"),
        ("alibaba.test", "100.100.100.200"),
        ("mapped.test", "::ffff:169.254.169.254"),
        ("ula.test", "fd00:ec2::254"),
        ("cgnat.test", "100.64.1.1"),
        ("v6loop.test", "[::1]"),
    ] {
        flags.extend(strings(&[
            "--allow-http",
            name,
            "--resolve",
            &format!("{name}={addr}"),
        ]));
    }
    let mcp = start_service(&flags).await;
    let port = site.port();
    for (name, expected) in [
        ("private.test", "10.0.0.1 is private"),
        (
            "metadata.test",
            "169.254.169.254 is a cloud metadata endpoint",
        ),
        ("alibaba.test", "Alibaba"),
        ("mapped.test", "IPv4-mapped form of 169.254.169.254"),
        ("ula.test", "AWS IPv6 metadata"),
        ("cgnat.test", "CGNAT"),
        ("v6loop.test", "::1 is loopback"),
    ] {
        let message = fetch_refused(&mcp, &format!("http://{name}:{port}/page")).await;
        assert!(
            message.contains(&format!("host {name} resolves to address"))
                && message.contains(expected),
            "{name}: {message}"
        );
    }
}

#[tokio::test]
async fn a_mixed_dns_answer_is_refused_whole() {
    let site = Site::start().await;
    let mut flags = site_flags(&site);
    // 127.0.0.1 is allowed (and serves the page); the other address is not: the name is
    // refused whole, whichever order the answer comes in.
    for (name, addrs) in [
        ("mixed.test", "127.0.0.1,10.0.0.1"),
        ("mixed-v6.test", "127.0.0.1,fd00::1"),
        ("mixed-rev.test", "fe80::1,127.0.0.1"),
    ] {
        flags.extend(strings(&[
            "--allow-http",
            name,
            "--resolve",
            &format!("{name}={addrs}"),
        ]));
    }
    let mcp = start_service(&flags).await;
    for (name, expected) in [
        ("mixed.test", "10.0.0.1 is private"),
        ("mixed-v6.test", "fd00::1 is unique-local"),
        ("mixed-rev.test", "fe80::1 is link-local"),
    ] {
        let message = fetch_refused(&mcp, &format!("http://{name}:{}/page", site.port())).await;
        assert!(
            message.contains(&format!("{name} resolves to address {expected}")),
            "{message}"
        );
    }
    assert_eq!(site.hits(), 0, "no address of a refused name may be used");
}

#[tokio::test]
async fn redirects_are_rechecked_at_every_hop() {
    let site = Site::start().await;
    let port = site.port();
    let mut flags = site_flags(&site);
    flags.extend(strings(&[
        "--allow-http",
        "internal.test",
        "--resolve",
        "internal.test=10.0.0.1",
    ]));
    let mcp = start_service(&flags).await;
    let base = format!("http://site.test:{port}");
    for (target, expected) in [
        ("http://10.0.0.1/".to_owned(), "address 10.0.0.1 is private"),
        (
            "http://169.254.169.254/latest/meta-data/".to_owned(),
            "metadata",
        ),
        ("http://[::ffff:a9fe:a9fe]/".to_owned(), "169.254.169.254"),
        (
            format!("http://127.0.0.1:{port}/page"),
            "IP address, not an allowlisted domain",
        ),
        ("http://2130706433/".to_owned(), "not an allowlisted domain"),
        (
            "http://evil.test/".to_owned(),
            "host evil.test is not in the allowlist",
        ),
        (
            format!("http://secure.test:{port}/page"),
            "plain http to secure.test is refused: https only",
        ),
        ("file:///etc/passwd".to_owned(), "scheme `file:` is refused"),
        (
            "gopher://site.test/".to_owned(),
            "scheme `gopher:` is refused",
        ),
        (format!("http://user:pw@site.test:{port}/page"), "userinfo"),
        (
            "http://site.test:1/page".to_owned(),
            "port 1 of site.test is refused",
        ),
    ] {
        let message = fetch_refused(&mcp, &format!("{base}/redirect?{target}")).await;
        assert!(
            message.contains(&format!("redirect from http://site.test:{port} refused"))
                && message.contains(expected),
            "{target}: {message}"
        );
    }
    // Allowlisted, but it resolves to a private address: the resolver stops it.
    let message = fetch_refused(
        &mcp,
        &format!("{base}/redirect?http://internal.test:{port}/"),
    )
    .await;
    assert!(
        message.contains("internal.test resolves to address 10.0.0.1 is private"),
        "{message}"
    );
    // Each refused redirect cost one request (the redirect itself), never a second.
    assert_eq!(site.hits(), 12);
}

#[tokio::test]
async fn redirect_loops_stop_at_the_bound() {
    let site = Site::start().await;
    let mut flags = site_flags(&site);
    flags.extend(strings(&["--max-redirects", "3"]));
    let mcp = start_service(&flags).await;
    let message = fetch_refused(&mcp, &format!("http://site.test:{}/loop", site.port())).await;
    assert!(
        message.contains("too many redirects: more than 3"),
        "{message}"
    );
    assert_eq!(site.hits(), 4, "the first request and three redirects");
}

#[tokio::test]
async fn https_only_domains_are_never_fetched_over_http() {
    let site = Site::start().await;
    let mcp = start_service(&site_flags(&site)).await;
    let message = fetch_refused(&mcp, &format!("http://secure.test:{}/page", site.port())).await;
    assert!(
        message.contains("plain http to secure.test is refused: https only"),
        "{message}"
    );
    // Over https the request is made (and fails: the test server speaks plain http).
    let message = fetch_refused(&mcp, &format!("https://secure.test:{}/page", site.port())).await;
    assert!(
        message.contains("request to https://secure.test"),
        "{message}"
    );
    assert_eq!(site.hits(), 0, "a TLS ClientHello is not an HTTP request");
}

#[tokio::test]
async fn schemes_userinfo_and_unlisted_hosts_are_refused_before_any_request() {
    let site = Site::start().await;
    let port = site.port();
    let mcp = start_service(&site_flags(&site)).await;
    for (url, expected) in [
        ("file:///etc/passwd".to_owned(), "scheme `file:`"),
        ("gopher://site.test:70/_GET".to_owned(), "scheme `gopher:`"),
        ("data:text/html,<h1>x</h1>".to_owned(), "scheme `data:`"),
        ("ftp://site.test/".to_owned(), "scheme `ftp:`"),
        (
            format!("http://site.test@127.0.0.1:{port}/page"),
            "userinfo",
        ),
        (
            format!("http://127.0.0.1:{port}#@site.test/page"),
            "IP address, not an allowlisted domain",
        ),
        ("https://unlisted.test/".to_owned(), "not in the allowlist"),
    ] {
        let message = fetch_refused(&mcp, &url).await;
        assert!(message.contains(expected), "{url}: {message}");
    }
    assert_eq!(site.hits(), 0);
}

#[tokio::test]
async fn slow_responses_hit_the_time_cap() {
    let site = Site::start().await;
    let mut flags = site_flags(&site);
    flags.extend(strings(&["--timeout", "1"]));
    let mcp = start_service(&flags).await;
    let started = std::time::Instant::now();
    let message = fetch_refused(&mcp, &format!("http://site.test:{}/slow", site.port())).await;
    assert!(message.contains("--timeout"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn cookies_are_never_sent_back() {
    let site = Site::start().await;
    let base = format!("http://site.test:{}", site.port());
    // A second server on another port of the same name records the headers it receives:
    // with a cookie jar, the cookie `/cookie` set would come back to it.
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let recorder = seen.clone();
    let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
        let recorder = recorder.clone();
        async move {
            let mut names: Vec<String> = headers.keys().map(|k| k.as_str().to_owned()).collect();
            names.sort();
            recorder.lock().expect("lock").extend(names);
            ([(header::CONTENT_TYPE, "text/plain")], "ok")
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let mut flags = site_flags(&site);
    flags.extend(strings(&["--allow-port", &port]));
    let mcp = start_service(&flags).await;
    fetch_ok(&mcp, json!({"url": format!("{base}/cookie")})).await;
    fetch_ok(&mcp, json!({"url": format!("http://site.test:{port}/")})).await;
    let seen = seen.lock().expect("lock").clone();
    assert!(seen.contains(&"user-agent".to_owned()), "{seen:?}");
    for forbidden in ["cookie", "authorization", "proxy-authorization", "referer"] {
        assert!(
            !seen.contains(&forbidden.to_owned()),
            "{forbidden} sent: {seen:?}"
        );
    }
}

#[test]
fn invalid_flags_are_all_reported_at_once() {
    let args = parse_args(&strings(&[
        "--allow",
        "*.",
        "--allow-http",
        "127.0.0.1",
        "--allow-cidr",
        "10.0.0.0/33",
        "--resolve",
        "x.test",
        "--resolve",
        "y.test=not-an-ip",
        "--content-type",
        "html",
        "--max-bytes",
        "0",
    ]));
    let errors = crate::validate(&args).expect_err("invalid");
    assert_eq!(errors.len(), 7, "{errors:#?}");
    let all = errors.join("\n");
    for part in [
        "--allow \"*.\"",
        "--allow \"127.0.0.1\"",
        "--allow-cidr",
        "x.test",
        "not-an-ip",
        "--content-type",
        "--max-bytes",
    ] {
        assert!(all.contains(part), "{part}: {all}");
    }
}

/// Environment proxies must not be used: a child process (this test binary, running
/// `env_proxy_child`) gets HTTP_PROXY & co. pointing at a listener that counts
/// connections, fetches the site, and must reach it directly.
#[tokio::test]
async fn environment_proxies_are_ignored() {
    let site = Site::start().await;
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind proxy");
    let proxy_url = format!("http://{}", proxy.local_addr().expect("proxy addr"));
    let proxied = Arc::new(AtomicUsize::new(0));
    let counter = proxied.clone();
    tokio::spawn(async move {
        while let Ok((_conn, _)) = proxy.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    let exe = std::env::current_exe().expect("test binary");
    let mut child = tokio::process::Command::new(exe);
    child
        .args([
            "--exact",
            "service::tests::env_proxy_child",
            "--ignored",
            "--nocapture",
        ])
        .env("FETCH_CHILD_SITE_PORT", site.port().to_string());
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        child.env(var, &proxy_url);
    }
    child.env_remove("NO_PROXY").env_remove("no_proxy");
    let output = child.output().await.expect("run child");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("1 passed"),
        "the child test did not run:\n{stdout}"
    );
    assert_eq!(proxied.load(Ordering::SeqCst), 0, "the proxy was contacted");
    assert_eq!(site.hits(), 1, "the site was not reached directly");
}

#[tokio::test]
#[ignore = "run by environment_proxies_are_ignored in a child process with proxy variables set"]
async fn env_proxy_child() {
    let port = std::env::var("FETCH_CHILD_SITE_PORT").expect("FETCH_CHILD_SITE_PORT");
    assert!(
        std::env::var("HTTP_PROXY").is_ok(),
        "the proxy variables must be set"
    );
    let flags = strings(&[
        "--allow-http",
        "site.test",
        "--resolve",
        "site.test=127.0.0.1",
        "--allow-cidr",
        "127.0.0.1/32",
        "--allow-port",
        &port,
    ]);
    let fetcher = build_fetcher(&parse_args(&flags)).expect("fetcher");
    let fetched = fetcher
        .fetch(&format!("http://site.test:{port}/page"), None)
        .await
        .expect("direct fetch");
    assert!(fetched.text.contains("Hello"), "{}", fetched.text);
}

/// The pages that crashed or exhausted the previous converter, served for real: each is
/// answered with text under the cap, and the service still answers the next request.
#[tokio::test]
async fn hostile_pages_are_capped_and_the_service_survives() {
    let site = Site::start().await;
    let mut flags = site_flags(&site);
    flags.extend(strings(&["--max-bytes", "1000000"]));
    let mcp = start_service(&flags).await;
    let base = format!("http://site.test:{}", site.port());
    for (path, needle) in [
        ("/nested-tables", "x"),
        ("/wide-table", "y"),
        ("/deep-divs", "deep"),
        ("/many-attributes", "text"),
        ("/tabs", "\t"),
        ("/invalid-utf8", "\u{fffd}"),
    ] {
        let result = fetch(&mcp, json!({"url": format!("{base}{path}")})).await;
        assert_ne!(result["isError"], true, "{path}: {result}");
        let out = &result["structuredContent"];
        let text = out["text"].as_str().expect("text");
        assert!(text.len() <= 1_000_000, "{path}: {} bytes", text.len());
        assert!(text.contains(needle), "{path}");
        // The copy in `content` is the same output serialised as JSON: HTML output has no
        // control characters but tab and newline, so escaping at most doubles it.
        let copy = result["content"][0]["text"].as_str().expect("content text");
        assert!(
            copy.len() <= 2 * 1_000_000 + 1000,
            "{path}: {} bytes",
            copy.len()
        );
    }
    // Text that grows in conversion is cut at the cap, and says so.
    let out = fetch_ok(&mcp, json!({"url": format!("{base}/invalid-utf8")})).await;
    assert_eq!(out["bytes"], 1_000_000);
    assert_eq!(out["truncated"], true);
    let out = fetch_ok(
        &mcp,
        json!({"url": format!("{base}/tabs"), "max_bytes": 1000}),
    )
    .await;
    assert_eq!(out["truncated"], true);
    assert!(out["text"].as_str().expect("text").len() <= 1000);
    // Still serving.
    let out = fetch_ok(&mcp, json!({"url": format!("{base}/page")})).await;
    assert!(out["text"].as_str().expect("text").contains("Hello"));
}

/// Real TLS handshakes against a private CA made at test time.
mod https;
