//! Prometheus metrics: the [`Metrics`] handle (an explicit
//! `prometheus_client` [`Registry`] and every towergate metric family) and
//! the [`MetricsLayer`] that measures requests.
//!
//! # What is measured
//!
//! The layer records, per request:
//!
//! | metric | labels | |
//! |---|---|---|
//! | `towergate_http_requests_total` | `route`, `status_class` | counted when the response headers come back |
//! | `towergate_http_request_duration_seconds` | `route` | histogram, time to response headers, 0.5 ms .. 10 s |
//! | `towergate_http_requests_in_flight` | | from the call until the response body ends |
//! | `towergate_http_request_body_bytes_total` | `route` | request body bytes, as streamed |
//! | `towergate_http_response_body_bytes_total` | `route` | response body bytes, counted frame by frame |
//!
//! [`RecordUpstreamLayer`](crate::RecordUpstreamLayer) with a handle adds
//! `towergate_upstream_requests_total{upstream,status_class}` and
//! `towergate_upstream_request_duration_seconds{upstream}`; the rest of the
//! gateway feeds the other families through methods of [`Metrics`]
//! (connections, authentication failures, rate-limit rejections, retries,
//! ejections, circuit state, config reloads, Redis degradation).
//!
//! `status_class` is `1xx` .. `5xx`; a request whose inner service failed
//! without a response counts as `5xx` at the edge (the rescue layer turns
//! it into a 5xx problem) and as `error` at the upstream. A request whose
//! caller left before the response headers (or whose connection was cut
//! at shutdown) counts as `cancelled`, with the time it ran and the body
//! bytes it sent: the access log's 499.
//!
//! # Label cardinality
//!
//! Labels are route names, upstream endpoints, and the short reasons and
//! limit names the gateway's own code passes: all bounded by the
//! configuration. Raw paths, user ids and client addresses never become
//! labels; a request that matched no route is `route="(none)"`.
//!
//! # Exposition
//!
//! [`Metrics::encode`] writes the OpenMetrics text format (what
//! `prometheus_client` produces, ending in `# EOF`); serve it with
//! [`CONTENT_TYPE`] so that Prometheus parses it as OpenMetrics.
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response, StatusCode};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use towergate_core::RouteMatch;
//! use towergate_observe::Metrics;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let metrics = Metrics::new();
//! let svc = ServiceBuilder::new()
//!     .layer(metrics.layer())
//!     .service(service_fn(|req: Request<_>| async move {
//!         let _ = req;
//!         Ok::<_, Infallible>(Response::builder().status(404).body(String::new()).unwrap())
//!     }));
//! let mut req = Request::new(String::new());
//! // Normally the router puts it there.
//! req.extensions_mut().insert(RouteMatch::new("users"));
//! let rsp = svc.oneshot(req).await.unwrap();
//! assert_eq!(rsp.status(), StatusCode::NOT_FOUND);
//! drop(rsp);
//!
//! metrics.auth_failure("expired");
//! let text = metrics.encode();
//! assert!(text.contains(r#"towergate_http_requests_total{route="users",status_class="4xx"} 1"#));
//! assert!(text.contains(r#"towergate_auth_failures_total{reason="expired"} 1"#));
//! assert!(text.contains("towergate_http_requests_in_flight 0"));
//! assert!(text.ends_with("# EOF\n"));
//! # }
//! ```

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use http::StatusCode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::error::BuildError;

pub(crate) mod layer;

pub use layer::{MetricsLayer, RecordMetrics, ResponseFuture};

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The default duration buckets, in seconds: 0.5 ms to 10 s.
pub const DEFAULT_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// The `route` label of requests that matched no route.
pub const NO_ROUTE: &str = "(none)";

/// The handle on towergate's metrics: cheap to clone, all clones share one
/// registry. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct Metrics {
    inner: Arc<Inner>,
}

/// Settings for [`Metrics`]; see [`Metrics::builder`].
#[derive(Debug, Default)]
#[must_use]
pub struct MetricsBuilder {
    registry: Option<Registry>,
    buckets: Option<Vec<f64>>,
}

/// Drops the open-connections gauge by one when dropped; see
/// [`Metrics::open_connection`].
#[derive(Debug)]
#[must_use = "the connection counts as open until the guard is dropped"]
pub struct ConnectionGuard {
    metrics: Metrics,
}

/// Drops the open-tunnels gauge by one when dropped; see
/// [`Metrics::open_tunnel`].
#[derive(Debug)]
#[must_use = "the tunnel counts as open until the guard is dropped"]
pub struct TunnelGuard {
    metrics: Metrics,
}

/// The state of a circuit breaker, as `towergate_circuit_state` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CircuitState {
    /// Requests flow (gauge value 0).
    Closed,
    /// Trial requests flow (1).
    HalfOpen,
    /// Requests are refused (2).
    Open,
}

#[derive(Debug)]
pub(crate) struct Inner {
    registry: Registry,
    pub(crate) requests: Family<RouteClass, Counter>,
    pub(crate) duration: Family<RouteLabel, Histogram, Buckets>,
    pub(crate) in_flight: Gauge,
    pub(crate) request_bytes: Family<RouteLabel, Counter>,
    pub(crate) response_bytes: Family<RouteLabel, Counter>,
    upstream_requests: Family<UpstreamClass, Counter>,
    upstream_duration: Family<UpstreamLabel, Histogram, Buckets>,
    open_connections: Gauge,
    open_tunnels: Gauge,
    connections: Counter,
    auth_failures: Family<ReasonLabel, Counter>,
    ratelimit_rejections: Family<LimitLabel, Counter>,
    retries: Family<RouteLabel, Counter>,
    ejections: Family<UpstreamLabel, Counter>,
    circuit_state: Family<UpstreamLabel, Gauge>,
    config_reloads: Family<ResultLabel, Counter>,
    config_last_reload_ok: Gauge,
    redis_degraded: Gauge,
    access_log_dropped: Counter,
    cache_requests: Family<CacheLabel, Counter>,
    cache_size: Gauge,
    cache_entries: Gauge,
    /// The live [`UpstreamMetrics`] of each endpoint label: when the last
    /// goes (the endpoint left its pool: DNS discovery, a reload) and none
    /// comes back within [`Metrics::forget_endpoints_after`], the
    /// endpoint's series go too, so that churning endpoints do not grow
    /// `/metrics` without end.
    upstream_refs: Mutex<Refs>,
    /// That grace, in milliseconds.
    forget_after_ms: AtomicU64,
}

impl Inner {
    /// Removes the series of endpoint labels gone for longer than the
    /// grace; `refs` is `upstream_refs`, locked.
    fn sweep_locked(&self, refs: &mut Refs, now: Instant) {
        let grace = Duration::from_millis(self.forget_after_ms.load(Ordering::Relaxed));
        refs.last_sweep = Some(now);
        refs.labels.retain(|upstream, entry| {
            let expired = entry.live == 0
                && entry
                    .orphaned
                    .is_some_and(|t| now.saturating_duration_since(t) >= grace);
            if !expired {
                return true;
            }
            for status_class in CLASSES.iter().copied().chain(["error", "cancelled"]) {
                self.upstream_requests.remove(&UpstreamClass {
                    upstream: upstream.clone(),
                    status_class,
                });
            }
            self.upstream_duration.remove(&UpstreamLabel {
                upstream: upstream.clone(),
            });
            false
        });
    }
}

/// The endpoint labels with handles, and when gone ones were last swept.
#[derive(Debug, Default)]
struct Refs {
    labels: HashMap<Arc<str>, LabelRefs>,
    last_sweep: Option<Instant>,
}

/// At most this often, a handle going also sweeps (a process nobody
/// scrapes must not keep every endpoint that ever was).
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// The handles of one endpoint label; see [`Inner::upstream_refs`].
#[derive(Debug, Default)]
struct LabelRefs {
    live: usize,
    /// A live handle keeps its series for good (`forget` off).
    keep: bool,
    /// When the last handle went.
    orphaned: Option<Instant>,
}

/// How long an endpoint's series outlive its last handle by default: a
/// reload replaces every pool, and a DNS-discovered pool fills in only
/// after its first lookup; the series must not blink meanwhile.
pub const DEFAULT_FORGET_ENDPOINTS_AFTER: Duration = Duration::from_secs(300);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabel {
    route: Arc<str>,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteClass {
    pub(crate) route: Arc<str>,
    pub(crate) status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteLabel {
    pub(crate) route: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamClass {
    upstream: Arc<str>,
    status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabel {
    upstream: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: Cow<'static, str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabel {
    limit: Cow<'static, str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// Builds every histogram of a family with the same buckets.
#[derive(Clone, Debug)]
pub(crate) struct Buckets(Arc<[f64]>);

/// The `status_class` labels, in the order of [`class_index`].
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The `status_class` of a request given up before its answer.
pub(crate) const CANCELLED_CLASS: &str = "cancelled";

/// A route's metric handles, resolved once from the families: looking a
/// label set up hashes it (SipHash) and takes the family's lock, four times
/// per request otherwise. Handles share their values with the families, so
/// what is exposed is the same.
///
/// Each label set is still created when the first request needs it, as
/// `get_or_create` would, so no series appears before its first sample.
#[derive(Debug)]
pub(crate) struct RouteMetrics {
    /// The handle the series belong to.
    metrics: Metrics,
    route: Arc<str>,
    /// `towergate_http_requests_total`, by [`class_index`], then
    /// `cancelled`.
    requests: [OnceLock<Counter>; 6],
    pub(crate) duration: Histogram,
    pub(crate) request_bytes: Counter,
    /// Made at the first response: a failure has no body to count.
    response_bytes: OnceLock<Counter>,
}

/// Where a route's [`RouteMetrics`] are kept once resolved: one per route
/// stack ([`RecordLayer`](crate::RecordLayer) makes it), handed to the
/// metrics layer through the [`Observation`](crate::Observation).
#[derive(Debug, Default)]
pub(crate) struct RouteMetricsSlot(OnceLock<RouteMetrics>);

/// An upstream endpoint's metric handles, resolved once; see
/// [`RouteMetrics`].
#[derive(Debug)]
pub(crate) struct UpstreamMetrics {
    pub(crate) metrics: Metrics,
    pub(crate) upstream: Arc<str>,
    /// `towergate_upstream_requests_total`, by [`class_index`], then
    /// `error` and `cancelled`.
    requests: [OnceLock<Counter>; 7],
    duration: OnceLock<Histogram>,
}

/// The index of a status's class in [`CLASSES`].
fn class_index(status: StatusCode) -> usize {
    match status.as_u16() {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

/// The `status_class` label of a status: `1xx` to `5xx`.
///
/// ```
/// use towergate_observe::metrics::status_class;
/// assert_eq!(status_class(http::StatusCode::TOO_MANY_REQUESTS), "4xx");
/// assert_eq!(status_class(http::StatusCode::SWITCHING_PROTOCOLS), "1xx");
/// ```
pub fn status_class(status: StatusCode) -> &'static str {
    CLASSES[class_index(status)]
}

// === impl RouteMetrics ===

impl RouteMetrics {
    fn resolve(metrics: &Metrics, route: Arc<str>) -> Self {
        let m = metrics.inner();
        let label = RouteLabel {
            route: route.clone(),
        };
        Self {
            duration: m.duration.get_or_create_owned(&label),
            request_bytes: m.request_bytes.get_or_create_owned(&label),
            response_bytes: OnceLock::new(),
            metrics: metrics.clone(),
            route,
            requests: Default::default(),
        }
    }

    /// `towergate_http_response_body_bytes_total{route}`.
    pub(crate) fn response_bytes(&self) -> &Counter {
        self.response_bytes.get_or_init(|| {
            self.metrics
                .inner()
                .response_bytes
                .get_or_create_owned(&RouteLabel {
                    route: self.route.clone(),
                })
        })
    }

    /// `towergate_http_requests_total{route, status_class}`; `None` is a
    /// failure without a response, counted as `5xx`.
    pub(crate) fn requests(&self, status: Option<StatusCode>) -> &Counter {
        let i = status.map_or(4, class_index);
        self.requests_of(i, CLASSES[i])
    }

    /// `towergate_http_requests_total{route, status_class="cancelled"}`.
    pub(crate) fn cancelled(&self) -> &Counter {
        self.requests_of(5, CANCELLED_CLASS)
    }

    fn requests_of(&self, i: usize, class: &'static str) -> &Counter {
        self.requests[i].get_or_init(|| {
            self.metrics
                .inner()
                .requests
                .get_or_create_owned(&RouteClass {
                    route: self.route.clone(),
                    status_class: class,
                })
        })
    }
}

// === impl RouteMetricsSlot ===

impl RouteMetricsSlot {
    /// The handles of `route` in `metrics`, resolved on the first call.
    /// `None` when this slot already holds another route's or another
    /// registry's (a layer shared between routes): then the caller looks
    /// the label sets up itself.
    pub(crate) fn get(&self, metrics: &Metrics, route: &Arc<str>) -> Option<&RouteMetrics> {
        let rm = self
            .0
            .get_or_init(|| RouteMetrics::resolve(metrics, route.clone()));
        let same_route = Arc::ptr_eq(&rm.route, route) || rm.route == *route;
        (same_route && Arc::ptr_eq(&rm.metrics.inner, &metrics.inner)).then_some(rm)
    }
}

// === impl UpstreamMetrics ===

impl UpstreamMetrics {
    /// `forget`: when this is the last handle of its label to go, the
    /// label's series go too (see [`Drop`]).
    pub(crate) fn new(metrics: Metrics, upstream: Arc<str>, forget: bool) -> Self {
        {
            let mut refs = metrics
                .inner
                .upstream_refs
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let entry = refs.labels.entry(upstream.clone()).or_default();
            entry.live += 1;
            entry.keep |= !forget;
            entry.orphaned = None;
        }
        Self {
            metrics,
            upstream,
            requests: Default::default(),
            duration: OnceLock::new(),
        }
    }

    /// What [`Metrics::observe_upstream`] does, with the handles resolved
    /// on first use.
    pub(crate) fn observe(&self, status: Option<StatusCode>, elapsed: Duration) {
        match status {
            Some(s) => self.count(class_index(s), elapsed),
            None => self.count(ERROR, elapsed),
        }
    }

    /// A call given up before its answer (the route's timeout, the losing
    /// attempt of a hedge, the client leaving): `cancelled`, with the time
    /// it had run.
    pub(crate) fn cancelled(&self, elapsed: Duration) {
        self.count(CANCELLED, elapsed);
    }

    fn count(&self, i: usize, elapsed: Duration) {
        let m = self.metrics.inner();
        let class = match i {
            ERROR => "error",
            CANCELLED => CANCELLED_CLASS,
            _ => CLASSES.get(i).copied().unwrap_or("error"),
        };
        if let Some(requests) = self.requests.get(i) {
            requests
                .get_or_init(|| {
                    m.upstream_requests.get_or_create_owned(&UpstreamClass {
                        upstream: self.upstream.clone(),
                        status_class: class,
                    })
                })
                .inc();
        }
        self.duration
            .get_or_init(|| {
                m.upstream_duration.get_or_create_owned(&UpstreamLabel {
                    upstream: self.upstream.clone(),
                })
            })
            .observe(elapsed.as_secs_f64());
    }
}

impl Drop for UpstreamMetrics {
    fn drop(&mut self) {
        let mut refs = self
            .metrics
            .inner()
            .upstream_refs
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(entry) = refs.labels.get_mut(&self.upstream) else {
            return;
        };
        entry.live = entry.live.saturating_sub(1);
        if entry.live > 0 {
            return;
        }
        let now = Instant::now();
        if entry.keep {
            // Some handle asked to keep the series: they stay, uncounted.
            refs.labels.remove(&self.upstream);
        } else {
            // Removed at a scrape (or a later sweep here) after the grace,
            // unless a handle of the label comes back first.
            entry.orphaned = Some(now);
        }
        let inner = self.metrics.inner();
        if refs
            .last_sweep
            .is_none_or(|t| now.saturating_duration_since(t) >= SWEEP_EVERY)
        {
            inner.sweep_locked(&mut refs, now);
        }
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// [`UpstreamMetrics::requests`] of a call that failed without a response.
const ERROR: usize = 5;
/// [`UpstreamMetrics::requests`] of a call given up before its answer.
const CANCELLED: usize = 6;

// === impl Metrics ===

impl Metrics {
    /// A handle with its own registry and the default buckets.
    pub fn new() -> Self {
        Self::from_parts(Registry::default(), Buckets(Arc::from(DEFAULT_BUCKETS)))
    }

    /// Starts building a handle over a given registry or with other buckets.
    pub fn builder() -> MetricsBuilder {
        MetricsBuilder::default()
    }

    /// A [`MetricsLayer`] that records into this handle.
    pub fn layer(&self) -> MetricsLayer {
        MetricsLayer::new(self.clone())
    }

    /// The registry, to encode it along with others.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// The whole registry in the OpenMetrics text format; serve it with
    /// [`CONTENT_TYPE`].
    pub fn encode(&self) -> String {
        self.sweep_endpoints(Instant::now());
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail; a metric that cannot encode
        // itself would be a prometheus_client bug, and a partial page
        // beats none.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.inner.registry);
        out
    }

    /// How long the series of an endpoint whose
    /// [`RecordUpstreamLayer`](crate::RecordUpstreamLayer) handles (made
    /// with [`forget_when_dropped`](crate::RecordUpstreamLayer::forget_when_dropped))
    /// are all gone stay in the page: they are removed at the first
    /// [`encode`](Self::encode) after that, unless a handle of the same
    /// label came back meanwhile. Default
    /// [`DEFAULT_FORGET_ENDPOINTS_AFTER`] (5 minutes): long enough for a
    /// reload's new pools, DNS-discovered ones included, to take over,
    /// and so that the last increments are scraped.
    pub fn forget_endpoints_after(&self, grace: Duration) {
        self.inner
            .forget_after_ms
            .store(duration_ms(grace), Ordering::Relaxed);
    }

    /// Removes the series of endpoints gone for longer than the grace.
    fn sweep_endpoints(&self, now: Instant) {
        let m = &self.inner;
        let mut refs = m
            .upstream_refs
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        m.sweep_locked(&mut refs, now);
    }

    /// Counts an accepted connection as open until the guard is dropped
    /// (`towergate_open_connections`, `towergate_connections_total`).
    pub fn open_connection(&self) -> ConnectionGuard {
        self.inner.open_connections.inc();
        self.inner.connections.inc();
        ConnectionGuard {
            metrics: self.clone(),
        }
    }

    /// Counts a tunnel (an upgraded connection) as open until the guard is
    /// dropped (`towergate_open_tunnels`).
    pub fn open_tunnel(&self) -> TunnelGuard {
        self.inner.open_tunnels.inc();
        TunnelGuard {
            metrics: self.clone(),
        }
    }

    /// Counts a refused authentication, by a short fixed reason
    /// (`missing`, `expired`, `bad_signature`, ...):
    /// `towergate_auth_failures_total{reason}`.
    pub fn auth_failure(&self, reason: impl Into<Cow<'static, str>>) {
        self.inner
            .auth_failures
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc();
    }

    /// Counts a request refused by the named limit:
    /// `towergate_ratelimit_rejections_total{limit}`.
    pub fn rate_limited(&self, limit: impl Into<Cow<'static, str>>) {
        self.inner
            .ratelimit_rejections
            .get_or_create(&LimitLabel {
                limit: limit.into(),
            })
            .inc();
    }

    /// Counts a retry on the route: `towergate_retries_total{route}`.
    pub fn retry(&self, route: impl Into<Arc<str>>) {
        self.inner
            .retries
            .get_or_create(&RouteLabel {
                route: route.into(),
            })
            .inc();
    }

    /// Counts an endpoint ejected from its pool by passive health checks:
    /// `towergate_upstream_ejections_total{upstream}`.
    pub fn ejection(&self, upstream: impl Into<Arc<str>>) {
        self.inner
            .ejections
            .get_or_create(&UpstreamLabel {
                upstream: upstream.into(),
            })
            .inc();
    }

    /// Sets the circuit breaker state of an upstream:
    /// `towergate_circuit_state{upstream}` (0 closed, 1 half-open, 2 open).
    pub fn circuit_state(&self, upstream: impl Into<Arc<str>>, state: CircuitState) {
        let v = match state {
            CircuitState::Closed => 0,
            CircuitState::HalfOpen => 1,
            CircuitState::Open => 2,
        };
        self.inner
            .circuit_state
            .get_or_create(&UpstreamLabel {
                upstream: upstream.into(),
            })
            .set(v);
    }

    /// Drops an upstream's `towergate_circuit_state` series: the upstream
    /// is gone from the configuration, and its last state would otherwise
    /// stay (an open circuit alerting forever).
    pub fn forget_circuit_state(&self, upstream: impl Into<Arc<str>>) {
        self.inner.circuit_state.remove(&UpstreamLabel {
            upstream: upstream.into(),
        });
    }

    /// The configuration a process started with is loaded:
    /// `towergate_config_last_reload_successful` reads 1 (as Prometheus's
    /// own gauge does), so an alert on 0 does not fire for a fresh process
    /// that never reloaded. No reload is counted.
    pub fn config_loaded(&self) {
        self.inner.config_last_reload_ok.set(1);
    }

    /// Counts a configuration reload and whether it was applied:
    /// `towergate_config_reloads_total{result="success"|"failure"}` and
    /// `towergate_config_last_reload_successful` (1 or 0).
    pub fn config_reload(&self, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.inner
            .config_reloads
            .get_or_create(&ResultLabel { result })
            .inc();
        self.inner.config_last_reload_ok.set(i64::from(success));
    }

    /// Counts a request on a cached route by what the cache did with it
    /// (`hit`, `miss`, `stale`, `revalidated`, `bypass`):
    /// `towergate_cache_requests_total{route,result}`.
    pub fn cache_request(&self, route: impl Into<Arc<str>>, result: &'static str) {
        self.inner
            .cache_requests
            .get_or_create(&CacheLabel {
                route: route.into(),
                result,
            })
            .inc();
    }

    /// The response cache's size now: `towergate_cache_size_bytes` and
    /// `towergate_cache_entries` (set when metrics are scraped).
    pub fn cache_size(&self, bytes: u64, entries: u64) {
        self.inner
            .cache_size
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        self.inner
            .cache_entries
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
    }

    /// Whether the shared rate-limit store (Redis) is unreachable and the
    /// gateway fell back to local limits: `towergate_redis_degraded` (1 or 0).
    pub fn redis_degraded(&self, degraded: bool) {
        self.inner.redis_degraded.set(i64::from(degraded));
    }

    /// Counts one call to an upstream endpoint: its status class (`error`
    /// when it failed without a response) and its duration up to the
    /// response headers. [`RecordUpstreamLayer`](crate::RecordUpstreamLayer)
    /// calls it.
    pub fn observe_upstream(
        &self,
        upstream: impl Into<Arc<str>>,
        status: Option<StatusCode>,
        elapsed: Duration,
    ) {
        let upstream = upstream.into();
        let status_class = status.map(status_class).unwrap_or("error");
        self.inner
            .upstream_requests
            .get_or_create(&UpstreamClass {
                upstream: upstream.clone(),
                status_class,
            })
            .inc();
        self.inner
            .upstream_duration
            .get_or_create(&UpstreamLabel { upstream })
            .observe(elapsed.as_secs_f64());
    }

    /// The number of requests in flight now.
    pub fn in_flight(&self) -> i64 {
        self.inner.in_flight.get()
    }

    pub(crate) fn access_log_dropped(&self) {
        self.inner.access_log_dropped.inc();
    }

    /// `lines` lost at once (a failing sink's backlog).
    pub(crate) fn access_log_lost(&self, lines: u64) {
        self.inner.access_log_dropped.inc_by(lines);
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    fn from_parts(mut registry: Registry, buckets: Buckets) -> Self {
        let inner = Inner {
            requests: Family::default(),
            duration: Family::new_with_constructor(buckets.clone()),
            in_flight: Gauge::default(),
            request_bytes: Family::default(),
            response_bytes: Family::default(),
            upstream_requests: Family::default(),
            upstream_duration: Family::new_with_constructor(buckets),
            open_connections: Gauge::default(),
            open_tunnels: Gauge::default(),
            connections: Counter::default(),
            auth_failures: Family::default(),
            ratelimit_rejections: Family::default(),
            retries: Family::default(),
            ejections: Family::default(),
            circuit_state: Family::default(),
            config_reloads: Family::default(),
            config_last_reload_ok: Gauge::default(),
            redis_degraded: Gauge::default(),
            access_log_dropped: Counter::default(),
            cache_requests: Family::default(),
            cache_size: Gauge::default(),
            cache_entries: Gauge::default(),
            upstream_refs: Mutex::default(),
            forget_after_ms: AtomicU64::new(duration_ms(DEFAULT_FORGET_ENDPOINTS_AFTER)),
            registry: Registry::default(),
        };
        let r = registry.sub_registry_with_prefix("towergate");
        r.register(
            "http_requests",
            "Requests by route and status class",
            inner.requests.clone(),
        );
        r.register_with_unit(
            "http_request_duration",
            "Time from the request to its response headers",
            Unit::Seconds,
            inner.duration.clone(),
        );
        r.register(
            "http_requests_in_flight",
            "Requests whose response has not ended",
            inner.in_flight.clone(),
        );
        r.register_with_unit(
            "http_request_body",
            "Request body bytes received",
            Unit::Bytes,
            inner.request_bytes.clone(),
        );
        r.register_with_unit(
            "http_response_body",
            "Response body bytes sent",
            Unit::Bytes,
            inner.response_bytes.clone(),
        );
        r.register(
            "upstream_requests",
            "Calls to upstream endpoints by status class (error: no response)",
            inner.upstream_requests.clone(),
        );
        r.register_with_unit(
            "upstream_request_duration",
            "Time from the upstream call to its response headers",
            Unit::Seconds,
            inner.upstream_duration.clone(),
        );
        r.register(
            "open_connections",
            "Client connections open now",
            inner.open_connections.clone(),
        );
        r.register(
            "connections",
            "Client connections accepted",
            inner.connections.clone(),
        );
        r.register(
            "open_tunnels",
            "Upgraded connections (WebSocket tunnels) open now",
            inner.open_tunnels.clone(),
        );
        r.register(
            "auth_failures",
            "Refused authentications by reason",
            inner.auth_failures.clone(),
        );
        r.register(
            "ratelimit_rejections",
            "Requests refused by rate limits, by limit",
            inner.ratelimit_rejections.clone(),
        );
        r.register(
            "retries",
            "Upstream retries by route",
            inner.retries.clone(),
        );
        r.register(
            "upstream_ejections",
            "Endpoints ejected by passive health checks",
            inner.ejections.clone(),
        );
        r.register(
            "circuit_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open",
            inner.circuit_state.clone(),
        );
        r.register(
            "config_reloads",
            "Configuration reloads by result",
            inner.config_reloads.clone(),
        );
        r.register(
            "config_last_reload_successful",
            "Whether the last configuration reload was applied",
            inner.config_last_reload_ok.clone(),
        );
        r.register(
            "redis_degraded",
            "Whether the shared rate-limit store is unreachable",
            inner.redis_degraded.clone(),
        );
        r.register(
            "access_log_dropped",
            "Access-log lines dropped because the writer fell behind",
            inner.access_log_dropped.clone(),
        );
        r.register(
            "cache_requests",
            "Requests on cached routes by cache result (hit, miss, stale, revalidated, bypass)",
            inner.cache_requests.clone(),
        );
        r.register_with_unit(
            "cache_size",
            "Bytes held by the response cache",
            Unit::Bytes,
            inner.cache_size.clone(),
        );
        r.register(
            "cache_entries",
            "Responses held by the response cache",
            inner.cache_entries.clone(),
        );
        Self {
            inner: Arc::new(Inner { registry, ..inner }),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

// === impl MetricsBuilder ===

impl MetricsBuilder {
    /// Registers towergate's families in `registry` (which may already hold
    /// the application's own), so that one page serves both. Default: a new
    /// registry.
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// The duration histogram buckets, in seconds, strictly increasing.
    /// Default [`DEFAULT_BUCKETS`].
    pub fn buckets(mut self, buckets: impl IntoIterator<Item = f64>) -> Self {
        self.buckets = Some(buckets.into_iter().collect());
        self
    }

    /// Checks the buckets and builds the handle.
    pub fn build(self) -> Result<Metrics, BuildError> {
        let buckets = match self.buckets {
            None => Buckets(Arc::from(DEFAULT_BUCKETS)),
            Some(b) => {
                if b.is_empty() {
                    return Err(BuildError::new("metrics: no histogram buckets"));
                }
                if b.iter().any(|v| !v.is_finite() || *v <= 0.0) {
                    return Err(BuildError::new(
                        "metrics: histogram buckets must be finite and positive",
                    ));
                }
                if b.windows(2).any(|w| w[0] >= w[1]) {
                    return Err(BuildError::new(
                        "metrics: histogram buckets must be strictly increasing",
                    ));
                }
                Buckets(Arc::from(b))
            }
        };
        Ok(Metrics::from_parts(
            self.registry.unwrap_or_default(),
            buckets,
        ))
    }
}

// === impl ConnectionGuard ===

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.metrics.inner.open_connections.dec();
    }
}

// === impl TunnelGuard ===

impl Drop for TunnelGuard {
    fn drop(&mut self) {
        self.metrics.inner.open_tunnels.dec();
    }
}

// === impl Buckets ===

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(self.0.iter().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request given up before its answer is counted `cancelled`, with
    /// its duration, and leaves the in-flight gauge.
    #[tokio::test]
    async fn a_request_dropped_before_its_answer_is_cancelled() {
        use tower::{Layer, Service, ServiceExt};
        let m = Metrics::new();
        let mut svc = m.layer().layer(tower::service_fn(
            |_req: http::Request<crate::body::RequestBody<String>>| {
                std::future::pending::<Result<http::Response<String>, std::convert::Infallible>>()
            },
        ));
        let call = svc
            .ready()
            .await
            .unwrap()
            .call(http::Request::new(String::new()));
        let waited = tokio::time::timeout(Duration::from_millis(20), call).await;
        assert!(waited.is_err(), "never answers");
        assert_eq!(m.in_flight(), 0);
        let t = m.encode();
        assert!(
            t.contains(
                "towergate_http_requests_total{route=\"(none)\",status_class=\"cancelled\"} 1"
            ),
            "{t}"
        );
        assert!(
            t.contains("towergate_http_request_duration_seconds_count{route=\"(none)\"} 1"),
            "{t}"
        );
    }

    #[test]
    fn a_forgotten_upstream_loses_its_circuit_series() {
        let m = Metrics::new();
        m.circuit_state("gone", CircuitState::Open);
        m.circuit_state("kept", CircuitState::Closed);
        m.forget_circuit_state("gone");
        let t = m.encode();
        assert!(!t.contains("upstream=\"gone\""), "{t}");
        assert!(
            t.contains("towergate_circuit_state{upstream=\"kept\"} 0"),
            "{t}"
        );
    }

    #[test]
    fn a_started_configuration_is_a_successful_last_reload() {
        let m = Metrics::new();
        m.config_loaded();
        let t = m.encode();
        assert!(
            t.contains("towergate_config_last_reload_successful 1\n"),
            "{t}"
        );
        // Not a reload.
        assert!(!t.contains("towergate_config_reloads_total{"), "{t}");
        m.config_reload(false);
        assert!(
            m.encode()
                .contains("towergate_config_last_reload_successful 0\n")
        );
    }

    #[test]
    fn handle_methods_land_in_their_families() {
        let m = Metrics::new();
        {
            let _c = m.open_connection();
            assert!(m.encode().contains("towergate_open_connections 1\n"));
        }
        m.rate_limited("per-ip");
        m.rate_limited(String::from("per-ip"));
        m.retry("users");
        m.ejection("10.0.0.1:80");
        m.circuit_state("10.0.0.1:80", CircuitState::Open);
        m.config_reload(true);
        m.config_reload(false);
        m.redis_degraded(true);
        m.cache_request("users", "hit");
        m.cache_size(2048, 3);
        m.observe_upstream("10.0.0.1:80", None, Duration::from_millis(3));
        let t = m.encode();
        for line in [
            "towergate_open_connections 0\n",
            "towergate_connections_total 1\n",
            "towergate_ratelimit_rejections_total{limit=\"per-ip\"} 2\n",
            "towergate_retries_total{route=\"users\"} 1\n",
            "towergate_upstream_ejections_total{upstream=\"10.0.0.1:80\"} 1\n",
            "towergate_circuit_state{upstream=\"10.0.0.1:80\"} 2\n",
            "towergate_config_reloads_total{result=\"success\"} 1\n",
            "towergate_config_reloads_total{result=\"failure\"} 1\n",
            "towergate_config_last_reload_successful 0\n",
            "towergate_redis_degraded 1\n",
            "towergate_cache_requests_total{route=\"users\",result=\"hit\"} 1\n",
            "towergate_cache_size_bytes 2048\n",
            "towergate_cache_entries 3\n",
            "towergate_upstream_requests_total{upstream=\"10.0.0.1:80\",status_class=\"error\"} 1\n",
            "towergate_upstream_request_duration_seconds_count{upstream=\"10.0.0.1:80\"} 1\n",
        ] {
            assert!(t.contains(line), "missing {line:?} in\n{t}");
        }
    }

    #[test]
    fn an_endpoint_series_goes_with_its_last_handle() {
        let m = Metrics::new();
        m.forget_endpoints_after(Duration::ZERO);
        let a = UpstreamMetrics::new(m.clone(), "10.0.0.9:80".into(), true);
        let b = UpstreamMetrics::new(m.clone(), "10.0.0.9:80".into(), true);
        let other = UpstreamMetrics::new(m.clone(), "10.0.0.7:80".into(), true);
        a.observe(Some(StatusCode::OK), Duration::from_millis(1));
        b.observe(None, Duration::from_millis(1));
        b.cancelled(Duration::from_millis(1));
        other.observe(Some(StatusCode::OK), Duration::from_millis(1));
        let count = |t: &str| t.lines().filter(|l| l.contains("10.0.0.9:80")).count();
        let all = count(&m.encode());
        assert!(all > 3, "{}", m.encode());
        // Another handle of the label lives on: nothing goes, and its
        // cached handles still count.
        drop(a);
        assert_eq!(count(&m.encode()), all);
        b.observe(Some(StatusCode::OK), Duration::from_millis(1));
        assert!(m.encode().contains(
            "towergate_upstream_requests_total{upstream=\"10.0.0.9:80\",status_class=\"2xx\"} 2\n"
        ));
        drop(b);
        let t = m.encode();
        assert_eq!(count(&t), 0, "{t}");
        assert!(t.contains("upstream=\"10.0.0.7:80\""), "{t}");
        // A new handle starts over.
        let c = UpstreamMetrics::new(m.clone(), "10.0.0.9:80".into(), true);
        c.observe(Some(StatusCode::OK), Duration::from_millis(1));
        assert!(m.encode().contains(
            "towergate_upstream_requests_total{upstream=\"10.0.0.9:80\",status_class=\"2xx\"} 1\n"
        ));
        drop(c);
        // Without `forget`, the series stay (one-shot services), and a
        // handle that keeps them wins over one that would forget them.
        let kept = UpstreamMetrics::new(m.clone(), "10.0.0.5:80".into(), false);
        let forgetful = UpstreamMetrics::new(m.clone(), "10.0.0.5:80".into(), true);
        kept.observe(Some(StatusCode::OK), Duration::from_millis(1));
        drop(kept);
        drop(forgetful);
        assert!(m.encode().contains("upstream=\"10.0.0.5:80\""));
    }

    #[test]
    fn a_gone_endpoint_keeps_its_series_for_the_grace() {
        let m = Metrics::new();
        let a = UpstreamMetrics::new(m.clone(), "10.0.0.9:80".into(), true);
        a.observe(Some(StatusCode::OK), Duration::from_millis(1));
        drop(a);
        let gone = Instant::now();
        let line =
            "towergate_upstream_requests_total{upstream=\"10.0.0.9:80\",status_class=\"2xx\"} 1\n";
        // Within the default grace: still there.
        m.sweep_endpoints(gone + Duration::from_secs(299));
        assert!(m.encode().contains(line));
        // A new handle (a reload's pool re-made it) comes back in time:
        // the series go on, and are not removed later.
        let b = UpstreamMetrics::new(m.clone(), "10.0.0.9:80".into(), true);
        m.sweep_endpoints(gone + Duration::from_secs(3600));
        b.observe(Some(StatusCode::OK), Duration::from_millis(1));
        assert!(m.encode().contains(
            "towergate_upstream_requests_total{upstream=\"10.0.0.9:80\",status_class=\"2xx\"} 2\n"
        ));
        drop(b);
        m.sweep_endpoints(Instant::now() + Duration::from_secs(301));
        assert!(!m.encode().contains("10.0.0.9:80"));
    }

    #[test]
    fn buckets_are_checked() {
        assert!(Metrics::builder().buckets([]).build().is_err());
        assert!(Metrics::builder().buckets([0.1, 0.1]).build().is_err());
        assert!(Metrics::builder().buckets([f64::NAN]).build().is_err());
        let m = Metrics::builder().buckets([0.1, 1.0]).build().unwrap();
        m.observe_upstream("u", Some(StatusCode::OK), Duration::from_millis(500));
        assert!(m.encode().contains(
            "towergate_upstream_request_duration_seconds_bucket{le=\"1.0\",upstream=\"u\"} 1"
        ));
    }

    #[test]
    fn shares_a_given_registry() {
        let mut reg = Registry::default();
        let mine = Counter::<u64>::default();
        reg.register("app_things", "Things", mine.clone());
        mine.inc();
        let m = Metrics::builder().registry(reg).build().unwrap();
        let t = m.encode();
        assert!(t.contains("app_things_total 1"));
        assert!(t.contains("towergate_http_requests_in_flight 0"));
    }
}
