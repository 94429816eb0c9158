//! Build and run a whole gateway from a configuration held in code, the way
//! the `towergate` binary does from a file: parse, validate, compile, serve.
//!
//! Run: `cargo run -p towergate-examples --example gateway_in_code`

use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // A stand-in upstream.
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let upstream_addr = upstream.local_addr()?;
    tokio::spawn(async move {
        let app = axum::Router::new()
            .fallback(|uri: http::Uri| async move { format!("orders service saw {uri}") });
        let _ = axum::serve(upstream, app).await;
    });

    let yaml = format!(
        r#"
listen: "127.0.0.1:0"
routes:
  - name: orders
    match: {{ path_prefix: "/orders/", methods: [GET] }}
    strip_prefix: true
    timeout: "2s"
    upstream: "http://{upstream_addr}"
"#
    );
    let cfg = towergate::config::parse_str(&yaml, towergate::config::Format::Yaml)?;
    let gateway = towergate::start(towergate::stack::compile(&cfg)?).await?;
    let addr = gateway.local_addrs()[0];
    println!("gateway on http://{addr}");

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(b"GET /orders/7 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out)).await??;
    println!("{out}");
    gateway.shutdown().await;
    Ok(())
}
