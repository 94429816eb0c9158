//! [`Trace`]: the service of [`TraceLayer`](super::TraceLayer).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use http::{Method, Request, Response};
use opentelemetry::trace::{SpanId, TraceContextExt, TraceId};
use pin_project_lite::pin_project;
use tower::Service;
use towergate_core::{RequestId, RouteMatch};
use tracing::Span;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::{Shared, TraceLayer};
use crate::observation::{self, Observation};

/// Opens a span per request; see the [module docs](crate::trace).
#[derive(Clone, Debug)]
pub struct Trace<S> {
    inner: S,
    shared: Arc<Shared>,
}

pin_project! {
    /// The response future of [`Trace`]: polls the inner future inside the
    /// span and records the response on it.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        // Boxed: only a sampled request has one, and every request's
        // future would otherwise carry its size.
        state: Option<Box<Pending>>,
    }
}

pub(crate) struct Pending {
    pub(crate) span: Span,
    // The OpenTelemetry context, when an OpenTelemetry subscriber layer
    // made one: to rename the span once the route is known.
    otel: Option<opentelemetry::Context>,
    /// The method as the conventions name it ([`known_method`]).
    method: &'static str,
    route_at_call: Option<Arc<str>>,
    obs: Observation,
    start: Instant,
}

// === impl Trace ===

impl<S> Trace<S> {
    /// Wraps `inner` with the settings of [`TraceLayer::new`].
    pub fn new(inner: S) -> Self {
        tower::Layer::layer(&TraceLayer::new(), inner)
    }

    pub(super) fn from_shared(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }

    /// A [`TraceLayer`] with the default settings.
    pub fn layer() -> TraceLayer {
        TraceLayer::new()
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

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Trace<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let (state, _) = self.shared.start(&mut req, true);
        let inner = match &state {
            Some(p) => p.span.in_scope(|| self.inner.call(req)),
            None => self.inner.call(req),
        };
        ResponseFuture { inner, state }
    }
}

// === impl Shared ===

impl Shared {
    /// Decides sampling, opens the span (when sampled or when this layer
    /// does not sample) and writes the trace context toward the upstream.
    /// Returns what to finish (`None`: not sampled, nothing) and the
    /// request's trace id, if it has one. `record_unsampled`: whether an
    /// unsampled request's trace id goes to the [`Observation`] too (for
    /// an access log behind this layer; the edge layer hands it over
    /// itself).
    pub(crate) fn start<B>(
        &self,
        req: &mut Request<B>,
        record_unsampled: bool,
    ) -> (Option<Box<Pending>>, Option<TraceId>) {
        if let Some(ratio) = self.sample_ratio {
            let (remote, tracestate) = self.propagator.scan(req.headers());
            // Parent-based: the client's decision when it made one (B3
            // may leave it to us), the ratio otherwise.
            let sampled = match remote.and_then(|r| r.sampled) {
                Some(true) if !self.trust_sampled => fastrand::f64() < ratio,
                Some(decided) => decided,
                None => fastrand::f64() < ratio,
            };
            if !sampled {
                let trace_id = match remote.and_then(|r| r.trace_id) {
                    Some(id) => id,
                    // A new trace that is neither sent on nor exported is
                    // an id no other system knows: no line shows it.
                    None if !self.inject => return (None, None),
                    None => new_trace_id(),
                };
                if self.inject {
                    let same_trace = remote.is_some_and(|r| r.w3c);
                    self.propagator.inject_unsampled(
                        trace_id,
                        new_span_id(),
                        tracestate.then_some(!same_trace),
                        req.headers_mut(),
                    );
                }
                if record_unsampled {
                    Observation::get_or_insert(req.extensions_mut()).set_trace_id(trace_id);
                }
                return (None, Some(trace_id));
            }
        }
        let method = known_method(req.method());
        let route_at_call = req
            .extensions()
            .get::<RouteMatch>()
            .map(|m| m.route.clone());
        let obs = Observation::get_or_insert(req.extensions_mut());
        let span = {
            let request_id = req.extensions().get::<RequestId>().map(RequestId::as_str);
            // A method the client made up is `_OTHER` (its text apart), and
            // the span is named `HTTP`: span names stay a closed set.
            let original = (method == OTHER_METHOD).then(|| req.method().as_str());
            let scheme = match req.extensions().get::<towergate_core::ClientAddr>() {
                Some(c) if c.https => "https",
                Some(_) => "http",
                None => req.uri().scheme_str().unwrap_or("http"),
            };
            let host = req
                .headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .or_else(|| req.uri().host());
            let server_address = host.map(|h| match h.rsplit_once(':') {
                Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
                _ => h,
            });
            tracing::info_span!(
                target: "towergate_observe::trace",
                "request",
                otel.name = span_name(method),
                otel.kind = "server",
                otel.status_code = Empty,
                http.request.method = method,
                http.request.method_original = original,
                url.scheme = scheme,
                url.path = req.uri().path(),
                server.address = server_address,
                request_id,
                http.route = Empty,
                upstream = Empty,
                http.response.status_code = Empty,
                latency_ms = Empty,
            )
        };

        // Here either this layer sampled the request, or it leaves the
        // decision to the OpenTelemetry sampler.
        let parent = self
            .propagator
            .extract(req.headers(), self.sample_ratio.is_some());
        let remote = parent.span().span_context().clone();
        let mut otel = None;
        let mut trace_id = None;
        if !span.is_disabled() && span.set_parent(parent).is_ok() {
            // Starts the OpenTelemetry span (sampled or not, it has its own
            // span id) so that its context can go to the upstream.
            let cx = span.context();
            let sc = cx.span().span_context().clone();
            if sc.is_valid() {
                trace_id = Some(sc.trace_id());
                obs.set_trace_id(sc.trace_id());
                if self.inject {
                    self.propagator.inject(&cx, req.headers_mut());
                }
                otel = Some(cx);
            }
        }
        if otel.is_none() && remote.is_valid() {
            trace_id = Some(remote.trace_id());
            obs.set_trace_id(remote.trace_id());
        }

        let pending = Pending {
            span,
            otel,
            method,
            route_at_call,
            obs,
            start: Instant::now(),
        };
        (Some(Box::new(pending)), trace_id)
    }
}

/// What OpenTelemetry's HTTP conventions call a method nobody defined.
const OTHER_METHOD: &str = "_OTHER";

/// The method as OpenTelemetry's HTTP conventions name it: one of those
/// RFC 9110 and RFC 5789 define, else `_OTHER` (a client may send any
/// token, and span names and metrics built from them must stay few).
fn known_method(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::CONNECT => "CONNECT",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::PATCH => "PATCH",
        _ => OTHER_METHOD,
    }
}

/// A span's name for `method` (as [`known_method`] gives it): the method,
/// or `HTTP` for one nobody defined.
fn span_name(method: &'static str) -> &'static str {
    if method == OTHER_METHOD {
        "HTTP"
    } else {
        method
    }
}

/// A random trace id, never the invalid all-zero one.
fn new_trace_id() -> TraceId {
    // Drawing the full range and retrying on zero (once in 2^128) is a
    // few instructions; a range draw costs a 128-bit division.
    loop {
        let id = fastrand::u128(..);
        if id != 0 {
            return TraceId::from(id);
        }
    }
}

/// A random span id, never the invalid all-zero one.
fn new_span_id() -> SpanId {
    loop {
        let id = fastrand::u64(..);
        if id != 0 {
            return SpanId::from(id);
        }
    }
}

// === impl ResponseFuture ===

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = {
            let _entered = this.state.as_ref().map(|p| p.span.enter());
            ready!(this.inner.poll(cx))
        };
        if let Some(p) = this.state.take() {
            (*p).finish(res.as_ref().map_err(|_| ()));
        }
        Poll::Ready(res)
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("span", &self.state.as_ref().map(|p| &p.span))
            .finish()
    }
}

// === impl Pending ===

impl Pending {
    pub(crate) fn finish<B>(self, res: Result<&Response<B>, ()>) {
        let span = &self.span;
        let (route, upstream) = observation::resolve(
            self.route_at_call,
            &self.obs,
            res.ok().map(|r| r.extensions()),
        );
        if let Some(route) = &route {
            span.record("http.route", &**route);
        }
        if let Some(upstream) = &upstream {
            span.record("upstream", &**upstream);
        }
        span.record("latency_ms", self.start.elapsed().as_secs_f64() * 1e3);
        match res {
            Ok(rsp) => {
                // As i64: tracing-opentelemetry turns u64 fields into strings.
                span.record(
                    "http.response.status_code",
                    i64::from(rsp.status().as_u16()),
                );
                // For a server span only 5xx are errors: a 4xx is the
                // client's mistake, correctly answered.
                if rsp.status().is_server_error() {
                    span.record("otel.status_code", "error");
                }
            }
            Err(()) => {
                span.record("otel.status_code", "error");
            }
        }
        if let (Some(cx), Some(route)) = (&self.otel, &route) {
            let otel_span = cx.span();
            if otel_span.is_recording() {
                otel_span.update_name(format!("{} {}", span_name(self.method), route));
            }
        }
    }
}
