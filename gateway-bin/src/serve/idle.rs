//! How a connection ends: the graceful shutdown, and an HTTP/2
//! connection's idle timeout.
//!
//! hyper closes an HTTP/1 keep-alive connection that sends no request
//! within the header-read timeout (its timer starts when the previous
//! response is written). An HTTP/2 connection has no such timer: hyper
//! keeps it, with no stream open, for as long as the client answers its
//! pings, and each one holds a connection slot and its buffers. Here a
//! connection counts its open streams (their tasks, spawned by hyper
//! through [`EdgeExecutor`]; a stream's task ends once its response is
//! sent), and [`Guarded`] sends `GOAWAY` once none has been open for
//! `server.http2_idle_timeout`.
//!
//! [`Guarded`] is also the connection's watch for the graceful shutdown:
//! when the shutdown begins, the connection finishes the requests it has
//! (HTTP/1: the one in flight; HTTP/2: the open streams, after `GOAWAY`)
//! and closes. An HTTP/1 connection pays one atomic load per poll for the
//! idle timeout it does not have.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
use hyper_util::server::graceful::GracefulConnection;
use tokio_util::task::TaskTracker;
use towergate_core::timer::{self, Sleep};

/// The origin of the idle stamps.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

fn stamp() -> u64 {
    u64::try_from(EPOCH.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// The gateway's shutdown, as its connections watch it: a flag read at
/// each poll of a connection (one atomic load), and a `Notify` that wakes
/// the connections that wait for their next request.
///
/// Before it, during `server.shutdown_delay`, the gateway drains softly:
/// the listeners still accept, HTTP/1 responses say `Connection: close`
/// (see `EdgeService`), and the HTTP/2 connections open when it began get
/// `GOAWAY` (their open streams finish), so clients move their next
/// requests to new connections, which a load balancer that has seen
/// `/readyz` turn 503 sends elsewhere.
#[derive(Debug, Default)]
pub(crate) struct ShutdownSignal {
    begun: AtomicBool,
    draining: AtomicBool,
    notify: Arc<tokio::sync::Notify>,
}

impl ShutdownSignal {
    /// Every connection finishes what it has and closes.
    pub(crate) fn begin(&self) {
        self.begun.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// The soft drain: the HTTP/2 connections open now get `GOAWAY`.
    pub(crate) fn begin_drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }
}

/// One connection's HTTP/2 streams; see the [module docs](self).
#[derive(Debug, Default)]
pub(crate) struct ConnStreams {
    /// Set once the connection has sent the HTTP/2 preface.
    h2: AtomicBool,
    /// Streams whose task is running.
    open: AtomicUsize,
    /// When the connection last had no stream open: the preface, or the
    /// end of its last stream (nanoseconds since [`EPOCH`]).
    idle_since: AtomicU64,
    /// The connection's task, while streams are open: the end of the last
    /// one (on its own task, maybe another thread) wakes it to arm the
    /// idle deadline.
    waker: AtomicWaker,
}

impl ConnStreams {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The connection speaks HTTP/2: from now on it is idle while no
    /// stream is open.
    pub(crate) fn mark_h2(&self) {
        self.idle_since.store(stamp(), Ordering::Release);
        self.h2.store(true, Ordering::Release);
    }

    #[cfg(test)]
    pub(crate) fn is_h2(&self) -> bool {
        self.h2.load(Ordering::Acquire)
    }

    fn stream_opened(self: &Arc<Self>) -> StreamGuard {
        self.open.fetch_add(1, Ordering::AcqRel);
        StreamGuard(self.clone())
    }

    /// Whether the connection has been idle for `timeout`; arms `idle` (a
    /// deadline, with the idle period it is for) to wake the task then.
    fn idle_expired(
        &self,
        timeout: Duration,
        idle: &mut Option<(u64, Sleep)>,
        cx: &mut Context<'_>,
    ) -> bool {
        if !self.h2.load(Ordering::Acquire) {
            return false;
        }
        if self.open.load(Ordering::Acquire) != 0 {
            // Busy: whatever was armed is for an idle period that ended.
            *idle = None;
            self.waker.register(cx.waker());
            // The last stream may have ended since the load.
            if self.open.load(Ordering::Acquire) != 0 {
                return false;
            }
        }
        // A stream that ended on another thread after this connection's
        // last poll started the idle period then, not now.
        let since = self.idle_since.load(Ordering::Acquire);
        let sleep = match idle {
            Some((armed_for, sleep)) if *armed_for == since => sleep,
            _ => {
                let deadline = *EPOCH + Duration::from_nanos(since) + timeout;
                &mut idle.insert((since, timer::sleep_until(deadline))).1
            }
        };
        Pin::new(sleep).poll(cx).is_ready()
    }
}

/// An open stream; its drop ends it.
struct StreamGuard(Arc<ConnStreams>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        // The stamp goes first: a poll that sees no stream open sees when
        // the last one ended.
        self.0.idle_since.store(stamp(), Ordering::Release);
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.waker.wake();
        }
    }
}

/// hyper's executor at the edge, one per connection: tokio's, with every
/// task it spawns (an HTTP/2 stream's) tracked, so that a shutdown can wait
/// for the streams of the connections it cut off to end (and log their
/// requests), and counted as the connection's open streams. Each stream
/// also runs under a [`FlowWatch`]: see [`StreamFlow`].
#[derive(Clone, Debug)]
pub(crate) struct EdgeExecutor {
    tracker: TaskTracker,
    streams: Arc<ConnStreams>,
    send_timeout: Option<Duration>,
}

impl EdgeExecutor {
    pub(crate) fn new(tracker: TaskTracker, streams: Arc<ConnStreams>) -> Self {
        Self {
            tracker,
            streams,
            send_timeout: None,
        }
    }

    /// Resets a stream whose response the client has let wait for flow
    /// control (no window) this long.
    pub(crate) fn send_timeout(mut self, timeout: Duration) -> Self {
        self.send_timeout = Some(timeout);
        self
    }
}

impl<F> hyper::rt::Executor<F> for EdgeExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        let open = self.streams.stream_opened();
        let Some(timeout) = self.send_timeout else {
            self.tracker.spawn(async move {
                let out = fut.await;
                drop(open);
                out
            });
            return;
        };
        let flow = Arc::new(StreamFlow::default());
        let watched = FlowWatch {
            fut,
            flow: flow.clone(),
            timeout,
            armed: None,
        };
        self.tracker.spawn(STREAM_FLOW.scope(flow, async move {
            if watched.await.is_none() {
                tracing::debug!(
                    ?timeout,
                    "HTTP/2 stream: the client gave no flow-control window for the send timeout; reset"
                );
            }
            drop(open);
        }));
    }
}

tokio::task_local! {
    /// The [`StreamFlow`] of the HTTP/2 stream whose task this is.
    static STREAM_FLOW: Arc<StreamFlow>;
}

/// Whether an HTTP/2 stream's response waits for the client's
/// flow-control window.
///
/// A connection-level write timeout (`server.send_timeout`, see
/// `opening`) does not see a client that keeps its connection moving but
/// leaves one stream's window shut: hyper then waits for window before it
/// polls the response body again, for ever, and the stream holds its
/// upstream connection meanwhile (a client could hold a whole pool with a
/// few connections of 200 such streams). The response body
/// ([`StreamFlow::delivered`]) marks when it handed hyper a frame, and
/// its next poll ([`StreamFlow::polled`]) clears the mark: a mark older
/// than the send timeout means hyper has waited that long to send it, and
/// [`FlowWatch`] drops the stream (h2 resets it). A body waiting for its
/// upstream is not marked: that is the upstream's timeouts' business.
#[derive(Debug, Default)]
pub(crate) struct StreamFlow {
    /// When the last frame was handed over, if the body has not been
    /// polled since (nanoseconds since [`EPOCH`]; 0: not waiting).
    waiting_since: AtomicU64,
}

impl StreamFlow {
    /// The current stream's, on an HTTP/2 stream's task.
    pub(crate) fn current() -> Option<Arc<Self>> {
        STREAM_FLOW.try_with(Arc::clone).ok()
    }

    /// The body is polled: hyper had window for what it last got.
    pub(crate) fn polled(&self) {
        self.waiting_since.store(0, Ordering::Relaxed);
    }

    /// The body handed hyper a frame.
    pub(crate) fn delivered(&self) {
        self.waiting_since.store(stamp().max(1), Ordering::Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// A stream's task, dropped (`None`) once its response has waited for
    /// flow control for the timeout; see [`StreamFlow`].
    struct FlowWatch<F> {
        #[pin]
        fut: F,
        flow: Arc<StreamFlow>,
        timeout: Duration,
        // The deadline, with the wait it is for.
        armed: Option<(u64, Sleep)>,
    }
}

impl<F: Future> Future for FlowWatch<F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(out) = this.fut.poll(cx) {
            return Poll::Ready(Some(out));
        }
        let since = this.flow.waiting_since.load(Ordering::Relaxed);
        if since == 0 {
            *this.armed = None;
            return Poll::Pending;
        }
        let sleep = match this.armed {
            Some((armed_for, sleep)) if *armed_for == since => sleep,
            _ => {
                let deadline = *EPOCH + Duration::from_nanos(since) + *this.timeout;
                &mut this.armed.insert((since, timer::sleep_until(deadline))).1
            }
        };
        match Pin::new(sleep).poll(cx) {
            Poll::Ready(()) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

pin_project_lite::pin_project! {
    /// A connection, closed gracefully when the shutdown begins or when it
    /// has been idle (HTTP/2, no stream open) for `idle_timeout`.
    pub(crate) struct Guarded<C> {
        #[pin]
        conn: C,
        signal: Arc<ShutdownSignal>,
        // Registered with the signal's `Notify` at the first poll. A
        // connection's task keeps its waker, so the registration holds:
        // later polls read the flag only (one load, where polling the
        // `Notified` again would take its lock each time).
        #[pin]
        woken: tokio::sync::futures::OwnedNotified,
        registered: bool,
        streams: Arc<ConnStreams>,
        idle_timeout: Duration,
        idle: Option<(u64, Sleep)>,
        closing: bool,
        // Opened during the soft drain: served until the shutdown begins
        // (a `GOAWAY` at once would leave its client nowhere to go).
        born_draining: bool,
    }
}

impl<C> Guarded<C> {
    pub(crate) fn new(
        conn: C,
        signal: Arc<ShutdownSignal>,
        streams: Arc<ConnStreams>,
        idle_timeout: Duration,
    ) -> Self {
        let woken = Arc::clone(&signal.notify).notified_owned();
        let born_draining = signal.draining.load(Ordering::Acquire);
        Self {
            conn,
            signal,
            woken,
            registered: false,
            streams,
            idle_timeout,
            idle: None,
            closing: false,
            born_draining,
        }
    }
}

impl<C> Future for Guarded<C>
where
    C: GracefulConnection,
{
    type Output = C::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if !*this.closing {
            if !*this.registered {
                // Registers this task's waker (the flag below covers a
                // shutdown that began before).
                let _ = this.woken.as_mut().poll(cx);
                *this.registered = true;
            }
            let drain_h2 = !*this.born_draining
                && this.signal.draining.load(Ordering::Acquire)
                && this.streams.h2.load(Ordering::Acquire);
            if this.signal.begun.load(Ordering::Acquire) || drain_h2 {
                *this.closing = true;
                *this.idle = None;
                this.conn.as_mut().graceful_shutdown();
            }
        }
        loop {
            let polled = this.conn.as_mut().poll(cx);
            // After the connection's poll, which may have read the
            // preface, or opened or ended streams.
            // (The HTTP/2 flag first, inline: an HTTP/1 connection pays a
            // load.)
            if polled.is_ready()
                || *this.closing
                || !this.streams.h2.load(Ordering::Acquire)
                || !this.streams.idle_expired(*this.idle_timeout, this.idle, cx)
            {
                return polled;
            }
            tracing::debug!(timeout = ?this.idle_timeout, "HTTP/2 connection idle: closing it (GOAWAY)");
            *this.closing = true;
            *this.idle = None;
            // Polled again to write the GOAWAY.
            this.conn.as_mut().graceful_shutdown();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use super::*;

    #[tokio::test]
    async fn idle_only_after_the_preface_and_while_no_stream_is_open() {
        let streams = ConnStreams::new();
        let mut idle = None;
        let mut cx = Context::from_waker(Waker::noop());
        let short = Duration::from_millis(20);

        // HTTP/1 (no preface): never idle in this sense.
        assert!(!streams.idle_expired(Duration::ZERO, &mut idle, &mut cx));
        assert!(idle.is_none());

        streams.mark_h2();
        let open = streams.stream_opened();
        tokio::time::sleep(short * 2).await;
        assert!(!streams.idle_expired(short, &mut idle, &mut cx));
        assert!(idle.is_none(), "nothing armed while a stream is open");

        drop(open);
        assert!(!streams.idle_expired(short, &mut idle, &mut cx));
        let (armed_for, _) = idle.as_ref().expect("armed once idle");
        let first = *armed_for;
        tokio::time::sleep(short * 2).await;
        assert!(streams.idle_expired(short, &mut idle, &mut cx));

        // A new stream, ended: a new idle period, a new deadline.
        drop(streams.stream_opened());
        assert!(!streams.idle_expired(short, &mut idle, &mut cx));
        assert_ne!(idle.as_ref().map(|(s, _)| *s), Some(first));
    }
}
