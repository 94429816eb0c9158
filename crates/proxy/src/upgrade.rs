//! Tunnelling an upgraded connection (WebSocket or any `Upgrade`) between
//! the client and the upstream once the upstream has answered 101.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use towergate_core::{ConnectionLease, RequestId, TunnelHold};

/// Copies bytes both ways between the two upgraded connections, in a task
/// of its own: the 101 response must reach the client first, since hyper
/// hands over the client's connection only after writing it.
pub(crate) fn spawn_tunnel(
    client: OnUpgrade,
    upstream: OnUpgrade,
    upstream_name: Arc<str>,
    request_id: Option<RequestId>,
    lease: (Option<ConnectionLease>, TunnelHold),
    idle_timeout: Option<Duration>,
) {
    match tokio::runtime::Handle::try_current() {
        // Spawning boxes the task; that is the one allocation of the
        // upgrade path and it lives as long as the tunnel.
        Ok(runtime) => {
            runtime.spawn(async move {
                // The client's connection stays counted (and limited) as
                // long as the tunnel that took it over, and so does the
                // request in the limits of the layers outside.
                let _lease = lease;
                tunnel(client, upstream, upstream_name, request_id, idle_timeout).await;
            });
        }
        Err(_) => tracing::warn!(
            upstream = %upstream_name,
            request_id = request_id.as_ref().map(|id| id.as_str()),
            "no tokio runtime to run the upgraded connection on"
        ),
    }
}

async fn tunnel(
    client: OnUpgrade,
    upstream: OnUpgrade,
    upstream_name: Arc<str>,
    request_id: Option<RequestId>,
    idle_timeout: Option<Duration>,
) {
    let request_id = request_id.as_ref().map(|id| id.as_str());
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(both) => both,
        Err(error) => {
            tracing::warn!(
                upstream = %upstream_name,
                request_id,
                %error,
                "upgrade failed: could not take over both connections"
            );
            return;
        }
    };
    let activity = Activity::new();
    let mut client = Active::new(TokioIo::new(client), &activity);
    let mut upstream = Active::new(TokioIo::new(upstream), &activity);
    let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
    let copied = match idle_timeout {
        None => copy.await,
        Some(idle) => {
            tokio::select! {
                done = copy => done,
                () = activity.idle_for(idle) => {
                    tracing::debug!(
                        upstream = %upstream_name,
                        request_id,
                        idle = ?idle,
                        "upgraded connection closed: idle"
                    );
                    return;
                }
            }
        }
    };
    match copied {
        Ok((from_client, from_upstream)) => tracing::debug!(
            upstream = %upstream_name,
            request_id,
            from_client,
            from_upstream,
            "upgraded connection closed"
        ),
        Err(error) => tracing::warn!(
            upstream = %upstream_name,
            request_id,
            %error,
            "upgraded connection failed"
        ),
    }
}

/// When a tunnel last moved a byte, either way.
#[derive(Clone)]
struct Activity {
    start: Instant,
    /// Milliseconds from `start` to the last byte moved.
    last: Arc<AtomicU64>,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }

    /// Completes once nothing has moved for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last.load(Ordering::Relaxed));
            // A timeout too long to be a point in time is no timeout.
            let Some(due) = last.checked_add(idle) else {
                return std::future::pending().await;
            };
            if Instant::now() >= due {
                return;
            }
            tokio::time::sleep_until(due).await;
        }
    }
}

/// One side of a tunnel, recording its progress in the tunnel's
/// [`Activity`].
struct Active<I> {
    io: I,
    activity: Activity,
}

impl<I> Active<I> {
    fn new(io: I, activity: &Activity) -> Self {
        Self {
            io,
            activity: activity.clone(),
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Active<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Active<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
