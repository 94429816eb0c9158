//! Load shedding: at most N requests in flight, the rest answered `503` at
//! once.
//!
//! Unlike tower's `ConcurrencyLimit`, which makes callers wait in
//! `poll_ready` (an unbounded queue in front of a router), this layer never
//! queues: a request over the limit gets a `503` problem with `Retry-After`
//! right away and never reaches the inner service.
//!
//! A request counts as in flight from `call` until its response future
//! completes or is dropped (client gone, timeout). It does *not* count while
//! the response body streams: the slot is about the work to produce a
//! response (upstream call, handler), and keeping it through a slow
//! download would let slow readers shed everyone else. A `101` that opened
//! a tunnel (a WebSocket through `towergate-proxy`, which puts a
//! [`TunnelHold`](towergate_core::TunnelHold) in the response) keeps its
//! slot until the tunnel closes: each open tunnel holds an upstream
//! connection, and the limit is what protects the upstream.
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response, StatusCode};
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//! use towergate_ratelimit::ConcurrencyLimitLayer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (tx, rx) = tokio::sync::oneshot::channel::<()>();
//! let rx = std::sync::Arc::new(tokio::sync::Mutex::new(Some(rx)));
//! let layer = ConcurrencyLimitLayer::new(1);
//! let mut svc = ServiceBuilder::new().layer(layer.clone()).service_fn(move |_: Request<String>| {
//!     let rx = rx.clone();
//!     async move {
//!         // The first request waits until told to finish.
//!         if let Some(rx) = rx.lock().await.take() {
//!             let _ = rx.await;
//!         }
//!         Ok::<_, Infallible>(Response::new(String::new()))
//!     }
//! });
//! let first = tokio::spawn(svc.clone().oneshot(Request::new(String::new())));
//! while layer.in_flight() == 0 {
//!     tokio::task::yield_now().await;
//! }
//! let shed = svc.ready().await?.call(Request::new(String::new())).await?;
//! assert_eq!(shed.status(), StatusCode::SERVICE_UNAVAILABLE);
//! assert_eq!(shed.headers()["retry-after"], "1");
//! tx.send(()).ok();
//! assert_eq!(first.await??.status(), StatusCode::OK);
//! assert_eq!(layer.in_flight(), 0);
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::{Request, Response, StatusCode, header};
use pin_project_lite::pin_project;
use tower::{Layer, Service};
use towergate_core::Problem;
use towergate_core::body::ResponseBody;

use crate::error::Overloaded;

/// Sheds requests beyond `max` in flight with `503`: see the
/// [module docs](crate::concurrency).
///
/// Clones share one counter: clone the layer onto the services that should
/// share the limit (a route), build another for a separate one.
#[derive(Clone, Debug)]
#[must_use]
pub struct ConcurrencyLimitLayer {
    counter: Arc<Counter>,
    max: usize,
    retry_after: Duration,
}

/// The service of [`ConcurrencyLimitLayer`].
#[derive(Clone, Debug)]
pub struct ConcurrencyLimit<S> {
    inner: S,
    counter: Arc<Counter>,
    max: usize,
    retry_after: Duration,
}

pin_project! {
    /// The response future of [`ConcurrencyLimit`]: holds the request's
    /// slot until it completes or is dropped.
    pub struct ResponseFuture<F, B> {
        #[pin]
        kind: Kind<F, B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B> {
        Shed { response: Option<Response<ResponseBody<B>>> },
        Inner { #[pin] fut: F, slot: Option<Slot> },
    }
}

/// The requests in flight, which layers with different limits may share
/// (see [`ConcurrencyLimitLayer::sharing`]).
#[derive(Debug)]
struct Counter {
    in_flight: AtomicUsize,
}

/// One request's place in the count, given back on drop.
#[derive(Debug)]
struct Slot {
    counter: Arc<Counter>,
}

// === impl ConcurrencyLimitLayer ===

impl ConcurrencyLimitLayer {
    /// At most `max` requests in flight (0 sheds everything).
    pub fn new(max: usize) -> Self {
        Self {
            counter: Arc::new(Counter {
                in_flight: AtomicUsize::new(0),
            }),
            max,
            retry_after: Duration::from_secs(1),
        }
    }

    /// A layer with a limit of `max` over this one's count of requests in
    /// flight: what a reloaded route uses, so that the requests its
    /// previous configuration let in still count against the new limit
    /// (with a fresh counter, a reload would let in up to twice the
    /// limit). Each layer admits while the shared count is below its own
    /// `max`.
    pub fn sharing(&self, max: usize) -> Self {
        Self {
            counter: self.counter.clone(),
            max,
            retry_after: self.retry_after,
        }
    }

    /// The `Retry-After` of shed requests (default 1 s, rounded up to
    /// whole seconds).
    pub fn retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// Requests in flight now, for metrics.
    pub fn in_flight(&self) -> usize {
        self.counter.in_flight.load(Ordering::Acquire)
    }

    /// The limit.
    pub fn max(&self) -> usize {
        self.max
    }
}

impl<S> Layer<S> for ConcurrencyLimitLayer {
    type Service = ConcurrencyLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ConcurrencyLimit {
            inner,
            counter: self.counter.clone(),
            max: self.max,
            retry_after: self.retry_after,
        }
    }
}

// === impl ConcurrencyLimit ===

impl<S> ConcurrencyLimit<S> {
    /// Wraps `inner` with its own limit of `max` in flight.
    pub fn new(inner: S, max: usize) -> Self {
        ConcurrencyLimitLayer::new(max).layer(inner)
    }

    /// A layer with a limit of `max` in flight, shared by every service it
    /// wraps; same as [`ConcurrencyLimitLayer::new`].
    pub fn layer(max: usize) -> ConcurrencyLimitLayer {
        ConcurrencyLimitLayer::new(max)
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ConcurrencyLimit<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        match Counter::acquire(&self.counter, self.max) {
            Some(slot) => ResponseFuture {
                kind: Kind::Inner {
                    fut: self.inner.call(req),
                    slot: Some(slot),
                },
            },
            None => {
                let secs =
                    self.retry_after.as_secs() + u64::from(self.retry_after.subsec_nanos() > 0);
                let mut problem = Problem::new(StatusCode::SERVICE_UNAVAILABLE)
                    .detail("too many requests in flight; retry later")
                    .header(header::RETRY_AFTER, secs.max(1).into());
                if let Some(id) = req.extensions().get::<towergate_core::RequestId>() {
                    problem = problem.instance_if_absent(id.as_str());
                }
                let mut response = problem.into_response();
                response.extensions_mut().insert(Overloaded::new(self.max));
                ResponseFuture {
                    kind: Kind::Shed {
                        response: Some(response),
                    },
                }
            }
        }
    }
}

// === impl ResponseFuture ===

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Shed { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                // Polled after completion: never wake rather than panic.
                None => Poll::Pending,
            },
            KindProj::Inner { fut, slot } => {
                let result = ready!(fut.poll(cx));
                // The response is produced: free the slot now rather than
                // when the caller drops this future; unless it opened a
                // tunnel (a WebSocket), which keeps the slot until it
                // closes: a tunnel is the route's work as long as it
                // lasts.
                let slot = slot.take();
                if let (Ok(rsp), Some(slot)) = (&result, slot)
                    && rsp.status() == StatusCode::SWITCHING_PROTOCOLS
                    && let Some(hold) = rsp.extensions().get::<towergate_core::TunnelHold>()
                {
                    hold.hold(Box::new(slot));
                }
                Poll::Ready(result.map(|rsp| rsp.map(ResponseBody::inner)))
            }
        }
    }
}

impl<F, B> std::fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.kind {
            Kind::Shed { .. } => "Shed",
            Kind::Inner { .. } => "Inner",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

// === impl Counter ===

impl Counter {
    /// Takes a slot if fewer than `max` are taken; never blocks.
    fn acquire(this: &Arc<Self>, max: usize) -> Option<Slot> {
        this.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot {
                counter: this.clone(),
            })
    }
}

// === impl Slot ===

impl Drop for Slot {
    fn drop(&mut self) {
        self.counter.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}
