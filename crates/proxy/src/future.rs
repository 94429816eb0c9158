//! The response future of [`Proxy`](crate::Proxy).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{HeaderValue, Method, Response, StatusCode};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use pin_project_lite::pin_project;
use towergate_core::timer::Sleep;
use towergate_core::{BoxError, ConnectionLease, RequestId};

use crate::error::{self, Chain, RequestBodyFailed, UpstreamTimeout, UpstreamUnavailable};
use crate::headers::{self, Keep};
use crate::pool::SendFuture;
use crate::service::{Shared, Upload};
use crate::upgrade;
use crate::{IdleTimeout, ResponseBody};

pin_project! {
    /// Resolves to the upstream's response once its headers have arrived;
    /// the body then streams from the upstream as the caller reads it.
    ///
    /// Fails with a typed error from [`error`](crate::error) if the upstream
    /// cannot be reached or does not answer within the proxy's timeout.
    pub struct ResponseFuture {
        #[pin]
        state: State,
    }
}

pin_project! {
    #[project = StateProj]
    enum State {
        // The request could not even be built; nothing was sent.
        Failed {
            error: Option<BoxError>,
        },
        Waiting {
            #[pin]
            response: SendFuture,
            // Created at the first poll that finds no response: the
            // timeout counts from there, or from the end of the request
            // body if that comes later.
            #[pin]
            sleep: Option<Sleep>,
            exchange: Exchange,
            // The request body still being sent, if any.
            upload: Option<Arc<Upload>>,
        },
    }
}

/// What the future needs besides the response: settings, the client's side
/// of an upgrade, and what to put in the log.
pub(crate) struct Exchange {
    pub(crate) shared: Arc<Shared>,
    /// The client's side of an upgrade, what keeps its connection counted
    /// while the tunnel lives, and the protocols offered upstream.
    pub(crate) on_upgrade: Option<(OnUpgrade, Option<ConnectionLease>, HeaderValue)>,
    pub(crate) request_id: Option<RequestId>,
    pub(crate) method: Method,
    /// The response timeout: the proxy's, or the route's
    /// ([`RouteSettings`](crate::RouteSettings)).
    pub(crate) timeout: Duration,
    /// Set by the pool once a connection has the request: until then a
    /// timeout is the connect's (nothing was sent, safe to retry).
    pub(crate) dispatched: Arc<AtomicBool>,
}

// === impl ResponseFuture ===

impl ResponseFuture {
    pub(crate) fn waiting(
        response: SendFuture,
        exchange: Exchange,
        upload: Option<Arc<Upload>>,
    ) -> Self {
        Self {
            state: State::Waiting {
                response,
                sleep: None,
                exchange,
                upload,
            },
        }
    }

    pub(crate) fn failed(error: BoxError) -> Self {
        Self {
            state: State::Failed { error: Some(error) },
        }
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<ResponseBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Failed { error } => Poll::Ready(Err(error
                .take()
                .unwrap_or_else(|| "proxy response future polled after completion".into()))),
            StateProj::Waiting {
                response,
                mut sleep,
                exchange,
                upload,
            } => {
                match response.poll(cx) {
                    Poll::Ready(Ok(rsp)) => {
                        // The response timeout's timer goes on as the
                        // body's idle timer (one timer per response).
                        let timer = sleep.as_mut().get_mut().take();
                        let finished = exchange
                            .finish(rsp)
                            .map(|rsp| rsp.map(|b| exchange.body(b, timer)));
                        if let Err(e) = &finished {
                            exchange.log_failure(&**e);
                        }
                        return Poll::Ready(finished);
                    }
                    Poll::Ready(Err(e)) => {
                        sleep.set(None);
                        // A body that failed is the client's fault whatever
                        // the connection reports: over HTTP/2 only a reset
                        // of the stream reaches here.
                        let body_error = upload.as_ref().and_then(|u| u.take_body_error());
                        let error: BoxError = match body_error {
                            Some(source) => Box::new(RequestBodyFailed::failed(
                                exchange.shared.upstream.clone(),
                                source,
                            )),
                            None => error::classify(e, &exchange.shared.upstream),
                        };
                        exchange.log_failure(&*error);
                        return Poll::Ready(Err(error));
                    }
                    Poll::Pending => {}
                }
                let timeout = exchange.timeout;
                if sleep.is_none() {
                    sleep.set(Some(towergate_core::timer::sleep(timeout)));
                }
                let Some(mut sleep) = sleep.as_pin_mut() else {
                    return Poll::Pending;
                };
                while sleep.as_mut().poll(cx).is_ready() {
                    let shared = &exchange.shared;
                    // Still checking out or connecting (an endpoint that
                    // drops SYNs, a connect timeout longer than this one):
                    // nothing reached the upstream.
                    if !exchange.dispatched.load(Ordering::Relaxed) {
                        let error: BoxError = Box::new(UpstreamTimeout::not_connected(
                            exchange.shared.upstream.clone(),
                            timeout,
                        ));
                        exchange.log_failure(&*error);
                        return Poll::Ready(Err(error));
                    }
                    let error: BoxError = match upload.as_ref().map(|u| u.ended()) {
                        // The client has not sent its whole body in the
                        // time: its slowness, not the upstream's (408, and
                        // not counted against the endpoint). A body that
                        // is not being read at all is the upstream's.
                        Some(None) if upload.as_ref().is_some_and(|u| u.client_is_slow()) => {
                            Box::new(RequestBodyFailed::timed_out(
                                shared.upstream.clone(),
                                timeout,
                            ))
                        }
                        // The body ended later than the timer started:
                        // the upstream's time counts from there.
                        Some(Some(ended)) if ended + timeout > Instant::now() => {
                            sleep.as_mut().get_mut().reset(ended + timeout);
                            continue;
                        }
                        _ => Box::new(UpstreamTimeout::response(shared.upstream.clone(), timeout)),
                    };
                    exchange.log_failure(&*error);
                    return Poll::Ready(Err(error));
                }
                Poll::Pending
            }
        }
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Failed { .. } => "failed",
            State::Waiting { .. } => "waiting",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

// === impl Exchange ===

impl Exchange {
    /// The upstream's body as the caller gets it: failing after a pause of
    /// the proxy's body idle timeout, on `timer` if the response timeout
    /// armed one.
    fn body(&self, body: Incoming, timer: Option<Sleep>) -> ResponseBody {
        IdleTimeout::with_timer(
            body,
            self.shared.body_idle_timeout,
            self.shared.upstream.clone(),
            timer,
            self.timeout,
        )
    }

    /// The upstream's response as it goes back to the caller.
    fn finish(&mut self, mut rsp: Response<Incoming>) -> Result<Response<Incoming>, BoxError> {
        // Room, in one growth of the map, for what the gateway adds on the
        // way back in most cases: `Via`, the request id and a couple more
        // (rate-limit or CORS headers may grow it again).
        let _ = rsp.headers_mut().try_reserve(4);
        // An HTTP/1.1 answer framed by `Transfer-Encoding`: hyper has undone
        // the chunking, and what it left must not frame the answer again.
        // A `Content-Length` beside it is not the body's (RFC 9112 §6.3: an
        // intermediary removes it; passed on, the client would read that
        // many bytes and take the rest for the next answer); a coding
        // other than `chunked` (`gzip, chunked`) leaves bytes no header
        // describes any more.
        // Most answers carry no hop-by-hop header: one pass over the names
        // rules both out.
        let switching = rsp.status() == StatusCode::SWITCHING_PROTOCOLS;
        if rsp.headers().keys().any(headers::is_hop_by_hop) {
            if rsp.headers().contains_key(http::header::TRANSFER_ENCODING) {
                if !headers::only_chunked(rsp.headers()) {
                    return Err(UpstreamUnavailable::protocol(
                        self.shared.upstream.clone(),
                        "the upstream answered with a transfer coding other than chunked",
                    )
                    .into());
                }
                rsp.headers_mut().remove(http::header::CONTENT_LENGTH);
            }
            headers::strip_hop_by_hop_found(
                rsp.headers_mut(),
                Keep {
                    upgrade: switching,
                    te_trailers: false,
                },
            );
        }
        let version = rsp.version();
        headers::append_via(rsp.headers_mut(), version, &self.shared.via);
        if switching {
            // A 101 must name, in `Upgrade`, one of the protocols offered
            // (RFC 9110 §15.2.2); any other would hand the client a
            // connection to the upstream in a protocol nobody checked. It
            // is the upstream's failure: 502, and its connection is
            // dropped with the response.
            let chosen = rsp.headers().get(http::header::UPGRADE);
            match self.on_upgrade.take() {
                Some((client, lease, offer)) if headers::upgrade_accepts(&offer, chosen) => {
                    // Layers outside keep what counts the tunnel in it.
                    let hold = towergate_core::TunnelHold::default();
                    rsp.extensions_mut().insert(hold.clone());
                    upgrade::spawn_tunnel(
                        client,
                        hyper::upgrade::on(&mut rsp),
                        self.shared.upstream.clone(),
                        self.request_id.clone(),
                        (lease, hold),
                        self.shared.tunnel_idle_timeout,
                    );
                }
                Some(_) => {
                    return Err(UpstreamUnavailable::protocol(
                        self.shared.upstream.clone(),
                        "upstream switched to a protocol that was not offered",
                    )
                    .into());
                }
                None => {
                    return Err(UpstreamUnavailable::protocol(
                        self.shared.upstream.clone(),
                        "upstream switched protocols without being asked to",
                    )
                    .into());
                }
            }
        }
        Ok(rsp)
    }

    pub(crate) fn log_failure(&self, error: &(dyn std::error::Error + 'static)) {
        tracing::warn!(
            upstream = %self.shared.upstream,
            method = %self.method,
            request_id = self.request_id.as_ref().map(|id| id.as_str()),
            error = %Chain(error),
            "upstream request failed"
        );
    }
}

impl fmt::Debug for Exchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exchange")
            .field("upstream", &self.shared.upstream)
            .field("method", &self.method)
            .field("request_id", &self.request_id)
            .field("upgrade", &self.on_upgrade.is_some())
            .finish()
    }
}
