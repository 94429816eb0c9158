//! [`Cache`]: the service that answers from the store or forwards.

use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{
    CACHE_CONTROL, CONTENT_LENGTH, CONTENT_LOCATION, DATE, ETAG, EXPIRES, IF_MODIFIED_SINCE,
    IF_NONE_MATCH, LAST_MODIFIED, LOCATION, RANGE, SET_COOKIE, VARY,
};
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Limited};
use tower::Service;
use towergate_core::{BoxError, Identity, Problem};

use crate::body::CacheBody;
use crate::cache_control::{CacheControl, DELTA_SECONDS_MAX};
use crate::collapse::{self, Join, Leader, Outcome, Waited};
use crate::conditional::{self, ETag};
use crate::freshness::{Freshness, Timing};
use crate::future::ResponseFuture;
use crate::key::{PrimaryKey, request_host, request_is_https};
use crate::layer::{CacheLayer, Config};
use crate::policy::{self, NotStored, Rules, Use, Why};
use crate::store::{FillTicket, Lookup, Pending, Stored};
use crate::vary::secondary_key;

/// The `Cache-Status` response header (RFC 9211).
pub const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// Answers GET and HEAD requests from the store when it may, and forwards
/// the rest: see the [crate docs](crate).
///
/// Built by [`CacheLayer`].
#[derive(Clone, Debug)]
pub struct Cache<S> {
    inner: S,
    layer: CacheLayer,
}

// === impl Cache ===

impl<S> Cache<S> {
    /// Wraps `inner` with the configuration (and store) of `layer`.
    pub fn new(inner: S, layer: CacheLayer) -> Self {
        Self { inner, layer }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for Cache<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    ReqB: Default + Send + 'static,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    type Response = Response<CacheBody<ResB>>;
    type Error = BoxError;
    type Future = ResponseFuture<ResB>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        // The readied service handles this request; the clone stays.
        let clone = self.inner.clone();
        let svc = std::mem::replace(&mut self.inner, clone);
        let (parts, body) = req.into_parts();
        let flow = Flow {
            cfg: Arc::clone(&self.layer.config),
            svc,
            parts,
            body: Some(body),
        };
        ResponseFuture::new(Box::pin(flow.run()))
    }
}

/// One request's way through the cache.
struct Flow<S, ReqB> {
    cfg: Arc<Config>,
    svc: S,
    parts: Parts,
    /// Taken by the first upstream request; later ones (a refetch after a
    /// failed validation) send a default body, as GET/HEAD have none.
    body: Option<ReqB>,
}

impl<S, ReqB, ResB> Flow<S, ReqB>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    ReqB: Default + Send + 'static,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    async fn run(mut self) -> Result<Response<CacheBody<ResB>>, BoxError> {
        let method = self.parts.method.clone();
        if method == Method::GET || method == Method::HEAD {
            self.cacheable().await
        } else if is_safe(&method) {
            self.count(|c| &c.bypassed);
            let req = self.request();
            let rsp = self.send(req).await?;
            Ok(self.pass(rsp, "fwd=method"))
        } else {
            self.unsafe_method().await
        }
    }

    async fn cacheable(self) -> Result<Response<CacheBody<ResB>>, BoxError> {
        // A WebSocket handshake (any upgrade) is a new connection to the
        // upstream, never an answer to store or to be answered from: a
        // page stored for a plain GET of the same URL would otherwise be
        // served to every handshake, and a background refresh would carry
        // the handshake's headers (and its connection's upgrade) upstream.
        if self.parts.headers.contains_key(http::header::UPGRADE) {
            return self.bypass().await;
        }
        let mut req_cc = CacheControl::from_request_headers(&self.parts.headers);
        if self.cfg.ignore_request_cache_control {
            // All but `no-store`: what the client asks not to be stored.
            req_cc = CacheControl {
                no_store: req_cc.no_store,
                ..CacheControl::default()
            };
        }
        if req_cc.no_store {
            return self.bypass().await;
        }
        let https = request_is_https(&self.parts.uri, &self.parts.extensions);
        let key = match self.cfg.key.primary(
            &self.parts.uri,
            &self.parts.headers,
            &self.parts.extensions,
            https,
        ) {
            Ok(key) => key,
            Err(_) => return self.bypass().await,
        };
        let now = self.now();
        match self.cfg.store.lookup(&key, &self.parts.headers) {
            Lookup::Found(stored) => self.found(key, stored, &req_cc, now).await,
            miss if req_cc.only_if_cached => {
                drop(miss);
                Ok(self.only_if_cached())
            }
            Lookup::UriMiss => self.miss(key, &req_cc, "uri-miss").await,
            Lookup::VaryMiss => self.miss(key, &req_cc, "vary-miss").await,
        }
    }

    async fn found(
        self,
        key: PrimaryKey,
        stored: Arc<Stored>,
        req_cc: &CacheControl,
        now: SystemTime,
    ) -> Result<Response<CacheBody<ResB>>, BoxError> {
        let fresh = stored.freshness(self.cfg.default_ttl, now);
        match policy::decide(&stored.cc, &fresh, req_cc) {
            Use::Fresh => {
                self.count(|c| &c.hits);
                Ok(self.serve(&stored, now, "hit", "", None))
            }
            Use::MaxStale => {
                self.count(|c| &c.stale_hits);
                Ok(self.serve(&stored, now, "hit", "; detail=max-stale", None))
            }
            Use::WhileRevalidate => {
                self.count(|c| &c.stale_hits);
                self.revalidate_in_background(&key, &stored);
                Ok(self.serve(&stored, now, "hit", "; detail=stale-while-revalidate", None))
            }
            Use::Forward(_) if req_cc.only_if_cached => Ok(self.only_if_cached()),
            // An entry gone stale is a miss for everyone asking at once:
            // one revalidates, the others wait for its result; only when
            // that result can serve them (not for `no-cache` or a zero
            // lifetime, which every request must revalidate anyway), and
            // per variant, which is what is revalidated.
            Use::Forward(Why::Stale)
                if self.collapsible() && !stored.cc.no_cache && !fresh.lifetime.is_zero() =>
            {
                let flight = Arc::clone(&stored.variant);
                match collapse::join(
                    &self.cfg.store,
                    &flight,
                    self.cfg.max_waiters,
                    self.cfg.collapse_timeout,
                ) {
                    Join::Leader(leader) => {
                        self.revalidate(key, stored, Why::Stale, req_cc, Some(leader))
                            .await
                    }
                    Join::Busy => self.revalidate(key, stored, Why::Stale, req_cc, None).await,
                    Join::Waiter(waiter) => {
                        let waited = collapse::wait(
                            waiter,
                            &self.cfg.store,
                            &flight,
                            self.cfg.max_waiters,
                            self.cfg.collapse_timeout,
                            || fresh_entry(&self.cfg, &key, &self.parts.headers, req_cc),
                        )
                        .await;
                        match waited {
                            Waited::Found((fresh, now)) => {
                                self.count(|c| &c.hits);
                                self.count(|c| &c.collapsed);
                                Ok(self.serve(&fresh, now, "hit", "; detail=collapsed", None))
                            }
                            // The revalidation was abandoned: this one
                            // leads the next.
                            Waited::Lead(leader) => {
                                self.revalidate(key, stored, Why::Stale, req_cc, Some(leader))
                                    .await
                            }
                            Waited::Alone => {
                                self.revalidate(key, stored, Why::Stale, req_cc, None).await
                            }
                        }
                    }
                }
            }
            Use::Forward(why) => self.revalidate(key, stored, why, req_cc, None).await,
        }
    }

    /// Whether concurrent requests like this one may wait for one of them
    /// to go upstream: a plain `GET`, not conditional, not a range.
    fn collapsible(&self) -> bool {
        self.cfg.collapse
            && self.parts.method == Method::GET
            && !conditional::is_conditional(&self.parts.headers)
            && !self.parts.headers.contains_key(RANGE)
    }

    /// Forwards a request whose stored response cannot be used as is:
    /// conditionally when it has validators (§4.3.1), falling back to it
    /// when the upstream fails within `stale-if-error`. `leader`: the
    /// requests waiting for this one's result, released once the entry is
    /// freshened or replaced (or when this gives up).
    async fn revalidate(
        mut self,
        key: PrimaryKey,
        stored: Arc<Stored>,
        why: Why,
        req_cc: &CacheControl,
        leader: Option<Leader>,
    ) -> Result<Response<CacheBody<ResB>>, BoxError> {
        let fwd = match why {
            Why::Stale => "fwd=stale",
            Why::Request => "fwd=request",
        };
        let conditional = self.parts.method == Method::GET && stored.has_validator();
        let mut req = self.request();
        if conditional {
            add_validators(req.headers_mut(), &stored.headers);
        }
        let request_time = self.now();
        let ticket = self.cfg.store.begin_fill(&key);
        let result = self.send(req).await;
        let response_time = self.now();
        let rsp = match result {
            Ok(rsp) => rsp,
            Err(e) => {
                // The waiters try themselves, as they would after a
                // response that cannot be stored.
                collapse::finish(leader, Outcome::NotStored);
                let fresh = stored.freshness(self.cfg.default_ttl, response_time);
                if policy::stale_if_error(&stored.cc, &fresh, req_cc) {
                    tracing::debug!(key = %key.key, error = %e, "upstream failed: serving stale");
                    self.count(|c| &c.stale_hits);
                    return Ok(self.serve(
                        &stored,
                        response_time,
                        "fwd=stale",
                        "; detail=stale-if-error",
                        None,
                    ));
                }
                return Err(e);
            }
        };
        let status = rsp.status();
        if conditional && status == StatusCode::NOT_MODIFIED {
            if !same_validator(rsp.headers(), &stored.headers) {
                // The 304 is about another representation (§4.3.4): the
                // stored one cannot be freshened, fetch it whole.
                drop(rsp);
                self.parts.headers.remove(IF_NONE_MATCH);
                self.parts.headers.remove(IF_MODIFIED_SINCE);
                return self.fetch(key, fwd, leader).await;
            }
            let cookies: Vec<HeaderValue> =
                rsp.headers().get_all(SET_COOKIE).iter().cloned().collect();
            let fresh = self
                .cfg
                .store
                .freshen(&stored, rsp.headers(), request_time, response_time);
            // The waiters find the freshened entry.
            collapse::finish(leader, Outcome::Stored);
            let lead = format!("{fwd}; fwd-status=304");
            return Ok(self.serve(&fresh, response_time, &lead, "", Some(cookies)));
        }
        if policy::is_error_status(status) {
            let fresh = stored.freshness(self.cfg.default_ttl, response_time);
            if policy::stale_if_error(&stored.cc, &fresh, req_cc) {
                collapse::finish(leader, Outcome::NotStored);
                self.count(|c| &c.stale_hits);
                let lead = format!("fwd=stale; fwd-status={}", status.as_u16());
                return Ok(self.serve(
                    &stored,
                    response_time,
                    &lead,
                    "; detail=stale-if-error",
                    None,
                ));
            }
        }
        self.count(|c| &c.misses);
        Ok(self.store_response(key, ticket, rsp, request_time, response_time, fwd, leader))
    }

    /// Nothing usable is stored: go upstream, collapsing concurrent misses.
    async fn miss(
        self,
        key: PrimaryKey,
        req_cc: &CacheControl,
        fwd: &'static str,
    ) -> Result<Response<CacheBody<ResB>>, BoxError> {
        let fwd = if fwd == "uri-miss" {
            "fwd=uri-miss"
        } else {
            "fwd=vary-miss"
        };
        if !self.collapsible() {
            return self.fetch(key, fwd, None).await;
        }
        match collapse::join(
            &self.cfg.store,
            &key.key,
            self.cfg.max_waiters,
            self.cfg.collapse_timeout,
        ) {
            Join::Leader(leader) => self.fetch(key, fwd, Some(leader)).await,
            Join::Busy => self.fetch(key, fwd, None).await,
            Join::Waiter(waiter) => {
                let waited = collapse::wait(
                    waiter,
                    &self.cfg.store,
                    &key.key,
                    self.cfg.max_waiters,
                    self.cfg.collapse_timeout,
                    || fresh_entry(&self.cfg, &key, &self.parts.headers, req_cc),
                )
                .await;
                match waited {
                    Waited::Found((stored, now)) => {
                        self.count(|c| &c.hits);
                        self.count(|c| &c.collapsed);
                        Ok(self.serve(&stored, now, "hit", "; detail=collapsed", None))
                    }
                    // The leader's client went away before its response
                    // was stored: this one leads the next try.
                    Waited::Lead(leader) => self.fetch(key, "fwd=miss", Some(leader)).await,
                    // The leader's response was not stored (or not for
                    // this request's variant), or the wait is over: go
                    // upstream alone.
                    Waited::Alone => self.fetch(key, "fwd=miss", None).await,
                }
            }
        }
    }

    async fn fetch(
        mut self,
        key: PrimaryKey,
        fwd: &str,
        leader: Option<Leader>,
    ) -> Result<Response<CacheBody<ResB>>, BoxError> {
        self.count(|c| &c.misses);
        let req = self.request();
        let request_time = self.now();
        let ticket = self.cfg.store.begin_fill(&key);
        let rsp = match self.send(req).await {
            Ok(rsp) => rsp,
            Err(e) => {
                // The waiters try themselves, as they would after a
                // response that cannot be stored (cancelled before this,
                // `leader` drops with the frame: an abandoned flight).
                collapse::finish(leader, Outcome::NotStored);
                return Err(e);
            }
        };
        let response_time = self.now();
        Ok(self.store_response(key, ticket, rsp, request_time, response_time, fwd, leader))
    }

    /// Passes an upstream response on, teeing its body into the store when
    /// it is storable.
    #[allow(clippy::too_many_arguments)]
    fn store_response(
        &self,
        key: PrimaryKey,
        ticket: FillTicket,
        rsp: Response<ResB>,
        request_time: SystemTime,
        response_time: SystemTime,
        fwd: &str,
        leader: Option<Leader>,
    ) -> Response<CacheBody<ResB>> {
        if self.parts.method != Method::GET {
            collapse::finish(leader, Outcome::NotStored);
            return self.pass(rsp, fwd);
        }
        let (mut head, body) = rsp.into_parts();
        match pending(
            &self.cfg,
            &self.parts,
            key,
            ticket,
            head.status,
            &head.headers,
            request_time,
            response_time,
        ) {
            Ok(pending) => {
                let status = format!("{fwd}; stored");
                append_status(&mut head.headers, &self.cfg.status_name, &status);
                let body = CacheBody::tee(body, self.cfg.store.clone(), pending, leader);
                Response::from_parts(head, body)
            }
            Err(reason) => {
                tracing::debug!(?reason, status = %head.status, "response not stored");
                collapse::finish(leader, Outcome::NotStored);
                append_status(&mut head.headers, &self.cfg.status_name, fwd);
                Response::from_parts(head, CacheBody::pass(body))
            }
        }
    }

    /// Spawns one background revalidation per variant
    /// (`stale-while-revalidate`).
    fn revalidate_in_background(&self, key: &PrimaryKey, stored: &Arc<Stored>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Some(claim) = self.cfg.store.begin_revalidation(&stored.variant) else {
            return;
        };
        let cfg = Arc::clone(&self.cfg);
        let svc = self.svc.clone();
        let mut parts = self.parts.clone();
        parts.method = Method::GET;
        parts.headers.remove(IF_NONE_MATCH);
        parts.headers.remove(IF_MODIFIED_SINCE);
        let key = key.clone();
        let stored = Arc::clone(stored);
        runtime.spawn(async move {
            let _claim = claim;
            let outcome = background(cfg, svc, parts, key.clone(), stored).await;
            if let Err(e) = outcome {
                tracing::debug!(key = %key.key, error = %e, "background revalidation failed");
            }
        });
    }

    async fn bypass(mut self) -> Result<Response<CacheBody<ResB>>, BoxError> {
        self.count(|c| &c.bypassed);
        let req = self.request();
        let rsp = self.send(req).await?;
        Ok(self.pass(rsp, "fwd=bypass"))
    }

    /// POST, PUT, DELETE, PATCH...: forward, and on success invalidate the
    /// target URI and same-host `Location`/`Content-Location` (§4.4).
    async fn unsafe_method(mut self) -> Result<Response<CacheBody<ResB>>, BoxError> {
        self.count(|c| &c.bypassed);
        let req = self.request();
        let rsp = self.send(req).await?;
        let status = rsp.status();
        if status.is_success() || status.is_redirection() {
            let host = request_host(&self.parts.uri, &self.parts.headers);
            // The resource behind both schemes changed.
            let mut targets = Vec::with_capacity(6);
            for https in [false, true] {
                if let Ok(key) = self.cfg.key.primary(
                    &self.parts.uri,
                    &self.parts.headers,
                    &self.parts.extensions,
                    https,
                ) {
                    targets.push(key);
                }
                for name in [LOCATION, CONTENT_LOCATION] {
                    let Some(value) = rsp.headers().get(name).and_then(|v| v.to_str().ok()) else {
                        continue;
                    };
                    let Some((path, query)) = resolve(value, self.parts.uri.path(), &host) else {
                        continue;
                    };
                    if let Ok(key) = self.cfg.key.build(
                        https,
                        &host,
                        &path,
                        query.as_deref(),
                        &self.parts.headers,
                        &self.parts.extensions,
                    ) {
                        targets.push(key);
                    }
                }
            }
            let removed: usize = targets
                .iter()
                .map(|k| self.cfg.store.invalidate(&k.key))
                .sum();
            if removed > 0 {
                tracing::debug!(method = %self.parts.method, path = self.parts.uri.path(), removed, "invalidated");
            }
        }
        Ok(self.pass(rsp, "fwd=method"))
    }

    fn only_if_cached(&self) -> Response<CacheBody<ResB>> {
        let mut problem = Problem::new(StatusCode::GATEWAY_TIMEOUT)
            .title("Not cached")
            .detail("the request is only-if-cached and no usable response is stored");
        if let Some(id) = self.parts.extensions.get::<towergate_core::RequestId>() {
            problem = problem.instance_if_absent(id.as_str());
        }
        let rsp = problem.into_full_response();
        let (mut head, body) = rsp.into_parts();
        append_status(
            &mut head.headers,
            &self.cfg.status_name,
            "detail=only-if-cached",
        );
        Response::from_parts(head, CacheBody::full(body))
    }

    /// A response from a stored one: `304` when the client's conditional
    /// matches (§4.3.2), no body for HEAD, with `Age` and `Cache-Status`.
    fn serve(
        &self,
        stored: &Stored,
        now: SystemTime,
        lead: &str,
        tail: &str,
        cookies: Option<Vec<HeaderValue>>,
    ) -> Response<CacheBody<ResB>> {
        let fresh = stored.freshness(self.cfg.default_ttl, now);
        let status = format!("{lead}; ttl={}{tail}", ttl(&fresh));
        let age = HeaderValue::from(fresh.age.as_secs().min(DELTA_SECONDS_MAX));
        let not_modified = stored.status.is_success()
            && conditional::not_modified(&self.parts.method, &self.parts.headers, &stored.headers);
        let mut rsp = if not_modified {
            let mut rsp = Response::new(CacheBody::empty());
            *rsp.status_mut() = StatusCode::NOT_MODIFIED;
            let headers = rsp.headers_mut();
            // RFC 9110 §15.4.5.
            for name in [
                CACHE_CONTROL,
                CONTENT_LOCATION,
                DATE,
                ETAG,
                EXPIRES,
                VARY,
                LAST_MODIFIED,
            ] {
                for v in stored.headers.get_all(&name) {
                    headers.append(name.clone(), v.clone());
                }
            }
            rsp
        } else {
            let body = if self.parts.method == Method::HEAD {
                CacheBody::empty()
            } else {
                CacheBody::stored(stored.body.clone())
            };
            let mut rsp = Response::new(body);
            *rsp.status_mut() = stored.status;
            *rsp.headers_mut() = stored.headers.clone();
            rsp
        };
        let headers = rsp.headers_mut();
        if not_modified {
            headers.remove(CONTENT_LENGTH);
        }
        headers.insert(http::header::AGE, age);
        for c in cookies.into_iter().flatten() {
            headers.append(SET_COOKIE, c);
        }
        append_status(headers, &self.cfg.status_name, &status);
        rsp
    }

    fn pass(&self, rsp: Response<ResB>, status: &str) -> Response<CacheBody<ResB>> {
        let (mut head, body) = rsp.into_parts();
        append_status(&mut head.headers, &self.cfg.status_name, status);
        Response::from_parts(head, CacheBody::pass(body))
    }

    fn request(&mut self) -> Request<ReqB> {
        let body = self.body.take().unwrap_or_default();
        Request::from_parts(self.parts.clone(), body)
    }

    async fn send(&mut self, req: Request<ReqB>) -> Result<Response<ResB>, BoxError> {
        send(&mut self.svc, req).await
    }

    fn now(&self) -> SystemTime {
        self.cfg.clock.now()
    }

    fn count(&self, which: impl FnOnce(&crate::store::Counters) -> &std::sync::atomic::AtomicU64) {
        which(&self.cfg.store.inner.counters).fetch_add(1, Ordering::Relaxed);
    }
}

async fn send<S, ReqB, ResB>(svc: &mut S, req: Request<ReqB>) -> Result<Response<ResB>, BoxError>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
{
    poll_fn(|cx| svc.poll_ready(cx)).await.map_err(Into::into)?;
    svc.call(req).await.map_err(Into::into)
}

/// The stored response for a request with `headers`, with the time it was
/// looked up at, if it is fresh for it: what a collapsed waiter is served.
fn fresh_entry(
    cfg: &Config,
    key: &PrimaryKey,
    headers: &HeaderMap,
    req_cc: &CacheControl,
) -> Option<(Arc<Stored>, SystemTime)> {
    let now = cfg.clock.now();
    let Lookup::Found(stored) = cfg.store.lookup(key, headers) else {
        return None;
    };
    let freshness = stored.freshness(cfg.default_ttl, now);
    (policy::decide(&stored.cc, &freshness, req_cc) == Use::Fresh).then_some((stored, now))
}

/// The background half of `stale-while-revalidate`.
async fn background<S, ReqB, ResB>(
    cfg: Arc<Config>,
    mut svc: S,
    parts: Parts,
    key: PrimaryKey,
    stored: Arc<Stored>,
) -> Result<(), BoxError>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
    ReqB: Default,
    ResB: Body<Data = Bytes>,
    ResB::Error: Into<BoxError>,
{
    let mut req = Request::from_parts(parts.clone(), ReqB::default());
    // The refresh is the entry's, not the client's: a whole response (no
    // `Range`: a 206 is not stored), conditional on the entry's validators
    // only (a 304 to the client's own would refresh nothing).
    let headers = req.headers_mut();
    headers.remove(http::header::RANGE);
    headers.remove(http::header::IF_RANGE);
    headers.remove(IF_NONE_MATCH);
    headers.remove(IF_MODIFIED_SINCE);
    if stored.has_validator() {
        add_validators(req.headers_mut(), &stored.headers);
    }
    let request_time = cfg.clock.now();
    let ticket = cfg.store.begin_fill(&key);
    let rsp = send(&mut svc, req).await?;
    let response_time = cfg.clock.now();
    if rsp.status() == StatusCode::NOT_MODIFIED && stored.has_validator() {
        if same_validator(rsp.headers(), &stored.headers) {
            cfg.store
                .freshen(&stored, rsp.headers(), request_time, response_time);
        }
        return Ok(());
    }
    let (head, body) = rsp.into_parts();
    match pending(
        &cfg,
        &parts,
        key,
        ticket,
        head.status,
        &head.headers,
        request_time,
        response_time,
    ) {
        Ok(pending) => {
            let limit = usize::try_from(cfg.store.inner.max_entry_bytes).unwrap_or(usize::MAX);
            let bytes = Limited::new(body, limit).collect().await?.to_bytes();
            // A body that came in one frame is that frame: a slice of the
            // connection's read buffer, which the entry would keep alive.
            cfg.store.insert(pending, Bytes::copy_from_slice(&bytes));
        }
        Err(reason) => tracing::debug!(?reason, "background response not stored"),
    }
    Ok(())
}

/// The storable head of a response to `request`.
#[allow(clippy::too_many_arguments)]
fn pending(
    cfg: &Config,
    request: &Parts,
    key: PrimaryKey,
    ticket: FillTicket,
    status: StatusCode,
    headers: &HeaderMap,
    request_time: SystemTime,
    response_time: SystemTime,
) -> Result<Pending, NotStored> {
    let cc = CacheControl::from_headers(headers);
    let timing = Timing::new(headers, request_time, response_time);
    let rules = Rules {
        statuses: &cfg.statuses,
        default_ttl: cfg.default_ttl,
        keyed_by_identity: cfg.key.identity.is_some(),
        authenticated: request.extensions.get::<Identity>().is_some(),
        keyed_by_cookie: cfg.key.headers.contains(&http::header::COOKIE),
        key_headers: &cfg.key.headers,
        gateway_set_headers: &cfg.gateway_set_headers,
        key_query: &cfg.key.query,
        query: request.uri.query(),
        max_entry_bytes: cfg.store.inner.max_entry_bytes,
    };
    let vary = policy::storable(rules, &request.headers, status, headers, &cc, &timing)?;
    Ok(Pending {
        key,
        ticket,
        secondary: secondary_key(&vary, &request.headers),
        vary,
        status,
        headers: headers.clone(),
        timing,
        cc,
    })
}

/// Replaces the client's validators with the stored response's (§4.3.1).
fn add_validators(request: &mut HeaderMap, stored: &HeaderMap) {
    request.remove(IF_NONE_MATCH);
    request.remove(IF_MODIFIED_SINCE);
    if let Some(etag) = stored.get(ETAG) {
        request.insert(IF_NONE_MATCH, etag.clone());
    }
    if let Some(lm) = stored.get(LAST_MODIFIED) {
        request.insert(IF_MODIFIED_SINCE, lm.clone());
    }
}

/// Whether a `304` selects the stored response (§4.3.4): a strong `ETag`
/// must match the stored one strongly, a weak one weakly; a `304` without
/// `ETag` selects it (it answered our `If-Modified-Since`).
fn same_validator(not_modified: &HeaderMap, stored: &HeaderMap) -> bool {
    let Some(new) = not_modified.get(ETAG) else {
        return true;
    };
    let new = new.to_str().ok().and_then(ETag::parse);
    let old = stored
        .get(ETAG)
        .and_then(|v| v.to_str().ok())
        .and_then(ETag::parse);
    match (new, old) {
        (Some(new), Some(old)) if !new.weak => new.strong_eq(&old),
        (Some(new), Some(old)) => new.weak_eq(&old),
        _ => false,
    }
}

/// Appends this cache's member to `Cache-Status` (after any upstream
/// cache's, RFC 9211 §2).
fn append_status(headers: &mut HeaderMap, name: &str, params: &str) {
    if let Ok(v) = HeaderValue::from_str(&format!("{name}; {params}")) {
        headers.append(CACHE_STATUS, v);
    }
}

/// RFC 9211 `ttl`: remaining freshness, negative once stale.
fn ttl(f: &Freshness) -> i64 {
    let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    if f.is_fresh() {
        secs(f.remaining())
    } else {
        -secs(f.staleness())
    }
}

fn is_safe(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// Resolves a `Location`/`Content-Location` value against the request path;
/// `None` for another host (§4.4 only invalidates same-origin URIs).
fn resolve(value: &str, base_path: &str, host: &str) -> Option<(String, Option<String>)> {
    let value = value.trim();
    let value = value.split_once('#').map_or(value, |(v, _)| v);
    let reference = if let Some((_, rest)) = value.split_once("://") {
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, "/"),
        };
        if !authority.eq_ignore_ascii_case(host) {
            return None;
        }
        path.to_owned()
    } else if let Some(rest) = value.strip_prefix("//") {
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if !authority.eq_ignore_ascii_case(host) {
            return None;
        }
        if path.is_empty() {
            "/".into()
        } else {
            path.to_owned()
        }
    } else if value.starts_with('/') {
        value.to_owned()
    } else if value.is_empty() {
        return None;
    } else {
        let dir = base_path.rsplit_once('/').map_or("", |(d, _)| d);
        format!("{dir}/{value}")
    };
    Some(match reference.split_once('?') {
        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
        None => (reference, None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_resolution() {
        let r = |v| resolve(v, "/a/b", "example.com");
        assert_eq!(r("/x?y=1"), Some(("/x".into(), Some("y=1".into()))));
        assert_eq!(r("c"), Some(("/a/c".into(), None)));
        assert_eq!(r("http://EXAMPLE.com/z#f"), Some(("/z".into(), None)));
        assert_eq!(r("https://other.com/z"), None);
        assert_eq!(r("//example.com"), Some(("/".into(), None)));
        assert_eq!(r(""), None);
    }

    #[test]
    fn ttl_sign() {
        let f = |l, a| Freshness {
            lifetime: Duration::from_secs(l),
            age: Duration::from_secs(a),
        };
        assert_eq!(ttl(&f(10, 4)), 6);
        assert_eq!(ttl(&f(10, 14)), -4);
    }
}
