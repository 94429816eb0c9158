//! The response future of [`Balance`](crate::Balance).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use towergate_core::BoxError;

/// Resolves to the response of the attempt that won, or to the error that
/// ended the request.
///
/// A request refused at once (an open circuit) costs no allocation; one
/// that is sent runs its attempts, back-off and hedging in one boxed
/// future, which is naturally async fan-out (two attempts and two timers
/// may be live at once).
pub struct ResponseFuture<T> {
    kind: Kind<T>,
}

enum Kind<T> {
    Rejected {
        error: Option<BoxError>,
    },
    Inner {
        fut: Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>,
    },
}

// === impl ResponseFuture ===

impl<T> ResponseFuture<T> {
    pub(crate) fn rejected(error: BoxError) -> Self {
        Self {
            kind: Kind::Rejected { error: Some(error) },
        }
    }

    pub(crate) fn inner(fut: impl Future<Output = Result<T, BoxError>> + Send + 'static) -> Self {
        Self {
            kind: Kind::Inner { fut: Box::pin(fut) },
        }
    }
}

impl<T> Future for ResponseFuture<T> {
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().kind {
            Kind::Rejected { error } => match error.take() {
                Some(e) => Poll::Ready(Err(e)),
                None => Poll::Ready(Err("ResponseFuture polled after completion".into())),
            },
            Kind::Inner { fut } => fut.as_mut().poll(cx),
        }
    }
}

impl<T> fmt::Debug for ResponseFuture<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.kind {
            Kind::Rejected { .. } => "rejected",
            Kind::Inner { .. } => "running",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
