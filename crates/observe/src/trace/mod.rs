//! A tracing span per request, continued from the client's trace context
//! and passed on to the upstream.
//!
//! [`TraceLayer`] opens an INFO span `request` (target
//! `towergate_observe::trace`) around the inner service with these fields:
//!
//! | field | when | |
//! |---|---|---|
//! | `http.request.method` | at the start | |
//! | `url.path` | at the start | the path only: the query may carry secrets |
//! | `request_id` | at the start | the [`RequestId`](towergate_core::RequestId), when [`RequestIdLayer`](crate::RequestIdLayer) runs first |
//! | `http.route` | at the response | the route name, never the raw path |
//! | `upstream` | at the response | the endpoint from [`UpstreamInfo`](crate::UpstreamInfo) |
//! | `http.response.status_code` | at the response | |
//! | `latency_ms` | at the response | time to the response headers |
//! | `otel.status_code` | at the response | `error` on a 5xx or a failure |
//!
//! The span ends when the response headers come back (a streamed body is
//! not waited for).
//!
//! # Where the route comes from
//!
//! The route is matched after this layer has handed the request on, so
//! `http.route` starts empty and is recorded when the response comes back,
//! from (first found): the request's [`RouteMatch`](towergate_core::RouteMatch)
//! when the layer sits inside the router; the [`Observation`](crate::Observation)
//! that a [`RecordLayer`](crate::RecordLayer) inside the router filled; a
//! `RouteMatch` in the response extensions. The upstream comes from the
//! observation or an [`UpstreamInfo`](crate::UpstreamInfo) in the response
//! extensions, as [`RecordUpstreamLayer`](crate::RecordUpstreamLayer) puts them.
//!
//! # OpenTelemetry
//!
//! With the subscriber layer of [`otel::layer`](crate::otel::layer) installed,
//! the span is an OpenTelemetry server span:
//!
//! - its parent is the client's W3C `traceparent`/`tracestate` (or, with
//!   [`TraceBuilder::b3`], a single `b3` header), so it joins the client's
//!   trace, and the sampler of [`otel::init`](crate::otel::init) is
//!   parent-based: a `-00` (not sampled) parent is not sampled here either;
//! - its name is `{method} {route}` (`GET` alone when no route matched);
//! - its context replaces the trace headers of the request that goes to the
//!   upstream: the upstream sees the same trace id, this span's id as
//!   parent, and the same sampling flag.
//!
//! Without that subscriber layer, or when the span is disabled by a
//! filter, the trace headers go to the upstream as the client sent them.
//!
//! # Sampling before the span
//!
//! By default every request gets its span and the OpenTelemetry sampler
//! decides what is exported. With [`TraceBuilder::sample_ratio`] the layer
//! decides first (parent-based, then the ratio) and a request that is not
//! sampled gets no span at all, only its trace context toward the
//! upstream (same trace id, new parent id, sampled flag off): at a ratio
//! of 1 %, 99 % of the requests skip the span's whole cost.
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use towergate_observe::TraceLayer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let svc = ServiceBuilder::new()
//!     .layer(TraceLayer::new())
//!     .service(service_fn(|req: Request<()>| async move {
//!         // No OpenTelemetry subscriber here: the client's context passes as is.
//!         assert!(req.headers().contains_key("traceparent"));
//!         Ok::<_, Infallible>(Response::new(()))
//!     }));
//! let req = Request::get("/")
//!     .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
//!     .body(())
//!     .unwrap();
//! assert_eq!(svc.oneshot(req).await.unwrap().status(), 200);
//! # }
//! ```

use std::sync::Arc;

use tower::Layer;

mod propagation;
mod service;

pub(crate) use propagation::{Propagator, parse_traceparent, traceparent_of};
pub(crate) use service::Pending;
pub use service::{ResponseFuture, Trace};

/// Opens a span per request and propagates its trace context; see the
/// [module docs](self).
#[derive(Clone, Debug)]
#[must_use]
pub struct TraceLayer {
    pub(crate) shared: Arc<Shared>,
}

/// Settings for a [`TraceLayer`]; see [`TraceLayer::builder`].
#[derive(Debug)]
#[must_use]
pub struct TraceBuilder {
    b3: bool,
    inject: bool,
    sample_ratio: Option<f64>,
    trust_sampled: bool,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) propagator: Propagator,
    pub(crate) inject: bool,
    pub(crate) sample_ratio: Option<f64>,
    pub(crate) trust_sampled: bool,
}

// === impl TraceLayer ===

impl TraceLayer {
    /// W3C trace context in and out.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// Starts building a layer with other propagation settings.
    pub fn builder() -> TraceBuilder {
        TraceBuilder {
            b3: false,
            inject: true,
            sample_ratio: None,
            trust_sampled: true,
        }
    }
}

impl Default for TraceLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = Trace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Trace::from_shared(inner, self.shared.clone())
    }
}

// === impl TraceBuilder ===

impl TraceBuilder {
    /// Also read the single-header B3 format (`b3`) when no `traceparent`
    /// came, and write it toward the upstream next to `traceparent`.
    /// Default false.
    ///
    /// B3 may leave sampling to the receiver. With
    /// [`sample_ratio`](Self::sample_ratio), a `b3` with ids but no
    /// sampling field is sampled at the ratio, and a lone decision
    /// (`0`, `1`, `d`) starts a new trace with that decision. Without it,
    /// the OpenTelemetry sampler sees such a parent as not sampled (a
    /// parent-based sampler cannot defer to its root sampler for a
    /// remote parent), and a lone decision as no parent.
    pub fn b3(mut self, yes: bool) -> Self {
        self.b3 = yes;
        self
    }

    /// Whether the span's context replaces the trace headers toward the
    /// upstream. Default true; turn it off when the upstream must not learn
    /// about the gateway's spans.
    pub fn inject(mut self, yes: bool) -> Self {
        self.inject = yes;
        self
    }

    /// Decide sampling in this layer, before any span exists: a request
    /// whose client sent a trace context follows its sampled flag
    /// (parent-based), any other is sampled with probability `ratio`
    /// (clamped to 0..=1). A request not sampled gets **no span at all**,
    /// only its trace context: the upstream receives a `traceparent` with
    /// the same trace id (a new one when the client sent none), a new
    /// parent id and the sampled flag off, and the access log still shows
    /// the trace id. That is what makes a low ratio cheap: building the
    /// span of a request that will not be exported costs more than the
    /// rest of the observation together.
    ///
    /// The OpenTelemetry sampler must then take every span this layer
    /// opens: give [`otel::init`](crate::otel::init) a `sample_ratio` of
    /// 1.0 (its sampler is parent-based, so unsampled parents stay
    /// unsampled). Without this setting (the default) every request gets
    /// its span and the OpenTelemetry sampler decides.
    pub fn sample_ratio(mut self, ratio: f64) -> Self {
        self.sample_ratio = Some(if ratio.is_nan() {
            0.0
        } else {
            ratio.clamp(0.0, 1.0)
        });
        self
    }

    /// With [`sample_ratio`](Self::sample_ratio): whether a client's
    /// "sampled" flag is followed (default true, W3C parent-based). Off, a
    /// request the client marked sampled is sampled at the ratio like any
    /// other (its trace id is kept either way), so that clients on the
    /// internet cannot make every request of theirs export a span; a
    /// client's "not sampled" is still followed, which only saves work.
    pub fn trust_sampled(mut self, yes: bool) -> Self {
        self.trust_sampled = yes;
        self
    }

    /// Builds the layer (nothing here can be wrong).
    pub fn build(self) -> TraceLayer {
        TraceLayer {
            shared: Arc::new(Shared {
                propagator: Propagator::new(self.b3),
                inject: self.inject,
                sample_ratio: self.sample_ratio,
                trust_sampled: self.trust_sampled,
            }),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use http::Request;
    use opentelemetry_semantic_conventions::attribute;

    use super::TraceLayer;
    use super::propagation::TRACEPARENT;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";

    #[test]
    fn an_unsampled_trace_id_is_one_that_travels() {
        let request = |traceparent: Option<&str>| {
            let mut req = Request::new(());
            if let Some(tp) = traceparent {
                req.headers_mut().insert(TRACEPARENT, tp.parse().unwrap());
            }
            req
        };
        let layer = |inject| {
            TraceLayer::builder()
                .sample_ratio(0.0)
                .inject(inject)
                .build()
        };

        // Injected: a new trace, the id the upstream gets.
        let mut req = request(None);
        let (pending, id) = layer(true).shared.start(&mut req, false);
        assert!(pending.is_none());
        let sent = req.headers()[TRACEPARENT].to_str().unwrap();
        assert_eq!(&sent[3..35], id.unwrap().to_string());

        // Not injected: a new id would be known nowhere else, so none.
        let mut req = request(None);
        let (_, id) = layer(false).shared.start(&mut req, false);
        assert_eq!(id, None);
        assert!(req.headers().get(TRACEPARENT).is_none());

        // Not injected, the client's trace: its id, its header untouched.
        let mut req = request(Some(TP));
        let (_, id) = layer(false).shared.start(&mut req, false);
        assert_eq!(id.unwrap().to_string(), &TP[3..35]);
        assert_eq!(req.headers()[TRACEPARENT], TP);
    }

    /// A client's "sampled" flag decides unless told not to trust it: then
    /// the ratio decides, and the client's trace id travels on unsampled.
    #[test]
    fn a_clients_sampled_flag_is_followed_only_when_trusted() {
        let sampled = TP.replace("-00", "-01");
        let start = |trust| {
            let mut req = Request::new(());
            req.headers_mut()
                .insert(TRACEPARENT, sampled.parse().unwrap());
            let layer = TraceLayer::builder()
                .sample_ratio(0.0)
                .trust_sampled(trust)
                .build();
            let (pending, id) = layer.shared.start(&mut req, false);
            let sent = req.headers()[TRACEPARENT].to_str().unwrap().to_owned();
            (pending.is_some(), id, sent)
        };
        let (span, _, _) = start(true);
        assert!(span, "trusted: the client's decision");
        let (span, id, sent) = start(false);
        assert!(!span, "untrusted: the ratio's (0)");
        assert_eq!(id.unwrap().to_string(), &TP[3..35]);
        assert_eq!(&sent[3..35], &TP[3..35]);
        assert!(sent.ends_with("-00"), "{sent}");
    }

    // The span's field names are literals in `info_span!`; keep them equal
    // to the semantic conventions.
    #[test]
    fn field_names_follow_semconv() {
        assert_eq!(attribute::HTTP_REQUEST_METHOD, "http.request.method");
        assert_eq!(attribute::HTTP_ROUTE, "http.route");
        assert_eq!(
            attribute::HTTP_RESPONSE_STATUS_CODE,
            "http.response.status_code"
        );
        assert_eq!(attribute::URL_PATH, "url.path");
    }
}
