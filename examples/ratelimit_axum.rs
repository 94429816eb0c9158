//! Rate limiting in a plain axum app: `RateLimitLayer` keyed by the
//! `x-api-key` header, 3 requests per minute per key, with no gateway and no
//! configuration file.
//!
//! Run: `cargo run -p towergate-examples --example ratelimit_axum`
//! (it serves on 127.0.0.1:0, calls itself, prints the answers, exits).

use axum::Router;
use axum::routing::get;
use http::HeaderName;
use towergate_ratelimit::{Key, Limit, MissingKey, RateLimitLayer};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let limit = RateLimitLayer::builder()
        .limit(Limit::per_minute(3).name("per-key"))
        .key(Key::header(HeaderName::from_static("x-api-key")))
        .on_missing_key(MissingKey::Refuse(http::StatusCode::UNAUTHORIZED))
        .build()?;
    let app = Router::new()
        .route("/hello", get(|| async { "hello\n" }))
        .layer(limit);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    for (key, n) in [("alice", 4), ("bob", 1)] {
        for _ in 0..n {
            let rsp = get_with_key(addr, Some(key)).await?;
            println!("{key}: {rsp}");
        }
    }
    println!("no key: {}", get_with_key(addr, None).await?);
    Ok(())
}

/// One raw HTTP/1.1 request; returns the status line and the RateLimit header.
async fn get_with_key(addr: std::net::SocketAddr, key: Option<&str>) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let key = key
        .map(|k| format!("x-api-key: {k}\r\n"))
        .unwrap_or_default();
    s.write_all(
        format!("GET /hello HTTP/1.1\r\nHost: localhost\r\n{key}Connection: close\r\n\r\n")
            .as_bytes(),
    )
    .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    let status = out.lines().next().unwrap_or_default().to_owned();
    let ratelimit = out
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("ratelimit:"))
        .unwrap_or("")
        .to_owned();
    Ok(format!("{status}  {ratelimit}"))
}
