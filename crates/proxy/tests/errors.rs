//! Failures: typed errors, the right problem status, nothing leaked.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get as get_route;
use bytes::Bytes;
use futures_util::stream;
use http_body::Frame;
use http_body_util::StreamBody;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use towergate_core::{BoxError, RequestId, cause_ref};
use towergate_proxy::error::{RequestBodyFailed, UpstreamTimeout, UpstreamUnavailable, to_problem};
use towergate_proxy::{Client, Proxy};
use towergate_test::{echo_router, spawn_upstream};

use common::{call, call_err, dead_port, get};

#[tokio::test]
async fn upstream_down_is_unavailable_and_502() {
    let port = dead_port().await;
    let proxy = Proxy::builder(format!("http://{port}")).build().unwrap();
    let mut req = get("/");
    req.extensions_mut().insert(RequestId("req-1".into()));
    let err = call_err(&proxy, req).await;

    let unavailable = cause_ref::<UpstreamUnavailable>(&*err).unwrap();
    assert!(unavailable.is_connect());
    assert_eq!(unavailable.upstream(), port.to_string());
    assert!(err.source().is_some(), "the cause is kept for the logs");

    let problem = to_problem(&*err);
    assert_eq!(problem.status(), 502);
    assert_eq!(problem.to_json()["title"], "Bad Gateway");
    let detail = problem.detail_text().unwrap();
    assert!(!detail.contains("refused") && !detail.contains(&port.port().to_string()));
}

#[tokio::test]
async fn slow_upstream_times_out_with_504() {
    let app = Router::new().route(
        "/slow",
        get_route(|| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            "too late"
        }),
    );
    let up = spawn_upstream(app).await;
    let proxy = Proxy::builder(up.url())
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let started = Instant::now();
    let err = call_err(&proxy, get("/slow")).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    let timeout = cause_ref::<UpstreamTimeout>(&*err).unwrap();
    assert!(!timeout.is_connect());
    assert_eq!(to_problem(&*err).status(), 504);
}

/// A server that accepts TCP connections and never reads or answers.
async fn accept_and_hold() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    (addr, server)
}

/// The error of a request to an upstream whose TLS handshake never
/// finishes, with the proxy's `connect_timeout` and `timeout`, and how long
/// it took.
async fn stalled_handshake(connect: Duration, timeout: Duration) -> (BoxError, Duration) {
    let (addr, _server) = accept_and_hold().await;
    let client = Client::builder().connect_timeout(connect).build().unwrap();
    let proxy = Proxy::builder(format!("https://localhost:{}", addr.port()))
        .client(client)
        .timeout(timeout)
        .build()
        .unwrap();
    let started = Instant::now();
    let err = call_err(&proxy, get("/")).await;
    (err, started.elapsed())
}

#[tokio::test]
async fn stalled_tls_handshake_is_a_connect_timeout() {
    // Accepts TCP connections and never answers: the TLS handshake stalls.
    let (err, took) = stalled_handshake(Duration::from_millis(200), Duration::from_secs(10)).await;
    assert!(took < Duration::from_secs(5));
    let timeout = cause_ref::<UpstreamTimeout>(&*err).unwrap();
    assert!(timeout.is_connect(), "{err}");
    assert_eq!(to_problem(&*err).status(), 504);
}

#[tokio::test]
async fn a_response_timeout_while_still_connecting_is_a_connect_timeout() {
    // The route's timeout runs out before the (longer) connect timeout,
    // while the connection is still being made: here a TLS handshake that
    // never finishes, standing in for an endpoint that drops SYNs. Nothing
    // was sent, so it is a connect timeout, which balancers may retry on
    // another endpoint.
    let (err, took) = stalled_handshake(Duration::from_secs(5), Duration::from_millis(200)).await;
    assert!(took < Duration::from_secs(3));
    let timeout = cause_ref::<UpstreamTimeout>(&*err).unwrap();
    assert!(timeout.is_connect(), "{err}");
    assert_eq!(timeout.after(), Some(Duration::from_millis(200)));
    assert_eq!(to_problem(&*err).status(), 504);
}

#[tokio::test]
async fn upstream_closing_without_answer_is_unavailable() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _server = tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = tcp.read(&mut buf).await;
            drop(tcp);
        }
    });
    let proxy = Proxy::builder(format!("http://{addr}")).build().unwrap();
    let err = call_err(&proxy, get("/")).await;
    let unavailable = cause_ref::<UpstreamUnavailable>(&*err).unwrap();
    assert!(!unavailable.is_connect(), "the connection was made");
    assert_eq!(to_problem(&*err).status(), 502);
}

#[tokio::test]
async fn failing_request_body_is_not_blamed_on_the_upstream() {
    let up = spawn_upstream(echo_router("svc")).await;
    let proxy = Proxy::builder(up.url()).build().unwrap();
    let frames = stream::iter([
        Ok(Frame::data(Bytes::from_static(b"partial"))),
        Err::<Frame<Bytes>, BoxError>("client went away".into()),
    ]);
    let req = http::Request::post("/upload")
        .body(StreamBody::new(frames))
        .unwrap();
    let err = call_err(&proxy, req).await;
    assert!(cause_ref::<RequestBodyFailed>(&*err).is_some(), "{err:?}");
    assert!(cause_ref::<UpstreamUnavailable>(&*err).is_none());
    assert_eq!(to_problem(&*err).status(), 502);
}

#[tokio::test]
async fn failing_request_body_over_http2_is_not_blamed_on_the_upstream() {
    // Over HTTP/2 hyper only resets the stream when the body fails; the
    // reset alone would read as the upstream's failure (502, counted
    // against a healthy endpoint).
    let up = spawn_upstream(echo_router("svc")).await;
    let client = Client::builder().http2_only(true).build().unwrap();
    let proxy = Proxy::builder(up.url()).client(client).build().unwrap();
    let frames = stream::iter([
        Ok(Frame::data(Bytes::from_static(b"partial"))),
        Err::<Frame<Bytes>, BoxError>("client went away".into()),
    ]);
    let req = http::Request::post("/upload")
        .body(StreamBody::new(frames))
        .unwrap();
    let err = call_err(&proxy, req).await;
    assert!(cause_ref::<RequestBodyFailed>(&*err).is_some(), "{err:?}");
    assert!(cause_ref::<UpstreamUnavailable>(&*err).is_none());
}

#[tokio::test]
async fn a_body_over_its_limit_keeps_its_cause_over_both_protocols() {
    // The gateway answers 413 when a LengthLimitError is in the chain.
    let up = spawn_upstream(echo_router("svc")).await;
    for http2 in [false, true] {
        let client = Client::builder().http2_only(http2).build().unwrap();
        let proxy = Proxy::builder(up.url()).client(client).build().unwrap();
        let frames = stream::iter([
            Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"12345678"))),
            Ok(Frame::data(Bytes::from_static(b"12345678"))),
        ]);
        let req = http::Request::post("/upload")
            .body(http_body_util::Limited::new(StreamBody::new(frames), 10))
            .unwrap();
        let err = call_err(&proxy, req).await;
        assert!(
            cause_ref::<RequestBodyFailed>(&*err).is_some(),
            "{http2}: {err:?}"
        );
        assert!(
            towergate_core::is_caused_by::<http_body_util::LengthLimitError>(&*err),
            "{http2}: {err:?}"
        );
    }
}

/// A body whose second half comes `pause` after the first, then ends.
fn slow_body(pause: Duration) -> impl http_body::Body<Data = Bytes, Error = BoxError> {
    let frames = stream::unfold(0, move |step| async move {
        match step {
            0 => Some((Ok(Frame::data(Bytes::from_static(b"first half "))), 1)),
            1 => {
                tokio::time::sleep(pause).await;
                Some((Ok(Frame::data(Bytes::from_static(b"second half"))), 2))
            }
            _ => None,
        }
    });
    StreamBody::new(frames)
}

#[tokio::test]
async fn a_slow_upload_is_the_clients_408_not_the_upstreams_504() {
    // The timeout is the upstream's time to answer, counted from the end
    // of the request body: a client that stalls its upload is not a slow
    // upstream (which would count against it in health and breakers).
    let up = spawn_upstream(echo_router("svc")).await;
    let proxy = Proxy::builder(up.url())
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let req = http::Request::post("/upload")
        .body(slow_body(Duration::from_secs(30)))
        .unwrap();
    let err = call_err(&proxy, req).await;
    let failed = cause_ref::<RequestBodyFailed>(&*err).unwrap();
    assert!(failed.is_timeout(), "{err:?}");
    assert!(cause_ref::<UpstreamTimeout>(&*err).is_none());
    assert_eq!(to_problem(&*err).status(), 408);
}

#[tokio::test]
async fn an_upstream_that_stops_reading_the_body_is_the_upstreams_504() {
    // The endpoint accepts and never reads: the body stops being sent
    // because the upstream does not take it, not because the client is
    // slow. That is the upstream's timeout (504, counted against it).
    let (addr, _server) = accept_and_hold().await;
    let proxy = Proxy::builder(format!("http://{addr}"))
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    // 1 GiB, made as it is read: far more than the socket buffers hold.
    let chunks = stream::iter(
        (0..16 * 1024).map(|_| Ok::<_, BoxError>(Frame::data(Bytes::from(vec![b'x'; 64 * 1024])))),
    );
    let req = http::Request::post("/upload")
        .body(StreamBody::new(chunks))
        .unwrap();
    let err = call_err(&proxy, req).await;
    assert!(cause_ref::<UpstreamTimeout>(&*err).is_some(), "{err:?}");
    assert_eq!(to_problem(&*err).status(), 504);
}

#[tokio::test]
async fn the_response_timeout_counts_from_the_end_of_the_body() {
    // The body ends 1.2 s in and the upstream answers 1 s after it: 2.2 s
    // after the start, within 2 s of the body's end. Counted from the
    // start, the 2 s timeout would have cut it off.
    let app = Router::new().route(
        "/upload",
        axum::routing::post(|body: Bytes| async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            body
        }),
    );
    let up = spawn_upstream(app).await;
    let proxy = Proxy::builder(up.url())
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let req = http::Request::post("/upload")
        .body(slow_body(Duration::from_millis(1200)))
        .unwrap();
    let rsp = tower::ServiceExt::oneshot(proxy, req).await.unwrap();
    assert_eq!(rsp.status(), 200);
    let body = http_body_util::BodyExt::collect(rsp.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(&body[..], b"first half second half");
}

#[tokio::test]
async fn errors_display_what_happened() {
    let port = dead_port().await;
    let proxy = Proxy::builder(format!("http://{port}")).build().unwrap();
    let err = call_err(&proxy, get("/")).await;
    assert_eq!(
        err.to_string(),
        format!("could not connect to upstream {port}")
    );
}

/// An upstream that answers every request on a connection with `answer`.
async fn raw_upstream(answer: &'static [u8]) -> std::net::SocketAddr {
    use tokio::io::AsyncWriteExt;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while matches!(tcp.read(&mut buf).await, Ok(n) if n > 0) {
                    if tcp.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A chunked answer that also says `Content-Length`: the length is not the
/// body's and must not reach the client (it would read 10 bytes and take
/// the rest for the next answer); every byte arrives.
#[tokio::test]
async fn a_content_length_beside_chunked_is_dropped() {
    use http_body_util::BodyExt;
    let addr = raw_upstream(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 10\r\n\r\n\
          1e\r\n0123456789abcdefghijklmnopqrst\r\n0\r\n\r\n",
    )
    .await;
    let proxy = Proxy::builder(format!("http://{addr}")).build().unwrap();
    for _ in 0..2 {
        let rsp = call(&proxy, get("/")).await;
        assert!(rsp.headers().get("content-length").is_none());
        assert!(rsp.headers().get("transfer-encoding").is_none());
        let body = rsp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"0123456789abcdefghijklmnopqrst");
    }
}

/// A transfer coding besides `chunked` leaves bytes no header describes
/// once hyper has undone the chunking: the upstream's failure, 502.
#[tokio::test]
async fn a_transfer_coding_other_than_chunked_is_a_502() {
    let addr = raw_upstream(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n\
          3\r\nabc\r\n0\r\n\r\n",
    )
    .await;
    let proxy = Proxy::builder(format!("http://{addr}")).build().unwrap();
    let err = call_err(&proxy, get("/")).await;
    assert!(cause_ref::<UpstreamUnavailable>(&*err).is_some(), "{err:?}");
    assert_eq!(to_problem(&*err).status(), 502);
}
