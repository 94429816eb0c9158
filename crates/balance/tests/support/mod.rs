//! Real upstream servers on loopback that can be killed and restarted on
//! the same port, and a plain hyper-util client as the endpoint service.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body as AxumBody;
use axum::extract::Request as AxumRequest;
use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri};
use http_body::Body;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::{self, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use towergate_balance::{Endpoint, RetryBody};
use towergate_core::BoxError;

/// An HTTP server that owns its connections, so killing it closes them
/// all (unlike `axum::serve`, whose connection tasks outlive the listener).
pub struct Server {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    task: Option<JoinHandle<()>>,
}

/// How an upstream answers the requests it counts (`/health` is not).
#[derive(Clone, Copy)]
pub struct Behaviour {
    pub delay: Duration,
    pub status: StatusCode,
}

impl Behaviour {
    pub fn ok() -> Self {
        Self {
            delay: Duration::ZERO,
            status: StatusCode::OK,
        }
    }

    pub fn slow(delay: Duration) -> Self {
        Self {
            delay,
            status: StatusCode::OK,
        }
    }

    pub fn status(status: u16) -> Self {
        Self {
            delay: Duration::ZERO,
            status: StatusCode::from_u16(status).unwrap(),
        }
    }
}

/// Serves on `addr` (port 0 for any); counts and answers every request
/// but `/health` after reading its body, with `{"name","body_len"}`.
pub async fn start(addr: SocketAddr, name: &str, how: Behaviour) -> Server {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let name: Arc<str> = name.into();
    let app = Router::new()
        .route("/health", axum::routing::get(|| async { "ok" }))
        .fallback(move |req: AxumRequest| {
            let counter = counter.clone();
            let name = name.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                let len = match req.into_body().collect().await {
                    Ok(b) => b.to_bytes().len(),
                    Err(_) => {
                        return Response::builder()
                            .status(400)
                            .body(AxumBody::empty())
                            .unwrap();
                    }
                };
                tokio::time::sleep(how.delay).await;
                let body = serde_json::json!({ "name": &*name, "body_len": len }).to_string();
                Response::builder()
                    .status(how.status)
                    .body(AxumBody::from(body))
                    .unwrap()
            }
        });
    let listener = TcpListener::bind(addr).await.expect("bind");
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        // Dropped with the task: every connection is aborted with it.
        let mut conns = JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let svc = TowerToHyperService::new(app.clone());
            conns.spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
            while conns.try_join_next().is_some() {}
        }
    });
    Server {
        addr,
        hits,
        task: Some(task),
    }
}

impl Server {
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Stops listening and drops every connection, and waits until it has.
    pub async fn kill(mut self) -> SocketAddr {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
        self.addr
    }

    pub fn endpoint(&self) -> Endpoint {
        Endpoint::from_addr(self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// A port on which nothing listens.
pub async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// The endpoint service: a hyper-util client sending to `http://addr`.
pub struct HttpEndpoint<B> {
    client: legacy::Client<HttpConnector, RetryBody<B>>,
    base: Arc<str>,
}

// Not derived: that would require `B: Clone`, which streaming bodies are not.
impl<B> Clone for HttpEndpoint<B> {
    fn clone(&self) -> Self {
        Self {
            client: self.client.clone(),
            base: self.base.clone(),
        }
    }
}

impl<B> tower::Service<Request<RetryBody<B>>> for HttpEndpoint<B>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Incoming>;
    type Error = legacy::Error;
    type Future = legacy::ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<RetryBody<B>>) -> Self::Future {
        let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
        *req.uri_mut() = format!("{}{pq}", self.base).parse::<Uri>().unwrap();
        self.client.request(req)
    }
}

/// A `MakeEndpoint`: one shared client, one service per endpoint.
pub fn make_endpoint<B>()
-> impl Fn(&Endpoint) -> Result<HttpEndpoint<B>, BoxError> + Send + Sync + 'static
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(Duration::from_millis(500)));
    let client = legacy::Client::builder(TokioExecutor::new()).build(connector);
    move |e: &Endpoint| {
        Ok(HttpEndpoint {
            client: client.clone(),
            base: e.url().into(),
        })
    }
}

/// An active health probe through a plain client: `GET {url}{path}`.
pub fn probe() -> impl towergate_balance::CheckHealth {
    let client: legacy::Client<HttpConnector, Empty<Bytes>> =
        legacy::Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    move |e: &Endpoint, path: &str| {
        let client = client.clone();
        let uri: Result<Uri, _> = format!("{}{path}", e.url()).parse();
        async move {
            let rsp = client.get(uri?).await?;
            Ok::<_, BoxError>(rsp.status())
        }
    }
}

pub fn get() -> Request<Empty<Bytes>> {
    Request::get("/work").body(Empty::new()).unwrap()
}

/// Waits for `cond`, polling, at most `secs`.
pub async fn wait_for(secs: u64, mut cond: impl FnMut() -> bool) {
    tokio::time::timeout(Duration::from_secs(secs), async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("condition in time");
}
