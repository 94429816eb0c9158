//! Media types: the essence of a `Content-Type` value, and media ranges
//! (`text/*`, `application/*+json`) to match it against.

use crate::BuildError;

/// The essence of a `Content-Type` value (`type/subtype`, lowercase,
/// parameters dropped), or `None` when it is not a media type.
///
/// ```
/// use towergate_policy::media_type::essence;
/// assert_eq!(essence("Application/JSON; charset=utf-8").as_deref(), Some("application/json"));
/// assert_eq!(essence("nonsense"), None);
/// ```
pub fn essence(value: &str) -> Option<String> {
    let main = value.split(';').next().unwrap_or_default().trim();
    let (ty, sub) = main.split_once('/')?;
    if !is_token(ty) || !is_token(sub) {
        return None;
    }
    Some(main.to_ascii_lowercase())
}

/// Whether a media type essence is JSON: `application/json` or any
/// `type/subtype+json`.
pub fn is_json(essence: &str) -> bool {
    essence == "application/json"
        || essence
            .split_once('/')
            .is_some_and(|(_, sub)| sub.ends_with("+json"))
}

/// A media range: an exact type (`application/json`), all subtypes of a type
/// (`text/*`), or all subtypes of a type with a structured-syntax suffix
/// (`application/*+json`). Matching ignores case and parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaRange {
    ty: String,
    sub: SubRange,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum SubRange {
    Exact(String),
    Any,
    Suffix(String),
}

// === impl MediaRange ===

impl MediaRange {
    /// Parses `type/subtype`, `type/*` or `type/*+suffix`.
    ///
    /// ```
    /// use towergate_policy::media_type::MediaRange;
    /// let r = MediaRange::parse("application/*+json").unwrap();
    /// assert!(r.matches("application/problem+json; charset=utf-8"));
    /// assert!(!r.matches("application/json"));
    /// assert!(MediaRange::parse("*/*").is_err());
    /// ```
    pub fn parse(value: &str) -> Result<Self, BuildError> {
        let err = || BuildError::InvalidMediaType {
            value: value.to_owned(),
        };
        let lower = value.trim().to_ascii_lowercase();
        let (ty, sub) = lower.split_once('/').ok_or_else(err)?;
        if !is_token(ty) || ty == "*" {
            return Err(err());
        }
        let sub = if sub == "*" {
            SubRange::Any
        } else if let Some(suffix) = sub.strip_prefix("*+") {
            if !is_token(suffix) || suffix.contains('*') {
                return Err(err());
            }
            SubRange::Suffix(suffix.to_owned())
        } else if is_token(sub) && !sub.contains('*') {
            SubRange::Exact(sub.to_owned())
        } else {
            return Err(err());
        };
        Ok(Self {
            ty: ty.to_owned(),
            sub,
        })
    }

    /// Whether a `Content-Type` value (or essence) falls in this range.
    pub fn matches(&self, content_type: &str) -> bool {
        let Some(essence) = essence(content_type) else {
            return false;
        };
        let Some((ty, sub)) = essence.split_once('/') else {
            return false;
        };
        if ty != self.ty {
            return false;
        }
        match &self.sub {
            SubRange::Exact(s) => s == sub,
            SubRange::Any => true,
            SubRange::Suffix(suffix) => sub
                .strip_suffix(suffix.as_str())
                .and_then(|rest| rest.strip_suffix('+'))
                .is_some_and(|rest| !rest.is_empty()),
        }
    }
}

impl std::fmt::Display for MediaRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.sub {
            SubRange::Exact(s) => write!(f, "{}/{}", self.ty, s),
            SubRange::Any => write!(f, "{}/*", self.ty),
            SubRange::Suffix(s) => write!(f, "{}/*+{}", self.ty, s),
        }
    }
}

/// RFC 9110 `token`.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn essence_drops_parameters_and_case() {
        assert_eq!(
            essence(" Text/HTML ;charset=utf-8").as_deref(),
            Some("text/html")
        );
        assert_eq!(
            essence("application/json").as_deref(),
            Some("application/json")
        );
        assert_eq!(essence(""), None);
        assert_eq!(essence("text"), None);
        assert_eq!(essence("text/"), None);
        assert_eq!(essence("a b/c"), None);
    }

    #[test]
    fn json_types() {
        assert!(is_json("application/json"));
        assert!(is_json("application/merge-patch+json"));
        assert!(is_json("application/vnd.api+json"));
        assert!(!is_json("application/jsonx"));
        assert!(!is_json("text/plain"));
    }

    #[test]
    fn ranges() {
        let text = MediaRange::parse("text/*").unwrap();
        assert!(text.matches("text/plain; charset=utf-8"));
        assert!(text.matches("TEXT/CSV"));
        assert!(!text.matches("application/text"));
        let exact = MediaRange::parse("Application/JSON").unwrap();
        assert!(exact.matches("application/json;charset=utf-8"));
        assert!(!exact.matches("application/json-seq"));
        let xml = MediaRange::parse("application/*+xml").unwrap();
        assert!(xml.matches("application/atom+xml"));
        assert!(!xml.matches("application/+xml"));
        assert!(!xml.matches("application/xml"));
        assert_eq!(xml.to_string(), "application/*+xml");
        for bad in ["", "text", "*/*", "text/a*", "text/*+", "a b/c"] {
            assert!(MediaRange::parse(bad).is_err(), "{bad:?}");
        }
    }
}
