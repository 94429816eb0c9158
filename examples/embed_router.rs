//! Embed towergate's router in an existing axum app: the app keeps its own
//! routes and hands everything else to a `towergate_routing::Router` whose
//! routes forward to upstream services with `towergate_proxy::Proxy`.
//!
//! Run: `cargo run -p towergate-examples --example embed_router`
//! (it starts its own demo upstream, calls itself, prints and exits).

use std::convert::Infallible;

use axum::body::Body;
use axum::routing::get;
use http::{Request, Response};
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;
use towergate_proxy::Proxy;
use towergate_routing::{Route, Router};

type Svc = BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>;

/// Wraps a proxy so the router sees an infallible service, as axum wants:
/// upstream failures become problem+json answers.
fn forward(upstream: &str) -> Result<Svc, Box<dyn std::error::Error>> {
    let proxy = Proxy::builder(upstream).build()?;
    Ok(BoxCloneSyncService::new(tower::service_fn(
        move |req: Request<Body>| {
            let proxy = proxy.clone();
            async move {
                Ok::<_, Infallible>(match proxy.oneshot(req).await {
                    Ok(rsp) => rsp.map(Body::new),
                    Err(e) => towergate_proxy::error::to_problem(&*e)
                        .into_full_response()
                        .map(Body::new),
                })
            }
        },
    )))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A stand-in for a real microservice.
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let upstream_addr = upstream.local_addr()?;
    tokio::spawn(async move {
        let app = axum::Router::new()
            .fallback(|uri: http::Uri| async move { format!("users service saw {uri}") });
        let _ = axum::serve(upstream, app).await;
    });

    let gateway: Router<Svc> = Router::builder()
        .route(
            Route::new("users")
                .path_prefix("/users/")
                .strip_prefix(true),
            forward(&format!("http://{upstream_addr}"))?,
        )
        .build()?;

    // The app's own routes first; the gateway router is the fallback.
    let app = axum::Router::new()
        .route("/health", get(|| async { "ok" }))
        .fallback_service(gateway);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    for path in ["/health", "/users/42", "/nope"] {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
        let mut out = String::new();
        stream.read_to_string(&mut out).await?;
        let status = out.lines().next().unwrap_or_default().to_owned();
        let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
        println!("GET {path} -> {status}\n    {body}");
    }
    Ok(())
}
