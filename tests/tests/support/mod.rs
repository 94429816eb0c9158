//! Shared helpers of the end-to-end tests.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use towergate::RunningGateway;
use towergate::config::{Format, parse_str};

/// Starts a gateway in-process from YAML.
pub async fn gateway(yaml: &str) -> (RunningGateway, SocketAddr) {
    let cfg = parse_str(yaml, Format::Yaml).unwrap_or_else(|e| panic!("{e}"));
    let compiled = towergate::stack::compile(&cfg).unwrap_or_else(|e| panic!("{e}"));
    let gw = towergate::start(compiled).await.expect("start gateway");
    let addr = gw.local_addrs()[0];
    (gw, addr)
}

/// Starts a gateway in-process from the configuration file at `path`
/// (for the tests that reload it).
pub async fn gateway_from_file(path: &std::path::Path) -> (RunningGateway, SocketAddr) {
    let cfg = towergate::config::load_file(path).unwrap_or_else(|e| panic!("{e}"));
    let compiled = towergate::stack::compile(&cfg).unwrap_or_else(|e| panic!("{e}"));
    let gw = towergate::start(compiled).await.expect("start gateway");
    let addr = gw.local_addrs()[0];
    (gw, addr)
}

/// A plain reqwest client with no proxy and a timeout.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// GETs `url` with `headers` and parses the JSON answer (an echo
/// upstream's view of the request, mostly).
pub async fn get_json(url: &str, headers: &[(&str, &str)]) -> serde_json::Value {
    let mut rb = client().get(url);
    for (name, value) in headers {
        rb = rb.header(*name, *value);
    }
    rb.send().await.unwrap().json().await.unwrap()
}

/// Sends `head` (request line and header lines, without the blank line)
/// as written, then `Connection: close`; returns status and body.
pub async fn raw_request(addr: SocketAddr, head: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("{head}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Sends a raw HTTP/1.1 request (so the path is sent exactly as written,
/// with no client-side normalisation) and returns status and body.
pub async fn raw_get(addr: SocketAddr, raw_path: &str, extra: &str) -> (u16, String) {
    let head = format!("GET {raw_path} HTTP/1.1\r\nHost: localhost\r\n{extra}");
    raw_request(addr, head.trim_end_matches("\r\n")).await
}
