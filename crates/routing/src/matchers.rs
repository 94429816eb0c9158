//! Host, header and query predicates, compiled once at build time.

use std::borrow::Cow;

use http::{HeaderMap, HeaderName, HeaderValue};
use regex::Regex;

use crate::error::BuildErrorKind;
use crate::percent::decode_lossy;

/// A host pattern: `api.example.com` or `*.example.com`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum HostPattern {
    Exact(Box<str>),
    /// `*.example.com`, stored as `.example.com`: any subdomain at any depth,
    /// never `example.com` itself.
    Wildcard(Box<str>),
}

/// How a header value or query parameter is tested.
#[derive(Clone, Debug)]
pub(crate) enum ValueTest {
    Equals(Box<str>),
    Present,
    /// Anchored: the whole value must match.
    Regex(Regex),
}

#[derive(Clone, Debug)]
pub(crate) struct HeaderMatcher {
    name: HeaderName,
    test: ValueTest,
}

#[derive(Clone, Debug)]
pub(crate) struct QueryMatcher {
    name: Box<str>,
    test: ValueTest,
}

/// Decoded query pairs, parsed at most once per request and only when a
/// candidate route has query matchers.
pub(crate) type QueryPairs<'a> = Vec<(Cow<'a, str>, Cow<'a, str>)>;

/// How a route says what a value must be, before compilation.
#[derive(Clone, Debug)]
pub(crate) enum ValueSpec {
    Equals(String),
    Present,
    Regex(String),
}

// === impl HostPattern ===

impl HostPattern {
    pub(crate) fn parse(pattern: &str) -> Result<Self, BuildErrorKind> {
        let invalid = |reason| BuildErrorKind::InvalidHost {
            pattern: pattern.to_owned(),
            reason,
        };
        let lower = pattern.to_ascii_lowercase();
        let host = lower.strip_suffix('.').unwrap_or(&lower);
        if let Some(domain) = host.strip_prefix("*.") {
            check_hostname(domain).map_err(invalid)?;
            return Ok(Self::Wildcard(format!(".{domain}").into()));
        }
        if host.contains('*') {
            return Err(invalid(
                "`*` is only allowed as the whole first label, as in `*.example.com`",
            ));
        }
        check_hostname(host).map_err(invalid)?;
        Ok(Self::Exact(host.into()))
    }

    /// `host` is already normalised (see [`normalize_host`]).
    pub(crate) fn matches(&self, host: &str) -> bool {
        match self {
            Self::Exact(h) => **h == *host,
            Self::Wildcard(suffix) => host.len() > suffix.len() && host.ends_with(&**suffix),
        }
    }

    /// Exact hosts first, then wildcards with the longest suffix first.
    pub(crate) fn rank_key(this: Option<&Self>) -> (u8, std::cmp::Reverse<usize>) {
        match this {
            Some(Self::Exact(_)) => (0, std::cmp::Reverse(0)),
            Some(Self::Wildcard(suffix)) => (1, std::cmp::Reverse(suffix.len())),
            None => (2, std::cmp::Reverse(0)),
        }
    }
}

fn check_hostname(host: &str) -> Result<(), &'static str> {
    if host.is_empty() {
        return Err("empty host");
    }
    if let Some(inner) = host.strip_prefix('[') {
        // An IPv6 literal, compared as written.
        let ok = inner.strip_suffix(']').is_some_and(|a| {
            !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        });
        return if ok {
            Ok(())
        } else {
            Err("malformed IPv6 literal")
        };
    }
    if host.contains(':') {
        return Err("a host pattern has no port: ports are ignored when matching");
    }
    for label in host.split('.') {
        if label.is_empty() {
            return Err("empty label");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("a label is made of letters, digits, `-` and `_`");
        }
    }
    Ok(())
}

/// Lower-cases a `Host` value, drops its port and a trailing dot, so that
/// `API.example.com.:8443` matches `api.example.com`.
pub(crate) fn normalize_host(raw: &str) -> Cow<'_, str> {
    let raw = raw.trim();
    let host = if raw.starts_with('[') {
        match raw.find(']') {
            Some(end) => raw.get(..=end).unwrap_or(raw),
            None => raw,
        }
    } else {
        raw.split(':').next().unwrap_or(raw)
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

// === impl ValueTest ===

impl ValueTest {
    fn compile(spec: &ValueSpec, target: impl FnOnce() -> String) -> Result<Self, BuildErrorKind> {
        Ok(match spec {
            ValueSpec::Equals(v) => Self::Equals(v.as_str().into()),
            ValueSpec::Present => Self::Present,
            ValueSpec::Regex(re) => Self::Regex(compile_anchored(re, target)?),
        })
    }

    fn matches_str(&self, value: &str) -> bool {
        match self {
            Self::Equals(want) => **want == *value,
            Self::Present => true,
            Self::Regex(re) => re.is_match(value),
        }
    }
}

/// Compiles `^(?:re)$`. The pattern is first compiled alone, so that one
/// like `a)|(b` cannot break out of the group and lose the anchors.
fn compile_anchored(re: &str, target: impl FnOnce() -> String) -> Result<Regex, BuildErrorKind> {
    Regex::new(re)
        .and_then(|_| Regex::new(&format!("^(?:{re})$")))
        .map_err(|source| BuildErrorKind::InvalidRegex {
            target: target(),
            pattern: re.to_owned(),
            source,
        })
}

// === impl HeaderMatcher ===

impl HeaderMatcher {
    pub(crate) fn compile(name: &str, spec: &ValueSpec) -> Result<Self, BuildErrorKind> {
        let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            BuildErrorKind::InvalidHeaderName {
                name: name.to_owned(),
            }
        })?;
        if let ValueSpec::Equals(v) = spec {
            // A value no request can carry would make the route unreachable.
            HeaderValue::from_str(v).map_err(|_| BuildErrorKind::InvalidHeaderValue {
                name: name.to_owned(),
            })?;
        }
        let test = ValueTest::compile(spec, || format!("header `{name}`"))?;
        Ok(Self { name: header, test })
    }

    /// Any of the header's values passing the test is enough.
    pub(crate) fn matches(&self, headers: &HeaderMap) -> bool {
        headers
            .get_all(&self.name)
            .iter()
            .any(|v| match &self.test {
                ValueTest::Equals(want) => v.as_bytes() == want.as_bytes(),
                ValueTest::Present => true,
                ValueTest::Regex(re) => {
                    std::str::from_utf8(v.as_bytes()).is_ok_and(|s| re.is_match(s))
                }
            })
    }
}

// === impl QueryMatcher ===

impl QueryMatcher {
    pub(crate) fn compile(name: &str, spec: &ValueSpec) -> Result<Self, BuildErrorKind> {
        if name.is_empty() {
            return Err(BuildErrorKind::EmptyQueryName);
        }
        let test = ValueTest::compile(spec, || format!("query parameter `{name}`"))?;
        Ok(Self {
            name: name.into(),
            test,
        })
    }

    /// Any occurrence of the parameter passing the test is enough.
    pub(crate) fn matches(&self, pairs: &QueryPairs<'_>) -> bool {
        pairs
            .iter()
            .any(|(name, value)| **name == *self.name && self.test.matches_str(value))
    }
}

/// Splits a query string into decoded pairs (`+` is a space, a pair without
/// `=` has an empty value).
pub(crate) fn parse_query(query: &str) -> QueryPairs<'_> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode_lossy(name, true), decode_lossy(value, true))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns() {
        let exact = HostPattern::parse("API.Example.com.").unwrap();
        assert_eq!(exact, HostPattern::Exact("api.example.com".into()));
        assert!(exact.matches("api.example.com"));
        assert!(!exact.matches("x.api.example.com"));

        let wild = HostPattern::parse("*.example.com").unwrap();
        assert!(wild.matches("a.example.com"));
        assert!(wild.matches("a.b.example.com"));
        assert!(!wild.matches("example.com"));
        assert!(!wild.matches("badexample.com"));

        for bad in [
            "",
            "*",
            "a.*.com",
            "*x.example.com",
            "example.com:80",
            "a..b",
            "a b",
            "[zz]",
        ] {
            assert!(
                matches!(
                    HostPattern::parse(bad),
                    Err(BuildErrorKind::InvalidHost { .. })
                ),
                "{bad:?}"
            );
        }
        assert!(HostPattern::parse("[::1]").unwrap().matches("[::1]"));
    }

    #[test]
    fn request_hosts_are_normalised() {
        assert_eq!(normalize_host("API.Example.COM:8443"), "api.example.com");
        assert_eq!(normalize_host("example.com."), "example.com");
        assert_eq!(normalize_host("example.com.:80"), "example.com");
        assert_eq!(normalize_host("[::1]:8080"), "[::1]");
        assert!(matches!(normalize_host("example.com"), Cow::Borrowed(_)));
    }

    #[test]
    fn header_matchers() {
        let mut h = HeaderMap::new();
        h.append("x-version", HeaderValue::from_static("1"));
        h.append("x-version", HeaderValue::from_static("2"));
        h.insert("x-tenant", HeaderValue::from_static("acme-42"));

        let eq = HeaderMatcher::compile("X-Version", &ValueSpec::Equals("2".into())).unwrap();
        assert!(eq.matches(&h), "any value of a repeated header");
        let present = HeaderMatcher::compile("x-tenant", &ValueSpec::Present).unwrap();
        assert!(present.matches(&h));
        let absent = HeaderMatcher::compile("x-nope", &ValueSpec::Present).unwrap();
        assert!(!absent.matches(&h));
        let re = HeaderMatcher::compile("x-tenant", &ValueSpec::Regex("acme-\\d+".into())).unwrap();
        assert!(re.matches(&h));
        let partial = HeaderMatcher::compile("x-tenant", &ValueSpec::Regex("acme".into())).unwrap();
        assert!(!partial.matches(&h), "regexes are anchored");

        assert!(matches!(
            HeaderMatcher::compile("bad header", &ValueSpec::Present),
            Err(BuildErrorKind::InvalidHeaderName { .. })
        ));
        assert!(matches!(
            HeaderMatcher::compile("x", &ValueSpec::Equals("a\nb".into())),
            Err(BuildErrorKind::InvalidHeaderValue { .. })
        ));
        assert!(matches!(
            HeaderMatcher::compile("x", &ValueSpec::Regex("(".into())),
            Err(BuildErrorKind::InvalidRegex { .. })
        ));
    }

    #[test]
    fn anchors_cannot_be_escaped() {
        assert!(matches!(
            HeaderMatcher::compile("x", &ValueSpec::Regex("a)|(b".into())),
            Err(BuildErrorKind::InvalidRegex { .. })
        ));
        let re = compile_anchored("a|b", String::new).unwrap();
        assert!(re.is_match("a") && re.is_match("b") && !re.is_match("ab"));
    }

    #[test]
    fn query_matchers() {
        let pairs = parse_query("q=hello+world&debug&tag=a&tag=b%26c&&x=%zz");
        assert_eq!(pairs.len(), 5);
        let check = |name: &str, spec: ValueSpec| {
            QueryMatcher::compile(name, &spec).unwrap().matches(&pairs)
        };
        assert!(check("q", ValueSpec::Equals("hello world".into())));
        assert!(check("debug", ValueSpec::Present));
        assert!(check("debug", ValueSpec::Equals(String::new())));
        assert!(check("tag", ValueSpec::Equals("b&c".into())));
        assert!(check("tag", ValueSpec::Regex("[a-z]".into())));
        assert!(check("x", ValueSpec::Equals("%zz".into())));
        assert!(!check("missing", ValueSpec::Present));
        assert!(!check("q", ValueSpec::Regex("hello".into())));
        assert!(matches!(
            QueryMatcher::compile("", &ValueSpec::Present),
            Err(BuildErrorKind::EmptyQueryName)
        ));
    }
}
