//! Client certificates verified by the TLS handshake, and the ones that stand for a principal.
//!
//! The listener verifies the chain against `listen.tls.client_ca`; it hands over only what
//! identifies the certificate (SANs, subject CN). `[[auth.certificates]]` maps one of them to
//! a principal. Matching is exact: no wildcards, no case folding of URIs.

use micromcp_config::{CertificateEntry, CertificateId};

use crate::{AuthMethod, Principal};

/// What identifies a verified client certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientCertificate {
    /// URI SANs, such as a SPIFFE id.
    pub uris: Vec<String>,
    pub dns_names: Vec<String>,
    pub common_name: Option<String>,
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
