//! [`ResponseFuture`] of [`Cache`](crate::Cache).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;
use towergate_core::BoxError;

use crate::body::CacheBody;

type Inner<B> = Pin<Box<dyn Future<Output = Result<Response<CacheBody<B>>, BoxError>> + Send>>;

/// The response future of [`Cache`](crate::Cache).
///
/// Boxed, unlike most towergate futures: answering from the cache is a
/// multi-step asynchronous flow (look up, wait on a collapsed leader, send
/// a conditional request, fall back to a stale copy), which is what boxed
/// futures are for in the house style.
pub struct ResponseFuture<B> {
    inner: Inner<B>,
}

impl<B> ResponseFuture<B> {
    pub(crate) fn new(inner: Inner<B>) -> Self {
        Self { inner }
    }
}

impl<B> Future for ResponseFuture<B> {
    type Output = Result<Response<CacheBody<B>>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl<B> fmt::Debug for ResponseFuture<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
