//! Forwarding through the real gateway: headers, streaming, upgrades,
//! HTTP/2, TLS termination with SNI, upstream failures, body limits.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns panic by design

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ws::{Message as WsMessage, WebSocketUpgrade};
use axum::routing::get;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use support::{client, gateway};
use tokio::sync::Notify;
use towergate_test::{assert_problem_reqwest, echo_router, spawn_upstream};

fn one_route(upstream: &str, extra_route: &str, extra_top: &str) -> String {
    format!(
        r#"listen: "127.0.0.1:0"
{extra_top}
routes:
  - name: all
    match: {{ path_prefix: "/" }}
    upstream: "{upstream}"
{extra_route}
"#
    )
}

fn header<'a>(v: &'a Value, name: &str) -> Option<&'a str> {
    v["headers"][name][0].as_str()
}

#[tokio::test]
async fn one_host_for_routing_forwarding_and_caching() {
    // One reader taking the target's host and another the `Host` field is
    // how caches get poisoned: the gateway makes them agree, or refuses.
    let echo = spawn_upstream(echo_router("echo")).await;
    let (_gw, addr) = gateway(&one_route(&echo.url(), "", "")).await;
    // Absolute form: the target's authority wins over `Host`.
    let (status, body) = support::raw_request(
        addr,
        "GET http://victim.example/x HTTP/1.1\r\nHost: evil.example",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(header(&v, "x-forwarded-host"), Some("victim.example"));
    // A `Host` that is not a host, or two of them: 400 problem+json.
    for head in [
        "GET /b HTTP/1.1\r\nHost: victim.example/a",
        "GET /b HTTP/1.1\r\nHost: user@victim.example",
        "GET /b HTTP/1.1\r\nHost: victim.example\r\nHost: evil.example",
    ] {
        let (status, body) = support::raw_request(addr, head).await;
        assert_eq!(status, 400, "{head}: {body}");
        let p: Value = serde_json::from_str(&body).unwrap();
        assert!(p["detail"].as_str().unwrap().contains("Host"), "{p}");
    }
}

#[tokio::test]
async fn connection_cannot_remove_what_the_gateway_adds() {
    // A client's `Connection` names headers it wants dropped at the next
    // hop: its own, not the identity and request id the gateway sets.
    let echo = spawn_upstream(echo_router("echo")).await;
    let yaml = format!(
        r#"listen: "127.0.0.1:0"
auth_providers:
  keys: {{ api_key: {{ header: x-api-key, keys: [{{ consumer: acme, key: "acme-key-0123456789" }}] }} }}
routes:
  - name: all
    match: {{ path_prefix: "/" }}
    upstream: "{}"
    auth: {{ any_of: [keys], identity_headers: {{ consumer: x-consumer }} }}
"#,
        echo.url()
    );
    let (_gw, addr) = gateway(&yaml).await;
    let (status, body) = support::raw_request(
        addr,
        "GET /x HTTP/1.1\r\nHost: localhost\r\nx-api-key: acme-key-0123456789\r\nConnection: x-consumer, x-request-id, x-drop-me\r\nx-drop-me: 1",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(header(&v, "x-consumer"), Some("acme"), "{v}");
    assert!(header(&v, "x-request-id").is_some(), "{v}");
    assert!(v["headers"].get("x-drop-me").is_none(), "{v}");
    assert!(v["headers"].get("connection").is_none(), "{v}");
}

#[tokio::test]
async fn forwarding_headers_from_untrusted_peer() {
    let echo = spawn_upstream(echo_router("echo")).await;
    let (_gw, addr) = gateway(&one_route(
        &echo.url(),
        "",
        "server: { trusted_proxies: [\"10.0.0.0/8\"] }",
    ))
    .await;
    let (status, body) = support::raw_get(
        addr,
        "/x",
        "X-Forwarded-For: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\nX-Forwarded-Proto: https\r\nConnection: x-drop-me, keep-alive\r\nx-drop-me: 1\r\nKeep-Alive: timeout=5\r\nProxy-Authorization: Basic Zm9vOmJhcg==\r\nTE: gzip\r\nx-keep-me: yes\r\n",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    for gone in [
        "x-drop-me",
        "keep-alive",
        "proxy-authorization",
        "te",
        "connection",
    ] {
        assert!(
            v["headers"].get(gone).is_none(),
            "{gone} must not be forwarded: {v}"
        );
    }
    assert_eq!(header(&v, "x-keep-me"), Some("yes"));
    // The spoofed values from an untrusted peer are replaced.
    assert_eq!(header(&v, "x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(header(&v, "x-forwarded-proto"), Some("http"));
    assert_eq!(header(&v, "x-forwarded-host"), Some("localhost"));
    let fwd = header(&v, "forwarded").unwrap();
    assert!(
        fwd.contains("for=127.0.0.1") && !fwd.contains("6.6.6.6"),
        "{fwd}"
    );
    assert!(header(&v, "via").unwrap().contains("towergate"));
    // Host is the upstream's by default.
    assert_eq!(header(&v, "host"), Some(echo.addr.to_string().as_str()));
    assert!(header(&v, "x-request-id").is_some());
}

#[tokio::test]
async fn forwarding_headers_from_trusted_peer_and_preserve_host() {
    let echo = spawn_upstream(echo_router("echo")).await;
    let yaml = format!(
        r#"listen: "127.0.0.1:0"
server: {{ trusted_proxies: ["127.0.0.1"] }}
routes:
  - name: all
    match: {{ path_prefix: "/" }}
    preserve_host: true
    upstream: "{}"
"#,
        echo.url()
    );
    let (_gw, addr) = gateway(&yaml).await;
    let v: Value = client()
        .get(format!("http://{addr}/x"))
        .header("x-forwarded-for", "6.6.6.6")
        .header("host", "shop.example.com")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(header(&v, "x-forwarded-for"), Some("6.6.6.6, 127.0.0.1"));
    assert_eq!(header(&v, "host"), Some("shop.example.com"));
}

#[tokio::test]
async fn slow_chunked_response_streams_chunk_by_chunk() {
    // The upstream sends the next chunk only once the client has received
    // the previous one: a gateway that buffered would deadlock here.
    let got = Arc::new(Notify::new());
    let got2 = got.clone();
    let app = Router::new().route(
        "/slow",
        get(move || {
            let got = got2.clone();
            async move {
                let stream = futures_util::stream::unfold(0u32, move |i| {
                    let got = got.clone();
                    async move {
                        if i == 3 {
                            return None;
                        }
                        if i > 0 {
                            got.notified().await;
                        }
                        Some((
                            Ok::<_, std::io::Error>(Bytes::from(format!("chunk{i};"))),
                            i + 1,
                        ))
                    }
                });
                Body::from_stream(stream)
            }
        }),
    );
    let up = spawn_upstream(app).await;
    let (_gw, addr) = gateway(&one_route(&up.url(), "", "")).await;
    let rsp = client()
        .get(format!("http://{addr}/slow"))
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    let mut stream = rsp.bytes_stream();
    let mut seen = String::new();
    let all = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(chunk) = stream.next().await {
            seen.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
            got.notify_one();
        }
    })
    .await;
    assert!(
        all.is_ok(),
        "stalled after {seen:?}: the response was buffered"
    );
    assert_eq!(seen, "chunk0;chunk1;chunk2;");
}

#[tokio::test]
async fn websocket_echo_through_the_gateway() {
    let up = spawn_upstream(ws_echo()).await;
    let (_gw, addr) = gateway(&one_route(&up.url(), "", "")).await;
    let (mut ws, rsp) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    assert_eq!(rsp.status(), 101);
    for i in 0..5 {
        ws.send(tokio_tungstenite::tungstenite::Message::Text(
            format!("hello {i}").into(),
        ))
        .await
        .unwrap();
        let msg = ws.next().await.unwrap().unwrap();
        assert_eq!(msg.into_text().unwrap().as_str(), format!("echo:hello {i}"));
    }
    ws.close(None).await.unwrap();
}

/// Browsers apply no CORS to WebSockets: on a route with CORS origins, an
/// upgrade from another origin is refused, one from an allowed origin or
/// without `Origin` (not a browser) goes through.
#[tokio::test]
async fn a_websocket_from_an_origin_cors_does_not_allow_is_refused() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let up = spawn_upstream(ws_echo()).await;
    let (_gw, addr) = gateway(&one_route(
        &up.url(),
        "    cors: { origins: [\"https://app.example\"], credentials: true }",
        "",
    ))
    .await;
    let open = |origin: Option<&'static str>| async move {
        let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
        if let Some(o) = origin {
            req.headers_mut().insert("origin", o.parse().unwrap());
        }
        match tokio_tungstenite::connect_async(req).await {
            Ok((_, rsp)) => rsp.status().as_u16(),
            Err(tokio_tungstenite::tungstenite::Error::Http(rsp)) => rsp.status().as_u16(),
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(open(Some("https://evil.example")).await, 403);
    assert_eq!(open(Some("https://app.example")).await, 101);
    assert_eq!(open(None).await, 101);
}

/// An upstream that echoes WebSocket text messages back.
fn ws_echo() -> Router {
    Router::new().route(
        "/ws",
        get(|ws: WebSocketUpgrade| async move {
            ws.on_upgrade(|mut socket| async move {
                while let Some(Ok(msg)) = socket.recv().await {
                    if let WsMessage::Text(t) = msg {
                        let _ = socket
                            .send(WsMessage::Text(format!("echo:{}", t.as_str()).into()))
                            .await;
                    }
                }
            })
        }),
    )
}

#[tokio::test]
async fn an_idle_websocket_tunnel_is_closed() {
    let up = spawn_upstream(ws_echo()).await;
    let (_gw, addr) = gateway(&one_route(
        &up.url(),
        "",
        "server: { tunnel_idle_timeout: \"400ms\" }",
    ))
    .await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    let text = tokio_tungstenite::tungstenite::Message::Text;
    // Traffic keeps it open well past the idle timeout...
    for i in 0..6 {
        ws.send(text(format!("ping {i}").into())).await.unwrap();
        let msg = ws.next().await.unwrap().unwrap();
        assert_eq!(msg.into_text().unwrap().as_str(), format!("echo:ping {i}"));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // ...and silence closes it.
    let closed = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("closed within the idle timeout");
    assert!(
        !matches!(
            closed,
            Some(Ok(tokio_tungstenite::tungstenite::Message::Text(_)))
        ),
        "{closed:?}"
    );
}

#[tokio::test]
async fn a_shutdown_drains_websocket_tunnels_too() {
    // After its 101 a tunnel is no longer hyper's connection: the drain
    // still waits for it (up to drain_timeout), as for a request.
    let up = spawn_upstream(ws_echo()).await;
    let (gw, addr) = gateway(&one_route(
        &up.url(),
        "",
        "server: { drain_timeout: \"20s\" }",
    ))
    .await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    let text = tokio_tungstenite::tungstenite::Message::Text;
    ws.send(text("before".into())).await.unwrap();
    let msg = ws.next().await.unwrap().unwrap();
    assert_eq!(msg.into_text().unwrap().as_str(), "echo:before");
    let shutdown = tokio::spawn(gw.shutdown());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !shutdown.is_finished(),
        "the drain did not wait for the tunnel"
    );
    ws.send(text("during".into())).await.unwrap();
    let msg = ws.next().await.unwrap().unwrap();
    assert_eq!(msg.into_text().unwrap().as_str(), "echo:during");
    ws.close(None).await.unwrap();
    drop(ws);
    let drained = tokio::time::timeout(Duration::from_secs(10), shutdown)
        .await
        .expect("the drain ended once the tunnel closed")
        .unwrap();
    assert!(drained);
}

#[tokio::test]
async fn idle_connections_close_as_the_shutdown_begins() {
    // Connections waiting for their next request (HTTP/1.1 keep-alive,
    // HTTP/2 with no stream open) are closed at once: the drain does not
    // wait for its timeout.
    let up = spawn_upstream(echo_router("up")).await;
    let (gw, addr) = gateway(&one_route(
        &up.url(),
        "",
        "server: { drain_timeout: \"20s\" }",
    ))
    .await;
    let h1 = client();
    assert_eq!(
        h1.get(format!("http://{addr}/x"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let (mut sender, h2_task) = h2_connection(addr).await;
    let rsp = h2_get(&mut sender, addr, "/y").await;
    assert_eq!(rsp.status(), 200);
    let started = std::time::Instant::now();
    let drained = tokio::time::timeout(Duration::from_secs(10), gw.shutdown())
        .await
        .expect("the drain ended");
    assert!(drained);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    tokio::time::timeout(Duration::from_secs(5), h2_task)
        .await
        .expect("the HTTP/2 connection was closed")
        .unwrap();
}

#[tokio::test]
async fn a_websocket_tunnel_counts_as_its_connection() {
    // hyper hands the client's connection over to the tunnel after the
    // 101: the tunnel keeps it counted in the gauge and in
    // `max_connections`, until it closes.
    let up = spawn_upstream(ws_echo()).await;
    let (gw, addr) = gateway(&one_route(&up.url(), "", "server: { max_connections: 1 }")).await;
    let gauge = |name: &str| {
        let page = gw.live().registry().metrics().encode();
        page.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ').map(str::to_owned))
            .map(|v| v.trim().to_owned())
    };
    let open = || gauge("towergate_open_connections");
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    ws.send(tokio_tungstenite::tungstenite::Message::Text("hi".into()))
        .await
        .unwrap();
    let msg = ws.next().await.unwrap().unwrap();
    assert_eq!(msg.into_text().unwrap().as_str(), "echo:hi");
    assert_eq!(
        open().as_deref(),
        Some("1"),
        "the tunnel is an open connection"
    );
    assert_eq!(gauge("towergate_open_tunnels").as_deref(), Some("1"));
    // The one connection allowed is the tunnel's: another client waits.
    let quick = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    assert!(
        quick.get(format!("http://{addr}/ws")).send().await.is_err(),
        "served beyond max_connections"
    );
    ws.close(None).await.unwrap();
    drop(ws);
    // Once the tunnel is gone, its place is free again.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(r) = quick.get(format!("http://{addr}/nope")).send().await {
            assert_eq!(r.status(), 404);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the tunnel's place was never freed"
        );
    }
    assert_eq!(gauge("towergate_open_tunnels").as_deref(), Some("0"));
}

#[tokio::test]
async fn http2_client_and_h2c_upstream() {
    let echo = spawn_upstream(echo_router("echo")).await;
    let yaml = format!(
        r#"listen: "127.0.0.1:0"
upstreams:
  h2:
    url: "{}"
    http2: true
routes:
  - name: h1
    match: {{ path_prefix: "/h1/" }}
    upstream: "{}"
  - name: h2
    match: {{ path_prefix: "/h2/" }}
    upstream: h2
  - name: h2-preserve
    match: {{ path_prefix: "/keep/" }}
    upstream: h2
    preserve_host: true
"#,
        echo.url(),
        echo.url()
    );
    let (_gw, addr) = gateway(&yaml).await;
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let rsp = h2.get(format!("http://{addr}/h1/x")).send().await.unwrap();
    assert_eq!(rsp.version(), reqwest::Version::HTTP_2);
    let v: Value = rsp.json().await.unwrap();
    assert_eq!(v["version"], "HTTP/1.1", "upstream leg is HTTP/1.1");
    // Cookies split over several HTTP/2 fields are one line at HTTP/1.1
    // (RFC 9113 8.2.3).
    let v: Value = h2
        .get(format!("http://{addr}/h1/x"))
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        v["headers"]["cookie"],
        serde_json::json!(["a=1; b=2"]),
        "{v}"
    );
    // Large body over h2 in both directions.
    let body = vec![b'x'; 3 * 1024 * 1024];
    let v: Value = h2
        .post(format!("http://{addr}/h2/upload"))
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["version"], "HTTP/2.0", "upstream leg is h2c");
    assert_eq!(v["body_len"], 3 * 1024 * 1024);
    // Over HTTP/2 the host is `:authority`: the upstream's, or the
    // client's with `preserve_host`, and no `host` field beside it.
    let upstream = echo.url().trim_start_matches("http://").to_owned();
    let v: Value = h2
        .get(format!("http://{addr}/h2/x"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["authority"], upstream.as_str(), "{v}");
    assert!(v["headers"].get("host").is_none(), "{v}");
    let v: Value = reqwest::Client::new()
        .get(format!("http://{addr}/keep/x"))
        .header("host", "public.example")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["version"], "HTTP/2.0");
    assert_eq!(v["authority"], "public.example", "{v}");
    assert!(v["headers"].get("host").is_none(), "{v}");
}

/// An HTTP/2 connection of hyper's client to `addr`: the request sender,
/// and the connection's task, which ends when the gateway closes it.
async fn h2_connection(
    addr: std::net::SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<http_body_util::Empty<Bytes>>,
    tokio::task::JoinHandle<()>,
) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    (sender, task)
}

async fn h2_get(
    sender: &mut hyper::client::conn::http2::SendRequest<http_body_util::Empty<Bytes>>,
    addr: std::net::SocketAddr,
    path: &str,
) -> hyper::Response<hyper::body::Incoming> {
    sender.ready().await.unwrap();
    let req = http::Request::get(format!("http://{addr}{path}"))
        .body(http_body_util::Empty::new())
        .unwrap();
    sender.send_request(req).await.unwrap()
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed() {
    use http_body_util::BodyExt;
    // `/stream` answers in five chunks 250 ms apart: 1.25 s, well past the
    // idle timeout, with a stream open all along.
    let app = echo_router("up").route(
        "/stream",
        get(|| async {
            let chunks = futures_util::stream::unfold(0u32, |i| async move {
                if i == 5 {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
                Some((Ok::<_, std::io::Error>(Bytes::from("tick;")), i + 1))
            });
            Body::from_stream(chunks)
        }),
    );
    let up = spawn_upstream(app).await;
    let (_gw, addr) = gateway(&one_route(
        &up.url(),
        "",
        "server: { http2_idle_timeout: \"500ms\" }",
    ))
    .await;

    // A connection that never opens a stream is closed.
    let (_sender, task) = h2_connection(addr).await;
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("a silent HTTP/2 connection is closed after the idle timeout")
        .unwrap();

    // Requests closer together than the timeout keep the connection.
    let (mut sender, task) = h2_connection(addr).await;
    for _ in 0..5 {
        let rsp = h2_get(&mut sender, addr, "/x").await;
        assert_eq!(rsp.status(), 200);
        rsp.into_body().collect().await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A stream open for longer than the timeout keeps it too: halfway
    // through, another request on the same connection is still taken
    // (after a `GOAWAY` it would be refused).
    let rsp = h2_get(&mut sender, addr, "/stream").await;
    assert_eq!(rsp.status(), 200);
    let body = tokio::spawn(async move { rsp.into_body().collect().await.unwrap().to_bytes() });
    tokio::time::sleep(Duration::from_millis(800)).await;
    let rsp = h2_get(&mut sender, addr, "/y").await;
    assert_eq!(rsp.status(), 200);
    rsp.into_body().collect().await.unwrap();
    assert_eq!(body.await.unwrap(), "tick;".repeat(5));
    assert!(!task.is_finished(), "closed while streams were open");
    // Then, with nothing open, it is closed.
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("an idle HTTP/2 connection is closed after the idle timeout")
        .unwrap();
    assert!(sender.is_closed());
}

#[tokio::test]
async fn a_response_body_that_pauses_too_long_is_cut() {
    // `/steady` sends a chunk every 150 ms for 1.2 s; `/stall` sends one,
    // then nothing for 30 s.
    let chunks = |every: u64, n: u32| {
        futures_util::stream::unfold(0u32, move |i| async move {
            if i == n {
                return None;
            }
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(every)).await;
            }
            Some((Ok::<_, std::io::Error>(Bytes::from("tick;")), i + 1))
        })
    };
    let app = Router::new()
        .route(
            "/steady",
            get(move || async move { Body::from_stream(chunks(150, 8)) }),
        )
        .route(
            "/stall",
            get(move || async move { Body::from_stream(chunks(30_000, 2)) }),
        );
    let up = spawn_upstream(app).await;
    let yaml = format!(
        r#"listen: "127.0.0.1:0"
upstreams:
  svc: {{ url: "{}", body_idle_timeout: "400ms" }}
routes:
  - name: all
    match: {{ path_prefix: "/" }}
    upstream: svc
"#,
        up.url()
    );
    let (_gw, addr) = gateway(&yaml).await;
    let body = client()
        .get(format!("http://{addr}/steady"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        body,
        "tick;".repeat(8),
        "pauses shorter than the timeout pass"
    );
    let rsp = client()
        .get(format!("http://{addr}/stall"))
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    let read = tokio::time::timeout(Duration::from_secs(10), rsp.bytes()).await;
    assert!(
        matches!(read, Ok(Err(_))),
        "a stalled body is cut, not held: {read:?}"
    );
}

#[tokio::test]
async fn upstream_down_is_502_and_slow_is_504() {
    // A port with nothing listening: bind, read the port, close.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let slow = spawn_upstream(Router::new().route(
        "/",
        get(|| async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            "late"
        }),
    ))
    .await;
    let yaml = format!(
        r#"listen: "127.0.0.1:0"
routes:
  - name: dead
    match: {{ path_prefix: "/dead/" }}
    strip_prefix: true
    upstream: "http://{dead}"
  - name: slow
    match: {{ path_prefix: "/slow/" }}
    strip_prefix: true
    timeout: "300ms"
    upstream: "{}"
"#,
        slow.url()
    );
    let (_gw, addr) = gateway(&yaml).await;
    let rsp = client()
        .get(format!("http://{addr}/dead/"))
        .send()
        .await
        .unwrap();
    let id = rsp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let v = assert_problem_reqwest(rsp, 502).await;
    assert_eq!(
        v["instance"],
        id.as_str(),
        "problem instance is the request id"
    );
    let detail = v["detail"].as_str().unwrap_or("");
    assert!(
        !detail.contains("refused") && !detail.contains("127.0.0.1"),
        "no internal error text: {detail}"
    );
    let rsp = client()
        .get(format!("http://{addr}/slow/"))
        .send()
        .await
        .unwrap();
    assert_problem_reqwest(rsp, 504).await;
}

#[tokio::test]
async fn body_limit_is_413() {
    let echo = spawn_upstream(echo_router("echo")).await;
    let (_gw, addr) = gateway(&one_route(&echo.url(), "    max_body: \"1KiB\"", "")).await;
    let c = client();
    let rsp = c
        .post(format!("http://{addr}/x"))
        .body(vec![0u8; 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    // Declared too large: refused before reading.
    let rsp = c
        .post(format!("http://{addr}/x"))
        .body(vec![0u8; 1025])
        .send()
        .await
        .unwrap();
    assert_problem_reqwest(rsp, 413).await;
    // Chunked, no length: counted while streaming.
    let chunks = futures_util::stream::iter(
        (0..8).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![1u8; 512]))),
    );
    let rsp = c
        .post(format!("http://{addr}/x"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_problem_reqwest(rsp, 413).await;
}

#[tokio::test]
async fn tls_termination_with_two_sni_names_and_alpn_h2() {
    use towergate_test::tls::TestCa;
    let ca = TestCa::new();
    let a = ca.leaf(&["a.test"]);
    let b = ca.leaf(&["b.test", "*.b.test"]);
    let dir = tempdir();
    for (n, c) in [("a", &a), ("b", &b)] {
        std::fs::write(dir.join(format!("{n}.crt")), &c.cert_pem).unwrap();
        std::fs::write(dir.join(format!("{n}.key")), &c.key_pem).unwrap();
    }
    let echo = spawn_upstream(echo_router("echo")).await;
    let yaml = format!(
        r#"listeners:
  - addr: "127.0.0.1:0"
    tls:
      certificates:
        - {{ cert: "{d}/a.crt", key: "{d}/a.key", server_names: ["a.test"] }}
        - {{ cert: "{d}/b.crt", key: "{d}/b.key", server_names: ["b.test", "*.b.test"] }}
routes:
  - name: all
    match: {{ path_prefix: "/" }}
    upstream: "{}"
"#,
        echo.url(),
        d = dir.display()
    );
    let (_gw, addr) = gateway(&yaml).await;

    // The certificate presented depends on SNI.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der()).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    for (name, want) in [
        ("a.test", &a.cert_der),
        ("b.test", &b.cert_der),
        ("x.b.test", &b.cert_der),
    ] {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let sn = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
        let tls = connector
            .connect(sn, tcp)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let (_, conn) = tls.get_ref();
        assert_eq!(&conn.peer_certificates().unwrap()[0], want, "{name}");
    }

    // A real HTTPS request, negotiating h2 by ALPN.
    let c = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.cert_pem.as_bytes()).unwrap())
        .resolve("b.test", addr)
        .build()
        .unwrap();
    let rsp = c
        .get(format!("https://b.test:{}/hello", addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.version(), reqwest::Version::HTTP_2);
    let v: Value = rsp.json().await.unwrap();
    assert_eq!(v["path"], "/hello");
    assert_eq!(header(&v, "x-forwarded-proto"), Some("https"));
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "towergate-e2e-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_after_the_send_timeout() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // An endless response: only the gateway giving up ends it.
    let upstream_done = Arc::new(AtomicBool::new(false));
    let done = upstream_done.clone();
    let app = Router::new().route(
        "/endless",
        get(move || {
            let done = done.clone();
            async move {
                struct Flag(Arc<AtomicBool>);
                impl Drop for Flag {
                    fn drop(&mut self) {
                        self.0.store(true, Ordering::SeqCst);
                    }
                }
                let flag = Flag(done);
                let chunks = futures_util::stream::repeat_with(move || {
                    let _ = &flag;
                    Ok::<_, std::io::Error>(Bytes::from(vec![b'x'; 64 * 1024]))
                });
                Body::from_stream(chunks)
            }
        }),
    );
    let up = spawn_upstream(app).await;
    let (_gw, addr) = gateway(&one_route(
        &up.url(),
        "",
        "server: { send_timeout: \"300ms\" }",
    ))
    .await;
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /endless HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    // The client reads nothing: the socket buffers fill, the gateway's
    // writes block, and after the send timeout it closes the connection
    // and lets the upstream's response go.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !upstream_done.load(Ordering::SeqCst) {
        assert!(
            std::time::Instant::now() < deadline,
            "the stalled response was never given up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // What the buffers held arrives, then the end of the connection.
    let mut sink = vec![0u8; 1 << 20];
    let read_all = async {
        loop {
            match tcp.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read_all)
        .await
        .expect("the connection was closed");
}

#[tokio::test]
async fn during_the_shutdown_delay_clients_are_told_to_reconnect() {
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let up = spawn_upstream(echo_router("up")).await;
    let (gw, addr) = gateway(&one_route(
        &up.url(),
        "",
        "server: { shutdown_delay: \"3s\", drain_timeout: \"1s\" }",
    ))
    .await;
    let live = gw.live();
    // Connections open before the drain: an HTTP/1 keep-alive one and an
    // HTTP/2 one, each with a request served.
    let mut h1 = tokio::net::TcpStream::connect(addr).await.unwrap();
    let get = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n";
    h1.write_all(get).await.unwrap();
    let head = read_head(&mut h1).await;
    assert!(
        !head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    let (mut sender, h2_task) = h2_connection(addr).await;
    let rsp = h2_get(&mut sender, addr, "/x").await;
    assert_eq!(rsp.status(), 200);
    rsp.into_body().collect().await.unwrap();

    let shutdown = tokio::spawn(gw.shutdown());
    while !live.is_draining() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // HTTP/2: GOAWAY, well before the listeners close.
    tokio::time::timeout(Duration::from_secs(2), h2_task)
        .await
        .expect("the HTTP/2 connection got GOAWAY during the delay")
        .unwrap();
    // HTTP/1: the next response says `Connection: close`, then the
    // connection ends.
    h1.write_all(get).await.unwrap();
    let head = read_head(&mut h1).await;
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), h1.read_to_end(&mut rest))
        .await
        .expect("closed after the response")
        .unwrap();
    // New connections are still served meanwhile.
    let rsp = client()
        .get(format!("http://{addr}/y"))
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    assert!(shutdown.await.unwrap());
}

/// Reads a response head and its `Content-Length` body from `tcp`.
async fn read_head(tcp: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        assert_eq!(tcp.read(&mut byte).await.unwrap(), 1, "connection ended");
        got.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&got).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    tcp.read_exact(&mut body).await.unwrap();
    head
}

#[tokio::test]
async fn an_http2_stream_left_without_window_is_reset_after_the_send_timeout() {
    use std::sync::atomic::{AtomicUsize, Ordering};

    // Each response is endless; the count says how many the upstream
    // still serves.
    let serving = Arc::new(AtomicUsize::new(0));
    let s2 = serving.clone();
    let app = Router::new()
        .route(
            "/endless",
            get(move || {
                let serving = s2.clone();
                async move {
                    struct Serving(Arc<AtomicUsize>);
                    impl Drop for Serving {
                        fn drop(&mut self) {
                            self.0.fetch_sub(1, Ordering::SeqCst);
                        }
                    }
                    serving.fetch_add(1, Ordering::SeqCst);
                    let guard = Serving(serving);
                    Body::from_stream(futures_util::stream::repeat_with(move || {
                        let _ = &guard;
                        Ok::<_, std::io::Error>(Bytes::from(vec![b'x'; 16 * 1024]))
                    }))
                }
            }),
        )
        .route("/x", get(|| async { "ok" }));
    let up = spawn_upstream(app).await;
    let (_gw, addr) = gateway(&one_route(
        &up.url(),
        "",
        "server: { send_timeout: \"300ms\" }",
    ))
    .await;
    // A client that reads its connection but never the stream's body: the
    // stream's window (64 KiB) fills and stays shut.
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .initial_stream_window_size(65_535)
            .adaptive_window(false)
            .handshake::<_, http_body_util::Empty<Bytes>>(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let rsp = h2_get(&mut sender, addr, "/endless").await;
    assert_eq!(rsp.status(), 200);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while serving.load(Ordering::SeqCst) == 0 {
        assert!(std::time::Instant::now() < deadline, "never served");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The stream is reset and the upstream's response let go...
    while serving.load(Ordering::SeqCst) != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the stream without window was never given up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ...while the connection goes on.
    let ok = h2_get(&mut sender, addr, "/x").await;
    assert_eq!(ok.status(), 200);
    assert!(!conn.is_finished());
    drop(rsp);
}

/// A WebSocket tunnel is the route's work for as long as it is open: it
/// keeps its slot of the route's concurrency limit until it closes.
#[tokio::test]
async fn an_open_websocket_counts_against_the_concurrency_limit() {
    let up = spawn_upstream(ws_echo()).await;
    let (_gw, addr) = gateway(&one_route(&up.url(), "    concurrency: { max: 1 }", "")).await;
    let open = || async move {
        match tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await {
            Ok((ws, rsp)) => (Some(ws), rsp.status().as_u16()),
            Err(tokio_tungstenite::tungstenite::Error::Http(rsp)) => (None, rsp.status().as_u16()),
            Err(e) => panic!("{e}"),
        }
    };
    let (first, status) = open().await;
    assert_eq!(status, 101);
    let mut first = first.unwrap();
    first
        .send(tokio_tungstenite::tungstenite::Message::Text("hi".into()))
        .await
        .unwrap();
    assert_eq!(
        first
            .next()
            .await
            .unwrap()
            .unwrap()
            .into_text()
            .unwrap()
            .as_str(),
        "echo:hi"
    );
    // The tunnel holds the only slot.
    assert_eq!(open().await.1, 503);
    // Closed, it lets the next one in.
    first.close(None).await.unwrap();
    drop(first);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (ws, status) = open().await;
        if status == 101 {
            drop(ws);
            break;
        }
        assert_eq!(status, 503);
        assert!(
            std::time::Instant::now() < deadline,
            "the slot was never given back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A WebSocket handshake on a cached route goes to the upstream, even when
/// a plain GET of the same URL has an entry.
#[tokio::test]
async fn a_websocket_handshake_is_never_answered_from_the_cache() {
    use axum::extract::FromRequestParts;
    use axum::response::IntoResponse;
    let app = Router::new().route(
        "/ws",
        get(|req: axum::extract::Request| async move {
            if !req.headers().contains_key("upgrade") {
                return "a page".into_response();
            }
            let (mut parts, _) = req.into_parts();
            match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
                Ok(ws) => ws.on_upgrade(|mut socket| async move {
                    while let Some(Ok(WsMessage::Text(t))) = socket.recv().await {
                        let _ = socket
                            .send(WsMessage::Text(format!("echo:{}", t.as_str()).into()))
                            .await;
                    }
                }),
                Err(e) => e.into_response(),
            }
        }),
    );
    let up = spawn_upstream(app).await;
    let (_gw, addr) = gateway(&one_route(
        &up.url(),
        "    cache: { ttl: \"30s\" }",
        "cache: { max_size: \"8MB\" }",
    ))
    .await;
    // The page is stored...
    for _ in 0..2 {
        let rsp = client()
            .get(format!("http://{addr}/ws"))
            .send()
            .await
            .unwrap();
        assert_eq!(rsp.text().await.unwrap(), "a page");
    }
    // ...and a handshake still reaches the upstream and gets its tunnel.
    let (mut ws, rsp) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    assert_eq!(rsp.status().as_u16(), 101);
    ws.send(tokio_tungstenite::tungstenite::Message::Text("hi".into()))
        .await
        .unwrap();
    assert_eq!(
        ws.next()
            .await
            .unwrap()
            .unwrap()
            .into_text()
            .unwrap()
            .as_str(),
        "echo:hi"
    );
}
