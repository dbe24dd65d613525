//! Client certificates verified by the TLS handshake, and the ones that stand for a principal.
//!
//! The listener verifies the chain against `listen.tls.client_ca`; it hands over only what
//! identifies the certificate (SANs, subject CN), read by [`ClientCertificate::from_der`].
//! `[[auth.certificates]]` maps one of them to a principal. Matching is exact: no wildcards, no
//! case folding of URIs.

use micromcp_config::{CertificateEntry, CertificateId};
use x509_parser::extensions::GeneralName;

use crate::{AuthMethod, Principal};

/// At most this many URI SANs and this many DNS SANs are read from a certificate; the rest
/// are ignored (they can only fail to match).
pub const MAX_NAMES: usize = 16;
/// Longest URI SAN read (longer ones are ignored).
pub const MAX_URI_BYTES: usize = 2048;
/// Longest DNS SAN read (longer ones are ignored).
pub const MAX_DNS_BYTES: usize = 253;
/// Longest subject CN read (X.520 allows 64 characters; longer ones are ignored).
pub const MAX_COMMON_NAME_BYTES: usize = 256;

/// What identifies a verified client certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientCertificate {
    /// URI SANs, such as a SPIFFE id.
    pub uris: Vec<String>,
    pub dns_names: Vec<String>,
    pub common_name: Option<String>,
}

impl ClientCertificate {
    /// The names of a DER certificate whose chain TLS has verified. Bounded: at most
    /// [`MAX_NAMES`] URI and DNS SANs each, names longer than their limit or with a control
    /// character (or, for SANs, anything but visible ASCII) are left out, and a subject with
    /// more than one CN has none (which one would count is ambiguous).
    pub fn from_der(der: &[u8]) -> Result<ClientCertificate, String> {
        let (rest, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| format!("not an X.509 certificate: {e}"))?;
        if !rest.is_empty() {
            return Err("trailing bytes after the certificate".into());
        }
        let mut out = ClientCertificate::default();
        let sans = cert
            .subject_alternative_name()
            .map_err(|e| format!("subject alternative names: {e}"))?;
        for name in sans.iter().flat_map(|s| &s.value.general_names) {
            match name {
                GeneralName::URI(uri) => push_name(&mut out.uris, uri, MAX_URI_BYTES),
                GeneralName::DNSName(dns) => push_name(&mut out.dns_names, dns, MAX_DNS_BYTES),
                _ => {}
            }
        }
        let mut common_names = cert.subject().iter_common_name();
        if let (Some(cn), None) = (common_names.next(), common_names.next()) {
            out.common_name = cn
                .as_str()
                .ok()
                .filter(|cn| {
                    !cn.is_empty()
                        && cn.len() <= MAX_COMMON_NAME_BYTES
                        && !cn.chars().any(char::is_control)
                })
                .map(str::to_owned);
        }
        Ok(out)
    }
}

fn push_name(names: &mut Vec<String>, name: &str, max_bytes: usize) {
    let visible = !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic());
    if names.len() < MAX_NAMES && name.len() <= max_bytes && visible {
        names.push(name.to_owned());
    }
}

/// `[[auth.certificates]]`.
#[derive(Debug, Default)]
pub struct CertificateMap {
    entries: Vec<(CertificateId, Principal)>,
}

impl CertificateMap {
    pub fn new(entries: &[CertificateEntry]) -> Self {
        Self {
            entries: entries
                .iter()
                .map(|e| {
                    (
                        e.id.clone(),
                        Principal::from_identity(&e.identity, AuthMethod::Certificate),
                    )
                })
                .collect(),
        }
    }

    /// The principal of the first entry that matches `certificate`.
    pub fn principal(&self, certificate: &ClientCertificate) -> Option<Principal> {
        self.entries
            .iter()
            .find(|(id, _)| match id {
                CertificateId::Uri(u) => certificate.uris.iter().any(|c| c == u),
                CertificateId::Dns(d) => certificate
                    .dns_names
                    .iter()
                    .any(|c| c.eq_ignore_ascii_case(d)),
                CertificateId::CommonName(n) => certificate.common_name.as_deref() == Some(n),
            })
            .map(|(_, p)| p.clone())
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

    fn cert(sans: Vec<SanType>, names: &[(DnType, &str)]) -> Vec<u8> {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans;
        for (ty, value) in names {
            params.distinguished_name.push(ty.clone(), *value);
        }
        params.self_signed(&key).expect("cert").der().to_vec()
    }

    fn uri(u: &str) -> SanType {
        SanType::URI(u.try_into().expect("ia5"))
    }

    fn dns(d: &str) -> SanType {
        SanType::DnsName(d.try_into().expect("ia5"))
    }

    #[test]
    fn reads_uri_and_dns_sans_and_the_common_name() {
        let der = cert(
            vec![
                uri("spiffe://example.org/agent/bot"),
                dns("bot.example.org"),
                SanType::IpAddress("127.0.0.1".parse().expect("ip")),
            ],
            &[
                (DnType::CommonName, "bot"),
                (DnType::OrganizationName, "ACME"),
            ],
        );
        let c = ClientCertificate::from_der(&der).expect("parsed");
        assert_eq!(c.uris, ["spiffe://example.org/agent/bot"]);
        assert_eq!(c.dns_names, ["bot.example.org"]);
        assert_eq!(c.common_name.as_deref(), Some("bot"));
    }

    #[test]
    fn names_are_bounded_and_ambiguous_or_hidden_ones_left_out() {
        let mut sans: Vec<SanType> = (0..MAX_NAMES + 4)
            .map(|i| uri(&format!("spiffe://example.org/{i}")))
            .collect();
        sans.insert(
            0,
            uri(&format!(
                "spiffe://example.org/{}",
                "a".repeat(MAX_URI_BYTES)
            )),
        );
        sans.insert(0, dns(&"a".repeat(MAX_DNS_BYTES + 1)));
        sans.push(dns("ok.example.org"));
        // Two CN attributes: which one counts is ambiguous, so none does.
        let der = cert(
            sans,
            &[
                (DnType::CommonName, "first"),
                (DnType::CustomDnType(vec![2, 5, 4, 3]), "second"),
            ],
        );
        let c = ClientCertificate::from_der(&der).expect("parsed");
        assert_eq!(
            c.uris.len(),
            MAX_NAMES,
            "over-long one skipped, then 16 kept"
        );
        assert_eq!(c.uris[0], "spiffe://example.org/0");
        assert_eq!(c.dns_names, ["ok.example.org"]);
        assert_eq!(c.common_name, None);

        let der = cert(
            vec![uri("spiffe://x/\u{7f}y")],
            &[(DnType::CommonName, "a\nb")],
        );
        let c = ClientCertificate::from_der(&der).expect("parsed");
        assert!(c.uris.is_empty() && c.common_name.is_none(), "{c:?}");
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(ClientCertificate::from_der(b"not a certificate").is_err());
        let mut der = cert(vec![], &[(DnType::CommonName, "x")]);
        der.push(0);
        assert!(ClientCertificate::from_der(&der).is_err(), "trailing bytes");
    }

    #[test]
    fn the_map_matches_exactly_in_config_order() {
        let identity = |p: &str| micromcp_config::Identity {
            principal: p.into(),
            agent: None,
            tenant: None,
            roles: vec![],
            scopes: vec![],
            clearance: None,
        };
        let map = CertificateMap::new(&[
            CertificateEntry {
                id: CertificateId::Uri("spiffe://example.org/agent/bot".into()),
                identity: identity("bot"),
            },
            CertificateEntry {
                id: CertificateId::Dns("Host.Example.org".into()),
                identity: identity("host"),
            },
            CertificateEntry {
                id: CertificateId::CommonName("carol".into()),
                identity: identity("carol"),
            },
        ]);
        let with = |uris: &[&str], dns: &[&str], cn: Option<&str>| ClientCertificate {
            uris: uris.iter().map(|s| (*s).to_owned()).collect(),
            dns_names: dns.iter().map(|s| (*s).to_owned()).collect(),
            common_name: cn.map(str::to_owned),
        };
        let user = |c: &ClientCertificate| map.principal(c).map(|p| p.user);
        assert_eq!(
            user(&with(
                &["spiffe://example.org/agent/bot"],
                &[],
                Some("carol")
            ))
            .as_deref(),
            Some("bot")
        );
        assert_eq!(
            user(&with(&["spiffe://example.org/agent/BOT"], &[], None)),
            None
        );
        assert_eq!(
            user(&with(&["spiffe://example.org/agent"], &[], None)),
            None
        );
        assert_eq!(
            user(&with(&[], &["host.example.org"], None)).as_deref(),
            Some("host")
        );
        assert_eq!(user(&with(&[], &[], Some("Carol"))), None);
        let p = map
            .principal(&with(&[], &[], Some("carol")))
            .expect("mapped");
        assert_eq!(p.method, AuthMethod::Certificate);
    }
}
