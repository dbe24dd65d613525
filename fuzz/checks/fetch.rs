//! Properties of the fetch service's URL and address guards, shared by the fuzz target
//! (fuzz/fuzz_targets/fetch_url.rs) and the corpus replay test (crates/fetch/tests/fuzz_corpus.rs).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use micromcp_fetch::html::html_to_text;
use micromcp_fetch::{check_url, classify_ip};

/// The first byte picks the guard; the rest is its input.
pub fn check_fetch_input(data: &[u8]) {
    let Some((selector, input)) = data.split_first() else {
        return;
    };
    match selector % 3 {
        0 => {
            if let Ok(text) = std::str::from_utf8(input) {
                check_url_policy(text);
            }
        }
        1 => check_address(input),
        _ => check_html(input),
    }
}

/// The HTML converter never exceeds its output cap, and says so when it cut.
fn check_html(input: &[u8]) {
    let Some((cap, html)) = input.split_first() else {
        return;
    };
    let max_len = usize::from(*cap) * 4;
    let converted = html_to_text(html, None, max_len);
    assert!(
        converted.text.len() <= max_len,
        "{} bytes of text for a cap of {max_len}",
        converted.text.len()
    );
}

/// `check_url` uses a fixed policy: https for `example.com`, http(s) for `*.example.org`.
fn check_url_policy(text: &str) {
    let Ok(url) = check_url(text) else {
        return;
    };
    let host = url.host_str().unwrap_or_default();
    assert!(
        url.username().is_empty() && url.password().is_none(),
        "userinfo in {url}"
    );
    match url.scheme() {
        "https" => assert!(
            host == "example.com" || host.ends_with(".example.org"),
            "{text:?} accepted for host {host:?}"
        ),
        "http" => assert!(
            host.ends_with(".example.org"),
            "{text:?}: http for {host:?}"
        ),
        other => panic!("{text:?} accepted with scheme {other}"),
    }
}

/// 4 bytes are an IPv4 address, 16 an IPv6 one. An accepted address is none of the
/// internal kinds that the standard library can tell on its own.
fn check_address(input: &[u8]) {
    let ip = match input.len() {
        4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(input).expect("4 bytes"))),
        16 => IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(input).expect("16 bytes"),
        )),
        _ => return,
    };
    if classify_ip(ip).is_ok() {
        assert!(!is_obviously_internal(ip), "{ip} accepted");
    }
}

fn is_obviously_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.octets()[0] == 0
                || (v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| is_obviously_internal(IpAddr::V4(v4)))
        }
    }
}
