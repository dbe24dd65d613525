//! The HTML → text converter: rendering, and bounds on hostile input. The hostile inputs are
//! the ones that crashed or exhausted the previous tree-building converter; the tests assert
//! that the conversion completes and how big its output is, never how long it took.

use std::time::{Duration, Instant};

use url::Url;

use super::{Converted, html_to_text, html_to_text_until};
use crate::fetcher::decode_capped;

const TWO_MIB: usize = 2 * 1024 * 1024;

fn text(html: &str) -> String {
    let converted = html_to_text(html.as_bytes(), None, TWO_MIB);
    assert!(!converted.truncated);
    converted.text
}

fn base() -> Url {
    Url::parse("https://site.test/docs/page.html").expect("base URL")
}

/// Runs the converter where the service runs it: on a thread with the blocking pool's
/// 2 MiB stack (a recursive converter overflows it on deep nesting and aborts the process).
fn convert_on_small_stack(html: String, max_len: usize) -> Converted {
    std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(move || html_to_text(html.as_bytes(), None, max_len))
        .expect("spawn")
        .join()
        .expect("the converter thread completes")
}

#[test]
fn renders_headings_paragraphs_lists_and_tables() {
    let html = "<!doctype html><html><head><title>Title</title>\
        <style>p { color: red }</style><script>var secret = '<p>no</p>';</script></head>\
        <body><h1>Hello</h1><p>World   of\n <b>bold</b>&amp;&lt;text&gt;&nbsp;.</p>\
        <h3>Part</h3><ul><li>one</li><li><p>two</p><ul><li>nested</li></ul></li></ul>\
        <table><tr><th>a</th><th>b</th></tr><tr><td>1</td><td>2</td></tr></table>\
        line<br>break<div>block</div></body></html>";
    assert_eq!(
        text(html),
        "# Hello\n\nWorld of bold&<text>\u{a0}.\n\n### Part\n\n- one\n\n- two\n\n  - nested\n\n\
         a | b\n1 | 2\n\nline\nbreak\nblock"
    );
}

#[test]
fn pre_keeps_whitespace_and_the_rest_is_collapsed() {
    assert_eq!(
        text("<p>a  \t b</p><pre>\n  x\ty\n    z</pre><p>after</p>"),
        "a b\n\n  x\ty\n    z\n\nafter"
    );
}

#[test]
fn hidden_content_is_dropped() {
    let html = "<p>shown</p><script>alert('<b>x</b>')</script><style>b{}</style>\
        <noscript>enable js</noscript><iframe>frame</iframe><template><p>tpl</p></template>\
        <svg><text>vector</text><title>t</title></svg><math><mi>m</mi></math><!-- comment -->\
        <textarea>typed &amp; kept</textarea><p>end</p>";
    assert_eq!(text(html), "shown\n\ntyped & kept\n\nend");
}

#[test]
fn an_unclosed_svg_ends_at_html_content() {
    // As in a browser, a `<p>` leaves foreign content.
    assert_eq!(text("<svg><text>vector</text><p>text"), "text");
}

#[test]
fn links_show_their_http_targets() {
    let html = "<a href=\"/other\">rel</a> <a href=\"https://x.test/a?b=c\">abs</a> \
        <a href=\"#top\">frag</a> <a href=\"javascript:alert(1)\">js</a> \
        <a href=\"mailto:a@b.test\">mail</a> <a href=\"https://x.test/\">https://x.test/</a> \
        <a href=\"/empty\"></a>";
    let converted = html_to_text(html.as_bytes(), Some(&base()), TWO_MIB);
    assert_eq!(
        converted.text,
        "rel (https://site.test/other) abs (https://x.test/a?b=c) frag js mail https://x.test/"
    );
    // Without a base, relative targets are not shown.
    assert_eq!(text("<a href='/other'>rel</a>"), "rel");
}

#[test]
fn control_characters_are_dropped() {
    assert_eq!(
        text("<p>a\u{1}b\u{7f}c\u{85}</p><pre>d\u{0}\te</pre>"),
        "abc\n\nd\te"
    );
}

#[test]
fn deeply_nested_tables_do_not_crash_or_blow_up() {
    let html = format!("{}x", "<table><tr><td>".repeat(30_000));
    let input_len = html.len();
    let converted = convert_on_small_stack(html, TWO_MIB);
    assert_eq!(converted.text, "x");
    assert!(!converted.truncated);
    assert!(input_len > 400_000);
}

#[test]
fn deeply_nested_html_does_not_crash_the_converter() {
    for (open, close) in [
        ("<div>", "</div>"),
        ("<ul><li>", "</li></ul>"),
        ("<blockquote>", "</blockquote>"),
        ("<svg>", "</svg>"),
        ("<a href=x>", "</a>"),
    ] {
        let depth = 100_000;
        let html = format!("{}deep{}", open.repeat(depth), close.repeat(depth));
        let converted = convert_on_small_stack(html, TWO_MIB);
        assert!(converted.text.len() < 100, "{open}: {:?}", converted.text);
    }
}

#[test]
fn wide_tables_stay_linear() {
    // One row of 30,000 cells, then 30,000 rows: a laid-out grid is 30,000 × 30,000.
    let html = format!(
        "<table><tr>{}</tr>{}</table>",
        "<td>x".repeat(30_000),
        "<tr><td>y".repeat(30_000)
    );
    let converted = html_to_text(html.as_bytes(), None, TWO_MIB);
    assert!(!converted.truncated);
    assert_eq!(converted.text.matches('x').count(), 30_000);
    assert_eq!(converted.text.matches('y').count(), 30_000);
    // "x | x | …" then "y\n" per row: output proportional to the input, below its size.
    assert!(
        converted.text.len() < html.len(),
        "{}",
        converted.text.len()
    );
    assert!(converted.text.starts_with("x | x | x"));
    assert!(converted.text.ends_with("y\ny\ny"));
}

#[test]
fn deep_divs_convert_quickly() {
    // 2 MiB of `<div>`: nothing to show, nothing kept.
    let html = "<div>".repeat(TWO_MIB / 5);
    let converted = convert_on_small_stack(html, TWO_MIB);
    assert_eq!(converted.text, "");
    assert!(!converted.truncated);
}

#[test]
fn many_attributes_in_one_tag_stay_linear() {
    // html5ever's tokenizer scans a tag's earlier attributes for each new one: quadratic.
    let mut html = String::from("<p");
    for i in 0..300_000 {
        html.push_str(&format!(" a{i}"));
    }
    html.push_str(" href=x>text");
    assert!(html.len() > TWO_MIB);
    assert_eq!(text(&html), "text");
}

#[test]
fn text_output_is_capped_at_max_bytes() {
    // Output that would be larger than the input: deep list indentation and link targets.
    let lists = format!("{}{}", "<ul>".repeat(20), "<li>x".repeat(100_000));
    let links = "<a href=\"https://site.test/a-long-path-to-somewhere\">l</a>".repeat(50_000);
    for html in [lists, links, "é".repeat(100_000)] {
        for max_len in [1, 1001, 100_000] {
            let converted = html_to_text(html.as_bytes(), Some(&base()), max_len);
            assert!(converted.truncated, "{max_len}");
            assert!(converted.text.len() <= max_len, "{max_len}");
            // Cut on a character boundary, never more than one character short.
            assert!(converted.text.len() + 4 > max_len, "{max_len}");
        }
    }
    // 1 MB of tabs in `pre` (expanded to spaces, this was 7.7 MB): kept as they are.
    let tabs = format!("<pre>{}</pre>", "\t".repeat(1_000_000));
    let converted = html_to_text(tabs.as_bytes(), None, TWO_MIB);
    assert_eq!(converted.text.len(), 1_000_000);
    let converted = html_to_text(tabs.as_bytes(), None, 1000);
    assert_eq!((converted.text.len(), converted.truncated), (1000, true));
}

#[test]
fn invalid_utf8_text_is_capped() {
    // 1 MB of 0xff: each byte becomes U+FFFD (3 bytes), so 3 MB uncapped.
    let body = vec![0xff; 1_000_000];
    let decoded = decode_capped(&body, 1_000_000);
    assert!(decoded.truncated);
    assert!(decoded.text.len() <= 1_000_000 && decoded.text.len() > 999_996);
    assert!(
        decoded
            .text
            .chars()
            .all(|c| c == char::REPLACEMENT_CHARACTER)
    );
    let converted = html_to_text(&body, None, 1_000_000);
    assert!(converted.truncated);
    assert!(converted.text.len() <= 1_000_000);
    // Valid text under the cap is returned whole.
    let decoded = decode_capped("héllo".as_bytes(), 6);
    assert_eq!((decoded.text.as_str(), decoded.truncated), ("héllo", false));
}

#[test]
fn a_passed_deadline_stops_the_conversion() {
    let html = "<p>x</p>".repeat(10_000);
    let past = Instant::now().checked_sub(Duration::from_secs(1));
    let past = past.unwrap_or_else(Instant::now);
    assert_eq!(
        html_to_text_until(html.as_bytes(), None, TWO_MIB, past),
        None
    );
    let future = Instant::now() + Duration::from_secs(3600);
    let converted = html_to_text_until(html.as_bytes(), None, TWO_MIB, future).expect("in time");
    assert_eq!(converted.text.matches('x').count(), 10_000);
}
