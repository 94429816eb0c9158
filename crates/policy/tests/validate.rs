#![allow(clippy::unwrap_used)]
//! Request validation over real sockets, in front of an upstream that
//! answers with the exact bytes it received.

mod common;

use axum::Router;
use axum::routing::post;
use http::{HeaderName, Method};
use regex::Regex;
use serde_json::json;
use tower::ServiceBuilder;
use towergate_policy::ValidateLayer;
use towergate_test::assert_problem_reqwest;

fn layer() -> ValidateLayer {
    ValidateLayer::builder()
        .methods([Method::POST, Method::PUT])
        .json_schema(json!({
            "type": "object",
            "required": ["customer", "items"],
            "properties": {
                "customer": {"type": "string"},
                "items": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["sku", "qty"],
                        "properties": {
                            "sku": {"type": "string"},
                            "qty": {"type": "integer", "minimum": 1}
                        }
                    }
                }
            }
        }))
        .max_body_bytes(256)
        .require_query("tenant", Some(Regex::new("[a-z]+").unwrap()))
        .require_header(
            HeaderName::from_static("x-api-version"),
            Some(Regex::new("v[0-9]").unwrap()),
        )
        .build()
        .unwrap()
}

async fn gateway() -> (common::Gateway, towergate_test::Upstream) {
    let upstream = common::body_echo().await;
    let stack = ServiceBuilder::new()
        .layer(layer())
        .service(common::proxy(upstream.url()));
    (
        common::serve(Router::new().fallback_service(stack)).await,
        upstream,
    )
}

fn post_json(gw: &common::Gateway, body: impl Into<reqwest::Body>) -> reqwest::RequestBuilder {
    common::client()
        .post(gw.url("/orders?tenant=acme"))
        .header("content-type", "application/json; charset=utf-8")
        .header("x-api-version", "v2")
        .body(body)
}

#[tokio::test]
async fn valid_body_is_forwarded_byte_identical() {
    let (gw, _up) = gateway().await;
    // Odd spacing, key order and escapes: re-serialising would change them.
    let body =
        "{ \"items\":[ {\"qty\":2 ,\"sku\":\"A-1\"} ],\n\t\"customer\":\"Zo\\u00eb \u{1F600}\" }";
    let rsp = post_json(&gw, body).send().await.unwrap();
    assert_eq!(rsp.status(), 200);
    assert_eq!(
        rsp.headers()["x-received-length"],
        body.len().to_string().as_str()
    );
    assert_eq!(rsp.bytes().await.unwrap(), body.as_bytes());
}

#[tokio::test]
async fn schema_violations_are_listed() {
    let (gw, _up) = gateway().await;
    let rsp = post_json(
        &gw,
        r#"{"customer": 7, "items": [{"sku": "a", "qty": 0}, {"qty": "x"}]}"#,
    )
    .send()
    .await
    .unwrap();
    let p = assert_problem_reqwest(rsp, 400).await;
    let errors = p["errors"].as_array().unwrap();
    let paths: Vec<&str> = errors.iter().map(|e| e["path"].as_str().unwrap()).collect();
    assert_eq!(
        paths,
        ["/customer", "/items/0/qty", "/items/1", "/items/1/qty"]
    );
    assert!(
        errors
            .iter()
            .all(|e| e["message"].as_str().is_some_and(|m| !m.is_empty()))
    );
    assert!(errors[2]["message"].as_str().unwrap().contains("sku"));

    // missing required field
    let rsp = post_json(&gw, r#"{"items": [{"sku": "a", "qty": 1}]}"#)
        .send()
        .await
        .unwrap();
    let p = assert_problem_reqwest(rsp, 400).await;
    assert_eq!(p["errors"][0]["path"], "");
    assert!(
        p["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("customer")
    );
}

#[tokio::test]
async fn invalid_json() {
    let (gw, _up) = gateway().await;
    let rsp = post_json(&gw, "{\"customer\": \"a\",\n \"items\": [}")
        .send()
        .await
        .unwrap();
    let p = assert_problem_reqwest(rsp, 400).await;
    assert_eq!(p["line"], 2);
    assert!(p["detail"].as_str().unwrap().contains("line 2"), "{p}");
}

#[tokio::test]
async fn too_large_declared_and_streamed() {
    let (gw, _up) = gateway().await;
    let big = format!(r#"{{"customer": "{}", "items": []}}"#, "x".repeat(300));
    let rsp = post_json(&gw, big.clone()).send().await.unwrap();
    let p = assert_problem_reqwest(rsp, 413).await;
    assert_eq!(p["limit"], 256);

    // Chunked: no Content-Length, the limit is hit while reading.
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = big
        .as_bytes()
        .chunks(50)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let rsp = post_json(&gw, body).send().await.unwrap();
    assert_problem_reqwest(rsp, 413).await;
}

#[tokio::test]
async fn chunked_valid_body_gets_a_content_length() {
    let (gw, _up) = gateway().await;
    let body = r#"{"customer": "c", "items": [{"sku": "s", "qty": 1}]}"#;
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = body
        .as_bytes()
        .chunks(7)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    let rsp = post_json(
        &gw,
        reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(rsp.status(), 200);
    assert_eq!(
        rsp.headers()["x-received-length"],
        body.len().to_string().as_str()
    );
    assert_eq!(rsp.bytes().await.unwrap(), body.as_bytes());
}

#[tokio::test]
async fn wrong_content_type() {
    let (gw, _up) = gateway().await;
    let rsp = common::client()
        .post(gw.url("/orders?tenant=acme"))
        .header("content-type", "text/plain")
        .header("x-api-version", "v2")
        .body(r#"{"customer": "c", "items": [{"sku": "s", "qty": 1}]}"#)
        .send()
        .await
        .unwrap();
    assert_problem_reqwest(rsp, 415).await;
}

#[tokio::test]
async fn content_type_allow_list() {
    let upstream = common::body_echo().await;
    let layer = ValidateLayer::builder()
        .content_types(["application/json", "text/*"])
        .build()
        .unwrap();
    let stack = ServiceBuilder::new()
        .layer(layer)
        .service(common::proxy(upstream.url()));
    let gw = common::serve(Router::new().fallback_service(stack)).await;
    let send = |ct: &'static str| {
        common::client()
            .post(gw.url("/"))
            .header("content-type", ct)
            .body("payload")
            .send()
    };
    assert_eq!(send("text/csv; charset=utf-8").await.unwrap().status(), 200);
    assert_eq!(send("application/json").await.unwrap().status(), 200);
    let p = assert_problem_reqwest(send("application/xml").await.unwrap(), 415).await;
    assert_eq!(p["accepted"], json!(["application/json", "text/*"]));
    // A body-less request needs no Content-Type.
    let rsp = common::client().get(gw.url("/")).send().await.unwrap();
    assert_eq!(rsp.status(), 200);
}

#[tokio::test]
async fn query_and_header_requirements() {
    let (gw, _up) = gateway().await;
    let body = r#"{"customer": "c", "items": [{"sku": "s", "qty": 1}]}"#;
    let rsp = common::client()
        .post(gw.url("/orders"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let p = assert_problem_reqwest(rsp, 400).await;
    assert_eq!(
        p["errors"],
        json!([
            {"in": "query", "name": "tenant", "message": "required query parameter is missing"},
            {"in": "header", "name": "x-api-version", "message": "required header is missing"},
        ])
    );

    // Present but not matching in full.
    let rsp = common::client()
        .post(gw.url("/orders?tenant=acme1"))
        .header("content-type", "application/json")
        .header("x-api-version", "v22")
        .body(body)
        .send()
        .await
        .unwrap();
    let p = assert_problem_reqwest(rsp, 400).await;
    assert_eq!(p["errors"][0]["message"], "must match the pattern [a-z]+");
    assert_eq!(p["errors"][1]["message"], "must match the pattern v[0-9]");
}

#[tokio::test]
async fn method_not_allowed() {
    let (gw, _up) = gateway().await;
    let rsp = common::client()
        .delete(gw.url("/orders?tenant=acme"))
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.headers()["allow"], "POST, PUT");
    assert_problem_reqwest(rsp, 405).await;
}

/// The layer embeds in an axum router as it is.
#[tokio::test]
async fn embeds_in_axum() {
    let app = Router::new()
        .route("/orders", post(|body: String| async move { body }))
        .layer(
            ValidateLayer::builder()
                .json_schema(json!({"type": "object", "required": ["id"]}))
                .build()
                .unwrap(),
        );
    let gw = common::serve(app).await;
    let send = |body: &'static str| {
        common::client()
            .post(gw.url("/orders"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let rsp = send(r#"{"id": 1}"#).await.unwrap();
    assert_eq!(rsp.status(), 200);
    assert_eq!(rsp.text().await.unwrap(), r#"{"id": 1}"#);
    assert_problem_reqwest(send("{}").await.unwrap(), 400).await;
}
