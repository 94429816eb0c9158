//! The future of an aggregated request.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Response;
use http_body_util::Full;

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send>>;

/// The future returned by [`Aggregate`](crate::Aggregate): it runs the fan-out,
/// and never fails (failures are problem responses).
///
/// Boxed, because the fan-out is naturally async: several calls, a
/// semaphore and timers. Dropping it cancels the calls still in flight.
pub struct ResponseFuture {
    inner: BoxFuture,
}

// === impl ResponseFuture ===

impl ResponseFuture {
    pub(crate) fn new(fut: impl Future<Output = Response<Full<Bytes>>> + Send + 'static) -> Self {
        Self {
            inner: Box::pin(async move { Ok(fut.await) }),
        }
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<Full<Bytes>>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
