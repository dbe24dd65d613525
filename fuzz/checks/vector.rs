//! Properties of the vector service's parsers of untrusted bytes (documents' front matter,
//! search arguments, embeddings answers), shared by the fuzz target
//! (fuzz/fuzz_targets/vector_input.rs) and the replay test (crates/vector/tests/fuzz_corpus.rs).

use micromcp_vector::embed::parse_embeddings;
use micromcp_vector::frontmatter::parse_front_matter;
use micromcp_vector::identity::CallerIdentity;
use micromcp_vector::labels::{Classification, check_tenant};
use micromcp_vector::query::parse_search_arguments;

/// The first byte picks the parser; the rest is its input.
pub fn check_vector_input(data: &[u8]) {
    let Some((selector, input)) = data.split_first() else {
        return;
    };
    match selector % 3 {
        0 => {
            if let Ok(text) = std::str::from_utf8(input) {
                check_front_matter(text);
            }
        }
        1 => check_search_arguments(input),
        _ => check_embeddings(input),
    }
}

/// Accepted front matter leaves a body that is the end of the text, and a valid tenant.
fn check_front_matter(text: &str) {
    let Ok(doc) = parse_front_matter(text) else {
        return;
    };
    assert!(
        text.ends_with(doc.body),
        "body is not the end of the document"
    );
    if let Some(tenant) = &doc.front.tenant {
        assert!(
            check_tenant(tenant).is_ok(),
            "invalid tenant {tenant:?} accepted"
        );
    }
}

/// Whatever the arguments say, the scope is the caller's tenant at or below its clearance,
/// `k` and the query are within bounds.
fn check_search_arguments(input: &[u8]) {
    let caller = CallerIdentity {
        tenant: "acme".to_owned(),
        clearance: Classification::Internal,
    };
    let Ok(request) = parse_search_arguments(input, &caller) else {
        return;
    };
    assert_eq!(request.scope.tenant(), "acme");
    assert!(request.scope.max_classification() <= Classification::Internal);
    assert!((1..=50).contains(&request.k), "k = {}", request.k);
    let chars = request.query.chars().count();
    assert!((1..=2000).contains(&chars), "query of {chars} characters");
}

/// The first two bytes are the expected count and dimension; an accepted answer has exactly
/// that shape with finite values.
fn check_embeddings(input: &[u8]) {
    let [count, dimension, body @ ..] = input else {
        return;
    };
    let (count, dimension) = (usize::from(*count % 8), usize::from(*dimension % 16) + 1);
    let Ok(vectors) = parse_embeddings(body, count, dimension) else {
        return;
    };
    assert_eq!(vectors.len(), count);
    for vector in &vectors {
        assert_eq!(vector.len(), dimension);
        assert!(vector.iter().all(|v| v.is_finite()));
    }
}
