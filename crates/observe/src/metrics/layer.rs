//! [`MetricsLayer`]: RED metrics per route.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use http::{Request, Response};
use pin_project_lite::pin_project;
use prometheus_client::metrics::counter::Counter;
use tower::{Layer, Service};
use towergate_core::RouteMatch;

use super::{CANCELLED_CLASS, Metrics, NO_ROUTE, RouteClass, RouteLabel, status_class};
use crate::body::{self, ByteCount, RequestBody, ResponseBody, Watch};
use crate::observation::{Found, Observation};

/// Counts requests, their duration, their bytes and how many are in
/// flight, per route; see the [module docs](crate::metrics).
///
/// Place it outside the router (with a [`RecordLayer`](crate::RecordLayer)
/// in each route stack) or inside it: either way the route is found.
#[derive(Clone, Debug)]
#[must_use]
pub struct MetricsLayer {
    metrics: Metrics,
}

/// The service of [`MetricsLayer`].
#[derive(Clone, Debug)]
pub struct RecordMetrics<S> {
    inner: S,
    metrics: Metrics,
}

pin_project! {
    /// The response future of [`RecordMetrics`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        state: Option<Pending>,
    }
}

/// What a request in flight needs at its response. Dropped before it
/// (the client left, the connection was cut at shutdown), it counts the
/// request as `cancelled`, with its duration and the bytes it sent.
pub(crate) struct Pending {
    /// `None` once finished.
    in_flight: Option<InFlight>,
    route_at_call: Option<Arc<str>>,
    obs: Observation,
    start: Instant,
    bytes_in: ByteCount,
}

/// Counts a request as in flight until dropped.
#[derive(Debug)]
struct InFlight(Metrics);

/// What a metrics [`ResponseBody`] reports to.
pub(crate) struct BodyWatch {
    bytes_out: Counter,
    bytes_in_counter: Counter,
    bytes_in: ByteCount,
    in_flight: Option<InFlight>,
}

// === impl MetricsLayer ===

impl MetricsLayer {
    /// Records into `metrics`.
    pub fn new(metrics: Metrics) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = RecordMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RecordMetrics {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

// === impl RecordMetrics ===

impl<S> RecordMetrics<S> {
    /// Wraps `inner`, recording into `metrics`.
    pub fn new(inner: S, metrics: Metrics) -> Self {
        Self { inner, metrics }
    }

    /// A [`MetricsLayer`] recording into `metrics`.
    pub fn layer(metrics: Metrics) -> MetricsLayer {
        MetricsLayer::new(metrics)
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

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RecordMetrics<S>
where
    S: Service<Request<RequestBody<ReqBody>>, Response = Response<ResBody>>,
    ReqBody: http_body::Body,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let (mut parts, body) = req.into_parts();
        let bytes_in = ByteCount::for_body(&body);
        let pending = Pending::start(
            &self.metrics,
            Found::take(&mut parts.extensions),
            bytes_in.clone(),
            Instant::now(),
        );
        let req = Request::from_parts(parts, RequestBody::new(body, bytes_in));
        ResponseFuture {
            inner: self.inner.call(req),
            state: Some(pending),
        }
    }
}

// === impl ResponseFuture ===

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = ready!(this.inner.poll(cx));
        let Some(p) = this.state.take() else {
            return Poll::Ready(body::wrap(res, Watch::None));
        };
        let watch = p
            .finish(res.as_ref().ok())
            .map_or(Watch::None, Watch::Metrics);
        Poll::Ready(body::wrap(res, watch))
    }
}

// === impl Pending ===

impl Pending {
    /// Counts the request in flight; `bytes_in` is what its body wrapper
    /// counts into.
    pub(crate) fn start(
        metrics: &Metrics,
        Found { route_at_call, obs }: Found,
        bytes_in: ByteCount,
        start: Instant,
    ) -> Self {
        let in_flight = Some(InFlight::new(metrics));
        Self {
            in_flight,
            route_at_call,
            obs,
            start,
            bytes_in,
        }
    }

    /// Records the request and its duration; for a response, returns what
    /// its body reports to (bytes out, then bytes in and in-flight at its
    /// end). `None` (no response): the request is finished here.
    pub(crate) fn finish<B>(mut self, rsp: Option<&Response<B>>) -> Option<BodyWatch> {
        let in_flight = self.in_flight.take()?;
        let metrics = &in_flight.0;
        let m = metrics.inner();
        let (recorded, slot) = self.obs.route_and_metrics();
        let route = self
            .route_at_call
            .take()
            .or(recorded)
            .or_else(|| {
                rsp.and_then(|r| r.extensions().get::<RouteMatch>())
                    .map(|m| m.route.clone())
            })
            .unwrap_or_else(|| Arc::from(NO_ROUTE));
        let status = rsp.map(Response::status);
        // A tunnel (a WebSocket) counts as open while it lasts.
        if status == Some(http::StatusCode::SWITCHING_PROTOCOLS)
            && let Some(hold) = rsp.and_then(|r| r.extensions().get::<towergate_core::TunnelHold>())
        {
            hold.hold(Box::new(metrics.open_tunnel()));
        }
        let elapsed = self.start.elapsed().as_secs_f64();
        let handles = slot.as_deref().and_then(|s| s.get(metrics, &route));
        let label = RouteLabel { route };
        match handles {
            Some(h) => {
                h.requests(status).inc();
                h.duration.observe(elapsed);
            }
            None => {
                m.requests
                    .get_or_create(&RouteClass {
                        route: label.route.clone(),
                        status_class: status.map_or("5xx", status_class),
                    })
                    .inc();
                m.duration.get_or_create(&label).observe(elapsed);
            }
        }
        let bytes_in_counter = match handles {
            Some(h) => h.request_bytes.clone(),
            None => m.request_bytes.get_or_create_owned(&label),
        };
        if rsp.is_none() {
            bytes_in_counter.inc_by(self.bytes_in.get());
            return None;
        }
        // Only a response has a body to count: its series is made here,
        // not for a failure.
        let bytes_out = match handles {
            Some(h) => h.response_bytes().clone(),
            None => m.response_bytes.get_or_create_owned(&label),
        };
        Some(BodyWatch {
            bytes_out,
            bytes_in_counter,
            bytes_in: self.bytes_in.clone(),
            in_flight: Some(in_flight),
        })
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let Some(in_flight) = self.in_flight.take() else {
            return;
        };
        let metrics = &in_flight.0;
        let (recorded, slot) = self.obs.route_and_metrics();
        let route = self
            .route_at_call
            .take()
            .or(recorded)
            .unwrap_or_else(|| Arc::from(NO_ROUTE));
        let elapsed = self.start.elapsed().as_secs_f64();
        match slot.as_deref().and_then(|s| s.get(metrics, &route)) {
            Some(h) => {
                h.cancelled().inc();
                h.duration.observe(elapsed);
                h.request_bytes.inc_by(self.bytes_in.get());
            }
            None => {
                let m = metrics.inner();
                let label = RouteLabel { route };
                m.requests
                    .get_or_create(&RouteClass {
                        route: label.route.clone(),
                        status_class: CANCELLED_CLASS,
                    })
                    .inc();
                m.duration.get_or_create(&label).observe(elapsed);
                m.request_bytes
                    .get_or_create(&label)
                    .inc_by(self.bytes_in.get());
            }
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("done", &self.state.is_none())
            .finish()
    }
}

// === impl InFlight ===

impl InFlight {
    fn new(metrics: &Metrics) -> Self {
        metrics.inner().in_flight.inc();
        Self(metrics.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.inner().in_flight.dec();
    }
}

// === impl BodyWatch ===

impl BodyWatch {
    pub(crate) fn data(&mut self, n: u64) {
        self.bytes_out.inc_by(n);
    }

    pub(crate) fn end(&mut self) {
        if self.in_flight.take().is_some() {
            self.bytes_in_counter.inc_by(self.bytes_in.get());
        }
    }
}

impl Drop for BodyWatch {
    fn drop(&mut self) {
        self.end();
    }
}

impl fmt::Debug for BodyWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BodyWatch")
            .field("ended", &self.in_flight.is_none())
            .finish()
    }
}
