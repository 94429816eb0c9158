//! The cache layer over real sockets: reqwest → axum (with the layer) →
//! hyper-util client → an axum upstream that counts its requests.

// Helpers outside #[test] fns are test code too.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tower::{Service, ServiceBuilder, ServiceExt};
use towergate_cache::{
    CACHE_STATUS, Cache, CacheLayer, CacheLayerBuilder, CacheStore, Clock, KeyQuery, ManualClock,
    Purge,
};
use towergate_core::{ClientAddr, Identity, TrustedProxies};
use towergate_test::Upstream;

// === the upstream ===

/// What the upstream saw and how it should behave.
struct Origin {
    clock: ManualClock,
    counts: Mutex<HashMap<String, usize>>,
    log: Mutex<Vec<(Method, String, HeaderMap)>>,
    fail: AtomicBool,
    /// `/stream` waits on this after its first chunk.
    release: Mutex<Option<oneshot::Receiver<()>>>,
    /// `/held/*` send 60 KiB, then wait for this to turn true.
    gate: tokio::sync::watch::Sender<bool>,
    /// When `/lm` was last modified.
    last_modified: SystemTime,
    /// `/slow300/*` requests being answered, and the most at once.
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// How long `/slow300/*` take to answer.
const SLOW: Duration = Duration::from_millis(300);

/// A request being answered, counted in [`Origin::in_flight`] until it
/// ends or is cancelled.
struct InFlight<'a>(&'a Origin);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Origin {
    fn count(&self, path: &str) -> usize {
        self.counts.lock().get(path).copied().unwrap_or(0)
    }

    fn enter(&self) -> InFlight<'_> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(self)
    }

    fn last_request(&self, path: &str) -> HeaderMap {
        let log = self.log.lock();
        log.iter()
            .rev()
            .find(|(_, p, _)| p == path)
            .map(|(_, _, h)| h.clone())
            .unwrap()
    }
}

fn date(t: SystemTime) -> String {
    httpdate::fmt_http_date(t)
}

async fn origin(State(o): State<Arc<Origin>>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let n = {
        let mut counts = o.counts.lock();
        let n = counts.entry(path.clone()).or_default();
        *n += 1;
        *n
    };
    o.log
        .lock()
        .push((method.clone(), path.clone(), req.headers().clone()));
    let now = o.clock.now();
    let h = req.headers();
    let header = |name: &str| {
        h.get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let ok = |cc: &str, body: Body| {
        Response::builder()
            .header("date", date(now))
            .header("cache-control", cc)
            .body(body)
            .unwrap()
    };
    match path.as_str() {
        "/nostore" => ok("no-store, max-age=60", "nostore".into()),
        "/private" => ok("private, max-age=60", "private".into()),
        "/public" => ok("public, max-age=60", "public".into()),
        "/me" => ok("max-age=60", format!("hello {}", header("x-user")).into()),
        // Links built from the forwarded host, as upstreams behind a load
        // balancer do.
        "/links" => ok(
            "max-age=60",
            format!("<a href=\"//{}/next\">", header("x-forwarded-host")).into(),
        ),
        // An upstream that serves the path in `X-Original-URL` instead of
        // the request's, as IIS, Symfony and Zend do.
        "/page" => {
            let served = match header("x-original-url") {
                url if url.is_empty() => path.clone(),
                url => url,
            };
            ok("max-age=60", format!("page {served}").into())
        }
        // An upstream that checks API keys itself and answers per tenant.
        "/tenant" => {
            let query = req.uri().query().unwrap_or("").to_owned();
            let key = if header("x-api-key").is_empty() {
                query
                    .split('&')
                    .find_map(|p| p.strip_prefix("api_key="))
                    .unwrap_or("")
                    .to_owned()
            } else {
                header("x-api-key")
            };
            ok("max-age=60", format!("tenant [{key}]").into())
        }
        // Varies on `Origin` only for requests that have one (CORS done
        // this way is common).
        "/cors" => {
            let origin = header("origin");
            if origin.is_empty() {
                return ok("max-age=60", "no origin".into());
            }
            let mut rsp = ok("max-age=60", origin.into());
            rsp.headers_mut()
                .insert("vary", HeaderValue::from_static("Origin"));
            rsp
        }
        "/vary" => {
            let mut rsp = ok("max-age=60", header("accept-language").into());
            rsp.headers_mut()
                .insert("vary", HeaderValue::from_static("Accept-Language"));
            rsp
        }
        "/etag" => {
            if header("if-none-match") == "\"v1\"" {
                let mut rsp = ok("max-age=10", Body::empty());
                *rsp.status_mut() = StatusCode::NOT_MODIFIED;
                rsp.headers_mut()
                    .insert("etag", HeaderValue::from_static("\"v1\""));
                rsp.headers_mut()
                    .insert("x-revalidated", HeaderValue::from(n));
                return rsp;
            }
            let mut rsp = ok("max-age=10", "etag body".into());
            rsp.headers_mut()
                .insert("etag", HeaderValue::from_static("\"v1\""));
            rsp
        }
        "/slow-etag" | "/slow-no-cache" => {
            // Slow both ways, so that concurrent revalidations overlap.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let cc = if path == "/slow-no-cache" {
                "no-cache, max-age=10"
            } else {
                "max-age=10"
            };
            let mut rsp = if header("if-none-match") == "\"s1\"" {
                let mut rsp = ok(cc, Body::empty());
                *rsp.status_mut() = StatusCode::NOT_MODIFIED;
                rsp
            } else {
                ok(cc, "slow etag body".into())
            };
            rsp.headers_mut()
                .insert("etag", HeaderValue::from_static("\"s1\""));
            rsp
        }
        "/lm" => {
            let lm = date(o.last_modified);
            let since = httpdate::parse_http_date(&header("if-modified-since")).ok();
            if since.is_some_and(|s| s >= o.last_modified) {
                let mut rsp = ok("max-age=10", Body::empty());
                *rsp.status_mut() = StatusCode::NOT_MODIFIED;
                return rsp;
            }
            let mut rsp = ok("max-age=10", "lm body".into());
            rsp.headers_mut()
                .insert("last-modified", HeaderValue::from_str(&lm).unwrap());
            rsp
        }
        "/sie" => {
            if o.fail.load(Ordering::SeqCst) {
                return (StatusCode::SERVICE_UNAVAILABLE, "down").into_response();
            }
            ok("max-age=1, stale-if-error=60", format!("sie v{n}").into())
        }
        "/swr" => ok(
            "max-age=1, stale-while-revalidate=60",
            format!("swr v{n}").into(),
        ),
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(200)).await;
            ok("max-age=60", "slow body".into())
        }
        // `/slow300/cookie` cannot be stored.
        p if p.starts_with("/slow300/") => {
            let _in_flight = o.enter();
            tokio::time::sleep(SLOW).await;
            let mut rsp = ok("max-age=60", "slow300 body".into());
            if p.ends_with("/cookie") {
                rsp.headers_mut()
                    .insert("set-cookie", HeaderValue::from_static("session=1"));
            }
            rsp
        }
        "/big" => ok("max-age=60", vec![b'b'; 200 * 1024].into()),
        "/big-stream" => {
            let chunks = (0..25).map(|_| Ok::<_, Infallible>(Bytes::from(vec![b's'; 8 * 1024])));
            ok(
                "max-age=60",
                Body::from_stream(futures_util::stream::iter(chunks)),
            )
        }
        "/stream" => {
            let release = o.release.lock().take();
            let stream =
                futures_util::stream::unfold((0u8, release), |(step, release)| async move {
                    match step {
                        // 64 KiB at once, then wait for the test's signal: a
                        // cache that buffered would never deliver this chunk.
                        0 => Some((
                            Ok::<_, Infallible>(Bytes::from(vec![b'a'; 64 * 1024])),
                            (1, release),
                        )),
                        // 63 more chunks: 4 MiB in all.
                        1..=63 => {
                            if let Some(rx) = release {
                                let _ = rx.await;
                            }
                            Some((Ok(Bytes::from(vec![b'b'; 64 * 1024])), (step + 1, None)))
                        }
                        _ => None,
                    }
                });
            ok("max-age=60", Body::from_stream(stream))
        }
        p if p.starts_with("/held/") => {
            let gate = o.gate.subscribe();
            let stream = futures_util::stream::unfold((0u8, gate), |(step, mut gate)| async move {
                match step {
                    0 => Some((
                        Ok::<_, Infallible>(Bytes::from(vec![b'h'; 60 * 1024])),
                        (1, gate),
                    )),
                    1 => {
                        let _ = gate.wait_for(|open| *open).await;
                        Some((Ok(Bytes::from_static(b"end")), (2, gate)))
                    }
                    _ => None,
                }
            });
            ok("max-age=60", Body::from_stream(stream))
        }
        "/items" if method == Method::POST => Response::builder()
            .status(StatusCode::CREATED)
            .header("location", "/items/1")
            .body(Body::empty())
            .unwrap(),
        "/items" if method == Method::DELETE => {
            (StatusCode::INTERNAL_SERVER_ERROR, "no").into_response()
        }
        _ => ok("max-age=60", format!("{path} v{n}").into()),
    }
}

// === the gateway ===

/// A gateway on a socket: identity from `x-user`, the cache layer, a
/// hyper-util client to the upstream.
struct Gateway {
    addr: SocketAddr,
    store: CacheStore,
    clock: ManualClock,
    origin: Arc<Origin>,
    upstream: Option<Upstream>,
    _server: Upstream,
}

impl Gateway {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

fn upstream_client(pooled: bool) -> Client<HttpConnector, Body> {
    let mut b = Client::builder(TokioExecutor::new());
    if !pooled {
        // Every request opens a connection, so a stopped upstream is
        // refused rather than reached over a pooled connection.
        b.pool_max_idle_per_host(0);
    }
    b.build_http()
}

async fn start(configure: impl FnOnce(CacheLayerBuilder) -> CacheLayerBuilder) -> Gateway {
    start_with(CacheStore::new(), true, configure).await
}

async fn start_with(
    store: CacheStore,
    pooled: bool,
    configure: impl FnOnce(CacheLayerBuilder) -> CacheLayerBuilder,
) -> Gateway {
    let clock = ManualClock::starting_now();
    let origin = Arc::new(Origin {
        clock: clock.clone(),
        counts: Mutex::default(),
        log: Mutex::default(),
        fail: AtomicBool::new(false),
        release: Mutex::new(None),
        gate: tokio::sync::watch::channel(false).0,
        last_modified: clock.now() - Duration::from_secs(3600),
        in_flight: AtomicUsize::new(0),
        max_in_flight: AtomicUsize::new(0),
    });
    let upstream = towergate_test::spawn_upstream(
        Router::new()
            .fallback(origin_handler)
            .with_state(Arc::clone(&origin)),
    )
    .await;
    let layer = configure(CacheLayer::builder(store.clone()).clock(Arc::new(clock.clone())))
        .build()
        .unwrap();
    serve(store, clock, origin, upstream, layer, pooled).await
}

async fn origin_handler(state: State<Arc<Origin>>, req: Request) -> Response {
    origin(state, req).await
}

async fn serve(
    store: CacheStore,
    clock: ManualClock,
    origin: Arc<Origin>,
    upstream: Upstream,
    layer: CacheLayer,
    pooled: bool,
) -> Gateway {
    let client = upstream_client(pooled);
    let target = upstream.addr;
    let proxy = tower::service_fn(move |mut req: http::Request<Body>| {
        let pq = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default();
        *req.uri_mut() = format!("http://{target}{pq}").parse().unwrap();
        client.request(req)
    });
    // The listener's record of the peer, named by the test: 10.0.0.0/8 are
    // the trusted load balancers.
    let trusted = TrustedProxies::new(["10.0.0.0/8".parse().unwrap()]);
    let svc = ServiceBuilder::new()
        .map_request(move |mut req: http::Request<Body>| {
            if let Some(peer) = req
                .headers()
                .get("x-test-peer")
                .and_then(|v| v.to_str().ok())
            {
                let peer = format!("{peer}:5000").parse().unwrap();
                let addr = ClientAddr::resolve(peer, false, req.headers(), &trusted);
                req.extensions_mut().insert(addr);
            }
            if let Some(user) = req.headers().get("x-user").and_then(|v| v.to_str().ok()) {
                let id = Identity {
                    subject: Some(user.to_owned()),
                    ..Identity::default()
                };
                req.extensions_mut().insert(id);
            }
            req
        })
        .layer(layer)
        .service(proxy);
    let app = Router::new().fallback_service(tower::service_fn(move |req: Request| {
        let svc = svc.clone();
        async move {
            Ok::<_, Infallible>(match svc.oneshot(req).await {
                Ok(rsp) => rsp.map(Body::new),
                Err(_) => StatusCode::BAD_GATEWAY.into_response(),
            })
        }
    }));
    let server = towergate_test::spawn_upstream(app).await;
    Gateway {
        addr: server.addr,
        store,
        clock,
        origin,
        upstream: Some(upstream),
        _server: server,
    }
}

fn status(rsp: &reqwest::Response) -> String {
    rsp.headers()
        .get(CACHE_STATUS)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

async fn get(url: &str) -> reqwest::Response {
    reqwest::get(url).await.unwrap()
}

// === tests ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_get_within_max_age_is_a_hit() {
    let gw = start(|b| b.namespace("fresh")).await;
    let first = get(&gw.url("/fresh")).await;
    assert_eq!(first.status(), 200);
    assert_eq!(status(&first), "towergate; fwd=uri-miss; stored");
    assert_eq!(first.text().await.unwrap(), "/fresh v1");

    gw.clock.advance(Duration::from_secs(5));
    let second = get(&gw.url("/fresh")).await;
    assert_eq!(status(&second), "towergate; hit; ttl=55");
    let age: u64 = second.headers()["age"].to_str().unwrap().parse().unwrap();
    assert!((5..=6).contains(&age), "age {age}");
    assert_eq!(second.text().await.unwrap(), "/fresh v1");
    assert_eq!(gw.origin.count("/fresh"), 1);
    let stats = gw.store.stats();
    assert_eq!((stats.hits, stats.misses, stats.stored), (1, 1, 1));
    assert_eq!(stats.entries, 1);
    assert!(stats.bytes_stored > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_store_private_and_authorization_are_not_shared() {
    let gw = start(|b| b).await;
    let client = reqwest::Client::new();
    for path in ["/nostore", "/private", "/auth"] {
        for _ in 0..2 {
            let rsp = client
                .get(gw.url(path))
                .header("authorization", "Bearer alice")
                .send()
                .await
                .unwrap();
            assert_eq!(status(&rsp), "towergate; fwd=uri-miss", "{path}");
            rsp.bytes().await.unwrap();
        }
        assert_eq!(gw.origin.count(path), 2, "{path}");
    }
    // A request without credentials is not served the credentialed one.
    get(&gw.url("/auth")).await.bytes().await.unwrap();
    assert_eq!(gw.origin.count("/auth"), 3);
    assert_eq!(gw.store.stats().entries, 1, "only the anonymous /auth");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_with_public_is_stored() {
    let gw = start(|b| b).await;
    let client = reqwest::Client::new();
    for _ in 0..2 {
        let rsp = client
            .get(gw.url("/public"))
            .header("authorization", "Bearer alice")
            .send()
            .await
            .unwrap();
        assert_eq!(rsp.text().await.unwrap(), "public");
    }
    assert_eq!(gw.origin.count("/public"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_identity_keeps_users_apart() {
    let gw = start(|b| b.key_identity("sub")).await;
    let client = reqwest::Client::new();
    for user in ["alice", "bob", "alice", "bob"] {
        let rsp = client
            .get(gw.url("/me"))
            .header("x-user", user)
            .header("authorization", format!("Bearer {user}"))
            .send()
            .await
            .unwrap();
        assert_eq!(rsp.text().await.unwrap(), format!("hello {user}"));
    }
    assert_eq!(gw.origin.count("/me"), 2);
    // Without an identity the route is not cached at all.
    let rsp = get(&gw.url("/me")).await;
    assert_eq!(status(&rsp), "towergate; fwd=bypass");
    assert_eq!(rsp.text().await.unwrap(), "hello ");
    assert_eq!(gw.origin.count("/me"), 3);
    let mut keys = gw.store.keys();
    keys.sort();
    assert_eq!(keys.len(), 2);
    assert!(keys[0].ends_with("/me|id:::alice"), "{keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_keeps_one_entry_per_language() {
    let gw = start(|b| b).await;
    let client = reqwest::Client::new();
    for lang in ["en", "en", "fr", "fr"] {
        let rsp = client
            .get(gw.url("/vary"))
            .header("accept-language", lang)
            .send()
            .await
            .unwrap();
        assert_eq!(rsp.text().await.unwrap(), lang);
    }
    assert_eq!(gw.origin.count("/vary"), 2);
    let rsp = client
        .get(gw.url("/vary"))
        .header("accept-language", "de")
        .send()
        .await
        .unwrap();
    assert_eq!(status(&rsp), "towergate; fwd=vary-miss; stored");
    assert_eq!(gw.store.stats().entries, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_entry_is_revalidated_with_its_etag() {
    let gw = start(|b| b).await;
    assert_eq!(
        get(&gw.url("/etag")).await.text().await.unwrap(),
        "etag body"
    );
    gw.clock.advance(Duration::from_secs(11));

    let rsp = get(&gw.url("/etag")).await;
    assert_eq!(rsp.status(), 200);
    assert_eq!(status(&rsp), "towergate; fwd=stale; fwd-status=304; ttl=10");
    // The 304's fields replace the stored ones (RFC 9111 §4.3.4).
    assert_eq!(rsp.headers()["x-revalidated"], "2");
    assert_eq!(rsp.text().await.unwrap(), "etag body");
    assert_eq!(gw.origin.last_request("/etag")["if-none-match"], "\"v1\"");

    let rsp = get(&gw.url("/etag")).await;
    assert_eq!(status(&rsp), "towergate; hit; ttl=10");
    assert_eq!(rsp.headers()["x-revalidated"], "2");
    assert_eq!(gw.origin.count("/etag"), 2);
    assert_eq!(gw.store.stats().revalidated, 1);
    // Freshened in place: still one stored response.
    assert_eq!(gw.store.stats().entries, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_entry_is_revalidated_with_last_modified() {
    let gw = start(|b| b).await;
    assert_eq!(get(&gw.url("/lm")).await.text().await.unwrap(), "lm body");
    gw.clock.advance(Duration::from_secs(11));
    let rsp = get(&gw.url("/lm")).await;
    assert_eq!(status(&rsp), "towergate; fwd=stale; fwd-status=304; ttl=10");
    assert_eq!(rsp.text().await.unwrap(), "lm body");
    let sent = gw.origin.last_request("/lm");
    assert_eq!(
        httpdate::parse_http_date(sent["if-modified-since"].to_str().unwrap()).unwrap(),
        gw.origin.last_modified
    );
    assert_eq!(gw.origin.count("/lm"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_if_none_match_gets_a_304_from_the_cache() {
    let gw = start(|b| b).await;
    get(&gw.url("/etag")).await.bytes().await.unwrap();
    let rsp = reqwest::Client::new()
        .get(gw.url("/etag"))
        .header("if-none-match", "W/\"v0\", W/\"v1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 304);
    assert_eq!(rsp.headers()["etag"], "\"v1\"");
    assert_eq!(status(&rsp), "towergate; hit; ttl=10");
    assert!(rsp.bytes().await.unwrap().is_empty());
    assert_eq!(gw.origin.count("/etag"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_if_error_serves_stale_on_a_503() {
    let gw = start(|b| b).await;
    assert_eq!(get(&gw.url("/sie")).await.text().await.unwrap(), "sie v1");
    gw.clock.advance(Duration::from_secs(5));
    gw.origin.fail.store(true, Ordering::SeqCst);
    let rsp = get(&gw.url("/sie")).await;
    assert_eq!(rsp.status(), 200);
    assert_eq!(
        status(&rsp),
        "towergate; fwd=stale; fwd-status=503; ttl=-4; detail=stale-if-error"
    );
    assert_eq!(rsp.text().await.unwrap(), "sie v1");
    assert_eq!(gw.origin.count("/sie"), 2);

    // Past the stale-if-error window the error goes through.
    gw.clock.advance(Duration::from_secs(60));
    let rsp = get(&gw.url("/sie")).await;
    assert_eq!(rsp.status(), 503);
    assert_eq!(gw.store.stats().stale_hits, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_if_error_serves_stale_when_the_upstream_is_down() {
    let mut gw = start_with(CacheStore::new(), false, |b| b).await;
    assert_eq!(get(&gw.url("/sie")).await.text().await.unwrap(), "sie v1");
    gw.clock.advance(Duration::from_secs(5));
    // Stop the upstream server, and wait until its listener is closed.
    let upstream = gw.upstream.take().unwrap();
    let addr = upstream.addr;
    drop(upstream);
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while tokio::net::TcpStream::connect(addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(closed.is_ok(), "the upstream listener never closed");
    let rsp = get(&gw.url("/sie")).await;
    assert_eq!(rsp.status(), 200);
    assert_eq!(
        status(&rsp),
        "towergate; fwd=stale; ttl=-4; detail=stale-if-error"
    );
    assert_eq!(rsp.text().await.unwrap(), "sie v1");
    // Without a stored response the error goes through.
    assert_eq!(get(&gw.url("/other")).await.status(), 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_while_revalidate_serves_stale_then_the_refresh_lands() {
    let gw = start(|b| b).await;
    assert_eq!(get(&gw.url("/swr")).await.text().await.unwrap(), "swr v1");
    gw.clock.advance(Duration::from_secs(5));
    // A client that asks for a range: the refresh still asks for the whole
    // response (a 206 could not be stored).
    let rsp = reqwest::Client::new()
        .get(gw.url("/swr"))
        .header("range", "bytes=0-1")
        .send()
        .await
        .unwrap();
    assert_eq!(
        status(&rsp),
        "towergate; hit; ttl=-4; detail=stale-while-revalidate"
    );
    assert_eq!(rsp.text().await.unwrap(), "swr v1");
    // The background refresh lands: wait for it without timing anything.
    let refreshed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let rsp = get(&gw.url("/swr")).await;
            let hit = status(&rsp).starts_with("towergate; hit; ttl=1");
            if hit && rsp.text().await.unwrap() == "swr v2" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(refreshed.is_ok(), "background revalidation never landed");
    assert_eq!(gw.origin.count("/swr"), 2, "exactly one refresh");
    assert!(gw.origin.last_request("/swr").get("range").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_collapse_into_one_upstream_request() {
    let gw = start(|b| b.collapse_timeout(Duration::from_secs(30))).await;
    let client = reqwest::Client::new();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let client = client.clone();
        let url = gw.url("/slow");
        tasks.spawn(async move {
            let rsp = client.get(url).send().await.unwrap();
            rsp.text().await.unwrap()
        });
    }
    let mut bodies = Vec::new();
    while let Some(body) = tasks.join_next().await {
        bodies.push(body.unwrap());
    }
    assert_eq!(bodies.len(), 100);
    assert!(bodies.iter().all(|b| b == "slow body"));
    assert_eq!(gw.origin.count("/slow"), 1);
    let stats = gw.store.stats();
    assert_eq!(stats.misses, 1);
    assert_eq!(stats.hits, 99, "waiters and later arrivals are hits");
    assert!(stats.collapsed >= 1, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_whose_leader_gives_up_do_not_all_go_upstream() {
    let gw = start(|b| b.collapse_timeout(Duration::from_secs(10))).await;
    let url = gw.url("/slow300/abandoned");
    // The leader's client gives up long before the upstream answers.
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(150))
        .build()
        .unwrap();
    let leader = tokio::spawn(impatient.get(&url).send());
    tokio::time::sleep(Duration::from_millis(30)).await;
    let client = reqwest::Client::new();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let req = client.get(&url).send();
        tasks.spawn(async move { req.await.unwrap().text().await.unwrap() });
    }
    assert!(
        leader.await.unwrap().is_err(),
        "the leader's client gave up"
    );
    while let Some(body) = tasks.join_next().await {
        assert_eq!(body.unwrap(), "slow300 body");
    }
    // The abandoned try and one more, which one waiter led and the others
    // waited for; not one per waiter.
    let calls = gw.origin.count("/slow300/abandoned");
    assert!(calls <= 2, "{calls} upstream calls");
    assert!(gw.store.stats().collapsed >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_of_a_response_that_cannot_be_stored_go_upstream_together() {
    let gw = start(|b| b.collapse_timeout(Duration::from_secs(10))).await;
    let url = gw.url("/slow300/cookie");
    let client = reqwest::Client::new();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let req = client.get(&url).send();
        tasks.spawn(async move {
            let body = req.await.unwrap().text().await.unwrap();
            (body, tokio::time::Instant::now())
        });
    }
    let mut done = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let (body, at) = r.unwrap();
        assert_eq!(body, "slow300 body");
        done.push(at);
    }
    // Each goes upstream (nothing can be stored), the waiters all at once
    // when the leader's answer turns out not storable: not in line, one
    // upstream latency after another.
    assert_eq!(gw.origin.count("/slow300/cookie"), 10);
    let first = done.iter().min().unwrap();
    let last = done.iter().max().unwrap();
    assert!(
        *last - *first < SLOW * 3 / 2,
        "the last answer came {:?} after the first",
        *last - *first
    );
    let together = gw.origin.max_in_flight.load(Ordering::SeqCst);
    assert!(together >= 5, "at most {together} at once upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_revalidations_of_a_stale_entry_collapse() {
    // A popular entry expires: one request revalidates it, the others
    // wait for the freshened entry instead of all going upstream.
    let gw = start(|b| b.collapse_timeout(Duration::from_secs(30))).await;
    let first = get(&gw.url("/slow-etag")).await;
    assert_eq!(first.text().await.unwrap(), "slow etag body");
    gw.clock.advance(Duration::from_secs(11));
    let client = reqwest::Client::new();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let client = client.clone();
        let url = gw.url("/slow-etag");
        tasks.spawn(async move {
            let rsp = client.get(url).send().await.unwrap();
            let status = status(&rsp);
            (status, rsp.text().await.unwrap())
        });
    }
    let mut statuses = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let (status, body) = r.unwrap();
        assert_eq!(body, "slow etag body");
        statuses.push(status);
    }
    // The fill and one revalidation.
    assert_eq!(gw.origin.count("/slow-etag"), 2, "{statuses:?}");
    assert_eq!(
        statuses
            .iter()
            .filter(|s| s.contains("fwd-status=304"))
            .count(),
        1,
        "{statuses:?}"
    );
    assert!(gw.store.stats().collapsed >= 1);

    // `no-cache`: every request must revalidate, the freshened entry
    // serves no waiter; nobody waits for another's revalidation.
    get(&gw.url("/slow-no-cache")).await.text().await.unwrap();
    let collapsed = gw.store.stats().collapsed;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let client = client.clone();
        let url = gw.url("/slow-no-cache");
        tasks.spawn(async move { client.get(url).send().await.unwrap().text().await.unwrap() });
    }
    while let Some(r) = tasks.join_next().await {
        assert_eq!(r.unwrap(), "slow etag body");
    }
    assert_eq!(gw.origin.count("/slow-no-cache"), 11);
    assert_eq!(gw.store.stats().collapsed, collapsed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_bound_holds_under_a_flood_of_distinct_keys() {
    let max = 256 * 1024;
    let store = CacheStore::builder()
        .max_bytes(max)
        .max_entry_bytes(16 * 1024)
        .build();
    let gw = start_with(store, true, |b| b).await;
    let client = reqwest::Client::new();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (client, next, base) = (client.clone(), next.clone(), gw.url("/flood/"));
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= 5_000 {
                    return;
                }
                let rsp = client.get(format!("{base}{i}")).send().await.unwrap();
                assert_eq!(rsp.status(), 200);
                rsp.bytes().await.unwrap();
            }
        });
    }
    while let Some(t) = tasks.join_next().await {
        t.unwrap();
    }
    gw.store.run_pending_tasks();
    let stats = gw.store.stats();
    assert!(stats.bytes_stored <= max, "{stats:?}");
    assert!(stats.evictions > 0, "{stats:?}");
    assert_eq!(stats.stored, 5_000);
    assert!(stats.entries > 0 && stats.entries < 5_000, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_being_filled_stay_within_the_stores_bound() {
    // Two 60 KiB responses stall before their end, each copied as it
    // streams: with a 100 KiB store, the second copy is given up (the
    // response itself is delivered whole), and memory held by fills never
    // passes the store's bound however many clients stall.
    let store = CacheStore::builder()
        .max_bytes(100 * 1024)
        .max_entry_bytes(100 * 1024)
        .build();
    let gw = start_with(store, true, |b| b).await;
    let mut first = get(&gw.url("/held/1")).await;
    let mut got = 0;
    while got < 60 * 1024 {
        got += first.chunk().await.unwrap().unwrap().len();
    }
    let mut second = get(&gw.url("/held/2")).await;
    let mut got = 0;
    while got < 60 * 1024 {
        got += second.chunk().await.unwrap().unwrap().len();
    }
    gw.origin.gate.send_replace(true);
    for rsp in [first, second] {
        let rest = rsp.bytes().await.unwrap();
        assert!(rest.ends_with(b"end"));
    }
    gw.store.run_pending_tasks();
    // The first was stored, the second was not (not stored, then evicted:
    // never stored at all); the budget is back.
    let stats = gw.store.stats();
    assert_eq!((stats.stored, stats.evictions), (1, 0), "{stats:?}");
    assert!(status(&get(&gw.url("/held/1")).await).contains("hit"));
    assert_eq!(gw.origin.count("/held/1"), 1);
    let again = get(&gw.url("/held/2")).await;
    assert!(!status(&again).contains("hit"), "{}", status(&again));
    again.bytes().await.unwrap();
    assert_eq!(gw.origin.count("/held/2"), 2);
    gw.store.run_pending_tasks();
    assert!(status(&get(&gw.url("/held/2")).await).contains("hit"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entry_above_max_entry_bytes_is_delivered_but_not_stored() {
    let store = CacheStore::builder().max_entry_bytes(64 * 1024).build();
    let gw = start_with(store, true, |b| b).await;
    for path in ["/big", "/big-stream"] {
        for _ in 0..2 {
            let body = get(&gw.url(path)).await.bytes().await.unwrap();
            assert_eq!(body.len(), 200 * 1024, "{path}");
        }
        assert_eq!(gw.origin.count(path), 2, "{path}");
    }
    assert_eq!(gw.store.stats().entries, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_methods_invalidate_the_uri_and_its_location() {
    let gw = start(|b| b).await;
    let client = reqwest::Client::new();
    for path in ["/items", "/items/1", "/items"] {
        get(&gw.url(path)).await.bytes().await.unwrap();
    }
    assert_eq!(gw.origin.count("/items"), 1);
    // A failed DELETE invalidates nothing.
    let rsp = client.delete(gw.url("/items")).send().await.unwrap();
    assert_eq!(rsp.status(), 500);
    assert_eq!(status(&rsp), "towergate; fwd=method");
    assert_eq!(
        get(&gw.url("/items")).await.text().await.unwrap(),
        "/items v1"
    );

    let rsp = client
        .post(gw.url("/items"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 201);
    assert_eq!(status(&rsp), "towergate; fwd=method");
    // Both the target URI and the Location were invalidated (the origin
    // counts every method: GET, DELETE, POST, now GET).
    assert_eq!(
        get(&gw.url("/items")).await.text().await.unwrap(),
        "/items v4"
    );
    assert_eq!(
        get(&gw.url("/items/1")).await.text().await.unwrap(),
        "/items/1 v2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_by_key_prefix_and_namespace() {
    let store = CacheStore::new();
    let a = start_with(store.clone(), true, |b| b.namespace("a")).await;
    let b = start_with(store.clone(), true, |b| b.namespace("b")).await;
    for path in ["/x/1", "/x/2", "/y/1"] {
        get(&a.url(path)).await.bytes().await.unwrap();
    }
    get(&b.url("/x/1")).await.bytes().await.unwrap();
    assert_eq!(store.stats().entries, 4);

    let key = format!("a|GET|http://{}/x/1", a.addr);
    assert!(store.keys().contains(&key), "{:?}", store.keys());
    assert_eq!(store.purge(&Purge::Key(key)), 1);
    assert_eq!(
        store.purge(&Purge::Prefix {
            namespace: Some("a".into()),
            path_prefix: "/x".into(),
        }),
        1
    );
    assert_eq!(store.purge(&Purge::Namespace("b".into())), 1);
    assert_eq!(store.keys(), [format!("a|GET|http://{}/y/1", a.addr)]);
    assert_eq!(store.purge(&Purge::Namespace("b".into())), 0);

    // Purged entries are fetched again; the survivor is a hit.
    assert_eq!(get(&a.url("/x/1")).await.text().await.unwrap(), "/x/1 v2");
    let rsp = get(&a.url("/y/1")).await;
    assert!(status(&rsp).starts_with("towergate; hit"));
    assert_eq!(store.stats().entries, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_is_served_from_a_stored_get() {
    let gw = start(|b| b).await;
    let client = reqwest::Client::new();
    let body = get(&gw.url("/head")).await.bytes().await.unwrap();
    let rsp = client.head(gw.url("/head")).send().await.unwrap();
    assert_eq!(rsp.status(), 200);
    assert!(status(&rsp).starts_with("towergate; hit"));
    assert_eq!(
        rsp.headers()["content-length"],
        body.len().to_string().as_str()
    );
    assert_eq!(gw.origin.count("/head"), 1);

    // A HEAD miss is forwarded as HEAD and not stored.
    for _ in 0..2 {
        let rsp = client.head(gw.url("/head-only")).send().await.unwrap();
        assert_eq!(status(&rsp), "towergate; fwd=uri-miss");
    }
    assert_eq!(gw.origin.count("/head-only"), 2);
    let log = gw.origin.log.lock();
    assert!(
        log.iter()
            .filter(|(_, p, _)| p == "/head-only")
            .all(|(m, _, _)| m == Method::HEAD)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_body_streams_through_on_a_miss() {
    let store = CacheStore::builder()
        .max_entry_bytes(8 * 1024 * 1024)
        .build();
    let gw = start_with(store, true, |b| b).await;
    let (release, rx) = oneshot::channel();
    *gw.origin.release.lock() = Some(rx);

    let streamed = tokio::time::timeout(Duration::from_secs(10), async {
        let mut rsp = get(&gw.url("/stream")).await;
        assert_eq!(status(&rsp), "towergate; fwd=uri-miss; stored");
        // The first chunk arrives while the upstream is still waiting: the
        // cache did not buffer the response.
        let first = rsp.chunk().await.unwrap().unwrap();
        assert!(!first.is_empty());
        release.send(()).unwrap();
        let mut total = first.len();
        while let Some(chunk) = rsp.chunk().await.unwrap() {
            total += chunk.len();
        }
        total
    })
    .await
    .expect("the cache buffered the response instead of streaming it");
    assert_eq!(streamed, 4 * 1024 * 1024);

    // ...and it was stored on the way.
    let rsp = get(&gw.url("/stream")).await;
    assert!(status(&rsp).starts_with("towergate; hit"));
    assert_eq!(rsp.bytes().await.unwrap().len(), 4 * 1024 * 1024);
    assert_eq!(gw.origin.count("/stream"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_if_cached_miss_is_a_504_problem() {
    let gw = start(|b| b).await;
    let rsp = reqwest::Client::new()
        .get(gw.url("/fresh"))
        .header("cache-control", "only-if-cached")
        .send()
        .await
        .unwrap();
    assert_eq!(status(&rsp), "towergate; detail=only-if-cached");
    towergate_test::assert_problem_reqwest(rsp, 504).await;
    assert_eq!(gw.origin.count("/fresh"), 0);
}

/// The layer mounted on an axum `Router`, with `HandleErrorLayer` turning
/// its errors into responses, served on a real socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeds_in_an_axum_router() {
    use axum::error_handling::HandleErrorLayer;
    use axum::routing::get as get_route;

    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let store = CacheStore::new();
    let layer = CacheLayer::builder(store.clone())
        .namespace("axum")
        .build()
        .unwrap();
    let app = Router::new()
        .route(
            "/hello",
            get_route(move || {
                let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                async move { ([("cache-control", "max-age=60")], format!("hello {n}")) }
            }),
        )
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(|_: towergate_core::BoxError| async {
                    StatusCode::BAD_GATEWAY
                }))
                .layer(layer),
        );
    let server = towergate_test::spawn_upstream(app).await;
    let url = format!("{}/hello", server.url());
    for _ in 0..3 {
        assert_eq!(get(&url).await.text().await.unwrap(), "hello 1");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(store.stats().hits, 2);
}

/// `Cache<S>` is a plain tower service: readiness passes through.
#[tokio::test]
async fn cache_is_a_tower_service() {
    let layer = CacheLayer::builder(CacheStore::new()).build().unwrap();
    let inner = tower::service_fn(|_req: http::Request<Body>| async {
        Ok::<_, Infallible>(Response::new(Body::from("x")))
    });
    let mut svc: Cache<_> = tower::Layer::layer(&layer, inner);
    let rsp = svc
        .ready()
        .await
        .unwrap()
        .call(http::Request::post("/").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(rsp.headers()[CACHE_STATUS], "towergate; fwd=method");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_in_flight_is_not_stored_after_an_invalidation_or_a_purge() {
    // The GET left before the write (or the deploy's purge); what it
    // brings back may be what the invalidation was for.
    for purge in [false, true] {
        let gw = start(|b| b).await;
        let mut first = get(&gw.url("/held/1")).await;
        assert!(status(&first).contains("stored"), "{}", status(&first));
        first.chunk().await.unwrap().unwrap();
        // Another key's fill, in flight at the same time: not concerned.
        let mut other = get(&gw.url("/held/2")).await;
        other.chunk().await.unwrap().unwrap();
        if purge {
            gw.store.purge(&Purge::Prefix {
                namespace: None,
                path_prefix: "/held/1".into(),
            });
        } else {
            let rsp = reqwest::Client::new()
                .put(gw.url("/held/1"))
                .body("v2")
                .send()
                .await
                .unwrap();
            assert_eq!(rsp.status(), 200);
        }
        gw.origin.gate.send_replace(true);
        while first.chunk().await.unwrap().is_some() {}
        while other.chunk().await.unwrap().is_some() {}
        gw.store.run_pending_tasks();
        assert!(status(&get(&gw.url("/held/2")).await).contains("hit"));
        let again = get(&gw.url("/held/1")).await;
        assert!(
            !status(&again).contains("hit"),
            "purge {purge}: {}",
            status(&again)
        );
        again.bytes().await.unwrap();
        // The next fill, with nothing in between, is stored.
        gw.store.run_pending_tasks();
        assert!(status(&get(&gw.url("/held/1")).await).contains("hit"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evicted_variants_free_their_places() {
    // A store that holds a dozen or so small responses, and a resource
    // that varies on a header with many values: the variants the store
    // evicted no longer count against the 64 a key may have.
    let store = CacheStore::builder().max_bytes(8 * 1024).build();
    let gw = start_with(store, true, |b| b).await;
    let client = reqwest::Client::new();
    let get_lang = |lang: String| {
        let client = client.clone();
        let url = gw.url("/vary");
        async move {
            let rsp = client
                .get(url)
                .header("accept-language", lang)
                .send()
                .await
                .unwrap();
            let status = status(&rsp);
            rsp.bytes().await.unwrap();
            status
        }
    };
    for i in 0..70 {
        get_lang(format!("l{i}")).await;
        gw.store.run_pending_tasks();
    }
    let again = get_lang("l69".into()).await;
    assert!(again.contains("hit"), "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_cache_control_can_be_ignored() {
    for ignore in [false, true] {
        let gw = start(|b| b.ignore_request_cache_control(ignore)).await;
        let client = reqwest::Client::new();
        get(&gw.url("/public")).await.bytes().await.unwrap();
        let reload = client
            .get(gw.url("/public"))
            .header("cache-control", "no-cache")
            .send()
            .await
            .unwrap();
        // A forced reload: upstream when honoured, a hit when ignored.
        assert_eq!(
            status(&reload).contains("hit"),
            ignore,
            "{}",
            status(&reload)
        );
        reload.bytes().await.unwrap();
        // `no-store` is honoured either way.
        let private = client
            .get(gw.url("/public"))
            .header("cache-control", "no-store")
            .send()
            .await
            .unwrap();
        assert_eq!(status(&private), "towergate; fwd=bypass");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxys_forwarded_host_is_part_of_the_key() {
    let gw = start(|b| b).await;
    let client = reqwest::Client::new();
    let get_links = |peer: &'static str, forwarded_host: &'static str| {
        let req = client
            .get(gw.url("/links"))
            .header("x-test-peer", peer)
            .header("x-forwarded-host", forwarded_host);
        async move { req.send().await.unwrap().text().await.unwrap() }
    };
    // From a trusted load balancer the header reaches the upstream: each
    // forwarded host has its own entry, and no one is served evil links.
    assert_eq!(
        get_links("10.0.0.1", "evil.example").await,
        "<a href=\"//evil.example/next\">"
    );
    assert_eq!(
        get_links("10.0.0.1", "shop.example").await,
        "<a href=\"//shop.example/next\">"
    );
    assert_eq!(gw.origin.count("/links"), 2);
    assert_eq!(
        get_links("10.0.0.1", "shop.example").await,
        "<a href=\"//shop.example/next\">"
    );
    assert_eq!(gw.origin.count("/links"), 2, "a hit");
    // From anyone else the proxy replaces it with `Host`: one entry for
    // all, whatever they send.
    get_links("192.0.2.1", "a.example").await;
    get_links("192.0.2.1", "b.example").await;
    assert_eq!(gw.origin.count("/links"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_the_upstream_checks_are_not_shared() {
    let gw = start(|b| b).await;
    let client = reqwest::Client::new();
    let rsp = client
        .get(gw.url("/tenant"))
        .header("x-api-key", "tenant-a")
        .send()
        .await
        .unwrap();
    assert_eq!(status(&rsp), "towergate; fwd=uri-miss", "not stored");
    assert_eq!(rsp.text().await.unwrap(), "tenant [tenant-a]");
    // An anonymous caller is not served tenant A's answer.
    let rsp = get(&gw.url("/tenant")).await;
    assert_eq!(rsp.text().await.unwrap(), "tenant []");
    assert_eq!(gw.origin.count("/tenant"), 2);
    // What the upstream marks public is shared.
    for _ in 0..2 {
        let rsp = client
            .get(gw.url("/public"))
            .header("x-api-key", "tenant-a")
            .send()
            .await
            .unwrap();
        assert_eq!(rsp.text().await.unwrap(), "public");
    }
    assert_eq!(gw.origin.count("/public"), 1);

    // A key in the query that the key leaves out.
    let gw = start(|b| b.key_query(KeyQuery::Only(vec!["page".into()]))).await;
    let rsp = get(&gw.url("/tenant?page=1&api_key=tenant-a")).await;
    assert_eq!(status(&rsp), "towergate; fwd=uri-miss", "not stored");
    assert_eq!(rsp.text().await.unwrap(), "tenant [tenant-a]");
    let rsp = get(&gw.url("/tenant?page=1")).await;
    assert_eq!(rsp.text().await.unwrap(), "tenant []");
    assert_eq!(gw.origin.count("/tenant"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_of_vary_keeps_the_response_that_brings_it() {
    let gw = start(|b| b).await;
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for i in 0..6 {
        let mut req = client.get(gw.url("/cors"));
        if i % 2 == 0 {
            req = req.header("origin", "https://app.example");
        }
        let rsp = req.send().await.unwrap();
        statuses.push(status(&rsp));
        rsp.bytes().await.unwrap();
    }
    // The answer without `Vary` replaced the one with it, and is stored:
    // it serves both kinds of request from then on.
    assert_eq!(gw.origin.count("/cors"), 2, "{statuses:?}");
    let stats = gw.store.stats();
    assert!(stats.hits >= 1, "{statuses:?}");
    assert!(stats.entries >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_left_out_pair_with_a_semicolon_is_not_cached() {
    let gw = start(|b| b.key_query(KeyQuery::Only(vec!["page".into()]))).await;
    assert_eq!(get(&gw.url("/q/")).await.text().await.unwrap(), "/q/ v1");
    // Page 999 to an upstream that splits on `;`: not the entry of `/q/`,
    // and not stored as it.
    let rsp = get(&gw.url("/q/?utm=x;page=999")).await;
    assert_eq!(status(&rsp), "towergate; fwd=bypass");
    assert_eq!(rsp.text().await.unwrap(), "/q/ v2");
    let rsp = get(&gw.url("/q/?utm=y")).await;
    assert!(status(&rsp).contains("hit"), "{}", status(&rsp));
    assert_eq!(rsp.text().await.unwrap(), "/q/ v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxys_original_url_is_part_of_the_key() {
    for (peer, trusted) in [("10.0.0.1", true), ("192.0.2.1", false)] {
        let gw = start(|b| b).await;
        let client = reqwest::Client::new();
        let get_page = |original_url: &'static str| {
            let req = client
                .get(gw.url("/page"))
                .header("x-test-peer", peer)
                .header("x-original-url", original_url);
            async move { req.send().await.unwrap().text().await.unwrap() }
        };
        let admin = get_page("/admin/report").await;
        let other = get_page("/public").await;
        if trusted {
            // The load balancer's header reaches the upstream, which serves
            // that path: each its own entry, and `/public` is not the
            // admin report.
            assert_eq!(admin, "page /admin/report");
            assert_eq!(other, "page /public");
            assert_eq!(gw.origin.count("/page"), 2);
            assert_eq!(get_page("/public").await, "page /public", "a hit");
            assert_eq!(gw.origin.count("/page"), 2);
        } else {
            // A client's is removed by the proxy (not in this test's):
            // it cannot split the cache with it.
            assert_eq!(other, admin);
            assert_eq!(gw.origin.count("/page"), 1);
        }
    }
}
