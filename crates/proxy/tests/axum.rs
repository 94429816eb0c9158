//! The proxy embedded in an axum app, called with a real HTTP client.
#![allow(clippy::unwrap_used)]

mod common;

use axum::Router;
use axum::error_handling::HandleError;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use towergate_core::BoxError;
use towergate_proxy::Proxy;
use towergate_proxy::error::to_problem;
use towergate_test::{assert_problem_reqwest, echo_router, spawn_upstream};

use common::{dead_port, spawn_front};

/// How an embedder answers the proxy's errors: a problem document.
async fn problem(err: BoxError) -> http::Response<http_body_util::Full<bytes::Bytes>> {
    to_problem(&*err).into_full_response()
}

#[tokio::test]
async fn mounted_in_an_axum_router() {
    let users = spawn_upstream(echo_router("users")).await;
    let down = dead_port().await;
    let users_proxy = Proxy::builder(format!("{}/v1/users", users.url()))
        .build()
        .unwrap();
    let down_proxy = Proxy::builder(format!("http://{down}")).build().unwrap();
    let app = Router::new()
        .nest_service("/users", HandleError::new(users_proxy, problem))
        .nest_service("/down", HandleError::new(down_proxy, problem));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let http = reqwest::Client::new();
    let rsp = http
        .get(format!("http://{addr}/users/42?fields=name"))
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    assert_eq!(rsp.headers()["via"], "1.1 towergate");
    let v: Value = rsp.json().await.unwrap();
    assert_eq!(v["service"], "users");
    assert_eq!(v["path"], "/v1/users/42");
    assert_eq!(v["query"], "fields=name");
    assert_eq!(v["headers"]["host"], json!([users.addr.to_string()]));
    assert_eq!(v["headers"]["x-forwarded-host"], json!([addr.to_string()]));

    let rsp = http
        .get(format!("http://{addr}/down/x"))
        .send()
        .await
        .unwrap();
    let problem = assert_problem_reqwest(rsp, 502).await;
    assert_eq!(problem["title"], "Bad Gateway");

    server.abort();
}

#[tokio::test]
async fn front_server_records_the_real_peer() {
    let up = spawn_upstream(echo_router("svc")).await;
    let front = spawn_front(Proxy::builder(up.url()).build().unwrap()).await;
    let rsp = reqwest::Client::new()
        .post(format!("http://{}/items", front.addr))
        .header("x-forwarded-for", "6.6.6.6")
        .body("payload")
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    let v: Value = rsp.json().await.unwrap();
    // The untrusted client's claim is replaced by what the socket says.
    assert_eq!(v["headers"]["x-forwarded-for"], json!(["127.0.0.1"]));
    assert_eq!(v["method"], "POST");
    assert_eq!(v["body_len"], 7);
}
