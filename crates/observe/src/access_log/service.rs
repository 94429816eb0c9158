//! [`AccessLog`]: the service of [`AccessLogLayer`](super::AccessLogLayer).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant, SystemTime};

use http::header::{REFERER, USER_AGENT};
use http::{HeaderValue, Request, Response};
use opentelemetry::trace::TraceId;
use pin_project_lite::pin_project;
use tower::Service;
use towergate_core::{ClientAddr, Identity, RequestId, RouteMatch};

use super::{CUT_MARK, Field, MAX_HEADER, Record, Shared, Target};
use crate::body::{self, ByteCount, RequestBody, ResponseBody, Watch};
use crate::observation::{Found, Observation, UpstreamInfo};

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
pub(crate) struct Pending {
    shared: Arc<Shared>,
    record: Option<Box<Record>>,
    started: Instant,
    route_at_call: Option<Arc<str>>,
    obs: Observation,
    bytes_in: ByteCount,
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
    ReqBody: http_body::Body,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let bytes_in = ByteCount::for_body(req.body());
        let found = Found::take(req.extensions_mut());
        let pending = Pending::start(
            &self.shared,
            &req,
            found,
            bytes_in.clone(),
            TraceIdFrom::Header,
            (SystemTime::now(), Instant::now()),
        );
        let req = req.map(|body| RequestBody::new(body, bytes_in));
        ResponseFuture {
            inner: self.inner.call(req),
            pending: Some(pending),
        }
    }
}

/// Where a line's trace id comes from.
pub(crate) enum TraceIdFrom {
    /// The request's `traceparent`, as the client sent it or a trace layer
    /// in front rewrote it.
    Header,
    /// A trace layer in the same [`ObserveLayer`](crate::ObserveLayer)
    /// already knows it.
    Known(Option<TraceId>),
}

/// A copy of `value` with bytes of its own: a request's values share its
/// connection's read buffer.
fn owned(value: &HeaderValue) -> HeaderValue {
    // At most `MAX_HEADER` bytes, marked where cut. The bytes of a valid
    // value, cut anywhere, and the mark are valid: the fallback is
    // unreachable.
    let bytes = value.as_bytes();
    if bytes.len() <= MAX_HEADER {
        return HeaderValue::from_bytes(bytes).unwrap_or_else(|_| value.clone());
    }
    let mut cut = bytes[..MAX_HEADER - CUT_MARK.len()].to_vec();
    cut.extend_from_slice(CUT_MARK.as_bytes());
    HeaderValue::from_bytes(&cut).unwrap_or_else(|_| value.clone())
}

/// The trace id of a W3C `traceparent` (`00-{32 hex}-{16 hex}-{2 hex}`).
fn traceparent_trace_id(v: &[u8]) -> Option<TraceId> {
    crate::trace::parse_traceparent(v).map(|(trace_id, _, _)| trace_id)
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
        let Some(pending) = this.pending.take() else {
            return Poll::Ready(body::wrap(res, Watch::None));
        };
        let watch = pending
            .respond(res.as_ref().ok())
            .map_or(Watch::None, Watch::AccessLog);
        Poll::Ready(body::wrap(res, watch))
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
    /// Captures what the line needs of the request; `bytes_in` is what its
    /// body wrapper counts into; `(wall, now)` is when the request came,
    /// on the two clocks.
    pub(crate) fn start<B>(
        shared: &Arc<Shared>,
        req: &Request<B>,
        Found { route_at_call, obs }: Found,
        bytes_in: ByteCount,
        trace_id: TraceIdFrom,
        (wall, now): (SystemTime, Instant),
    ) -> Self {
        let config = &shared.config;
        let ext = req.extensions();
        let identity = ext.get::<Identity>();
        let record = Record {
            start: wall,
            request_id: ext.get::<RequestId>().cloned(),
            trace_id: match trace_id {
                TraceIdFrom::Known(id) => id,
                TraceIdFrom::Header if config.wants(Field::TraceId) => {
                    crate::trace::traceparent_of(req.headers())
                        .and_then(|v| traceparent_trace_id(v.as_bytes()))
                }
                TraceIdFrom::Header => None,
            },
            client: ext.get::<ClientAddr>().map(|a| a.client),
            method: req.method().clone(),
            uri: Target::of(req.uri(), !config.keep_query.is_empty()),
            version: req.version(),
            route: None,
            upstream: None,
            status: None,
            bytes_in: 0,
            bytes_out: 0,
            latency: Duration::ZERO,
            subject: identity.and_then(|i| i.subject.clone()),
            consumer: identity.and_then(|i| i.consumer.clone()),
            // Copies, as for the path (see `Target`).
            user_agent: config
                .wants(Field::UserAgent)
                .then(|| req.headers().get(USER_AGENT).map(owned))
                .flatten(),
            referer: config
                .wants(Field::Referer)
                .then(|| req.headers().get(REFERER).map(owned))
                .flatten(),
        };
        Pending {
            shared: shared.clone(),
            record: Some(Box::new(record)),
            started: now,
            route_at_call,
            obs,
            bytes_in,
        }
    }

    /// The response came (or not: `None`, then the line is written now,
    /// with no status): returns what its body reports to, which writes the
    /// line when the body ends.
    pub(crate) fn respond<B>(mut self, rsp: Option<&Response<B>>) -> Option<BodyWatch> {
        let Some(rsp) = rsp else {
            self.emit();
            return None;
        };
        if let Some(rec) = self.record.as_mut() {
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
        Some(BodyWatch { pending: self })
    }

    /// Completes the record with what inner layers reported, and hands it
    /// to the writer. Only the first call does anything.
    fn emit(&mut self) {
        let Some(mut rec) = self.record.take() else {
            return;
        };
        rec.latency = self.started.elapsed();
        rec.bytes_in = self.bytes_in.get();
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
        self.shared.send(rec);
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
    fn captured_header_values_do_not_keep_the_read_buffer_alive() {
        use std::sync::atomic::Ordering;

        let (buffer, dropped) = towergate_test::tracked_bytes(b"curl/8.0");
        let parsed = HeaderValue::from_maybe_shared(buffer.slice(..)).unwrap();
        let copy = owned(&parsed);
        drop(parsed);
        drop(buffer);
        assert!(dropped.load(Ordering::SeqCst));
        assert_eq!(copy, "curl/8.0");
    }

    #[test]
    fn trace_id_from_traceparent() {
        assert_eq!(
            traceparent_trace_id(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
                .map(|t| t.to_string())
                .as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert!(
            traceparent_trace_id(b"00-00000000000000000000000000000000-00f067aa0ba902b7-01")
                .is_none()
        );
        assert!(traceparent_trace_id(b"garbage").is_none());
    }
}
