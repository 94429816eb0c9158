//! Forward auth (external authorization): an auth service decides about
//! each request.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HOST};
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Response};
use towergate_core::{ClientAddr, Identity, RoutedPath};

use crate::authenticator::{Authenticated, Authenticator, BoxFuture};
use crate::credential::TokenSource;
use crate::error::{AuthError, BuildError, reason};
use crate::http_client;
use crate::layer::{ForwardAuthLayer, LayerOptions};

/// Asks an external auth service about each request: the
/// [`Authenticator`] behind [`ForwardAuthLayer`].
///
/// Per request, a `GET` goes to the auth service with the original method
/// in `X-Forwarded-Method`, the path and query in `X-Forwarded-Uri` (as
/// the router matched them, normalised: the [`RoutedPath`] when a route
/// stripped or rewrote the path, else the request's), `X-Forwarded-Host`,
/// `X-Forwarded-Proto`, `X-Forwarded-For` (the client address, when the
/// listener recorded it) and the
/// [chosen request headers](ForwardAuthBuilder::forward_header) (default:
/// `Authorization` and `Cookie`).
///
/// - A `2xx` lets the request through; the
///   [chosen response headers](ForwardAuthBuilder::copy_response_header)
///   are copied onto it (incoming copies are always removed first, so a
///   client cannot spoof them).
/// - Any other answer goes back to the client as the auth service gave it:
///   status, headers (`WWW-Authenticate`, `Location`, `Set-Cookie`, ...)
///   and body (up to [`max_body`](ForwardAuthBuilder::max_body) bytes;
///   a larger body is dropped). Redirects are not followed.
/// - An auth service that cannot be reached or times out is a `503`.
///
/// The auth service always decides: with several methods in any-of mode,
/// put this one last. The [`Identity`]: `subject` from the
/// [subject header](ForwardAuthBuilder::subject_header), `method` =
/// `"forward_auth"`.
#[derive(Clone)]
pub struct ForwardAuth {
    inner: Arc<Inner>,
}

/// Settings for [`ForwardAuth`] (from [`ForwardAuth::builder`]) or a
/// [`ForwardAuthLayer`] (from [`ForwardAuthLayer::builder`]).
#[must_use]
pub struct ForwardAuthBuilder<O = ForwardAuth> {
    url: String,
    forward: Vec<HeaderName>,
    copy: Vec<HeaderName>,
    subject: Option<HeaderName>,
    timeout: Duration,
    max_body: usize,
    client: Option<reqwest::Client>,
    pub(crate) layer: LayerOptions,
    _out: PhantomData<fn() -> O>,
}

struct Inner {
    url: reqwest::Url,
    client: reqwest::Client,
    forward: Vec<HeaderName>,
    /// `forward`, as the places the auth service saw.
    read: Vec<TokenSource>,
    copy: Vec<HeaderName>,
    /// `copy` plus the subject header: removed from incoming requests.
    added: Vec<HeaderName>,
    subject: Option<HeaderName>,
    timeout: Duration,
    max_body: usize,
}

/// Headers of the auth service's answer that describe its connection or
/// its framing, not the answer: not passed back.
const HOP_BY_HOP: &[HeaderName] = &[
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::CONTENT_LENGTH,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
];

// === impl ForwardAuth ===

impl ForwardAuth {
    /// Starts building a client of the auth service at `url`.
    pub fn builder(url: impl Into<String>) -> ForwardAuthBuilder<ForwardAuth> {
        ForwardAuthBuilder::new(url.into())
    }
}

impl Authenticator for ForwardAuth {
    fn authenticate<'a>(
        &'a self,
        req: &'a Parts,
    ) -> BoxFuture<'a, Result<Option<Authenticated>, AuthError>> {
        Box::pin(async move { self.inner.ask(req).await.map(Some) })
    }

    fn added_headers(&self) -> &[HeaderName] {
        &self.inner.added
    }

    // No `credential_sources`: which of the forwarded headers (`Cookie`
    // whole, `User-Agent`) hold a credential is the auth service's
    // business, so none is removed when another method decides. When this
    // one does, the auth service saw all of them.
    fn credential_read_from<'a>(&'a self, _req: &Parts) -> &'a [TokenSource] {
        &self.inner.read
    }
}

impl fmt::Debug for ForwardAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        f.debug_struct("ForwardAuth")
            .field("url", &i.url.as_str())
            .field("forward", &i.forward)
            .field("copy", &i.copy)
            .field("subject", &i.subject)
            .field("timeout", &i.timeout)
            .field("max_body", &i.max_body)
            .finish()
    }
}

// === impl Inner ===

impl Inner {
    async fn ask(&self, req: &Parts) -> Result<Authenticated, AuthError> {
        let mut sub = self
            .client
            .get(self.url.clone())
            .timeout(self.timeout)
            .header("x-forwarded-method", req.method.as_str());
        // The path the client asked for, as routed: the router may since
        // have stripped or rewritten it for the upstream, and the auth
        // service's rules (`^/admin/`) are written against the former.
        let routed = req.extensions.get::<RoutedPath>().map(|r| &r.0);
        if let Some(pq) = routed.or(req.uri.path_and_query()) {
            sub = sub.header("x-forwarded-uri", pq.as_str());
        }
        let host = req.headers.get(HOST).cloned().or_else(|| {
            req.uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        if let Some(h) = host {
            sub = sub.header("x-forwarded-host", h);
        }
        let addr = req.extensions.get::<ClientAddr>();
        let tls = addr.map_or(req.uri.scheme_str() == Some("https"), |a| a.tls);
        sub = sub.header("x-forwarded-proto", if tls { "https" } else { "http" });
        if let Some(a) = addr {
            sub = sub.header("x-forwarded-for", a.client.to_string());
        }
        for name in &self.forward {
            if *name == header::COOKIE {
                // HTTP/2 cookie crumbs are one field toward HTTP/1.1
                // (RFC 9113 §8.2.3).
                let crumbs: Vec<&[u8]> = req
                    .headers
                    .get_all(name)
                    .iter()
                    .map(HeaderValue::as_bytes)
                    .collect();
                if !crumbs.is_empty()
                    && let Ok(v) = HeaderValue::from_bytes(&crumbs.join(&b"; "[..]))
                {
                    sub = sub.header(name, v);
                }
                continue;
            }
            for value in req.headers.get_all(name) {
                sub = sub.header(name, value);
            }
        }

        let rsp = sub.send().await.map_err(|e| {
            AuthError::unavailable(
                reason::AUTH_SERVICE_UNAVAILABLE,
                "the authorization service is unavailable; try again later",
                // Without the URL: reqwest's message would show its user info.
                e.without_url(),
            )
        })?;
        if rsp.status().is_success() {
            let mut headers = HeaderMap::new();
            for name in &self.copy {
                for value in rsp.headers().get_all(name) {
                    headers.append(name.clone(), value.clone());
                }
            }
            let subject = self
                .subject
                .as_ref()
                .and_then(|h| rsp.headers().get(h))
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            return Ok(Authenticated {
                identity: Identity {
                    subject,
                    method: Some("forward_auth"),
                    ..Identity::default()
                },
                headers,
            });
        }

        let status = rsp.status();
        let mut headers = rsp.headers().clone();
        for h in HOP_BY_HOP {
            headers.remove(h);
        }
        let body = match http_client::read_limited(rsp, self.max_body).await {
            Ok(b) => b,
            Err(e) => {
                tracing::debug!(error = %e, %status, "auth service answer body dropped");
                headers.remove(header::CONTENT_TYPE);
                Bytes::new()
            }
        };
        tracing::debug!(%status, "auth service refused the request");
        let mut answer = Response::new(body);
        *answer.status_mut() = status;
        *answer.headers_mut() = headers;
        Err(AuthError::answered(answer))
    }
}

// === impl ForwardAuthBuilder ===

impl<O> ForwardAuthBuilder<O> {
    fn new(url: String) -> Self {
        Self {
            url,
            forward: Vec::new(),
            copy: Vec::new(),
            subject: None,
            timeout: Duration::from_secs(5),
            max_body: 64 * 1024,
            client: None,
            layer: LayerOptions::default(),
            _out: PhantomData,
        }
    }

    /// A request header sent to the auth service. The first call replaces
    /// the default (`Authorization`, `Cookie`).
    pub fn forward_header(mut self, name: HeaderName) -> Self {
        self.forward.push(name);
        self
    }

    /// A header of the auth service's `2xx` answer copied onto the
    /// upstream request (`X-User-Id`, `X-Auth-Roles`, ...).
    pub fn copy_response_header(mut self, name: HeaderName) -> Self {
        self.copy.push(name);
        self
    }

    /// The header of the auth service's `2xx` answer that names the
    /// caller, for [`Identity::subject`].
    pub fn subject_header(mut self, name: HeaderName) -> Self {
        self.subject = Some(name);
        self
    }

    /// How long the auth service may take, connecting included. Default
    /// 5 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = crate::bounded(timeout);
        self
    }

    /// The largest refusal body passed back to the client. Default 64 KiB.
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// The HTTP client to use. It must not follow redirects, or the
    /// client would never see the auth service's `302`.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.client = Some(client);
        self
    }

    fn build_forward(self) -> Result<ForwardAuth, BuildError> {
        let url = http_client::parse_url("auth service", &self.url)?;
        if self.timeout.is_zero() {
            return Err(BuildError::new("the forward-auth timeout must not be zero"));
        }
        let client = match self.client {
            Some(c) => c,
            None => http_client::client(self.timeout)?,
        };
        let forward = if self.forward.is_empty() {
            vec![header::AUTHORIZATION, header::COOKIE]
        } else {
            // Each name once: a name listed twice would send its values
            // twice (and the joined cookie line twice).
            let mut seen = Vec::with_capacity(self.forward.len());
            for name in self.forward {
                if !seen.contains(&name) {
                    seen.push(name);
                }
            }
            seen
        };
        let mut added = self.copy.clone();
        added.extend(self.subject.iter().cloned());
        Ok(ForwardAuth {
            inner: Arc::new(Inner {
                url,
                client,
                read: forward.iter().cloned().map(TokenSource::Header).collect(),
                forward,
                copy: self.copy,
                added,
                subject: self.subject,
                timeout: self.timeout,
                max_body: self.max_body,
            }),
        })
    }
}

impl ForwardAuthBuilder<ForwardAuth> {
    /// Builds the client, to combine with other methods in an
    /// [`AuthLayer`](crate::AuthLayer).
    pub fn build(self) -> Result<ForwardAuth, BuildError> {
        self.build_forward()
    }
}

impl ForwardAuthBuilder<ForwardAuthLayer> {
    /// Builds the layer.
    pub fn build(self) -> Result<ForwardAuthLayer, BuildError> {
        let layer = self.layer.clone();
        Ok(ForwardAuthLayer::from_parts(self.build_forward()?, layer))
    }
}

impl ForwardAuthLayer {
    /// Starts building the layer for the auth service at `url`.
    pub fn builder(url: impl Into<String>) -> ForwardAuthBuilder<ForwardAuthLayer> {
        ForwardAuthBuilder::new(url.into())
    }
}

impl<O> fmt::Debug for ForwardAuthBuilder<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ForwardAuthBuilder")
            .field("url", &self.url)
            .field("forward", &self.forward)
            .field("copy", &self.copy)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

crate::macros::layer_options!(ForwardAuthBuilder<ForwardAuthLayer>);
