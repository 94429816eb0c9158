#![allow(clippy::unwrap_used)]
//! Compression over real sockets, decoded by curl (`--compressed`), and
//! request decompression seen at the upstream.

mod common;

use std::convert::Infallible;
use std::path::Path;

use axum::Router;
use axum::body::Body;
use axum::response::IntoResponse;
use http::{Request, Response, header};
use http_body_util::BodyExt;
use tower::{ServiceBuilder, ServiceExt};
use towergate_policy::{CompressionPolicy, request_decompression};

fn text() -> String {
    (0..400)
        .map(|i| format!("line {i}: the quick brown fox\n"))
        .collect()
}

/// Bytes labelled as gzip by the upstream itself; not valid gzip, so any
/// re-encoding or decoding on the way would show.
const PRE_ENCODED: &[u8] = b"\x1f\x8bpretend-this-is-gzip-and-long-enough-to-be-compressed-if-we-were-careless........................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................";

async fn gateway() -> (common::Gateway, towergate_test::Upstream) {
    let app = Router::new()
        .route(
            "/text",
            axum::routing::get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                    text(),
                )
            }),
        )
        .route(
            "/json",
            axum::routing::get(|| async {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    format!("[{}]", vec!["1"; 1000].join(",")),
                )
            }),
        )
        .route(
            "/small",
            axum::routing::get(|| async {
                ([(header::CONTENT_TYPE, "text/plain")], "tiny".repeat(10))
            }),
        )
        .route(
            "/png",
            axum::routing::get(|| async {
                ([(header::CONTENT_TYPE, "image/png")], vec![0u8; 8192])
            }),
        )
        .route(
            "/encoded",
            axum::routing::get(|| async {
                (
                    [
                        (header::CONTENT_TYPE, "text/plain"),
                        (header::CONTENT_ENCODING, "gzip"),
                    ],
                    PRE_ENCODED,
                )
                    .into_response()
            }),
        );
    let upstream = towergate_test::spawn_upstream(app).await;
    let stack = ServiceBuilder::new()
        .layer(CompressionPolicy::new().layer())
        .service(common::proxy(upstream.url()));
    (
        common::serve(Router::new().fallback_service(stack)).await,
        upstream,
    )
}

struct Fetched {
    headers: String,
    body: Vec<u8>,
}

impl Fetched {
    fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }
}

/// curl with `Accept-Encoding: <encoding>`; `decode` adds `--compressed`.
async fn curl(url: &str, encoding: &str, decode: bool, dir: &Path) -> Fetched {
    let headers = dir.join(format!("h-{encoding}-{decode}"));
    let body = dir.join(format!("b-{encoding}-{decode}"));
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args(["-sS", "--http1.1", "-H"])
        .arg(format!("accept-encoding: {encoding}"))
        .arg("-D")
        .arg(&headers)
        .arg("-o")
        .arg(&body);
    if decode {
        cmd.arg("--compressed");
    }
    let out = cmd.arg(url).output().await.unwrap();
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Fetched {
        headers: std::fs::read_to_string(headers).unwrap(),
        body: std::fs::read(body).unwrap(),
    }
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("towergate-policy-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn gzip_br_and_zstd_decode_to_the_original() {
    let (gw, _up) = gateway().await;
    let dir = tempdir("compress");
    for path in ["/text", "/json"] {
        let original = curl(&gw.url(path), "identity", false, &dir).await;
        assert_eq!(original.header("content-encoding"), None);
        for enc in ["gzip", "br", "zstd"] {
            let raw = curl(&gw.url(path), enc, false, &dir).await;
            assert_eq!(
                raw.header("content-encoding").as_deref(),
                Some(enc),
                "{path} {enc}"
            );
            assert!(
                raw.header("vary")
                    .unwrap()
                    .to_ascii_lowercase()
                    .contains("accept-encoding")
            );
            assert!(
                raw.body.len() < original.body.len() / 4,
                "{path} {enc} really compressed"
            );
            let decoded = curl(&gw.url(path), enc, true, &dir).await;
            assert_eq!(decoded.body, original.body, "{path} {enc}");
        }
    }
    let original = curl(&gw.url("/text"), "identity", false, &dir).await;
    assert_eq!(original.body, text().as_bytes());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn small_images_and_encoded_bodies_pass_untouched() {
    let (gw, _up) = gateway().await;
    let dir = tempdir("untouched");
    let small = curl(&gw.url("/small"), "gzip, br, zstd", false, &dir).await;
    assert_eq!(small.header("content-encoding"), None);
    assert_eq!(small.body, "tiny".repeat(10).as_bytes());

    let png = curl(&gw.url("/png"), "gzip, br, zstd", false, &dir).await;
    assert_eq!(png.header("content-encoding"), None);
    assert_eq!(png.body, vec![0u8; 8192]);

    let encoded = curl(&gw.url("/encoded"), "gzip, br, zstd", false, &dir).await;
    assert_eq!(encoded.header("content-encoding").as_deref(), Some("gzip"));
    assert_eq!(encoded.body, PRE_ENCODED);
    let _ = std::fs::remove_dir_all(dir);
}

/// gzip bytes made by tower-http's own compression on a local service,
/// playing the part of a client that compresses its upload.
async fn gzip(data: &'static str) -> bytes::Bytes {
    let svc = ServiceBuilder::new()
        .layer(CompressionPolicy::new().min_size(1).layer())
        .service(tower::service_fn(|_req: Request<Body>| async move {
            let rsp = Response::builder()
                .header(header::CONTENT_TYPE, "text/plain")
                .body(Body::from(data))
                .unwrap();
            Ok::<_, Infallible>(rsp)
        }));
    let req = Request::get("/")
        .header("accept-encoding", "gzip")
        .body(Body::empty())
        .unwrap();
    let rsp = svc.oneshot(req).await.unwrap();
    assert_eq!(rsp.headers()["content-encoding"], "gzip");
    rsp.into_body().collect().await.unwrap().to_bytes()
}

#[tokio::test]
async fn gzip_request_bodies_arrive_decoded() {
    const TEXT: &str = "a request body that the client gzipped, repeated. a request body that the client gzipped, repeated.";
    let gz = gzip(TEXT).await;
    assert_eq!(&gz[..2], b"\x1f\x8b");

    let upstream = common::body_echo().await;
    let stack = ServiceBuilder::new()
        .layer(request_decompression())
        .service(common::proxy(upstream.url()));
    let gw = common::serve(Router::new().fallback_service(stack)).await;

    let rsp = common::client()
        .post(gw.url("/upload"))
        .header("content-encoding", "gzip")
        .header("content-type", "text/plain")
        .body(gz)
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    assert!(!rsp.headers().contains_key("x-received-encoding"));
    assert_eq!(rsp.text().await.unwrap(), TEXT);

    // An encoding it does not know: 415.
    let rsp = common::client()
        .post(gw.url("/upload"))
        .header("content-encoding", "compress")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 415);
}
