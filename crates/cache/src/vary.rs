//! `Vary` (RFC 9111 §4.1): the secondary key that selects one stored
//! response among those of a primary key.

use std::sync::Arc;

use http::header::VARY;
use http::{HeaderMap, HeaderName};

use crate::key::push_escaped;

/// What a response's `Vary` says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Vary {
    /// `Vary: *`: the response can never be selected, so it is not stored.
    Star,
    /// The request fields that select it, lowercased, sorted and
    /// deduplicated (empty: no `Vary`).
    Fields(Arc<[HeaderName]>),
}

impl Vary {
    /// Parses every `Vary` field line of a response.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Self {
        let mut names: Vec<HeaderName> = Vec::new();
        for value in headers.get_all(VARY) {
            let Ok(s) = value.to_str() else {
                // A Vary we cannot read could name anything.
                return Self::Star;
            };
            for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                if name == "*" {
                    return Self::Star;
                }
                match HeaderName::from_bytes(name.as_bytes()) {
                    Ok(n) => names.push(n),
                    Err(_) => return Self::Star,
                }
            }
        }
        names.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
        names.dedup();
        Self::Fields(names.into())
    }
}

/// The secondary key of a request for the fields `names`: each field's
/// value normalised (field lines combined, whitespace around commas
/// removed, §4.1), absent fields marked as absent.
pub(crate) fn secondary_key(names: &[HeaderName], headers: &HeaderMap) -> String {
    let mut out = String::new();
    for name in names {
        out.push_str("|v:");
        out.push_str(name.as_str());
        let mut values = headers.get_all(name).iter().peekable();
        if values.peek().is_none() {
            continue;
        }
        out.push('=');
        let mut first = true;
        for value in values {
            let value = String::from_utf8_lossy(value.as_bytes());
            for member in value.split(',') {
                if !first {
                    out.push(',');
                }
                first = false;
                push_escaped(&mut out, member.trim(), true);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn names(pairs: &[(&'static str, &'static str)]) -> Arc<[HeaderName]> {
        match Vary::from_headers(&h(pairs)) {
            Vary::Fields(n) => n,
            Vary::Star => panic!("star"),
        }
    }

    #[test]
    fn parsing() {
        assert_eq!(names(&[]).len(), 0);
        let n = names(&[("vary", "Foo, bar"), ("vary", "BAZ, foo")]);
        let n: Vec<&str> = n.iter().map(HeaderName::as_str).collect();
        assert_eq!(n, ["bar", "baz", "foo"]);
        assert_eq!(Vary::from_headers(&h(&[("vary", "foo, *")])), Vary::Star);
        assert_eq!(Vary::from_headers(&h(&[("vary", "*")])), Vary::Star);
    }

    #[test]
    fn matching() {
        let n = names(&[("vary", "Accept-Language, Foo")]);
        let en = secondary_key(&n, &h(&[("accept-language", "en")]));
        let fr = secondary_key(&n, &h(&[("accept-language", "fr")]));
        assert_ne!(en, fr);
        // Headers not named in Vary do not matter.
        assert_eq!(
            en,
            secondary_key(&n, &h(&[("accept-language", "en"), ("other", "1")]))
        );
        // Absent differs from empty.
        assert_ne!(
            secondary_key(&n, &h(&[])),
            secondary_key(&n, &h(&[("foo", "")]))
        );
    }

    #[test]
    fn normalisation() {
        let n = names(&[("vary", "Foo")]);
        let a = secondary_key(&n, &h(&[("foo", "1,2")]));
        assert_eq!(a, secondary_key(&n, &h(&[("foo", " 1, 2 ")])));
        assert_eq!(a, secondary_key(&n, &h(&[("foo", "1"), ("foo", "2")])));
        assert_ne!(a, secondary_key(&n, &h(&[("foo", "2, 1")])));
    }
}
