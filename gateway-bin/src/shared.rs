//! [`SharedService`]: a type-erased service whose clones share one
//! allocation.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use tower::{Service, ServiceExt};

/// A type-erased, always-ready service behind an `Arc`.
///
/// tower's `BoxCloneSyncService` allocates a new box on every clone, and
/// the router and the edge clone their service on every request, once per
/// boxed layer in the route. Here a clone is a reference count: each call
/// clones the concrete service inside (for the gateway's services, a few
/// reference counts and no allocation), drives it to readiness and calls
/// it, in one boxed future as before.
///
/// Readiness is awaited inside the call, so an outer layer never sees the
/// inner service's backpressure in `poll_ready`: fine for the route
/// services, whose layers that limit (concurrency) refuse or queue inside
/// `call`.
pub struct SharedService<Req, Rsp, E> {
    inner: Arc<dyn Erased<Req, Rsp, E>>,
}

trait Erased<Req, Rsp, E>: Send + Sync {
    fn call(&self, req: Req) -> BoxFuture<'static, Result<Rsp, E>>;
}

impl<S, Req> Erased<Req, S::Response, S::Error> for S
where
    S: Service<Req> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Response: Send,
    S::Error: Send,
    Req: Send + 'static,
{
    fn call(&self, req: Req) -> BoxFuture<'static, Result<S::Response, S::Error>> {
        let mut svc = self.clone();
        // Most services here are always ready: the clone is asked once,
        // without a waker, and only its future is boxed (the clone is
        // dropped here instead of riding along in a `Oneshot`). One that
        // is not ready yet is polled properly inside the box.
        let mut cx = Context::from_waker(std::task::Waker::noop());
        // (`Service::call`, spelled out: `svc.call` would be this method.)
        match Service::poll_ready(&mut svc, &mut cx) {
            Poll::Ready(Ok(())) => Box::pin(Service::call(&mut svc, req)),
            Poll::Ready(Err(e)) => Box::pin(std::future::ready(Err(e))),
            Poll::Pending => Box::pin(ServiceExt::oneshot(svc, req)),
        }
    }
}

impl<Req, Rsp, E> SharedService<Req, Rsp, E> {
    /// Erases `svc`'s type.
    pub fn new<S>(svc: S) -> Self
    where
        S: Service<Req, Response = Rsp, Error = E> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
        Rsp: Send,
        E: Send,
        Req: Send + 'static,
    {
        Self {
            inner: Arc::new(svc),
        }
    }

    /// [`Service::call`] through a shared reference (`poll_ready` is always
    /// ready here: each call asks a clone of the wrapped service, and waits
    /// inside the returned future if that clone is not ready).
    pub fn call_shared(&self, req: Req) -> BoxFuture<'static, Result<Rsp, E>> {
        self.inner.call(req)
    }
}

impl<Req, Rsp, E> Clone for SharedService<Req, Rsp, E> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<Req, Rsp, E> Service<Req> for SharedService<Req, Rsp, E> {
    type Response = Rsp;
    type Error = E;
    type Future = BoxFuture<'static, Result<Rsp, E>>;

    /// Always ready: readiness is awaited inside the call, on the clone
    /// that serves it.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), E>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.call_shared(req)
    }
}

impl<Req, Rsp, E> fmt::Debug for SharedService<Req, Rsp, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedService").finish_non_exhaustive()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    /// Ready only every other poll, counting calls: readiness is still
    /// awaited through the shared service.
    #[derive(Clone)]
    struct Flaky {
        polls: Arc<AtomicUsize>,
        calls: Arc<AtomicUsize>,
    }

    impl Service<u32> for Flaky {
        type Response = u32;
        type Error = Infallible;
        type Future = std::future::Ready<Result<u32, Infallible>>;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            if self.polls.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) {
                cx.waker().wake_by_ref();
                Poll::Pending
            } else {
                Poll::Ready(Ok(()))
            }
        }

        fn call(&mut self, req: u32) -> Self::Future {
            self.calls.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok(req * 2))
        }
    }

    #[tokio::test]
    async fn clones_share_the_service_and_readiness_is_awaited() {
        let calls = Arc::new(AtomicUsize::new(0));
        let svc = SharedService::new(Flaky {
            polls: Arc::default(),
            calls: calls.clone(),
        });
        let a = svc.clone();
        let b = svc.clone();
        // One allocation for all: the clones point at the same service.
        assert_eq!(Arc::strong_count(&svc.inner), 3);
        assert_eq!(a.oneshot(3).await.unwrap(), 6);
        let out = tokio::time::timeout(Duration::from_secs(5), b.oneshot(4)).await;
        assert_eq!(out.unwrap().unwrap(), 8);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    /// Refuses when asked whether it is ready.
    #[derive(Clone)]
    struct Closed {
        calls: Arc<AtomicUsize>,
    }

    impl Service<u32> for Closed {
        type Response = u32;
        type Error = &'static str;
        type Future = std::future::Ready<Result<u32, &'static str>>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), &'static str>> {
            Poll::Ready(Err("closed"))
        }

        fn call(&mut self, req: u32) -> Self::Future {
            self.calls.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok(req))
        }
    }

    /// A service ready at once is called at once; one that refuses is
    /// never called, and its error is the answer.
    #[tokio::test]
    async fn ready_at_once_and_refusals() {
        let calls = Arc::new(AtomicUsize::new(0));
        let ready = SharedService::new(Flaky {
            // Odd: ready at the first poll.
            polls: Arc::new(AtomicUsize::new(1)),
            calls: calls.clone(),
        });
        assert_eq!(ready.oneshot(5).await.unwrap(), 10);
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let refused = Arc::new(AtomicUsize::new(0));
        let closed = SharedService::new(Closed {
            calls: refused.clone(),
        });
        assert_eq!(closed.oneshot(1).await, Err("closed"));
        assert_eq!(refused.load(Ordering::SeqCst), 0);
    }

    /// Shared services nest (each route layer is one): the call goes down
    /// to the service, not back into the erased call.
    #[tokio::test]
    async fn nested_shared_services_reach_the_service() {
        let calls = Arc::new(AtomicUsize::new(0));
        let inner = SharedService::new(Flaky {
            polls: Arc::new(AtomicUsize::new(1)),
            calls: calls.clone(),
        });
        let outer = SharedService::new(SharedService::new(inner));
        assert_eq!(outer.oneshot(21).await.unwrap(), 42);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
