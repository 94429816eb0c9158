//! The first bytes of a connection, before hyper's own timers apply.
//!
//! hyper-util's `auto` connection first reads enough bytes to tell an
//! HTTP/2 preface from an HTTP/1 request, with no deadline: a client that
//! connects (or finishes a TLS handshake) and then sends nothing, or a
//! single `P`, would hold a connection slot for ever. hyper's HTTP/1
//! `header_read_timeout` only starts once that choice is made. And
//! `http1_only` does not apply to connections served with upgrades, so an
//! HTTP/1-only listener would still speak HTTP/2 to a client that sends the
//! preface.
//!
//! [`Opening`] wraps the stream until the preface's length has been read:
//! those bytes must come within the header-read timeout, and on an
//! HTTP/1-only listener a connection that starts like the preface (`PRI`) is
//! refused. After that it only passes calls through.
//!
//! For the whole life of the connection it also bounds how long a write
//! may stay blocked ([`Opening::send_timeout`], `server.send_timeout`, as
//! nginx's `send_timeout`): hyper has no write timeout, and a client that
//! stops reading (a zero TCP window, which the kernel keeps alive for
//! ever) would otherwise hold its connection slot, and the upstream
//! connection its response comes from, for as long as it likes.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use towergate_core::timer::Sleep;

use super::idle::ConnStreams;

/// The HTTP/2 connection preface's length: what `auto` reads at most to
/// choose the protocol.
const PREFACE_LEN: usize = 24;

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const PREFACE: &[u8; PREFACE_LEN] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pin_project_lite::pin_project! {
    /// A connection's stream, with a deadline on its first bytes; see the
    /// [module docs](self).
    pub(crate) struct Opening<I> {
        #[pin]
        io: I,
        // Until the preface's length has been read.
        deadline: Option<Sleep>,
        read: usize,
        first: [u8; PREFACE_LEN],
        http2: bool,
        // Told when the connection turns out to speak HTTP/2.
        on_http2: Option<Arc<ConnStreams>>,
        // How long a write may stay blocked, and since when one is.
        send_timeout: Option<Duration>,
        stalled: Option<Sleep>,
    }
}

impl<I> Opening<I> {
    /// `io`, whose first bytes must arrive within `timeout`; `http2`:
    /// whether the listener speaks HTTP/2.
    pub(crate) fn new(io: I, timeout: Duration, http2: bool) -> Self {
        Self {
            io,
            deadline: Some(towergate_core::timer::sleep(timeout)),
            read: 0,
            first: [0; PREFACE_LEN],
            http2,
            on_http2: None,
            send_timeout: None,
            stalled: None,
        }
    }

    /// Fails a write (and so the connection) that the peer has let stay
    /// blocked for `timeout`: it takes no byte at all for that long.
    pub(crate) fn send_timeout(mut self, timeout: Duration) -> Self {
        self.send_timeout = Some(timeout);
        self
    }

    /// Marks `streams` as HTTP/2's when the preface arrives (for the idle
    /// timeout, see [`super::idle`]).
    pub(crate) fn on_http2(mut self, streams: Arc<ConnStreams>) -> Self {
        self.on_http2 = Some(streams);
        self
    }
}

impl<I: AsyncRead> AsyncRead for Opening<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let Some(deadline) = this.deadline.as_mut() else {
            return this.io.poll_read(cx, buf);
        };
        let before = buf.filled().len();
        match this.io.poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                for (i, &b) in new.iter().enumerate() {
                    match this.first.get_mut(*this.read + i) {
                        Some(slot) => *slot = b,
                        None => break,
                    }
                }
                *this.read += new.len();
                if !*this.http2 && *this.read >= 3 && this.first.starts_with(b"PRI") {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "HTTP/2 preface on an HTTP/1-only listener",
                    )));
                }
                // The whole preface, as hyper-util tells the protocols
                // apart: `PRINT / HTTP/1.1` stays HTTP/1's.
                if *this.read >= PREFACE_LEN
                    && this.first == PREFACE
                    && let Some(streams) = this.on_http2.take()
                {
                    streams.mark_h2();
                }
                if *this.read >= PREFACE_LEN || new.is_empty() {
                    *this.deadline = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match Pin::new(deadline).poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no request within the header-read timeout",
                ))),
                Poll::Pending => Poll::Pending,
            },
            other => other,
        }
    }
}

impl<I: AsyncWrite> AsyncWrite for Opening<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let done = this.io.poll_write(cx, buf);
        watch_stall(done, *this.send_timeout, this.stalled, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let done = this.io.poll_write_vectored(cx, bufs);
        watch_stall(done, *this.send_timeout, this.stalled, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let done = this.io.poll_flush(cx);
        watch_stall(done, *this.send_timeout, this.stalled, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let done = this.io.poll_shutdown(cx);
        watch_stall(done, *this.send_timeout, this.stalled, cx)
    }
}

/// A write's outcome, or, while it stays blocked, a `TimedOut` error once
/// it has been for `timeout`. Any progress (or error) ends the stall: the
/// timer only runs while the peer takes nothing.
fn watch_stall<T>(
    done: Poll<io::Result<T>>,
    timeout: Option<Duration>,
    stalled: &mut Option<Sleep>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<T>> {
    let Some(timeout) = timeout else {
        return done;
    };
    if done.is_ready() {
        *stalled = None;
        return done;
    }
    let sleep = stalled.get_or_insert_with(|| towergate_core::timer::sleep(timeout));
    match Pin::new(sleep).poll(cx) {
        Poll::Ready(()) => {
            *stalled = None;
            Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client took no byte within the send timeout",
            )))
        }
        Poll::Pending => Poll::Pending,
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    use super::*;

    #[tokio::test]
    async fn silence_times_out() {
        let (_client, server) = duplex(64);
        let mut s = Opening::new(server, Duration::from_millis(50), true);
        let mut buf = [0u8; 8];
        let err = s.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn a_partial_preface_times_out_then_a_prompt_request_passes() {
        let (mut client, server) = duplex(64);
        let mut s = Opening::new(server, Duration::from_millis(50), true);
        client.write_all(b"P").await.unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(s.read(&mut buf).await.unwrap(), 1);
        assert_eq!(
            s.read(&mut buf).await.unwrap_err().kind(),
            io::ErrorKind::TimedOut
        );

        let (mut client, server) = duplex(256);
        let mut s = Opening::new(server, Duration::from_millis(50), false);
        let req = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        client.write_all(req).await.unwrap();
        let mut got = vec![0u8; req.len()];
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(got, req);
        // Past the preface's length: no deadline any more.
        tokio::time::sleep(Duration::from_millis(100)).await;
        client.write_all(b"x").await.unwrap();
        assert_eq!(s.read(&mut buf).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn only_the_whole_preface_marks_a_connection_http2() {
        for (bytes, h2) in [
            (&b"PRINT / HTTP/1.1\r\nHost: a\r\n\r\n"[..], false),
            (&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..], true),
        ] {
            let streams = ConnStreams::new();
            let (mut client, server) = duplex(64);
            let mut s =
                Opening::new(server, Duration::from_secs(5), true).on_http2(streams.clone());
            client.write_all(bytes).await.unwrap();
            let mut buf = vec![0u8; bytes.len()];
            s.read_exact(&mut buf).await.unwrap();
            assert_eq!(streams.is_h2(), h2, "{:?}", String::from_utf8_lossy(bytes));
        }
    }

    #[tokio::test]
    async fn the_preface_is_refused_on_an_http1_listener() {
        for chunks in [
            &[&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..]][..],
            &[b"PR", b"I *"],
        ] {
            let (mut client, server) = duplex(64);
            let mut s = Opening::new(server, Duration::from_secs(5), false);
            let mut buf = [0u8; 64];
            let mut result = Ok(0);
            for c in chunks {
                client.write_all(c).await.unwrap();
                result = s.read(&mut buf).await;
                if result.is_err() {
                    break;
                }
            }
            assert_eq!(result.unwrap_err().kind(), io::ErrorKind::InvalidData);
        }
        let (mut client, server) = duplex(64);
        let mut s = Opening::new(server, Duration::from_secs(5), true);
        client.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(s.read(&mut buf).await.unwrap(), 16);
    }

    #[tokio::test]
    async fn a_write_the_peer_leaves_blocked_times_out_and_progress_resets_it() {
        // A pipe of 16 bytes that the client never reads: the second
        // write blocks, and fails after the send timeout.
        let (mut client, server) = duplex(16);
        let mut s = Opening::new(server, Duration::from_secs(5), true)
            .send_timeout(Duration::from_millis(100));
        s.write_all(&[b'x'; 16]).await.unwrap();
        let err = s.write_all(b"more").await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);

        // A slow reader that keeps taking bytes is not cut: each read
        // ends the stall, however long the whole transfer takes.
        let (mut client2, server) = duplex(16);
        let mut s = Opening::new(server, Duration::from_secs(5), true)
            .send_timeout(Duration::from_millis(150));
        let reader = tokio::spawn(async move {
            let mut got = 0;
            let mut buf = [0u8; 16];
            while got < 160 {
                tokio::time::sleep(Duration::from_millis(40)).await;
                got += client2.read(&mut buf).await.unwrap();
            }
            got
        });
        s.write_all(&[b'y'; 160]).await.unwrap();
        assert_eq!(reader.await.unwrap(), 160);
        // Without a send timeout a blocked write just waits.
        let (_c, server) = duplex(4);
        let mut s = Opening::new(server, Duration::from_secs(5), true);
        s.write_all(b"1234").await.unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(200), s.write_all(b"5"))
                .await
                .is_err()
        );
        drop(client.read(&mut [0u8; 1]).await);
    }
}
