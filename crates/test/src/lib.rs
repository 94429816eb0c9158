//! Dev-only helpers for towergate tests: real upstream servers on loopback,
//! an echo service, and problem+json assertions.
//!
//! Everything here starts real servers on `127.0.0.1:0`; nothing is mocked.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub mod tls;

/// A real HTTP server on loopback, stopped when dropped.
#[derive(Debug)]
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    pub(crate) task: JoinHandle<()>,
}

impl Upstream {
    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `app` on `127.0.0.1:0` (HTTP/1.1 and h2c by prior knowledge).
pub async fn spawn_upstream(app: Router) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let addr = listener.local_addr().expect("local addr");
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Upstream { addr, task }
}

/// A service that answers every request with a JSON echo of it:
/// `{"method","path","query","authority","headers":{name:[values]},"body_len","name"}`.
pub fn echo_router(name: impl Into<std::sync::Arc<str>>) -> Router {
    let name: std::sync::Arc<str> = name.into();
    Router::new().fallback(move |req: Request| echo(name.clone(), req))
}

async fn echo(name: std::sync::Arc<str>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let mut headers = serde_json::Map::new();
    for (k, v) in &parts.headers {
        let entry = headers
            .entry(k.as_str().to_owned())
            .or_insert_with(|| Value::Array(vec![]));
        if let Value::Array(a) = entry {
            a.push(Value::String(
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            ));
        }
    }
    let body_len = match body.collect().await {
        Ok(b) => b.to_bytes().len(),
        Err(_) => return StatusCode::BAD_REQUEST.into_response(),
    };
    let v = json!({
        "service": &*name,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        // HTTP/2's `:authority` (absent over HTTP/1.1, where `host` is).
        "authority": parts.uri.authority().map(|a| a.as_str()),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body_len": body_len,
    });
    axum::Json(v).into_response()
}

/// Asserts that `rsp` is an `application/problem+json` answer with `status`,
/// and returns its body.
pub async fn assert_problem(rsp: http::Response<Body>, status: u16) -> Value {
    assert_eq!(rsp.status().as_u16(), status, "status");
    assert_eq!(
        rsp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json"),
        "content-type"
    );
    let bytes = rsp
        .into_body()
        .collect()
        .await
        .expect("problem body")
        .to_bytes();
    let v: Value = serde_json::from_slice(&bytes).expect("problem body is JSON");
    assert_eq!(v["status"], status, "status member");
    assert!(v["title"].is_string(), "title member");
    v
}

/// Same as [`assert_problem`] for a reqwest response.
pub async fn assert_problem_reqwest(rsp: reqwest::Response, status: u16) -> Value {
    assert_eq!(rsp.status().as_u16(), status, "status");
    assert_eq!(
        rsp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json"),
        "content-type"
    );
    let v: Value = rsp.json().await.expect("problem body is JSON");
    assert_eq!(v["status"], status, "status member");
    v
}

/// Bytes whose buffer says when it is freed: the flag turns true once the
/// returned `Bytes` and every slice of it are dropped. For tests that
/// check that something kept for long (a cache entry, a queued log line)
/// holds a copy rather than a slice of the buffer it was parsed from, as
/// hyper's parsed URIs and header values are.
pub fn tracked_bytes(data: &[u8]) -> (bytes::Bytes, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    let freed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let bytes = bytes::Bytes::from_owner(Tracked(data.to_vec(), freed.clone()));
    (bytes, freed)
}

struct Tracked(Vec<u8>, std::sync::Arc<std::sync::atomic::AtomicBool>);

impl AsRef<[u8]> for Tracked {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.1.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}
