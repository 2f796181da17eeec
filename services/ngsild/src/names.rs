//! Names that arrive from outside and must be checked once, at the edge: entity ids, attribute and
//! type names, tenants, scopes (parse, don't validate).

use std::fmt;

use crate::Error;

/// Characters that ETSI GS CIM 009 clause 4.6.2 forbids in entity type and attribute names, plus
/// those that would break an IRI.
const FORBIDDEN_NAME_CHARS: &[char] = &[
    '<', '>', '"', '\'', '=', ';', '(', ')', '\\', '{', '}', '|', '^', '`',
];

/// Whether `s` is an absolute URI: a scheme, a colon, and a non-empty remainder free of whitespace
/// and of the characters RFC 3986 never allows (clause 4.5.1: entity ids are URIs).
pub fn is_absolute_uri(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once(':') else {
        return false;
    };
    let mut scheme_chars = scheme.chars();
    let scheme_ok = scheme_chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && scheme_chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    scheme_ok
        && !rest.is_empty()
        && !rest.chars().any(|c| {
            c.is_whitespace()
                || c.is_control()
                || matches!(c, '<' | '>' | '"' | '{' | '}' | '|' | '\\' | '^' | '`')
        })
}

/// Whether `s` may be used as a short (compacted) attribute or entity type name.
pub fn is_valid_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('@')
        && s.len() <= 1024
        && !s
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || FORBIDDEN_NAME_CHARS.contains(&c))
}

/// An entity id: an absolute URI (clause 4.5.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntityId(String);

impl EntityId {
    pub fn parse(s: &str) -> Result<EntityId, Error> {
        if s.len() > 2048 {
            return Err(Error::bad("entity id is longer than 2048 characters"));
        }
        if !is_absolute_uri(s) {
            return Err(Error::bad(format!(
                "entity id {s:?} is not an absolute URI"
            )));
        }
        Ok(EntityId(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EntityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A tenant name, as sent in the `NGSILD-Tenant` header (clause 6.3.14). The default tenant has no
/// name and is represented by `None` wherever a tenant is optional.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tenant(String);

impl Tenant {
    pub fn parse(s: &str) -> Result<Tenant, Error> {
        let ok = !s.is_empty()
            && s.len() <= 128
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/'));
        if ok {
            Ok(Tenant(s.to_owned()))
        } else {
            Err(Error::InvalidRequest(format!(
                "tenant {s:?} is not valid: use 1 to 128 of the characters A-Z a-z 0-9 - _ . : /"
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `s` is a valid scope (clause 4.18): `/` followed by one or more `/`-separated levels.
pub fn is_valid_scope(s: &str) -> bool {
    s.len() > 1
        && s.starts_with('/')
        && s[1..].split('/').all(|level| {
            !level.is_empty()
                && level
                    .chars()
                    .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_uri(input: &str, expected: bool) {
        assert_eq!(is_absolute_uri(input), expected, "{input:?}");
    }

    #[test]
    fn absolute_uris() {
        check_uri("urn:ngsi-ld:Vehicle:A1", true);
        check_uri("https://example.org/x#y", true);
        check_uri("urn:", false);
        check_uri("Vehicle:1 2", false);
        check_uri("1abc:x", false);
        check_uri("no-colon", false);
        check_uri("urn:a<b", false);
    }

    #[test]
    fn names_and_scopes() {
        assert!(is_valid_name("speed"));
        assert!(is_valid_name("https://example.org/speed"));
        assert!(!is_valid_name("sp eed"));
        assert!(!is_valid_name("a(b"));
        assert!(!is_valid_name(""));
        assert!(!is_valid_name("@invalid"));
        assert!(is_valid_scope("/Madrid/Gardens"));
        assert!(!is_valid_scope("Madrid"));
        assert!(!is_valid_scope("/Madrid//x"));
    }

    #[test]
    fn tenants() {
        assert!(Tenant::parse("city-a").is_ok());
        assert!(Tenant::parse("").is_err());
        assert!(Tenant::parse("a b").is_err());
    }
}
