//! Endpoint pools for towergate, over any Tower service: spread requests so
//! no instance is the bottleneck, notice sick instances before clients do,
//! and hide their failures.
//!
//! - A [`Pool`] is a named set of [`Endpoint`]s (static, from [DNS](Dns),
//!   from SRV records (`Srv`, feature `srv`), or from a
//!   [`Discover`](discover::Discover) source), each made into a service by
//!   a [`MakeEndpoint`] (towergate's binary makes a `Proxy` per endpoint;
//!   any `tower::Service` over `http` works). DNS and SRV sources are
//!   re-resolved on an interval; a failed resolution keeps the endpoints
//!   of the last good one.
//! - It picks with an [`Algorithm`]: P2C over peak-EWMA latency (the
//!   default, as in linkerd2-proxy), least requests, round-robin, smooth
//!   weighted round-robin, or consistent hashing on a [`HashKey`].
//! - It tracks health actively ([`HealthCheck`]) and passively
//!   ([`Ejection`]: consecutive failures, as a [`Classify`] sees them,
//!   eject an endpoint for a growing back-off, never more than a share of
//!   the pool; below the panic threshold it uses every endpoint).
//! - It limits load with a [`CircuitBreaker`].
//! - A [`Balance`] service sends requests through a pool, with retries
//!   ([`RetryPolicy`]: safe requests only, on another endpoint, jittered
//!   back-off, within a [`RetryBudget`]), per-attempt and overall timeouts,
//!   and optional [`Hedge`]-ing.
//! - [`Pool::snapshot`] tells operators each endpoint's health, load,
//!   latency and ejections; transitions are logged with `tracing`.
//!
//! Failures are typed ([`error`]) and boxed; mapping them to answers is the
//! caller's policy ([`error::to_problem`] gives 503/504).
//!
//! The algorithms themselves are in [`algorithm`], free of Tower and tokio,
//! with time and randomness passed in.
//!
//! # Features
//!
//! | Name | Description | Default? |
//! |---|---|---|
//! | `srv` | SRV record sources (`Srv`, `PoolBuilder::srv`), through hickory-resolver: the lowest-priority targets, weighted as the records say, asked of the system's name servers or of one `Srv::nameserver` (a Consul agent's `127.0.0.1:8600`) | no |
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//!
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Empty;
//! use tower::{ServiceExt, service_fn};
//! use towergate_balance::{Balance, Endpoint, Pool, RetryBody};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), towergate_core::BoxError> {
//! // Each endpoint becomes a service; here an in-process one that answers
//! // with its URL, except `http://b`, which is failing.
//! let make = |e: &Endpoint| {
//!     let url = e.url().to_owned();
//!     Ok::<_, Infallible>(service_fn(move |_: Request<RetryBody<Empty<Bytes>>>| {
//!         let url = url.clone();
//!         async move {
//!             let status = if url == "http://b" { 503 } else { 200 };
//!             Ok::<_, Infallible>(Response::builder().status(status).body(url).unwrap())
//!         }
//!     }))
//! };
//! let pool = Pool::builder("users", make)
//!     .endpoints(["http://a", "http://b", "http://c"].map(Endpoint::new))
//!     .build()?;
//! let users = Balance::new(pool.clone());
//!
//! for _ in 0..30 {
//!     let req = Request::get("/users/42").body(Empty::<Bytes>::new())?;
//!     let rsp = users.clone().oneshot(req).await?;
//!     // b's 503s are retried on another endpoint: the caller never sees one.
//!     assert_eq!(rsp.status(), StatusCode::OK);
//!     assert_ne!(rsp.body().get_ref(), "http://b");
//! }
//!
//! let state = pool.snapshot();
//! assert_eq!(state.len(), 3);
//! let b = state.iter().find(|e| e.url == "http://b").unwrap();
//! assert_eq!(b.failures, b.requests, "every attempt on b failed");
//! # Ok(())
//! # }
//! ```
//!
//! # Assembling a pool of proxies
//!
//! The binary supplies the endpoint services, the health probe and the
//! error classification; this crate knows none of them (it does not depend
//! on towergate-proxy). This compiles and runs against towergate-proxy:
//!
//! ```ignore
//! use towergate_proxy::error::{RequestBodyFailed, UpstreamTimeout, UpstreamUnavailable};
//! use towergate_proxy::{Client, Proxy};
//!
//! // What the proxy's typed errors mean for retries and passive health.
//! fn classify_proxy(e: &(dyn std::error::Error + 'static)) -> Outcome {
//!     if let Some(u) = cause_ref::<UpstreamUnavailable>(e) {
//!         return if u.is_connect() { Outcome::ConnectFailure } else { Outcome::Failure };
//!     }
//!     if let Some(t) = cause_ref::<UpstreamTimeout>(e) {
//!         return if t.is_connect() { Outcome::ConnectFailure } else { Outcome::Timeout };
//!     }
//!     if cause_ref::<RequestBodyFailed>(e).is_some() {
//!         return Outcome::Ignore; // the client's fault, not the endpoint's
//!     }
//!     classify::default_error(e)
//! }
//!
//! let client = Client::builder().build()?;
//! let probe_client = client.clone();
//! let probe = move |e: &Endpoint, path: &str| {
//!     let proxy = Proxy::builder(e.url()).client(probe_client.clone()).build();
//!     let req = http::Request::get(path.to_owned()).body(Empty::<Bytes>::new());
//!     async move { Ok::<_, BoxError>(proxy?.oneshot(req?).await?.status()) }
//! };
//! let pool = Pool::builder("users", move |e: &Endpoint| {
//!     Proxy::builder(e.url()).client(client.clone()).build()
//! })
//! .endpoints(urls.iter().map(Endpoint::new))
//! .health_check(HealthCheck::new(probe).path("/healthz"))
//! .build()?;
//! // One Balance per route, sharing the pool.
//! let route = Balance::builder(pool.clone())
//!     .classify(classify::errors(classify_proxy))
//!     .timeout(Duration::from_secs(30))
//!     .build()?;
//! ```

pub mod algorithm;
pub mod body;
pub mod classify;
mod config;
pub mod discover;
mod endpoint;
pub mod error;
pub mod future;
mod hash;
mod health;
mod pool;
mod retry;
mod service;
pub mod state;

pub use body::{ResponseBody, RetryBody};
pub use classify::{Classify, DefaultClassify, Outcome};
pub use config::{Algorithm, CircuitBreaker, Ejection};
pub use discover::Dns;
#[cfg(feature = "srv")]
pub use discover::Srv;
pub use endpoint::{Change, Endpoint, MakeEndpoint};
pub use error::BuildError;
pub use hash::{CustomKey, HashKey};
pub use health::{CheckHealth, HealthCheck};
pub use pool::{Pool, PoolBuilder};
pub use retry::{Hedge, RetryBudget, RetryOn, RetryPolicy};
pub use service::{Balance, BalanceBuilder};
pub use state::EndpointState;
