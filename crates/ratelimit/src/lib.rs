//! Rate limits, quotas and load shedding for towergate, as Tower layers.
//!
//! - [`RateLimitLayer`]: GCRA limits ([`Limit`]) keyed by client address,
//!   header, identity field, route or anything else ([`Key`],
//!   [`KeyExtractor`]), several per layer, in memory ([`MemoryStore`]) or
//!   shared by every gateway instance through Redis ([`RedisStore`]).
//!   Refusals are `429` problem+json answers with `Retry-After`; every
//!   response that went through a limit carries `RateLimit-Policy` and
//!   `RateLimit` ([`headers`] has the format).
//! - [`ConcurrencyLimitLayer`]: at most N requests in flight, the rest
//!   answered `503` at once ([`concurrency`]).
//!
//! ```
//! use std::convert::Infallible;
//!
//! use http::{HeaderName, Request, Response, StatusCode};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use towergate_ratelimit::{Key, Limit, RateLimitLayer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let layer = RateLimitLayer::builder()
//!     .limit(Limit::per_minute(1).name("per-key")) // burst 1
//!     .key(Key::header(HeaderName::from_static("x-api-key")))
//!     .build()?;
//! let svc = ServiceBuilder::new()
//!     .layer(layer)
//!     .service_fn(|_: Request<String>| async { Ok::<_, Infallible>(Response::new("hi".to_owned())) });
//! let req = || Request::get("/").header("x-api-key", "k1").body(String::new());
//!
//! let rsp = svc.clone().oneshot(req()?).await?;
//! assert_eq!(rsp.status(), StatusCode::OK);
//! assert_eq!(rsp.headers()["ratelimit-policy"], r#""per-key";q=1;w=60"#);
//! assert_eq!(rsp.headers()["ratelimit"], r#""per-key";r=0;t=60"#);
//!
//! let rsp = svc.clone().oneshot(req()?).await?;
//! assert_eq!(rsp.status(), StatusCode::TOO_MANY_REQUESTS);
//! assert_eq!(rsp.headers()["content-type"], "application/problem+json");
//! assert_eq!(rsp.headers()["retry-after"], "60");
//! # Ok(())
//! # }
//! ```
//!
//! # Decisions
//!
//! Each limit is a GCRA bucket per key ([`gcra`] explains the arithmetic):
//! `burst` requests at once, one more every `period / count`. A request is
//! checked against every limit of the layer and admitted only if all admit
//! it; a refused request consumes from none of them, so hammering a
//! per-second limit does not also burn a daily quota. The store decides all
//! of a request's buckets atomically (the memory store under its shard
//! locks, Redis in one script).
//!
//! A request with no key (no `ClientAddr`, anonymous caller, header
//! absent) is refused with `400` by default, or counted in one shared
//! bucket per limit ([`MissingKey`]).
//!
//! # Stores and failures
//!
//! The [`MemoryStore`] is exact and bounded (see its docs for eviction,
//! which never changes a decision for idle keys). The [`RedisStore`] makes
//! one `EVALSHA` per decision with Redis's own clock, so instances with
//! skewed clocks agree, and bounds each call with a timeout (50 ms). When
//! Redis fails, each limit's [`FailurePolicy`] applies: `FailOpen` (default)
//! decides with the layer's local in-memory limiter, `FailClosed` answers
//! `503` with `Retry-After`. Redis is probed again after a short interval
//! and shared decisions resume by themselves.

pub mod concurrency;
pub mod error;
pub mod future;
pub mod gcra;
pub mod headers;
pub mod store;

mod clock;
mod key;
mod layer;
mod limit;
mod service;

pub use self::clock::{Clock, ManualClock, SystemClock};
pub use self::concurrency::{ConcurrencyLimit, ConcurrencyLimitLayer};
pub use self::error::{BuildError, StoreError};
pub use self::key::{Key, KeyExtractor, MissingKey};
pub use self::layer::{RateLimitLayer, RateLimitLayerBuilder};
pub use self::limit::{FailurePolicy, Limit};
pub use self::service::RateLimit;
pub use self::store::{MemoryStore, RedisStore, Store};
