//! The pure SSRF guard: which addresses may be connected to and which URLs may be fetched.
//!
//! Nothing here does I/O, so every decision is unit-testable and fuzzable:
//! - [`classify_ip`]: an address on its own → `Ok` or the name of the refused range;
//! - [`Policy::check_address`]: the same, with the operator's `--allow-cidr` exceptions;
//! - [`Policy::check_url`] (and [`check_url`] for fuzzing): a URL string → the parsed,
//!   normalised URL, or the rule it breaks.
//!
//! Host names are compared after the WHATWG URL parser (`url` crate) has normalised them
//! (IDNA to punycode, lowercase, percent-decoding, numeric IPv4 forms such as `0x7f.1` or
//! `2130706433` turned into dotted quads) and a trailing dot is removed, so one name has
//! one spelling when it meets the allowlist.

use std::{
    collections::BTreeSet,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use url::{Host, Url};

/// Longer URLs are refused outright: no legitimate page needs one, and it bounds the work
/// the parser and the error messages do.
pub const MAX_URL_LEN: usize = 8192;

/// Ports allowed when no `--allow-port` is given: the schemes' defaults.
pub const DEFAULT_PORTS: [u16; 2] = [80, 443];

/// Why a URL or an address was refused. Every message names the rule that decided and,
/// where one exists, the flag that would lift it. None of them repeats a URL's path or
/// query, which may carry secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("not a valid URL: {0}")]
    InvalidUrl(String),
    #[error("URL is longer than {MAX_URL_LEN} bytes: refused")]
    TooLong,
    #[error("scheme `{0}:` is refused: only http and https URLs may be fetched")]
    Scheme(String),
    #[error("URL userinfo (`user:password@`) is refused: credentials are never sent")]
    Userinfo,
    #[error("URL has no host: refused")]
    NoHost,
    #[error(
        "host {0} is an IP address, not an allowlisted domain: refused \
         (allow a name with --allow and map it with --resolve NAME=ADDR)"
    )]
    IpLiteral(String),
    #[error("host {0} is not in the allowlist: refused (allow it with --allow)")]
    NotAllowlisted(String),
    #[error("plain http to {0} is refused: https only (allow http with --allow-http)")]
    HttpsOnly(String),
    #[error(
        "port {port} of {host} is refused: only ports {allowed} may be used \
         (allow others with --allow-port)"
    )]
    Port {
        host: String,
        port: u16,
        allowed: String,
    },
    #[error("address {0}")]
    Address(AddressRefusal),
}

/// An address that may not be connected to, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressRefusal {
    pub ip: IpAddr,
    /// The refused range, e.g. `loopback (127.0.0.0/8)`.
    pub reason: String,
    /// The `--allow-cidr` that covers the address but does not lift the refusal (cloud
    /// metadata endpoints need an exact single-address CIDR).
    pub not_lifted_by: Option<IpNet>,
}

impl fmt::Display for AddressRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self { ip, reason, .. } = self;
        match self.not_lifted_by {
            None => write!(f, "{ip} is {reason}: refused (allow it with --allow-cidr)"),
            Some(net) => write!(
                f,
                "{ip} is {reason}: refused even inside --allow-cidr {net} \
                 (metadata endpoints need --allow-cidr {ip}/{})",
                net.max_prefix_len()
            ),
        }
    }
}

/// Single addresses of cloud instance-metadata services. They sit inside ranges refused
/// anyway; naming them makes the refusal obvious and keeps them refused when an operator
/// allows the surrounding range (see [`Policy::check_address`]).
const METADATA_V4: [(Ipv4Addr, &str); 5] = [
    (
        Ipv4Addr::new(169, 254, 169, 254),
        "a cloud metadata endpoint (AWS, GCP, Azure, Oracle, DigitalOcean, OpenStack)",
    ),
    (
        Ipv4Addr::new(169, 254, 170, 2),
        "the AWS ECS task metadata endpoint",
    ),
    (
        Ipv4Addr::new(169, 254, 0, 23),
        "the Tencent Cloud metadata endpoint",
    ),
    (
        Ipv4Addr::new(100, 100, 100, 200),
        "the Alibaba Cloud metadata endpoint",
    ),
    (
        Ipv4Addr::new(192, 0, 0, 192),
        "the Oracle Cloud metadata endpoint",
    ),
];
const METADATA_V6: [(Ipv6Addr, &str); 1] = [(
    Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254),
    "the AWS IPv6 metadata endpoint",
)];

/// Refused IPv4 ranges, most specific first (`255.255.255.255` before `240/4`).
const REFUSED_V4: [(Ipv4Net, &str); 16] = [
    (
        v4(0, 0, 0, 0, 8),
        "unspecified / \"this network\" (0.0.0.0/8)",
    ),
    (v4(10, 0, 0, 0, 8), "private (10.0.0.0/8)"),
    (
        v4(100, 64, 0, 0, 10),
        "shared address space / CGNAT (100.64.0.0/10)",
    ),
    (v4(127, 0, 0, 0, 8), "loopback (127.0.0.0/8)"),
    (v4(169, 254, 0, 0, 16), "link-local (169.254.0.0/16)"),
    (v4(172, 16, 0, 0, 12), "private (172.16.0.0/12)"),
    (
        v4(192, 0, 0, 0, 24),
        "IETF protocol assignments (192.0.0.0/24)",
    ),
    (v4(192, 0, 2, 0, 24), "documentation (192.0.2.0/24)"),
    (
        v4(192, 88, 99, 0, 24),
        "6to4 relay anycast (192.88.99.0/24)",
    ),
    (v4(192, 168, 0, 0, 16), "private (192.168.0.0/16)"),
    (v4(198, 18, 0, 0, 15), "benchmarking (198.18.0.0/15)"),
    (v4(198, 51, 100, 0, 24), "documentation (198.51.100.0/24)"),
    (v4(203, 0, 113, 0, 24), "documentation (203.0.113.0/24)"),
    (v4(224, 0, 0, 0, 4), "multicast (224.0.0.0/4)"),
    (v4(255, 255, 255, 255, 32), "broadcast (255.255.255.255)"),
    (v4(240, 0, 0, 0, 4), "reserved (240.0.0.0/4)"),
];

/// Refused IPv6 ranges that do not embed an IPv4 address, most specific first. Anything
/// outside global unicast (2000::/3) is refused after these, whatever it is.
const REFUSED_V6: [(Ipv6Net, &str); 12] = [
    (v6([0, 0, 0, 0, 0, 0, 0, 0], 128), "unspecified (::)"),
    (v6([0, 0, 0, 0, 0, 0, 0, 1], 128), "loopback (::1)"),
    (
        v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48),
        "local-use NAT64 (64:ff9b:1::/48)",
    ),
    (
        v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64),
        "discard-only (100::/64)",
    ),
    (v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32), "Teredo (2001::/32)"),
    (
        v6([0x2001, 2, 0, 0, 0, 0, 0, 0], 48),
        "benchmarking (2001:2::/48)",
    ),
    (
        v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23),
        "IETF protocol assignments (2001::/23)",
    ),
    (
        v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32),
        "documentation (2001:db8::/32)",
    ),
    (
        v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20),
        "documentation (3fff::/20)",
    ),
    (
        v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),
        "unique-local (fc00::/7)",
    ),
    (
        v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10),
        "link-local (fe80::/10)",
    ),
    (
        v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10),
        "site-local (fec0::/10)",
    ),
];
const MULTICAST_V6: Ipv6Net = v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8);
const SEGMENT_ROUTING_V6: Ipv6Net = v6([0x5f00, 0, 0, 0, 0, 0, 0, 0], 16);
const GLOBAL_UNICAST_V6: Ipv6Net = v6([0x2000, 0, 0, 0, 0, 0, 0, 0], 3);
const MAPPED_V6: Ipv6Net = v6([0, 0, 0, 0, 0, 0xffff, 0, 0], 96);
const COMPATIBLE_V6: Ipv6Net = v6([0, 0, 0, 0, 0, 0, 0, 0], 96);
const NAT64_V6: Ipv6Net = v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96);
const SIX_TO_FOUR_V6: Ipv6Net = v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16);

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len)
}

const fn v6(s: [u16; 8], len: u8) -> Ipv6Net {
    Ipv6Net::new_assert(
        Ipv6Addr::new(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]),
        len,
    )
}

/// Classifies an address on its own: `Ok(())` for a public unicast address, otherwise the
/// refused range it falls in (e.g. `loopback (127.0.0.0/8)`). IPv6 forms that carry an
/// IPv4 address name the embedded address too.
pub fn classify_ip(ip: IpAddr) -> Result<(), String> {
    match ip {
        IpAddr::V4(ip) => classify_v4(ip).map_err(str::to_owned),
        IpAddr::V6(ip) => classify_v6(ip),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Result<(), &'static str> {
    if let Some((_, why)) = METADATA_V4.iter().find(|(m, _)| *m == ip) {
        return Err(why);
    }
    match REFUSED_V4.iter().find(|(net, _)| net.contains(&ip)) {
        Some((_, why)) => Err(why),
        None => Ok(()),
    }
}

fn classify_v6(ip: Ipv6Addr) -> Result<(), String> {
    if let Some((_, why)) = METADATA_V6.iter().find(|(m, _)| *m == ip) {
        return Err((*why).to_owned());
    }
    let low32 = Ipv4Addr::from_bits(ip.to_bits() as u32);
    // An IPv4-mapped address is that IPv4 address on the wire: judge it as one.
    if MAPPED_V6.contains(&ip) {
        return classify_v4(low32)
            .map_err(|why| format!("an IPv4-mapped form of {low32}, which is {why}"));
    }
    // `::` and `::1` are inside ::/96 but have names of their own.
    if COMPATIBLE_V6.contains(&ip) && ip.to_bits() > 1 {
        return Err(embedded_reason(
            "IPv4-compatible (::/96, deprecated)",
            low32,
        ));
    }
    if NAT64_V6.contains(&ip) {
        return Err(embedded_reason("NAT64 (64:ff9b::/96)", low32));
    }
    if SIX_TO_FOUR_V6.contains(&ip) {
        // 6to4 puts the IPv4 address in bits 16..48.
        let embedded = Ipv4Addr::from_bits((ip.to_bits() >> 80) as u32);
        return Err(embedded_reason("6to4 (2002::/16)", embedded));
    }
    if let Some((_, why)) = REFUSED_V6.iter().find(|(net, _)| net.contains(&ip)) {
        return Err((*why).to_owned());
    }
    if MULTICAST_V6.contains(&ip) {
        return Err("multicast (ff00::/8)".to_owned());
    }
    if SEGMENT_ROUTING_V6.contains(&ip) {
        return Err("segment-routing SIDs (5f00::/16)".to_owned());
    }
    if !GLOBAL_UNICAST_V6.contains(&ip) {
        return Err("not global unicast (outside 2000::/3)".to_owned());
    }
    Ok(())
}

/// "FORM embedding A.B.C.D (which is RANGE)": the embedded address is named so an
/// operator sees the internal target, and the form is refused whatever it embeds, because
/// a relay or translator decides where such a packet really goes.
fn embedded_reason(form: &str, embedded: Ipv4Addr) -> String {
    match classify_v4(embedded) {
        Ok(()) => format!("{form} embedding {embedded}"),
        Err(why) => format!("{form} embedding {embedded}, which is {why}"),
    }
}

/// One `--allow` / `--allow-http` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainPattern {
    /// `example.com`: that name only.
    Exact(String),
    /// `*.example.com`: any name ending in `.example.com`, not `example.com` itself.
    Subdomains(String),
}

impl DomainPattern {
    /// Parses `example.com` or `*.example.com`, normalising the name as URL hosts are.
    pub fn parse(input: &str) -> Result<Self, String> {
        let (wildcard, name) = match input.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, input),
        };
        let name = normalize_domain(name).map_err(|why| format!("--allow {input:?}: {why}"))?;
        Ok(if wildcard {
            Self::Subdomains(name)
        } else {
            Self::Exact(name)
        })
    }

    /// Whether a normalised host name matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            Self::Exact(name) => host == name,
            Self::Subdomains(parent) => host
                .strip_suffix(parent.as_str())
                .is_some_and(|label| label.len() > 1 && label.ends_with('.')),
        }
    }
}

impl fmt::Display for DomainPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(name) => f.write_str(name),
            Self::Subdomains(parent) => write!(f, "*.{parent}"),
        }
    }
}

/// Normalises a bare domain name the way URL hosts are normalised, refusing anything that
/// is not a plain domain (IP literals, ports, paths, wildcards in the middle).
pub fn normalize_domain(input: &str) -> Result<String, String> {
    if input.is_empty()
        || input
            .chars()
            .any(|c| c.is_whitespace() || "/\\:@?#[]*%".contains(c))
    {
        return Err("not a plain domain name".to_owned());
    }
    let url = Url::parse(&format!("http://{input}/")).map_err(|err| err.to_string())?;
    match url.host() {
        Some(Host::Domain(name)) => {
            let name = name.strip_suffix('.').unwrap_or(name);
            if name.is_empty() {
                return Err("not a plain domain name".to_owned());
            }
            Ok(name.to_owned())
        }
        Some(Host::Ipv4(_) | Host::Ipv6(_)) => Err(
            "an IP address, not a domain (use --resolve NAME=ADDR with --allow NAME)".to_owned(),
        ),
        None => Err("not a plain domain name".to_owned()),
    }
}

/// The validated fetch policy: what may be fetched, over which scheme and port, and which
/// otherwise refused address ranges the operator lifted.
#[derive(Debug, Clone)]
pub struct Policy {
    allow: Vec<DomainPattern>,
    allow_http: Vec<DomainPattern>,
    allow_cidrs: Vec<IpNet>,
    ports: BTreeSet<u16>,
}

impl Default for Policy {
    /// Nothing allowed: the empty allowlist refuses every host.
    fn default() -> Self {
        Self::new(Vec::new(), Vec::new(), Vec::new(), Vec::new())
    }
}

impl Policy {
    /// `allow_http` entries are allowed over http and https; `allow` entries over https
    /// only. `extra_ports` come on top of 80 and 443.
    pub fn new(
        allow: Vec<DomainPattern>,
        allow_http: Vec<DomainPattern>,
        allow_cidrs: Vec<IpNet>,
        extra_ports: Vec<u16>,
    ) -> Self {
        let mut ports: BTreeSet<u16> = DEFAULT_PORTS.into_iter().collect();
        ports.extend(extra_ports);
        Self {
            allow,
            allow_http,
            // Stored truncated so `10.1.2.3/8` and `10.0.0.0/8` behave (and print) alike.
            allow_cidrs: allow_cidrs.into_iter().map(|net| net.trunc()).collect(),
            ports,
        }
    }

    /// The `--allow-cidr` exceptions, for the startup warning.
    pub fn allowed_cidrs(&self) -> &[IpNet] {
        &self.allow_cidrs
    }

    /// Whether the allowlist is empty (then nothing can be fetched).
    pub fn allows_nothing(&self) -> bool {
        self.allow.is_empty() && self.allow_http.is_empty()
    }

    /// May a connection go to `ip`? Public unicast addresses may; refused ranges may not,
    /// unless an `--allow-cidr` covers the address. A cloud metadata endpoint stays refused
    /// unless the covering CIDR is that single address: allowing "the local /16" should not
    /// silently hand out instance credentials.
    pub fn check_address(&self, ip: IpAddr) -> Result<(), AddressRefusal> {
        let Err(reason) = classify_ip(ip) else {
            return Ok(());
        };
        // `::ffff:127.0.0.1` is 127.0.0.1 on the wire, so an IPv4 CIDR covers it too.
        let canonical = ip.to_canonical();
        let covering = self
            .allow_cidrs
            .iter()
            .find(|net| net.contains(&ip) || net.contains(&canonical));
        match covering {
            Some(net) if !is_metadata(canonical) || net.prefix_len() == net.max_prefix_len() => {
                Ok(())
            }
            covering => Err(AddressRefusal {
                ip,
                reason,
                not_lifted_by: covering.copied(),
            }),
        }
    }

    /// Is `host` (normalised) allowlisted, and may it be reached over plain http?
    fn host_rule(&self, host: &str) -> Option<HostRule> {
        if self.allow_http.iter().any(|p| p.matches(host)) {
            Some(HostRule::HttpAllowed)
        } else if self.allow.iter().any(|p| p.matches(host)) {
            Some(HostRule::HttpsOnly)
        } else {
            None
        }
    }

    /// Whether a normalised host name is allowlisted at all (the resolver's second check).
    pub fn is_allowlisted(&self, host: &str) -> bool {
        self.host_rule(host).is_some()
    }

    /// Checks a URL against every rule and returns it parsed and normalised (trailing dot
    /// removed from the host, fragment dropped). Rules, in order: length, syntax, scheme,
    /// userinfo, host (IP literals: address ranges, then refused as non-domains; names:
    /// allowlist), scheme for that host, port. Addresses of names are checked when they are
    /// resolved, by the resolver.
    pub fn check_url(&self, input: &str) -> Result<Url, Refusal> {
        if input.len() > MAX_URL_LEN {
            return Err(Refusal::TooLong);
        }
        let mut url = Url::parse(input).map_err(|err| Refusal::InvalidUrl(err.to_string()))?;
        let https = match url.scheme() {
            "https" => true,
            "http" => false,
            other => return Err(Refusal::Scheme(other.to_owned())),
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Refusal::Userinfo);
        }
        let host = match url.host() {
            None => return Err(Refusal::NoHost),
            Some(Host::Ipv4(ip)) => return Err(self.ip_literal(IpAddr::V4(ip))),
            Some(Host::Ipv6(ip)) => return Err(self.ip_literal(IpAddr::V6(ip))),
            Some(Host::Domain(name)) => name.strip_suffix('.').unwrap_or(name).to_owned(),
        };
        if host.is_empty() || host.ends_with('.') {
            return Err(Refusal::NotAllowlisted(host));
        }
        match self.host_rule(&host) {
            None => return Err(Refusal::NotAllowlisted(host)),
            Some(HostRule::HttpsOnly) if !https => return Err(Refusal::HttpsOnly(host)),
            Some(_) => {}
        }
        let port = url.port_or_known_default().unwrap_or(0);
        if !self.ports.contains(&port) {
            return Err(Refusal::Port {
                host,
                port,
                allowed: self.ports_list(),
            });
        }
        url.set_host(Some(&host))
            .map_err(|err| Refusal::InvalidUrl(err.to_string()))?;
        url.set_fragment(None);
        Ok(url)
    }

    /// IP-literal hosts never reach the resolver. An internal one is refused by its range
    /// (the most useful message); a public one because only domains can be allowlisted.
    fn ip_literal(&self, ip: IpAddr) -> Refusal {
        match self.check_address(ip) {
            Err(refusal) => Refusal::Address(refusal),
            Ok(()) => Refusal::IpLiteral(ip.to_string()),
        }
    }

    fn ports_list(&self) -> String {
        let ports: Vec<String> = self.ports.iter().map(u16::to_string).collect();
        ports.join(", ")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HostRule {
    HttpsOnly,
    HttpAllowed,
}

fn is_metadata(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => METADATA_V4.iter().any(|(m, _)| *m == ip),
        IpAddr::V6(ip) => METADATA_V6.iter().any(|(m, _)| *m == ip),
    }
}

/// Fuzzing entry point: checks `input` against a fixed policy that allows `example.com`
/// (https), `*.example.org` (http and https) and the loopback /8. Must never panic, and
/// whatever it accepts must be http(s), without userinfo, on an allowlisted name.
pub fn check_url(input: &str) -> Result<Url, Refusal> {
    let policy = Policy::new(
        vec![DomainPattern::Exact("example.com".to_owned())],
        vec![DomainPattern::Subdomains("example.org".to_owned())],
        vec![IpNet::V4(v4(127, 0, 0, 0, 8))],
        Vec::new(),
    );
    policy.check_url(input)
}

#[cfg(test)]
mod tests;
