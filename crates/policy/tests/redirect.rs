#![allow(clippy::unwrap_used)]
//! Redirects and fixed responses over real sockets.

mod common;

use axum::Router;
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use tower::ServiceBuilder;
use tower::util::MapRequestLayer;
use towergate_policy::{FixedResponse, Redirect, Template};

#[tokio::test]
async fn https_redirect() {
    let gw = common::serve(Router::new().fallback_service(Redirect::https(Some(8443)))).await;
    let rsp = common::client()
        .get(gw.url("/login/x?next=%2Fhome&a=b"))
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 301);
    assert_eq!(
        rsp.headers()["location"],
        "https://127.0.0.1:8443/login/x?next=%2Fhome&a=b"
    );

    let gw = common::serve(
        Router::new().fallback_service(Redirect::https(None).status(StatusCode::FOUND).unwrap()),
    )
    .await;
    let rsp = common::client()
        .get(gw.url("/p"))
        .header("host", "Shop.Example.com:8080")
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 302);
    assert_eq!(rsp.headers()["location"], "https://shop.example.com/p");
}

#[tokio::test]
async fn path_redirect_with_template() {
    let redirect = Redirect::to(Template::parse("/v2/{params.rest}").unwrap())
        .status(StatusCode::PERMANENT_REDIRECT)
        .unwrap();
    let stack = ServiceBuilder::new()
        .layer(MapRequestLayer::new(common::with_context))
        .service(redirect);
    let gw = common::serve(Router::new().fallback_service(stack)).await;
    let rsp = common::client()
        .post(gw.url("/v1/a%20b/c?q=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 308);
    assert_eq!(rsp.headers()["location"], "/v2/a%20b/c?q=1");
}

#[tokio::test]
async fn fixed_response() {
    let svc = FixedResponse::new(StatusCode::SERVICE_UNAVAILABLE)
        .body(
            Bytes::from_static(br#"{"status":"maintenance"}"#),
            HeaderValue::from_static("application/json"),
        )
        .header(header::RETRY_AFTER, HeaderValue::from_static("120"));
    let gw = common::serve(Router::new().fallback_service(svc)).await;
    let rsp = common::client()
        .get(gw.url("/anything"))
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 503);
    assert_eq!(rsp.headers()["content-type"], "application/json");
    assert_eq!(rsp.headers()["retry-after"], "120");
    assert_eq!(rsp.headers()["content-length"], "24");
    assert_eq!(rsp.text().await.unwrap(), r#"{"status":"maintenance"}"#);
}
