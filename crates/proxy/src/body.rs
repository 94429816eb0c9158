//! A response body that may pause only so long.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use towergate_core::BoxError;
use towergate_core::timer::Sleep;

use crate::error::UpstreamTimeout;

pin_project_lite::pin_project! {
    /// An upstream's response body that fails with
    /// [`UpstreamTimeout`] when no frame comes for `idle` (nginx's
    /// `proxy_read_timeout`, Envoy's stream idle timeout): an upstream
    /// that sent its headers and then stalls would otherwise hold the
    /// client's connection, the upstream's, and whatever limits the
    /// request counted against, for as long as both stay open. The
    /// client's connection is then closed mid-response (HTTP/1.1) or its
    /// stream reset (HTTP/2), as for any upstream failure mid-body.
    ///
    /// A timer is armed at the first pause only (most bodies come whole,
    /// and never arm one), and re-armed when it runs out after frames came:
    /// a pause is caught between `idle` and twice `idle` after it began,
    /// for no timer work per frame.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use std::time::Duration;
    /// use http_body_util::BodyExt;
    /// use towergate_proxy::IdleTimeout;
    ///
    /// let body = IdleTimeout::new(String::from("whole"), Duration::from_secs(60), "svc:80");
    /// assert_eq!(body.collect().await.unwrap().to_bytes(), "whole");
    /// # }
    /// ```
    #[derive(Debug)]
    pub struct IdleTimeout<B> {
        #[pin]
        inner: B,
        idle: Duration,
        upstream: Arc<str>,
        // Armed at the first pause.
        sleep: Option<Sleep>,
        // A frame came since the timer was last armed.
        active: bool,
    }
}

impl<B> IdleTimeout<B> {
    /// `inner`, failing after a pause of `idle`; `upstream` names the
    /// upstream in the error.
    pub fn new(inner: B, idle: Duration, upstream: impl Into<Arc<str>>) -> Self {
        Self {
            inner,
            idle,
            upstream: upstream.into(),
            sleep: None,
            active: false,
        }
    }

    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }
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
                let idle = *this.idle;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| towergate_core::timer::sleep(idle));
                while Pin::new(&mut *sleep).poll(cx).is_ready() {
                    if !std::mem::take(this.active) {
                        return Poll::Ready(Some(Err(Box::new(UpstreamTimeout::body(
                            this.upstream.clone(),
                            idle,
                        )))));
                    }
                    // Frames came since it was armed: another period.
                    let next = sleep.deadline() + idle;
                    sleep.reset(next.max(std::time::Instant::now()));
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
