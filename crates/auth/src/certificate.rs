//! Client certificates verified by the TLS handshake, and the ones that stand for a principal.
//!
//! The listener verifies the chain against `listen.tls.client_ca`; it hands over only what
//! identifies the certificate (SANs, subject CN), read by [`ClientCertificate::from_der`].
//! `[[auth.certificates]]` maps one of them to a principal. Matching is exact: no wildcards, no
//! case folding of URIs.

use micromcp_config::{CertificateEntry, CertificateId};
use rustls_pki_types::CertificateDer;

use crate::{AuthMethod, Principal};

/// At most this many URI SANs and this many DNS SANs are read from a certificate; the rest
/// are ignored (they can only fail to match).
pub const MAX_NAMES: usize = 16;
/// Longest URI SAN read (longer ones are ignored).
pub const MAX_URI_BYTES: usize = 2048;
/// Longest DNS SAN read (longer ones are not valid DNS names).
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
    /// The names of a DER certificate whose chain TLS has verified, read with webpki (the
    /// parser rustls verified it with). Bounded: at most [`MAX_NAMES`] URI and DNS SANs each;
    /// names longer than their limit or with a control character (SANs: anything but visible
    /// ASCII) are left out; DNS SANs must be valid DNS names; the subject CN counts only when
    /// there is exactly one, as a UTF8String, PrintableString or IA5String (which of two would
    /// count is ambiguous).
    pub fn from_der(der: &[u8]) -> Result<ClientCertificate, String> {
        let der = CertificateDer::from(der);
        let cert = webpki::EndEntityCert::try_from(&der)
            .map_err(|e| format!("not an X.509 certificate: {e}"))?;
        let mut out = ClientCertificate::default();
        for uri in cert.valid_uri_names() {
            push_name(&mut out.uris, uri, MAX_URI_BYTES);
        }
        for dns in cert.valid_dns_names() {
            push_name(&mut out.dns_names, dns, MAX_DNS_BYTES);
        }
        out.common_name = common_name(cert.subject())
            .filter(|cn| {
                !cn.is_empty()
                    && cn.len() <= MAX_COMMON_NAME_BYTES
                    && !cn.chars().any(char::is_control)
            })
            .map(str::to_owned);
        Ok(out)
    }
}

fn push_name(names: &mut Vec<String>, name: &str, max_bytes: usize) {
    let visible = !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic());
    if names.len() < MAX_NAMES && name.len() <= max_bytes && visible {
        names.push(name.to_owned());
    }
}

/// DER tags in a subject name (X.501 `Name`, RFC 5280 §4.1.2.4).
const SET: u8 = 0x31;
const SEQUENCE: u8 = 0x30;
const OID: u8 = 0x06;
const UTF8_STRING: u8 = 0x0c;
const PRINTABLE_STRING: u8 = 0x13;
const IA5_STRING: u8 = 0x16;
/// id-at-commonName, 2.5.4.3.
const COMMON_NAME_OID: [u8; 3] = [0x55, 0x04, 0x03];

/// The one common name of a subject (the contents of its outer SEQUENCE): `None` when there is
/// none, more than one, one in another string type, or the name is not well-formed DER.
fn common_name(subject: &[u8]) -> Option<&str> {
    let mut found = None;
    let mut rdns = subject;
    while !rdns.is_empty() {
        let (set, rest) = expect(rdns, SET)?;
        rdns = rest;
        let mut attributes = set;
        while !attributes.is_empty() {
            let (attribute, rest) = expect(attributes, SEQUENCE)?;
            attributes = rest;
            let (oid, value) = expect(attribute, OID)?;
            if oid != COMMON_NAME_OID {
                continue;
            }
            let (tag, text, after) = tlv(value)?;
            if found.is_some() || !after.is_empty() {
                return None;
            }
            if !matches!(tag, UTF8_STRING | PRINTABLE_STRING | IA5_STRING) {
                return None;
            }
            found = Some(std::str::from_utf8(text).ok()?);
        }
    }
    found
}

/// One DER element with tag `tag`: its contents and what follows it.
fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    match tlv(input)? {
        (t, contents, rest) if t == tag => Some((contents, rest)),
        _ => None,
    }
}

/// One DER element: tag (low-tag-number form), contents, and what follows. Lengths in the
/// short form or in one or two bytes (names never need more), minimally encoded.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = match first {
        0..=0x7f => (usize::from(first), rest),
        0x81 => {
            let (&len, rest) = rest.split_first()?;
            (len >= 0x80).then_some((usize::from(len), rest))?
        }
        0x82 => {
            let (bytes, rest) = rest.split_at_checked(2)?;
            let len = usize::from(u16::from_be_bytes([bytes[0], bytes[1]]));
            (len >= 0x100).then_some((len, rest))?
        }
        _ => return None,
    };
    let (contents, rest) = rest.split_at_checked(len)?;
    Some((tag, contents, rest))
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
    fn the_common_name_must_be_one_text_string() {
        use rcgen::{DnValue, string::BmpString};
        let bmp = BmpString::try_from("bot").expect("bmp");
        let der = cert(vec![], &[(DnType::CommonName, "x")]);
        assert!(ClientCertificate::from_der(&der).is_ok());
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, DnValue::BmpString(bmp));
        let key = KeyPair::generate().expect("key");
        let der = params.self_signed(&key).expect("cert").der().to_vec();
        let c = ClientCertificate::from_der(&der).expect("parsed");
        assert_eq!(c.common_name, None, "BMPString is not read");

        // The DER walk itself: lengths in long form, truncation, non-minimal lengths.
        let cn = |value: &[u8]| {
            let mut atv = vec![OID, 3, 0x55, 4, 3];
            atv.extend_from_slice(value);
            let mut seq = vec![SEQUENCE, u8::try_from(atv.len()).expect("short")];
            seq.extend(atv);
            let mut set = vec![SET, u8::try_from(seq.len()).expect("short")];
            set.extend(seq);
            set
        };
        assert_eq!(common_name(&cn(&[UTF8_STRING, 2, b'h', b'i'])), Some("hi"));
        assert_eq!(common_name(&cn(&[UTF8_STRING, 0x81, 2, b'h', b'i'])), None);
        assert_eq!(common_name(&cn(&[UTF8_STRING, 3, b'h', b'i'])), None);
        assert_eq!(common_name(&cn(&[0x1e, 2, 0, b'h'])), None);
        let mut two = cn(&[PRINTABLE_STRING, 1, b'a']);
        two.extend(cn(&[PRINTABLE_STRING, 1, b'b']));
        assert_eq!(common_name(&two), None);
        let long = vec![b'x'; 200];
        let mut value = vec![IA5_STRING, 0x81, 200];
        value.extend(&long);
        let mut atv = vec![OID, 3, 0x55, 4, 3];
        atv.extend(value);
        let mut seq = vec![SEQUENCE, 0x81, u8::try_from(atv.len()).expect("len")];
        seq.extend(atv);
        let mut set = vec![SET, 0x81, u8::try_from(seq.len()).expect("len")];
        set.extend(seq);
        assert_eq!(common_name(&set).map(str::len), Some(200));
        assert_eq!(common_name(&set[..set.len() - 1]), None, "truncated");
        assert_eq!(common_name(&[]), None);
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
