//! Shared pieces of the integration tests: a counting echo upstream, a
//! minimal reqwest-based proxy as the innermost service, the request
//! extensions the gateway would set, and a server with connect info.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tower::{Service, ServiceExt};
use towergate_core::{BoxError, ClientAddr, Identity, RequestId, RouteMatch};
use towergate_test::{Upstream, echo_router, spawn_upstream};

/// A server for a layer stack, with the peer address in `ConnectInfo`.
#[derive(Debug)]
pub struct Gateway {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Gateway {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn serve(router: Router) -> Gateway {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
    });
    Gateway { addr, task }
}

/// The echo upstream of towergate-test, counting the requests it sees.
pub async fn counting_echo() -> (Upstream, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let echo = echo_router("up");
    let seen = count.clone();
    let app = Router::new().fallback_service(tower::service_fn(move |req: Request<Body>| {
        seen.fetch_add(1, Ordering::SeqCst);
        echo.clone().oneshot(req)
    }));
    (spawn_upstream(app).await, count)
}

/// An upstream that answers with the exact bytes it received, and the
/// `Content-Length` it was sent in `x-received-length`.
pub async fn body_echo() -> Upstream {
    let app = Router::new().fallback(|req: Request<Body>| async move {
        let cl = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .cloned()
            .unwrap_or(http::HeaderValue::from_static("none"));
        let te = req.headers().contains_key(header::TRANSFER_ENCODING);
        let ce = req.headers().get(header::CONTENT_ENCODING).cloned();
        let bytes = req.into_body().collect().await.unwrap().to_bytes();
        let mut rsp = Response::new(Body::from(bytes));
        rsp.headers_mut().insert("x-received-length", cl);
        rsp.headers_mut()
            .insert("x-received-chunked", te.to_string().parse().unwrap());
        if let Some(ce) = ce {
            rsp.headers_mut().insert("x-received-encoding", ce);
        }
        rsp
    });
    spawn_upstream(app).await
}

/// What earlier gateway layers would have put in the extensions.
pub fn with_context<B>(mut req: Request<B>) -> Request<B> {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
    let ext = req.extensions_mut();
    ext.insert(ClientAddr::direct(peer, false));
    ext.insert(Identity {
        subject: Some("alice".into()),
        consumer: Some("acme".into()),
        ..Default::default()
    });
    ext.insert(RouteMatch {
        route: "orders".into(),
        params: vec![("id".into(), "42".into()), ("rest".into(), "a b/c".into())],
    });
    ext.insert(RequestId(Arc::from("req-123")));
    req
}

/// The innermost service: forwards to `base` with reqwest (which is built
/// without decompression, so bodies pass as they are).
pub fn proxy<B>(
    base: String,
) -> impl Service<
    Request<B>,
    Response = Response<Body>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Body>, Infallible>> + Send,
> + Clone
+ Send
+ Sync
+ 'static
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    tower::service_fn(move |req: Request<B>| forward(client.clone(), base.clone(), req))
}

async fn forward<B>(
    client: reqwest::Client,
    base: String,
    req: Request<B>,
) -> Result<Response<Body>, Infallible>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let (parts, body) = req.into_parts();
    let Ok(bytes) = body.collect().await.map(|c| c.to_bytes()) else {
        return Ok(status(StatusCode::BAD_REQUEST));
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut rb = client.request(parts.method, format!("{base}{path}"));
    for (k, v) in &parts.headers {
        if k != header::HOST && k != header::CONNECTION && k != header::TRANSFER_ENCODING {
            rb = rb.header(k, v);
        }
    }
    let Ok(rsp) = rb.body(bytes).send().await else {
        return Ok(status(StatusCode::BAD_GATEWAY));
    };
    let mut out = Response::builder().status(rsp.status());
    for (k, v) in rsp.headers() {
        if k != header::TRANSFER_ENCODING && k != header::CONNECTION {
            out = out.header(k, v);
        }
    }
    let body = rsp.bytes().await.unwrap_or_default();
    Ok(out.body(Body::from(body)).unwrap())
}

fn status(s: StatusCode) -> Response<Body> {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = s;
    r
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}
