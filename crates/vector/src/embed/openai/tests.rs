//! The OpenAI-compatible embedder against a real local HTTP server that answers
//! `/embeddings` deterministically, well or badly depending on the path prefix.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    routing::post,
};
use serde_json::{Value, json};

use super::*;

const DIM: usize = 8;
const KEY: &str = "sk-test-secret-0123456789";

/// One request as the server saw it: its batch size and `Authorization` header.
type Request = (usize, Option<String>);

/// Every request the server saw.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Request>>>);

/// A deterministic vector for `text`: depends on its bytes only.
fn vector_for(text: &str, dim: usize) -> Vec<f64> {
    (0..dim)
        .map(|i| {
            let byte = text
                .as_bytes()
                .get(i % text.len().max(1))
                .copied()
                .unwrap_or(0);
            f64::from(byte) + i as f64 + 1.0
        })
        .collect()
}

async fn embeddings(
    State(seen): State<Seen>,
    Path(mode): Path<String>,
    headers: HeaderMap,
    Json(request): Json<Value>,
) -> Result<Json<Value>, StatusCode> {
    let inputs: Vec<String> =
        serde_json::from_value(request["input"].clone()).map_err(|_| StatusCode::BAD_REQUEST)?;
    if request["model"] != "test-model" || request["encoding_format"] != "float" {
        return Err(StatusCode::BAD_REQUEST);
    }
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    seen.0.lock().expect("lock").push((inputs.len(), auth));
    let mut data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| json!({"object": "embedding", "index": index, "embedding": vector_for(text, DIM)}))
        .collect();
    match mode.as_str() {
        "good" => {}
        // Same vectors, listed in reverse: the client must order them by `index`.
        "reversed" => data.reverse(),
        "wrong-dim" => data[0]["embedding"] = json!(vector_for("x", DIM - 1)),
        "wrong-count" => {
            data.pop();
        }
        "duplicate-index" => data[1]["index"] = json!(0),
        "out-of-range" => data[0]["index"] = json!(99),
        "base64" => data[0]["embedding"] = json!("AAAAAA=="),
        "not-numbers" => data[0]["embedding"] = json!(["a", 1, 2]),
        "zero" => data[0]["embedding"] = json!(vec![0.0; DIM]),
        "huge" => data[0]["embedding"] = json!(vec![1e300; DIM]),
        "error" => return Err(StatusCode::INTERNAL_SERVER_ERROR),
        "slow" => tokio::time::sleep(Duration::from_secs(5)).await,
        _ => return Err(StatusCode::NOT_FOUND),
    }
    Ok(Json(
        json!({"object": "list", "data": data, "model": "test-model"}),
    ))
}

/// Serves the fake endpoint on 127.0.0.1:0; returns its base URL.
async fn spawn(seen: Seen) -> String {
    let app = Router::new()
        .route("/{mode}/v1/embeddings", post(embeddings))
        .with_state(seen);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn embedder(base: &str, mode: &str, batch_size: usize) -> OpenAiEmbedder {
    OpenAiEmbedder::new(OpenAiConfig {
        url: format!("{base}/{mode}/v1"),
        model: "test-model".to_owned(),
        dimension: DIM,
        key: Some(Secret::new(KEY.to_owned())),
        batch_size,
        timeout: Duration::from_millis(500),
    })
    .expect("embedder")
}

fn texts(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("text number {i}")).collect()
}

#[tokio::test]
async fn batches_authenticates_and_returns_unit_vectors_in_order() {
    let seen = Seen::default();
    let base = spawn(seen.clone()).await;
    let inputs = texts(5);
    let vectors = embedder(&base, "good", 2)
        .embed(&inputs)
        .await
        .expect("embeds");
    assert_eq!(vectors.len(), 5);
    for (text, vector) in inputs.iter().zip(&vectors) {
        let expected =
            normalise(vector_for(text, DIM).iter().map(|&x| x as f32).collect()).expect("non-zero");
        assert_eq!(vector, &expected);
    }
    let seen = seen.0.lock().expect("lock").clone();
    let batches: Vec<usize> = seen.iter().map(|(n, _)| *n).collect();
    assert_eq!(batches, [2, 2, 1]);
    assert!(
        seen.iter()
            .all(|(_, auth)| auth.as_deref() == Some(&*format!("Bearer {KEY}")))
    );
}

#[tokio::test]
async fn vectors_listed_out_of_order_are_put_back_by_index() {
    let base = spawn(Seen::default()).await;
    let inputs = texts(3);
    let good = embedder(&base, "good", 8)
        .embed(&inputs)
        .await
        .expect("good");
    let reversed = embedder(&base, "reversed", 8)
        .embed(&inputs)
        .await
        .expect("reversed");
    assert_eq!(good, reversed);
}

#[tokio::test]
async fn malformed_answers_are_refused_with_the_reason() {
    let base = spawn(Seen::default()).await;
    let inputs = texts(3);
    for (mode, words) in [
        ("wrong-dim", "has dimension 7, expected 8"),
        ("wrong-count", "2 vectors for 3 inputs"),
        ("duplicate-index", "index 0 appears twice"),
        ("out-of-range", "index 99 out of range"),
        ("base64", "not an embeddings answer"),
        ("not-numbers", "not an embeddings answer"),
        ("zero", "all zeros"),
        ("huge", "out of f32 range"),
    ] {
        let err = embedder(&base, mode, 8)
            .embed(&inputs)
            .await
            .expect_err(mode);
        assert!(matches!(err, EmbedError::Malformed(_)), "{mode}: {err}");
        assert!(err.to_string().contains(words), "{mode}: {err}");
    }
}

#[tokio::test]
async fn http_errors_and_timeouts_are_unavailable_and_never_show_the_key() {
    let base = spawn(Seen::default()).await;
    let inputs = texts(1);
    let err = embedder(&base, "error", 8)
        .embed(&inputs)
        .await
        .expect_err("500");
    assert!(matches!(err, EmbedError::Unavailable(_)), "{err}");
    assert!(err.to_string().contains("500"), "{err}");
    let started = std::time::Instant::now();
    let err = embedder(&base, "slow", 8)
        .embed(&inputs)
        .await
        .expect_err("slow");
    assert!(err.to_string().contains("timed out"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
    // Nothing printable about the embedder carries the key.
    let printed = format!("{err} {:?}", embedder(&base, "good", 8));
    assert!(!printed.contains(KEY), "{printed}");
}

#[tokio::test]
async fn a_closed_port_is_unavailable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let err = embedder(&format!("http://{addr}"), "good", 8)
        .embed(&texts(1))
        .await
        .expect_err("closed");
    assert!(matches!(err, EmbedError::Unavailable(_)), "{err}");
}

#[test]
fn endpoint_urls_are_checked_and_completed() {
    let url = |u: &str| endpoint_url(u).map(|u| u.to_string());
    assert_eq!(
        url("http://127.0.0.1:1/v1").expect("ok"),
        "http://127.0.0.1:1/v1/embeddings"
    );
    assert_eq!(
        url("https://api.example/v1/embeddings").expect("ok"),
        "https://api.example/v1/embeddings"
    );
    for bad in ["ftp://x/v1", "not a url", "http://user:pw@host/v1"] {
        assert!(url(bad).is_err(), "{bad}");
    }
}

/// A key in the URL's query or userinfo would reach logs, the index identity and, through
/// error messages, any caller: such URLs are refused at start-up without being echoed.
#[test]
fn an_endpoint_url_with_a_query_or_userinfo_is_refused_without_echo() {
    for bad in [
        "https://proxy.example/v1?api-key=sk-in-query-123",
        "https://proxy.example/v1/embeddings?api-version=1&api-key=sk-in-query-123",
        "https://proxy.example/v1#sk-in-query-123",
        "https://sk-in-query-123@proxy.example/v1",
        "https://user:sk-in-query-123@proxy.example/v1",
    ] {
        let err = endpoint_url(bad).expect_err(bad).to_string();
        assert!(!err.contains("sk-in-query-123"), "{bad}: {err}");
        assert!(err.contains("--embeddings-key"), "{bad}: {err}");
    }
}

/// HTTP errors reach the tool caller (any tenant's model): they say what failed, not where.
#[tokio::test]
async fn embedding_errors_do_not_reveal_the_endpoint() {
    let base = spawn(Seen::default()).await;
    let host = base.trim_start_matches("http://");
    for mode in ["error", "no-such-mode"] {
        let embedder = embedder(&base, mode, 8);
        let err = embedder.embed(&texts(1)).await.expect_err(mode).to_string();
        assert!(
            err.contains("the embeddings endpoint failed (HTTP "),
            "{err}"
        );
        for leak in [host, "127.0.0.1", "/v1", "embeddings/", mode, KEY] {
            assert!(!err.contains(leak), "{leak} in {err}");
        }
        // The identity (stored in the index) names the endpoint, but holds no secret.
        let identity = embedder.identity();
        assert!(identity.starts_with(&format!("openai/{base}/{mode}/v1/embeddings/")));
        assert!(
            !identity.contains(KEY) && !identity.contains('?'),
            "{identity}"
        );
    }
}

#[test]
fn key_references_never_accept_or_echo_a_literal_key() {
    assert_eq!(
        "file:/run/key".parse::<KeyRef>(),
        Ok(KeyRef::File("/run/key".into()))
    );
    assert_eq!(
        "env:OPENAI_API_KEY".parse::<KeyRef>(),
        Ok(KeyRef::Env("OPENAI_API_KEY".into()))
    );
    let err = KEY.parse::<KeyRef>().expect_err("literal");
    assert!(!err.contains(KEY), "{err}");
}

#[test]
fn key_file_is_read_and_trimmed_and_redacted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("key");
    std::fs::write(&path, format!("{KEY}\n")).expect("write");
    let secret = KeyRef::File(path.clone()).load().expect("loads");
    assert_eq!(secret.expose(), KEY);
    assert_eq!(format!("{secret:?} {secret}"), "[redacted] [redacted]");
    std::fs::write(&path, "\n").expect("write");
    assert!(KeyRef::File(path).load().is_err());
    let missing = KeyRef::Env("MICROMCP_VECTOR_TEST_UNSET_VARIABLE".into()).load();
    assert!(missing.expect_err("unset").to_string().contains("not set"));
}
