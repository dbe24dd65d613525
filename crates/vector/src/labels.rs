//! Document labels and the classification order they are compared by.

use std::{fmt, str::FromStr};

use rmcp::schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How sensitive a document is, ordered: `public` < `internal` < `confidential` < `restricted`.
///
/// A caller with clearance `L` sees documents whose classification is at most `L`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
#[schemars(crate = "rmcp::schemars")]
pub enum Classification {
    Public,
    Internal,
    Confidential,
    Restricted,
}

impl Classification {
    /// Every level, lowest first.
    pub const ALL: [Self; 4] = [
        Self::Public,
        Self::Internal,
        Self::Confidential,
        Self::Restricted,
    ];

    /// The label as written in front matter and flags.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Internal => "internal",
            Self::Confidential => "confidential",
            Self::Restricted => "restricted",
        }
    }

    /// The level as a number (0 = public), the form stores compare with `<=`.
    pub fn level(self) -> u8 {
        self as u8
    }

    /// The inverse of [`Self::level`].
    pub fn from_level(level: i64) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|c| i64::from(c.level()) == level)
    }
}

impl fmt::Display for Classification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A classification label that is none of the four known ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown classification {0:?} (known, lowest first: public, internal, confidential, restricted)"
)]
pub struct UnknownClassification(pub String);

impl FromStr for Classification {
    type Err = UnknownClassification;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Exact, lowercase only: a label that merely looks like a level is a typo to report,
        // not a guess to make about how secret a document is.
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownClassification(s.to_owned()))
    }
}

/// Longest tenant name accepted, in bytes.
pub const MAX_TENANT_LEN: usize = 64;
/// Longest owner name accepted, in bytes.
pub const MAX_OWNER_LEN: usize = 128;

/// Checks a tenant name: 1–64 ASCII letters, digits, `.`, `_` or `-`.
///
/// Tenants are identifiers compared byte for byte; a narrow alphabet keeps look-alikes
/// (spaces, Unicode confusables, case tricks aside) out of the one label that separates
/// customers.
pub fn check_tenant(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_TENANT_LEN {
        return Err(format!(
            "tenant must be 1 to {MAX_TENANT_LEN} bytes long, got {}",
            name.len()
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "tenant {name:?} contains {bad:?}: only ASCII letters, digits, '.', '_' and '-' are allowed"
        ));
    }
    Ok(())
}

/// Checks an owner name: 1–128 bytes, no control characters.
pub fn check_owner(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_OWNER_LEN {
        return Err(format!(
            "owner must be 1 to {MAX_OWNER_LEN} bytes long, got {}",
            name.len()
        ));
    }
    if name.chars().any(char::is_control) {
        return Err("owner contains a control character".to_owned());
    }
    Ok(())
}

/// The labels a document is indexed with, after defaults were applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct Labels {
    /// The tenant the document belongs to; only callers of this tenant see it.
    pub tenant: String,
    /// How sensitive it is; only callers cleared at or above this level see it.
    pub classification: Classification,
    /// Who owns it, when the front matter says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_ordered_public_to_restricted() {
        assert!(Classification::Public < Classification::Internal);
        assert!(Classification::Internal < Classification::Confidential);
        assert!(Classification::Confidential < Classification::Restricted);
        for c in Classification::ALL {
            assert_eq!(Classification::from_level(i64::from(c.level())), Some(c));
            assert_eq!(c.as_str().parse::<Classification>(), Ok(c));
        }
        assert_eq!(Classification::from_level(4), None);
    }

    #[test]
    fn unknown_or_miscased_classification_is_refused() {
        for bad in ["secret", "Public", "PUBLIC", " public", ""] {
            let err = bad.parse::<Classification>().expect_err(bad);
            assert!(err.to_string().contains("unknown classification"), "{err}");
        }
    }

    #[test]
    fn tenant_alphabet_is_narrow() {
        assert!(check_tenant("acme").is_ok());
        assert!(check_tenant("acme-eu_2.prod").is_ok());
        for bad in ["", "ac me", "acme'", "acmé", "a/b", &"x".repeat(65)] {
            assert!(check_tenant(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn owner_refuses_control_characters() {
        assert!(check_owner("Ada Lovelace").is_ok());
        assert!(check_owner("ada\u{0}").is_err());
        assert!(check_owner("").is_err());
    }
}
