//! The response future of [`Router`](crate::Router).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower::Service;
use tower::util::Oneshot;
use towergate_core::Problem;
use towergate_core::body::ResponseBody;

pin_project! {
    /// Response future of [`Router`](crate::Router): either the router's own
    /// answer (400, 404, 405) or the matched route's service's future.
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        kind: Kind<S, B>,
    }
}

pin_project! {
    // The common variant, `Called`, holds just the route service's future:
    // the others are boxed, so that this future stays small. Each layer
    // in front of the router moves it into its own future and the last
    // one into a box; a request waiting inside (a `Oneshot` holds the
    // whole request) made every one of those moves copy hundreds of bytes.
    #[project = KindProj]
    enum Kind<S, B>
    where
        S: Service<Request<B>>,
    {
        Rejected { problem: Option<Box<Problem>> },
        Called { #[pin] fut: S::Future },
        Waiting { fut: Pin<Box<Oneshot<S, Request<B>>>> },
        Failed { error: Option<S::Error> },
    }
}

// === impl ResponseFuture ===

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    pub(crate) fn rejected(problem: Problem) -> Self {
        Self {
            kind: Kind::Rejected {
                problem: Some(Box::new(problem)),
            },
        }
    }

    /// Calls `svc` now if it is ready (routes' services nearly always
    /// are), or waits for it in the future.
    pub(crate) fn call(mut svc: S, req: Request<B>) -> Self {
        // Asked without a waker: one that is not ready is asked again,
        // with the task's, inside the `Oneshot`.
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let kind = match svc.poll_ready(&mut cx) {
            Poll::Ready(Ok(())) => Kind::Called { fut: svc.call(req) },
            Poll::Ready(Err(error)) => Kind::Failed { error: Some(error) },
            Poll::Pending => Kind::Waiting {
                fut: Box::pin(Oneshot::new(svc, req)),
            },
        };
        Self { kind }
    }
}

impl<S, B, RB> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<RB>>,
{
    type Output = Result<Response<ResponseBody<RB>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = |rsp: Response<RB>| rsp.map(ResponseBody::inner);
        match self.project().kind.project() {
            KindProj::Rejected { problem } => {
                // Polling a finished future is a caller bug; answering 500
                // beats panicking inside a server task.
                let problem = problem.take().map_or_else(polled_after_completion, |p| *p);
                Poll::Ready(Ok(problem.into_response()))
            }
            KindProj::Called { fut } => fut.poll(cx).map(|result| result.map(inner)),
            KindProj::Waiting { fut } => fut.as_mut().poll(cx).map(|result| result.map(inner)),
            KindProj::Failed { error } => match error.take() {
                Some(error) => Poll::Ready(Err(error)),
                None => Poll::Ready(Ok(polled_after_completion().into_response())),
            },
        }
    }
}

/// The answer of a future polled again after it completed (a caller bug):
/// a 500 beats panicking inside a server task.
fn polled_after_completion() -> Problem {
    Problem::new(StatusCode::INTERNAL_SERVER_ERROR)
        .detail("response future polled after completion")
}

impl<S, B> fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.kind {
            Kind::Rejected { problem } => match problem {
                Some(p) => format!("Rejected({})", p.status()),
                None => "Done".to_owned(),
            },
            Kind::Called { .. } => "Called".to_owned(),
            Kind::Waiting { .. } => "Waiting".to_owned(),
            Kind::Failed { .. } => "Failed".to_owned(),
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
