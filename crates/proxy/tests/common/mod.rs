//! Helpers shared by the integration tests: real servers on 127.0.0.1.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tower::ServiceExt;
use towergate_core::{BoxError, ClientAddr};
use towergate_proxy::Proxy;
use towergate_proxy::error::to_problem;
use towergate_test::Upstream;
use towergate_test::tls::{TestCa, TestCert, serve_io};

/// A server task, aborted when dropped.
pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A GET request without a body.
pub(crate) fn get(uri: &str) -> http::Request<Empty<Bytes>> {
    http::Request::get(uri).body(Empty::new()).unwrap()
}

/// Sends `req` through `proxy`, expecting success.
pub(crate) async fn call<B>(
    proxy: &Proxy,
    req: http::Request<B>,
) -> http::Response<towergate_proxy::ResponseBody>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    match proxy.clone().oneshot(req).await {
        Ok(rsp) => rsp,
        Err(e) => panic!("proxy failed: {e:?}"),
    }
}

/// Sends `req` through `proxy`, expecting failure.
pub(crate) async fn call_err<B>(proxy: &Proxy, req: http::Request<B>) -> BoxError
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    match proxy.clone().oneshot(req).await {
        Ok(rsp) => panic!("expected an error, got {}", rsp.status()),
        Err(e) => e,
    }
}

/// The body of an echo response as JSON.
pub(crate) async fn json(rsp: http::Response<towergate_proxy::ResponseBody>) -> Value {
    assert_eq!(rsp.status(), 200, "status");
    let bytes = rsp.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

/// A loopback port on which nothing listens.
pub(crate) async fn dead_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// Serves `app` over HTTP/1.1 and h2c, counting accepted connections.
pub(crate) async fn spawn_counting(app: Router) -> (Server, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, Ordering::SeqCst);
            let app = app.clone();
            tokio::spawn(serve_io(TokioIo::new(tcp), app));
        }
    });
    (Server { addr, task }, count)
}

/// Serves `app` over TLS (see [`towergate_test::tls::spawn_tls_upstream`]).
pub(crate) async fn spawn_tls(
    app: Router,
    cert: &TestCert,
    client_ca: Option<&TestCa>,
) -> Upstream {
    towergate_test::tls::spawn_tls_upstream(app, cert, client_ca).await
}

/// A gateway in front: an axum server on 127.0.0.1:0 whose every request
/// goes through `proxy`, with the TCP peer recorded as [`ClientAddr`] the
/// way the gateway's listener does.
pub(crate) async fn spawn_front(proxy: Proxy) -> Server {
    async fn forward(
        State(proxy): State<Proxy>,
        ConnectInfo(peer): ConnectInfo<SocketAddr>,
        mut req: Request,
    ) -> Response {
        req.extensions_mut().insert(ClientAddr::direct(peer, false));
        match proxy.oneshot(req).await {
            Ok(rsp) => rsp.into_response(),
            Err(err) => to_problem(&*err).into_full_response().into_response(),
        }
    }
    let app = Router::new().fallback(forward).with_state(proxy);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
    });
    Server { addr, task }
}
