//! A response body that may pause only so long.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body::{Body, Frame, SizeHint};
use towergate_core::BoxError;
use towergate_core::timer::Sleep;

use crate::error::UpstreamTimeout;

/// The body of a [`Proxy`](crate::Proxy)'s responses: the upstream's, with
/// the proxy's [`body_idle_timeout`](crate::ProxyBuilder::body_idle_timeout).
pub type ResponseBody = IdleTimeout<hyper::body::Incoming>;

pin_project_lite::pin_project! {
    /// A response body that fails with [`UpstreamTimeout`] when no frame
    /// comes for `idle` (nginx's `proxy_read_timeout`, Envoy's stream idle
    /// timeout): an upstream that sent its headers and then stalls would
    /// otherwise hold the client's connection, the upstream's, and
    /// whatever limits the request counted against, for as long as both
    /// stay open. The client's connection is then closed mid-response
    /// (HTTP/1.1) or its stream reset (HTTP/2), as for any upstream failure
    /// mid-body.
    ///
    /// No timer work per frame: a frame only marks the body active. The
    /// proxy hands over the timer it armed for the response headers (so a
    /// response costs no second timer), and the body arms one at its first
    /// pause when there was none; when it runs out, an active body gets
    /// another `idle`, an inactive one fails. A pause is caught between
    /// `idle` and twice `idle` after it began (plus, the first time, what
    /// was left of the response timeout).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use std::time::Duration;
    /// use http_body_util::BodyExt;
    /// use towergate_proxy::IdleTimeout;
    ///
    /// let body = IdleTimeout::new(String::from("whole"), Some(Duration::from_secs(60)), "svc:80");
    /// assert_eq!(body.collect().await.unwrap().to_bytes(), "whole");
    /// # }
    /// ```
    #[derive(Debug)]
    pub struct IdleTimeout<B> {
        #[pin]
        inner: B,
        idle: Option<Duration>,
        upstream: Arc<str>,
        sleep: Option<Sleep>,
        // A frame came since the timer was last armed.
        active: bool,
        // The timer runs to a deadline that was not set from `idle` (the
        // response timeout's): its end says nothing of a pause.
        borrowed: bool,
    }
}

impl<B> IdleTimeout<B> {
    /// `inner`, failing after a pause of `idle` (`None`: never); `upstream`
    /// names the upstream in the error.
    pub fn new(inner: B, idle: Option<Duration>, upstream: impl Into<Arc<str>>) -> Self {
        Self {
            inner,
            idle,
            upstream: upstream.into(),
            sleep: None,
            active: false,
            borrowed: false,
        }
    }

    /// With a timer already armed (the response timeout's, of `armed_for`
    /// from when it was armed), reused for the first period instead of a
    /// new one when it runs out no later than `idle` from now.
    pub(crate) fn with_timer(
        inner: B,
        idle: Option<Duration>,
        upstream: Arc<str>,
        sleep: Option<Sleep>,
        armed_for: Duration,
    ) -> Self {
        let mut sleep = idle.and(sleep);
        let mut borrowed = true;
        if let (Some(s), Some(idle)) = (&mut sleep, idle)
            && armed_for > idle
        {
            // It would first run out too late to catch a pause in time.
            s.reset(deadline_after(idle));
            borrowed = false;
        }
        Self {
            inner,
            idle,
            upstream,
            // Without an idle timeout the timer is of no use: disarmed here.
            sleep,
            active: false,
            borrowed,
        }
    }

    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }

    /// The wrapped body, unwrapped.
    pub fn into_inner(self) -> B {
        self.inner
    }
}

/// When a pause of `idle` from now runs out. A library user may pass a
/// duration no `Instant` can hold (`Duration::MAX` for "never"): adding it
/// would panic, so it becomes a deadline decades away, which is never in
/// practice (as `towergate_core::timer::sleep` does).
fn deadline_after(idle: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(idle)
        .or_else(|| now.checked_add(Duration::from_secs(86_400 * 365 * 30)))
        .unwrap_or(now)
}

impl<B> Body for IdleTimeout<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(frame) => {
                *this.active = true;
                Poll::Ready(frame.map(|r| r.map_err(Into::into)))
            }
            Poll::Pending => {
                let Some(idle) = *this.idle else {
                    return Poll::Pending;
                };
                let sleep = this.sleep.get_or_insert_with(|| {
                    *this.borrowed = false;
                    towergate_core::timer::sleep(idle)
                });
                while Pin::new(&mut *sleep).poll(cx).is_ready() {
                    let active = std::mem::take(this.active);
                    if !active && !std::mem::take(this.borrowed) {
                        return Poll::Ready(Some(Err(Box::new(UpstreamTimeout::body(
                            this.upstream.clone(),
                            idle,
                        )))));
                    }
                    // Frames came since it was armed, or it was the response
                    // timeout's: another period.
                    *this.borrowed = false;
                    sleep.reset(deadline_after(idle));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
