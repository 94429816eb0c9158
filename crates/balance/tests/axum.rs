//! A `Balance` mounted in an axum `Router`, proving it embeds: errors are
//! answered with problem documents by the app, as the gateway's edge does.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use axum::Router;
use axum::error_handling::HandleError;
use axum::response::IntoResponse;
use support::{Behaviour, make_endpoint, start};
use towergate_balance::{Balance, Pool, error::to_problem};
use towergate_core::BoxError;

#[tokio::test]
async fn balance_in_an_axum_router() {
    let a = start(([127, 0, 0, 1], 0).into(), "a", Behaviour::ok()).await;
    let b = start(([127, 0, 0, 1], 0).into(), "b", Behaviour::ok()).await;
    let users = Pool::builder("users", make_endpoint::<axum::body::Body>())
        .endpoints([a.endpoint(), b.endpoint()])
        .build()
        .unwrap();
    let empty = Pool::builder("empty", make_endpoint::<axum::body::Body>())
        .build()
        .unwrap();
    let rescue = |err: BoxError| async move {
        match to_problem(&*err) {
            Some(p) => p.into_full_response().into_response(),
            None => http::StatusCode::BAD_GATEWAY.into_response(),
        }
    };
    let app = Router::new()
        .route_service("/users", HandleError::new(Balance::new(users), rescue))
        .route_service("/empty", HandleError::new(Balance::new(empty), rescue));
    let gateway = towergate_test::spawn_upstream(app).await;

    let client = reqwest::Client::new();
    for _ in 0..10 {
        let rsp = client
            .get(format!("{}/users", gateway.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(rsp.status(), 200);
        let v: serde_json::Value = rsp.json().await.unwrap();
        assert!(v["name"] == "a" || v["name"] == "b");
    }
    assert_eq!(a.hits() + b.hits(), 10);

    let rsp = client
        .get(format!("{}/empty", gateway.url()))
        .send()
        .await
        .unwrap();
    let problem = towergate_test::assert_problem_reqwest(rsp, 503).await;
    assert_eq!(
        problem["detail"],
        "no healthy upstream endpoint is available"
    );
}
