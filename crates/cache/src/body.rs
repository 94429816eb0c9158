//! [`CacheBody`]: a stored body, the upstream body passed through, or the
//! upstream body teed into the store while it streams to the client.

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use pin_project_lite::pin_project;
use towergate_core::BoxError;

use crate::collapse::{self, Leader, Outcome};
use crate::store::{CacheStore, Pending};

pin_project! {
    /// The body of every response of [`Cache`](crate::Cache).
    ///
    /// - a stored body, served from memory;
    /// - the upstream body passed through untouched;
    /// - the upstream body *teed*: each frame goes to the client as soon as
    ///   it arrives while a copy accumulates; at the end of the stream the
    ///   copy is stored. The response is never buffered before it is sent.
    ///   A body larger than the store's `max_entry_bytes`, a body error,
    ///   trailers, or the client dropping the body mid-way abandon the copy
    ///   (the response is then simply not stored). Requests collapsed
    ///   behind this one learn which: a body too large or with trailers
    ///   will not be stored for them either, and they go upstream at once;
    ///   after an error or a drop they try again, one of them leading.
    pub struct CacheBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Stored { #[pin] body: Full<Bytes> },
        Tee { #[pin] inner: B, tee: Option<Box<Tee>> },
        Pass { #[pin] inner: B },
    }
}

/// The copy being accumulated, and what to store it as.
pub(crate) struct Tee {
    store: CacheStore,
    pending: Pending,
    buf: BytesMut,
    limit: usize,
    /// Released (waking collapsed waiters) once the entry is stored or
    /// given up: finished with the outcome, or dropped with the copy when
    /// the body failed or the client dropped it (an abandoned flight).
    leader: Option<Leader>,
    /// The bytes of `buf` counted in the store's fill budget.
    reserved: Reserved,
}

/// Bytes counted in [`Inner::filling`](crate::store::Inner), given back
/// when the copy is stored or abandoned.
struct Reserved {
    store: CacheStore,
    bytes: u64,
}

// === impl CacheBody ===

impl<B> CacheBody<B> {
    /// A body served from memory.
    pub fn stored(bytes: Bytes) -> Self {
        Self::full(Full::new(bytes))
    }

    /// A generated body (a problem document).
    pub(crate) fn full(body: Full<Bytes>) -> Self {
        Self {
            kind: Kind::Stored { body },
        }
    }

    /// An empty body (`HEAD`, `304`).
    pub fn empty() -> Self {
        Self::stored(Bytes::new())
    }

    /// The upstream body, passed through.
    pub fn pass(inner: B) -> Self {
        Self {
            kind: Kind::Pass { inner },
        }
    }

    /// Whether the body is being stored while it streams.
    pub fn is_tee(&self) -> bool {
        matches!(self.kind, Kind::Tee { .. })
    }
}

impl<B: Body> CacheBody<B> {
    /// The upstream body, stored at its end.
    pub(crate) fn tee(
        inner: B,
        store: CacheStore,
        pending: Pending,
        leader: Option<Leader>,
    ) -> Self {
        let limit = usize::try_from(store.inner.max_entry_bytes).unwrap_or(usize::MAX);
        let capacity = inner
            .size_hint()
            .exact()
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(0)
            .min(limit)
            .min(64 * 1024);
        let tee = Tee {
            reserved: Reserved {
                store: store.clone(),
                bytes: 0,
            },
            store,
            pending,
            buf: BytesMut::with_capacity(capacity),
            limit,
            leader,
        };
        if inner.is_end_stream() {
            // An empty body may never be polled: store it now.
            tee.finish();
            return Self::pass(inner);
        }
        Self {
            kind: Kind::Tee {
                inner,
                tee: Some(Box::new(tee)),
            },
        }
    }
}

impl<B> Default for CacheBody<B> {
    fn default() -> Self {
        Self::empty()
    }
}

impl<B> Body for CacheBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.project().kind.project() {
            KindProj::Stored { body } => match ready!(body.poll_frame(cx)) {
                Some(Ok(frame)) => Poll::Ready(Some(Ok(frame))),
                Some(Err(never)) => match never {},
                None => Poll::Ready(None),
            },
            KindProj::Pass { inner } => inner.poll_frame(cx).map_err(Into::into),
            KindProj::Tee { mut inner, tee } => match ready!(inner.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => {
                    let keep = match frame.data_ref() {
                        Some(data) => tee.as_mut().is_none_or(|t| t.push(data)),
                        // Trailers are not stored: rather than serve a
                        // response without them later, do not store it.
                        None => false,
                    };
                    if !keep && let Some(t) = tee.take() {
                        t.give_up();
                    }
                    if inner.is_end_stream()
                        && let Some(t) = tee.take()
                    {
                        t.finish();
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                Some(Err(e)) => {
                    // Dropped with its leader: the waiters try again.
                    *tee = None;
                    Poll::Ready(Some(Err(e.into())))
                }
                None => {
                    if let Some(t) = tee.take() {
                        t.finish();
                    }
                    Poll::Ready(None)
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Stored { body } => body.is_end_stream(),
            Kind::Tee { inner, .. } | Kind::Pass { inner } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Stored { body } => body.size_hint(),
            Kind::Tee { inner, .. } | Kind::Pass { inner } => inner.size_hint(),
        }
    }
}

impl<B> fmt::Debug for CacheBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Stored { .. } => "Stored",
            Kind::Tee { .. } => "Tee",
            Kind::Pass { .. } => "Pass",
        };
        f.debug_struct("CacheBody").field("kind", &kind).finish()
    }
}

// === impl Reserved ===

impl Reserved {
    /// Counts `n` more bytes, unless that would pass the budget.
    fn grow(&mut self, n: u64) -> bool {
        let inner = &self.store.inner;
        let before = inner.filling.fetch_add(n, Ordering::Relaxed);
        if before.saturating_add(n) > inner.max_bytes {
            inner.filling.fetch_sub(n, Ordering::Relaxed);
            return false;
        }
        self.bytes += n;
        true
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        self.store
            .inner
            .filling
            .fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

// === impl Tee ===

impl Tee {
    /// Adds a chunk; false once the body outgrew the limit.
    fn push(&mut self, data: &Bytes) -> bool {
        if self.buf.len() + data.len() > self.limit {
            tracing::debug!(key = %self.pending.key.key, "response too large to store");
            return false;
        }
        if !self.reserved.grow(data.len() as u64) {
            tracing::debug!(
                key = %self.pending.key.key,
                "too many bytes in copies being filled; not stored"
            );
            return false;
        }
        self.buf.extend_from_slice(data);
        true
    }

    /// Gives up the copy of a response that cannot be stored (too large,
    /// trailers): the collapsed waiters go upstream at once.
    fn give_up(self) {
        collapse::finish(self.leader, Outcome::NotStored);
    }

    fn finish(self) {
        // `reserved` goes with the fields not named below, at the end.
        let Tee {
            store,
            pending,
            buf,
            leader,
            ..
        } = self;
        let key = pending.key.key.clone();
        // The buffer grew by doubling: an entry keeps exactly its body,
        // which is what the store's weight counts.
        let body = if buf.capacity() > buf.len() {
            Bytes::copy_from_slice(&buf)
        } else {
            buf.freeze()
        };
        let stored = store.insert(pending, body);
        tracing::trace!(%key, stored, "cache fill complete");
        // After the insert: waiters find the entry. Not stored (purged or
        // invalidated meanwhile, or refused by the store), they go
        // upstream at once.
        let outcome = if stored {
            Outcome::Stored
        } else {
            Outcome::NotStored
        };
        collapse::finish(leader, outcome);
    }
}
