//! Bodies stream through the proxy both ways, unbuffered.
#![allow(clippy::unwrap_used)]

mod common;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::routing::{get as get_route, post};
use bytes::Bytes;
use futures_util::stream;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use serde_json::json;
use tokio::sync::mpsc;
use towergate_proxy::Proxy;
use towergate_test::spawn_upstream;

use common::{call, get, json};

const CHUNK_GAP: Duration = Duration::from_millis(200);
const MB: usize = 1024 * 1024;

/// The byte at `offset` of the large test bodies: position-dependent, so a
/// dropped, duplicated or reordered chunk is noticed.
fn pattern(offset: usize) -> u8 {
    (offset % 251) as u8
}

fn pattern_chunk(start: usize, len: usize) -> Bytes {
    (start..start + len)
        .map(pattern)
        .collect::<Vec<u8>>()
        .into()
}

/// Five chunks, 200 ms apart; `last_sent` turns true just before the last.
fn slow_upstream(last_sent: Arc<AtomicBool>) -> Router {
    Router::new().route(
        "/slow",
        get_route(move || {
            let last_sent = last_sent.clone();
            async move {
                let chunks = stream::unfold(0u32, move |i| {
                    let last_sent = last_sent.clone();
                    async move {
                        if i == 5 {
                            return None;
                        }
                        if i > 0 {
                            tokio::time::sleep(CHUNK_GAP).await;
                        }
                        if i == 4 {
                            last_sent.store(true, Ordering::SeqCst);
                        }
                        Some((
                            Ok::<_, Infallible>(Bytes::from(format!("chunk-{i};"))),
                            i + 1,
                        ))
                    }
                });
                Body::from_stream(chunks)
            }
        }),
    )
}

#[tokio::test]
async fn slow_chunked_response_streams() {
    let last_sent = Arc::new(AtomicBool::new(false));
    let up = spawn_upstream(slow_upstream(last_sent.clone())).await;
    let proxy = Proxy::builder(up.url()).build().unwrap();

    let started = Instant::now();
    let mut body = call(&proxy, get("/slow")).await.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "chunk-0;");
    assert!(
        !last_sent.load(Ordering::SeqCst),
        "the first chunk arrived only after the last was sent: the body was buffered"
    );
    assert!(started.elapsed() < 4 * CHUNK_GAP);

    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, "chunk-1;chunk-2;chunk-3;chunk-4;");
    assert!(last_sent.load(Ordering::SeqCst));
}

#[tokio::test]
async fn timeout_covers_headers_not_the_body() {
    // The body takes 800 ms, four times the timeout.
    let up = spawn_upstream(slow_upstream(Arc::new(AtomicBool::new(false)))).await;
    let proxy = Proxy::builder(up.url()).timeout(CHUNK_GAP).build().unwrap();
    let body = call(&proxy, get("/slow")).await.into_body();
    let all = body.collect().await.unwrap().to_bytes();
    assert_eq!(all.len(), "chunk-0;".len() * 5);
}

#[tokio::test]
async fn request_body_streams_before_it_ends() {
    // The upstream reports every frame it receives as it receives it.
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<usize>();
    let app = Router::new()
        .route(
            "/upload",
            post(
                |State(seen): State<mpsc::UnboundedSender<usize>>, req: Request| async move {
                    let mut body = req.into_body();
                    let mut total = 0;
                    while let Some(frame) = body.frame().await {
                        if let Ok(data) = frame.unwrap().into_data() {
                            total += data.len();
                            let _ = seen.send(data.len());
                        }
                    }
                    axum::Json(json!({ "total": total }))
                },
            ),
        )
        .with_state(seen_tx);
    let up = spawn_upstream(app).await;
    let proxy = Proxy::builder(up.url()).build().unwrap();

    let (body_tx, body_rx) = mpsc::channel::<Bytes>(1);
    let frames = stream::unfold(body_rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    let req = http::Request::post("/upload")
        .body(StreamBody::new(frames))
        .unwrap();
    let pending = tokio::spawn({
        let proxy = proxy.clone();
        async move { call(&proxy, req).await }
    });

    body_tx.send(Bytes::from_static(b"first")).await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(5), seen_rx.recv())
        .await
        .expect("the upstream never saw the first chunk while the upload was open");
    assert_eq!(seen, Some(5));

    body_tx.send(Bytes::from_static(b"second")).await.unwrap();
    drop(body_tx);
    let rsp = pending.await.unwrap();
    assert_eq!(json(rsp).await["total"], 11);
}

#[tokio::test]
async fn large_upload_passes_through() {
    let app = Router::new().route(
        "/upload",
        post(|req: Request| async move {
            let mut body = req.into_body();
            let (mut total, mut wrong) = (0usize, 0usize);
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame.unwrap().into_data() {
                    wrong += data
                        .iter()
                        .enumerate()
                        .filter(|(i, b)| **b != pattern(total + i))
                        .count();
                    total += data.len();
                }
            }
            axum::Json(json!({ "total": total, "wrong": wrong }))
        }),
    );
    let up = spawn_upstream(app).await;
    let proxy = Proxy::builder(up.url()).build().unwrap();

    let frames =
        stream::iter((0..16).map(|i| Ok::<_, Infallible>(Frame::data(pattern_chunk(i * MB, MB)))));
    let req = http::Request::post("/upload")
        .body(StreamBody::new(frames))
        .unwrap();
    let v = json(call(&proxy, req).await).await;
    assert_eq!(v["total"], 16 * MB);
    assert_eq!(v["wrong"], 0);
}

#[tokio::test]
async fn large_download_passes_through() {
    const PIECE: usize = 64 * 1024;
    let app = Router::new().route(
        "/download",
        get_route(|| async {
            let pieces = stream::iter(
                (0..16 * MB / PIECE).map(|i| Ok::<_, Infallible>(pattern_chunk(i * PIECE, PIECE))),
            );
            Body::from_stream(pieces)
        }),
    );
    let up = spawn_upstream(app).await;
    let proxy = Proxy::builder(up.url()).build().unwrap();

    let mut body = call(&proxy, get("/download")).await.into_body();
    let (mut total, mut wrong, mut frames) = (0usize, 0usize, 0usize);
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            wrong += data
                .iter()
                .enumerate()
                .filter(|(i, b)| **b != pattern(total + i))
                .count();
            total += data.len();
            frames += 1;
        }
    }
    assert_eq!(total, 16 * MB);
    assert_eq!(wrong, 0);
    assert!(
        frames > 1,
        "the download came in one piece: it was buffered"
    );
}

#[tokio::test]
async fn an_idle_timeout_of_duration_max_means_never() {
    // The response timer (100 ms) runs out during the pause and is re-armed
    // for the idle timeout: `now + Duration::MAX` must not overflow.
    let app = Router::new().route(
        "/pause",
        get_route(|| async {
            let chunks = stream::unfold(0u8, |i| async move {
                match i {
                    0 => Some((Ok::<_, Infallible>(Bytes::from_static(b"first ")), 1)),
                    1 => {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        Some((Ok(Bytes::from_static(b"last")), 2))
                    }
                    _ => None,
                }
            });
            Body::from_stream(chunks)
        }),
    );
    let up = spawn_upstream(app).await;
    let proxy = Proxy::builder(up.url())
        .timeout(Duration::from_millis(100))
        .body_idle_timeout(Some(Duration::MAX))
        .build()
        .unwrap();
    let rsp = call(&proxy, get("/pause")).await;
    assert_eq!(rsp.status(), 200);
    let body = tokio::spawn(rsp.into_body().collect()).await;
    let body = body.expect("no panic").unwrap().to_bytes();
    assert_eq!(body, "first last");
}

#[tokio::test]
async fn a_stalled_body_fails_after_the_idle_timeout() {
    // One chunk, then nothing: the body fails once it has paused for the
    // idle timeout, on the response timer the proxy handed over (the
    // response timeout is shorter than the idle one here) and on one of
    // its own (longer).
    let app = Router::new().route(
        "/stall",
        get_route(|| async {
            let chunks = stream::unfold(0u8, |i| async move {
                match i {
                    0 => Some((Ok::<_, Infallible>(Bytes::from_static(b"first")), 1)),
                    _ => {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        None
                    }
                }
            });
            Body::from_stream(chunks)
        }),
    );
    let up = spawn_upstream(app).await;
    for timeout in [Duration::from_millis(200), Duration::from_secs(10)] {
        let proxy = Proxy::builder(up.url())
            .timeout(timeout)
            .body_idle_timeout(Some(Duration::from_millis(400)))
            .build()
            .unwrap();
        let rsp = call(&proxy, get("/stall")).await;
        assert_eq!(rsp.status(), 200);
        let started = Instant::now();
        let read = tokio::time::timeout(Duration::from_secs(5), rsp.into_body().collect()).await;
        let err = match read {
            Ok(Err(e)) => e,
            other => panic!("timeout {timeout:?}: {other:?}"),
        };
        assert!(
            err.to_string().contains("paused its response body"),
            "{err}"
        );
        assert!(started.elapsed() >= Duration::from_millis(400));
    }
}
