//! Bodies that count their bytes as they stream, without buffering.
//!
//! [`MetricsLayer`](crate::MetricsLayer) and
//! [`AccessLogLayer`](crate::AccessLogLayer) hand the inner service a
//! [`RequestBody`] and the caller a [`ResponseBody`]: both pass every frame
//! through untouched and only add up the length of data frames. The
//! response body also tells its layer when it has ended (or was dropped
//! half-way, when the client went away), which is when the access-log line
//! is written and the request stops being in flight.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Buf;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::access_log::BodyWatch as LogWatch;
use crate::metrics::layer::BodyWatch as MetricsWatch;

pin_project! {
    /// A request body that counts the bytes of its data frames.
    #[derive(Debug)]
    pub struct RequestBody<B> {
        #[pin]
        inner: B,
        count: ByteCount,
    }
}

pin_project! {
    /// A response body that counts the bytes of its data frames and reports
    /// its end to the layer that wrapped it.
    #[derive(Debug)]
    pub struct ResponseBody<B> {
        #[pin]
        inner: B,
        watch: Watch,
    }
}

/// What a [`ResponseBody`] reports to.
#[derive(Debug)]
pub(crate) enum Watch {
    /// Nothing to report: a future polled after completion, or a body
    /// made [`unwatched`](ResponseBody::unwatched).
    None,
    Metrics(MetricsWatch),
    AccessLog(LogWatch),
    /// Both, for [`ObserveLayer`](crate::ObserveLayer): the metrics first.
    Both(MetricsWatch, LogWatch),
}

/// The bytes a [`RequestBody`] counted, shared with whoever reports them.
/// A request that has no body (its body is at its end from the start)
/// gets no counter at all: nothing to allocate, and 0 to report.
#[derive(Clone, Debug, Default)]
pub(crate) struct ByteCount(Option<Arc<AtomicU64>>);

impl ByteCount {
    /// A counter for `body`, or none when it is already at its end.
    pub(crate) fn for_body<B: Body>(body: &B) -> Self {
        Self((!body.is_end_stream()).then(|| Arc::new(AtomicU64::new(0))))
    }

    /// Whether there are bytes to count (the body was not at its end).
    #[cfg(feature = "axum")]
    pub(crate) fn is_counting(&self) -> bool {
        self.0.is_some()
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.as_ref().map_or(0, |c| c.load(Ordering::Relaxed))
    }

    fn add(&self, n: u64) {
        if let Some(c) = &self.0 {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }
}

// === impl RequestBody ===

impl<B> RequestBody<B> {
    pub(crate) fn new(inner: B, count: ByteCount) -> Self {
        Self { inner, count }
    }

    /// The bytes read so far.
    pub fn bytes(&self) -> u64 {
        self.count.get()
    }

    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }

    /// Unwraps the body.
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B: Body> Body for RequestBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let res = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &res
            && let Some(data) = frame.data_ref()
        {
            this.count.add(data.remaining() as u64);
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

// === impl ResponseBody ===

impl<B> ResponseBody<B> {
    pub(crate) fn new(inner: B, watch: Watch) -> Self {
        Self { inner, watch }
    }

    /// `inner`, reporting to nothing: for a stack that runs without the
    /// observe layers but hands out the same body type as one with them
    /// (a server whose observation is switched by configuration), instead
    /// of boxing both into one type.
    ///
    /// ```
    /// use towergate_observe::body::ResponseBody;
    /// let body = ResponseBody::unwatched(String::from("hi"));
    /// assert_eq!(body.get_ref(), "hi");
    /// ```
    pub fn unwatched(inner: B) -> Self {
        Self::new(inner, Watch::None)
    }

    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }
}

impl<B: Body> Body for ResponseBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let res = this.inner.poll_frame(cx);
        match &res {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.watch.data(data.remaining() as u64);
                }
            }
            Poll::Ready(Some(Err(_))) | Poll::Ready(None) => this.watch.end(),
            Poll::Pending => {}
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// `res` with its body reporting to `watch`.
pub(crate) fn wrap<B, E>(
    res: Result<http::Response<B>, E>,
    watch: Watch,
) -> Result<http::Response<ResponseBody<B>>, E> {
    res.map(|rsp| rsp.map(|b| ResponseBody::new(b, watch)))
}

// === impl Watch ===

impl Watch {
    fn data(&mut self, n: u64) {
        match self {
            Watch::None => {}
            Watch::Metrics(w) => w.data(n),
            Watch::AccessLog(w) => w.data(n),
            Watch::Both(m, l) => {
                m.data(n);
                l.data(n);
            }
        }
    }

    // Dropping the watch ends it too: hyper stops polling a body whose
    // `is_end_stream` is true, and a client may leave half-way.
    fn end(&mut self) {
        match self {
            Watch::None => {}
            Watch::Metrics(w) => w.end(),
            Watch::AccessLog(w) => w.end(),
            Watch::Both(m, l) => {
                m.end();
                l.end();
            }
        }
    }
}
