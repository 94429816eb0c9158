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
    /// answer (400, 404, 405) or the matched route's service driven to
    /// readiness and called.
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        kind: Kind<S, B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<S, B>
    where
        S: Service<Request<B>>,
    {
        Rejected { problem: Option<Problem> },
        Inner { #[pin] fut: Oneshot<S, Request<B>> },
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
                problem: Some(problem),
            },
        }
    }

    pub(crate) fn inner(fut: Oneshot<S, Request<B>>) -> Self {
        Self {
            kind: Kind::Inner { fut },
        }
    }
}

impl<S, B, RB> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<RB>>,
{
    type Output = Result<Response<ResponseBody<RB>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Rejected { problem } => {
                // Polling a finished future is a caller bug; answering 500
                // beats panicking inside a server task.
                let problem = problem.take().unwrap_or_else(|| {
                    Problem::new(StatusCode::INTERNAL_SERVER_ERROR)
                        .detail("response future polled after completion")
                });
                Poll::Ready(Ok(problem.into_response()))
            }
            KindProj::Inner { fut } => fut
                .poll(cx)
                .map(|result| result.map(|rsp| rsp.map(ResponseBody::inner))),
        }
    }
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
            Kind::Inner { .. } => "Inner".to_owned(),
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
