//! The Redis store against a real Redis (`REDIS_URL`), and its failure
//! policies against a Redis that is not there.
//!
//! Without `REDIS_URL` (or with it unreachable) the tests that need Redis
//! print SKIPPED to stderr and pass, unless `CI` is set: then they fail.
//! Every test uses its own key prefix, so runs never see each other's state.

// Helpers outside #[test] fns are test code too.
#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderName, Request, Response, StatusCode};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::{ServiceBuilder, ServiceExt, service_fn};
use towergate_ratelimit::gcra::Gcra;
use towergate_ratelimit::store::{Batch, Bucket};
use towergate_ratelimit::{
    FailurePolicy, Key, Limit, RateLimitLayer, RedisStore, Store, StoreError,
};

/// Generous: a hang guard, not a speed assertion.
const HANG_GUARD: Duration = Duration::from_secs(10);

/// The Redis to test against, or `None` (after a loud notice) when there
/// is none and this is not CI.
async fn redis(test: &str) -> Option<String> {
    let url = match std::env::var("REDIS_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => return skip(test, "REDIS_URL is not set"),
    };
    let probe = RedisStore::builder(url.as_str())
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    match probe.ping().await {
        Ok(()) => Some(url),
        Err(e) => skip(test, &format!("{url} is unreachable: {e}")),
    }
}

fn skip(test: &str, why: &str) -> Option<String> {
    if std::env::var_os("CI").is_some() {
        panic!("{test}: CI is set, so Redis tests must run, but {why}");
    }
    // Straight to the process's stderr: libtest captures `eprintln!` of
    // passing tests, and a skip must not go unnoticed.
    let banner = "!".repeat(72);
    let notice = format!(
        "\n{banner}\n!!! SKIPPED {test}: {why}\n\
         !!! run with REDIS_URL=redis://127.0.0.1:6379 (with CI set, this fails instead)\n{banner}\n"
    );
    let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), notice.as_bytes());
    None
}

/// A key prefix no other run or test shares.
fn unique_prefix(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("towergate-test:{test}:{}:{nanos}:", std::process::id())
}

fn ok_service() -> impl tower::Service<
    Request<String>,
    Response = Response<String>,
    Error = Infallible,
    Future: Send + 'static,
> + Clone
+ Send
+ 'static {
    service_fn(|_: Request<String>| async { Ok::<_, Infallible>(Response::new(String::new())) })
}

fn keyed(key: &str) -> Request<String> {
    Request::get("/")
        .header("x-api-key", key)
        .body(String::new())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_one_limit_exactly() {
    let Some(url) = redis("three_instances_share_one_limit_exactly").await else {
        return;
    };
    let prefix = unique_prefix("shared");
    // Three gateway instances: separate stores, separate connections, the
    // same Redis and prefix. Fail closed, so a store failure would show as
    // a 503 instead of hiding behind a local limiter.
    let instances: Vec<_> = (0..3)
        .map(|_| {
            let store = RedisStore::builder(url.as_str())
                .prefix(prefix.as_str())
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap();
            let layer = RateLimitLayer::builder()
                .limit(
                    Limit::per_minute(100)
                        .name("per-key")
                        .on_store_failure(FailurePolicy::FailClosed),
                )
                .key(Key::header(HeaderName::from_static("x-api-key")))
                .store(store)
                .build()
                .unwrap();
            ServiceBuilder::new().layer(layer).service(ok_service())
        })
        .collect();

    let mut decisions = JoinSet::new();
    for i in 0..1_000 {
        let svc = instances[i % 3].clone();
        decisions.spawn(async move { svc.oneshot(keyed("one-key")).await.unwrap().status() });
    }
    let (mut allowed, mut limited) = (0, 0);
    let all = tokio::time::timeout(HANG_GUARD * 3, async {
        while let Some(status) = decisions.join_next().await {
            match status.unwrap() {
                StatusCode::OK => allowed += 1,
                StatusCode::TOO_MANY_REQUESTS => limited += 1,
                other => panic!("unexpected {other}: the store failed"),
            }
        }
    })
    .await;
    assert!(all.is_ok(), "1000 decisions did not finish");
    assert_eq!(
        allowed, 100,
        "exactly the limit is admitted across instances"
    );
    assert_eq!(limited, 900);
}

#[tokio::test]
async fn script_decides_all_or_nothing_in_one_slot() {
    let Some(url) = redis("script_decides_all_or_nothing_in_one_slot").await else {
        return;
    };
    let prefix = unique_prefix("script");
    let store = RedisStore::builder(url.as_str())
        .prefix(prefix.as_str())
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let fast = Gcra::new(1_000_000, 2).unwrap(); // 1/s, burst 2
    let hourly = Gcra::new(900_000_000, 4).unwrap(); // 4/h
    let batch = Batch::new(
        "scope|=k",
        vec![Bucket::new("fast", fast), Bucket::new("hourly", hourly)],
    );
    let check = |store: &RedisStore| {
        let check = store.check(&batch);
        async move {
            tokio::time::timeout(HANG_GUARD, check)
                .await
                .unwrap()
                .unwrap()
        }
    };

    let v1 = check(&store).await;
    assert!(v1.allowed);
    assert_eq!((v1.outcomes[0].remaining, v1.outcomes[1].remaining), (1, 3));
    let v2 = check(&store).await;
    assert!(v2.allowed);
    assert_eq!((v2.outcomes[0].remaining, v2.outcomes[1].remaining), (0, 2));
    for _ in 0..3 {
        let refused = check(&store).await;
        assert!(!refused.allowed);
        assert!(!refused.outcomes[0].allowed);
        assert!(refused.outcomes[1].allowed, "hourly alone would admit");
        assert_eq!(
            refused.outcomes[1].remaining, 2,
            "a refusal consumes nothing"
        );
        let retry = refused.retry_after();
        assert!(retry > 0 && retry <= 1_000_000, "retry after {retry} µs");
    }
    assert!(!store.degraded());

    // The same names under a lower limit (a reload from 4/h to 1/s, burst
    // 1): the hour-long state left behind reads as an empty bucket of the
    // new limit, refused for one interval, not for half an hour.
    let lowered = Batch::new(
        "scope|=k",
        vec![
            Bucket::new("fast", fast),
            Bucket::new("hourly", Gcra::new(1_000_000, 1).unwrap()),
        ],
    );
    let refused = tokio::time::timeout(HANG_GUARD, store.check(&lowered))
        .await
        .unwrap()
        .unwrap();
    assert!(!refused.allowed);
    assert!(
        refused.outcomes[1].retry_after <= 1_000_000,
        "retry after {} µs",
        refused.outcomes[1].retry_after
    );
    assert!(refused.outcomes[1].reset_after <= 1_000_000);
    // The refusal wrote the capped state back: the key now expires within
    // the new window, and one interval later the new limit admits.
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("{prefix}{{scope|=k}}hourly"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 0 && ttl <= 1_000, "expires in {ttl} ms");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let admitted = tokio::time::timeout(HANG_GUARD, store.check(&lowered))
        .await
        .unwrap()
        .unwrap();
    assert!(admitted.allowed);

    // Keys are `<prefix>{<tag>}<id>` (one Cluster slot) and expire with
    // their TAT.
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    for (id, window_ms) in [("fast", 2_000), ("hourly", 3_600_000)] {
        let key = format!("{prefix}{{scope|=k}}{id}");
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(ttl > 0 && ttl <= window_ms, "{key} expires in {ttl} ms");
    }
}

#[tokio::test]
async fn unreachable_redis_fails_open_to_the_local_limiter() {
    let store = RedisStore::builder("redis://127.0.0.1:1")
        .timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let layer = RateLimitLayer::builder()
        .limit(Limit::per_minute(2).on_store_failure(FailurePolicy::FailOpen))
        .key(Key::header(HeaderName::from_static("x-api-key")))
        .store(store.clone())
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(layer.clone())
        .service(ok_service());
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let rsp = tokio::time::timeout(HANG_GUARD, svc.clone().oneshot(keyed("k")))
            .await
            .expect("a decision must never hang")
            .unwrap();
        assert!(rsp.headers().contains_key("ratelimit"));
        statuses.push(rsp.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 429], "limited by the local fallback");
    assert!(store.degraded());
    assert!(store.failures() >= 1);
    assert_eq!(layer.fallback().len(), 1);
}

#[tokio::test]
async fn unreachable_redis_fails_closed_with_503() {
    let store = RedisStore::builder("redis://127.0.0.1:1")
        .timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let layer = RateLimitLayer::builder()
        .limit(Limit::per_minute(100).on_store_failure(FailurePolicy::FailClosed))
        .key(Key::header(HeaderName::from_static("x-api-key")))
        .store(store.clone())
        .build()
        .unwrap();
    let svc = ServiceBuilder::new().layer(layer).service(ok_service());
    for attempt in 0..3 {
        let rsp = tokio::time::timeout(HANG_GUARD, svc.clone().oneshot(keyed("k")))
            .await
            .expect("a decision must never hang")
            .unwrap();
        assert_eq!(
            rsp.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "attempt {attempt}"
        );
        assert!(rsp.headers().contains_key("retry-after"));
        towergate_test::assert_problem(rsp.map(axum::body::Body::new), 503).await;
    }
    assert!(store.degraded());
}

/// A TCP forwarder to Redis that can be cut and restored, to see the store
/// degrade and recover.
struct Switch {
    addr: SocketAddr,
    up: watch::Sender<bool>,
    /// Connections accepted before the latest freeze stop forwarding but
    /// stay open: a half-open socket, or a network partition with no
    /// reset. Later ones forward.
    frozen: watch::Sender<u64>,
    /// How long each new connection waits before its first byte goes
    /// through: a slow connect (TLS, AUTH, a far region).
    delay: watch::Sender<Duration>,
}

impl Switch {
    async fn start(redis: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (up, _) = watch::channel(true);
        let (frozen, _) = watch::channel(0u64);
        let (delay, _) = watch::channel(Duration::ZERO);
        let state = up.subscribe();
        let freezes = frozen.subscribe();
        let delays = delay.subscribe();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut state = state.clone();
                let mut freezes = freezes.clone();
                if !*state.borrow() {
                    // Down: hang up at once, as a dead peer's host would.
                    continue;
                }
                let born = *freezes.borrow();
                let delay = *delays.borrow();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let Ok(mut server) = TcpStream::connect(redis).await else {
                        return;
                    };
                    let frozen = tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => false,
                        _ = state.wait_for(|up| !up) => false,
                        _ = freezes.wait_for(|f| *f > born) => true,
                    };
                    if frozen {
                        // Silent, and open, until the test ends.
                        std::future::pending::<()>().await;
                    }
                    drop((client, server));
                });
            }
        });
        Self {
            addr,
            up,
            frozen,
            delay,
        }
    }

    fn set(&self, up: bool) {
        self.up.send_replace(up);
    }

    fn freeze(&self) {
        self.frozen.send_modify(|f| *f += 1);
    }

    /// Delays every connection accepted from now on by `delay`.
    fn slow_connect(&self, delay: Duration) {
        self.delay.send_replace(delay);
    }
}

/// The Redis address of `url` for a [`Switch`], or `None` (and a loud
/// skip) when it is not TCP.
async fn tcp_addr(test: &str, url: &str) -> Option<SocketAddr> {
    let info = redis::Client::open(url).unwrap();
    match info.get_connection_info().addr() {
        redis::ConnectionAddr::Tcp(host, port) => Some(
            tokio::net::lookup_host((host.as_str(), *port))
                .await
                .unwrap()
                .next()
                .unwrap(),
        ),
        other => {
            skip(test, &format!("needs a TCP Redis, not {other:?}"));
            None
        }
    }
}

/// A connection that goes silent without closing (a partition, a host
/// gone without a reset) is replaced after the failed call: the store
/// recovers through a new connection instead of timing out on the old one
/// until the kernel gives up on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_replaced() {
    const TEST: &str = "a_silent_connection_is_replaced";
    let Some(url) = redis(TEST).await else {
        return;
    };
    let Some(redis_addr) = tcp_addr(TEST, &url).await else {
        return;
    };
    let switch = Switch::start(redis_addr).await;
    let store = RedisStore::builder(format!("redis://{}", switch.addr))
        .prefix(unique_prefix("silent"))
        .timeout(Duration::from_millis(200))
        .probe_interval(Duration::from_millis(100))
        .build()
        .unwrap();
    let gcra = Gcra::new(1_000, 1_000).unwrap();
    let decide = || {
        let check = store.check(&Batch::new("k", vec![Bucket::new("k", gcra)]));
        async move {
            tokio::time::timeout(HANG_GUARD, check)
                .await
                .expect("a decision must never hang")
        }
    };
    assert!(decide().await.is_ok(), "healthy");
    switch.freeze();
    // Timed out, by the store's clock or by the client's own response
    // timeout (the same 200 ms).
    let failed = decide().await;
    assert!(
        matches!(
            failed,
            Err(StoreError::TimedOut(_) | StoreError::Backend(_))
        ),
        "{failed:?}"
    );
    assert!(store.degraded());
    let recovered = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if decide().await.is_ok() && !store.degraded() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        recovered.is_ok(),
        "still on the silent connection ({} failures)",
        store.failures()
    );
}

/// One decision of bucket `k` on `store`, within the hang guard.
async fn decide(store: &RedisStore) -> Result<towergate_ratelimit::gcra::Verdict, StoreError> {
    let gcra = Gcra::new(1_000, 1_000).unwrap();
    let check = store.check(&Batch::new("k", vec![Bucket::new("k", gcra)]));
    tokio::time::timeout(HANG_GUARD, check)
        .await
        .expect("a decision must never hang")
}

/// Whether Redis decides again (not a failure policy) within `within`.
async fn served(store: &RedisStore, within: Duration) -> bool {
    tokio::time::timeout(within, async {
        loop {
            if decide(store).await.is_ok() && !store.degraded() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .is_ok()
}

/// Connecting takes longer than one decision may wait (80 ms against
/// 50 ms): the store still gets a connection, because connecting is not
/// bounded by the decision timeout but by `connect_timeout`, and is not
/// abandoned when a decision gives up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_when_connecting_outlasts_the_decision_timeout() {
    const TEST: &str = "recovers_when_connecting_outlasts_the_decision_timeout";
    let Some(url) = redis(TEST).await else {
        return;
    };
    let Some(redis_addr) = tcp_addr(TEST, &url).await else {
        return;
    };
    let switch = Switch::start(redis_addr).await;
    let store = RedisStore::builder(format!("redis://{}", switch.addr))
        .prefix(unique_prefix("slow-connect"))
        .timeout(Duration::from_millis(50))
        .connect_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    assert!(served(&store, HANG_GUARD).await, "never healthy");

    switch.slow_connect(Duration::from_millis(80));
    switch.set(false);
    let failed = tokio::time::timeout(HANG_GUARD, async {
        while decide(&store).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(failed.is_ok(), "the cut was never noticed");
    assert!(store.degraded());
    tokio::time::sleep(Duration::from_millis(200)).await;
    switch.set(true);
    assert!(
        served(&store, Duration::from_secs(5)).await,
        "Redis is back but the store never used it ({} failures)",
        store.failures()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn degrades_and_recovers_by_itself() {
    let Some(url) = redis("degrades_and_recovers_by_itself").await else {
        return;
    };
    let Some(redis_addr) = tcp_addr("degrades_and_recovers_by_itself", &url).await else {
        return;
    };
    let switch = Switch::start(redis_addr).await;
    let store = RedisStore::builder(format!("redis://{}", switch.addr))
        .prefix(unique_prefix("recover"))
        .timeout(Duration::from_millis(200))
        .probe_interval(Duration::from_millis(100))
        .build()
        .unwrap();
    let gcra = Gcra::new(1_000, 1_000).unwrap();
    let decide = |key: &'static str| {
        let check = store.check(&Batch::new(key, vec![Bucket::new(key, gcra)]));
        async move {
            tokio::time::timeout(HANG_GUARD, check)
                .await
                .expect("a decision must never hang")
        }
    };

    assert!(decide("a").await.is_ok(), "healthy");
    assert!(!store.degraded());

    switch.set(false);
    let failed = tokio::time::timeout(HANG_GUARD, async {
        while decide("b").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(failed.is_ok(), "the cut was never noticed");
    assert!(store.degraded());
    // While degraded, decisions do not wait for the network.
    let started = tokio::time::Instant::now();
    let degraded = decide("c").await;
    assert!(degraded.is_err());
    assert!(started.elapsed() < HANG_GUARD);

    switch.set(true);
    let recovered = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if decide("d").await.is_ok() && !store.degraded() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        recovered.is_ok(),
        "the store never recovered ({} failures)",
        store.failures()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layer_over_redis_reports_headers() {
    let Some(url) = redis("layer_over_redis_reports_headers").await else {
        return;
    };
    let store = RedisStore::builder(url.as_str())
        .prefix(unique_prefix("headers"))
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let layer = RateLimitLayer::builder()
        .limit(Limit::per_minute(2).name("shared"))
        .key(Key::header(HeaderName::from_static("x-api-key")))
        .store(store)
        .legacy_headers(true)
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(move |_: Request<String>| {
            counter.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, Infallible>(Response::new(String::new())) }
        }));
    let first = svc.clone().oneshot(keyed("k")).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(first.headers()["ratelimit-policy"], r#""shared";q=2;w=60"#);
    assert_eq!(first.headers()["ratelimit"], r#""shared";r=1;t=30"#);
    assert_eq!(first.headers()["x-ratelimit-remaining"], "1");
    svc.clone().oneshot(keyed("k")).await.unwrap();
    let third = svc.clone().oneshot(keyed("k")).await.unwrap();
    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = third.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((29..=30).contains(&retry), "retry after {retry} s");
    assert_eq!(hits.load(Ordering::SeqCst), 2);
}
