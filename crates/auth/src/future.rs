//! Response futures of [`Auth`](crate::Auth) and
//! [`IpFilter`](crate::IpFilter).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::request::Parts;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use pin_project_lite::pin_project;
use tower::Service;
use towergate_core::Problem;
use towergate_core::body::ResponseBody;

use crate::authenticator::BoxFuture;

/// The outcome of the checks: the request's head to forward, or the
/// answer to give instead.
pub(crate) type Checked = Result<Parts, Response<Full<Bytes>>>;

pin_project! {
    /// Response future of [`Auth`](crate::Auth): the checks run first (a
    /// boxed future, since authentication is naturally asynchronous), then
    /// either the refusal is answered or the inner service is called.
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B>
    where
        S: Service<Request<B>>,
    {
        Checking {
            check: BoxFuture<'static, Checked>,
            // Ready: `poll_ready` was called on it before `call` took it.
            inner: Option<S>,
            body: Option<B>,
        },
        Inner { #[pin] fut: S::Future },
        Done,
    }
}

pin_project! {
    /// Response future of [`IpFilter`](crate::IpFilter): the refusal, or
    /// the inner service's future.
    pub struct IpFilterFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Rejected { response: Option<Response<Full<Bytes>>> },
        Inner { #[pin] fut: F },
    }
}

// === impl ResponseFuture ===

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    pub(crate) fn new(check: BoxFuture<'static, Checked>, inner: S, body: B) -> Self {
        Self {
            state: State::Checking {
                check,
                inner: Some(inner),
                body: Some(body),
            },
        }
    }
}

impl<S, B, RB> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<RB>>,
{
    type Output = Result<Response<ResponseBody<RB>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Checking { check, inner, body } => {
                    let checked = ready!(check.as_mut().poll(cx));
                    match (checked, inner.take(), body.take()) {
                        (Ok(parts), Some(mut svc), Some(body)) => {
                            let fut = svc.call(Request::from_parts(parts, body));
                            state.set(State::Inner { fut });
                        }
                        (Err(refusal), _, _) => {
                            state.set(State::Done);
                            return Poll::Ready(Ok(refusal.map(ResponseBody::full)));
                        }
                        _ => {
                            state.set(State::Done);
                            return Poll::Ready(Ok(polled_after_completion()));
                        }
                    }
                }
                StateProj::Inner { fut } => {
                    let rsp = ready!(fut.poll(cx));
                    state.set(State::Done);
                    return Poll::Ready(rsp.map(|r| r.map(ResponseBody::inner)));
                }
                StateProj::Done => return Poll::Ready(Ok(polled_after_completion())),
            }
        }
    }
}

/// Polling a finished future is a caller bug; answering 500 beats
/// panicking inside a server task.
fn polled_after_completion<B>() -> Response<ResponseBody<B>> {
    Problem::new(StatusCode::INTERNAL_SERVER_ERROR)
        .detail("response future polled after completion")
        .into_response()
}

impl<S, B> fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Checking { .. } => "checking",
            State::Inner { .. } => "inner",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

// === impl IpFilterFuture ===

impl<F> IpFilterFuture<F> {
    pub(crate) fn rejected(response: Response<Full<Bytes>>) -> Self {
        Self {
            kind: Kind::Rejected {
                response: Some(response),
            },
        }
    }

    pub(crate) fn inner(fut: F) -> Self {
        Self {
            kind: Kind::Inner { fut },
        }
    }
}

impl<F, RB, E> Future for IpFilterFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
{
    type Output = Result<Response<ResponseBody<RB>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Rejected { response } => Poll::Ready(Ok(match response.take() {
                Some(r) => r.map(ResponseBody::full),
                None => polled_after_completion(),
            })),
            KindProj::Inner { fut } => fut
                .poll(cx)
                .map(|r| r.map(|rsp| rsp.map(ResponseBody::inner))),
        }
    }
}

impl<F> fmt::Debug for IpFilterFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.kind {
            Kind::Rejected { .. } => "rejected",
            Kind::Inner { .. } => "inner",
        };
        f.debug_struct("IpFilterFuture")
            .field("state", &state)
            .finish()
    }
}
