//! The response future of [`RateLimit`](crate::RateLimit).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower::Service;
use towergate_core::body::ResponseBody;

use crate::headers::Report;
use crate::layer::{Decision, Shared};
use crate::store::{Batch, Check};

pin_project! {
    /// The response future of [`RateLimit`](crate::RateLimit): a refusal
    /// made in `call`, a decision still waiting for its store, or the inner
    /// service's future.
    ///
    /// The store's answer is a [`Check`], boxed only for stores that go to
    /// the network (Redis); an in-memory decision is made in `call` and
    /// never enters the `Deciding` state.
    pub struct ResponseFuture<S, ReqBody, ResBody>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        kind: Kind<S, ReqBody, ResBody>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<S, ReqBody, ResBody>
    where
        S: Service<Request<ReqBody>>,
    {
        Answered {
            response: Option<Response<ResponseBody<ResBody>>>,
        },
        Deciding {
            check: Check,
            pending: Option<Pending<S, ReqBody>>,
        },
        Inner {
            #[pin]
            fut: S::Future,
            report: Option<Report>,
        },
    }
}

/// What a decision in flight holds: the service readied for this request,
/// the request, and what is needed to conclude (and fall back).
struct Pending<S, ReqBody> {
    service: S,
    request: Request<ReqBody>,
    batch: Batch,
    shared: Arc<Shared>,
}

// === impl ResponseFuture ===

impl<S, ReqBody, ResBody> ResponseFuture<S, ReqBody, ResBody>
where
    S: Service<Request<ReqBody>>,
{
    pub(crate) fn answered(response: Response<ResponseBody<ResBody>>) -> Self {
        Self {
            kind: Kind::Answered {
                response: Some(response),
            },
        }
    }

    pub(crate) fn inner(fut: S::Future, report: Option<Report>) -> Self {
        Self {
            kind: Kind::Inner { fut, report },
        }
    }

    pub(crate) fn deciding(
        check: Check,
        service: S,
        request: Request<ReqBody>,
        batch: Batch,
        shared: Arc<Shared>,
    ) -> Self {
        Self {
            kind: Kind::Deciding {
                check,
                pending: Some(Pending {
                    service,
                    request,
                    batch,
                    shared,
                }),
            },
        }
    }
}

impl<S, ReqBody, ResBody> Future for ResponseFuture<S, ReqBody, ResBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut kind = self.project().kind;
        loop {
            match kind.as_mut().project() {
                KindProj::Answered { response } => {
                    return match response.take() {
                        Some(response) => Poll::Ready(Ok(response)),
                        // Polled after completion: the contract allows
                        // anything but we may not panic; never wake.
                        None => Poll::Pending,
                    };
                }
                KindProj::Deciding { check, pending } => {
                    let result = ready!(Pin::new(check).poll(cx));
                    let Some(Pending {
                        mut service,
                        request,
                        batch,
                        shared,
                    }) = pending.take()
                    else {
                        return Poll::Pending;
                    };
                    match shared.conclude(result, &batch) {
                        Decision::Allow(report) => {
                            let fut = service.call(request);
                            kind.set(Kind::Inner { fut, report });
                        }
                        Decision::Refuse(refusal) => {
                            kind.set(Kind::Answered { response: None });
                            return Poll::Ready(Ok(refusal.into_response(request.extensions())));
                        }
                    }
                }
                KindProj::Inner { fut, report } => {
                    let response = ready!(fut.poll(cx))?;
                    let mut response = response.map(ResponseBody::inner);
                    if let Some(report) = report.take() {
                        report.apply(response.headers_mut());
                    }
                    return Poll::Ready(Ok(response));
                }
            }
        }
    }
}

impl<S, ReqBody, ResBody> std::fmt::Debug for ResponseFuture<S, ReqBody, ResBody>
where
    S: Service<Request<ReqBody>>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.kind {
            Kind::Answered { .. } => "Answered",
            Kind::Deciding { .. } => "Deciding",
            Kind::Inner { .. } => "Inner",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
