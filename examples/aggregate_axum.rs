//! An aggregate endpoint in a plain axum app, built in Rust with no gateway
//! and no configuration file: `GET /screens/home/{id}` answers one JSON
//! document made of the user (from a users service), that user's orders
//! (found through a field of the first answer) and their notifications (an
//! optional part: if it fails, the answer says so and still comes).
//!
//! The upstream calls go through `towergate_proxy::Proxy`, the gateway's own
//! forwarding service; any `tower::Service` over HTTP would do.
//!
//! Run: `cargo run -p towergate-examples --example aggregate_axum`
//! (it starts the services on 127.0.0.1, calls itself, prints the merged
//! answer, exits).

use std::time::Duration;

use axum::extract::Path;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use towergate_aggregate::{Aggregate, Call};
use towergate_proxy::Proxy;

async fn serve(app: Router) -> Result<String, Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(format!("http://{addr}"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Three small services.
    let users = serve(Router::new().route(
        "/users/{id}",
        get(|Path(id): Path<u64>| async move {
            Json(json!({"id": id, "name": "Ada", "customer_id": id * 100, "password_hash": "x"}))
        }),
    ))
    .await?;
    let orders = serve(Router::new().route(
        "/customers/{cid}/orders",
        get(|Path(cid): Path<u64>| async move {
            Json(json!([{"id": 1, "customer": cid, "total": 12.5}, {"id": 2, "customer": cid, "total": 3.0}]))
        }),
    ))
    .await?;
    let notifications = serve(Router::new().route(
        "/inbox/{id}",
        get(|Path(id): Path<u64>| async move { Json(json!({"user": id, "unread": 3})) }),
    ))
    .await?;

    // The aggregate: three calls, the second waiting for the first.
    let home = Aggregate::builder()
        .target("users", Proxy::builder(users.as_str()).build()?)
        .target("orders", Proxy::builder(orders.as_str()).build()?)
        .target(
            "notifications",
            Proxy::builder(notifications.as_str()).build()?,
        )
        .call(
            Call::new("user", "users")
                .path("/users/{params.id}")
                .deny(["password_hash"]),
        )
        .call(
            Call::new("orders", "orders")
                .path("/customers/{user.customer_id}/orders")
                .allow(["id", "total"]),
        )
        .call(
            Call::new("notifications", "notifications")
                .path("/inbox/{params.id}")
                .required(false)
                .timeout(Duration::from_millis(500))
                .allow(["unread"])
                .merge_top_level(),
        )
        .deadline(Duration::from_secs(2))
        .build()?;

    // Mounted like any other service. The aggregate reads path parameters
    // from `RouteMatch`, which towergate's router sets; in a plain axum app
    // a small middleware copies axum's into it.
    let app = Router::new()
        .route_service("/screens/home/{id}", home)
        .layer(axum::middleware::from_fn(route_params));
    let base = serve(app).await?;

    let client = hyper_get(&format!("{base}/screens/home/42")).await?;
    println!("{client}");
    Ok(())
}

/// Copies axum's path parameters into `towergate_core::RouteMatch`.
async fn route_params(
    params: axum::extract::RawPathParams,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let m = towergate_core::RouteMatch {
        route: "home".into(),
        params: params
            .iter()
            .map(|(k, v)| (k.into(), v.to_owned()))
            .collect(),
    };
    req.extensions_mut().insert(m);
    next.run(req).await
}

/// A GET with a raw HTTP/1.1 exchange, to keep the example's dependencies
/// to the ones it is about.
async fn hyper_get(url: &str) -> Result<String, Box<dyn std::error::Error>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut s = tokio::net::TcpStream::connect(host).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out)
}
