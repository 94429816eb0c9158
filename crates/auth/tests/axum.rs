//! The layers embedded in an axum app, and the `AuthIdentity` extractor in
//! handlers, over a real socket.
#![allow(clippy::unwrap_used)]

mod common;

use axum::Router;
use axum::routing::get as route_get;
use serde_json::{Value, json};
use towergate_auth::{AuthIdentity, JwtLayer, Rule};

use common::*;

async fn me(AuthIdentity(id): AuthIdentity) -> axum::Json<Value> {
    axum::Json(json!({
        "subject": id.subject,
        "scopes": id.scopes,
        "method": id.method,
    }))
}

async fn maybe(id: Option<AuthIdentity>) -> String {
    match id {
        Some(id) => format!("hello {}", id.subject.clone().unwrap_or_default()),
        None => "hello stranger".to_owned(),
    }
}

#[tokio::test]
async fn identity_extractor_in_handlers() {
    let protected = Router::new()
        .route("/me", route_get(me))
        .route(
            "/admin",
            route_get(me).route_layer(
                JwtLayer::builder()
                    .secret(SECRET)
                    .require(Rule::scopes(["admin"]))
                    .build()
                    .unwrap(),
            ),
        )
        .layer(JwtLayer::builder().secret(SECRET).build().unwrap());
    let app = Router::new()
        .merge(protected)
        .route("/public", route_get(maybe))
        .route("/forgot-the-layer", route_get(me));
    let server = towergate_test::spawn_upstream(app).await;
    let url = |p: &str| format!("{}{p}", server.url());
    let token = hs256(&claims("alice"));

    let r = bearer(&url("/me"), &token).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["subject"], "alice");
    assert_eq!(r.body["method"], "jwt");
    assert_eq!(r.body["scopes"], json!(["orders:read", "profile"]));

    let r = get(&url("/me"), &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.challenge(), "Bearer realm=\"api\"");

    let r = bearer(&url("/admin"), &token).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.reason(), "insufficient_scope");

    let r = get(&url("/public"), &[]).await;
    assert_eq!(r.body, "hello stranger");

    // A handler that wants an identity on a route without a layer: a 401
    // problem, never a panic or a 500.
    let r = get(&url("/forgot-the-layer"), &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.headers["content-type"], "application/problem+json");
    assert_eq!(r.reason(), "missing_credentials");
}
