//! Listener limits: header size, header read time (slowloris), open
//! connections.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns panic by design

mod support;

use std::time::Duration;

use support::gateway;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use towergate_test::{echo_router, spawn_upstream};

fn config(upstream: &str, server: &str) -> String {
    format!(
        r#"listen: "127.0.0.1:0"
server: {server}
routes:
  - name: all
    match: {{ path_prefix: "/" }}
    upstream: "{upstream}"
"#
    )
}

/// Reads until the peer closes or `limit` passes; returns what was read and
/// whether the peer closed.
async fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (String, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(limit, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

#[tokio::test]
async fn oversized_headers_are_refused() {
    let echo = spawn_upstream(echo_router("echo")).await;
    let (_gw, addr) = gateway(&config(&echo.url(), "{ max_header_bytes: \"16KiB\" }")).await;
    let c = reqwest::Client::builder().no_proxy().build().unwrap();
    let ok = c
        .get(format!("http://{addr}/"))
        .header("x-big", "a".repeat(4 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET / HTTP/1.1\r\nHost: localhost\r\nx-big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    // The server may close while we are still writing.
    let _ = s.write_all(req.as_bytes()).await;
    let (text, closed) = read_until_closed(&mut s, Duration::from_secs(10)).await;
    assert!(closed, "connection left open");
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 431"),
        "{text}"
    );
}

#[tokio::test]
async fn slow_header_senders_are_disconnected() {
    let echo = spawn_upstream(echo_router("echo")).await;
    let (_gw, addr) = gateway(&config(&echo.url(), "{ header_read_timeout: \"300ms\" }")).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    // Start a request and never finish its head.
    s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nx-slow: ")
        .await
        .unwrap();
    let (text, closed) = read_until_closed(&mut s, Duration::from_secs(10)).await;
    assert!(closed, "a slowloris connection stayed open");
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    // A prompt client on a new connection is served.
    let c = reqwest::Client::builder().no_proxy().build().unwrap();
    assert_eq!(
        c.get(format!("http://{addr}/"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn silent_connections_are_closed_at_the_header_read_timeout() {
    let echo = spawn_upstream(echo_router("echo")).await;
    let (_gw, addr) = gateway(&config(&echo.url(), "{ header_read_timeout: \"300ms\" }")).await;
    // Connected, and nothing sent; then one byte of what could be the
    // HTTP/2 preface. Both used to hold their connection for ever.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut partial = TcpStream::connect(addr).await.unwrap();
    partial.write_all(b"P").await.unwrap();
    for s in [&mut silent, &mut partial] {
        let (text, closed) = read_until_closed(s, Duration::from_secs(10)).await;
        assert!(closed, "a silent connection stayed open");
        assert!(text.is_empty(), "{text}");
    }
}

#[tokio::test]
async fn an_http1_only_listener_refuses_http2() {
    let echo = spawn_upstream(echo_router("echo")).await;
    let yaml = format!(
        r#"listeners:
  - {{ addr: "127.0.0.1:0", http2: false }}
routes:
  - name: all
    match: {{ path_prefix: "/" }}
    upstream: "{}"
"#,
        echo.url()
    );
    let (_gw, addr) = gateway(&yaml).await;
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    assert!(h2.get(format!("http://{addr}/x")).send().await.is_err());
    let h1 = reqwest::Client::builder().no_proxy().build().unwrap();
    let rsp = h1.get(format!("http://{addr}/x")).send().await.unwrap();
    assert_eq!(rsp.status(), 200);
    assert_eq!(rsp.version(), reqwest::Version::HTTP_11);
}

#[tokio::test]
async fn open_connections_are_capped() {
    let echo = spawn_upstream(echo_router("echo")).await;
    let (_gw, addr) = gateway(&config(&echo.url(), "{ max_connections: 2 }")).await;
    let request = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
    // Two keep-alive connections, both served and kept open.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        held.push(s);
    }
    // A third connection waits in the backlog: its request is not served
    // while the other two are open.
    let mut third = TcpStream::connect(addr).await.unwrap();
    third.write_all(request).await.unwrap();
    let mut buf = [0u8; 1024];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut buf)).await;
    assert!(early.is_err(), "third connection served beyond the cap");
    // Closing one lets it in.
    drop(held.pop());
    let n = tokio::time::timeout(Duration::from_secs(10), third.read(&mut buf))
        .await
        .expect("third connection served once a slot freed")
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
}
