//! The upstream connection pool, seen from the upstream's side: how many
//! connections it accepts, and how many are still open.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get as route_get;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use towergate_proxy::{Client, Proxy};
use towergate_test::tls::serve_io;

use common::{call, get};

const MIB: usize = 1 << 20;

/// Connections an upstream has accepted, and how many are open now.
#[derive(Clone, Default)]
struct Tally {
    accepted: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
    /// The connections' tasks: aborting one closes its connection.
    tasks: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Tally {
    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Closes every connection from the upstream's side.
    fn close_all(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    /// Waits (bounded) until `open` connections are left.
    async fn settle_open(&self, open: usize) -> usize {
        for _ in 0..200 {
            if self.open() == open {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.open()
    }
}

fn app() -> Router {
    Router::new()
        .route("/", route_get(|| async { "ok" }))
        .route(
            "/slow",
            route_get(|| async {
                tokio::time::sleep(Duration::from_millis(150)).await;
                "slow"
            }),
        )
        .route("/big", route_get(|| async { vec![7u8; MIB] }))
        .fallback(|| async { "any" })
}

/// Serves [`app`] on 127.0.0.1, keeping a [`Tally`] of its connections.
async fn spawn_tallied() -> (String, Tally, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let tally = Tally::default();
    let t = tally.clone();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            t.accepted.fetch_add(1, Ordering::SeqCst);
            t.open.fetch_add(1, Ordering::SeqCst);
            let open = t.open.clone();
            let task = tokio::spawn(async move {
                // Counted down when the connection ends, or when the task
                // is aborted.
                struct Open(Arc<AtomicUsize>);
                impl Drop for Open {
                    fn drop(&mut self) {
                        self.0.fetch_sub(1, Ordering::SeqCst);
                    }
                }
                let _open = Open(open);
                serve_io(TokioIo::new(tcp), app()).await;
            });
            t.tasks.lock().unwrap().push(task);
        }
    });
    (url, tally, task)
}

/// An upstream on raw sockets, for misbehaviour no HTTP server would
/// show: each accepted connection goes to `serve` on its own task. Returns
/// the URL (with `scheme`), the count of accepted connections and the
/// accept loop.
async fn raw_upstream<F, Fut>(
    scheme: &str,
    serve: F,
) -> (String, Arc<AtomicUsize>, tokio::task::JoinHandle<()>)
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("{scheme}://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let server = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(tcp));
        }
    });
    (url, accepted, server)
}

fn proxy(url: &str, client: Client) -> Proxy {
    Proxy::builder(url).client(client).build().unwrap()
}

/// `n` requests to `/slow` at once, each answered.
async fn slow_at_once(p: &Proxy, n: usize) {
    let calls: Vec<_> = (0..n)
        .map(|_| {
            let p = p.clone();
            tokio::spawn(async move { body_of(call(&p, get("/slow")).await).await })
        })
        .collect();
    for c in calls {
        assert_eq!(c.await.unwrap(), "slow");
    }
}

async fn body_of(rsp: http::Response<towergate_proxy::ResponseBody>) -> Bytes {
    assert_eq!(rsp.status(), 200);
    rsp.into_body().collect().await.unwrap().to_bytes()
}

#[tokio::test]
async fn idle_connections_are_reused_up_to_the_limit() {
    let (url, tally, _server) = spawn_tallied().await;
    let client = Client::builder().pool_max_idle_per_host(1).build().unwrap();
    let p = proxy(&url, client);

    // Three at once need three connections...
    slow_at_once(&p, 3).await;
    assert_eq!(tally.accepted(), 3);
    // ...but only one is kept idle; the pool closes the others.
    assert_eq!(tally.settle_open(1).await, 1);

    // The kept one serves what follows, one request after the other.
    for _ in 0..3 {
        assert_eq!(body_of(call(&p, get("/")).await).await, "ok");
    }
    assert_eq!(tally.accepted(), 3);
}

#[tokio::test]
async fn idle_timeout_closes_connections() {
    let (url, tally, _server) = spawn_tallied().await;
    let client = Client::builder()
        .pool_idle_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let p = proxy(&url, client);

    assert_eq!(body_of(call(&p, get("/")).await).await, "ok");
    assert_eq!(tally.open(), 1);
    // The pool closes it: the upstream sees the connection end.
    assert_eq!(tally.settle_open(0).await, 0, "idle connection not closed");

    // And the next request connects anew.
    assert_eq!(body_of(call(&p, get("/")).await).await, "ok");
    assert_eq!(tally.accepted(), 2);
}

#[tokio::test]
async fn zero_idle_connections_disables_pooling() {
    let (url, tally, _server) = spawn_tallied().await;
    let client = Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let p = proxy(&url, client);
    for _ in 0..3 {
        assert_eq!(body_of(call(&p, get("/")).await).await, "ok");
    }
    assert_eq!(tally.accepted(), 3);
    assert_eq!(tally.settle_open(0).await, 0);
}

#[tokio::test]
async fn connection_returns_once_a_large_body_is_read() {
    let (url, tally, _server) = spawn_tallied().await;
    let p = proxy(&url, Client::builder().build().unwrap());

    // The body is not through when the headers arrive: the connection goes
    // back to the pool only after it has been read.
    for _ in 0..3 {
        let body = body_of(call(&p, get("/big")).await).await;
        assert_eq!(body.len(), MIB);
        assert!(body.iter().all(|b| *b == 7));
    }
    // Let the connection's task see the end of the last body.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(body_of(call(&p, get("/")).await).await, "ok");
    assert_eq!(tally.accepted(), 1, "one connection serves them all");

    // A body dropped unread leaves the connection unusable: it is closed,
    // not pooled, and the next request gets a new one.
    let rsp = call(&p, get("/big")).await;
    drop(rsp);
    assert_eq!(tally.settle_open(0).await, 0);
    assert_eq!(body_of(call(&p, get("/")).await).await, "ok");
    assert_eq!(tally.accepted(), 2);
}

#[tokio::test]
async fn connection_closed_by_the_upstream_is_not_reused() {
    // An upstream that answers one request per connection and then closes
    // it without saying so (no `Connection: close`).
    let (url, accepted, _server) = raw_upstream("http", |mut tcp| async move {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let _ = tcp
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .await;
        // Dropping the socket closes it.
    })
    .await;

    let p = proxy(&url, Client::builder().build().unwrap());
    for _ in 0..3 {
        assert_eq!(body_of(call(&p, get("/")).await).await, "ok");
        // Long enough for the pooled connection to see the close.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn proxies_to_one_upstream_share_its_pool() {
    let (url, tally, _server) = spawn_tallied().await;
    let client = Client::builder().build().unwrap();
    let a = proxy(&url, client.clone());
    let b = proxy(&format!("{url}/base"), client.clone());
    assert_eq!(body_of(call(&a, get("/")).await).await, "ok");
    assert_eq!(body_of(call(&b, get("/x")).await).await, "any");
    assert_eq!(body_of(call(&a, get("/")).await).await, "ok");
    assert_eq!(tally.accepted(), 1);

    // Another client has pools of its own.
    let c = proxy(&url, Client::builder().build().unwrap());
    assert_eq!(body_of(call(&c, get("/")).await).await, "ok");
    assert_eq!(tally.accepted(), 2);
}

#[tokio::test]
async fn http2_connection_is_shared_and_replaced_once_closed() {
    let (url, tally, _server) = spawn_tallied().await;
    let client = Client::builder().http2_only(true).build().unwrap();
    let p = proxy(&url, client);

    // Concurrent first requests wait for one connect and share it.
    slow_at_once(&p, 5).await;
    assert_eq!(tally.accepted(), 1);

    // The upstream closes it: the next request connects again.
    tally.close_all();
    assert_eq!(tally.settle_open(0).await, 0);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let rsp = call(&p, get("/")).await;
    assert_eq!(rsp.version(), http::Version::HTTP_2);
    assert_eq!(body_of(rsp).await, "ok");
    assert_eq!(tally.accepted(), 2);
}

#[tokio::test]
async fn closed_idle_connections_make_room_for_fresh_ones() {
    let (url, tally, _server) = spawn_tallied().await;
    let client = Client::builder().pool_max_idle_per_host(2).build().unwrap();
    let p = proxy(&url, client);

    // Two idle connections, then the upstream closes both.
    slow_at_once(&p, 2).await;
    assert_eq!(tally.settle_open(2).await, 2);
    tally.close_all();
    assert_eq!(tally.settle_open(0).await, 0);
    tokio::time::sleep(Duration::from_millis(50)).await;

    // The dead ones are dropped, never used: a new connection serves the
    // next request, and is kept for the one after.
    for _ in 0..2 {
        assert_eq!(body_of(call(&p, get("/")).await).await, "ok");
    }
    assert_eq!(tally.accepted(), 3);
    assert_eq!(tally.open(), 1);
}

#[tokio::test]
async fn requests_waiting_for_a_failed_http2_connect_fail_with_it() {
    // Accepts and hangs up at once: every TLS handshake, so every
    // connect, fails.
    let (url, accepted, _server) = raw_upstream("https", |tcp| async move { drop(tcp) }).await;
    let client = Client::builder().http2_only(true).build().unwrap();
    let p = proxy(&url, client);

    let calls: Vec<_> = (0..5)
        .map(|_| {
            let p = p.clone();
            tokio::spawn(async move { common::call_err(&p, get("/")).await })
        })
        .collect();
    for c in calls {
        let err = c.await.unwrap();
        let unavailable =
            towergate_core::cause_ref::<towergate_proxy::error::UpstreamUnavailable>(&*err)
                .expect("a 502 kind of failure");
        assert!(unavailable.is_connect(), "nothing was sent: {err}");
    }
    // One attempt for the five: the others waited for it and failed with it.
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}
