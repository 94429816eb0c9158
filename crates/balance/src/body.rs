//! The bodies of a [`Balance`](crate::Balance): [`RetryBody`], the request
//! body given to endpoint services, which lets a request be sent again; and
//! [`ResponseBody`], the response body, which keeps the request counted in
//! flight until it ends.
//!
//! A retry needs the body again. [`RetryBody`] gives each attempt either
//! a copy of a body that is known in full (empty, or buffered under the
//! [buffering limit](crate::BalanceBuilder::buffer_requests)), or the
//! caller's streaming body itself, which the first attempt that reads it
//! takes for good. An attempt that failed before reading any of it (a
//! refused connection) leaves it for the next one; once a byte has been
//! sent, the request is no longer retried.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use parking_lot::Mutex;
use towergate_core::BoxError;

use crate::error::BodyConsumed;
use crate::pool::Load;

/// The body of one attempt; see the [module docs](self).
///
/// It is `Unpin` whatever `B` is, as hyper's pooled client requires.
pub struct RetryBody<B> {
    kind: Kind<B>,
    hint: SizeHint,
}

enum Kind<B> {
    Empty,
    Full {
        data: Option<Bytes>,
        trailers: Option<HeaderMap>,
    },
    Shared {
        slot: Arc<Mutex<Option<Stream<B>>>>,
        taken: Option<Stream<B>>,
    },
}

pin_project_lite::pin_project! {
    /// The response body of a [`Balance`](crate::Balance): the endpoint's
    /// body, with the request still counted in flight until it ends.
    ///
    /// A request counts against the pool's
    /// [`CircuitBreaker`](crate::CircuitBreaker) limits, and as its
    /// endpoint's load for `least_requests` and P2C, until its body has
    /// been read to the end, has failed, or is dropped; not only until the
    /// headers came. A download or a stream of server-sent events is work
    /// for its endpoint for as long as it streams (as linkerd counts a
    /// request pending until the end of its stream). Latency is still
    /// measured at the headers.
    ///
    /// A `101` response whose extensions hold a
    /// [`TunnelHold`](towergate_core::TunnelHold) (towergate-proxy's
    /// tunnels) counts until the tunnel closes instead: its count is held
    /// there, not in this body.
    pub struct ResponseBody<B> {
        #[pin]
        inner: B,
        held: Held,
    }
}

/// Where each attempt's body comes from.
pub(crate) enum ReplaySource<B> {
    Empty,
    Full {
        data: Bytes,
        trailers: Option<HeaderMap>,
    },
    Shared {
        slot: Arc<Mutex<Option<Stream<B>>>>,
        hint: SizeHint,
    },
}

/// The caller's body, after the part that buffering read of it.
pub(crate) struct Stream<B> {
    prefix: VecDeque<Bytes>,
    inner: Pin<Box<B>>,
}

// === impl RetryBody ===

impl<B> RetryBody<B> {
    /// An empty body.
    pub fn empty() -> Self {
        Self {
            kind: Kind::Empty,
            hint: SizeHint::with_exact(0),
        }
    }

    /// A body known in full.
    pub fn full(data: impl Into<Bytes>) -> Self {
        let data = data.into();
        Self {
            hint: SizeHint::with_exact(data.len() as u64),
            kind: Kind::Full {
                data: Some(data),
                trailers: None,
            },
        }
    }
}

impl<B> Body for RetryBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match &mut this.kind {
            Kind::Empty => Poll::Ready(None),
            Kind::Full { data, trailers } => {
                if let Some(d) = data.take().filter(|d| !d.is_empty()) {
                    return Poll::Ready(Some(Ok(Frame::data(d))));
                }
                Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(t))))
            }
            Kind::Shared { slot, taken } => {
                if taken.is_none() {
                    // The first read takes the body: from now on a failed
                    // attempt cannot be retried.
                    *taken = slot.lock().take();
                }
                match taken {
                    Some(s) => s.poll_frame(cx),
                    None => Poll::Ready(Some(Err(BodyConsumed.into()))),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Full { data, trailers } => {
                data.as_ref().is_none_or(Bytes::is_empty) && trailers.is_none()
            }
            Kind::Shared { taken, .. } => taken
                .as_ref()
                .is_some_and(|s| s.prefix.is_empty() && s.inner.is_end_stream()),
        }
    }

    fn size_hint(&self) -> SizeHint {
        // The caller's hint, so that hyper sends the same Content-Length (or
        // chunked encoding) as the caller did.
        self.hint
    }
}

impl<B> fmt::Debug for RetryBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Empty => "empty",
            Kind::Full { .. } => "full",
            Kind::Shared { .. } => "stream",
        };
        f.debug_struct("RetryBody").field("kind", &kind).finish()
    }
}

/// The counts a response holds until it is done; given back when dropped.
#[derive(Debug, Default)]
pub(crate) struct Held {
    /// The endpoint's (`max_endpoint_requests`, its load).
    pub(crate) endpoint: Option<Load>,
    /// The pool's (`max_requests`).
    pub(crate) request: Option<Load>,
}

// === impl ResponseBody ===

impl<B> ResponseBody<B> {
    pub(crate) fn new(inner: B, endpoint: Option<Load>) -> Self {
        Self {
            inner,
            held: Held {
                endpoint,
                request: None,
            },
        }
    }

    /// The endpoint's body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }

    /// The endpoint's body, mutably.
    pub fn get_mut(&mut self) -> &mut B {
        &mut self.inner
    }

    /// The endpoint's body; the request stops counting in flight now.
    pub fn into_inner(self) -> B {
        self.inner
    }

    pub(crate) fn held_mut(&mut self) -> &mut Held {
        &mut self.held
    }
}

impl<B: Body> Body for ResponseBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        // Done: the end, a failure (nothing more comes), or the last
        // frame (a caller may stop there without asking again).
        if !matches!(frame, Some(Ok(_))) || this.inner.is_end_stream() {
            *this.held = Held::default();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: fmt::Debug> fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseBody")
            .field("inner", &self.inner)
            .field("held", &self.held)
            .finish()
    }
}

// === impl ReplaySource ===

impl<B> ReplaySource<B>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    /// Streams the body: only an attempt that does not read it can be
    /// followed by another.
    pub(crate) fn streaming(body: B) -> Self {
        if body.is_end_stream() {
            return Self::Empty;
        }
        let hint = body.size_hint();
        Self::Shared {
            slot: Arc::new(Mutex::new(Some(Stream {
                prefix: VecDeque::new(),
                inner: Box::pin(body),
            }))),
            hint,
        }
    }

    /// Reads up to `limit` bytes of the body first: a body that ends within
    /// them can be replayed; a longer one streams on from where reading
    /// stopped.
    pub(crate) async fn buffered(body: B, limit: usize) -> Result<Self, BoxError> {
        if body.is_end_stream() {
            return Ok(Self::Empty);
        }
        let hint = body.size_hint();
        if hint.lower() > limit as u64 {
            return Ok(Self::streaming(body));
        }
        let mut inner = Box::pin(body);
        let mut prefix = VecDeque::new();
        let mut len = 0usize;
        let mut trailers = None;
        while let Some(frame) = inner.frame().await {
            let frame = frame.map_err(Into::into)?;
            match frame.into_data() {
                Ok(data) => {
                    len += data.len();
                    prefix.push_back(data);
                    if len > limit {
                        return Ok(Self::Shared {
                            slot: Arc::new(Mutex::new(Some(Stream { prefix, inner }))),
                            hint,
                        });
                    }
                }
                Err(frame) => {
                    if let Ok(t) = frame.into_trailers() {
                        trailers = Some(t);
                    }
                }
            }
        }
        let data = if prefix.len() == 1 {
            prefix.pop_front().unwrap_or_default()
        } else {
            let mut all = BytesMut::with_capacity(len);
            for chunk in prefix {
                all.extend_from_slice(&chunk);
            }
            all.freeze()
        };
        Ok(Self::Full { data, trailers })
    }
}

impl<B> ReplaySource<B> {
    /// The body for the next attempt, or `None` if an earlier attempt has
    /// read (part of) the caller's stream.
    pub(crate) fn attempt(&self) -> Option<RetryBody<B>> {
        match self {
            Self::Empty => Some(RetryBody::empty()),
            Self::Full { data, trailers } => Some(RetryBody {
                hint: SizeHint::with_exact(data.len() as u64),
                kind: Kind::Full {
                    data: Some(data.clone()),
                    trailers: trailers.clone(),
                },
            }),
            Self::Shared { slot, hint } => slot.lock().is_some().then(|| RetryBody {
                kind: Kind::Shared {
                    slot: slot.clone(),
                    taken: None,
                },
                hint: *hint,
            }),
        }
    }

    /// Whether every attempt gets the whole body (so attempts may run at
    /// the same time, as hedging needs).
    pub(crate) fn is_replayable(&self) -> bool {
        !matches!(self, Self::Shared { .. })
    }
}

// === impl Stream ===

impl<B> Stream<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(d) = self.prefix.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(d))));
        }
        self.inner
            .as_mut()
            .poll_frame(cx)
            .map(|f| f.map(|r| r.map_err(Into::into)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Full, StreamBody};

    fn chunks(
        parts: &[&'static str],
    ) -> impl Body<Data = Bytes, Error = std::convert::Infallible> + Send + 'static {
        let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    async fn read<B: Body<Data = Bytes> + Unpin>(b: B) -> Result<Bytes, B::Error> {
        Ok(b.collect().await?.to_bytes())
    }

    #[tokio::test]
    async fn empty_and_full_replay() {
        let src = ReplaySource::streaming(http_body_util::Empty::<Bytes>::new());
        assert!(src.is_replayable());
        assert!(src.attempt().expect("body").is_end_stream());
        let src = ReplaySource::buffered(Full::new(Bytes::from_static(b"hello")), 10)
            .await
            .expect("buffer");
        assert!(src.is_replayable());
        for _ in 0..3 {
            let b = src.attempt().expect("body");
            assert_eq!(b.size_hint().exact(), Some(5));
            assert_eq!(read(b).await.expect("read"), "hello");
        }
    }

    #[tokio::test]
    async fn over_the_limit_streams_once_with_its_prefix() {
        let src = ReplaySource::buffered(chunks(&["ab", "cd", "ef", "gh"]), 3)
            .await
            .expect("buffer");
        assert!(!src.is_replayable());
        let first = src.attempt().expect("untouched");
        // An attempt that never read it leaves it for the next.
        let unused = src.attempt().expect("still untouched");
        drop(unused);
        assert_eq!(read(first).await.expect("read"), "abcdefgh");
        assert!(src.attempt().is_none(), "consumed");
    }

    #[tokio::test]
    async fn streaming_body_is_taken_by_the_first_reader() {
        let src = ReplaySource::streaming(chunks(&["x", "y"]));
        let a = src.attempt().expect("body");
        let b = src.attempt().expect("body");
        assert_eq!(read(a).await.expect("read"), "xy");
        assert!(read(b).await.is_err(), "second reader finds it gone");
        assert!(src.attempt().is_none());
    }
}
