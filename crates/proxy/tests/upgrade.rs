//! WebSocket (HTTP/1.1 Upgrade) through the proxy: client -> front server
//! calling the Proxy -> upstream WebSocket echo.
#![allow(clippy::unwrap_used)]

mod common;

use axum::Router;
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get as get_route;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use towergate_proxy::{Client, Proxy};
use towergate_test::spawn_upstream;
use towergate_test::tls::TestCa;

use common::{spawn_front, spawn_tls};

fn ws_echo() -> Router {
    async fn upgrade(ws: WebSocketUpgrade) -> Response {
        ws.on_upgrade(echo)
    }
    async fn echo(mut socket: WebSocket) {
        while let Some(Ok(msg)) = socket.recv().await {
            let reply = match msg {
                WsMessage::Text(t) => WsMessage::Text(format!("echo: {}", t.as_str()).into()),
                WsMessage::Binary(b) => WsMessage::Binary(b),
                WsMessage::Close(_) => break,
                _ => continue,
            };
            if socket.send(reply).await.is_err() {
                break;
            }
        }
    }
    Router::new().route("/ws", get_route(upgrade))
}

async fn exchange_messages(front: std::net::SocketAddr) {
    let (mut ws, rsp) = tokio_tungstenite::connect_async(format!("ws://{front}/ws"))
        .await
        .unwrap();
    assert_eq!(rsp.status(), 101);
    assert_eq!(rsp.headers()["via"], "1.1 towergate");

    for i in 0..5 {
        ws.send(Message::text(format!("hello {i}"))).await.unwrap();
        let reply = ws.next().await.unwrap().unwrap();
        assert_eq!(reply.to_text().unwrap(), format!("echo: hello {i}"));
    }
    let blob: Vec<u8> = (0..=255).collect();
    ws.send(Message::binary(blob.clone())).await.unwrap();
    let reply = ws.next().await.unwrap().unwrap();
    assert_eq!(reply.into_data().as_ref(), blob.as_slice());

    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn websocket_echo_through_the_proxy() {
    let up = spawn_upstream(ws_echo()).await;
    let proxy = Proxy::builder(up.url()).build().unwrap();
    let front = spawn_front(proxy).await;
    exchange_messages(front.addr).await;
}

#[tokio::test]
async fn websocket_to_a_tls_upstream_that_prefers_h2() {
    // The upstream offers h2 by ALPN; the upgrade must still go over
    // HTTP/1.1, where Upgrade exists.
    let ca = TestCa::new();
    let cert = ca.leaf(&["localhost"]);
    let up = spawn_tls(ws_echo(), &cert, None).await;
    let client = Client::builder()
        .ca_pem(ca.cert_pem.clone())
        .build()
        .unwrap();
    let proxy = Proxy::builder(format!("https://localhost:{}", up.addr.port()))
        .client(client)
        .build()
        .unwrap();
    let front = spawn_front(proxy).await;
    exchange_messages(front.addr).await;
}

#[tokio::test]
async fn refused_upgrade_is_an_ordinary_response() {
    // The upstream does not speak WebSocket on this path: its answer comes
    // back as is and no tunnel is set up.
    let up = spawn_upstream(Router::new()).await;
    let proxy = Proxy::builder(up.url()).build().unwrap();
    let front = spawn_front(proxy).await;
    let err = tokio_tungstenite::connect_async(format!("ws://{}/ws", front.addr))
        .await
        .unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(rsp) => assert_eq!(rsp.status(), 404),
        other => panic!("unexpected error: {other:?}"),
    }
}

/// A raw HTTP/1.1 upstream that records each request head, and answers a
/// request carrying `Upgrade` with `101` to `switch_to` (whatever was
/// asked), any other with `200 ok`.
async fn raw_upstream(
    switch_to: &'static str,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
                let answer = if head.contains("\r\nupgrade:") {
                    format!(
                        "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: {switch_to}\r\n\r\n"
                    )
                } else {
                    "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok".to_owned()
                };
                let switching = answer.contains(" 101 ");
                seen.lock().unwrap().push(head);
                let _ = tcp.write_all(answer.as_bytes()).await;
                if switching {
                    // Held open: a tunnel, if the proxy made one, would go on.
                    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                }
            });
        }
    });
    (addr, heads)
}

/// Sends `head` to `addr` and reads the status line of the answer.
async fn status_of(addr: std::net::SocketAddr, head: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(2).any(|w| w == b"\r\n") {
        let n = tcp.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed without an answer");
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf);
    text.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn an_h2c_upgrade_is_not_tunnelled() {
    // h2c smuggling: a tunnel would hand the client an HTTP/2 connection
    // to the upstream, past everything in front of the proxy. The upgrade
    // is not offered: the upstream sees a plain request.
    let (up, heads) = raw_upstream("h2c").await;
    let proxy = Proxy::builder(format!("http://{up}")).build().unwrap();
    let front = spawn_front(proxy).await;
    for connection in ["Upgrade", "Upgrade, HTTP2-Settings"] {
        let status = status_of(
            front.addr,
            &format!(
                "GET /public HTTP/1.1\r\nHost: a\r\nConnection: {connection}\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"
            ),
        )
        .await;
        assert!(status.contains(" 200 "), "{status}");
    }
    for head in heads.lock().unwrap().iter() {
        assert!(!head.contains("upgrade"), "{head}");
        assert!(!head.contains("http2-settings"), "{head}");
    }
    // Nor can it ride along with an allowed protocol.
    let status = status_of(
        front.addr,
        "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c, websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await;
    // The upstream answered 101 h2c to an offer of websocket only: 502.
    assert!(status.contains(" 502 "), "{status}");
    let last = heads.lock().unwrap().last().cloned().unwrap();
    assert!(last.contains("\r\nupgrade: websocket\r\n"), "{last}");

    assert!(
        Proxy::builder(format!("http://{up}"))
            .upgrade_protocols(["websocket", "H2C"])
            .build()
            .is_err()
    );
}

#[tokio::test]
async fn a_101_without_an_offered_protocol_is_502() {
    // Asked for websocket, the upstream switches to something else, or to
    // nothing named: no tunnel, 502.
    for switch_to in ["h2c", "spdy/3.1"] {
        let (up, _) = raw_upstream(switch_to).await;
        let proxy = Proxy::builder(format!("http://{up}")).build().unwrap();
        let front = spawn_front(proxy).await;
        let status = status_of(
            front.addr,
            "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await;
        assert!(status.contains(" 502 "), "{switch_to}: {status}");
    }
}
