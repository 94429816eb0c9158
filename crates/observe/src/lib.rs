//! Observability for towergate, as Tower layers that any axum or hyper
//! application can use:
//!
//! - [`RequestIdLayer`]: accepts a well-formed `X-Request-Id` or generates a
//!   UUIDv7; puts a [`RequestId`](towergate_core::RequestId) in the request
//!   extensions and the header on the upstream request and the response.
//! - [`TraceLayer`]: a `tracing` span per request with method, route,
//!   status, upstream and latency (with a sample ratio, per sampled request
//!   only: the others just pass their trace context on); with [`otel`], an OpenTelemetry server
//!   span exported over OTLP/HTTP, continued from the client's W3C
//!   `traceparent` (or B3) and passed on to the upstream.
//! - [`MetricsLayer`] and the [`Metrics`] handle: Prometheus RED metrics per
//!   route and per upstream endpoint, plus the gateway's own counters and
//!   gauges, in an explicit `prometheus_client` registry.
//! - [`AccessLogLayer`]: one JSON (or Common/Combined) line per request,
//!   written by a background thread, never the query string or a
//!   credential.
//! - [`ObserveLayer`]: the four above in one layer, in that order, with one
//!   future and one body wrapper each way instead of four (see [`edge`]);
//!   `ObserveLayer::in_place` (feature `axum`, default) is the same for
//!   services of axum's `Body`, whose request keeps its type (what the
//!   towergate binary mounts).
//!
//! # Routes and upstreams
//!
//! These layers go in front of the router, where neither the route nor the
//! upstream is known yet. The first of them puts an [`Observation`] in the
//! request extensions; [`RecordLayer`] (in each route's stack) and
//! [`RecordUpstreamLayer`] (around each upstream endpoint) fill it in, and
//! the outer layers read it when the response comes back. A route-less
//! request is labelled `(none)`. Each layer also works inside the router,
//! reading the request's [`RouteMatch`](towergate_core::RouteMatch) itself.
//!
//! # Order
//!
//! Outermost first: [`RequestIdLayer`] (so everything else sees the id),
//! [`TraceLayer`] (so the layers below log inside the span), [`MetricsLayer`],
//! [`AccessLogLayer`], then the error-to-problem rescue layer (so these
//! layers see the final status), then the router.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//!
//! use axum::{Router, body::Body, routing::get};
//! use http::{Request, StatusCode};
//! use http_body_util::BodyExt;
//! use tower::{ServiceBuilder, ServiceExt};
//! use towergate_observe::access_log::Sink;
//! use towergate_observe::{
//!     AccessLogLayer, Metrics, RecordLayer, RecordUpstreamLayer, RequestIdLayer, TraceLayer,
//! };
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let metrics = Metrics::new();
//! let log_file = std::env::temp_dir().join(format!("towergate-doc-{}.log", std::process::id()));
//! let access_log = AccessLogLayer::builder()
//!     .sink(Sink::file(&log_file))
//!     .metrics(metrics.clone())
//!     .build()?;
//!
//! let app = Router::new()
//!     .route(
//!         "/users/{id}",
//!         get(|| async { "alice" }).layer(
//!             ServiceBuilder::new()
//!                 .layer(RecordLayer::route("users"))
//!                 .layer(RecordUpstreamLayer::new("users-svc:8080").metrics(metrics.clone())),
//!         ),
//!     )
//!     .layer(
//!         ServiceBuilder::new()
//!             .layer(RequestIdLayer::new())
//!             .layer(TraceLayer::new())
//!             .layer(metrics.layer())
//!             .layer(access_log.clone()),
//!     );
//!
//! let rsp = app.oneshot(Request::get("/users/7?token=x").body(Body::empty())?).await?;
//! assert_eq!(rsp.status(), StatusCode::OK);
//! let id = rsp.headers()["x-request-id"].to_str()?.to_owned();
//! assert_eq!(rsp.into_body().collect().await?.to_bytes(), "alice");
//!
//! let text = metrics.encode();
//! assert!(text.contains(r#"towergate_http_requests_total{route="users",status_class="2xx"} 1"#));
//! assert!(text.contains(r#"towergate_upstream_requests_total{upstream="users-svc:8080",status_class="2xx"} 1"#));
//!
//! assert!(access_log.flush(Duration::from_secs(5)));
//! let line: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&log_file)?)?;
//! assert_eq!(line["request_id"], id.as_str());
//! assert_eq!(line["route"], "users");
//! assert_eq!(line["upstream"], "users-svc:8080");
//! assert_eq!(line["path"], "/users/7");
//! # std::fs::remove_file(&log_file)?;
//! # Ok(())
//! # }
//! ```

pub mod access_log;
pub mod body;
pub mod edge;
pub mod error;
mod hex;
pub mod metrics;
mod observation;
pub mod otel;
mod record;
pub mod request_id;
pub mod trace;

pub use access_log::AccessLogLayer;
#[cfg(feature = "axum")]
pub use edge::{InPlaceObserveLayer, ObserveInPlace};
pub use edge::{Observe, ObserveBuilder, ObserveLayer};
pub use error::BuildError;
pub use metrics::{Metrics, MetricsLayer};
pub use observation::{Observation, Observed, UpstreamInfo};
pub use record::{Record, RecordLayer, RecordUpstream, RecordUpstreamFuture, RecordUpstreamLayer};
pub use request_id::RequestIdLayer;
pub use trace::TraceLayer;
