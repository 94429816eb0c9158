#![allow(clippy::unwrap_used)]
//! CORS over real sockets: preflights are answered at the gateway.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use http::{Method, header};
use tower::ServiceBuilder;
use towergate_policy::{CorsPolicy, Origin};

async fn gateway() -> (
    common::Gateway,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    towergate_test::Upstream,
) {
    let (upstream, count) = common::counting_echo().await;
    let cors = CorsPolicy::builder()
        .allow_origin(Origin::parse("https://*.example.com").unwrap())
        .allow_origin(Origin::parse("http://localhost:3000").unwrap())
        .allow_methods([Method::GET, Method::PUT, Method::DELETE])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .expose_headers([header::ETAG])
        .allow_credentials(true)
        .max_age(Duration::from_secs(600))
        .build()
        .unwrap();
    let stack = ServiceBuilder::new()
        .layer(cors)
        .service(common::proxy(upstream.url()));
    let gw = common::serve(Router::new().fallback_service(stack)).await;
    (gw, count, upstream)
}

#[tokio::test]
async fn preflight_from_an_allowed_origin() {
    let (gw, count, _up) = gateway().await;
    let rsp = common::client()
        .request(Method::OPTIONS, gw.url("/items/1"))
        .header("origin", "https://app.eu.example.com")
        .header("access-control-request-method", "PUT")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    let h = rsp.headers();
    assert_eq!(
        h["access-control-allow-origin"],
        "https://app.eu.example.com"
    );
    assert_eq!(h["access-control-allow-methods"], "GET,PUT,DELETE");
    assert_eq!(
        h["access-control-allow-headers"],
        "authorization,content-type"
    );
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(h["access-control-max-age"], "600");
    assert!(
        h.get_all("vary")
            .iter()
            .any(|v| v.to_str().unwrap().contains("origin"))
    );
    assert_eq!(count.load(Ordering::SeqCst), 0, "the upstream never saw it");
}

#[tokio::test]
async fn preflight_from_a_refused_origin() {
    let (gw, count, _up) = gateway().await;
    for origin in [
        "https://evil-example.com",
        "https://example.com",
        "http://app.example.com",
    ] {
        let rsp = common::client()
            .request(Method::OPTIONS, gw.url("/items/1"))
            .header("origin", origin)
            .header("access-control-request-method", "PUT")
            .send()
            .await
            .unwrap();
        assert!(
            !rsp.headers().contains_key("access-control-allow-origin"),
            "{origin}"
        );
    }
    assert_eq!(count.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn simple_request_with_credentials() {
    let (gw, count, _up) = gateway().await;
    let rsp = common::client()
        .get(gw.url("/items"))
        .header("origin", "http://localhost:3000")
        .header("cookie", "session=1")
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    let h = rsp.headers().clone();
    assert_eq!(h["access-control-allow-origin"], "http://localhost:3000");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(h["access-control-expose-headers"], "etag");
    let echo: serde_json::Value = rsp.json().await.unwrap();
    assert_eq!(echo["path"], "/items");
    assert_eq!(echo["headers"]["cookie"][0], "session=1");
    assert_eq!(count.load(Ordering::SeqCst), 1);

    // A refused origin still reaches the upstream (only browsers enforce
    // CORS), but gets no grant.
    let rsp = common::client()
        .get(gw.url("/items"))
        .header("origin", "https://evil-example.com")
        .send()
        .await
        .unwrap();
    assert!(!rsp.headers().contains_key("access-control-allow-origin"));
    assert_eq!(count.load(Ordering::SeqCst), 2);
}
