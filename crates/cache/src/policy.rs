//! The decisions of a shared cache: may a response be stored (RFC 9111 §3),
//! and may a stored response be used for a request (§4).

use std::sync::Arc;
use std::time::Duration;

use http::header::{AUTHORIZATION, CONTENT_LENGTH, COOKIE, SET_COOKIE};
use http::{HeaderMap, HeaderName, StatusCode};

use crate::cache_control::CacheControl;
use crate::freshness::{Freshness, Timing, has_explicit_lifetime, lifetime};
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
    if (request.contains_key(AUTHORIZATION) || rules.authenticated)
        && !rules.keyed_by_identity
        && !(cc.public || cc.s_maxage.is_some() || cc.must_revalidate)
    {
        return Err(NotStored::Authorization);
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
}
