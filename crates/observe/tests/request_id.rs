//! Request ids through a real axum gateway in front of a real upstream.
#![allow(clippy::unwrap_used)]

mod common;

use axum::Router;
use axum::extract::Request;
use axum::response::IntoResponse;
use axum::routing::{any, get};
use http::StatusCode;
use serde_json::Value;
use towergate_core::{Problem, RequestId};
use towergate_observe::{RecordLayer, RequestIdLayer, request_id};
use towergate_test::{echo_router, spawn_upstream};

use common::{forward, serve};

/// A gateway: `/api/...` forwarded to an echo upstream, `/denied` answered
/// with a problem whose `instance` is the request id.
async fn gateway(layer: RequestIdLayer, upstream: String) -> common::Server {
    async fn denied(req: Request) -> impl IntoResponse {
        let problem = Problem::new(StatusCode::FORBIDDEN);
        match req.extensions().get::<RequestId>() {
            Some(id) => problem.instance(id.to_string()),
            None => problem,
        }
        .into_full_response()
    }
    let app = Router::new()
        .route(
            "/api/{*rest}",
            any(forward(upstream)).layer(RecordLayer::route("api")),
        )
        .route("/denied", get(denied))
        .layer(layer);
    serve(app).await
}

/// Sends `GET /api/x` with the given request-id header values; returns the
/// id on the response and the ids the upstream saw.
async fn round_trip(gw: &common::Server, header: &str, sent: &[&str]) -> (String, Vec<String>) {
    let mut req = reqwest::Client::new().get(gw.url("/api/x"));
    for v in sent {
        req = req.header(header, *v);
    }
    let rsp = req.send().await.unwrap();
    assert_eq!(rsp.status(), 200);
    let on_response = rsp.headers()[header].to_str().unwrap().to_owned();
    assert_eq!(rsp.headers().get_all(header).iter().count(), 1);
    let echo: Value = rsp.json().await.unwrap();
    let seen = echo["headers"][header]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    (on_response, seen)
}

fn is_uuid_v7(s: &str) -> bool {
    s.len() == 36 && &s[14..15] == "7" && request_id::is_valid(s.as_bytes())
}

#[tokio::test]
async fn generated_kept_and_replaced() {
    let upstream = spawn_upstream(echo_router("users")).await;
    let gw = gateway(RequestIdLayer::new(), upstream.url()).await;

    // Absent: generated, the same on the upstream request and the response.
    let (a, seen) = round_trip(&gw, "x-request-id", &[]).await;
    assert!(is_uuid_v7(&a), "{a}");
    assert_eq!(seen, std::slice::from_ref(&a));
    let (b, _) = round_trip(&gw, "x-request-id", &[]).await;
    assert_ne!(a, b, "each request gets its own id");

    // Valid: kept.
    let (id, seen) = round_trip(&gw, "x-request-id", &["frontend:42.a_b-c"]).await;
    assert_eq!(id, "frontend:42.a_b-c");
    assert_eq!(seen, [id]);
    let longest = "a".repeat(128);
    let (id, _) = round_trip(&gw, "x-request-id", &[&longest]).await;
    assert_eq!(id, longest);

    // Invalid: replaced, never echoed anywhere.
    let too_long = "a".repeat(129);
    for bad in ["has space", "semi;colon", "quote\"", too_long.as_str()] {
        let (id, seen) = round_trip(&gw, "x-request-id", &[bad]).await;
        assert!(is_uuid_v7(&id), "{bad:?} gave {id}");
        assert_eq!(seen, [id], "the upstream sees only the replacement");
    }

    // Two values: which one would the upstream believe? Replaced.
    let (id, seen) = round_trip(&gw, "x-request-id", &["one", "two"]).await;
    assert!(is_uuid_v7(&id));
    assert_eq!(seen, [id]);
}

#[tokio::test]
async fn problem_instance_is_the_request_id() {
    let upstream = spawn_upstream(echo_router("users")).await;
    let gw = gateway(RequestIdLayer::new(), upstream.url()).await;
    let rsp = reqwest::Client::new()
        .get(gw.url("/denied"))
        .header("x-request-id", "req-77")
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.headers()["x-request-id"], "req-77");
    let problem = towergate_test::assert_problem_reqwest(rsp, 403).await;
    assert_eq!(problem["instance"], "req-77");
}

#[tokio::test]
async fn custom_header_and_untrusted_clients() {
    let upstream = spawn_upstream(echo_router("users")).await;
    let layer = RequestIdLayer::builder()
        .header("X-Correlation-Id")
        .trust_incoming(false)
        .build()
        .unwrap();
    let gw = gateway(layer, upstream.url()).await;
    let (id, seen) = round_trip(&gw, "x-correlation-id", &["chosen-by-client"]).await;
    assert!(is_uuid_v7(&id), "an untrusted client's id is replaced");
    assert_eq!(seen, [id]);
}

/// The response to `GET /api/x` with `sent` ids: the id on the response, if
/// any, and the ids the upstream saw.
async fn ids_seen(gw: &common::Server, sent: &[&str]) -> (Option<String>, Vec<String>) {
    let mut req = reqwest::Client::new().get(gw.url("/api/x"));
    for v in sent {
        req = req.header("x-request-id", *v);
    }
    let rsp = req.send().await.unwrap();
    assert_eq!(rsp.status(), 200);
    let on_response = rsp
        .headers()
        .get("x-request-id")
        .map(|v| v.to_str().unwrap().to_owned());
    let echo: Value = rsp.json().await.unwrap();
    let seen = echo["headers"]["x-request-id"]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default();
    (on_response, seen)
}

#[tokio::test]
async fn without_generation_only_a_kept_id_goes_on() {
    let upstream = spawn_upstream(echo_router("users")).await;
    let separate = RequestIdLayer::builder().generate(false).build().unwrap();
    let fused = towergate_observe::ObserveLayer::builder()
        .request_id(RequestIdLayer::builder().generate(false).build().unwrap())
        .build();
    let gateways = [
        gateway(separate, upstream.url()).await,
        serve(
            Router::new()
                .route(
                    "/api/{*rest}",
                    any(forward(upstream.url())).layer(RecordLayer::route("api")),
                )
                .layer(fused),
        )
        .await,
    ];
    for gw in &gateways {
        // None came: none is made, on either side.
        assert_eq!(ids_seen(gw, &[]).await, (None, vec![]));
        // A valid one is kept, as with generation.
        let kept = ids_seen(gw, &["frontend-7"]).await;
        assert_eq!(kept, (Some("frontend-7".into()), vec!["frontend-7".into()]));
        // An invalid one, or two, are not passed on and not replaced.
        assert_eq!(ids_seen(gw, &["has space"]).await, (None, vec![]));
        assert_eq!(ids_seen(gw, &["one", "two"]).await, (None, vec![]));
    }

    // Neither trusted nor generated: ids are only removed.
    let strip = RequestIdLayer::builder()
        .trust_incoming(false)
        .generate(false)
        .build()
        .unwrap();
    let gw = gateway(strip, upstream.url()).await;
    assert_eq!(ids_seen(&gw, &["frontend-7"]).await, (None, vec![]));
    // And a problem answer has no `instance` then.
    let rsp = reqwest::Client::new()
        .get(gw.url("/denied"))
        .send()
        .await
        .unwrap();
    assert!(rsp.headers().get("x-request-id").is_none());
    let problem = towergate_test::assert_problem_reqwest(rsp, 403).await;
    assert!(problem.get("instance").is_none(), "{problem}");
}
