//! Public names: how upstream tools, prompts and resources appear to clients.
//!
//! Tools and prompts become `<service><separator><name>` (`echo.add`). Resource URIs become
//! `<service>+<uri>` (`docs+file:///a.md`): service names are lower-case letters, digits and `-`,
//! so the result is still a valid URI whose scheme names the service, and it routes back by
//! splitting at the first `+`. A service may be published unprefixed (for single-service
//! deployments); its names then pass through unchanged.

/// Whether `s` is a valid service name: `[a-z][a-z0-9-]{0,62}`.
pub fn is_valid_service_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z'))
        && s.len() <= 63
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Whether `s` can separate service and name unambiguously: 1 to 4 ASCII punctuation
/// characters, none of which may occur in a service name (`-`) or mean something else (`*` in
/// grant patterns, `+` in public URIs). With `-` allowed, `fs-2-read` could be service `fs`.
pub fn is_valid_separator(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 4
        && s.bytes()
            .all(|b| b.is_ascii_punctuation() && !matches!(b, b'-' | b'*' | b'+'))
}

/// Splits public names into (service, upstream name).
#[derive(Debug, Clone)]
pub struct Namer {
    separator: String,
}

impl Namer {
    pub fn new(separator: impl Into<String>) -> Self {
        Self {
            separator: separator.into(),
        }
    }
    pub fn separator(&self) -> &str {
        &self.separator
    }
    pub fn public_name(&self, service: &str, name: &str) -> String {
        format!("{service}{}{name}", self.separator)
    }
    pub fn split_name<'a>(&self, public: &'a str) -> Option<(&'a str, &'a str)> {
        let (service, name) = public.split_once(self.separator.as_str())?;
        (is_valid_service_name(service) && !name.is_empty()).then_some((service, name))
    }
    pub fn public_uri(service: &str, uri: &str) -> String {
        format!("{service}+{uri}")
    }
    pub fn split_uri(public: &str) -> Option<(&str, &str)> {
        let (service, uri) = public.split_once('+')?;
        (is_valid_service_name(service) && !uri.is_empty()).then_some((service, uri))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let n = Namer::new(".");
        assert_eq!(n.public_name("echo", "add"), "echo.add");
        assert_eq!(n.split_name("echo.add.v2"), Some(("echo", "add.v2")));
        assert_eq!(n.split_name("echo."), None);
        assert_eq!(n.split_name("Echo.add"), None);
        assert_eq!(n.split_name("noseparator"), None);
        let n = Namer::new("__");
        assert_eq!(
            n.split_name("time__get_current_time"),
            Some(("time", "get_current_time"))
        );
    }

    #[test]
    fn uris_round_trip_including_plus_schemes() {
        let public = Namer::public_uri("docs", "svn+ssh://host/x");
        assert_eq!(
            Namer::split_uri(&public),
            Some(("docs", "svn+ssh://host/x"))
        );
        assert_eq!(Namer::split_uri("file:///x"), None);
    }

    #[test]
    fn separators_cannot_be_confused_with_service_names() {
        for good in [".", "__", "/", ":", "::"] {
            assert!(is_valid_separator(good), "{good}");
        }
        for bad in ["", "-", "--", "_-", "*", "+", "a", "12345", ".....", " "] {
            assert!(!is_valid_separator(bad), "{bad}");
        }
    }

    #[test]
    fn service_names_are_restricted() {
        assert!(is_valid_service_name("fs-2"));
        for bad in ["", "2fs", "a_b", "a.b", "a+b", "A", &"a".repeat(64)] {
            assert!(!is_valid_service_name(bad), "{bad}");
        }
    }
}
