//! [`AccessLog`]: the service of [`AccessLogLayer`](super::AccessLogLayer).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant, SystemTime};

use http::header::{REFERER, USER_AGENT};
use http::{Request, Response};
use opentelemetry::trace::TraceId;
use pin_project_lite::pin_project;
use tower::Service;
use towergate_core::{ClientAddr, Identity, RequestId, RouteMatch};

use super::{Field, Record, Shared};
use crate::body::{RequestBody, ResponseBody, Watch};
use crate::observation::{Observation, UpstreamInfo};

/// Writes an access-log line per request; see the
/// [module docs](crate::access_log).
#[derive(Clone, Debug)]
pub struct AccessLog<S> {
    inner: S,
    shared: Arc<Shared>,
}

pin_project! {
    /// The response future of [`AccessLog`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        pending: Option<Pending>,
    }
}

/// A line being put together. Dropped before the response headers came
/// back, it is written with status 499 (the client left), as nginx does.
struct Pending {
    shared: Arc<Shared>,
    record: Option<Box<Record>>,
    started: Instant,
    route_at_call: Option<Arc<str>>,
    obs: Observation,
    bytes_in: Arc<AtomicU64>,
}

/// What an access-log [`ResponseBody`] reports to.
pub(crate) struct BodyWatch {
    pending: Pending,
}

/// The status nginx logs when the client closed the connection first.
const CLIENT_CLOSED: u16 = 499;

// === impl AccessLog ===

impl<S> AccessLog<S> {
    pub(super) fn from_shared(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for AccessLog<S>
where
    S: Service<Request<RequestBody<ReqBody>>, Response = Response<ResBody>>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let (mut parts, body) = req.into_parts();
        let config = &self.shared.config;
        let ext = &parts.extensions;
        let identity = ext.get::<Identity>();
        let record = Record {
            start: SystemTime::now(),
            request_id: ext.get::<RequestId>().cloned(),
            trace_id: if config.wants(Field::TraceId) {
                parts
                    .headers
                    .get("traceparent")
                    .and_then(|v| v.to_str().ok())
                    .and_then(traceparent_trace_id)
            } else {
                None
            },
            client: ext.get::<ClientAddr>().map(|a| a.client),
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            route: None,
            upstream: None,
            status: None,
            bytes_in: 0,
            bytes_out: 0,
            latency: Duration::ZERO,
            subject: identity.and_then(|i| i.subject.clone()),
            consumer: identity.and_then(|i| i.consumer.clone()),
            user_agent: config
                .wants(Field::UserAgent)
                .then(|| parts.headers.get(USER_AGENT).cloned())
                .flatten(),
            referer: config
                .wants(Field::Referer)
                .then(|| parts.headers.get(REFERER).cloned())
                .flatten(),
        };
        let route_at_call = ext.get::<RouteMatch>().map(|m| m.route.clone());
        let obs = Observation::get_or_insert(&mut parts.extensions);
        let bytes_in = Arc::new(AtomicU64::new(0));
        let req = Request::from_parts(parts, RequestBody::new(body, bytes_in.clone()));
        ResponseFuture {
            inner: self.inner.call(req),
            pending: Some(Pending {
                shared: self.shared.clone(),
                record: Some(Box::new(record)),
                started: Instant::now(),
                route_at_call,
                obs,
                bytes_in,
            }),
        }
    }
}

/// The trace id of a W3C `traceparent` (`00-{32 hex}-{16 hex}-{2 hex}`).
fn traceparent_trace_id(v: &str) -> Option<TraceId> {
    let mut parts = v.trim().split('-');
    let (_version, trace) = (parts.next()?, parts.next()?);
    if trace.len() != 32 {
        return None;
    }
    TraceId::from_hex(trace)
        .ok()
        .filter(|t| *t != TraceId::INVALID)
}

// === impl ResponseFuture ===

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = ready!(this.inner.poll(cx));
        let Some(mut pending) = this.pending.take() else {
            return Poll::Ready(res.map(|r| r.map(ResponseBody::passthrough)));
        };
        match res {
            Ok(rsp) => {
                if let Some(rec) = pending.record.as_mut() {
                    rec.status = Some(rsp.status().as_u16());
                    // Fallbacks, for when no observation was filled.
                    rec.route = rsp
                        .extensions()
                        .get::<RouteMatch>()
                        .map(|m| m.route.clone());
                    rec.upstream = rsp
                        .extensions()
                        .get::<UpstreamInfo>()
                        .map(|u| u.endpoint_arc().clone());
                }
                let watch = Watch::AccessLog(BodyWatch { pending });
                Poll::Ready(Ok(rsp.map(|b| ResponseBody::new(b, watch))))
            }
            Err(e) => {
                // No response: the status stays null.
                pending.emit();
                Poll::Ready(Err(e))
            }
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("done", &self.pending.is_none())
            .finish()
    }
}

// === impl Pending ===

impl Pending {
    /// Completes the record with what inner layers reported, and hands it
    /// to the writer. Only the first call does anything.
    fn emit(&mut self) {
        let Some(mut rec) = self.record.take() else {
            return;
        };
        rec.latency = self.started.elapsed();
        rec.bytes_in = self.bytes_in.load(Ordering::Relaxed);
        let seen = self.obs.snapshot();
        rec.route = self
            .route_at_call
            .take()
            .or(seen.route)
            .or(rec.route.take());
        rec.upstream = seen
            .upstream
            .map(|u| u.endpoint_arc().clone())
            .or(rec.upstream.take());
        if seen.subject.is_some() || seen.consumer.is_some() {
            rec.subject = seen.subject;
            rec.consumer = seen.consumer;
        }
        if seen.trace_id.is_some() {
            rec.trace_id = seen.trace_id;
        }
        self.shared.send(*rec);
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(rec) = self.record.as_mut()
            && rec.status.is_none()
        {
            rec.status = Some(CLIENT_CLOSED);
        }
        self.emit();
    }
}

// === impl BodyWatch ===

impl BodyWatch {
    pub(crate) fn data(&mut self, n: u64) {
        if let Some(rec) = self.pending.record.as_mut() {
            rec.bytes_out += n;
        }
    }

    pub(crate) fn end(&mut self) {
        self.pending.emit();
    }
}

impl fmt::Debug for BodyWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BodyWatch")
            .field("ended", &self.pending.record.is_none())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_id_from_traceparent() {
        assert_eq!(
            traceparent_trace_id("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
                .map(|t| t.to_string())
                .as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert!(
            traceparent_trace_id("00-00000000000000000000000000000000-00f067aa0ba902b7-01")
                .is_none()
        );
        assert!(traceparent_trace_id("garbage").is_none());
    }
}
