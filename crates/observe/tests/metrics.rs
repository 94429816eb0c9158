//! Metrics after a known sequence of requests over real sockets.
#![allow(clippy::unwrap_used)]

mod common;

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::response::IntoResponse;
use axum::routing::{any, get, post};
use bytes::Bytes;
use http::StatusCode;
use tower::ServiceBuilder;
use towergate_core::Problem;
use towergate_observe::metrics::CONTENT_TYPE;
use towergate_observe::{Metrics, RecordLayer, RecordUpstreamLayer};
use towergate_test::{echo_router, spawn_upstream};

use common::{eventually, forward, parse_metrics, sample, serve};

/// The gateway: metrics outside the router, a `RecordLayer` per route, and
/// `/metrics` served from the handle.
async fn gateway(metrics: &Metrics, upstream: String) -> common::Server {
    let named = |name: &'static str| RecordLayer::route(name);
    let routes = Router::new()
        .route("/ok", get(|| async { "fine" }).layer(named("ok")))
        .route(
            "/upload",
            post(|body: Bytes| async move { body.len().to_string() }).layer(named("upload")),
        )
        .route(
            "/secret",
            get(|| async {
                Problem::new(StatusCode::UNAUTHORIZED)
                    .header(
                        http::header::WWW_AUTHENTICATE,
                        http::HeaderValue::from_static("Bearer"),
                    )
                    .into_full_response()
            })
            .layer(named("secret")),
        )
        .route(
            "/limited",
            get(|| async { Problem::new(StatusCode::TOO_MANY_REQUESTS).into_full_response() })
                .layer(named("limited")),
        )
        .route(
            "/broken",
            get(|| async { Problem::new(StatusCode::BAD_GATEWAY).into_full_response() })
                .layer(named("broken")),
        )
        .route(
            "/slow",
            get(|| async {
                // Headers now, the body a chunk at a time.
                let chunks = futures_stream();
                Body::from_stream(chunks).into_response()
            })
            .layer(named("slow")),
        )
        .route(
            "/api/{*rest}",
            any(forward(upstream)).layer(
                ServiceBuilder::new()
                    .layer(named("api"))
                    .layer(RecordUpstreamLayer::new("echo:1").metrics(metrics.clone())),
            ),
        );
    let stack = ServiceBuilder::new().layer(metrics.layer()).service(routes);
    let page = metrics.clone();
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let page = page.clone();
                async move { ([(http::header::CONTENT_TYPE, CONTENT_TYPE)], page.encode()) }
            }),
        )
        .fallback_service(stack);
    serve(app).await
}

fn futures_stream() -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> + Send {
    futures_util::stream::unfold(0u8, |n| async move {
        if n == 3 {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
        Some((Ok(Bytes::from_static(b"0123456789")), n + 1))
    })
}

async fn get_status(client: &reqwest::Client, url: String) -> u16 {
    let rsp = client.get(url).send().await.unwrap();
    let status = rsp.status().as_u16();
    rsp.bytes().await.unwrap();
    status
}

#[tokio::test]
async fn red_metrics_per_route_after_a_known_sequence() {
    let upstream = spawn_upstream(echo_router("users")).await;
    let metrics = Metrics::new();
    let gw = gateway(&metrics, upstream.url()).await;
    let c = reqwest::Client::new();

    for _ in 0..3 {
        assert_eq!(get_status(&c, gw.url("/ok")).await, 200);
    }
    assert_eq!(get_status(&c, gw.url("/secret")).await, 401);
    assert_eq!(get_status(&c, gw.url("/limited")).await, 429);
    for _ in 0..2 {
        assert_eq!(get_status(&c, gw.url("/broken")).await, 502);
    }
    assert_eq!(get_status(&c, gw.url("/no/such/route?user=42")).await, 404);
    assert_eq!(get_status(&c, gw.url("/api/users/1")).await, 200);
    let rsp = c
        .post(gw.url("/upload"))
        .body(vec![b'x'; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.text().await.unwrap(), "1000");

    // Bodies are counted when they end: wait for the last ones.
    eventually(|| (metrics.in_flight() == 0).then_some(())).await;

    // Scrape over HTTP, as Prometheus does.
    let rsp = c.get(gw.url("/metrics")).send().await.unwrap();
    assert_eq!(rsp.headers()["content-type"], CONTENT_TYPE);
    let page = parse_metrics(&rsp.text().await.unwrap());

    let requests = |route: &str, class: &str| {
        sample(
            &page,
            &format!(r#"towergate_http_requests_total{{route="{route}",status_class="{class}"}}"#),
        )
    };
    assert_eq!(requests("ok", "2xx"), 3.0);
    assert_eq!(requests("secret", "4xx"), 1.0);
    assert_eq!(requests("limited", "4xx"), 1.0);
    assert_eq!(requests("broken", "5xx"), 2.0);
    assert_eq!(
        requests("(none)", "4xx"),
        1.0,
        "no route: (none), never the raw path"
    );
    assert_eq!(requests("api", "2xx"), 1.0);
    assert_eq!(requests("upload", "2xx"), 1.0);
    assert_eq!(requests("ok", "5xx"), 0.0);
    assert!(
        !page
            .keys()
            .any(|k| k.contains("/no/such") || k.contains("user")),
        "raw paths never become labels"
    );

    // The histogram agrees with the counters.
    let count = |route: &str| {
        sample(
            &page,
            &format!(r#"towergate_http_request_duration_seconds_count{{route="{route}"}}"#),
        )
    };
    assert_eq!(count("ok"), 3.0);
    assert_eq!(count("broken"), 2.0);
    assert_eq!(count("(none)"), 1.0);
    assert_eq!(
        sample(
            &page,
            r#"towergate_http_request_duration_seconds_bucket{le="+Inf",route="ok"}"#
        ),
        3.0
    );
    assert!(
        page.contains_key(
            r#"towergate_http_request_duration_seconds_bucket{le="0.0005",route="ok"}"#
        )
    );
    assert!(
        page.contains_key(
            r#"towergate_http_request_duration_seconds_bucket{le="10.0",route="ok"}"#
        )
    );

    // Bytes, counted as they streamed.
    assert_eq!(
        sample(
            &page,
            r#"towergate_http_response_body_bytes_total{route="ok"}"#
        ),
        3.0 * 4.0
    );
    assert_eq!(
        sample(
            &page,
            r#"towergate_http_request_body_bytes_total{route="upload"}"#
        ),
        1000.0
    );

    // The upstream endpoint's own RED.
    assert_eq!(
        sample(
            &page,
            r#"towergate_upstream_requests_total{status_class="2xx",upstream="echo:1"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &page,
            r#"towergate_upstream_request_duration_seconds_count{upstream="echo:1"}"#
        ),
        1.0
    );

    // Nothing in flight any more (the scrape itself is not measured).
    assert_eq!(sample(&page, "towergate_http_requests_in_flight"), 0.0);
}

#[tokio::test]
async fn in_flight_until_the_body_ends() {
    let upstream = spawn_upstream(echo_router("users")).await;
    let metrics = Metrics::new();
    let gw = gateway(&metrics, upstream.url()).await;
    let rsp = reqwest::get(gw.url("/slow")).await.unwrap();
    assert_eq!(rsp.status(), 200);
    // Headers are in, the body is still streaming.
    assert_eq!(metrics.in_flight(), 1);
    let page = parse_metrics(&metrics.encode());
    assert_eq!(
        sample(
            &page,
            r#"towergate_http_requests_total{route="slow",status_class="2xx"}"#
        ),
        1.0,
        "counted at the response headers"
    );
    assert_eq!(rsp.bytes().await.unwrap().len(), 30);
    eventually(|| (metrics.in_flight() == 0).then_some(())).await;
    let page = parse_metrics(&metrics.encode());
    assert_eq!(
        sample(
            &page,
            r#"towergate_http_response_body_bytes_total{route="slow"}"#
        ),
        30.0
    );
}

#[tokio::test]
async fn client_leaving_early_is_no_longer_in_flight() {
    let upstream = spawn_upstream(echo_router("users")).await;
    let metrics = Metrics::new();
    let gw = gateway(&metrics, upstream.url()).await;
    let rsp = reqwest::get(gw.url("/slow")).await.unwrap();
    assert_eq!(metrics.in_flight(), 1);
    drop(rsp);
    eventually(|| (metrics.in_flight() == 0).then_some(())).await;
}

#[test]
fn the_page_is_valid_openmetrics() {
    let metrics = Metrics::new();
    metrics.auth_failure("expired");
    metrics.rate_limited("per-ip");
    metrics.observe_upstream("u:1", Some(StatusCode::OK), Duration::from_millis(2));
    let text = metrics.encode();
    // Families appear once they have a sample; each has HELP and TYPE, and
    // counters are exposed with _total.
    for family in [
        "towergate_http_requests_in_flight",
        "towergate_upstream_requests",
        "towergate_upstream_request_duration_seconds",
        "towergate_auth_failures",
        "towergate_ratelimit_rejections",
        "towergate_access_log_dropped",
    ] {
        assert!(text.contains(&format!("# HELP {family} ")), "{family}");
        assert!(text.contains(&format!("# TYPE {family} ")), "{family}");
    }
    assert!(text.contains("# TYPE towergate_upstream_request_duration_seconds histogram"));
    assert!(text.contains("# UNIT towergate_upstream_request_duration_seconds seconds"));
    assert!(text.contains("# TYPE towergate_auth_failures counter"));
    let page = parse_metrics(&text);
    assert_eq!(
        sample(&page, r#"towergate_auth_failures_total{reason="expired"}"#),
        1.0
    );
    assert_eq!(
        sample(
            &page,
            r#"towergate_upstream_request_duration_seconds_count{upstream="u:1"}"#
        ),
        1.0
    );
}

/// `ObserveLayer::in_place` in front of an axum router: the handlers get
/// the body (wrapped in place when there is one), and the metrics count
/// its bytes, as with the generic layer.
#[tokio::test]
async fn the_in_place_layer_counts_bodies_it_leaves_in_place() {
    let metrics = Metrics::new();
    let named = |name: &'static str| RecordLayer::route(name);
    let routes = Router::new()
        .route("/ok", get(|| async { "fine" }).layer(named("ok")))
        .route(
            "/upload",
            post(|body: Bytes| async move { body.len().to_string() }).layer(named("upload")),
        );
    let edge = towergate_observe::ObserveLayer::builder()
        .request_id(towergate_observe::RequestIdLayer::new())
        .metrics(metrics.clone())
        .build()
        .in_place();
    let gw = serve(routes.layer(edge)).await;
    let client = reqwest::Client::new();

    let rsp = client
        .post(gw.url("/upload"))
        .body("hello, world")
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    assert!(rsp.headers().contains_key("x-request-id"));
    assert_eq!(rsp.text().await.unwrap(), "12");
    let rsp = client.get(gw.url("/ok")).send().await.unwrap();
    assert_eq!(rsp.text().await.unwrap(), "fine");

    let page = eventually(|| {
        let page = parse_metrics(&metrics.encode());
        (sample(&page, "towergate_http_requests_in_flight") == 0.0).then_some(page)
    })
    .await;
    for route in ["upload", "ok"] {
        assert_eq!(
            sample(
                &page,
                &format!(r#"towergate_http_requests_total{{route="{route}",status_class="2xx"}}"#)
            ),
            1.0,
            "{route}"
        );
    }
    assert_eq!(
        sample(
            &page,
            r#"towergate_http_request_body_bytes_total{route="upload"}"#
        ),
        12.0
    );
    assert_eq!(
        sample(
            &page,
            r#"towergate_http_request_body_bytes_total{route="ok"}"#
        ),
        0.0
    );
    assert_eq!(
        sample(
            &page,
            r#"towergate_http_response_body_bytes_total{route="upload"}"#
        ),
        2.0
    );
}
