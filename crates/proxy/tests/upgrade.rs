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
