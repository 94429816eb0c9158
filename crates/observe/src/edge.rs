//! [`ObserveLayer`]: request id, trace, metrics and access log in one
//! layer, for the edge of a gateway or an app.
//!
//! Stacking the four layers of this crate works, but each of them wraps
//! the request and the response on its own: its own future, its own body
//! wrapper in each direction, its own byte counter, its own look at the
//! request's extensions. In a gateway, where a whole proxied request costs
//! a few tens of microseconds, that bookkeeping is a visible share. This
//! layer does the same work once: one future, one request body wrapper
//! counting bytes for both the metrics and the log, one response body
//! wrapper that reports to both, one [`Observation`](crate::Observation).
//!
//! What it does is exactly what the separate layers do, in the same order
//! (outermost first): [`RequestIdLayer`], [`TraceLayer`],
//! [`MetricsLayer`](crate::MetricsLayer), [`AccessLogLayer`]; each part is
//! optional and keeps its own settings:
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use towergate_observe::{Metrics, ObserveLayer, RequestIdLayer, TraceLayer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let metrics = Metrics::new();
//! let svc = ServiceBuilder::new()
//!     .layer(
//!         ObserveLayer::builder()
//!             .request_id(RequestIdLayer::new())
//!             .trace(TraceLayer::builder().sample_ratio(0.01).build())
//!             .metrics(metrics.clone())
//!             .build(),
//!     )
//!     .service(service_fn(|_req| async {
//!         Ok::<_, Infallible>(Response::new(String::from("hi")))
//!     }));
//! let rsp = svc.oneshot(Request::new(String::new())).await.unwrap();
//! assert!(rsp.headers().contains_key("x-request-id"));
//! assert!(metrics.encode().contains("towergate_http_requests_total"));
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Instant, SystemTime};

#[cfg(feature = "axum")]
use axum::body::Body;
use http::{HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::access_log::{self, AccessLogLayer, TraceIdFrom};
use crate::body::{self, ByteCount, RequestBody, ResponseBody, Watch};
use crate::metrics::{Metrics, layer as metrics_layer};
use crate::observation::Found;
use crate::request_id::{self, RequestIdLayer};
use crate::trace::{self, TraceLayer};

/// Request id, trace, metrics and access log in one layer; see the
/// [module docs](self).
#[derive(Clone, Debug)]
#[must_use]
pub struct ObserveLayer {
    shared: Arc<Shared>,
}

/// The parts of an [`ObserveLayer`]; see [`ObserveLayer::builder`].
#[derive(Debug, Default)]
#[must_use]
pub struct ObserveBuilder {
    request_id: Option<RequestIdLayer>,
    trace: Option<TraceLayer>,
    metrics: Option<Metrics>,
    access_log: Option<AccessLogLayer>,
}

#[derive(Debug)]
struct Shared {
    request_id: Option<Arc<request_id::Shared>>,
    trace: Option<Arc<trace::Shared>>,
    metrics: Option<Metrics>,
    access_log: Option<Arc<access_log::Shared>>,
}

/// The service of [`ObserveLayer`].
#[derive(Clone, Debug)]
pub struct Observe<S> {
    inner: S,
    shared: Arc<Shared>,
}

#[cfg(feature = "axum")]
/// [`Observe`] for axum's [`Body`]: the request keeps its type, its body
/// wrapped in place, and only when it has bytes to count; see
/// [`ObserveLayer::in_place`].
#[derive(Clone, Debug)]
pub struct ObserveInPlace<S> {
    inner: S,
    shared: Arc<Shared>,
}

#[cfg(feature = "axum")]
/// [`ObserveLayer`] for services of axum's [`Body`]; see
/// [`ObserveLayer::in_place`].
#[derive(Clone, Debug)]
#[must_use]
pub struct InPlaceObserveLayer {
    shared: Arc<Shared>,
}

pin_project! {
    /// The response future of [`Observe`] and [`ObserveInPlace`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        state: Option<Pending>,
    }
}

struct Pending {
    /// The id's settings (its header) and its value for the response.
    request_id: Option<(Arc<request_id::Shared>, HeaderValue)>,
    trace: Option<Box<trace::Pending>>,
    metrics: Option<metrics_layer::Pending>,
    access_log: Option<access_log::Pending>,
}

// === impl ObserveLayer ===

impl ObserveLayer {
    /// Starts with no part; add the ones wanted.
    pub fn builder() -> ObserveBuilder {
        ObserveBuilder::default()
    }
}

impl ObserveLayer {
    #[cfg(feature = "axum")]
    /// The same layer for services of axum's [`Body`], which get the
    /// request in the type it came in rather than as
    /// `Request<RequestBody<Body>>`: the request is not moved into a new
    /// one (a few hundred bytes copied, twice with a `map_request` back to
    /// `Body` behind), and an empty body, most requests', is not wrapped.
    /// A body with bytes is counted through a [`RequestBody`] boxed into a
    /// `Body`.
    pub fn in_place(self) -> InPlaceObserveLayer {
        InPlaceObserveLayer {
            shared: self.shared,
        }
    }
}

#[cfg(feature = "axum")]
impl<S> Layer<S> for InPlaceObserveLayer {
    type Service = ObserveInPlace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ObserveInPlace {
            inner,
            shared: self.shared.clone(),
        }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observe {
            inner,
            shared: self.shared.clone(),
        }
    }
}

// === impl ObserveBuilder ===

impl ObserveBuilder {
    /// Accept or generate request ids, with the settings of `layer`.
    pub fn request_id(mut self, layer: RequestIdLayer) -> Self {
        self.request_id = Some(layer);
        self
    }

    /// A span per request and trace-context propagation, with the settings
    /// of `layer` (its sampling included).
    pub fn trace(mut self, layer: TraceLayer) -> Self {
        self.trace = Some(layer);
        self
    }

    /// RED metrics per route into `metrics`.
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// A line per request through `layer`'s writer.
    pub fn access_log(mut self, layer: AccessLogLayer) -> Self {
        self.access_log = Some(layer);
        self
    }

    /// Builds the layer (the parts were checked when they were built).
    pub fn build(self) -> ObserveLayer {
        ObserveLayer {
            shared: Arc::new(Shared {
                request_id: self.request_id.map(|l| l.shared),
                trace: self.trace.map(|l| l.shared),
                metrics: self.metrics,
                access_log: self.access_log.map(|l| l.shared),
            }),
        }
    }
}

// === impl Observe ===

impl<S> Observe<S> {
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

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Observe<S>
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

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let (state, bytes_in) = self.shared.start(&mut req);
        let req = req.map(|body| RequestBody::new(body, bytes_in));
        let inner = match &state.trace {
            Some(t) => t.span.in_scope(|| self.inner.call(req)),
            None => self.inner.call(req),
        };
        ResponseFuture {
            inner,
            state: Some(state),
        }
    }
}

// === impl ObserveInPlace ===

#[cfg(feature = "axum")]
impl<S> ObserveInPlace<S> {
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

#[cfg(feature = "axum")]
impl<S, ResBody> Service<Request<Body>> for ObserveInPlace<S>
where
    S: Service<Request<Body>, Response = Response<ResBody>>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        // The same steps as `Observe::call`, spelled out again: through a
        // shared function taking the state by value, it was copied once
        // more (+29 instructions per request, callgrind).
        let (state, bytes_in) = self.shared.start(&mut req);
        // A body with bytes to count is wrapped where it is; an empty one
        // (most requests) is left alone.
        if bytes_in.is_counting() {
            let body = std::mem::take(req.body_mut());
            *req.body_mut() = Body::new(RequestBody::new(body, bytes_in));
        }
        let inner = match &state.trace {
            Some(t) => t.span.in_scope(|| self.inner.call(req)),
            None => self.inner.call(req),
        };
        ResponseFuture {
            inner,
            state: Some(state),
        }
    }
}

// === impl Shared ===

impl Shared {
    /// What a request goes through before the inner service is called:
    /// returns the state its response needs, and what its body's bytes
    /// are counted into.
    // Inlined into each service's `call`, so that the state is built
    // where its future keeps it rather than copied there.
    #[inline(always)]
    fn start<B: http_body::Body>(&self, req: &mut Request<B>) -> (Pending, ByteCount) {
        // The clocks are read once for all the parts: the wall clock only
        // when an id is generated or a line logged.
        let now = Instant::now();
        let mut wall = None;
        let mut wall_clock = || *wall.get_or_insert_with(SystemTime::now);
        // The order of the separate layers: the id first (the span and the
        // log show it), then the trace context (the log shows its id).
        let request_id = self.request_id.as_ref().and_then(|r| {
            r.apply_at(req, &mut wall_clock)
                .map(|value| (r.clone(), value))
        });
        let (trace, trace_id) = match &self.trace {
            Some(t) => {
                // The edge's own log is handed the id below; without one,
                // the observation keeps it for whoever reads it inside.
                let (pending, id) = t.start(req, self.access_log.is_none());
                (pending, TraceIdFrom::Known(id))
            }
            None => (None, TraceIdFrom::Header),
        };
        let bytes_in = ByteCount::for_body(req.body());
        // Looked up once for both (and cloned only when both want it).
        let mut found = (self.metrics.is_some() || self.access_log.is_some())
            .then(|| Found::take(req.extensions_mut()));
        let metrics = self.metrics.as_ref().and_then(|m| {
            let found = match self.access_log {
                Some(_) => found.clone(),
                None => found.take(),
            }?;
            Some(metrics_layer::Pending::start(
                m,
                found,
                bytes_in.clone(),
                now,
            ))
        });
        let access_log = self.access_log.as_ref().zip(found).map(|(l, found)| {
            access_log::Pending::start(
                l,
                req,
                found,
                bytes_in.clone(),
                trace_id,
                (wall_clock(), now),
            )
        });
        let state = Pending {
            request_id,
            trace,
            metrics,
            access_log,
        };
        (state, bytes_in)
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
        let mut res = {
            let _entered = this
                .state
                .as_ref()
                .and_then(|p| p.trace.as_ref())
                .map(|t| t.span.enter());
            ready!(this.inner.poll(cx))
        };
        // The parts are taken one by one, in place: taking the whole state
        // out would copy all of it first.
        let Some(p) = this.state.as_mut() else {
            return Poll::Ready(body::wrap(res, Watch::None));
        };
        // Inside out, as the separate layers would: the log and the metrics
        // see the response as the inner service made it.
        let rsp = res.as_ref().ok();
        let log = p.access_log.take().and_then(|l| l.respond(rsp));
        let metrics = p.metrics.take().and_then(|m| m.finish(rsp));
        if let Some(t) = p.trace.take() {
            (*t).finish(res.as_ref().map_err(|_| ()));
        }
        let watch = match (metrics, log) {
            (Some(m), Some(l)) => Watch::Both(m, l),
            (Some(m), None) => Watch::Metrics(m),
            (None, Some(l)) => Watch::AccessLog(l),
            (None, None) => Watch::None,
        };
        if let (Ok(rsp), Some((r, id))) = (&mut res, p.request_id.take()) {
            r.respond(rsp, id);
        }
        *this.state = None;
        Poll::Ready(body::wrap(res, watch))
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("done", &self.state.is_none())
            .finish()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::convert::Infallible;

    use http::{Request, Response};
    use tower::{ServiceExt, service_fn};

    use super::*;
    use crate::Observation;
    use crate::access_log::Sink;

    /// What the layers inside see of an unsampled request's trace id.
    async fn trace_id_inside(layer: ObserveLayer) -> Option<opentelemetry::trace::TraceId> {
        let svc = layer.layer(service_fn(|req: Request<RequestBody<String>>| async move {
            let obs = Observation::from_extensions(req.extensions()).cloned();
            Ok::<_, Infallible>(Response::new(obs))
        }));
        let rsp = svc.oneshot(Request::new(String::new())).await.unwrap();
        rsp.body().get_ref().as_ref().unwrap().snapshot().trace_id
    }

    #[tokio::test]
    async fn unsampled_trace_id_is_observed_unless_the_edge_logs_it_itself() {
        let trace = || TraceLayer::builder().sample_ratio(0.0).build();
        // No log of its own: the observation keeps the id for the inside.
        let alone = ObserveLayer::builder().trace(trace()).build();
        assert!(trace_id_inside(alone).await.is_some());
        // With its own log, the edge hands the id to it directly.
        let log = AccessLogLayer::builder()
            .sink(Sink::writer(std::io::sink()))
            .build()
            .unwrap();
        let logged = ObserveLayer::builder()
            .trace(trace())
            .access_log(log)
            .build();
        assert!(trace_id_inside(logged).await.is_none());
    }
}
