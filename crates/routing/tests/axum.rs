//! The router embedded in an axum application, as its fallback service.

mod support;

use std::net::SocketAddr;

use axum::body::Body;
use axum::routing::get;
use http::{Method, Request, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower::ServiceExt;
use towergate_routing::{Route, Router};
use towergate_test::{assert_problem, assert_problem_reqwest, spawn_upstream};

use support::{Echo, json};

/// An axum app with its own `/health` route and the gateway routes behind it.
fn app() -> axum::Router {
    let gateway = Router::builder()
        .route(
            Route::new("user")
                .method(Method::GET)
                .path_template("/api/users/{id}"),
            Echo::named("user"),
        )
        .route(
            Route::new("public").path_prefix("/public/"),
            Echo::named("public"),
        )
        .route(
            Route::new("admin").path_prefix("/admin/"),
            Echo::named("admin"),
        )
        .build()
        .expect("valid routes");
    axum::Router::new()
        .route("/health", get(|| async { "ok" }))
        .fallback_service(gateway)
}

/// Sends a request line exactly as written: HTTP clients normalise dot
/// segments before sending, which would hide what the router does with them.
async fn raw_get(addr: SocketAddr, target: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await.expect("read");
    let text = String::from_utf8(buf).expect("UTF-8 response");
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .expect("end of headers");
    (status, body)
}

#[tokio::test]
async fn fallback_over_a_real_socket() {
    let server = spawn_upstream(app()).await;
    let client = reqwest::Client::new();

    let rsp = client
        .get(format!("{}/health", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    assert_eq!(rsp.text().await.unwrap(), "ok");

    let rsp = client
        .get(format!("{}/api/users/42?x=1", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    let v: serde_json::Value = rsp.json().await.unwrap();
    assert_eq!(v["route"], "user");
    assert_eq!(v["params"]["id"], "42");
    assert_eq!(v["query"], "x=1");

    let rsp = client
        .get(format!("{}/nope", server.url()))
        .send()
        .await
        .unwrap();
    let v = assert_problem_reqwest(rsp, 404).await;
    assert_eq!(v["detail"], "no route matches GET /nope");

    let rsp = client
        .post(format!("{}/api/users/42", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.headers()["allow"], "GET, HEAD");
    assert_problem_reqwest(rsp, 405).await;
}

#[tokio::test]
async fn traversal_over_a_real_socket() {
    let server = spawn_upstream(app()).await;
    for target in [
        "/public/../admin/x",
        "/public/%2e%2e/admin/x",
        "/public/%2E%2E/admin/x",
    ] {
        let (status, body) = raw_get(server.addr, target).await;
        assert_eq!(status, 200, "{target}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["service"], "admin", "{target}");
        assert_eq!(v["path"], "/admin/x", "{target}");
    }
    let (status, body) = raw_get(server.addr, "/public/..%2fadmin/x").await;
    assert_eq!(status, 400);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], 400);
    assert!(
        v["detail"].as_str().unwrap().contains("encoded slash"),
        "{v}"
    );
}

#[tokio::test]
async fn fallback_with_oneshot() {
    let rsp = app()
        .oneshot(Request::get("/health").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(rsp.status(), StatusCode::OK);

    let rsp = app()
        .oneshot(Request::head("/api/users/7").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(rsp.status(), StatusCode::OK);

    let rsp = app()
        .oneshot(Request::get("/public/a//b").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let v = json(rsp).await;
    assert_eq!(v["service"], "public");
    assert_eq!(v["path"], "/public/a/b");

    let rsp = app()
        .oneshot(Request::delete("/api/users/7").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(rsp.headers()["allow"], "GET, HEAD");
    assert_problem(rsp, 405).await;
}
