//! [`Proxy`]: the forwarding service for one upstream base URL.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use http::header::HOST;
use http::request::Parts;
use http::uri::PathAndQuery;
use http::uri::Scheme;
use http::{HeaderValue, Request, Response, Uri, Version};
use http_body::Body;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use towergate_core::{BoxError, ClientAddr, ConnectionLease, RequestId, TrustedProxies};

use crate::client::{Client, ProxyBody};
use crate::error::{BodyError, BuildError};
use crate::future::{Exchange, ResponseFuture};
use crate::headers::{self, Hop, Keep, ViaEntries};
use crate::pool::Host;

/// Forwards requests to one upstream base URL.
///
/// Each request's path and query are appended to the upstream's base path
/// (`http://svc:8080/api` + `/42?x=1` → `/api/42?x=1`), hop-by-hop headers
/// are removed both ways, forwarding headers (`X-Forwarded-For`,
/// `Forwarded`, `X-Forwarded-Proto`, `X-Forwarded-Host`, `Via`) are written,
/// and both bodies stream through unbuffered. Protocol upgrades (WebSocket)
/// are tunnelled when the request was served by hyper (or axum).
///
/// Failures are `Err(BoxError)` holding a typed error from [`error`](crate::error);
/// map them to a response with [`to_problem`](crate::error::to_problem).
///
/// Cloning is cheap: clones share the settings and the [`Client`]'s pools.
///
/// See the [crate docs](crate) for an example.
#[derive(Clone, Debug)]
pub struct Proxy {
    shared: Arc<Shared>,
}

/// Settings for a [`Proxy`]; see [`Proxy::builder`].
#[derive(Debug)]
#[must_use]
pub struct ProxyBuilder {
    upstream: String,
    client: Option<Client>,
    timeout: Duration,
    preserve_host: bool,
    host_override: Option<String>,
    trusted: TrustedProxies,
    via: String,
    route_settings: bool,
    tunnel_idle_timeout: Option<Duration>,
    upgrade_protocols: Vec<String>,
    body_idle_timeout: Option<Duration>,
}

/// A route's own settings for a proxy it shares with other routes: the
/// response timeout and the Host sent upstream. Put it in the request's
/// extensions; a proxy built with
/// [`route_settings(true)`](ProxyBuilder::route_settings) uses it instead
/// of its own settings (any other proxy ignores it).
///
/// This is how the towergate binary keeps one balanced pool per upstream
/// (one set of health checks, ejections and circuit-breaker counts) when
/// routes with different `timeout`, `preserve_host` or `host_rewrite`
/// share it.
///
/// ```
/// use std::time::Duration;
/// use towergate_proxy::RouteSettings;
///
/// let slow_reports = RouteSettings::new()
///     .timeout(Duration::from_secs(120))
///     .host_override("reports.internal")?;
/// # drop(slow_reports);
/// # Ok::<(), towergate_proxy::BuildError>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct RouteSettings {
    timeout: Option<Duration>,
    host: Option<RouteHost>,
}

#[derive(Clone, Debug)]
enum RouteHost {
    Preserve,
    Fixed(HeaderValue),
}

impl RouteSettings {
    /// The proxy's own settings, until changed.
    pub fn new() -> Self {
        Self::default()
    }

    /// This response timeout instead of the proxy's
    /// ([`ProxyBuilder::timeout`]).
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }

    /// Keep the client's `Host` ([`ProxyBuilder::preserve_host`]); a
    /// [`host_override`](Self::host_override) wins over it.
    pub fn preserve_host(mut self, yes: bool) -> Self {
        match (&self.host, yes) {
            (None, true) => self.host = Some(RouteHost::Preserve),
            (Some(RouteHost::Preserve), false) => self.host = None,
            _ => {}
        }
        self
    }

    /// Always send this `Host` ([`ProxyBuilder::host_override`]); an
    /// invalid header value is an error.
    pub fn host_override(mut self, host: impl AsRef<str>) -> Result<Self, BuildError> {
        let host = host.as_ref();
        let value = HeaderValue::from_str(host)
            .map_err(|e| BuildError::with_source(format!("invalid Host override `{host}`"), e))?;
        self.host = Some(RouteHost::Fixed(value));
        Ok(self)
    }
}

/// What every clone of a [`Proxy`] shares, and every in-flight request
/// refers to.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) client: Client,
    /// This upstream's connections, found once at build time.
    pool: Arc<Host>,
    #[cfg(test)]
    scheme: Scheme,
    base_path: String,
    /// The upstream's authority, for errors and logs.
    pub(crate) upstream: Arc<str>,
    pub(crate) timeout: Duration,
    host: HostPolicy,
    trusted: TrustedProxies,
    /// This proxy's `Via` entries, per protocol version.
    pub(crate) via: ViaEntries,
    /// Whether a request's [`RouteSettings`] are used.
    route_settings: bool,
    /// How long an upgraded connection may carry nothing either way.
    pub(crate) tunnel_idle_timeout: Option<Duration>,
    /// The `Upgrade` protocols tunnelled (lowercase names).
    upgrade_protocols: Box<[String]>,
    /// The longest pause in a response body.
    pub(crate) body_idle_timeout: Option<Duration>,
}

#[derive(Debug)]
enum HostPolicy {
    /// The upstream's own authority.
    Upstream(HeaderValue),
    /// The Host the client asked for.
    Preserve(HeaderValue),
    /// A fixed value.
    Fixed(HeaderValue),
}

// === impl Proxy ===

impl Proxy {
    /// Starts building a proxy to `upstream`, an `http://` or `https://`
    /// URL with an optional base path (`https://svc.internal/base`).
    pub fn builder(upstream: impl AsRef<str>) -> ProxyBuilder {
        ProxyBuilder {
            upstream: upstream.as_ref().to_owned(),
            client: None,
            timeout: Duration::from_secs(30),
            preserve_host: false,
            host_override: None,
            trusted: TrustedProxies::none(),
            via: "towergate".to_owned(),
            route_settings: false,
            tunnel_idle_timeout: None,
            upgrade_protocols: vec!["websocket".to_owned()],
            body_idle_timeout: Some(Duration::from_secs(300)),
        }
    }

    /// The upstream's authority (`host:port`).
    pub fn upstream(&self) -> &str {
        &self.shared.upstream
    }

    /// The client this proxy sends with.
    pub fn client(&self) -> &Client {
        &self.shared.client
    }
}

impl<B> tower::Service<Request<B>> for Proxy
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<crate::ResponseBody>;
    type Error = BoxError;
    type Future = ResponseFuture;

    /// Always ready: the pooled client queues nothing, so there is no
    /// capacity to wait for (and axum routers assume readiness).
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        // Upgrade is an HTTP/1.1 mechanism; an HTTP/1.0 server must ignore
        // it. Only the protocols this proxy tunnels are offered upstream; a
        // request asking for none of them goes without `Upgrade` (removed
        // with the hop-by-hop headers).
        let offer = if req.version() == Version::HTTP_11 && headers::is_upgrade(req.headers()) {
            headers::upgrade_offer(req.headers(), &self.shared.upgrade_protocols)
        } else {
            None
        };
        let upgrade = offer.is_some();
        // Taken before the request is consumed: hyper resolves it with the
        // client's connection once our 101 has been written.
        let on_upgrade = offer.map(|offer| {
            req.headers_mut()
                .insert(http::header::UPGRADE, offer.clone());
            let lease = req.extensions().get::<ConnectionLease>().cloned();
            (hyper::upgrade::on(&mut req), lease, offer)
        });
        let (mut parts, body) = req.into_parts();
        let request_id = parts.extensions.get::<RequestId>().cloned();
        let method = parts.method.clone();
        let route = if self.shared.route_settings {
            parts.extensions.remove::<RouteSettings>()
        } else {
            None
        };
        let (timeout, route_host) = match route {
            Some(r) => (r.timeout.unwrap_or(self.shared.timeout), r.host),
            None => (self.shared.timeout, None),
        };

        let dispatched = Arc::new(AtomicBool::new(false));
        let exchange = Exchange {
            shared: self.shared.clone(),
            on_upgrade,
            request_id,
            method,
            timeout,
            dispatched: dispatched.clone(),
        };
        match self.shared.outgoing(parts, body, upgrade, route_host) {
            Ok((out, upload)) => {
                let response = self.shared.pool.send(out, upgrade, dispatched);
                ResponseFuture::waiting(response, exchange, upload)
            }
            Err(error) => {
                exchange.log_failure(&*error);
                ResponseFuture::failed(error)
            }
        }
    }
}

// === impl ProxyBuilder ===

impl ProxyBuilder {
    /// The client to send with; share one between proxies with the same
    /// TLS and protocol settings. Default: `Client::builder().build()`.
    pub fn client(mut self, c: Client) -> Self {
        self.client = Some(c);
        self
    }

    /// How long the upstream may take to send its response headers,
    /// connecting included. The streamed body is not bounded by it, so long
    /// downloads and event streams are fine. Default 30 s. Expiry fails the
    /// request with [`UpstreamTimeout`](crate::error::UpstreamTimeout).
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// Keep the client's `Host` instead of sending the upstream's authority.
    /// Default false.
    ///
    /// Over an HTTP/2 upstream connection the host goes as `:authority`
    /// (HTTP/2 servers read it there), with no `host` field; the
    /// connection and its TLS name stay the upstream's.
    pub fn preserve_host(mut self, yes: bool) -> Self {
        self.preserve_host = yes;
        self
    }

    /// Always send this `Host`; wins over [`preserve_host`](Self::preserve_host).
    pub fn host_override(mut self, host: impl Into<String>) -> Self {
        self.host_override = Some(host.into());
        self
    }

    /// Closes an upgraded connection (a WebSocket tunnel) that carries no
    /// byte either way for this long, both sides at once. Default: none
    /// (a tunnel lasts as long as its two ends keep it open).
    pub fn tunnel_idle_timeout(mut self, idle: Option<Duration>) -> Self {
        self.tunnel_idle_timeout = idle;
        self
    }

    /// The longest pause in a response body once its headers came; a body
    /// that pauses longer fails with
    /// [`UpstreamTimeout`](crate::error::UpstreamTimeout) (see
    /// [`IdleTimeout`](crate::IdleTimeout)). Default 5 minutes; `None`:
    /// bodies may pause for ever.
    pub fn body_idle_timeout(mut self, idle: Option<Duration>) -> Self {
        self.body_idle_timeout = idle;
        self
    }

    /// The protocols a client may switch to through the proxy (an
    /// `Upgrade` request answered `101`), by name, without version.
    /// Default: `websocket`. A request asking for any other keeps no
    /// `Upgrade`, and goes as a plain request. `h2c` is refused at
    /// [`build`](Self::build): a tunnel hands the client a raw HTTP/2
    /// connection to the upstream, past every layer of the gateway
    /// ("h2c smuggling"), and RFC 9113 deprecates that upgrade.
    pub fn upgrade_protocols<I, P>(mut self, protocols: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        self.upgrade_protocols = protocols.into_iter().map(Into::into).collect();
        self
    }

    /// Use the [`RouteSettings`] a request carries in its extensions, if
    /// any, instead of this proxy's timeout and Host. Default false.
    pub fn route_settings(mut self, yes: bool) -> Self {
        self.route_settings = yes;
        self
    }

    /// Peers whose forwarding headers are believed and extended; anyone
    /// else's are replaced. Default: nobody.
    pub fn trusted_proxies(mut self, t: TrustedProxies) -> Self {
        self.trusted = t;
        self
    }

    /// The name this proxy gives itself in `Via` (an RFC 9110 token).
    /// Default `towergate`.
    pub fn via(mut self, pseudonym: impl Into<String>) -> Self {
        self.via = pseudonym.into();
        self
    }

    /// Builds the proxy. A URL that does not parse, has a scheme other than
    /// `http`/`https`, has user info or a query, an invalid Host override
    /// or `Via` pseudonym is an error.
    pub fn build(self) -> Result<Proxy, BuildError> {
        let given = self.upstream.trim();
        // Errors show the URL without a password: they reach logs and the
        // admin API's reload answers.
        let raw = towergate_core::url_without_password(given);
        let uri: Uri = given
            .parse()
            .map_err(|e| BuildError::with_source(format!("invalid upstream URL `{raw}`"), e))?;
        let scheme = match uri.scheme() {
            Some(s) if *s == Scheme::HTTP || *s == Scheme::HTTPS => s.clone(),
            Some(s) => {
                return Err(BuildError::new(format!(
                    "upstream URL `{raw}` has scheme `{s}`; expected http or https"
                )));
            }
            None => {
                return Err(BuildError::new(format!(
                    "upstream URL `{raw}` needs a scheme (http:// or https://)"
                )));
            }
        };
        let authority = match uri.authority() {
            Some(a) if a.as_str().contains('@') => {
                return Err(BuildError::new(format!(
                    "upstream URL `{raw}` must not contain user info"
                )));
            }
            Some(a) if !a.host().is_empty() => a.clone(),
            _ => {
                return Err(BuildError::new(format!(
                    "upstream URL `{raw}` needs a host"
                )));
            }
        };
        if uri.query().is_some() {
            return Err(BuildError::new(format!(
                "upstream URL `{raw}` must not have a query"
            )));
        }
        let base_path = uri.path().trim_end_matches('/').to_owned();

        let upstream_host = HeaderValue::from_str(authority.as_str())
            .map_err(|e| BuildError::with_source("upstream authority is not a valid Host", e))?;
        let host =
            match self.host_override {
                Some(h) => HostPolicy::Fixed(HeaderValue::from_str(&h).map_err(|e| {
                    BuildError::with_source(format!("invalid Host override `{h}`"), e)
                })?),
                None if self.preserve_host => HostPolicy::Preserve(upstream_host),
                None => HostPolicy::Upstream(upstream_host),
            };
        if !headers::is_token(&self.via) {
            return Err(BuildError::new(format!(
                "Via pseudonym `{}` is not a token",
                self.via
            )));
        }
        let via = ViaEntries::new(&self.via).map_err(|e| {
            BuildError::with_source(format!("Via pseudonym `{}` is not a token", self.via), e)
        })?;
        let mut upgrade_protocols = Vec::with_capacity(self.upgrade_protocols.len());
        for p in &self.upgrade_protocols {
            if !headers::is_token(p) {
                return Err(BuildError::new(format!(
                    "upgrade protocol `{p}` is not a token"
                )));
            }
            if p.eq_ignore_ascii_case("h2c") {
                return Err(BuildError::new(
                    "upgrade protocol `h2c` cannot be tunnelled: it would give clients an HTTP/2 connection to the upstream past the gateway's checks",
                ));
            }
            upgrade_protocols.push(p.to_ascii_lowercase());
        }
        let client = match self.client {
            Some(c) => c,
            None => Client::builder().build()?,
        };

        let pool = client.host(&scheme, &authority);
        Ok(Proxy {
            shared: Arc::new(Shared {
                client,
                pool,
                #[cfg(test)]
                scheme,
                upstream: Arc::from(authority.as_str()),
                base_path,
                timeout: self.timeout,
                host,
                trusted: self.trusted,
                via,
                route_settings: self.route_settings,
                tunnel_idle_timeout: self.tunnel_idle_timeout,
                upgrade_protocols: upgrade_protocols.into(),
                body_idle_timeout: self.body_idle_timeout,
            }),
        })
    }
}

// === impl Shared ===

impl Shared {
    /// The request as it goes upstream, and, when it has a body to send,
    /// what tells when that body ended.
    fn outgoing<B>(
        &self,
        parts: Parts,
        body: B,
        upgrade: bool,
        route_host: Option<RouteHost>,
    ) -> Result<(Request<ProxyBody>, Option<Arc<Upload>>), BoxError>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let Parts {
            method,
            uri,
            version,
            mut headers,
            extensions,
            ..
        } = parts;
        let http2_only = self.client.is_http2_only();
        let requested_host = headers::requested_host(&headers, &uri);

        let names = headers::scan_names(&headers);
        if names.hop_by_hop {
            headers::strip_hop_by_hop_found(
                &mut headers,
                Keep {
                    upgrade,
                    // gRPC needs `TE: trailers`, allowed in HTTP/2 only:
                    // kept wherever the connection may be HTTP/2 (the
                    // pool drops it if ALPN picks HTTP/1.1).
                    te_trailers: (http2_only || self.pool.may_pick_http2()) && !upgrade,
                },
            );
        }
        let proto = match uri.scheme_str() {
            Some("https") => Some("https"),
            Some("http") => Some("http"),
            _ => None,
        };
        let hop = Hop {
            client: extensions.get::<ClientAddr>(),
            trusted: &self.trusted,
            host: requested_host.as_ref(),
            proto,
        };
        if names.claims {
            headers::strip_client_claims(&mut headers, &hop);
        }
        headers::set_forwarding(&mut headers, &hop);
        headers::append_via(&mut headers, version, &self.via);
        if version == Version::HTTP_2 {
            headers::join_cookie_crumbs(&mut headers);
        }
        let host = match (route_host, &self.host) {
            (Some(RouteHost::Fixed(h)), _) => h,
            (None, HostPolicy::Upstream(h) | HostPolicy::Fixed(h)) => h.clone(),
            (
                Some(RouteHost::Preserve),
                HostPolicy::Upstream(own) | HostPolicy::Fixed(own) | HostPolicy::Preserve(own),
            )
            | (None, HostPolicy::Preserve(own)) => requested_host.unwrap_or_else(|| own.clone()),
        };
        headers.insert(HOST, host);

        // Origin form, as HTTP/1.1 sends it; the pool adds the scheme and
        // authority for an HTTP/2 connection.
        let path = match uri.path_and_query() {
            // Without a base path the request's own path and query go as
            // they are: a clone that shares their bytes, nothing to parse.
            // (`as_str`, not `path`: an empty path reads as "/" through
            // `path` but is stored empty, and HTTP/2 sends it as stored.)
            Some(pq)
                if self.base_path.is_empty()
                    && (pq.as_str().starts_with('/') || pq.as_str() == "*") =>
            {
                pq.clone()
            }
            pq => PathAndQuery::try_from(headers::join_path(&self.base_path, pq))?,
        };
        let uri = Uri::from(path);

        // Marking body errors lets a failed exchange be blamed on the caller
        // rather than on a healthy upstream.
        let body = body.map_err(|e| -> BoxError { Box::new(BodyError(e.into())) });
        // The response timeout counts from the end of the body (see
        // `ResponseFuture`): a body still to send is watched.
        let (body, upload) = if body.is_end_stream() {
            (UnsyncBoxBody::new(body), None)
        } else {
            let upload = Arc::new(Upload::default());
            let watched = Watched {
                due: body.size_hint().exact(),
                inner: body,
                upload: upload.clone(),
            };
            (UnsyncBoxBody::new(watched), Some(upload))
        };
        let mut out = Request::new(body);
        *out.method_mut() = method;
        *out.uri_mut() = uri;
        // HTTP/1.1 unless the pool finds an HTTP/2 connection, which sets
        // the version (and the absolute URI) itself.
        *out.version_mut() = Version::HTTP_11;
        *out.headers_mut() = headers;
        Ok((out, upload))
    }
}

/// When a request body was sent to its end, and whether it is waiting for
/// the client.
#[derive(Debug, Default)]
pub(crate) struct Upload {
    ended: OnceLock<Instant>,
    /// The last read of the body found nothing from the client yet. When
    /// false while the body has not ended, the body is not being read:
    /// the upstream stopped taking it (a full window or socket), which is
    /// the upstream's slowness, not the client's.
    waiting_on_client: AtomicBool,
    /// The error the client's body failed with. Over HTTP/2 hyper only
    /// logs it and resets the stream, so the exchange fails with a plain
    /// reset that would be blamed on the upstream; kept here, the failure
    /// is put back on the client (and a body over its limit stays a 413).
    body_error: Mutex<Option<BoxError>>,
}

impl Upload {
    /// When the body ended, if it has.
    pub(crate) fn ended(&self) -> Option<Instant> {
        self.ended.get().copied()
    }

    /// The error the body failed with, if it did: taken once.
    pub(crate) fn take_body_error(&self) -> Option<BoxError> {
        // A poisoned lock still holds the error: it is only ever stored.
        self.body_error
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }

    /// Whether the body is unfinished because the client is slow.
    pub(crate) fn client_is_slow(&self) -> bool {
        self.ended.get().is_none() && self.waiting_on_client.load(Ordering::Relaxed)
    }
}

pin_project_lite::pin_project! {
    /// A request body that records in its [`Upload`] when it ends.
    struct Watched<B> {
        #[pin]
        inner: B,
        upload: Arc<Upload>,
        // Bytes still due when the body's length is known: hyper stops
        // reading a body whose declared length has been sent, so its end
        // is seen here rather than in a last `None`.
        due: Option<u64>,
    }
}

impl<B: Body<Error = BoxError>> Body for Watched<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let frame = match this.inner.as_mut().poll_frame(cx) {
            Poll::Pending => {
                this.upload.waiting_on_client.store(true, Ordering::Relaxed);
                return Poll::Pending;
            }
            Poll::Ready(frame) => frame,
        };
        this.upload
            .waiting_on_client
            .store(false, Ordering::Relaxed);
        // The end is the last frame (hyper may not ask again once the body
        // says it ended, or once its declared length is sent) or `None`;
        // not an error.
        let ended = match &frame {
            None => true,
            Some(Ok(f)) => {
                if let (Some(due), Some(data)) = (this.due.as_mut(), f.data_ref()) {
                    *due = due.saturating_sub(data.remaining() as u64);
                }
                this.inner.is_end_stream() || *this.due == Some(0)
            }
            Some(Err(_)) => false,
        };
        if ended {
            let _ = this.upload.ended.set(Instant::now());
        }
        match frame {
            Some(Err(e)) => {
                // hyper gets a stand-in: the error itself is not `Clone`,
                // and over HTTP/2 hyper drops what it is given.
                *this
                    .upload
                    .body_error
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(e);
                let stand_in: BoxError = Box::new(BodyError("the request body failed".into()));
                Poll::Ready(Some(Err(stand_in)))
            }
            frame => Poll::Ready(frame),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn shareable_across_tasks() {
        fn shared<T: Clone + Send + Sync + 'static>() {}
        fn sendable<T: Send + 'static>() {}
        shared::<Proxy>();
        shared::<Client>();
        sendable::<ResponseFuture>();
    }

    #[test]
    fn rejects_bad_upstreams() {
        for bad in [
            "",
            "not a url",
            "127.0.0.1:8080",
            "ftp://h/",
            "h2c://h:1",
            "http://user:pw@h/",
            "http://h/api?x=1",
            "/relative",
        ] {
            let err = Proxy::builder(bad)
                .client(Client::builder().build().unwrap())
                .build()
                .unwrap_err();
            assert!(!err.to_string().is_empty(), "{bad}");
        }
    }

    #[test]
    fn rejects_bad_settings() {
        let client = Client::builder().build().unwrap();
        let err = Proxy::builder("http://h")
            .client(client.clone())
            .via("two words")
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("Via"));
        let err = Proxy::builder("http://h")
            .client(client)
            .host_override("bad\nhost")
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("Host"));
    }

    #[test]
    fn accepts_base_paths() {
        let client = Client::builder().build().unwrap();
        let p = Proxy::builder("https://svc.internal/base/")
            .client(client)
            .build()
            .unwrap();
        assert_eq!(p.upstream(), "svc.internal");
        assert_eq!(p.shared.base_path, "/base");
        assert_eq!(p.shared.scheme, Scheme::HTTPS);
    }

    /// The request's path and query as they go upstream, with and without
    /// a base path: odd request targets come out in origin form.
    #[test]
    fn outgoing_paths() {
        let client = Client::builder().build().unwrap();
        let bare = Proxy::builder("http://127.0.0.1:7001")
            .client(client.clone())
            .build()
            .unwrap();
        let based = Proxy::builder("http://127.0.0.1:7001/api")
            .client(client)
            .build()
            .unwrap();
        for (target, plain, with_base) in [
            ("/a/b?x=1", "/a/b?x=1", "/api/a/b?x=1"),
            ("/", "/", "/api/"),
            ("*", "*", "/api"),
            ("http://h?x=1", "/?x=1", "/api/?x=1"),
            ("http://h", "/", "/api/"),
            ("http://h/p?q", "/p?q", "/api/p?q"),
        ] {
            for (proxy, want) in [(&bare, plain), (&based, with_base)] {
                let req = Request::builder()
                    .uri(target)
                    .body(http_body_util::Empty::<Bytes>::new())
                    .unwrap();
                let (parts, body) = req.into_parts();
                let (out, _) = proxy.shared.outgoing(parts, body, false, None).unwrap();
                assert_eq!(
                    out.uri().path_and_query().unwrap().as_str(),
                    want,
                    "{target}"
                );
            }
        }
    }

    #[tokio::test]
    async fn outgoing_request() {
        let client = Client::builder().build().unwrap();
        let p = Proxy::builder("http://127.0.0.1:7001/api")
            .client(client)
            .preserve_host(true)
            .build()
            .unwrap();
        let mut req = Request::get("/42?x=1")
            .version(Version::HTTP_2)
            .header("host", "api.example")
            .header("connection", "x-drop")
            .header("x-drop", "1")
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
        req.extensions_mut()
            .insert(ClientAddr::direct("192.0.2.1:5000".parse().unwrap(), true));
        let (parts, body) = req.into_parts();
        let (out, _) = p.shared.outgoing(parts, body, false, None).unwrap();
        assert_eq!(out.uri(), "/api/42?x=1");
        assert_eq!(out.version(), Version::HTTP_11);
        let h = out.headers();
        assert_eq!(h["host"], "api.example");
        assert_eq!(h["via"], "2 towergate");
        assert_eq!(h["x-forwarded-for"], "192.0.2.1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["forwarded"], "for=192.0.2.1;proto=https;host=api.example");
        assert!(h.get("x-drop").is_none());
    }
}
