//! `Cache-Control` parsing (RFC 9111 §5.2), request and response
//! directives alike.
//!
//! The grammar is `#( token [ "=" ( token / quoted-string ) ] )`. The parser
//! is strict where the HTTP WG cache tests demand it and lenient elsewhere:
//!
//! - directive names are case-insensitive; unknown directives are ignored;
//! - a comma or `max-age=` inside a quoted string is part of the value, never
//!   a directive of its own;
//! - whitespace around `=` makes the directive invalid (ignored);
//! - a freshness directive with an invalid value (`max-age=a100`,
//!   `max-age=-1`, `max-age='1'`) counts as `0`: a response that tried to
//!   state a lifetime and failed must not be reused without validation;
//! - delta-seconds saturate at 2^31 (§1.2.2);
//! - with duplicates, the first occurrence wins (§4.2.1).

use http::HeaderMap;
use http::header::CACHE_CONTROL;

/// The largest delta-seconds value a cache needs to represent (§1.2.2).
pub(crate) const DELTA_SECONDS_MAX: u64 = 2_147_483_648;

/// The directives of one message's `Cache-Control` field lines.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct CacheControl {
    /// `max-age=N` (response: lifetime; request: the oldest acceptable age).
    pub(crate) max_age: Option<u64>,
    /// `s-maxage=N`: the lifetime for shared caches; implies
    /// `proxy-revalidate`.
    pub(crate) s_maxage: Option<u64>,
    /// `no-store`.
    pub(crate) no_store: bool,
    /// `no-cache` (the qualified form `no-cache="field"` counts as
    /// unqualified, which RFC 9111 §5.2.2.4 permits).
    pub(crate) no_cache: bool,
    /// `private` (qualified forms count as unqualified, §5.2.2.7).
    pub(crate) private: bool,
    /// `public`.
    pub(crate) public: bool,
    /// `must-revalidate`.
    pub(crate) must_revalidate: bool,
    /// `proxy-revalidate`.
    pub(crate) proxy_revalidate: bool,
    /// `no-transform`.
    pub(crate) no_transform: bool,
    /// `immutable` (RFC 8246).
    pub(crate) immutable: bool,
    /// `stale-while-revalidate=N` (RFC 5861).
    pub(crate) stale_while_revalidate: Option<u64>,
    /// `stale-if-error=N` (RFC 5861), on a response or a request.
    pub(crate) stale_if_error: Option<u64>,
    /// Request `max-stale[=N]`: `Some(None)` accepts any staleness.
    pub(crate) max_stale: Option<Option<u64>>,
    /// Request `min-fresh=N`.
    pub(crate) min_fresh: Option<u64>,
    /// Request `only-if-cached`.
    pub(crate) only_if_cached: bool,
}

// === impl CacheControl ===

impl CacheControl {
    /// Parses every `Cache-Control` field line of `headers`.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Self {
        let mut cc = Self::default();
        for value in headers.get_all(CACHE_CONTROL) {
            // A byte that is not text (in a quoted comment, say) must not
            // hide the line's `private` or `no-store`: read what is text.
            match value.to_str() {
                Ok(s) => cc.parse_into(s),
                Err(_) => cc.parse_into(&String::from_utf8_lossy(value.as_bytes())),
            }
        }
        cc
    }

    /// Parses request directives. `Pragma` is ignored: RFC 9111 §5.4
    /// deprecates it (the cache tests' `pragma-request-no-cache` check
    /// records that caches reuse the stored response).
    pub(crate) fn from_request_headers(headers: &HeaderMap) -> Self {
        Self::from_headers(headers)
    }

    /// Parses one field value.
    #[cfg(test)]
    pub(crate) fn parse(value: &str) -> Self {
        let mut cc = Self::default();
        cc.parse_into(value);
        cc
    }

    fn parse_into(&mut self, value: &str) {
        for (name, arg) in Directives::new(value) {
            let name = name.to_ascii_lowercase();
            match name.as_str() {
                "max-age" => set_first(&mut self.max_age, delta(arg)),
                "s-maxage" => set_first(&mut self.s_maxage, delta(arg)),
                "stale-while-revalidate" => {
                    set_first(&mut self.stale_while_revalidate, delta(arg));
                }
                "stale-if-error" => set_first(&mut self.stale_if_error, delta(arg)),
                "min-fresh" => set_first(&mut self.min_fresh, delta(arg)),
                // `max-stale` without a value accepts any staleness; with an
                // invalid one, none.
                "max-stale" if self.max_stale.is_none() => {
                    self.max_stale = Some(arg.map(|a| parse_delta(&a).unwrap_or(0)));
                }
                "no-store" => self.no_store = true,
                "no-cache" => self.no_cache = true,
                "private" => self.private = true,
                "public" => self.public = true,
                "must-revalidate" => self.must_revalidate = true,
                "proxy-revalidate" => self.proxy_revalidate = true,
                "no-transform" => self.no_transform = true,
                "immutable" => self.immutable = true,
                "only-if-cached" => self.only_if_cached = true,
                _ => {}
            }
        }
    }

    /// Whether a shared cache may serve this response stale (§4.2.4):
    /// not with `must-revalidate`, `proxy-revalidate`, `s-maxage` or
    /// `no-cache`.
    pub(crate) fn allows_stale(&self) -> bool {
        !(self.must_revalidate || self.proxy_revalidate || self.s_maxage.is_some() || self.no_cache)
    }
}

/// A present-but-invalid delta counts as 0; an absent value (`max-age`
/// alone) too.
fn delta(arg: Option<String>) -> u64 {
    arg.as_deref().and_then(parse_delta).unwrap_or(0)
}

fn set_first(slot: &mut Option<u64>, value: u64) {
    if slot.is_none() {
        *slot = Some(value);
    }
}

/// `1*DIGIT`, saturating at [`DELTA_SECONDS_MAX`].
pub(crate) fn parse_delta(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut n: u64 = 0;
    for b in s.bytes() {
        n = n
            .saturating_mul(10)
            .saturating_add(u64::from(b - b'0'))
            .min(DELTA_SECONDS_MAX);
    }
    Some(n)
}

fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// An iterator over `(name, Option<value>)`, quoted values unescaped;
/// malformed members are skipped.
struct Directives<'a> {
    rest: &'a str,
}

impl<'a> Directives<'a> {
    fn new(value: &'a str) -> Self {
        Self { rest: value }
    }

    /// Splits off one list member, honouring quoted strings; returns the raw
    /// member and whether its quoted strings were well formed.
    fn next_member(&mut self) -> Option<&'a str> {
        if self.rest.is_empty() {
            return None;
        }
        let mut in_quotes = false;
        let mut escaped = false;
        for (i, c) in self.rest.char_indices() {
            if in_quotes {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == '"' {
                    in_quotes = false;
                }
            } else if c == '"' {
                in_quotes = true;
            } else if c == ',' {
                let member = &self.rest[..i];
                self.rest = &self.rest[i + 1..];
                return Some(member);
            }
        }
        let member = self.rest;
        self.rest = "";
        Some(member)
    }
}

impl Iterator for Directives<'_> {
    type Item = (String, Option<String>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let member = self.next_member()?.trim_matches([' ', '\t']);
            if member.is_empty() {
                continue;
            }
            let (name, arg) = match member.split_once('=') {
                None => (member, None),
                Some((name, arg)) => (name, Some(arg)),
            };
            if name.is_empty() || !name.chars().all(is_tchar) {
                // Malformed (`no-cache; no-store`): skipped, except that a
                // member naming `no-store` or `private` fails closed, so
                // that a typo cannot make a response shared.
                match fail_closed(member) {
                    Some(closed) => return Some(closed),
                    None => continue,
                }
            }
            let arg = match arg {
                None => None,
                Some(raw) => match unquote(raw) {
                    Some(v) => Some(v),
                    // `max-age=60; no-store`: the same.
                    None => match fail_closed(member) {
                        Some(closed) => return Some(closed),
                        None => continue,
                    },
                },
            };
            return Some((name.to_owned(), arg));
        }
    }
}

/// The directive a malformed member stands for when it names `no-store`
/// or `private`.
fn fail_closed(member: &str) -> Option<(String, Option<String>)> {
    let lower = member.to_ascii_lowercase();
    ["no-store", "private"]
        .into_iter()
        .find(|closed| lower.contains(closed))
        .map(|closed| (closed.to_owned(), None))
}

/// A token or a quoted-string (unescaped); `None` when neither.
fn unquote(raw: &str) -> Option<String> {
    if let Some(inner) = raw.strip_prefix('"') {
        let mut out = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => out.push(chars.next()?),
                '"' => {
                    // Nothing may follow the closing quote.
                    return chars.next().is_none().then_some(out);
                }
                c => out.push(c),
            }
        }
        None
    } else if !raw.is_empty() && raw.chars().all(is_tchar) {
        Some(raw.to_owned())
    } else if raw.is_empty() {
        Some(String::new())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn malformed_members_fail_closed() {
        let cc = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(http::header::CACHE_CONTROL, HeaderValue::from_static(v));
            CacheControl::from_headers(&h)
        };
        let c = cc("max-age=60, no-cache; no-store");
        assert!(c.no_store && c.max_age == Some(60));
        assert!(cc("public; Private").private);
        let c = cc("max-age=60, x;y");
        assert!(!c.no_store && !c.private);
        assert!(cc("max-age=60; no-store").no_store);
        assert!(cc("s-maxage=600;private").private);
    }

    #[test]
    fn simple_directives() {
        let cc = CacheControl::parse("public, max-age=60, s-maxage=120, must-revalidate");
        assert!(cc.public);
        assert_eq!(cc.max_age, Some(60));
        assert_eq!(cc.s_maxage, Some(120));
        assert!(cc.must_revalidate);
        assert!(!cc.no_store);
    }

    #[test]
    fn case_insensitive_names() {
        let cc = CacheControl::parse("MaX-AgE=3600, No-StOrE");
        assert_eq!(cc.max_age, Some(3600));
        assert!(cc.no_store);
    }

    #[test]
    fn quoted_values() {
        assert_eq!(CacheControl::parse("max-age=\"3600\"").max_age, Some(3600));
        // A single-quoted value is not a quoted-string: invalid, so 0.
        assert_eq!(CacheControl::parse("max-age='3600'").max_age, Some(0));
        let cc = CacheControl::parse("no-cache=\"set-cookie, x-foo\", max-age=5");
        assert!(cc.no_cache);
        assert_eq!(cc.max_age, Some(5));
    }

    #[test]
    fn max_age_inside_quotes_is_not_a_directive() {
        let cc = CacheControl::parse("extension=\"max-age=100\", max-age=1");
        assert_eq!(cc.max_age, Some(1));
        let cc = CacheControl::parse("max-age=1, extension=\"max-age=100\"");
        assert_eq!(cc.max_age, Some(1));
        let cc = CacheControl::parse("ext=\"a, max-age=100, \\\"b\", max-age=\"1\"");
        assert_eq!(cc.max_age, Some(1));
    }

    #[test]
    fn unknown_directives_are_ignored() {
        let cc = CacheControl::parse("foobar, x-ext=1, max-age=3600");
        assert_eq!(cc.max_age, Some(3600));
        assert_eq!(CacheControl::parse("foo=\"unterminated").max_age, None);
    }

    #[test]
    fn duplicates_first_wins() {
        let cc = CacheControl::parse("max-age=10, max-age=20");
        assert_eq!(cc.max_age, Some(10));
        let mut headers = HeaderMap::new();
        headers.append(CACHE_CONTROL, HeaderValue::from_static("s-maxage=3600"));
        headers.append(
            CACHE_CONTROL,
            HeaderValue::from_static("max-age=1, s-maxage=1"),
        );
        let cc = CacheControl::from_headers(&headers);
        assert_eq!(cc.s_maxage, Some(3600));
        assert_eq!(cc.max_age, Some(1));
    }

    #[test]
    fn a_line_with_a_byte_that_is_not_text_still_counts() {
        let mut headers = HeaderMap::new();
        headers.append(
            CACHE_CONTROL,
            HeaderValue::from_bytes(b"private, x-note=\"na\xefve\"").unwrap(),
        );
        headers.append(CACHE_CONTROL, HeaderValue::from_static("max-age=60"));
        let cc = CacheControl::from_headers(&headers);
        assert!(cc.private);
        assert_eq!(cc.max_age, Some(60));
    }

    #[test]
    fn invalid_values() {
        assert_eq!(CacheControl::parse("max-age=a100").max_age, Some(0));
        assert_eq!(CacheControl::parse("max-age=100a").max_age, Some(0));
        assert_eq!(CacheControl::parse("max-age=-100").max_age, Some(0));
        // Whitespace around `=` invalidates the whole directive.
        assert_eq!(CacheControl::parse("max-age =100").max_age, None);
        assert_eq!(CacheControl::parse("max-age= 100").max_age, None);
    }

    #[test]
    fn large_values_saturate() {
        assert_eq!(
            CacheControl::parse("max-age=99999999999").max_age,
            Some(DELTA_SECONDS_MAX)
        );
        assert_eq!(
            CacheControl::parse("max-age=2147483648").max_age,
            Some(DELTA_SECONDS_MAX)
        );
    }

    #[test]
    fn request_directives() {
        let cc = CacheControl::parse("max-stale, min-fresh=5, only-if-cached");
        assert_eq!(cc.max_stale, Some(None));
        assert_eq!(cc.min_fresh, Some(5));
        assert!(cc.only_if_cached);
        assert_eq!(
            CacheControl::parse("max-stale=30").max_stale,
            Some(Some(30))
        );
    }

    #[test]
    fn pragma_is_ignored() {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::PRAGMA, HeaderValue::from_static("no-cache"));
        assert!(!CacheControl::from_request_headers(&headers).no_cache);
    }

    #[test]
    fn stale_permission() {
        assert!(CacheControl::parse("max-age=1").allows_stale());
        for cc in [
            "must-revalidate",
            "proxy-revalidate",
            "s-maxage=1",
            "no-cache",
        ] {
            assert!(!CacheControl::parse(cc).allows_stale(), "{cc}");
        }
    }
}
