use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use pin_project_lite::pin_project;

pin_project! {
    /// The request body [`Validate`](super::Validate) forwards: the
    /// original body, untouched and streaming, when no schema applies; the
    /// exact bytes it read otherwise.
    ///
    /// Each variant's one field, `body`, is the body itself.
    // pin-project-lite cannot carry docs on enum fields.
    #[allow(missing_docs)]
    #[project = ValidatedBodyProj]
    #[derive(Debug)]
    pub enum ValidatedBody<B> {
        /// The client's body, not read.
        Original {
            #[pin]
            body: B,
        },
        /// The bytes read and validated, byte for byte as received.
        Buffered {
            #[pin]
            body: Full<Bytes>,
        },
    }
}

impl<B> ValidatedBody<B> {
    /// Wraps a body that was not read.
    pub fn original(body: B) -> Self {
        Self::Original { body }
    }

    /// A body of bytes that were read.
    pub fn buffered(bytes: Bytes) -> Self {
        Self::Buffered {
            body: Full::new(bytes),
        }
    }
}

impl<B> Body for ValidatedBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.project() {
            ValidatedBodyProj::Original { body } => body.poll_frame(cx),
            ValidatedBodyProj::Buffered { body } => match body.poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
                Poll::Ready(Some(Err(never))) => match never {},
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Original { body } => body.is_end_stream(),
            Self::Buffered { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Original { body } => body.size_hint(),
            Self::Buffered { body } => body.size_hint(),
        }
    }
}
