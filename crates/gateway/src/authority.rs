//! Strict `Host` checks: the authority a request names, parsed as RFC 3986 §3.2.2–3.2.3 says
//! (no userinfo), and compared with the names this gateway answers to (DNS rebinding).
//!
//! Anything that is not exactly `host[:port]` is refused rather than guessed at: a lenient
//! parser that takes `localhost` out of `localhost:80@evil.com` would agree with the gateway
//! but not with the browser that sent it.

use std::net::{Ipv6Addr, SocketAddr};

/// The host part of an authority: a lower-cased name or IPv4 literal, or an IPv6 literal
/// (brackets removed). The port, if any, was checked to be 1–5 digits and at most 65535.
#[derive(Debug, PartialEq, Eq)]
pub struct Host(String);

impl Host {
    /// Parses `host[:port]`, `[ipv6][:port]`; `None` for anything else.
    pub fn parse(authority: &str) -> Option<Host> {
        let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
            let (inside, after) = rest.split_once(']')?;
            let ip: Ipv6Addr = inside.parse().ok()?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':')?),
            };
            (ip.to_string(), port)
        } else {
            let (host, port) = match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            };
            let valid = !host.is_empty()
                && host.len() <= 253
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
            if !valid {
                return None;
            }
            (host.to_ascii_lowercase(), port)
        };
        if let Some(port) = port {
            let digits =
                !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit());
            if !digits || port.parse::<u16>().is_err() {
                return None;
            }
        }
        Some(Host(host))
    }

    /// Whether this gateway answers to this host: a loopback name when bound to loopback, or a
    /// name in `allowed` (an entry may name a port too: `mcp.internal:443` then matches only
    /// `authority` with that port).
    pub fn is_allowed(&self, authority: &str, bound: SocketAddr, allowed: &[String]) -> bool {
        let name = self.0.as_str();
        if allowed
            .iter()
            .any(|a| a.eq_ignore_ascii_case(authority) || a.eq_ignore_ascii_case(name))
        {
            return true;
        }
        // `parse` lower-cased names and wrote IPv6 literals in their one canonical form, and an
        // IPv4 literal has only one form here (no leading zeros), so text comparison is exact.
        bound.ip().is_loopback() && matches!(name, "localhost" | "127.0.0.1" | "::1")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(authority: &str, bound: &str, list: &[&str]) -> bool {
        let list: Vec<String> = list.iter().map(|s| (*s).to_owned()).collect();
        Host::parse(authority)
            .is_some_and(|h| h.is_allowed(authority, bound.parse().expect("addr"), &list))
    }

    #[test]
    fn loopback_names_when_bound_to_loopback() {
        for ok in [
            "localhost",
            "LOCALHOST:8080",
            "127.0.0.1",
            "127.0.0.1:1",
            "[::1]",
            "[::1]:8080",
            "[0:0::1]:80",
        ] {
            assert!(allowed(ok, "127.0.0.1:8080", &[]), "{ok}");
        }
        assert!(!allowed("localhost:8080", "0.0.0.0:8080", &[]));
    }

    #[test]
    fn listed_names_with_or_without_port() {
        assert!(allowed(
            "mcp.internal:443",
            "0.0.0.0:443",
            &["mcp.internal"]
        ));
        assert!(allowed("MCP.internal", "0.0.0.0:443", &["mcp.internal"]));
        assert!(allowed(
            "mcp.internal:443",
            "0.0.0.0:443",
            &["mcp.internal:443"]
        ));
        assert!(!allowed(
            "mcp.internal:8443",
            "0.0.0.0:443",
            &["mcp.internal:443"]
        ));
    }

    /// The shapes the adversarial test found accepted, and their relatives: userinfo, text
    /// after an IPv6 literal, non-numeric or out-of-range ports, empty parts, odd bytes.
    #[test]
    fn regression_loose_authorities_are_refused() {
        for bad in [
            "",
            "localhost:80@evil.com",
            "user@localhost",
            "[::1]evil.com",
            "[::1]:80evil",
            "127.0.0.1:abc",
            "127.0.0.1:",
            "127.0.0.1:65536",
            "127.0.0.1:123456",
            "127.0.0.1:+80",
            "localhost:8080:80",
            ":8080",
            "[::1",
            "[fe80::1%eth0]",
            "[localhost]",
            "local host",
            "localhost\t",
            "localhost/evil",
            "localhost%2e",
            "evil.com\\@localhost",
        ] {
            assert_eq!(Host::parse(bad), None, "{bad:?} must not parse");
        }
    }

    #[test]
    fn other_names_are_not_allowed() {
        for bad in [
            "evil.example:8080",
            "localhost.evil.example",
            "127.0.0.2",
            "[::2]",
            "0.0.0.0",
        ] {
            assert!(!allowed(bad, "127.0.0.1:8080", &[]), "{bad}");
        }
    }
}
