//! HTTP/2 to the upstream: h2c by prior knowledge, and ALPN over TLS.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;

use serde_json::json;
use towergate_proxy::{Client, Proxy};
use towergate_test::tls::TestCa;
use towergate_test::{echo_router, spawn_upstream};

use common::{call, get, json, spawn_counting, spawn_tls};

#[tokio::test]
async fn h2c_by_prior_knowledge() {
    let (up, connections) = spawn_counting(echo_router("svc")).await;
    let client = Client::builder().http2_only(true).build().unwrap();
    assert!(client.is_http2_only());
    let proxy = Proxy::builder(format!("http://{}/api", up.addr))
        .client(client)
        .build()
        .unwrap();

    // Concurrent requests share one multiplexed connection.
    let mut tasks = Vec::new();
    for i in 0..4 {
        let proxy = proxy.clone();
        tasks.push(tokio::spawn(async move {
            let req = http::Request::get(format!("/{i}"))
                .header("te", "trailers")
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap();
            json(call(&proxy, req).await).await
        }));
    }
    for (i, task) in tasks.into_iter().enumerate() {
        let v = task.await.unwrap();
        assert_eq!(v["version"], "HTTP/2.0");
        assert_eq!(v["path"], format!("/api/{i}"));
        // The one TE value HTTP/2 allows is kept (gRPC needs it).
        assert_eq!(v["headers"]["te"], json!(["trailers"]));
        assert_eq!(v["headers"]["via"], json!(["1.1 towergate"]));
    }
    assert_eq!(connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn response_via_names_http2() {
    let up = spawn_upstream(echo_router("svc")).await;
    let client = Client::builder().http2_only(true).build().unwrap();
    let proxy = Proxy::builder(up.url()).client(client).build().unwrap();
    let rsp = call(&proxy, get("/")).await;
    assert_eq!(rsp.version(), http::Version::HTTP_2);
    assert_eq!(rsp.headers()["via"], "2 towergate");
}

#[tokio::test]
async fn default_client_speaks_http1_to_plain_upstreams() {
    let up = spawn_upstream(echo_router("svc")).await;
    let proxy = Proxy::builder(up.url()).build().unwrap();
    let v = json(call(&proxy, get("/")).await).await;
    assert_eq!(v["version"], "HTTP/1.1");
}

#[tokio::test]
async fn h2_by_alpn_over_tls() {
    let ca = TestCa::new();
    let cert = ca.leaf(&["localhost"]);
    let up = spawn_tls(echo_router("svc"), &cert, None).await;
    let client = Client::builder()
        .ca_pem(ca.cert_pem.clone())
        .build()
        .unwrap();
    let proxy = Proxy::builder(format!("https://localhost:{}", up.addr.port()))
        .client(client)
        .build()
        .unwrap();
    let v = json(call(&proxy, get("/x")).await).await;
    assert_eq!(v["version"], "HTTP/2.0");
    assert_eq!(v["path"], "/x");
}
