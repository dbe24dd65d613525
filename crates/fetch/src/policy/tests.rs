//! The pure guard, case by case: every range of the issue, every numeric and IPv6 form of
//! an internal address, every URL trick.

use std::net::IpAddr;

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

/// A policy like an operator's: one https domain, one http wildcard, no CIDR.
fn policy() -> Policy {
    Policy::new(
        vec![
            DomainPattern::parse("allowed.com").expect("pattern"),
            DomainPattern::parse("*.docs.example").expect("pattern"),
        ],
        vec![DomainPattern::parse("plain.example").expect("pattern")],
        Vec::new(),
        Vec::new(),
    )
}

fn refused_reason(s: &str) -> String {
    classify_ip(ip(s)).expect_err(s)
}

#[test]
fn public_addresses_pass() {
    for s in [
        "8.8.8.8",
        "1.1.1.1",
        "93.184.216.34",
        "172.32.0.1",  // just past 172.16/12
        "100.128.0.1", // just past 100.64/10
        "192.169.0.1", // just past 192.168/16
        "198.20.0.1",  // just past 198.18/15
        "223.255.255.255",
        "2606:4700:4700::1111",
        "2001:4860:4860::8888",
        "::ffff:8.8.8.8", // mapped form of a public address is that address
    ] {
        assert_eq!(classify_ip(ip(s)), Ok(()), "{s}");
    }
}

#[test]
fn every_refused_ipv4_range_is_named() {
    for (s, expected) in [
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("10.0.0.1", "private (10.0.0.0/8)"),
        ("10.255.255.255", "private (10.0.0.0/8)"),
        ("172.16.0.1", "private (172.16.0.0/12)"),
        ("172.31.255.255", "private (172.16.0.0/12)"),
        ("192.168.1.1", "private (192.168.0.0/16)"),
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("169.254.1.1", "link-local"),
        ("169.254.169.254", "metadata"),
        ("169.254.170.2", "ECS"),
        ("100.100.100.200", "Alibaba"),
        ("192.0.0.192", "Oracle"),
        ("100.64.0.1", "CGNAT"),
        ("100.127.255.255", "CGNAT"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("255.255.255.255", "broadcast"),
        ("240.0.0.1", "reserved"),
        ("198.18.0.1", "benchmarking"),
        ("198.19.255.255", "benchmarking"),
        ("192.0.2.1", "documentation"),
        ("198.51.100.7", "documentation"),
        ("203.0.113.9", "documentation"),
        ("192.0.0.8", "IETF protocol assignments"),
        ("192.88.99.1", "6to4 relay"),
    ] {
        let reason = refused_reason(s);
        assert!(reason.contains(expected), "{s}: {reason}");
    }
}

#[test]
fn every_refused_ipv6_range_is_named() {
    for (s, expected) in [
        ("::", "unspecified"),
        ("::1", "loopback (::1)"),
        ("fe80::1", "link-local"),
        ("febf::1", "link-local"),
        ("fec0::1", "site-local"),
        ("fc00::1", "unique-local"),
        ("fd12:3456::1", "unique-local"),
        ("fd00:ec2::254", "AWS IPv6 metadata"),
        ("ff02::1", "multicast"),
        ("ff0e::1", "multicast"),
        ("64:ff9b:1::a00:1", "local-use NAT64"),
        ("2001::1", "Teredo"),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
        ("2001:2::1", "benchmarking"),
        ("2001:10::1", "IETF protocol assignments"),
        ("2001:db8::1", "documentation"),
        ("3fff::1", "documentation"),
        ("100::1", "discard-only"),
        ("5f00::1", "segment-routing"),
        ("4000::1", "not global unicast"),
        ("::ffff:0:7f00:1", "not global unicast"), // IPv4-translated (RFC 2765)
    ] {
        let reason = refused_reason(s);
        assert!(reason.contains(expected), "{s}: {reason}");
    }
}

#[test]
fn ipv6_forms_of_ipv4_name_the_embedded_address() {
    for (s, form, inner) in [
        (
            "::ffff:127.0.0.1",
            "IPv4-mapped form of 127.0.0.1",
            "loopback",
        ),
        ("::ffff:7f00:1", "IPv4-mapped form of 127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "169.254.169.254", "metadata"),
        ("::ffff:10.0.0.1", "10.0.0.1", "private"),
        ("::127.0.0.1", "IPv4-compatible", "loopback"),
        ("::10.1.2.3", "IPv4-compatible", "private"),
        ("64:ff9b::127.0.0.1", "NAT64", "loopback"),
        ("64:ff9b::a9fe:a9fe", "NAT64", "metadata"),
        (
            "2002:7f00:1::",
            "6to4 (2002::/16) embedding 127.0.0.1",
            "loopback",
        ),
        ("2002:a9fe:a9fe::1", "embedding 169.254.169.254", "metadata"),
    ] {
        let reason = refused_reason(s);
        assert!(
            reason.contains(form) && reason.contains(inner),
            "{s}: {reason}"
        );
    }
    // Translators and relays decide where these go: refused even around a public address.
    for s in ["64:ff9b::8.8.8.8", "2002:808:808::1", "::8.8.8.8"] {
        assert!(classify_ip(ip(s)).is_err(), "{s}");
    }
}

#[test]
fn allow_cidr_lifts_only_its_range_and_covers_mapped_forms() {
    let policy = Policy::new(
        Vec::new(),
        Vec::new(),
        vec!["127.0.0.1/32".parse().expect("cidr")],
        Vec::new(),
    );
    assert_eq!(policy.check_address(ip("127.0.0.1")), Ok(()));
    assert_eq!(policy.check_address(ip("::ffff:127.0.0.1")), Ok(()));
    let refused = policy.check_address(ip("127.0.0.2")).expect_err("outside");
    assert!(refused.to_string().contains("--allow-cidr"), "{refused}");
    assert!(policy.check_address(ip("::1")).is_err());
    assert!(policy.check_address(ip("10.0.0.1")).is_err());
}

#[test]
fn metadata_stays_refused_inside_a_wider_allowed_cidr() {
    let wide = Policy::new(
        Vec::new(),
        Vec::new(),
        vec!["169.254.0.0/16".parse().expect("cidr")],
        Vec::new(),
    );
    assert_eq!(wide.check_address(ip("169.254.1.1")), Ok(()));
    let refused = wide
        .check_address(ip("169.254.169.254"))
        .expect_err("metadata");
    let message = refused.to_string();
    assert!(
        message.contains("even inside --allow-cidr 169.254.0.0/16")
            && message.contains("169.254.169.254/32"),
        "{message}"
    );
    let exact = Policy::new(
        Vec::new(),
        Vec::new(),
        vec!["169.254.169.254/32".parse().expect("cidr")],
        Vec::new(),
    );
    assert_eq!(exact.check_address(ip("169.254.169.254")), Ok(()));
}

#[test]
fn domain_patterns_match_exactly_or_strict_subdomains() {
    let exact = DomainPattern::parse("Example.COM.").expect("pattern");
    assert_eq!(exact, DomainPattern::Exact("example.com".to_owned()));
    assert!(exact.matches("example.com"));
    assert!(!exact.matches("www.example.com"));

    let wild = DomainPattern::parse("*.example.com").expect("pattern");
    assert!(wild.matches("a.example.com"));
    assert!(wild.matches("a.b.example.com"));
    assert!(!wild.matches("example.com"), "the parent itself");
    assert!(!wild.matches("evil-example.com"));
    assert!(!wild.matches("example.com.evil.net"));
    assert!(!wild.matches(".example.com"));

    // IDNA: the Unicode and punycode spellings are one name.
    let idn = DomainPattern::parse("bücher.example").expect("pattern");
    assert_eq!(
        idn,
        DomainPattern::Exact("xn--bcher-kva.example".to_owned())
    );

    for bad in [
        "",
        "*",
        "*.",
        "a.*.com",
        "127.0.0.1",
        "[::1]",
        "a.com:8080",
        "a.com/x",
        "u@a.com",
        "**.a.com",
    ] {
        assert!(DomainPattern::parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn allowlisted_urls_are_accepted_and_normalised() {
    let policy = policy();
    let url = policy
        .check_url("https://ALLOWED.com./path?q=1#frag")
        .expect("allowed");
    assert_eq!(url.as_str(), "https://allowed.com/path?q=1");
    assert!(policy.check_url("https://a.docs.example/").is_ok());
    assert!(policy.check_url("http://plain.example/").is_ok());
    assert!(policy.check_url("https://plain.example/").is_ok());
    // Percent-encoded and IDNA hosts normalise to the allowlisted spelling.
    assert!(policy.check_url("https://allow%65d.com/").is_ok());
}

fn refusal(input: &str) -> Refusal {
    policy().check_url(input).expect_err(input)
}

#[test]
fn no_allowlist_allows_nothing() {
    let empty = Policy::default();
    assert!(empty.allows_nothing());
    assert!(matches!(
        empty.check_url("https://allowed.com/"),
        Err(Refusal::NotAllowlisted(_))
    ));
}

#[test]
fn hosts_outside_the_allowlist_are_refused() {
    for input in [
        "https://evil.com/",
        "https://evil-allowed.com/",
        "https://allowed.com.evil.com/",
        "https://docs.example/", // the wildcard's parent
        "https://sub.allowed.com/",
    ] {
        assert!(
            matches!(refusal(input), Refusal::NotAllowlisted(_)),
            "{input}"
        );
    }
    assert!(refusal("https://evil.com/").to_string().contains("--allow"));
}

#[test]
fn https_only_unless_allow_http() {
    let refused = refusal("http://allowed.com/");
    assert_eq!(refused, Refusal::HttpsOnly("allowed.com".to_owned()));
    assert!(refused.to_string().contains("https only"), "{refused}");
}

#[test]
fn non_http_schemes_are_refused() {
    for input in [
        "file:///etc/passwd",
        "gopher://allowed.com:70/_x",
        "data:text/plain,hi",
        "ftp://allowed.com/",
        "ws://allowed.com/",
        "javascript:alert(1)",
        "dict://allowed.com:11211/",
    ] {
        let refused = refusal(input);
        assert!(matches!(refused, Refusal::Scheme(_)), "{input}: {refused}");
        assert!(refused.to_string().contains("only http and https"));
    }
}

#[test]
fn userinfo_is_refused_and_fragments_do_not_hide_hosts() {
    assert_eq!(refusal("https://user:pw@allowed.com/"), Refusal::Userinfo);
    assert_eq!(refusal("https://user@allowed.com/"), Refusal::Userinfo);
    // The real host is 127.0.0.1: refused as loopback, whatever comes before the @.
    for input in [
        "http://allowed.com@127.0.0.1/",
        "http://allowed.com:x@127.0.0.1/",
    ] {
        assert_eq!(refusal(input), Refusal::Userinfo, "{input}");
    }
    for input in [
        "http://127.0.0.1#@allowed.com",
        "http://127.0.0.1?@allowed.com/",
        "http://127.0.0.1\\@allowed.com/",
    ] {
        let refused = refusal(input);
        assert!(
            refused.to_string().contains("127.0.0.1 is loopback"),
            "{input}: {refused}"
        );
    }
}

#[test]
fn every_numeric_form_of_loopback_is_refused_as_loopback() {
    for input in [
        "http://127.0.0.1/",
        "http://2130706433/",
        "http://0x7f000001/",
        "http://0x7f.1/",
        "http://0177.0.0.1/",
        "http://0177.0.0.01/",
        "http://127.1/",
        "http://127.0.1/",
        "http://%31%32%37%2e%30%2e%30%2e%31/",
        "http://127.000.000.001/",
        "http://0x7f.0x0.0x0.0x1/",
        "http://①②⑦.0.0.1/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:7f00:1]/",
        "http://[0:0:0:0:0:ffff:127.0.0.1]/",
        "http://[::127.0.0.1]/",
        "http://[64:ff9b::127.0.0.1]/",
        "http://[2002:7f00:1::]/",
    ] {
        let refused = refusal(input);
        let message = refused.to_string();
        assert!(
            matches!(refused, Refusal::Address(_)) && message.contains("loopback"),
            "{input}: {message}"
        );
    }
}

#[test]
fn numeric_forms_of_other_internal_addresses_are_refused() {
    for (input, expected) in [
        ("http://0/", "unspecified"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://[::]/", "unspecified"),
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://2852039166/", "metadata"), // 169.254.169.254 as one number
        ("http://0xa9fea9fe/", "metadata"),
        ("http://0251.0376.0251.0376/", "metadata"),
        ("http://[::ffff:a9fe:a9fe]/", "metadata"),
        ("http://[fd00:ec2::254]/", "AWS IPv6 metadata"),
        ("http://100.100.100.200/", "Alibaba"),
        ("http://10.1/", "private"),
        ("http://167772161/", "private"), // 10.0.0.1
        ("http://192.168.0.1/", "private"),
        ("http://[fe80::1%25eth0]/", ""), // zone ids are not valid URL hosts
        ("http://[fc00::1]/", "unique-local"),
        ("http://100.64.0.1/", "CGNAT"),
        ("http://255.255.255.255/", "broadcast"),
    ] {
        let refused = refusal(input);
        assert!(refused.to_string().contains(expected), "{input}: {refused}");
    }
}

#[test]
fn public_ip_literals_are_refused_as_non_domains() {
    let refused = refusal("https://8.8.8.8/");
    assert_eq!(refused, Refusal::IpLiteral("8.8.8.8".to_owned()));
    assert!(refused.to_string().contains("--resolve"), "{refused}");
}

#[test]
fn ports_other_than_80_and_443_need_allow_port() {
    let refused = refusal("https://allowed.com:8443/");
    assert!(
        refused.to_string().contains("port 8443") && refused.to_string().contains("--allow-port"),
        "{refused}"
    );
    // The scheme's default port written out is fine.
    assert!(policy().check_url("https://allowed.com:443/").is_ok());
    let with_port = Policy::new(
        vec![DomainPattern::parse("allowed.com").expect("pattern")],
        Vec::new(),
        Vec::new(),
        vec![8443],
    );
    assert!(with_port.check_url("https://allowed.com:8443/").is_ok());
}

#[test]
fn malformed_and_oversized_urls_are_refused() {
    assert!(matches!(refusal("not a url"), Refusal::InvalidUrl(_)));
    assert!(matches!(refusal("https://"), Refusal::InvalidUrl(_)));
    assert!(matches!(refusal("http://[::1/"), Refusal::InvalidUrl(_)));
    let long = format!("https://allowed.com/{}", "a".repeat(MAX_URL_LEN));
    assert_eq!(refusal(&long), Refusal::TooLong);
}

#[test]
fn fuzz_entry_point_holds_its_invariants_on_tricky_inputs() {
    for input in [
        "https://example.com/",
        "http://a.example.org/",
        "http://example.org/",
        "http://example.com/",
        "http://127.0.0.1/",
        "http://[::ffff:127.0.0.1]:80/",
        "\u{0}http://example.com",
        " https://example.com/ ",
        "https://exa\tmple.com/",
        "https://example.com:0/",
        "https://example.com:65535/",
    ] {
        if let Ok(url) = check_url(input) {
            assert!(matches!(url.scheme(), "http" | "https"), "{input}");
            assert!(url.username().is_empty() && url.password().is_none());
            let host = url.host_str().expect("host");
            assert!(
                host == "example.com" || host.ends_with(".example.org"),
                "{input}"
            );
        }
    }
    assert!(check_url("https://example.com/").is_ok());
    assert!(check_url("http://a.example.org/").is_ok());
    // The fuzz policy lifts 127/8 but IP literals are still not domains.
    assert!(matches!(
        check_url("http://127.0.0.1/"),
        Err(Refusal::IpLiteral(_))
    ));
}
