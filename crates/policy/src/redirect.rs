//! Services that answer at the gateway: redirects (HTTP to HTTPS, path
//! redirects from a template) and fixed responses.
//!
//! Both are leaf services (`Error = Infallible`, body [`Full<Bytes>`]), to
//! mount as a route's whole stack instead of a proxy.

use std::borrow::Cow;
use std::convert::Infallible;
use std::future::{Ready, ready};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use tower::Service;
use towergate_core::Problem;

use crate::template::Ctx;
use crate::{BuildError, Template};

/// Answers every request with a redirect.
///
/// ```
/// use http::{Request, StatusCode};
/// use tower::ServiceExt;
/// use towergate_policy::{Redirect, Template};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let https = Redirect::https(None);
/// let req = Request::get("http://example.com:8080/a?b=1").body(())?;
/// let rsp = https.oneshot(req).await?;
/// assert_eq!(rsp.status(), StatusCode::MOVED_PERMANENTLY);
/// assert_eq!(rsp.headers()["location"], "https://example.com/a?b=1");
///
/// let moved = Redirect::to(Template::parse("/v2{path}")?).status(StatusCode::PERMANENT_REDIRECT)?;
/// let rsp = moved.oneshot(Request::get("/users?page=2").body(())?).await?;
/// assert_eq!(rsp.status(), StatusCode::PERMANENT_REDIRECT);
/// assert_eq!(rsp.headers()["location"], "/v2/users?page=2");
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct Redirect {
    target: Target,
    status: StatusCode,
    keep_query: bool,
}

#[derive(Clone, Debug)]
enum Target {
    Https { port: Option<u16> },
    To(Template),
}

/// Answers every request with the same status, body and headers.
///
/// ```
/// use http::{HeaderValue, Request, StatusCode};
/// use http_body_util::BodyExt;
/// use tower::ServiceExt;
/// use towergate_policy::FixedResponse;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let svc = FixedResponse::new(StatusCode::SERVICE_UNAVAILABLE)
///     .body("down for maintenance", HeaderValue::from_static("text/plain"))
///     .header(http::header::RETRY_AFTER, HeaderValue::from_static("120"));
/// let rsp = svc.oneshot(Request::get("/").body(())?).await?;
/// assert_eq!(rsp.status(), StatusCode::SERVICE_UNAVAILABLE);
/// assert_eq!(rsp.headers()["retry-after"], "120");
/// assert_eq!(rsp.into_body().collect().await?.to_bytes(), "down for maintenance");
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct FixedResponse {
    status: StatusCode,
    body: Bytes,
    headers: HeaderMap,
}

// === impl Redirect ===

impl Redirect {
    /// To the same host, path and query over HTTPS: the request's port is
    /// dropped and `port` used instead (none for `None` or 443). The host
    /// is the `Host` header, or the URI authority (HTTP/2); a request with
    /// neither, or with an invalid one, is answered `400`.
    pub fn https(port: Option<u16>) -> Self {
        Self {
            target: Target::Https { port },
            status: StatusCode::MOVED_PERMANENTLY,
            keep_query: true,
        }
    }

    /// To a location rendered from a template (`/v2/{params.rest}`,
    /// `https://new.example.com{path}`).
    ///
    /// Variables are percent-encoded as in a path (`/` is kept); a missing
    /// variable renders as nothing. A location that would start with `//`
    /// only because of a variable (`{params.rest}` being `/evil.com`) is
    /// collapsed to one `/`, so it stays on this host. The query string of
    /// the request is appended unless [`keep_query(false)`](Self::keep_query).
    pub fn to(location: Template) -> Self {
        Self {
            target: Target::To(location),
            status: StatusCode::MOVED_PERMANENTLY,
            keep_query: true,
        }
    }

    /// The status: 301 (default), 302, 303, 307 or 308.
    pub fn status(mut self, status: StatusCode) -> Result<Self, BuildError> {
        match status.as_u16() {
            301 | 302 | 303 | 307 | 308 => {
                self.status = status;
                Ok(self)
            }
            other => Err(BuildError::InvalidRedirectStatus { status: other }),
        }
    }

    /// Whether the request's query string is appended (default `true`).
    pub fn keep_query(mut self, keep: bool) -> Self {
        self.keep_query = keep;
        self
    }

    /// The `Location` for a request, or why there is none.
    pub fn location<B>(&self, req: &Request<B>) -> Result<HeaderValue, Box<Problem>> {
        let ctx = Ctx::of(req);
        let mut location = match &self.target {
            Target::Https { port } => {
                let host = ctx.host().and_then(host_without_port).ok_or_else(|| {
                    Problem::new(StatusCode::BAD_REQUEST)
                        .detail("the request has no valid Host to redirect to")
                })?;
                let port = match port {
                    Some(p) if *p != 443 => format!(":{p}"),
                    _ => String::new(),
                };
                // The path the client sent, not the one a router rewrote.
                let path = req
                    .extensions()
                    .get::<towergate_core::OriginalPath>()
                    .map_or(req.uri().path(), |p| &*p.0);
                format!("https://{host}{port}{path}")
            }
            Target::To(template) => {
                let mut rendered = template.render_location(&ctx);
                // A location the configuration did not anchor to a scheme
                // and host (`scheme://...` or `//host`) stays a path on this
                // host, whatever the variables hold: `{params.rest}` on
                // `/go/http:evil.com`, `{query.next}` with a URL, and `//`
                // or `/\` (which browsers read as `//`) after a `/` would
                // otherwise send the client elsewhere.
                let literal = template.literal_prefix();
                let anchored = literal.contains("://") || literal.starts_with("//");
                if !anchored {
                    let path = rendered.trim_start_matches(['/', '\\']);
                    if path.len() + 1 != rendered.len() || !rendered.starts_with('/') {
                        rendered = format!("/{path}");
                    }
                }
                rendered
            }
        };
        if self.keep_query
            && let Some(q) = req.uri().query()
            && !q.is_empty()
        {
            location.push(if location.contains('?') { '&' } else { '?' });
            location.push_str(q);
        }
        HeaderValue::try_from(location).map_err(|_| {
            Box::new(
                Problem::new(StatusCode::INTERNAL_SERVER_ERROR)
                    .detail("the redirect location could not be built"),
            )
        })
    }
}

impl<B> Service<Request<B>> for Redirect {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    #[inline]
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let rsp = match self.location(&req) {
            Ok(location) => {
                let mut rsp = Response::new(Full::new(Bytes::new()));
                *rsp.status_mut() = self.status;
                rsp.headers_mut().insert(header::LOCATION, location);
                rsp
            }
            Err(problem) => {
                if problem.status().is_server_error() {
                    tracing::warn!(
                        path = req.uri().path(),
                        "redirect location is not a valid header value"
                    );
                }
                (*problem).into_full_response()
            }
        };
        ready(Ok(rsp))
    }
}

/// `host[:port]` without the port, checked to be a URI authority (so it
/// cannot smuggle a path or user info into the location).
fn host_without_port(authority: &str) -> Option<Cow<'_, str>> {
    let parsed: http::uri::Authority = authority.parse().ok()?;
    if parsed.as_str().contains('@') {
        return None;
    }
    let host = parsed.host();
    if host.is_empty() {
        return None;
    }
    // `Authority::host` keeps the brackets of an IPv6 literal.
    Some(Cow::Owned(host.to_ascii_lowercase()))
}

// === impl FixedResponse ===

impl FixedResponse {
    /// An empty response with `status`.
    pub fn new(status: StatusCode) -> Self {
        Self {
            status,
            body: Bytes::new(),
            headers: HeaderMap::new(),
        }
    }

    /// The body and its `Content-Type`.
    pub fn body(mut self, body: impl Into<Bytes>, content_type: HeaderValue) -> Self {
        self.body = body.into();
        self.headers.insert(header::CONTENT_TYPE, content_type);
        self
    }

    /// Adds a header (appended: several values of one name are kept).
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }
}

impl<B> Service<Request<B>> for FixedResponse {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    #[inline]
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<B>) -> Self::Future {
        let mut rsp = Response::new(Full::new(self.body.clone()));
        *rsp.status_mut() = self.status;
        *rsp.headers_mut() = self.headers.clone();
        ready(Ok(rsp))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use towergate_core::RouteMatch;

    use super::*;

    fn location(r: &Redirect, uri: &str, host: Option<&str>) -> Result<String, StatusCode> {
        let mut req = Request::get(uri);
        if let Some(h) = host {
            req = req.header("host", h);
        }
        let mut req = req.body(()).unwrap();
        req.extensions_mut().insert(RouteMatch {
            route: Arc::from("r"),
            params: vec![
                ("rest".into(), "a b/c".into()),
                ("evil".into(), "/evil.com".into()),
                ("scheme".into(), "http:evil.com".into()),
                ("double".into(), "//evil.com/x".into()),
            ],
        });
        r.location(&req)
            .map(|v| v.to_str().unwrap().to_owned())
            .map_err(|p| p.status())
    }

    #[test]
    fn https_locations() {
        let r = Redirect::https(None);
        assert_eq!(
            location(&r, "/a/b?x=1&y=2", Some("example.com:80")).unwrap(),
            "https://example.com/a/b?x=1&y=2"
        );
        assert_eq!(
            location(&r, "/", Some("Example.COM")).unwrap(),
            "https://example.com/"
        );
        assert_eq!(
            location(&r, "/p", Some("[2001:db8::1]:8080")).unwrap(),
            "https://[2001:db8::1]/p"
        );
        let r8443 = Redirect::https(Some(8443));
        assert_eq!(
            location(&r8443, "/p?q", Some("[::1]")).unwrap(),
            "https://[::1]:8443/p?q"
        );
        assert_eq!(
            location(&Redirect::https(Some(443)), "/p", Some("h:80")).unwrap(),
            "https://h/p"
        );
        // HTTP/2: the authority of the URI
        assert_eq!(
            location(&r, "http://h2.example.com:8080/x", None).unwrap(),
            "https://h2.example.com/x"
        );
        assert_eq!(location(&r, "/x", None), Err(StatusCode::BAD_REQUEST));
        assert_eq!(
            location(&r, "/x", Some("user@evil.com")),
            Err(StatusCode::BAD_REQUEST)
        );
        assert_eq!(
            location(&r, "/x", Some("evil.com/path")),
            Err(StatusCode::BAD_REQUEST)
        );
        let no_query = Redirect::https(None).keep_query(false);
        assert_eq!(
            location(&no_query, "/a?x=1", Some("h")).unwrap(),
            "https://h/a"
        );
    }

    #[test]
    fn template_locations() {
        let r = Redirect::to(Template::parse("/v2/{params.rest}").unwrap());
        assert_eq!(location(&r, "/old?k=v", None).unwrap(), "/v2/a%20b/c?k=v");
        let r = Redirect::to(Template::parse("/new?from={path}").unwrap());
        assert_eq!(
            location(&r, "/old?k=v", None).unwrap(),
            "/new?from=/old&k=v"
        );
        let r = Redirect::to(Template::parse("{params.evil}").unwrap());
        assert_eq!(location(&r, "/", None).unwrap(), "/evil.com");
        // Not anchored by the configuration: a path on this host, whatever
        // the values hold.
        for (template, want) in [
            ("{params.scheme}", "/http:evil.com"),
            ("{params.double}", "/evil.com/x"),
            ("/{params.double}", "/evil.com/x"),
            ("{query.next}", "/https://evil.com"),
        ] {
            let r = Redirect::to(Template::parse(template).unwrap()).keep_query(false);
            assert_eq!(
                location(&r, "/?next=https://evil.com", None).unwrap(),
                want,
                "{template}"
            );
        }
        // Anchored: as written.
        let r = Redirect::to(Template::parse("//cdn.example.com/{params.rest}").unwrap());
        assert_eq!(
            location(&r, "/", None).unwrap(),
            "//cdn.example.com/a%20b/c"
        );
        let r = Redirect::to(Template::parse("https://new.example.com{path}").unwrap())
            .keep_query(false);
        assert_eq!(
            location(&r, "/x?y", None).unwrap(),
            "https://new.example.com/x"
        );
        let r = Redirect::to(Template::parse("/v2/{params.missing}").unwrap());
        assert_eq!(location(&r, "/", None).unwrap(), "/v2/");
        // A value in the authority of an anchored template cannot end it
        // early: the client stays on the configured host.
        for (query, want) in [
            ("region=eu", "https://eu.example.com/x"),
            ("region=evil.com/", "https://evil.com%2F.example.com/x"),
            ("region=evil.com%3F", "https://evil.com%3F.example.com/x"),
            ("region=a@evil.com", "https://a%40evil.com.example.com/x"),
            ("region=evil.com%23", "https://evil.com%23.example.com/x"),
        ] {
            let r = Redirect::to(
                Template::parse("https://{query.region}.example.com/{query.region}").unwrap(),
            )
            .keep_query(false);
            let got = location(&r, &format!("/?{query}"), None).unwrap();
            let host = got
                .trim_start_matches("https://")
                .split('/')
                .next()
                .unwrap();
            assert!(host.ends_with(".example.com"), "{got}");
            assert_eq!(
                got.split('/').take(3).collect::<Vec<_>>().join("/") + "/x",
                want,
                "{query}"
            );
        }
    }

    #[test]
    fn statuses() {
        for s in [301, 302, 303, 307, 308] {
            let _ = Redirect::https(None)
                .status(StatusCode::from_u16(s).unwrap())
                .unwrap();
        }
        for s in [200, 300, 304, 404] {
            assert_eq!(
                Redirect::https(None)
                    .status(StatusCode::from_u16(s).unwrap())
                    .unwrap_err(),
                BuildError::InvalidRedirectStatus { status: s }
            );
        }
    }
}
