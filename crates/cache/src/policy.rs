//! The decisions of a shared cache: may a response be stored (RFC 9111 §3),
//! and may a stored response be used for a request (§4).

use std::sync::Arc;
use std::time::Duration;

use http::header::{AUTHORIZATION, CONTENT_LENGTH, COOKIE, SET_COOKIE};
use http::{HeaderMap, HeaderName, StatusCode};

use towergate_core::url_text::looks_secret;

use crate::cache_control::CacheControl;
use crate::freshness::{Freshness, Timing, has_explicit_lifetime, lifetime};
use crate::key::{KeyQuery, decode_name};
use crate::vary::Vary;

/// Why a response is not stored (logged at debug level).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NotStored {
    Status,
    NoStore,
    Private,
    VaryStar,
    SetCookie,
    Authorization,
    /// The request carried a credential the key does not hold (a header
    /// like `X-API-Key`, a query parameter like `api_key` left out of the
    /// key) that the upstream may check itself: as with `Authorization`,
    /// the answer may be one caller's.
    Credential,
    /// Only the route's default lifetime made it storable, and the request
    /// carried cookies: the page may be personalised by them.
    Cookie,
    NoFreshness,
    Useless,
    TooLarge,
}

/// What the request's configuration contributes to storability.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rules<'a> {
    pub(crate) statuses: &'a [u16],
    pub(crate) default_ttl: Option<Duration>,
    pub(crate) keyed_by_identity: bool,
    /// The request was authenticated by a layer in front (an `Identity` in
    /// its extensions): treated like a request with `Authorization`
    /// (§3.5), since the credentials may have been stripped or sent in
    /// another header (an API key).
    pub(crate) authenticated: bool,
    /// `Cookie` is part of the key: each cookie value has its own entry.
    pub(crate) keyed_by_cookie: bool,
    /// The request headers in the key: a credential among them has its
    /// own entry per value.
    pub(crate) key_headers: &'a [HeaderName],
    /// Request headers set in front to one value for every request: no
    /// caller's credential.
    pub(crate) gateway_set_headers: &'a [HeaderName],
    /// Which query parameters the key holds.
    pub(crate) key_query: &'a KeyQuery,
    /// The request's query.
    pub(crate) query: Option<&'a str>,
    pub(crate) max_entry_bytes: u64,
}

/// Whether a response to a GET may be stored (§3, §3.5) and, if so, the
/// request fields it varies on.
pub(crate) fn storable(
    rules: Rules<'_>,
    request: &HeaderMap,
    status: StatusCode,
    headers: &HeaderMap,
    cc: &CacheControl,
    timing: &Timing,
) -> Result<Arc<[HeaderName]>, NotStored> {
    if !rules.statuses.contains(&status.as_u16()) {
        return Err(NotStored::Status);
    }
    if cc.no_store {
        return Err(NotStored::NoStore);
    }
    if cc.private {
        return Err(NotStored::Private);
    }
    let Vary::Fields(vary) = Vary::from_headers(headers) else {
        return Err(NotStored::VaryStar);
    };
    if headers.contains_key(SET_COOKIE) {
        return Err(NotStored::SetCookie);
    }
    let shared_anyway =
        rules.keyed_by_identity || cc.public || cc.s_maxage.is_some() || cc.must_revalidate;
    if (request.contains_key(AUTHORIZATION) || rules.authenticated) && !shared_anyway {
        return Err(NotStored::Authorization);
    }
    // A route without auth of its own may front an upstream that checks an
    // API key itself: the answer to tenant A's key is A's, and a key
    // without the credential would hand it to anyone, anonymous callers
    // included. Treated as `Authorization` (§3.5).
    if !shared_anyway && unkeyed_credential(rules, request) {
        return Err(NotStored::Credential);
    }
    // The route's `ttl` stores responses the upstream said nothing about;
    // with cookies in the request, such a response is as likely to be one
    // user's page (a session cookie) as a shared one: not without the
    // upstream's word (`public`, a lifetime of its own).
    if request.contains_key(COOKIE)
        && !rules.keyed_by_cookie
        && !cc.public
        && !has_explicit_lifetime(cc, headers)
    {
        return Err(NotStored::Cookie);
    }
    let has_validator = headers.contains_key(http::header::ETAG)
        || headers.contains_key(http::header::LAST_MODIFIED);
    if !has_explicit_lifetime(cc, headers)
        && rules.default_ttl.is_none()
        && !(cc.no_cache && has_validator)
    {
        return Err(NotStored::NoFreshness);
    }
    let life = lifetime(cc, headers, timing, rules.default_ttl).unwrap_or(Duration::ZERO);
    let initial_age = timing.corrected_initial_age();
    let fresh_on_arrival = life > initial_age && !cc.no_cache;
    let stale_window = cc.allows_stale()
        && (cc.stale_while_revalidate.unwrap_or(0) > 0 || cc.stale_if_error.unwrap_or(0) > 0);
    if !fresh_on_arrival && !has_validator && !stale_window {
        return Err(NotStored::Useless);
    }
    if content_length(headers).is_some_and(|n| n > rules.max_entry_bytes) {
        return Err(NotStored::TooLarge);
    }
    Ok(vary)
}

/// Whether the request carries a credential its key does not hold: a
/// header whose name looks like one ([`looks_secret`]: `X-API-Key`,
/// `X-Auth-Token`) that is not a key header, or a query parameter whose
/// name, decoded, looks like one (`api_key`, `access_token`) and that the
/// key leaves out. Headers set in front to one value for everyone (the
/// gateway's own key for the upstream) are no caller's credential. `Authorization` and `Cookie` have rules of their own.
/// Query pairs are split on `;` as well as `&`, as some upstreams split
/// them.
pub(crate) fn unkeyed_credential(rules: Rules<'_>, request: &HeaderMap) -> bool {
    let in_header = request.keys().any(|name| {
        *name != AUTHORIZATION
            && *name != COOKIE
            && looks_secret(name.as_str())
            && !rules.key_headers.contains(name)
            && !rules.gateway_set_headers.contains(name)
    });
    in_header
        || rules.query.is_some_and(|query| {
            query
                .split(['&', ';'])
                .map(|pair| pair.split_once('=').map_or(pair, |(name, _)| name))
                .filter(|name| !name.is_empty())
                .any(|name| rules.key_query.leaves_out(name) && looks_secret(&decode_name(name)))
        })
}

/// A valid `Content-Length`.
pub(crate) fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// How a stored response may be used for a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Use {
    /// Serve it: fresh and nothing asks for validation.
    Fresh,
    /// Serve it stale, as the request's `max-stale` allows.
    MaxStale,
    /// Serve it stale and revalidate in the background.
    WhileRevalidate,
    /// Forward (conditionally when it has validators).
    Forward(Why),
}

/// Why a stored response is not served as is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Why {
    /// It is stale (or its `no-cache` demands validation).
    Stale,
    /// The request asked for validation (`no-cache`, `max-age`,
    /// `min-fresh`).
    Request,
}

/// Chooses how to use a stored response (§4.2.4, §5.2.1, RFC 5861).
pub(crate) fn decide(stored: &CacheControl, f: &Freshness, request: &CacheControl) -> Use {
    let request_forbids = request.no_cache
        || request
            .max_age
            .is_some_and(|m| f.age > Duration::from_secs(m))
        || request
            .min_fresh
            .is_some_and(|m| f.remaining() < Duration::from_secs(m));
    if f.is_fresh() && !stored.no_cache {
        return if request_forbids {
            Use::Forward(Why::Request)
        } else {
            Use::Fresh
        };
    }
    if request_forbids {
        return Use::Forward(Why::Request);
    }
    if stored.allows_stale() {
        let staleness = f.staleness();
        let max_stale_ok = match request.max_stale {
            Some(None) => true,
            Some(Some(n)) => staleness <= Duration::from_secs(n),
            None => false,
        };
        if max_stale_ok {
            return Use::MaxStale;
        }
        if stored
            .stale_while_revalidate
            .is_some_and(|n| staleness <= Duration::from_secs(n))
        {
            return Use::WhileRevalidate;
        }
    }
    Use::Forward(Why::Stale)
}

/// Whether `stale-if-error` (response or request directive) lets the cache
/// answer with the stored response when the upstream failed (RFC 5861 §4).
pub(crate) fn stale_if_error(stored: &CacheControl, f: &Freshness, request: &CacheControl) -> bool {
    if !stored.allows_stale() {
        return false;
    }
    let window = match (stored.stale_if_error, request.stale_if_error) {
        (Some(a), Some(b)) => a.max(b),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => return false,
    };
    f.staleness() <= Duration::from_secs(window)
}

/// The upstream statuses `stale-if-error` treats as errors.
pub(crate) fn is_error_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 500 | 502 | 503 | 504)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use std::time::SystemTime;

    fn f(lifetime: u64, age: u64) -> Freshness {
        Freshness {
            lifetime: Duration::from_secs(lifetime),
            age: Duration::from_secs(age),
        }
    }

    fn cc(s: &str) -> CacheControl {
        CacheControl::parse(s)
    }

    #[test]
    fn decisions() {
        let none = cc("");
        assert_eq!(decide(&cc("max-age=10"), &f(10, 5), &none), Use::Fresh);
        assert_eq!(
            decide(&cc("max-age=10"), &f(10, 15), &none),
            Use::Forward(Why::Stale)
        );
        assert_eq!(
            decide(&cc("max-age=10, no-cache"), &f(10, 5), &none),
            Use::Forward(Why::Stale)
        );
        assert_eq!(
            decide(&cc("max-age=10"), &f(10, 5), &cc("no-cache")),
            Use::Forward(Why::Request)
        );
        assert_eq!(
            decide(&cc("max-age=10"), &f(10, 5), &cc("max-age=0")),
            Use::Forward(Why::Request)
        );
        assert_eq!(
            decide(&cc("max-age=10"), &f(10, 5), &cc("min-fresh=6")),
            Use::Forward(Why::Request)
        );
        assert_eq!(
            decide(
                &cc("max-age=10, stale-while-revalidate=5"),
                &f(10, 14),
                &none
            ),
            Use::WhileRevalidate
        );
        assert_eq!(
            decide(
                &cc("max-age=10, stale-while-revalidate=5"),
                &f(10, 16),
                &none
            ),
            Use::Forward(Why::Stale)
        );
        assert_eq!(
            decide(
                &cc("max-age=10, stale-while-revalidate=5, must-revalidate"),
                &f(10, 14),
                &none
            ),
            Use::Forward(Why::Stale)
        );
        assert_eq!(
            decide(&cc("max-age=10"), &f(10, 14), &cc("max-stale")),
            Use::MaxStale
        );
        assert_eq!(
            decide(&cc("s-maxage=10"), &f(10, 14), &cc("max-stale")),
            Use::Forward(Why::Stale)
        );
    }

    #[test]
    fn stale_if_error_window() {
        let none = cc("");
        assert!(stale_if_error(
            &cc("max-age=1, stale-if-error=60"),
            &f(1, 30),
            &none
        ));
        assert!(!stale_if_error(
            &cc("max-age=1, stale-if-error=60"),
            &f(1, 90),
            &none
        ));
        assert!(!stale_if_error(&cc("max-age=1"), &f(1, 30), &none));
        assert!(stale_if_error(
            &cc("max-age=1"),
            &f(1, 30),
            &cc("stale-if-error=60")
        ));
        assert!(!stale_if_error(
            &cc("max-age=1, stale-if-error=60, must-revalidate"),
            &f(1, 30),
            &none
        ));
    }

    #[test]
    fn storability() {
        let rules = Rules {
            statuses: &[200, 404],
            default_ttl: None,
            keyed_by_identity: false,
            authenticated: false,
            keyed_by_cookie: false,
            key_headers: &[],
            gateway_set_headers: &[],
            key_query: &KeyQuery::All,
            query: None,
            max_entry_bytes: 100,
        };
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let check = |req: &[(&'static str, &'static str)],
                     status: u16,
                     rsp: &[(&'static str, &'static str)],
                     rules: Rules<'_>| {
            let mut rq = HeaderMap::new();
            for (k, v) in req {
                rq.append(*k, HeaderValue::from_static(v));
            }
            let mut h = HeaderMap::new();
            for (k, v) in rsp {
                h.append(*k, HeaderValue::from_static(v));
            }
            let cc = CacheControl::from_headers(&h);
            let timing = Timing::new(&h, now, now);
            storable(
                rules,
                &rq,
                StatusCode::from_u16(status).unwrap(),
                &h,
                &cc,
                &timing,
            )
            .map(|_| ())
        };
        let ma = ("cache-control", "max-age=60");
        assert_eq!(check(&[], 200, &[ma], rules), Ok(()));
        assert_eq!(check(&[], 500, &[ma], rules), Err(NotStored::Status));
        assert_eq!(
            check(
                &[],
                200,
                &[("cache-control", "max-age=60, no-store")],
                rules
            ),
            Err(NotStored::NoStore)
        );
        assert_eq!(
            check(&[], 200, &[("cache-control", "private, max-age=60")], rules),
            Err(NotStored::Private)
        );
        assert_eq!(
            check(&[], 200, &[ma, ("vary", "*")], rules),
            Err(NotStored::VaryStar)
        );
        assert_eq!(
            check(&[], 200, &[ma, ("set-cookie", "a=b")], rules),
            Err(NotStored::SetCookie)
        );
        let auth = [("authorization", "Bearer x")];
        assert_eq!(
            check(&auth, 200, &[ma], rules),
            Err(NotStored::Authorization)
        );
        for ok in [
            "max-age=60, public",
            "s-maxage=60",
            "max-age=60, must-revalidate",
        ] {
            assert_eq!(
                check(&auth, 200, &[("cache-control", ok)], rules),
                Ok(()),
                "{ok}"
            );
        }
        let by_id = Rules {
            keyed_by_identity: true,
            ..rules
        };
        assert_eq!(check(&auth, 200, &[ma], by_id), Ok(()));
        // Authenticated in front (credentials stripped, or an API key).
        let authed = Rules {
            authenticated: true,
            ..rules
        };
        assert_eq!(
            check(&[], 200, &[ma], authed),
            Err(NotStored::Authorization)
        );
        assert_eq!(
            check(&[], 200, &[("cache-control", "public, max-age=60")], authed),
            Ok(())
        );
        assert_eq!(check(&[], 200, &[], rules), Err(NotStored::NoFreshness));
        let ttl = Rules {
            default_ttl: Some(Duration::from_secs(5)),
            ..rules
        };
        assert_eq!(check(&[], 200, &[], ttl), Ok(()));
        // With cookies, the route's ttl alone does not make a response
        // shared; the upstream's own word does, or a key with the cookie.
        let session = [("cookie", "session=alice")];
        assert_eq!(check(&session, 200, &[], ttl), Err(NotStored::Cookie));
        assert_eq!(
            check(&session, 200, &[("cache-control", "max-age=60")], ttl),
            Ok(())
        );
        assert_eq!(
            check(&session, 200, &[("cache-control", "public")], ttl),
            Ok(())
        );
        let by_cookie = Rules {
            keyed_by_cookie: true,
            ..ttl
        };
        assert_eq!(check(&session, 200, &[], by_cookie), Ok(()));
        assert_eq!(
            check(&[], 200, &[("cache-control", "max-age=0")], rules),
            Err(NotStored::Useless)
        );
        assert_eq!(
            check(
                &[],
                200,
                &[("cache-control", "max-age=0"), ("etag", "\"a\"")],
                rules
            ),
            Ok(())
        );
        assert_eq!(
            check(
                &[],
                200,
                &[("cache-control", "no-cache"), ("etag", "\"a\"")],
                rules
            ),
            Ok(())
        );
        assert_eq!(
            check(&[], 200, &[ma, ("content-length", "101")], rules),
            Err(NotStored::TooLarge)
        );
    }

    fn rules<'a>(key_headers: &'a [HeaderName], key_query: &'a KeyQuery) -> Rules<'a> {
        Rules {
            statuses: &[200],
            default_ttl: Some(Duration::from_secs(30)),
            keyed_by_identity: false,
            authenticated: false,
            keyed_by_cookie: false,
            key_headers,
            gateway_set_headers: &[],
            key_query,
            query: None,
            max_entry_bytes: 100,
        }
    }

    #[test]
    fn unkeyed_credentials_are_found_in_headers_and_query() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(*k, HeaderValue::from_static(v));
            }
            h
        };
        let all = KeyQuery::All;
        let none = KeyQuery::None;
        let page = KeyQuery::Only(vec!["page".into()]);
        let r = rules(&[], &all);
        for name in ["x-api-key", "x-auth-token", "api-key", "x-session-id"] {
            let h = headers(&[(name, "A")]);
            assert!(unkeyed_credential(r, &h), "{name}");
        }
        // Rules of their own, and headers that are no credential.
        for name in ["authorization", "cookie", "accept", "x-tenant"] {
            let h = headers(&[(name, "A")]);
            assert!(!unkeyed_credential(r, &h), "{name}");
        }
        // A key header has an entry per value.
        let keyed = [HeaderName::from_static("x-api-key")];
        let h = headers(&[("x-api-key", "A")]);
        assert!(!unkeyed_credential(rules(&keyed, &all), &h));
        // So is a header set in front to one value for everyone.
        let set = Rules {
            gateway_set_headers: &keyed,
            ..r
        };
        assert!(!unkeyed_credential(set, &h));
        let h = headers(&[("x-api-key", "A"), ("x-auth-token", "B")]);
        assert!(unkeyed_credential(set, &h));

        let q = |query: &'static str, key_query| Rules {
            query: Some(query),
            ..rules(&[], key_query)
        };
        let empty = HeaderMap::new();
        // All of the query is in the key (as digests).
        assert!(!unkeyed_credential(q("api_key=A&page=2", &all), &empty));
        for query in [
            "api_key=A&page=2",
            "page=2&access_token=A",
            "api%5Fkey=A",
            "page=2;api_key=A",
            "API_KEY=A",
        ] {
            assert!(unkeyed_credential(q(query, &page), &empty), "{query}");
            assert!(unkeyed_credential(q(query, &none), &empty), "{query}");
        }
        assert!(!unkeyed_credential(q("page=2&utm=x", &page), &empty));
        assert!(!unkeyed_credential(q("", &none), &empty));
    }

    #[test]
    fn unkeyed_credentials_are_stored_only_when_shared_anyway() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let check = |rules: Rules<'_>, req: &[(&'static str, &'static str)], cc: &'static str| {
            let mut rq = HeaderMap::new();
            for (k, v) in req {
                rq.append(*k, HeaderValue::from_static(v));
            }
            let mut h = HeaderMap::new();
            if !cc.is_empty() {
                h.insert("cache-control", HeaderValue::from_static(cc));
            }
            let parsed = CacheControl::from_headers(&h);
            let timing = Timing::new(&h, now, now);
            storable(rules, &rq, StatusCode::OK, &h, &parsed, &timing).map(|_| ())
        };
        let all = KeyQuery::All;
        let page = KeyQuery::Only(vec!["page".into()]);
        let key = [("x-api-key", "tenant-a")];
        let r = rules(&[], &all);
        // With the route's ttl, and with the upstream's own max-age.
        assert_eq!(check(r, &key, ""), Err(NotStored::Credential));
        assert_eq!(check(r, &key, "max-age=60"), Err(NotStored::Credential));
        for ok in [
            "public, max-age=60",
            "s-maxage=60",
            "max-age=60, must-revalidate",
        ] {
            assert_eq!(check(r, &key, ok), Ok(()), "{ok}");
        }
        let by_id = Rules {
            keyed_by_identity: true,
            ..r
        };
        assert_eq!(check(by_id, &key, ""), Ok(()));
        let keyed = [HeaderName::from_static("x-api-key")];
        assert_eq!(check(rules(&keyed, &all), &key, ""), Ok(()));
        assert_eq!(check(r, &[], ""), Ok(()));
        // In the query, left out of the key.
        let left_out = Rules {
            query: Some("page=2&api_key=tenant-a"),
            ..rules(&[], &page)
        };
        assert_eq!(check(left_out, &[], ""), Err(NotStored::Credential));
        assert_eq!(check(left_out, &[], "public"), Ok(()));
        let in_key = Rules {
            query: Some("page=2&api_key=tenant-a"),
            ..r
        };
        assert_eq!(check(in_key, &[], ""), Ok(()));
    }
}
