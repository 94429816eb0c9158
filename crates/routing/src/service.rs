//! [`Router`]: the Tower service over a [`RouteTable`].

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{ALLOW, HOST};
use http::uri::PathAndQuery;
use http::{HeaderValue, Request, Response, StatusCode, Uri};
use tower::Service;
use towergate_core::body::ResponseBody;
use towergate_core::{Problem, RequestId, RouteMatch, RoutedPath};

use crate::error::BuildError;
use crate::future::ResponseFuture;
use crate::normalize::normalize_path;
use crate::route::Route;
use crate::table::{Outcome, RouteTable};

/// Routes each request to the service of the route it matches.
///
/// Per request, the router normalises the path (see
/// [`normalize_path`](crate::normalize_path)), finds the best route (see
/// [`RouteTable`] and the [crate docs](crate#precedence)), and then:
///
/// - on a match, puts a [`RouteMatch`] in the request extensions, replaces
///   the request's path with the normalised one, stripped or rewritten as
///   the route says (the query string is kept; when stripped or rewritten,
///   the path matched on goes in a [`RoutedPath`]), and calls a clone of
///   the route's service with [`Oneshot`], which drives its readiness;
/// - otherwise answers with `application/problem+json`: 400 for a path or
///   host it refuses (in `Host` or the target) and for an authority-form
///   target, 405 with `Allow` when only the method is wrong, 404.
///
/// `poll_ready` is always ready, as axum assumes of every service; cloning
/// is cheap (one `Arc`). See the [crate docs](crate) for an example.
pub struct Router<S> {
    inner: Arc<Inner<S>>,
}

/// Collects routes and their services, then compiles them into a [`Router`].
#[must_use]
pub struct RouterBuilder<S> {
    routes: Vec<Route>,
    services: Vec<S>,
}

struct Inner<S> {
    table: RouteTable,
    services: Vec<S>,
}

// === impl Router ===

impl<S> Router<S> {
    /// Starts a router.
    pub fn builder() -> RouterBuilder<S> {
        RouterBuilder::new()
    }

    /// The compiled table, to look routes up without calling a service.
    pub fn table(&self) -> &RouteTable {
        &self.inner.table
    }

    /// The service of the route at `index` (declaration order).
    pub fn service(&self, index: usize) -> Option<&S> {
        self.inner.services.get(index)
    }
}

impl<S> Clone for Router<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<S> fmt::Debug for Router<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("table", &self.inner.table)
            .finish_non_exhaustive()
    }
}

impl<S, B, RB> Service<Request<B>> for Router<S>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone,
{
    type Response = Response<ResponseBody<RB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, B>;

    #[inline]
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness belongs to the route's service, which is only known once
        // the request is; the response future waits for it if need be.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        // A gateway is no forward proxy: a CONNECT tunnel to wherever the
        // client names is refused, whatever the routes (a catch-all route
        // would otherwise send `CONNECT /` upstream).
        if req.method() == http::Method::CONNECT {
            return ResponseFuture::rejected(problem(
                &req,
                StatusCode::NOT_IMPLEMENTED,
                "CONNECT is not supported: this is a gateway, not a forward proxy".into(),
            ));
        }
        // An authority-form target (`GET a.example:80`) belongs to CONNECT
        // alone (RFC 9112 §3.2.3). It has no path: read as `/`, it would
        // match a root route, and with no path to replace, that route's
        // rewrite would be skipped and the upstream asked for its root.
        if req.uri().scheme().is_none() && req.uri().authority().is_some() {
            return ResponseFuture::rejected(problem(
                &req,
                StatusCode::BAD_REQUEST,
                "an authority-form request target is only for CONNECT".into(),
            ));
        }
        let host = match check_host(&req) {
            Ok(HostCheck::Host(host)) => host,
            Ok(HostCheck::Rewrite(target)) => {
                req.headers_mut().insert(HOST, target);
                request_host(&req)
            }
            Err(detail) => {
                return ResponseFuture::rejected(problem(
                    &req,
                    StatusCode::BAD_REQUEST,
                    detail.into(),
                ));
            }
        };
        let path = match normalize_path(req.uri().path()) {
            Ok(path) => path,
            Err(err) => {
                return ResponseFuture::rejected(problem(
                    &req,
                    StatusCode::BAD_REQUEST,
                    format!("invalid request path: {err}"),
                ));
            }
        };
        let outcome =
            self.inner
                .table
                .find(req.method(), host, &path, req.headers(), req.uri().query());
        let (index, params, upstream_path) = match outcome {
            Outcome::Matched {
                index,
                params,
                upstream_path,
            } => (index, params, upstream_path),
            Outcome::MethodNotAllowed { allow } => {
                let detail = format!("method {} is not allowed on {path}", req.method());
                return ResponseFuture::rejected(method_not_allowed(&req, detail, &allow));
            }
            Outcome::NotFound => {
                let detail = format!("no route matches {} {path}", req.method());
                return ResponseFuture::rejected(problem(&req, StatusCode::NOT_FOUND, detail));
            }
        };
        let (Some(service), Some(name)) = (
            self.inner.services.get(index),
            self.inner.table.name_arc(index),
        ) else {
            // The table and the services are built together; a mismatch is
            // a bug, answered as an unknown route rather than a panic.
            let detail = format!("no route matches {} {path}", req.method());
            return ResponseFuture::rejected(problem(&req, StatusCode::NOT_FOUND, detail));
        };

        // Layers behind the router that describe the request to someone
        // else (forward auth's `X-Forwarded-Uri`) need the path the client
        // asked for, whose rules are written against it, not the one a
        // strip or rewrite made for the upstream.
        let routed = match &upstream_path {
            Some(upstream) if *upstream != *path => {
                match path_and_query(&path, req.uri().query()) {
                    Ok(routed) => Some(RoutedPath(routed)),
                    Err(_) => {
                        let detail = format!("cannot forward path {path}");
                        return ResponseFuture::rejected(problem(
                            &req,
                            StatusCode::BAD_REQUEST,
                            detail,
                        ));
                    }
                }
            }
            _ => None,
        };
        let forward = upstream_path.map_or(path, Cow::Owned);
        if forward != req.uri().path() {
            let uri = with_path(req.uri(), &forward);
            match uri {
                Ok(uri) => {
                    let original = towergate_core::OriginalPath(Arc::from(req.uri().path()));
                    req.extensions_mut().insert(original);
                    *req.uri_mut() = uri;
                }
                Err(_) => {
                    let detail = format!("cannot forward path {forward}");
                    return ResponseFuture::rejected(problem(
                        &req,
                        StatusCode::BAD_REQUEST,
                        detail,
                    ));
                }
            }
        }
        if let Some(routed) = routed {
            req.extensions_mut().insert(routed);
        }
        req.extensions_mut().insert(RouteMatch {
            route: name.clone(),
            params,
        });
        ResponseFuture::call(service.clone(), req)
    }
}

/// Refuses a request whose host is ambiguous, and makes `Host` agree with
/// the URI's authority, so that routing, the proxy's forwarding headers and
/// the cache key all read one host:
/// - more than one `Host` field, or one that is not a `host[:port]`
///   (`a/b`, `user@host`, spaces): refused (RFC 9112 §3.2: 400), since
///   one reader taking `a` and another `a/b` is how caches get poisoned;
/// - the same for the target's authority (HTTP/2 `:authority`, an
///   absolute-form target), which `http` accepts with lists and `;` in it
///   (`evil.example,a.example`): routed as given, it would match a
///   `*.example` route that an upstream reading the first name never
///   meant; userinfo there is refused too (RFC 9110 §4.2.4);
/// - an absolute-form request (`GET http://a/ HTTP/1.1`) with another
///   `Host`: the target's authority wins (RFC 9112 §3.2.2) and replaces it;
/// - HTTP/2 with a `host` field naming another host than `:authority`:
///   malformed (RFC 9113 §8.3.1), refused.
fn check_host<B>(req: &Request<B>) -> Result<HostCheck<'_>, &'static str> {
    let target = match req.uri().authority() {
        Some(authority) => {
            let target = authority.as_str();
            if target.contains('@') {
                return Err("the request target's authority carries user info");
            }
            if !valid_host(target.as_bytes()) {
                return Err("the request target's authority is not a host and port");
            }
            Some(target)
        }
        None => None,
    };
    let Some(host) = host_field(req.headers())? else {
        return Ok(HostCheck::Host(req.uri().authority().map(|a| a.host())));
    };
    if !valid_host(host.as_bytes()) {
        return Err("the Host header field is not a host and port");
    }
    let Some(target) = target else {
        // `valid_host` passed: the bytes are text.
        return Ok(HostCheck::Host(host.to_str().ok()));
    };
    let default_port = match req.uri().scheme_str() {
        Some("https") | Some("wss") => "443",
        _ => "80",
    };
    if same_host(target.as_bytes(), host.as_bytes(), default_port) {
        return Ok(HostCheck::Host(host.to_str().ok()));
    }
    if req.version() == http::Version::HTTP_2 {
        return Err("the host header field names another host than :authority");
    }
    match HeaderValue::from_str(target) {
        Ok(v) => Ok(HostCheck::Rewrite(v)),
        Err(_) => Err("the request target's host is not a valid Host"),
    }
}

/// What [`check_host`] found.
enum HostCheck<'r> {
    /// The host to route on (`None`: the request names none).
    Host(Option<&'r str>),
    /// `Host` must become this (an absolute-form target's authority).
    Rewrite(HeaderValue),
}

/// The request's one `Host` value, if any; an error with several. A few
/// header names are read in one walk (comparing names is cheap; hashing
/// one is not), more are looked up.
fn host_field(headers: &http::HeaderMap) -> Result<Option<&HeaderValue>, &'static str> {
    const SEVERAL: &str = "more than one Host header field";
    if headers.keys_len() <= 8 {
        let mut found = None;
        for (name, value) in headers {
            if *name == HOST {
                if found.is_some() {
                    return Err(SEVERAL);
                }
                found = Some(value);
            }
        }
        return Ok(found);
    }
    let mut all = headers.get_all(HOST).iter();
    match (all.next(), all.next()) {
        (_, Some(_)) => Err(SEVERAL),
        (found, None) => Ok(found),
    }
}

/// `host[:port]` as a `Host` field may be (RFC 9110 §7.2): a reg-name of
/// the characters hosts use, or a bracketed IPv6 literal, then an optional
/// `:` and digits; or empty. Lists (`a,b`), userinfo (`u@a`), paths and
/// spaces are not.
fn valid_host(b: &[u8]) -> bool {
    if b.is_empty() {
        return true;
    }
    let (name_ok, rest) = if b[0] == b'[' {
        let Some(end) = b.iter().position(|&c| c == b']') else {
            return false;
        };
        let inside = &b[1..end];
        let ok = !inside.is_empty()
            && inside
                .iter()
                .all(|&c| c.is_ascii_hexdigit() || c == b':' || c == b'.');
        (ok, &b[end + 1..])
    } else {
        // One pass: the name's bytes (a table look-up each) up to a `:`.
        let end = b
            .iter()
            .position(|&c| !REG_NAME[usize::from(c)])
            .unwrap_or(b.len());
        (end > 0, &b[end..])
    };
    name_ok
        && match rest {
            [] => true,
            [b':', port @ ..] => port.len() <= 5 && port.iter().all(u8::is_ascii_digit),
            _ => false,
        }
}

/// The bytes of a host name: letters, digits, `-`, `.`, `_`, `~`, `%`.
static REG_NAME: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'%');
        c += 1;
    }
    t
};

/// Whether two `host[:port]` name the same host: case, a trailing dot and
/// the scheme's default port aside.
fn same_host(a: &[u8], b: &[u8], default_port: &str) -> bool {
    fn parts<'a>(v: &'a [u8], default_port: &str) -> (&'a [u8], &'a [u8]) {
        let split = if v.first() == Some(&b'[') {
            v.iter().position(|&c| c == b']').map(|i| i + 1)
        } else {
            v.iter().position(|&c| c == b':')
        };
        let (host, port) = match split {
            Some(i) if i < v.len() => (&v[..i], &v[i + 1..]),
            _ => (v, &[][..]),
        };
        let host = host.strip_suffix(b".").unwrap_or(host);
        let port = if port == default_port.as_bytes() {
            &[][..]
        } else {
            port
        };
        (host, port)
    }
    let (ha, pa) = parts(a, default_port);
    let (hb, pb) = parts(b, default_port);
    ha.eq_ignore_ascii_case(hb) && pa == pb
}

/// The host a request is for: the `Host` header, or the URI's authority
/// (HTTP/2 `:authority`, absolute-form requests); the two agree after
/// [`check_host`].
fn request_host<B>(req: &Request<B>) -> Option<&str> {
    req.headers()
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.host()))
}

/// `uri` with its path replaced and its query kept.
fn with_path(uri: &Uri, path: &str) -> Result<Uri, http::Error> {
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(path_and_query(path, uri.query())?);
    Ok(Uri::from_parts(parts)?)
}

fn path_and_query(path: &str, query: Option<&str>) -> Result<PathAndQuery, http::Error> {
    Ok(match query {
        Some(query) => PathAndQuery::try_from(format!("{path}?{query}"))?,
        None => PathAndQuery::try_from(path)?,
    })
}

fn problem<B>(req: &Request<B>, status: StatusCode, detail: String) -> Problem {
    let problem = Problem::new(status).detail(detail);
    match req.extensions().get::<RequestId>() {
        Some(id) => problem.instance(id.as_str()),
        None => problem,
    }
}

fn method_not_allowed<B>(req: &Request<B>, detail: String, allow: &[http::Method]) -> Problem {
    let problem = problem(req, StatusCode::METHOD_NOT_ALLOWED, detail);
    let list = allow
        .iter()
        .map(http::Method::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    match HeaderValue::from_str(&list) {
        Ok(value) => problem.header(ALLOW, value),
        // Methods are tokens, always valid header text; without the header
        // the answer is still a correct 405.
        Err(_) => problem,
    }
}

// === impl RouterBuilder ===

impl<S> RouterBuilder<S> {
    /// An empty builder.
    pub fn new() -> Self {
        Self {
            routes: Vec::new(),
            services: Vec::new(),
        }
    }

    /// Adds a route and the service that answers it. Declaration order is
    /// the last tie-breaker of precedence.
    pub fn route(mut self, route: Route, service: S) -> Self {
        self.routes.push(route);
        self.services.push(service);
        self
    }

    /// Compiles the routes. Every validation error is reported here, naming
    /// the route; this never panics.
    pub fn build(self) -> Result<Router<S>, BuildError> {
        let table = RouteTable::new(self.routes)?;
        Ok(Router {
            inner: Arc::new(Inner {
                table,
                services: self.services,
            }),
        })
    }
}

impl<S> Default for RouterBuilder<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> fmt::Debug for RouterBuilder<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouterBuilder")
            .field("routes", &self.routes)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// [`check_host`] as the router applies it.
    fn check(req: &mut Request<()>) -> Result<(), &'static str> {
        match check_host(req)? {
            HostCheck::Host(_) => Ok(()),
            HostCheck::Rewrite(v) => {
                req.headers_mut().insert(HOST, v);
                Ok(())
            }
        }
    }

    fn req(uri: &str, hosts: &[&str], version: http::Version) -> Request<()> {
        let mut req = Request::builder().uri(uri).version(version);
        for h in hosts {
            req = req.header(HOST, *h);
        }
        req.body(()).unwrap()
    }

    #[test]
    fn hosts_are_checked_and_agree_with_the_target() {
        const HTTP_11: http::Version = http::Version::HTTP_11;
        const HTTP_2: http::Version = http::Version::HTTP_2;
        for ok in [
            "a.example",
            "A.Example:8080",
            "[::1]:80",
            "10.0.0.1",
            "xn--bcher-kva.example",
            "",
        ] {
            let mut r = req("/x", &[ok], HTTP_11);
            assert_eq!(check(&mut r), Ok(()), "{ok:?}");
            assert_eq!(r.headers()[HOST], ok);
        }
        for bad in [
            "a.example/b",
            "user@a.example",
            "a.example b",
            "a\\b",
            "a?b",
            "a#b",
            "victim.example,evil.example",
            "a;b",
            "a:b:c",
            "::1",
            "[zz]",
            "a:123456",
            ":80",
        ] {
            let mut r = req("/x", &[bad], HTTP_11);
            assert!(check(&mut r).is_err(), "{bad:?}");
        }
        let mut r = req("/x", &["a.example", "b.example"], HTTP_11);
        assert!(check(&mut r).is_err());
        // Many headers: looked up rather than walked, the same answers.
        for (hosts, ok) in [
            (&["a.example"][..], true),
            (&["a.example", "b.example"][..], false),
        ] {
            let mut r = req("/x", hosts, HTTP_11);
            for i in 0..10 {
                r.headers_mut().insert(
                    http::HeaderName::try_from(format!("x-pad-{i}")).unwrap(),
                    HeaderValue::from_static("1"),
                );
            }
            assert_eq!(check(&mut r).is_ok(), ok, "{hosts:?}");
            if ok {
                assert!(matches!(
                    check_host(&r),
                    Ok(HostCheck::Host(Some("a.example")))
                ));
            }
        }
        // Absolute form: the target's authority wins.
        let mut r = req("http://victim.example:81/x", &["evil.example"], HTTP_11);
        assert_eq!(check(&mut r), Ok(()));
        assert_eq!(r.headers()[HOST], "victim.example:81");
        assert_eq!(request_host(&r), Some("victim.example:81"));
        // The target's authority is held to the rules of `Host`: `http`
        // takes lists and `;` there, which one reader would route on and
        // another (Express: the first name) would serve.
        for (uri, hosts, version) in [
            ("https://a.example,evil.example/x", &[][..], HTTP_2),
            (
                "http://evil.example,a.example/x",
                &["a.example"][..],
                HTTP_11,
            ),
            ("http://evil.example;a.example/x", &[][..], HTTP_11),
            (
                "http://u@victim.example:81/x",
                &["evil.example"][..],
                HTTP_11,
            ),
            ("https://u@victim.example/x", &[][..], HTTP_2),
        ] {
            let mut r = req(uri, hosts, version);
            assert!(check(&mut r).is_err(), "{uri}");
        }
        // The same host in another case is the same host.
        let mut r = req("http://Victim.example/x", &["victim.EXAMPLE"], HTTP_11);
        assert_eq!(check(&mut r), Ok(()));
        assert_eq!(r.headers()[HOST], "victim.EXAMPLE");
        // HTTP/2: `host` against `:authority` is malformed when they differ.
        let mut r = req("https://victim.example/x", &["evil.example"], HTTP_2);
        assert!(check(&mut r).is_err());
        let mut r = req("https://victim.example/x", &["victim.example"], HTTP_2);
        assert_eq!(check(&mut r), Ok(()));
        // The same host: a default port or a trailing dot aside.
        for same in ["victim.example:443", "Victim.Example.", "victim.example."] {
            let mut r = req("https://victim.example/x", &[same], HTTP_2);
            assert_eq!(check(&mut r), Ok(()), "{same}");
        }
        let mut r = req("https://victim.example:443/x", &["victim.example"], HTTP_2);
        assert_eq!(check(&mut r), Ok(()));
        let mut r = req("https://victim.example/x", &["victim.example:8443"], HTTP_2);
        assert!(check(&mut r).is_err());
        let mut r = req("http://[::1]:80/x", &["[::1]"], HTTP_11);
        assert_eq!(check(&mut r), Ok(()));
        assert_eq!(r.headers()[HOST], "[::1]");
        let mut r = req("https://victim.example/x", &[], HTTP_2);
        assert_eq!(check(&mut r), Ok(()));
        assert_eq!(request_host(&r), Some("victim.example"));
    }
}
