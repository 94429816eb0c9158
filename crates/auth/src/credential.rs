//! Where a credential travels in a request, how it is read, and how it is
//! removed before forwarding.

use std::borrow::Cow;

use http::header::{AUTHORIZATION, COOKIE};
use http::request::Parts;
use http::{HeaderName, HeaderValue, Uri};

/// Where a token is read from.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenSource {
    /// `Authorization: Bearer <token>` (RFC 6750 §2.1).
    Bearer,
    /// The whole value of a header (`X-Api-Key: <key>`).
    Header(HeaderName),
    /// A cookie of that name.
    Cookie(String),
    /// A query parameter of that name (RFC 6750 §2.3 for tokens). Query
    /// strings end up in access logs: prefer a header.
    Query(String),
}

/// A credential that is present but cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unreadable;

// === impl TokenSource ===

impl TokenSource {
    /// The credential, `None` when absent. Query values are
    /// percent-decoded.
    ///
    /// A credential sent twice (two `Authorization` lines, two cookies or
    /// query parameters of the name) is unreadable: the gateway would check
    /// one, and an upstream that reads the other (PHP takes the last
    /// `?access_token=`) would trust a credential nobody checked.
    pub(crate) fn extract<'a>(&self, req: &'a Parts) -> Option<Result<Cow<'a, str>, Unreadable>> {
        match self {
            TokenSource::Bearer => {
                let mut values = req.headers.get_all(AUTHORIZATION).iter();
                let value = values.next()?;
                if values.next().is_some() {
                    return Some(Err(Unreadable));
                }
                let (scheme, rest) = split_scheme(value)?;
                if !scheme.eq_ignore_ascii_case("bearer") {
                    return None;
                }
                let token = rest.trim();
                // `memchr`: a JWT is hundreds of bytes, and `str::contains`
                // reads them a word at a time.
                if token.is_empty() || memchr::memchr(b' ', token.as_bytes()).is_some() {
                    return Some(Err(Unreadable));
                }
                Some(Ok(Cow::Borrowed(token)))
            }
            TokenSource::Header(name) => {
                let mut values = req.headers.get_all(name).iter();
                let value = values.next()?;
                if values.next().is_some() || underscore_spelling_present(&req.headers, name) {
                    return Some(Err(Unreadable));
                }
                Some(
                    value
                        .to_str()
                        .map_err(|_| Unreadable)
                        .map(str::trim)
                        .and_then(|s| if s.is_empty() { Err(Unreadable) } else { Ok(s) })
                        .map(Cow::Borrowed),
                )
            }
            TokenSource::Cookie(name) => {
                let mut found = None;
                for header in req.headers.get_all(COOKIE) {
                    let Ok(s) = header.to_str() else {
                        // A line that is not visible ASCII but names this
                        // cookie: another copy, which an upstream may read.
                        if names_cookie(header.as_bytes(), name) {
                            return Some(Err(Unreadable));
                        }
                        continue;
                    };
                    for pair in s.split(';') {
                        // Names compare trimmed, as servers read them
                        // (`session =x` is `session` to Django).
                        if let Some((k, v)) = pair.trim().split_once('=')
                            && k.trim() == name
                        {
                            if found.is_some() {
                                return Some(Err(Unreadable));
                            }
                            let v = v.trim_matches('"');
                            found = Some(if v.is_empty() {
                                Err(Unreadable)
                            } else {
                                Ok(Cow::Borrowed(v))
                            });
                        }
                    }
                }
                found
            }
            TokenSource::Query(name) => {
                let query = req.uri.query()?;
                let mut found = None;
                for (k, v) in form_urlencoded::parse(query.as_bytes()) {
                    if k == name.as_str() {
                        if found.is_some() {
                            return Some(Err(Unreadable));
                        }
                        found = Some(v);
                    } else if same_to_upstreams(&k, name) {
                        // `access.token` or `ACCESS_TOKEN` beside (or
                        // instead of) `access_token`: PHP reads the first
                        // as `access_token`, ASP.NET the second.
                        return Some(Err(Unreadable));
                    }
                }
                let v = found?;
                Some(if v.is_empty() { Err(Unreadable) } else { Ok(v) })
            }
        }
    }

    /// Removes the credential from the request: whatever is at its
    /// location, read or not, and every spelling an upstream takes for
    /// it.
    ///
    /// By location, not by what `extract` makes of it: a value `extract`
    /// calls absent may still be read by an upstream. `Bearer\t<token>`
    /// is no bearer token here, but Python's `split()` and Go's
    /// `strings.Fields` find one in it; `x_token` is not `X-Token` here,
    /// but PHP, WSGI and Rack read both as `HTTP_X_TOKEN`.
    pub(crate) fn strip(&self, req: &mut Parts) {
        match self {
            // Every `Authorization` value, whatever its scheme says.
            TokenSource::Bearer => {
                req.headers.remove(AUTHORIZATION);
            }
            TokenSource::Header(name) => strip_header(&mut req.headers, name),
            TokenSource::Cookie(name) => strip_cookie(req, name),
            TokenSource::Query(name) => strip_query(&mut req.uri, name),
        }
    }

    /// Whether the two read one credential in the same place, so that
    /// removing one would remove the other: `Bearer` and an
    /// `Authorization` header, a `Cookie` header and any cookie, header or
    /// query names that upstreams take for one another.
    pub(crate) fn shares_location(&self, other: &TokenSource) -> bool {
        use TokenSource::{Bearer, Cookie, Header, Query};
        let header = |s: &TokenSource| match s {
            Bearer => Some(AUTHORIZATION),
            Header(n) => Some(n.clone()),
            _ => None,
        };
        match (self, other) {
            (Query(a), Query(b)) => same_to_upstreams(a, b),
            (Cookie(a), Cookie(b)) => a.trim() == b.trim(),
            (Cookie(_), Header(h)) | (Header(h), Cookie(_)) => *h == COOKIE,
            _ => match (header(self), header(other)) {
                (Some(a), Some(b)) => same_header(a.as_str(), b.as_str()),
                _ => false,
            },
        }
    }
}

/// Whether two header names are one to CGI-style upstreams, which read
/// `_` as `-` (names are lowercase in a `HeaderMap`).
fn same_header(a: &str, b: &str) -> bool {
    let fold = |c: u8| if c == b'_' { b'-' } else { c };
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| fold(x) == fold(y))
}

/// Removes `name` and its spellings with `_` for `-`.
fn strip_header(headers: &mut http::HeaderMap, name: &HeaderName) {
    headers.remove(name);
    if !headers.keys().any(|k| k.as_str().contains('_')) {
        return;
    }
    let spellings: Vec<HeaderName> = headers
        .keys()
        .filter(|k| same_header(k.as_str(), name.as_str()))
        .cloned()
        .collect();
    for k in spellings {
        headers.remove(k);
    }
}

/// Whether `headers` has `name` spelt with `_` for `-` (`x_api_key` for
/// `x-api-key`), which CGI-style upstreams read as the same header.
fn underscore_spelling_present(headers: &http::HeaderMap, name: &HeaderName) -> bool {
    let name = name.as_str().as_bytes();
    if !name.contains(&b'-') {
        return false;
    }
    headers.keys().any(|k| {
        let k = k.as_str().as_bytes();
        k.len() == name.len()
            && k.contains(&b'_')
            && k.iter()
                .zip(name)
                .all(|(&a, &b)| a == b || (a == b'_' && b == b'-'))
    })
}

/// Whether two query parameter names are one to some upstream: PHP turns
/// `.`, spaces and `[` into `_`, ASP.NET ignores case.
fn same_to_upstreams(a: &str, b: &str) -> bool {
    let fold = |c: u8| match c {
        b'.' | b' ' | b'[' => b'_',
        c => c.to_ascii_lowercase(),
    };
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| fold(x) == fold(y))
}

/// `Scheme rest` of an Authorization value.
pub(crate) fn split_scheme(value: &HeaderValue) -> Option<(&str, &str)> {
    let s = value.to_str().ok()?;
    let s = s.trim_start();
    match s.split_once(' ') {
        Some((scheme, rest)) => Some((scheme, rest)),
        None => Some((s, "")),
    }
}

/// Whether a raw `Cookie` line has a pair named `name` (names trimmed).
fn names_cookie(line: &[u8], name: &str) -> bool {
    line.split(|&b| b == b';').any(|pair| {
        let key = pair.split(|&b| b == b'=').next().unwrap_or(pair);
        key.trim_ascii() == name.as_bytes()
    })
}

/// Rewrites the `Cookie` headers without the cookie `name`, as one line of
/// the other pairs joined by `; ` (lines that are not visible ASCII go).
fn strip_cookie(req: &mut Parts, name: &str) {
    // Rewriting joins the lines and respaces them: only when needed.
    if !req
        .headers
        .get_all(COOKIE)
        .iter()
        .any(|h| names_cookie(h.as_bytes(), name))
    {
        return;
    }
    let kept: Vec<String> = req
        .headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .flat_map(|s| s.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        // Names compare trimmed, as in `extract`.
        .filter(|pair| pair.split_once('=').map_or(*pair, |(k, _)| k).trim() != name)
        .map(str::to_owned)
        .collect();
    req.headers.remove(COOKIE);
    if !kept.is_empty()
        && let Ok(v) = HeaderValue::from_str(&kept.join("; "))
    {
        req.headers.insert(COOKIE, v);
    }
}

/// Drops every `name=...` pair from the query, and the pairs some upstream
/// reads as `name` (`access.token`, `ACCESS_TOKEN`), keeping the other
/// pairs as they were encoded (re-encoding them could change what the
/// upstream sees).
fn strip_query(uri: &mut Uri, name: &str) {
    let Some(query) = uri.query() else { return };
    let is_credential = |pair: &str| {
        let raw = pair.split_once('=').map_or(pair, |(k, _)| k);
        let key: Cow<'_, str> = form_urlencoded::parse(raw.as_bytes())
            .next()
            .map(|(k, _)| k)
            .unwrap_or(Cow::Borrowed(""));
        same_to_upstreams(&key, name)
    };
    // Left as sent when there is nothing to drop.
    if !query.split('&').any(is_credential) {
        return;
    }
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| !pair.is_empty() && !is_credential(pair))
        .collect();
    let mut pq = uri.path().to_owned();
    if !kept.is_empty() {
        pq.push('?');
        pq.push_str(&kept.join("&"));
    }
    let mut parts = uri.clone().into_parts();
    match pq.parse() {
        Ok(p) => parts.path_and_query = Some(p),
        Err(_) => return,
    }
    if let Ok(new) = Uri::from_parts(parts) {
        *uri = new;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn parts(req: Request<()>) -> Parts {
        req.into_parts().0
    }

    #[test]
    fn a_credential_sent_twice_is_unreadable() {
        let p = parts(
            Request::get("/?access_token=a&access_token=b")
                .header("authorization", "Bearer good")
                .header("authorization", "Bearer forged")
                .header("x-api-key", "k1")
                .header("x-api-key", "k2")
                .header("cookie", "session=s1; other=x")
                .header("cookie", "session=s2")
                .body(())
                .unwrap(),
        );
        for src in [
            TokenSource::Bearer,
            TokenSource::Header(HeaderName::from_static("x-api-key")),
            TokenSource::Cookie("session".into()),
            TokenSource::Query("access_token".into()),
        ] {
            assert_eq!(src.extract(&p), Some(Err(Unreadable)), "{src:?}");
        }
        // Other names are not confused with them.
        assert_eq!(
            TokenSource::Cookie("other".into()).extract(&p),
            Some(Ok(Cow::Borrowed("x")))
        );
    }

    #[test]
    fn other_spellings_of_a_credential_are_refused() {
        let cases = [
            (
                TokenSource::Cookie("session".into()),
                Request::get("/").header("cookie", "session=good; session =forged"),
            ),
            (
                TokenSource::Query("access_token".into()),
                Request::get("/?access_token=good&access.token=forged"),
            ),
            (
                TokenSource::Query("access_token".into()),
                Request::get("/?ACCESS_TOKEN=forged"),
            ),
            (
                TokenSource::Header(HeaderName::from_static("x-api-key")),
                Request::get("/")
                    .header("x-api-key", "good")
                    .header("x_api_key", "forged"),
            ),
        ];
        for (src, req) in cases {
            let p = parts(req.body(()).unwrap());
            assert_eq!(src.extract(&p), Some(Err(Unreadable)), "{src:?}");
        }
        // Unrelated names pass.
        let p = parts(
            Request::get("/?access_token=t&access_tokens=x")
                .header("x-api-key", "k")
                .header("x_api_keys", "x")
                .body(())
                .unwrap(),
        );
        assert_eq!(
            TokenSource::Query("access_token".into()).extract(&p),
            Some(Ok(Cow::Borrowed("t")))
        );
        assert_eq!(
            TokenSource::Header(HeaderName::from_static("x-api-key")).extract(&p),
            Some(Ok(Cow::Borrowed("k")))
        );
    }

    #[test]
    fn bearer() {
        let p = parts(
            Request::get("/")
                .header("authorization", "bearer abc.def.ghi")
                .body(())
                .unwrap(),
        );
        assert_eq!(
            TokenSource::Bearer.extract(&p),
            Some(Ok(Cow::Borrowed("abc.def.ghi")))
        );
        let p = parts(
            Request::get("/")
                .header("authorization", "Basic Zm9vOmJhcg==")
                .body(())
                .unwrap(),
        );
        assert_eq!(TokenSource::Bearer.extract(&p), None);
        let p = parts(
            Request::get("/")
                .header("authorization", "Bearer ")
                .body(())
                .unwrap(),
        );
        assert_eq!(TokenSource::Bearer.extract(&p), Some(Err(Unreadable)));
    }

    #[test]
    fn cookie_and_strip() {
        let mut p = parts(
            Request::get("/")
                .header("cookie", "a=1; session=tok; b=2")
                .body(())
                .unwrap(),
        );
        let src = TokenSource::Cookie("session".into());
        assert_eq!(src.extract(&p), Some(Ok(Cow::Borrowed("tok"))));
        src.strip(&mut p);
        assert_eq!(p.headers["cookie"], "a=1; b=2");
        assert_eq!(src.extract(&p), None);
        // A name with spaces around it is read, so it is stripped too.
        let mut p = parts(
            Request::get("/")
                .header("cookie", "a=1; session =tok")
                .body(())
                .unwrap(),
        );
        assert_eq!(src.extract(&p), Some(Ok(Cow::Borrowed("tok"))));
        src.strip(&mut p);
        assert_eq!(p.headers["cookie"], "a=1");
        // A second copy in a line that is not visible ASCII: unreadable.
        let p = parts(
            Request::get("/")
                .header("cookie", "session=good")
                .header(
                    "cookie",
                    http::HeaderValue::from_bytes(b"session=forged\xff").unwrap(),
                )
                .body(())
                .unwrap(),
        );
        assert_eq!(src.extract(&p), Some(Err(Unreadable)));
    }

    #[test]
    fn strip_goes_by_place_and_spelling() {
        let mut p = parts(
            Request::get("/x?a=1&access.token=f&ACCESS_TOKEN=g&access%5Ftoken=h&b=2")
                .header("authorization", "Bearer\tforged")
                .header("x_token", "forged")
                .header("x_tokens", "kept")
                .body(())
                .unwrap(),
        );
        // None of these is read as a credential here...
        assert_eq!(TokenSource::Bearer.extract(&p), None);
        let x_token = TokenSource::Header(HeaderName::from_static("x-token"));
        assert_eq!(x_token.extract(&p), None);
        // ...and all of them are removed.
        TokenSource::Bearer.strip(&mut p);
        x_token.strip(&mut p);
        TokenSource::Query("access_token".into()).strip(&mut p);
        assert!(p.headers.get("authorization").is_none());
        assert!(p.headers.get("x_token").is_none());
        assert_eq!(p.headers["x_tokens"], "kept");
        assert_eq!(p.uri.to_string(), "/x?a=1&b=2");
        // Nothing to remove: the query and cookies stay as sent.
        let mut p = parts(
            Request::get("/x?a=%20b&&c")
                .header("cookie", "a=1;b=2")
                .body(())
                .unwrap(),
        );
        TokenSource::Query("access_token".into()).strip(&mut p);
        TokenSource::Cookie("session".into()).strip(&mut p);
        assert_eq!(p.uri.to_string(), "/x?a=%20b&&c");
        assert_eq!(p.headers["cookie"], "a=1;b=2");
    }

    #[test]
    fn places_shared() {
        let header = |n: &'static str| TokenSource::Header(HeaderName::from_static(n));
        let query = |n: &str| TokenSource::Query(n.into());
        let shared = [
            (TokenSource::Bearer, header("authorization")),
            (header("x-token"), header("x_token")),
            (query("access_token"), query("ACCESS.TOKEN")),
            (header("cookie"), TokenSource::Cookie("session".into())),
        ];
        for (a, b) in shared {
            assert!(
                a.shares_location(&b) && b.shares_location(&a),
                "{a:?} {b:?}"
            );
        }
        let apart = [
            (TokenSource::Bearer, header("x-token")),
            (header("x-token"), header("x-tokens")),
            (query("access_token"), query("api_key")),
            (query("x_token"), header("x-token")),
            (
                TokenSource::Cookie("session".into()),
                TokenSource::Cookie("other".into()),
            ),
        ];
        for (a, b) in apart {
            assert!(!a.shares_location(&b), "{a:?} {b:?}");
        }
    }

    #[test]
    fn query_and_strip() {
        let mut p = parts(
            Request::get("/x?a=%20b&access_token=t%2Bk&c")
                .body(())
                .unwrap(),
        );
        let src = TokenSource::Query("access_token".into());
        assert_eq!(src.extract(&p).unwrap().unwrap(), "t+k");
        src.strip(&mut p);
        assert_eq!(p.uri.to_string(), "/x?a=%20b&c");
        let mut p = parts(Request::get("/x?access_token=1").body(()).unwrap());
        src.strip(&mut p);
        assert_eq!(p.uri.to_string(), "/x");
    }
}
