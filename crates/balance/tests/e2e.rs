//! End to end: three real upstream servers on loopback, a plain hyper-util
//! client as the endpoint service, the public API only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use support::{Behaviour, Server, closed_port, get, make_endpoint, probe, start, wait_for};
use tower::ServiceExt;
use towergate_balance::error::NoHealthyEndpoint;
use towergate_balance::state::Status;
use towergate_balance::{
    Algorithm, Balance, Ejection, Endpoint, HealthCheck, Pool, RetryBudget, RetryPolicy,
};
use towergate_core::cause_ref;

/// Bounds every test, so a regression fails instead of hanging CI.
const GUARD: Duration = Duration::from_secs(60);

fn local() -> std::net::SocketAddr {
    ([127, 0, 0, 1], 0).into()
}

async fn three(how: [Behaviour; 3]) -> [Server; 3] {
    [
        start(local(), "a", how[0]).await,
        start(local(), "b", how[1]).await,
        start(local(), "c", how[2]).await,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_endpoint_is_hidden_then_rejoins() {
    tokio::time::timeout(GUARD, async {
        let [a, b, c] = three([Behaviour::ok(); 3]).await;
        let victim_addr = c.addr;
        let mut victim = Some(c);

        let pool = Pool::builder("e2e", make_endpoint())
            .endpoints([a.endpoint(), b.endpoint(), Endpoint::from_addr(victim_addr)])
            .health_check(
                HealthCheck::new(probe())
                    .interval(Duration::from_millis(50))
                    .timeout(Duration::from_millis(250))
                    .healthy_threshold(1)
                    .unhealthy_threshold(1),
            )
            .ejection(
                Ejection::default()
                    .consecutive_failures(1)
                    .base_time(Duration::from_millis(500)),
            )
            .build()
            .unwrap();
        let lb = Balance::new(pool.clone());
        let victim_state = || {
            pool.snapshot()
                .into_iter()
                .find(|s| s.url == Endpoint::from_addr(victim_addr).url())
                .unwrap()
        };

        let mut failed = Vec::new();
        let mut hits_before_kill = 0;
        for i in 0..300 {
            if i == 100 {
                let v = victim.take().unwrap();
                hits_before_kill = v.hits();
                v.kill().await;
            }
            if i == 200 {
                // Checks (every 50 ms) have noticed it is gone.
                wait_for(5, || victim_state().status == Status::Unhealthy).await;
                victim = Some(start(victim_addr, "c", Behaviour::ok()).await);
            }
            match lb.clone().oneshot(get()).await {
                Ok(rsp) if rsp.status() == 200 => {}
                Ok(rsp) => failed.push(format!("#{i}: status {}", rsp.status())),
                Err(e) => failed.push(format!("#{i}: {e}")),
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert!(failed.is_empty(), "failed client requests: {failed:?}");
        assert!(hits_before_kill > 0, "the victim took traffic before");

        // Active checks put it back; P2C sends it traffic again.
        wait_for(5, || victim_state().status == Status::Healthy).await;
        let victim = victim.unwrap();
        let before = victim.hits();
        for _ in 0..200 {
            assert_eq!(lb.clone().oneshot(get()).await.unwrap().status(), 200);
        }
        assert!(victim.hits() > before, "rejoined: {:?}", victim_state());
        assert!(a.hits() > 0 && b.hits() > 0);
    })
    .await
    .expect("in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_endpoint_gets_a_small_share() {
    tokio::time::timeout(GUARD, async {
        let servers = three([
            Behaviour::ok(),
            Behaviour::ok(),
            Behaviour::slow(Duration::from_millis(50)),
        ])
        .await;
        let pool = Pool::builder("slow", make_endpoint())
            .endpoints(servers.iter().map(Server::endpoint))
            .build()
            .unwrap();
        let lb = Balance::new(pool);
        let mut workers = Vec::new();
        for _ in 0..8 {
            let lb = lb.clone();
            workers.push(tokio::spawn(async move {
                for _ in 0..40 {
                    assert_eq!(lb.clone().oneshot(get()).await.unwrap().status(), 200);
                }
            }));
        }
        for w in workers {
            w.await.unwrap();
        }
        let total: usize = servers.iter().map(Server::hits).sum();
        let slow = servers[2].hits();
        assert_eq!(total, 320);
        // A third would be an even spread; P2C should send far less.
        assert!(
            (slow as f64) < total as f64 * (1.0 / 3.0 - 0.15),
            "slow endpoint got {slow} of {total}"
        );
    })
    .await
    .expect("in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_down_fails_fast() {
    tokio::time::timeout(GUARD, async {
        let ports = [
            closed_port().await,
            closed_port().await,
            closed_port().await,
        ];
        let endpoints = ports.map(Endpoint::from_addr);

        // Default panic threshold: every endpoint is tried, each refuses.
        let pool = Pool::builder("down", make_endpoint())
            .endpoints(endpoints.clone())
            .build()
            .unwrap();
        let lb = Balance::new(pool);
        for _ in 0..20 {
            let started = Instant::now();
            let err = lb.clone().oneshot(get()).await.unwrap_err();
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "{:?}: {err}",
                started.elapsed()
            );
        }

        // Without the panic threshold, once checks have seen them all down:
        // a typed NoHealthyEndpoint, at once.
        let pool = Pool::builder("down-strict", make_endpoint())
            .endpoints(endpoints)
            .panic_threshold(0.0)
            .health_check(
                HealthCheck::new(probe())
                    .interval(Duration::from_millis(20))
                    .unhealthy_threshold(1),
            )
            .build()
            .unwrap();
        wait_for(5, || {
            pool.snapshot()
                .iter()
                .all(|s| s.status == Status::Unhealthy)
        })
        .await;
        let lb = Balance::new(pool);
        let started = Instant::now();
        let err = lb.oneshot(get()).await.unwrap_err();
        assert!(cause_ref::<NoHealthyEndpoint>(&*err).is_some(), "{err}");
        assert!(started.elapsed() < Duration::from_millis(100));
    })
    .await
    .expect("in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_budget_respected_when_every_endpoint_fails() {
    tokio::time::timeout(GUARD, async {
        let servers = three([Behaviour::status(503); 3]).await;
        let pool = Pool::builder("failing", make_endpoint())
            .endpoints(servers.iter().map(Server::endpoint))
            .build()
            .unwrap();
        // Each request would like 3 retries; the budget allows a floor of
        // 1/s over 10 s plus 20% of requests.
        let lb = Balance::builder(pool)
            .retry(
                RetryPolicy::default()
                    .max_retries(3)
                    .backoff(Duration::ZERO, Duration::ZERO)
                    .budget(Some(RetryBudget::new(0.2, 1, Duration::from_secs(10)))),
            )
            .build()
            .unwrap();
        let n = 50;
        for _ in 0..n {
            assert_eq!(lb.clone().oneshot(get()).await.unwrap().status(), 503);
        }
        let attempts: usize = servers.iter().map(Server::hits).sum();
        let extra = attempts - n;
        let budget = 10 + n / 5;
        assert!(extra <= budget, "{extra} extra attempts, budget {budget}");
        assert!(extra >= 10, "retries did happen: {extra}");
    })
    .await
    .expect("in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_keeps_failing_keeps_a_finite_estimate() {
    tokio::time::timeout(GUARD, async {
        // One endpoint is never ejected (half of one is none), so every
        // failure lands on its latency estimate; before the cap, each one
        // doubled it and about 70 in a row overflowed a Duration (a panic
        // in the request's task).
        let down = start(local(), "maintenance", Behaviour::status(503)).await;
        let pool = Pool::builder("one", make_endpoint())
            .endpoints([down.endpoint()])
            .build()
            .unwrap();
        let lb = Balance::builder(pool.clone())
            .retry(
                RetryPolicy::default()
                    .max_retries(2)
                    .backoff(Duration::ZERO, Duration::ZERO)
                    .budget(None),
            )
            .build()
            .unwrap();
        for _ in 0..200 {
            assert_eq!(lb.clone().oneshot(get()).await.unwrap().status(), 503);
        }
        // A retry only goes to another endpoint: a pool of one has none.
        assert_eq!(down.hits(), 200, "attempts");
        let state = &pool.snapshot()[0];
        assert!(state.failures >= 200, "{state:?}");
        assert!(
            state.ewma_ms.is_finite() && state.ewma_ms <= 30_000.0,
            "{state:?}"
        );
    })
    .await
    .expect("in time");
}

fn streamed(
    chunks: usize,
) -> StreamBody<impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>>> {
    StreamBody::new(futures_util::stream::iter(
        (0..chunks).map(|_| Ok(Frame::data(Bytes::from_static(&[b'x'; 1000])))),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_with_streamed_body_is_not_retried_after_bytes_were_sent() {
    tokio::time::timeout(GUARD, async {
        // Round-robin starts with the first endpoint: it reads the whole
        // body, then answers 503. Retrying POSTs is even allowed here, so
        // only the body rule can stop the retry.
        let failing = start(local(), "failing", Behaviour::status(503)).await;
        let good = start(local(), "good", Behaviour::ok()).await;
        let pool = Pool::builder("post", make_endpoint())
            .algorithm(Algorithm::RoundRobin)
            .endpoints([failing.endpoint(), good.endpoint()])
            .build()
            .unwrap();
        let lb = Balance::builder(pool)
            .retry(RetryPolicy::default().non_idempotent(true))
            .build()
            .unwrap();
        let rsp = lb
            .oneshot(Request::post("/upload").body(streamed(64)).unwrap())
            .await
            .unwrap();
        assert_eq!(rsp.status(), 503);
        assert_eq!(
            (failing.hits(), good.hits()),
            (1, 0),
            "sent once, not retried"
        );

        // Refused at connect, the body is untouched: it goes, whole, to the
        // next endpoint (for a POST too, with the default policy).
        let down = closed_port().await;
        let pool = Pool::builder("post2", make_endpoint())
            .algorithm(Algorithm::RoundRobin)
            .endpoints([Endpoint::from_addr(down), good.endpoint()])
            .build()
            .unwrap();
        let rsp = Balance::new(pool)
            .oneshot(Request::post("/upload").body(streamed(64)).unwrap())
            .await
            .unwrap();
        assert_eq!(rsp.status(), 200);
        let body = rsp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["name"], "good");
        assert_eq!(v["body_len"], 64_000);
    })
    .await
    .expect("in time");
}

#[test]
fn an_idle_pool_is_checked_but_starts_nothing() {
    // Outside any runtime: `build` would refuse (health checks need one),
    // `build_idle` checks the same settings and starts no task.
    let probes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = probes.clone();
    let check = HealthCheck::new(move |_e: &Endpoint, _p: &str| {
        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async { Ok::<_, towergate_core::BoxError>(http::StatusCode::OK) }
    })
    .interval(Duration::from_millis(1));
    let pool = Pool::builder("idle", make_endpoint::<http_body_util::Empty<Bytes>>())
        .endpoints([Endpoint::new("http://127.0.0.1:1")])
        .health_check(check.clone())
        .build_idle()
        .unwrap();
    assert_eq!(pool.snapshot().len(), 1);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(probes.load(std::sync::atomic::Ordering::SeqCst), 0);
    // The same checks as `build`.
    let bad = Pool::builder("idle", make_endpoint::<http_body_util::Empty<Bytes>>())
        .health_check(check.interval(Duration::ZERO))
        .build_idle();
    assert!(bad.is_err());
    let no_runtime = Pool::builder("busy", make_endpoint::<http_body_util::Empty<Bytes>>())
        .health_check(HealthCheck::new(probe()))
        .build();
    assert!(no_runtime.is_err(), "build needs a runtime for its checks");
}
