//! Layers that report to the observe layers from inside the router:
//! [`RecordLayer`] (route and identity) and [`RecordUpstreamLayer`]
//! (the upstream endpoint).
//!
//! See [`Observation`] for why they are needed.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::metrics::{Metrics, RouteMetricsSlot, UpstreamMetrics};
use crate::observation::{Observation, UpstreamInfo};

/// Copies the matched route and the caller's identity from the request
/// extensions into the [`Observation`], for the tracing, metrics and
/// access-log layers that sit outside the router.
///
/// In a towergate route stack, put it first (so that requests refused by
/// authentication or rate limiting are still counted under their route)
/// and again right after authentication (so the access log knows the
/// consumer). In a plain axum app, [`RecordLayer::route`] names the route
/// itself.
///
/// ```
/// use axum::{Router, routing::get};
/// use towergate_observe::RecordLayer;
///
/// let app: Router = Router::new()
///     .route("/users/{id}", get(|| async { "alice" }).layer(RecordLayer::route("users")));
/// # drop(app);
/// ```
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct RecordLayer {
    route: Option<Arc<str>>,
}

/// The service of [`RecordLayer`].
#[derive(Clone, Debug)]
pub struct Record<S> {
    inner: S,
    route: Option<Arc<str>>,
    /// The route's metric handles, resolved by the metrics layer at the
    /// first response and kept here (shared by clones) for the next ones.
    /// One per service built: in a towergate route stack, one per route.
    metrics: Arc<RouteMetricsSlot>,
}

/// Marks the responses of one upstream endpoint: puts an [`UpstreamInfo`]
/// in the [`Observation`] and in the response extensions, and, given a
/// [`Metrics`] handle, counts the endpoint's requests by status class
/// (`error` when the endpoint failed without a response) and their
/// duration up to the response headers.
///
/// Wrap each endpoint's service with it (the proxy for one `host:port`),
/// inside the balancer and retries, so each attempt is recorded.
///
/// Where only the observe layers read the endpoint (they take it from the
/// [`Observation`]), [`mark_response(false)`](Self::mark_response) saves
/// the response extension (an allocation and a map per response).
///
/// ```
/// use std::convert::Infallible;
/// use http::{Request, Response};
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
/// use towergate_observe::{Metrics, RecordUpstreamLayer, UpstreamInfo};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let metrics = Metrics::new();
/// let svc = ServiceBuilder::new()
///     .layer(RecordUpstreamLayer::new("10.0.0.7:8080").metrics(metrics.clone()))
///     .service(service_fn(|_req: Request<()>| async { Ok::<_, Infallible>(Response::new(())) }));
/// let rsp = svc.oneshot(Request::new(())).await.unwrap();
/// assert_eq!(rsp.extensions().get::<UpstreamInfo>().unwrap().endpoint(), "10.0.0.7:8080");
/// assert!(metrics.encode().contains(
///     r#"towergate_upstream_requests_total{upstream="10.0.0.7:8080",status_class="2xx"} 1"#
/// ));
/// # }
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct RecordUpstreamLayer {
    info: UpstreamInfo,
    metrics: Option<Arc<UpstreamMetrics>>,
    mark_response: bool,
    record_request: bool,
    forget: bool,
}

/// The service of [`RecordUpstreamLayer`].
#[derive(Clone, Debug)]
pub struct RecordUpstream<S> {
    inner: S,
    info: UpstreamInfo,
    metrics: Option<Arc<UpstreamMetrics>>,
    mark_response: bool,
    record_request: bool,
}

pin_project! {
    /// The response future of [`RecordUpstream`].
    #[derive(Debug)]
    pub struct RecordUpstreamFuture<F> {
        #[pin]
        inner: F,
        // What goes in the response extensions, if anything.
        info: Option<UpstreamInfo>,
        metrics: Option<Arc<UpstreamMetrics>>,
        // Read only when there are metrics to time; taken when the call
        // ends, so that a future dropped before it counts as cancelled.
        start: Option<Instant>,
    }

    impl<F> PinnedDrop for RecordUpstreamFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let (Some(m), Some(start)) = (this.metrics.as_ref(), this.start.take()) {
                m.cancelled(start.elapsed());
            }
        }
    }
}

// === impl RecordLayer ===

impl RecordLayer {
    /// Copies [`RouteMatch`](towergate_core::RouteMatch) and
    /// [`Identity`](towergate_core::Identity) from the request extensions.
    pub fn new() -> Self {
        Self { route: None }
    }

    /// Records `name` as the route of every request through it (and still
    /// copies the identity): for apps without the towergate router. Use a
    /// name, never a raw path: it becomes a metrics label.
    pub fn route(name: impl Into<Arc<str>>) -> Self {
        Self {
            route: Some(name.into()),
        }
    }
}

impl<S> Layer<S> for RecordLayer {
    type Service = Record<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Record {
            inner,
            route: self.route.clone(),
            metrics: Arc::default(),
        }
    }
}

// === impl Record ===

impl<S> Record<S> {
    /// Wraps `inner`; see [`RecordLayer::new`].
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            route: None,
            metrics: Arc::default(),
        }
    }

    /// A [`RecordLayer`] that copies from the request extensions.
    pub fn layer() -> RecordLayer {
        RecordLayer::new()
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

impl<S, B> Service<Request<B>> for Record<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if let Some(obs) = Observation::from_extensions(req.extensions()) {
            obs.record(
                req.extensions(),
                self.route.as_ref(),
                Some(&self.metrics),
                None,
            );
        }
        self.inner.call(req)
    }
}

// === impl RecordUpstreamLayer ===

impl RecordUpstreamLayer {
    /// Marks responses as coming from `endpoint` (`host:port` or a name).
    pub fn new(endpoint: impl Into<Arc<str>>) -> Self {
        Self {
            info: UpstreamInfo::new(endpoint),
            metrics: None,
            mark_response: true,
            record_request: true,
            forget: false,
        }
    }

    /// Whether it also records the route and the caller's identity from
    /// the request extensions into the [`Observation`], as a
    /// [`RecordLayer`] does. Default true, for stacks without a
    /// `RecordLayer`; a stack that places one after its router (and after
    /// its authentication) turns it off and saves two extension look-ups
    /// per request: the towergate binary does.
    pub fn record_request(mut self, yes: bool) -> Self {
        self.record_request = yes;
        self
    }

    /// Whether the [`UpstreamInfo`] also goes in the response extensions
    /// (it always goes in the [`Observation`] when there is one). Default
    /// true; the towergate binary turns it off, since its observe layers
    /// read the observation.
    pub fn mark_response(mut self, yes: bool) -> Self {
        self.mark_response = yes;
        self
    }

    /// Also counts the endpoint's requests in `metrics`.
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        // Resolved once per endpoint, shared by every service this layer
        // makes, instead of a label lookup per call.
        self.metrics = Some(Arc::new(UpstreamMetrics::new(
            metrics,
            self.info.endpoint_arc().clone(),
            self.forget,
        )));
        self
    }

    /// Whether the endpoint's series (`towergate_upstream_requests_total`,
    /// `towergate_upstream_request_duration_seconds`) leave the
    /// [`metrics`](Self::metrics) once this layer and every service it
    /// made are dropped, and no other layer of the same label is alive
    /// (after the grace of [`Metrics::forget_endpoints_after`], so that a
    /// replacement pool can take the series over).
    /// Default false (the series stay, as for one-shot services); the
    /// towergate binary turns it on, so that endpoints that leave their
    /// pool (a reload, DNS discovery) leave `/metrics` too, and churning
    /// endpoint addresses do not grow it without end.
    pub fn forget_when_dropped(mut self, yes: bool) -> Self {
        self.forget = yes;
        if let Some(m) = self.metrics.take() {
            self.metrics = Some(Arc::new(UpstreamMetrics::new(
                m.metrics.clone(),
                m.upstream.clone(),
                yes,
            )));
        }
        self
    }
}

impl<S> Layer<S> for RecordUpstreamLayer {
    type Service = RecordUpstream<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RecordUpstream {
            inner,
            info: self.info.clone(),
            metrics: self.metrics.clone(),
            mark_response: self.mark_response,
            record_request: self.record_request,
        }
    }
}

// === impl RecordUpstream ===

impl<S> RecordUpstream<S> {
    /// Wraps `inner`, the service of `endpoint`.
    pub fn new(inner: S, endpoint: impl Into<Arc<str>>) -> Self {
        Self {
            inner,
            info: UpstreamInfo::new(endpoint),
            metrics: None,
            mark_response: true,
            record_request: true,
        }
    }

    /// A [`RecordUpstreamLayer`] for `endpoint`.
    pub fn layer(endpoint: impl Into<Arc<str>>) -> RecordUpstreamLayer {
        RecordUpstreamLayer::new(endpoint)
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

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RecordUpstream<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = RecordUpstreamFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        if let Some(obs) = Observation::from_extensions(req.extensions()) {
            if self.record_request {
                // This deep in the stack every extension is there: take the
                // route and identity too, in case no RecordLayer was placed.
                obs.record(req.extensions(), None, None, Some(&self.info));
            } else {
                obs.set_upstream(self.info.clone());
            }
        }
        RecordUpstreamFuture {
            inner: self.inner.call(req),
            info: self.mark_response.then(|| self.info.clone()),
            metrics: self.metrics.clone(),
            start: self.metrics.is_some().then(Instant::now),
        }
    }
}

impl<F, B, E> Future for RecordUpstreamFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut res = ready!(this.inner.poll(cx));
        if let (Some(m), Some(start)) = (this.metrics.as_ref(), this.start.take()) {
            // An answer the target made itself is not the upstream's
            // status: a failed call, or no call at all.
            let status = match &res {
                Ok(r) => match r.extensions().get::<towergate_core::GatewayAnswer>() {
                    None => Some(Some(r.status())),
                    Some(towergate_core::GatewayAnswer::NoResponse) => Some(None),
                    Some(towergate_core::GatewayAnswer::NotCalled) => None,
                },
                Err(_) => Some(None),
            };
            if let Some(status) = status {
                m.observe(status, start.elapsed());
            }
        }
        if let (Ok(rsp), Some(info)) = (&mut res, this.info.take()) {
            rsp.extensions_mut().insert(info);
        }
        Poll::Ready(res)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::convert::Infallible;

    use http::{Request, Response};
    use tower::{ServiceBuilder, ServiceExt, service_fn};

    use towergate_core::{Identity, RouteMatch};

    use super::*;

    async fn through(layer: RecordUpstreamLayer) -> (Response<()>, Observation) {
        through_with(layer, Request::new(())).await
    }

    async fn through_with(
        layer: RecordUpstreamLayer,
        mut req: Request<()>,
    ) -> (Response<()>, Observation) {
        let svc =
            ServiceBuilder::new()
                .layer(layer)
                .service(service_fn(|_req: Request<()>| async {
                    Ok::<_, Infallible>(Response::new(()))
                }));
        let obs = Observation::get_or_insert(req.extensions_mut());
        (svc.oneshot(req).await.unwrap(), obs)
    }

    /// A request as it reaches an upstream: routed and authenticated.
    fn routed() -> Request<()> {
        let mut req = Request::new(());
        req.extensions_mut().insert(RouteMatch::new("users"));
        req.extensions_mut().insert(Identity {
            subject: Some("alice".into()),
            consumer: Some("mobile".into()),
            ..Identity::default()
        });
        req
    }

    #[tokio::test]
    async fn records_the_route_and_identity_unless_told_not_to() {
        // The default: what a RecordLayer would have recorded, too.
        let (_, obs) = through_with(RecordUpstreamLayer::new("svc:1"), routed()).await;
        let seen = obs.snapshot();
        assert_eq!(seen.route.as_deref(), Some("users"));
        assert_eq!(seen.subject.as_deref(), Some("alice"));
        assert_eq!(seen.consumer.as_deref(), Some("mobile"));
        assert_eq!(seen.upstream.unwrap().endpoint(), "svc:1");

        // A stack with its own RecordLayers: the endpoint only.
        let layer = RecordUpstreamLayer::new("svc:2").record_request(false);
        let (_, obs) = through_with(layer, routed()).await;
        let seen = obs.snapshot();
        assert_eq!(seen.route, None);
        assert_eq!(seen.subject, None);
        assert_eq!(seen.upstream.unwrap().endpoint(), "svc:2");
    }

    #[tokio::test]
    async fn mark_response_false_reports_to_the_observation_only() {
        let (rsp, obs) = through(RecordUpstreamLayer::new("svc:1").mark_response(false)).await;
        assert!(rsp.extensions().get::<UpstreamInfo>().is_none());
        let upstream = obs.snapshot().upstream.unwrap();
        assert_eq!(upstream.endpoint(), "svc:1");

        // The default marks both.
        let (rsp, obs) = through(RecordUpstreamLayer::new("svc:2")).await;
        assert_eq!(
            rsp.extensions().get::<UpstreamInfo>().unwrap().endpoint(),
            "svc:2"
        );
        assert_eq!(obs.snapshot().upstream.unwrap().endpoint(), "svc:2");
    }

    #[tokio::test]
    async fn a_call_given_up_before_its_answer_counts_as_cancelled() {
        let metrics = Metrics::new();
        let mut svc = ServiceBuilder::new()
            .layer(RecordUpstreamLayer::new("svc:1").metrics(metrics.clone()))
            .service(service_fn(|_req: Request<()>| async {
                // An upstream that never answers.
                std::future::pending::<Result<Response<()>, Infallible>>().await
            }));
        let call = svc.ready().await.unwrap().call(Request::new(()));
        // A timeout or a hedge drops the call's future.
        drop(call);
        // A call that answered counts by its status, and only once.
        let mut ok = ServiceBuilder::new()
            .layer(RecordUpstreamLayer::new("svc:1").metrics(metrics.clone()))
            .service(service_fn(|_req: Request<()>| async {
                Ok::<_, Infallible>(Response::new(()))
            }));
        ok.ready()
            .await
            .unwrap()
            .call(Request::new(()))
            .await
            .unwrap();

        let text = metrics.encode();
        let count = |class: &str| {
            let prefix = format!(
                "towergate_upstream_requests_total{{upstream=\"svc:1\",status_class=\"{class}\"}} "
            );
            text.lines()
                .find_map(|l| l.strip_prefix(prefix.as_str()))
                .map(|v| v.trim().to_owned())
        };
        assert_eq!(count("cancelled").as_deref(), Some("1"), "{text}");
        assert_eq!(count("2xx").as_deref(), Some("1"), "{text}");
        assert!(
            text.contains(
                "towergate_upstream_request_duration_seconds_count{upstream=\"svc:1\"} 2"
            ),
            "{text}"
        );
    }
}
