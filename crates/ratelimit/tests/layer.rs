//! The rate-limit and concurrency layers through the public API, with
//! `ServiceBuilder` + `service_fn` + `oneshot`, on a manual clock.

// Helpers outside #[test] fns are test code too.
#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{HeaderName, Request, Response, StatusCode};
use serde_json::Value;
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};
use towergate_core::body::ResponseBody;
use towergate_core::{Identity, RouteMatch};
use towergate_ratelimit::error::{Overloaded, RateLimited, StoreUnavailable};
use towergate_ratelimit::gcra::Verdict;
use towergate_ratelimit::store::{Batch, Check};
use towergate_ratelimit::{
    ConcurrencyLimitLayer, FailurePolicy, Key, Limit, ManualClock, MemoryStore, MissingKey,
    RateLimit, RateLimitLayer, Store, StoreError,
};

type Rsp = Response<ResponseBody<String>>;

/// An inner service that counts the requests that reach it.
fn counting() -> (
    Arc<AtomicUsize>,
    impl Service<Request<String>, Response = Response<String>, Error = Infallible, Future: Send>
    + Clone
    + Send,
) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let svc = service_fn(move |_req: Request<String>| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, Infallible>(Response::new("ok".to_owned())) }
    });
    (hits, svc)
}

fn api_key() -> Key {
    Key::header(HeaderName::from_static("x-api-key"))
}

fn req(key: Option<&str>) -> Request<String> {
    let mut b = Request::get("/things");
    if let Some(key) = key {
        b = b.header("x-api-key", key);
    }
    b.body(String::new()).unwrap()
}

fn store(clock: &ManualClock) -> MemoryStore {
    MemoryStore::builder().clock(clock.clone()).build().unwrap()
}

async fn problem(rsp: Rsp, status: u16) -> Value {
    towergate_test::assert_problem(rsp.map(axum::body::Body::new), status).await
}

fn header<'a>(rsp: &'a Rsp, name: &str) -> &'a str {
    rsp.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn refuses_with_429_problem_retry_after_and_headers() {
    let clock = ManualClock::new();
    let (hits, inner) = counting();
    let layer = RateLimitLayer::builder()
        .limit(Limit::per_minute(2).name("per-key"))
        .key(api_key())
        .store(store(&clock))
        .legacy_headers(true)
        .build()
        .unwrap();
    let svc = ServiceBuilder::new().layer(layer).service(inner);

    let first = svc.clone().oneshot(req(Some("k"))).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(header(&first, "ratelimit-policy"), r#""per-key";q=2;w=60"#);
    assert_eq!(header(&first, "ratelimit"), r#""per-key";r=1;t=30"#);
    assert_eq!(header(&first, "x-ratelimit-limit"), "2");
    assert_eq!(header(&first, "x-ratelimit-remaining"), "1");
    assert_eq!(header(&first, "x-ratelimit-reset"), "30");

    let second = svc.clone().oneshot(req(Some("k"))).await.unwrap();
    assert_eq!(second.status(), StatusCode::OK);
    assert_eq!(header(&second, "ratelimit"), r#""per-key";r=0;t=60"#);

    let third = svc.clone().oneshot(req(Some("k"))).await.unwrap();
    assert_eq!(
        hits.load(Ordering::SeqCst),
        2,
        "a refusal never reaches the service"
    );
    assert_eq!(header(&third, "retry-after"), "30");
    assert_eq!(header(&third, "ratelimit"), r#""per-key";r=0;t=60"#);
    assert_eq!(header(&third, "ratelimit-policy"), r#""per-key";q=2;w=60"#);
    assert_eq!(header(&third, "x-ratelimit-remaining"), "0");
    let marker = third.extensions().get::<RateLimited>().cloned().unwrap();
    assert_eq!(marker.limit(), "per-key");
    assert_eq!(marker.retry_after(), Duration::from_secs(30));
    let body = problem(third, 429).await;
    assert_eq!(body["title"], "Too Many Requests");
    assert_eq!(body["limit"], "per-key");
    assert_eq!(body["retry_after"], 30);
    assert!(body["detail"].as_str().unwrap().contains("per-key"));

    // A partial wait is rounded up, never down.
    clock.advance(Duration::from_millis(29_500));
    let early = svc.clone().oneshot(req(Some("k"))).await.unwrap();
    assert_eq!(early.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&early, "retry-after"), "1");
    clock.advance(Duration::from_millis(500));
    let refilled = svc.oneshot(req(Some("k"))).await.unwrap();
    assert_eq!(refilled.status(), StatusCode::OK);
    assert_eq!(header(&refilled, "ratelimit"), r#""per-key";r=0;t=60"#);
    assert_eq!(hits.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn keys_have_separate_buckets() {
    let clock = ManualClock::new();
    let (_, inner) = counting();
    let svc = RateLimit::new(
        inner,
        RateLimitLayer::builder()
            .limit(Limit::per_hour(1))
            .key(Key::identity("consumer"))
            .store(store(&clock))
            .build()
            .unwrap(),
    );
    let as_consumer = |name: &str| {
        let mut r = req(None);
        r.extensions_mut().insert(Identity {
            consumer: Some(name.to_owned()),
            ..Identity::default()
        });
        r
    };
    for name in ["alice", "bob"] {
        let ok = svc.clone().oneshot(as_consumer(name)).await.unwrap();
        assert_eq!(ok.status(), StatusCode::OK, "{name}'s first");
    }
    for name in ["alice", "bob"] {
        let refused = svc.clone().oneshot(as_consumer(name)).await.unwrap();
        assert_eq!(
            refused.status(),
            StatusCode::TOO_MANY_REQUESTS,
            "{name}'s second"
        );
    }
    assert_eq!(
        svc.get_ref()
            .clone()
            .oneshot(req(None))
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn missing_key_refused_with_the_configured_status() {
    let (hits, inner) = counting();
    let layer = RateLimitLayer::builder()
        .limit(Limit::per_second(100).name("per-consumer"))
        .key(Key::identity("consumer"))
        .on_missing_key(MissingKey::Refuse(StatusCode::UNAUTHORIZED))
        .build()
        .unwrap();
    let rsp = ServiceBuilder::new()
        .layer(layer)
        .service(inner)
        .oneshot(req(None))
        .await
        .unwrap();
    assert!(rsp.headers().get("ratelimit").is_none());
    let body = problem(rsp, 401).await;
    assert_eq!(body["limit"], "per-consumer");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("identity field consumer")
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0);

    // The default is 400.
    let (_, inner) = counting();
    let layer = RateLimitLayer::builder()
        .limit(Limit::per_second(100))
        .key(Key::ClientIp)
        .build()
        .unwrap();
    let rsp = layer.layer(inner).oneshot(req(None)).await.unwrap();
    problem(rsp, 400).await;
}

#[tokio::test]
async fn missing_keys_can_share_one_bucket() {
    let clock = ManualClock::new();
    let (hits, inner) = counting();
    let layer = RateLimitLayer::builder()
        .limit(Limit::per_minute(2))
        .key(api_key())
        .store(store(&clock))
        .on_missing_key(MissingKey::Shared)
        .build()
        .unwrap();
    let svc = layer.layer(inner);
    let statuses = [None, None, None, Some("k"), Some("k")];
    let mut got = Vec::new();
    for key in statuses {
        got.push(
            svc.clone()
                .oneshot(req(key))
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    // Anonymous callers share 2; a keyed caller has its own 2.
    assert_eq!(got, [200, 200, 429, 200, 200]);
    assert_eq!(hits.load(Ordering::SeqCst), 4);
}

/// A layer of one limit over a `MemoryStore` decides in `call` without a
/// batch; behind `shared_store` it goes through `Store::check`. Both must
/// answer alike, request for request.
#[tokio::test]
async fn one_memory_limit_answers_like_the_store_path() {
    use http::HeaderValue;
    use towergate_core::ClientAddr;

    let mut seen = std::collections::BTreeSet::new();
    for missing in [
        MissingKey::Shared,
        MissingKey::Refuse(StatusCode::UNAUTHORIZED),
    ] {
        for key in [Key::ClientIp, Key::ClientNet { v4: 24, v6: 48 }, api_key()] {
            let clock = ManualClock::new();
            let build = |memory: Option<MemoryStore>| {
                let b = RateLimitLayer::builder()
                    .limit(Limit::per_second(2).burst(3).name("per-client"))
                    .key(key.clone())
                    .scope("same")
                    .on_missing_key(missing)
                    .legacy_headers(true);
                match memory {
                    Some(memory) => b.store(memory),
                    None => b.shared_store(Arc::new(store(&clock))),
                }
                .build()
                .unwrap()
            };
            let fast = build(Some(store(&clock))).layer(counting().1);
            let slow = build(None).layer(counting().1);
            let clients = [
                Some("203.0.113.7:1"),
                Some("[2001:db8:0:1::5]:1"),
                Some("[::ffff:203.0.113.8]:1"),
                None,
                Some("203.0.113.7:2"),
            ];
            for round in 0..20 {
                let client = clients[round % clients.len()];
                let request = || {
                    let mut r = req(client.map(|_| "k"));
                    if let Some(addr) = client {
                        r.extensions_mut()
                            .insert(ClientAddr::direct(addr.parse().unwrap(), false));
                    }
                    r
                };
                let (a, b) = (
                    fast.clone().oneshot(request()).await.unwrap(),
                    slow.clone().oneshot(request()).await.unwrap(),
                );
                let context = format!("{missing:?} {key:?} round {round}");
                assert_eq!(a.status(), b.status(), "{context}");
                seen.insert(a.status().as_u16());
                for name in [
                    "ratelimit",
                    "ratelimit-policy",
                    "x-ratelimit-limit",
                    "x-ratelimit-remaining",
                    "x-ratelimit-reset",
                    "retry-after",
                ] {
                    let all = |r: &Rsp| -> Vec<HeaderValue> {
                        r.headers().get_all(name).iter().cloned().collect()
                    };
                    assert_eq!(all(&a), all(&b), "{name}, {context}");
                }
                let body = |r: Rsp| async move {
                    http_body_util::BodyExt::collect(r.into_body())
                        .await
                        .unwrap()
                        .to_bytes()
                };
                assert_eq!(body(a).await, body(b).await, "{context}");
                clock.advance(Duration::from_millis(100));
            }
        }
    }
    assert_eq!(Vec::from_iter(seen), [200, 401, 429]);
}

#[tokio::test]
async fn several_limits_tightest_reported_refusals_consume_nothing() {
    let clock = ManualClock::new();
    let (hits, inner) = counting();
    let layer = RateLimitLayer::builder()
        .limit(Limit::per_second(1).burst(2).name("fast"))
        .limit(Limit::per_hour(4).name("hourly"))
        .key(api_key())
        .store(store(&clock))
        .build()
        .unwrap();
    let svc = layer.layer(inner);
    let send = || svc.clone().oneshot(req(Some("k")));

    let policy = r#""fast";q=2;w=2, "hourly";q=4;w=3600"#;
    let r1 = send().await.unwrap();
    assert_eq!(header(&r1, "ratelimit-policy"), policy);
    assert_eq!(header(&r1, "ratelimit"), r#""fast";r=1;t=1"#);
    let r2 = send().await.unwrap();
    assert_eq!(header(&r2, "ratelimit"), r#""fast";r=0;t=2"#);
    // Three refusals by "fast": none may eat into "hourly".
    for _ in 0..3 {
        let refused = send().await.unwrap();
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(header(&refused, "retry-after"), "1");
        assert_eq!(header(&refused, "ratelimit"), r#""fast";r=0;t=2"#);
        assert_eq!(
            refused.extensions().get::<RateLimited>().unwrap().limit(),
            "fast"
        );
    }
    clock.advance(Duration::from_secs(1));
    let r6 = send().await.unwrap();
    assert_eq!(r6.status(), StatusCode::OK);
    assert_eq!(header(&r6, "ratelimit"), r#""fast";r=0;t=2"#);

    // "fast" is full again; "hourly" has 1 left (4 - 3 admitted), so it is
    // now the tightest and it refuses the next after that.
    clock.advance(Duration::from_secs(10));
    let r7 = send().await.unwrap();
    assert_eq!(r7.status(), StatusCode::OK);
    assert_eq!(header(&r7, "ratelimit"), r#""hourly";r=0;t=3589"#);
    let r8 = send().await.unwrap();
    assert_eq!(r8.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        r8.extensions().get::<RateLimited>().unwrap().limit(),
        "hourly"
    );
    // 4 admitted at 0, 0, 1 and 11 s: the first came back at 900 s.
    assert_eq!(header(&r8, "retry-after"), "889");
    assert_eq!(hits.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn route_limit_is_shared_by_all_clients() {
    let clock = ManualClock::new();
    let (_, inner) = counting();
    let layer = RateLimitLayer::builder()
        .limit(Limit::per_minute(10).name("per-key"))
        .limit(Limit::per_minute(3).name("route").key(Key::Route))
        .key(api_key())
        .store(store(&clock))
        .build()
        .unwrap();
    let svc = layer.layer(inner);
    let mut statuses = Vec::new();
    for key in ["a", "b", "c", "d"] {
        let mut r = req(Some(key));
        r.extensions_mut().insert(RouteMatch::new("users"));
        statuses.push(svc.clone().oneshot(r).await.unwrap().status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429]);
}

/// A store that always fails, as Redis does when it is down.
#[derive(Debug)]
struct DownStore;

impl Store for DownStore {
    fn check(&self, _: &Batch) -> Check {
        Check::ready(Err(StoreError::TimedOut(Duration::from_millis(50))))
    }
}

#[tokio::test]
async fn fail_open_decides_with_the_local_limiter() {
    let clock = ManualClock::new();
    let (hits, inner) = counting();
    let layer = RateLimitLayer::builder()
        .limit(Limit::per_minute(2).on_store_failure(FailurePolicy::FailOpen))
        .key(api_key())
        .store(DownStore)
        .fallback(store(&clock))
        .build()
        .unwrap();
    let svc = layer.layer(inner);
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(
            svc.clone()
                .oneshot(req(Some("k")))
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, [200, 200, 429], "still limited, locally");
    assert_eq!(layer.fallback().len(), 1);
    assert_eq!(hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn fail_closed_answers_503_with_retry_after() {
    let (hits, inner) = counting();
    let layer = RateLimitLayer::builder()
        .limit(Limit::per_minute(100).name("soft"))
        .limit(
            Limit::per_minute(100)
                .name("strict")
                .on_store_failure(FailurePolicy::FailClosed),
        )
        .key(api_key())
        .store(DownStore)
        .build()
        .unwrap();
    let rsp = layer.layer(inner).oneshot(req(Some("k"))).await.unwrap();
    assert_eq!(header(&rsp, "retry-after"), "1");
    assert_eq!(
        rsp.extensions().get::<StoreUnavailable>().unwrap().limit(),
        "strict"
    );
    let body = problem(rsp, 503).await;
    assert_eq!(body["detail"], "rate limiting is temporarily unavailable");
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

/// A store that answers later, like a network store: exercises the
/// response future's `Deciding` state and the service hand-over.
#[derive(Debug)]
struct LaterStore(MemoryStore);

impl Store for LaterStore {
    fn check(&self, batch: &Batch) -> Check {
        let store = self.0.clone();
        let batch = batch.clone();
        Check::pending(async move {
            tokio::task::yield_now().await;
            Ok::<Verdict, StoreError>(store.decide(&batch))
        })
    }
}

#[tokio::test]
async fn asynchronous_store_decisions() {
    let clock = ManualClock::new();
    let (hits, inner) = counting();
    let layer = RateLimitLayer::builder()
        .limit(Limit::per_minute(2).name("later"))
        .key(api_key())
        .store(LaterStore(store(&clock)))
        .build()
        .unwrap();
    let mut svc = layer.layer(inner);
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let rsp = svc
            .ready()
            .await
            .unwrap()
            .call(req(Some("k")))
            .await
            .unwrap();
        statuses.push(rsp.status().as_u16());
        assert!(rsp.headers().contains_key("ratelimit"));
    }
    assert_eq!(statuses, [200, 200, 429]);
    assert_eq!(hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn poll_ready_forwards_and_never_refuses() {
    let layer = RateLimitLayer::builder()
        .limit(Limit::per_minute(1))
        .key(api_key())
        .build()
        .unwrap();
    let (mut svc, mut handle) =
        tower_test::mock::spawn_layer::<Request<String>, Response<String>, _>(layer);
    handle.allow(0);
    tokio_test::assert_pending!(svc.poll_ready());
    handle.allow(2);
    tokio_test::assert_ready_ok!(svc.poll_ready());
    // The limit is exhausted after one request, yet the service stays
    // ready: refusals happen in `call`.
    let first = svc.call(req(Some("k")));
    let (request, send) = handle.next_request().await.unwrap();
    assert_eq!(request.headers()["x-api-key"], "k");
    send.send_response(Response::new("up".to_owned()));
    assert_eq!(first.await.unwrap().status(), StatusCode::OK);
    tokio_test::assert_ready_ok!(svc.poll_ready());
    let refused = svc.call(req(Some("k"))).await.unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn concurrency_limit_sheds_with_503() {
    let layer = ConcurrencyLimitLayer::new(2).retry_after(Duration::from_millis(2_500));
    let (mut svc, mut handle) =
        tower_test::mock::spawn_layer::<Request<String>, Response<String>, _>(layer.clone());
    handle.allow(10);

    tokio_test::assert_ready_ok!(svc.poll_ready());
    let a = svc.call(req(None));
    tokio_test::assert_ready_ok!(svc.poll_ready());
    let b = svc.call(req(None));
    assert_eq!(layer.in_flight(), 2);

    tokio_test::assert_ready_ok!(svc.poll_ready());
    let shed = svc.call(req(None)).await.unwrap();
    assert_eq!(shed.headers()["retry-after"], "3");
    assert_eq!(
        shed.extensions()
            .get::<Overloaded>()
            .unwrap()
            .max_in_flight(),
        2
    );
    let body = problem(shed, 503).await;
    assert_eq!(body["detail"], "too many requests in flight; retry later");

    // Completing one frees its slot.
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(Response::new(String::new()));
    assert_eq!(a.await.unwrap().status(), StatusCode::OK);
    assert_eq!(layer.in_flight(), 1);

    // Dropping a future (client gone) frees its slot too.
    drop(b);
    assert_eq!(layer.in_flight(), 0);
    tokio_test::assert_ready_ok!(svc.poll_ready());
    let c = svc.call(req(None));
    assert_eq!(layer.in_flight(), 1);
    let (_, _send) = handle.next_request().await.unwrap();
    drop(c);
    assert_eq!(layer.in_flight(), 0);
}
