//! Entity tags and the evaluation of a client's conditional request
//! against a stored response (RFC 9110 §8.8.3, §13.1.2, §13.1.3).

use std::time::SystemTime;

use http::header::{ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH};
use http::{HeaderMap, Method};

use crate::freshness::{http_date, last_modified};

/// An entity tag: `"opaque"` or `W/"opaque"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ETag<'a> {
    pub(crate) weak: bool,
    /// The opaque tag, quotes included.
    pub(crate) tag: &'a str,
}

impl<'a> ETag<'a> {
    /// Parses one entity tag; `None` when malformed.
    pub(crate) fn parse(s: &'a str) -> Option<Self> {
        let s = s.trim();
        let (weak, tag) = match s.strip_prefix("W/") {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let valid = tag.len() >= 2
            && tag.starts_with('"')
            && tag.ends_with('"')
            && !tag[1..tag.len() - 1].contains('"');
        valid.then_some(Self { weak, tag })
    }

    /// Weak comparison: the opaque tags match, weakness ignored.
    pub(crate) fn weak_eq(&self, other: &ETag<'_>) -> bool {
        self.tag == other.tag
    }

    /// Strong comparison: both strong and the tags match.
    pub(crate) fn strong_eq(&self, other: &ETag<'_>) -> bool {
        !self.weak && !other.weak && self.tag == other.tag
    }
}

/// Whether `If-None-Match` (a list of entity tags or `*`) matches `etag`
/// by weak comparison (§13.1.2). `stored_exists` is true for any stored
/// response (`*` matches it).
pub(crate) fn none_match_matches(header: &str, etag: Option<&str>) -> bool {
    if header.trim() == "*" {
        return true;
    }
    let Some(stored) = etag.and_then(ETag::parse) else {
        return false;
    };
    split_tags(header).any(|t| ETag::parse(t).is_some_and(|t| t.weak_eq(&stored)))
}

/// Splits a list of entity tags on the commas between them (a comma may
/// appear inside a tag).
fn split_tags(s: &str) -> impl Iterator<Item = &str> {
    let mut rest = s;
    std::iter::from_fn(move || {
        rest = rest.trim_start_matches([',', ' ', '\t']);
        if rest.is_empty() {
            return None;
        }
        let start = rest.find('"')?;
        let end = rest[start + 1..].find('"')? + start + 2;
        let tag = &rest[..end];
        rest = &rest[end..];
        Some(tag)
    })
}

/// Whether the client's conditional GET/HEAD is satisfied by the stored
/// response, so the cache answers `304 Not Modified` (§13.2.2, RFC 9111
/// §4.3.2): `If-None-Match` takes precedence over `If-Modified-Since`.
pub(crate) fn not_modified(method: &Method, request: &HeaderMap, stored: &HeaderMap) -> bool {
    if method != Method::GET && method != Method::HEAD {
        return false;
    }
    if let Some(inm) = request.get(IF_NONE_MATCH) {
        let Ok(inm) = inm.to_str() else { return false };
        let etag = stored.get(ETAG).and_then(|v| v.to_str().ok());
        return none_match_matches(inm, etag);
    }
    if let Some(since) = http_date(request, IF_MODIFIED_SINCE) {
        return last_modified(stored).is_some_and(|lm: SystemTime| lm <= since);
    }
    false
}

/// Whether the request carries a precondition the cache must evaluate.
pub(crate) fn is_conditional(request: &HeaderMap) -> bool {
    request.contains_key(IF_NONE_MATCH) || request.contains_key(IF_MODIFIED_SINCE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn etag_parsing() {
        assert_eq!(
            ETag::parse("W/\"abc\""),
            Some(ETag {
                weak: true,
                tag: "\"abc\""
            })
        );
        assert_eq!(ETag::parse("\"\"").map(|e| e.tag), Some("\"\""));
        assert_eq!(ETag::parse("abc"), None);
        assert_eq!(ETag::parse("w/\"abc\""), None);
        assert_eq!(ETag::parse("\"a\"b\""), None);
    }

    #[test]
    fn weak_and_strong_comparison() {
        // RFC 9110 §8.8.3.2 table.
        let w1 = ETag::parse("W/\"1\"").unwrap();
        let w2 = ETag::parse("W/\"2\"").unwrap();
        let s1 = ETag::parse("\"1\"").unwrap();
        assert!(!w1.strong_eq(&w1) && w1.weak_eq(&w1));
        assert!(!w1.strong_eq(&w2) && !w1.weak_eq(&w2));
        assert!(!w1.strong_eq(&s1) && w1.weak_eq(&s1));
        assert!(s1.strong_eq(&s1) && s1.weak_eq(&s1));
    }

    #[test]
    fn if_none_match_lists() {
        let stored = Some("\"abcdef\"");
        assert!(none_match_matches("\"abcdef\"", stored));
        assert!(none_match_matches("\"1234\", \"abcdef\", \"5678\"", stored));
        assert!(none_match_matches("W/\"abcdef\"", stored));
        assert!(none_match_matches("\"a,b\", \"abcdef\"", stored));
        assert!(!none_match_matches("\"1234\"", stored));
        assert!(none_match_matches("*", stored));
        assert!(none_match_matches("*", None));
        assert!(!none_match_matches("\"x\"", None));
    }

    #[test]
    fn not_modified_precedence() {
        let mut stored = HeaderMap::new();
        stored.insert(ETAG, HeaderValue::from_static("\"v1\""));
        stored.insert(
            "last-modified",
            HeaderValue::from_static("Mon, 01 Jan 2024 00:00:00 GMT"),
        );
        let mut req = HeaderMap::new();
        req.insert(
            IF_MODIFIED_SINCE,
            HeaderValue::from_static("Tue, 02 Jan 2024 00:00:00 GMT"),
        );
        assert!(not_modified(&Method::GET, &req, &stored));
        req.insert(
            IF_MODIFIED_SINCE,
            HeaderValue::from_static("Sun, 31 Dec 2023 00:00:00 GMT"),
        );
        assert!(!not_modified(&Method::GET, &req, &stored));
        // If-None-Match wins over If-Modified-Since.
        req.insert(IF_NONE_MATCH, HeaderValue::from_static("\"v1\""));
        assert!(not_modified(&Method::HEAD, &req, &stored));
        req.insert(IF_NONE_MATCH, HeaderValue::from_static("\"v2\""));
        req.insert(
            IF_MODIFIED_SINCE,
            HeaderValue::from_static("Tue, 02 Jan 2024 00:00:00 GMT"),
        );
        assert!(!not_modified(&Method::GET, &req, &stored));
        assert!(!not_modified(&Method::POST, &req, &stored));
    }
}
