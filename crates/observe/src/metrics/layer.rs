//! [`MetricsLayer`]: RED metrics per route.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Instant;

use http::{Request, Response};
use pin_project_lite::pin_project;
use prometheus_client::metrics::counter::Counter;
use tower::{Layer, Service};
use towergate_core::RouteMatch;

use super::{Metrics, NO_ROUTE, RouteClass, RouteLabel, status_class};
use crate::body::{RequestBody, ResponseBody, Watch};
use crate::observation::Observation;

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

/// What a request in flight needs at its response.
struct Pending {
    in_flight: InFlight,
    route_at_call: Option<Arc<str>>,
    obs: Observation,
    start: Instant,
    bytes_in: Arc<AtomicU64>,
}

/// Counts a request as in flight until dropped.
#[derive(Debug)]
struct InFlight(Metrics);

/// What a metrics [`ResponseBody`] reports to.
pub(crate) struct BodyWatch {
    bytes_out: Counter,
    bytes_in_counter: Counter,
    bytes_in: Arc<AtomicU64>,
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
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let in_flight = InFlight::new(&self.metrics);
        let (mut parts, body) = req.into_parts();
        let route_at_call = parts
            .extensions
            .get::<RouteMatch>()
            .map(|m| m.route.clone());
        let obs = Observation::get_or_insert(&mut parts.extensions);
        let bytes_in = Arc::new(AtomicU64::new(0));
        let req = Request::from_parts(parts, RequestBody::new(body, bytes_in.clone()));
        ResponseFuture {
            inner: self.inner.call(req),
            state: Some(Pending {
                in_flight,
                route_at_call,
                obs,
                start: Instant::now(),
                bytes_in,
            }),
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
            // Polled after completion: the inner future decides what that
            // means; there is nothing left to record.
            return Poll::Ready(res.map(|r| r.map(ResponseBody::passthrough)));
        };
        let metrics = p.in_flight.0.clone();
        let m = metrics.inner();
        // The route as `observation::resolve` finds it (the upstream is not
        // needed here), with the route's resolved handles when a
        // RecordLayer left them in the observation.
        let (recorded, slot) = p.obs.route_and_metrics();
        let route = p
            .route_at_call
            .or(recorded)
            .or_else(|| {
                res.as_ref()
                    .ok()
                    .and_then(|r| r.extensions().get::<RouteMatch>())
                    .map(|m| m.route.clone())
            })
            .unwrap_or_else(|| Arc::from(NO_ROUTE));
        let status = res.as_ref().ok().map(|r| r.status());
        let elapsed = p.start.elapsed().as_secs_f64();
        let handles = slot.as_deref().and_then(|s| s.get(&metrics, &route));
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
        match res {
            Ok(rsp) => {
                // Only a response has a body to count: its series is made
                // here, not for a failure.
                let bytes_out = match handles {
                    Some(h) => h.response_bytes().clone(),
                    None => m.response_bytes.get_or_create_owned(&label),
                };
                let watch = BodyWatch {
                    bytes_out,
                    bytes_in_counter,
                    bytes_in: p.bytes_in,
                    in_flight: Some(p.in_flight),
                };
                Poll::Ready(Ok(rsp.map(|b| ResponseBody::new(b, Watch::Metrics(watch)))))
            }
            Err(e) => {
                bytes_in_counter.inc_by(p.bytes_in.load(Ordering::Relaxed));
                Poll::Ready(Err(e))
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
            self.bytes_in_counter
                .inc_by(self.bytes_in.load(Ordering::Relaxed));
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
