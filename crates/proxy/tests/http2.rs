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
    let mut req = get("/x");
    req.headers_mut()
        .insert("te", http::HeaderValue::from_static("trailers"));
    let v = json(call(&proxy, req).await).await;
    assert_eq!(v["version"], "HTTP/2.0");
    assert_eq!(v["path"], "/x");
    // gRPC's `TE: trailers` reaches an upstream that ALPN made HTTP/2.
    assert_eq!(v["headers"]["te"], json!(["trailers"]), "{v}");
}

/// A TCP relay to `upstream` whose connections opened so far can be made
/// to go silent (nothing forwarded either way, nothing closed): an
/// upstream that vanished without a word. Returns its address and the
/// switch.
async fn freezable_relay(
    upstream: std::net::SocketAddr,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Connections numbered below this are silent.
    let frozen_below = Arc::new(AtomicUsize::new(0));
    let switch = frozen_below.clone();
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((client, _)) = listener.accept().await {
            let id = n;
            n += 1;
            let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                continue;
            };
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            for (mut from, mut to) in [
                (
                    Box::new(cr) as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
                    Box::new(sw) as Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
                ),
                (Box::new(sr) as _, Box::new(cw) as _),
            ] {
                let frozen_below = frozen_below.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 16 * 1024];
                    loop {
                        let Ok(k) = from.read(&mut buf).await else {
                            return;
                        };
                        if k == 0 {
                            return;
                        }
                        if id < frozen_below.load(Ordering::SeqCst) {
                            // Silent: hold both sockets open, forward nothing.
                            tokio::time::sleep(std::time::Duration::from_secs(60)).await;
                            return;
                        }
                        if to.write_all(&buf[..k]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        }
    });
    (addr, switch)
}

#[tokio::test]
async fn a_silent_http2_connection_is_dropped_after_an_unanswered_ping() {
    let (up, _) = spawn_counting(echo_router("svc")).await;
    let (relay, freeze) = freezable_relay(up.addr).await;
    let client = Client::builder()
        .http2_only(true)
        .http2_keep_alive(Some((
            std::time::Duration::from_millis(200),
            std::time::Duration::from_millis(200),
        )))
        .build()
        .unwrap();
    let proxy = Proxy::builder(format!("http://{relay}"))
        .client(client)
        .timeout(std::time::Duration::from_secs(3))
        .build()
        .unwrap();
    assert_eq!(call(&proxy, get("/a")).await.status(), 200);
    // The shared connection goes silent; its unanswered pings close it, and
    // the next request opens another instead of waiting on it to 504.
    freeze.store(1, Ordering::SeqCst);
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    assert_eq!(call(&proxy, get("/b")).await.status(), 200);
}
