//! The [`RateLimit`] service.

use std::task::{Context, Poll};

use http::{Request, Response};
use tower::Service;
use towergate_core::body::ResponseBody;

use crate::future::ResponseFuture;
use crate::layer::{Decision, RateLimitLayer, RateLimitLayerBuilder};

/// Applies a [`RateLimitLayer`]'s limits in front of `S`: see the
/// [crate docs](crate).
///
/// Refuses in `call`, never by holding back `poll_ready`, which forwards to
/// the inner service: routers assume every service is ready, and a 429
/// must go out at once. Refused requests never reach `S`.
///
/// `S: Clone` because a decision that waits on the network (Redis) takes
/// the service readied by `poll_ready` into the response future and leaves
/// a clone behind, the usual tower hand-over; in-memory decisions are made
/// in `call` and use the service in place.
#[derive(Clone, Debug)]
pub struct RateLimit<S> {
    inner: S,
    layer: RateLimitLayer,
}

// === impl RateLimit ===

impl<S> RateLimit<S> {
    /// Wraps `inner` with the limits of `layer` (sharing its store).
    pub fn new(inner: S, layer: RateLimitLayer) -> Self {
        Self { inner, layer }
    }

    /// A builder for the layer; same as [`RateLimitLayer::builder`].
    pub fn layer() -> RateLimitLayerBuilder {
        RateLimitLayer::builder()
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RateLimit<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody, ResBody>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let shared = &self.layer.shared;
        // Keys read the head only; splitting and rejoining moves, not copies.
        let (parts, body) = req.into_parts();
        let decision = match shared.decide_at_once(&parts) {
            // One limit in memory: no batch, no store call.
            Some(decision) => decision,
            None => {
                let batch = match shared.batch(&parts) {
                    Ok(batch) => batch,
                    Err(refusal) => {
                        return ResponseFuture::answered(refusal.into_response(&parts.extensions));
                    }
                };
                match shared.store().check(&batch).into_ready() {
                    // In-memory: decided already, no extra poll.
                    Ok(result) => shared.conclude(result, &batch),
                    Err(check) => {
                        // The decision needs I/O. `self.inner` was made ready
                        // by `poll_ready` for this call, so it goes into the
                        // future and a fresh clone takes its place for the
                        // next one.
                        let req = Request::from_parts(parts, body);
                        let clone = self.inner.clone();
                        let inner = std::mem::replace(&mut self.inner, clone);
                        return ResponseFuture::deciding(check, inner, req, batch, shared.clone());
                    }
                }
            }
        };
        match decision {
            Decision::Allow(report) => {
                let req = Request::from_parts(parts, body);
                ResponseFuture::inner(self.inner.call(req), report)
            }
            Decision::Refuse(refusal) => {
                ResponseFuture::answered(refusal.into_response(&parts.extensions))
            }
        }
    }
}
