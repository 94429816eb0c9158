#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Empty, Full};
use parking_lot::Mutex;
use tower::{Service, ServiceExt};
use towergate_core::{BoxError, cause_ref};

use crate::error::{NoHealthyEndpoint, Overloaded, Timeout};
use crate::state::Status;
use crate::{
    Algorithm, Balance, CircuitBreaker, Ejection, Endpoint, HashKey, HealthCheck, Hedge, Pool,
    ResponseBody, RetryBody, RetryBudget, RetryOn, RetryPolicy, discover,
};

#[derive(Clone, Debug)]
enum Mode {
    Ok,
    Status(u16),
    Refuse,
    Delay(Duration),
    Hang,
    /// Reads the whole body, then answers 503.
    Read503,
}

/// In-process endpoints whose behaviour tests set per URL.
#[derive(Clone, Default)]
struct Fake {
    modes: Arc<Mutex<HashMap<String, Mode>>>,
    hits: Arc<Mutex<HashMap<String, usize>>>,
}

#[derive(Clone)]
struct FakeSvc {
    url: String,
    fake: Fake,
}

impl Fake {
    fn with(urls: &[(&str, Mode)]) -> Self {
        let f = Self::default();
        for (u, m) in urls {
            f.set(u, m.clone());
        }
        f
    }

    fn set(&self, url: &str, mode: Mode) {
        self.modes.lock().insert(url.to_owned(), mode);
    }

    fn hits(&self, url: &str) -> usize {
        self.hits.lock().get(url).copied().unwrap_or(0)
    }

    fn total(&self) -> usize {
        self.hits.lock().values().sum()
    }

    fn make(&self) -> impl Fn(&Endpoint) -> Result<FakeSvc, Infallible> + Send + Sync + 'static {
        let fake = self.clone();
        move |e: &Endpoint| {
            Ok(FakeSvc {
                url: e.url().to_owned(),
                fake: fake.clone(),
            })
        }
    }

    fn pool(
        &self,
        algorithm: Algorithm,
    ) -> crate::PoolBuilder<impl crate::MakeEndpoint<Service = FakeSvc>> {
        let mut urls: Vec<String> = self.modes.lock().keys().cloned().collect();
        urls.sort();
        Pool::builder("test", self.make())
            .algorithm(algorithm)
            .endpoints(urls.into_iter().map(Endpoint::new))
    }
}

impl<B> Service<Request<RetryBody<B>>> for FakeSvc
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<String>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response<String>, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<RetryBody<B>>) -> Self::Future {
        let mode = self
            .fake
            .modes
            .lock()
            .get(&self.url)
            .cloned()
            .unwrap_or(Mode::Ok);
        let url = self.url.clone();
        let fake = self.fake.clone();
        Box::pin(async move {
            if !matches!(mode, Mode::Refuse) {
                *fake.hits.lock().entry(url.clone()).or_default() += 1;
            }
            let ok = |status: u16| {
                Ok(Response::builder()
                    .status(status)
                    .body(url.clone())
                    .unwrap())
            };
            match mode {
                Mode::Ok => ok(200),
                Mode::Status(s) => ok(s),
                Mode::Refuse => Err(io::Error::from(io::ErrorKind::ConnectionRefused).into()),
                Mode::Delay(d) => {
                    tokio::time::sleep(d).await;
                    ok(200)
                }
                Mode::Hang => std::future::pending().await,
                Mode::Read503 => {
                    let _ = req.into_body().collect().await?;
                    ok(503)
                }
            }
        })
    }
}

fn get() -> Request<Empty<Bytes>> {
    Request::get("/").body(Empty::new()).unwrap()
}

async fn send<S, C>(
    b: &Balance<S, C>,
    req: Request<Empty<Bytes>>,
) -> Result<Response<ResponseBody<String>>, BoxError>
where
    Balance<S, C>:
        Service<Request<Empty<Bytes>>, Response = Response<ResponseBody<String>>, Error = BoxError>,
{
    b.clone().oneshot(req).await
}

#[tokio::test(start_paused = true)]
async fn retries_hide_a_failing_endpoint_then_it_is_ejected() {
    let fake = Fake::with(&[("a", Mode::Ok), ("b", Mode::Refuse), ("c", Mode::Ok)]);
    let pool = fake
        .pool(Algorithm::RoundRobin)
        .ejection(
            Ejection::default()
                .consecutive_failures(2)
                .base_time(Duration::from_secs(10)),
        )
        .build()
        .unwrap();
    let b = Balance::new(pool.clone());
    for _ in 0..30 {
        let rsp = send(&b, get()).await.unwrap();
        assert_eq!(rsp.status(), 200);
    }
    let state = pool.snapshot();
    let sb = state.iter().find(|s| s.url == "b").unwrap();
    assert_eq!(sb.status, Status::Ejected);
    assert_eq!(
        sb.failures, 2,
        "ejected after two failures: no more traffic"
    );
    assert_eq!(sb.ejections, 1);

    // Back after the ejection; still failing: out again, for twice as long.
    tokio::time::advance(Duration::from_secs(11)).await;
    for _ in 0..30 {
        assert_eq!(send(&b, get()).await.unwrap().status(), 200);
    }
    let sb = pool.snapshot().into_iter().find(|s| s.url == "b").unwrap();
    assert_eq!(sb.ejections, 2);
    assert!(sb.ejected_for_ms.unwrap() > 10_000, "{sb:?}");
}

#[tokio::test(start_paused = true)]
async fn never_ejects_more_than_the_share() {
    let fake = Fake::with(&[
        ("a", Mode::Refuse),
        ("b", Mode::Refuse),
        ("c", Mode::Refuse),
        ("d", Mode::Ok),
    ]);
    let pool = fake
        .pool(Algorithm::RoundRobin)
        .ejection(
            Ejection::default()
                .consecutive_failures(1)
                .max_ejected_ratio(0.5),
        )
        .build()
        .unwrap();
    let b = Balance::builder(pool.clone())
        .retry(RetryPolicy::default().max_retries(3))
        .build()
        .unwrap();
    for _ in 0..20 {
        assert_eq!(send(&b, get()).await.unwrap().status(), 200);
    }
    let ejected = pool
        .snapshot()
        .iter()
        .filter(|s| s.status == Status::Ejected)
        .count();
    assert_eq!(ejected, 2, "half of four");
}

#[tokio::test(start_paused = true)]
async fn non_idempotent_is_retried_only_when_nothing_was_sent() {
    let fake = Fake::with(&[("a", Mode::Status(503)), ("b", Mode::Ok)]);
    let pool = fake
        .pool(Algorithm::RoundRobin)
        .ejection(Ejection::disabled())
        .build()
        .unwrap();
    let b = Balance::new(pool);
    // POST that got a 503: it reached the endpoint, so no retry.
    let rsp = b
        .clone()
        .oneshot(Request::post("/").body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    assert_eq!(rsp.status(), 503);
    assert_eq!(fake.hits("a"), 1);
    assert_eq!(fake.hits("b"), 0);
    // POST refused at connect: safe to send elsewhere.
    fake.set("a", Mode::Refuse);
    let rsp = b
        .clone()
        .oneshot(Request::post("/").body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    assert_eq!(rsp.into_body().into_inner(), "b");
}

#[tokio::test(start_paused = true)]
async fn a_streamed_body_once_read_is_not_retried_but_a_buffered_one_is() {
    let fake = Fake::with(&[("a", Mode::Read503), ("b", Mode::Ok)]);
    let pool = fake
        .pool(Algorithm::RoundRobin)
        .ejection(Ejection::disabled())
        .build()
        .unwrap();
    let policy = RetryPolicy::default().non_idempotent(true);
    let streaming = Balance::builder(pool.clone())
        .retry(policy.clone())
        .build()
        .unwrap();
    let body = || {
        let frames: Vec<Result<http_body::Frame<Bytes>, Infallible>> = vec![
            Ok(http_body::Frame::data(Bytes::from_static(b"hello "))),
            Ok(http_body::Frame::data(Bytes::from_static(b"world"))),
        ];
        http_body_util::StreamBody::new(futures_util::stream::iter(frames))
    };
    let rsp = streaming
        .oneshot(Request::post("/").body(body()).unwrap())
        .await
        .unwrap();
    assert_eq!(rsp.status(), 503, "bytes were sent: not retried");
    assert_eq!((fake.hits("a"), fake.hits("b")), (1, 0));

    // A fresh pool, so that round-robin starts at a again.
    drop(pool);
    let pool = fake
        .pool(Algorithm::RoundRobin)
        .ejection(Ejection::disabled())
        .build()
        .unwrap();
    let buffered = Balance::builder(pool)
        .retry(policy)
        .buffer_requests(1024)
        .build()
        .unwrap();
    let rsp = buffered
        .oneshot(Request::post("/").body(body()).unwrap())
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200, "buffered: sent again");
    assert_eq!((fake.hits("a"), fake.hits("b")), (2, 1));
}

#[tokio::test(start_paused = true)]
async fn retry_budget_caps_extra_attempts() {
    let fake = Fake::with(&[
        ("a", Mode::Status(503)),
        ("b", Mode::Status(503)),
        ("c", Mode::Status(503)),
    ]);
    let pool = fake
        .pool(Algorithm::RoundRobin)
        .ejection(Ejection::disabled())
        .build()
        .unwrap();
    let b = Balance::builder(pool)
        .retry(
            RetryPolicy::default()
                .max_retries(3)
                .backoff(Duration::ZERO, Duration::ZERO)
                .budget(Some(RetryBudget::new(0.2, 1, Duration::from_secs(10)))),
        )
        .build()
        .unwrap();
    let n = 100;
    for _ in 0..n {
        assert_eq!(send(&b, get()).await.unwrap().status(), 503);
    }
    let extra = fake.total() - n;
    assert_eq!(extra, 10 + 20, "floor of 10 plus 20% of 100");
    assert!(b.budget_left().unwrap() < 1.0);
}

#[tokio::test(start_paused = true)]
async fn attempt_timeout_retries_elsewhere_and_overall_timeout_is_typed() {
    let fake = Fake::with(&[("a", Mode::Hang), ("b", Mode::Ok)]);
    let pool = fake
        .pool(Algorithm::RoundRobin)
        .ejection(Ejection::disabled())
        .build()
        .unwrap();
    // By default a timed-out attempt is not retried: 504 from a.
    let b = Balance::builder(pool.clone())
        .attempt_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let err = send(&b, get()).await.unwrap_err();
    assert!(
        cause_ref::<Timeout>(&*err)
            .expect("typed timeout")
            .is_attempt()
    );
    // Asked for, it is retried elsewhere (round-robin: a again, then b).
    let b = Balance::builder(pool.clone())
        .attempt_timeout(Duration::from_millis(100))
        .retry(RetryPolicy::default().retry_on(crate::RetryOn::default().timeout(true)))
        .build()
        .unwrap();
    let rsp = send(&b, get()).await.unwrap();
    assert_eq!(rsp.into_body().into_inner(), "b");

    let b = Balance::builder(pool)
        .retry(RetryPolicy::none())
        .timeout(Duration::from_millis(250))
        .build()
        .unwrap();
    let started = tokio::time::Instant::now();
    // Round-robin: the next pick is a, which hangs.
    let err = send(&b, get()).await.unwrap_err();
    let t = cause_ref::<Timeout>(&*err).expect("typed timeout");
    assert!(!t.is_attempt());
    assert_eq!(started.elapsed(), Duration::from_millis(250));
    assert_eq!(crate::error::to_problem(&*err).unwrap().status(), 504);
}

#[tokio::test(start_paused = true)]
async fn circuit_breaker_fails_fast() {
    let fake = Fake::with(&[("a", Mode::Hang), ("b", Mode::Hang)]);
    let pool = fake
        .pool(Algorithm::LeastRequests)
        .circuit_breaker(
            CircuitBreaker::new()
                .max_endpoint_requests(1)
                .retry_after(Duration::from_secs(3)),
        )
        .build()
        .unwrap();
    let b = Balance::new(pool.clone());
    let h1 = tokio::spawn(b.clone().oneshot(get()));
    let h2 = tokio::spawn(b.clone().oneshot(get()));
    tokio::task::yield_now().await;
    tokio::time::sleep(Duration::from_millis(1)).await;
    let err = send(&b, get()).await.unwrap_err();
    let o = cause_ref::<Overloaded>(&*err).expect("overloaded");
    assert_eq!(o.scope(), "endpoint");
    assert_eq!(o.retry_after(), Duration::from_secs(3));
    assert_eq!(
        pool.snapshot().iter().map(|s| s.in_flight).sum::<usize>(),
        2
    );
    h1.abort();
    h2.abort();
    let _ = (h1.await, h2.await);
    assert_eq!(
        pool.snapshot().iter().map(|s| s.in_flight).sum::<usize>(),
        0,
        "cancelled attempts release"
    );

    let pool = fake
        .pool(Algorithm::PeakEwma)
        .circuit_breaker(CircuitBreaker::new().max_requests(1))
        .build()
        .unwrap();
    let b = Balance::new(pool);
    let h = tokio::spawn(b.clone().oneshot(get()));
    tokio::time::sleep(Duration::from_millis(1)).await;
    let err = send(&b, get()).await.unwrap_err();
    assert_eq!(cause_ref::<Overloaded>(&*err).unwrap().scope(), "pool");
    h.abort();
}

#[tokio::test]
async fn least_requests_picks_the_idle_one() {
    let fake = Fake::with(&[("a", Mode::Hang), ("b", Mode::Hang)]);
    let pool = fake.pool(Algorithm::LeastRequests).build().unwrap();
    let b = Balance::new(pool.clone());
    // Four requests that never finish: two on a, two on b.
    let mut hanging = Vec::new();
    for _ in 0..4 {
        hanging.push(tokio::spawn(b.clone().oneshot(get())));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let loads: Vec<usize> = pool.snapshot().iter().map(|s| s.in_flight).collect();
    assert_eq!(loads, [2, 2]);
    // c joins idle: every pick goes to it.
    pool.insert(Endpoint::new("c")).unwrap();
    for _ in 0..20 {
        assert_eq!(pool.select(None).unwrap().url(), "c");
    }
    for h in hanging {
        h.abort();
    }
}

#[tokio::test(start_paused = true)]
async fn p2c_sends_little_to_a_slow_endpoint() {
    let fake = Fake::with(&[
        ("a", Mode::Delay(Duration::from_millis(2))),
        ("b", Mode::Delay(Duration::from_millis(2))),
        ("c", Mode::Delay(Duration::from_millis(80))),
    ]);
    let pool = fake.pool(Algorithm::PeakEwma).build().unwrap();
    let b = Balance::new(pool);
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..50 {
                send(&b, get()).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let slow = fake.hits("c");
    assert!(
        slow * 10 < fake.total(),
        "slow got {slow} of {}",
        fake.total()
    );
}

#[tokio::test(start_paused = true)]
async fn hedging_answers_from_the_second_endpoint() {
    let fake = Fake::with(&[("a", Mode::Delay(Duration::from_secs(1))), ("b", Mode::Ok)]);
    let pool = fake.pool(Algorithm::RoundRobin).build().unwrap();
    let b = Balance::builder(pool.clone())
        .hedge(Hedge::after(Duration::from_millis(50)))
        .build()
        .unwrap();
    let started = tokio::time::Instant::now();
    let rsp = send(&b, get()).await.unwrap();
    assert_eq!(rsp.into_body().into_inner(), "b");
    assert_eq!(started.elapsed(), Duration::from_millis(50));
    assert_eq!((fake.hits("a"), fake.hits("b")), (1, 1));
    // The cancelled attempt counts against a's latency.
    let a = pool.snapshot().into_iter().find(|s| s.url == "a").unwrap();
    assert!(a.ewma_ms >= 45.0, "{a:?}");
    assert_eq!(a.in_flight, 0);

    // A POST is never hedged.
    let rsp = b
        .clone()
        .oneshot(Request::post("/").body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
}

#[tokio::test(start_paused = true)]
async fn a_hedge_counts_as_a_retry() {
    let fake = Fake::with(&[
        ("a", Mode::Hang),
        ("b", Mode::Status(503)),
        ("c", Mode::Status(503)),
    ]);
    let pool = fake.pool(Algorithm::RoundRobin).build().unwrap();
    let b = Balance::builder(pool)
        .hedge(Hedge::after(Duration::from_millis(50)))
        .attempt_timeout(Duration::from_millis(500))
        .retry(
            RetryPolicy::default()
                .max_retries(1)
                .backoff(Duration::ZERO, Duration::ZERO)
                .retry_on(crate::RetryOn::default().timeout(true)),
        )
        .build()
        .unwrap();
    // a hangs, the hedge goes to b or c (503), a times out: two attempts,
    // which `max_retries: 1` allows; the third endpoint is not tried.
    assert!(send(&b, get()).await.is_err());
    assert_eq!(fake.hits("a"), 1);
    assert_eq!(fake.hits("b") + fake.hits("c"), 1);
}

#[tokio::test(start_paused = true)]
async fn percentile_hedge_waits_for_enough_samples() {
    let fake = Fake::with(&[
        ("a", Mode::Delay(Duration::from_millis(10))),
        ("b", Mode::Delay(Duration::from_millis(10))),
    ]);
    let pool = fake.pool(Algorithm::RoundRobin).build().unwrap();
    let b = Balance::builder(pool)
        .hedge(Hedge::percentile(0.9, Duration::from_secs(5)).min_delay(Duration::from_millis(1)))
        .build()
        .unwrap();
    for _ in 0..40 {
        send(&b, get()).await.unwrap();
    }
    assert_eq!(fake.total(), 40, "no hedge: nothing slower than p90");
    fake.set("a", Mode::Delay(Duration::from_secs(2)));
    fake.set("b", Mode::Delay(Duration::from_millis(10)));
    let started = tokio::time::Instant::now();
    for _ in 0..2 {
        send(&b, get()).await.unwrap();
    }
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn empty_pool_and_unhealthy_pool_fail_fast() {
    let fake = Fake::default();
    let pool = Pool::builder("empty", fake.make()).build().unwrap();
    let err = send(&Balance::new(pool), get()).await.unwrap_err();
    assert!(cause_ref::<NoHealthyEndpoint>(&*err).is_some());
    assert_eq!(crate::error::to_problem(&*err).unwrap().status(), 503);

    let fake = Fake::with(&[("a", Mode::Ok), ("b", Mode::Ok)]);
    let check = HealthCheck::new(|_e: &Endpoint, _p: &str| async {
        Ok::<_, BoxError>(StatusCode::SERVICE_UNAVAILABLE)
    })
    .interval(Duration::from_millis(10))
    .unhealthy_threshold(1);
    let pool = fake
        .pool(Algorithm::PeakEwma)
        .health_check(check)
        .panic_threshold(0.0)
        .build()
        .unwrap();
    wait_for(|| {
        pool.snapshot()
            .iter()
            .all(|s| s.status == Status::Unhealthy)
    })
    .await;
    let err = send(&Balance::new(pool.clone()), get()).await.unwrap_err();
    assert!(cause_ref::<NoHealthyEndpoint>(&*err).is_some(), "{err}");
    let a = &pool.snapshot()[0];
    let check = a.active_check.as_ref().unwrap();
    assert_eq!(check.last_status, Some(503));
    assert!(!check.healthy);
}

#[tokio::test]
async fn panic_mode_uses_every_endpoint() {
    let fake = Fake::with(&[("a", Mode::Ok), ("b", Mode::Ok), ("c", Mode::Ok)]);
    let check = HealthCheck::new(|e: &Endpoint, _p: &str| {
        let up = e.url() == "a";
        async move {
            Ok::<_, BoxError>(if up {
                StatusCode::OK
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            })
        }
    })
    .interval(Duration::from_millis(10))
    .unhealthy_threshold(1);
    // One of three healthy: under the 0.5 threshold, so all take traffic.
    let pool = fake
        .pool(Algorithm::RoundRobin)
        .health_check(check.clone())
        .build()
        .unwrap();
    wait_for(|| {
        pool.snapshot()
            .iter()
            .filter(|s| s.status == Status::Unhealthy)
            .count()
            == 2
    })
    .await;
    let b = Balance::new(pool);
    for _ in 0..9 {
        send(&b, get()).await.unwrap();
    }
    assert_eq!((fake.hits("a"), fake.hits("b"), fake.hits("c")), (3, 3, 3));

    // With the threshold at 0.3, one of three is enough: only a.
    let fake = Fake::with(&[("a", Mode::Ok), ("b", Mode::Ok), ("c", Mode::Ok)]);
    let pool = fake
        .pool(Algorithm::RoundRobin)
        .health_check(check)
        .panic_threshold(0.3)
        .build()
        .unwrap();
    wait_for(|| {
        pool.snapshot()
            .iter()
            .filter(|s| s.status == Status::Unhealthy)
            .count()
            == 2
    })
    .await;
    let b = Balance::new(pool);
    for _ in 0..9 {
        send(&b, get()).await.unwrap();
    }
    assert_eq!(fake.hits("a"), 9);
}

#[tokio::test]
async fn active_checks_take_out_and_put_back() {
    let fake = Fake::with(&[("a", Mode::Ok), ("b", Mode::Ok)]);
    let up = Arc::new(Mutex::new(true));
    let flag = up.clone();
    let check = HealthCheck::new(move |e: &Endpoint, path: &str| {
        assert_eq!(path, "/healthz");
        let ok = e.url() == "a" || *flag.lock();
        async move {
            Ok::<_, BoxError>(if ok {
                StatusCode::NO_CONTENT
            } else {
                StatusCode::BAD_GATEWAY
            })
        }
    })
    .path("/healthz")
    .interval(Duration::from_millis(10))
    .healthy_threshold(2)
    .unhealthy_threshold(2);
    let pool = fake
        .pool(Algorithm::RoundRobin)
        .health_check(check)
        .build()
        .unwrap();
    *up.lock() = false;
    wait_for(|| pool.snapshot()[1].status == Status::Unhealthy).await;
    let b = Balance::new(pool.clone());
    let before = fake.hits("b");
    for _ in 0..10 {
        send(&b, get()).await.unwrap();
    }
    assert_eq!(fake.hits("b"), before, "out of rotation");
    *up.lock() = true;
    wait_for(|| pool.snapshot()[1].status == Status::Healthy).await;
    for _ in 0..10 {
        send(&b, get()).await.unwrap();
    }
    assert!(fake.hits("b") > before, "back in rotation");
}

/// Each endpoint is probed on its own schedule: a probe that hangs until
/// its timeout delays only its own endpoint's checks, so another endpoint
/// turning unhealthy (or recovering) is noticed within about its threshold
/// × `interval`, not × `timeout`.
#[tokio::test(start_paused = true)]
async fn a_hanging_probe_delays_only_its_own_endpoint() {
    use std::sync::atomic::{AtomicBool, Ordering};

    let fake = Fake::with(&[("a", Mode::Ok), ("b", Mode::Ok), ("c", Mode::Ok)]);
    let down = Arc::new(AtomicBool::new(false));
    let flag = down.clone();
    let check = HealthCheck::new(move |e: &Endpoint, _path: &str| {
        let (url, down) = (e.url().to_owned(), flag.load(Ordering::SeqCst));
        async move {
            match url.as_str() {
                // Accepts, never answers: each probe runs to the timeout.
                "a" => std::future::pending().await,
                "b" if down => Ok::<_, BoxError>(StatusCode::SERVICE_UNAVAILABLE),
                _ => Ok(StatusCode::OK),
            }
        }
    })
    .interval(Duration::from_millis(100))
    .timeout(Duration::from_secs(2))
    .healthy_threshold(2)
    .unhealthy_threshold(2);
    let pool = fake
        .pool(Algorithm::RoundRobin)
        .health_check(check)
        .build()
        .unwrap();
    let status = |url: &str| {
        pool.snapshot()
            .into_iter()
            .find(|s| s.url == url)
            .unwrap()
            .status
    };
    // a's first probe is hanging now.
    tokio::time::sleep(Duration::from_millis(500)).await;

    down.store(true, Ordering::SeqCst);
    let started = tokio::time::Instant::now();
    wait_for(|| status("b") == Status::Unhealthy).await;
    // Two probes, 100-110 ms apart, after up to one interval's wait.
    let took = started.elapsed();
    assert!(took <= Duration::from_millis(400), "b out after {took:?}");

    down.store(false, Ordering::SeqCst);
    let started = tokio::time::Instant::now();
    wait_for(|| status("b") == Status::Healthy).await;
    let took = started.elapsed();
    assert!(took <= Duration::from_millis(400), "b back after {took:?}");
    assert_eq!(status("c"), Status::Healthy);
}

/// An endpoint that joins is probed from then on; one that leaves is not
/// probed any more.
#[tokio::test(start_paused = true)]
async fn endpoints_that_join_are_probed_and_those_that_leave_are_not() {
    let probes: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let seen = probes.clone();
    let check = HealthCheck::new(move |e: &Endpoint, _path: &str| {
        *seen.lock().entry(e.url().to_owned()).or_default() += 1;
        let ok = e.url() != "d";
        async move {
            Ok::<_, BoxError>(if ok {
                StatusCode::OK
            } else {
                StatusCode::BAD_GATEWAY
            })
        }
    })
    .interval(Duration::from_millis(100))
    .unhealthy_threshold(2);
    let fake = Fake::with(&[("a", Mode::Ok)]);
    let pool = fake
        .pool(Algorithm::RoundRobin)
        .health_check(check)
        .build()
        .unwrap();
    let count = |url: &str| probes.lock().get(url).copied().unwrap_or(0);
    pool.insert(Endpoint::new("d")).unwrap();
    wait_for(|| {
        pool.snapshot()
            .iter()
            .any(|s| s.url == "d" && s.status == Status::Unhealthy)
    })
    .await;
    assert!(pool.remove("d"));
    tokio::time::sleep(Duration::from_millis(150)).await;
    let (a, d) = (count("a"), count("d"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(count("d"), d, "d left: no more probes");
    assert!(
        count("a") >= a + 9,
        "a still probed: {a} then {}",
        count("a")
    );
}

#[tokio::test]
async fn consistent_hash_sticks_and_moves_little() {
    let urls: Vec<String> = (0..5).map(|i| format!("http://10.0.0.{i}")).collect();
    let fake = Fake::with(
        &urls
            .iter()
            .map(|u| (u.as_str(), Mode::Ok))
            .collect::<Vec<_>>(),
    );
    let pool = fake
        .pool(Algorithm::ConsistentHash(
            HashKey::header("x-user").unwrap(),
        ))
        .build()
        .unwrap();
    let owner = |pool: &Pool<FakeSvc>, user: usize| {
        let req = Request::get("/")
            .header("x-user", user.to_string())
            .body(())
            .unwrap();
        let h = pool.request_hash(&req.into_parts().0);
        pool.select(h).unwrap().url().to_owned()
    };
    let before: Vec<String> = (0..2000).map(|u| owner(&pool, u)).collect();
    assert!((0..2000).all(|u| owner(&pool, u) == before[u]), "sticky");
    assert!(pool.remove(&urls[2]));
    let moved = (0..2000).filter(|&u| owner(&pool, u) != before[u]).count();
    assert!(
        before
            .iter()
            .zip(0..)
            .all(|(b, u)| b == &urls[2] || owner(&pool, u) == *b),
        "only the leaver's keys move"
    );
    assert!((moved as f64 / 2000.0 - 0.2).abs() < 0.07, "moved {moved}");
    // Through the service, the same key reaches the same endpoint.
    let b = Balance::new(pool.clone());
    let req = || {
        Request::get("/")
            .header("x-user", "7")
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    let first = b
        .clone()
        .oneshot(req())
        .await
        .unwrap()
        .into_body()
        .into_inner();
    for _ in 0..10 {
        assert_eq!(
            b.clone()
                .oneshot(req())
                .await
                .unwrap()
                .into_body()
                .into_inner(),
            first
        );
    }
}

#[tokio::test]
async fn weighted_round_robin_follows_weights() {
    let fake = Fake::default();
    let pool = Pool::builder("w", fake.make())
        .algorithm(Algorithm::WeightedRoundRobin)
        .endpoint(Endpoint::new("a").with_weight(1))
        .endpoint(Endpoint::new("b").with_weight(3))
        .endpoint(Endpoint::new("drain").with_weight(0))
        .build()
        .unwrap();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..400 {
        *counts
            .entry(pool.select(None).unwrap().url().to_owned())
            .or_default() += 1;
    }
    assert_eq!(counts.get("a"), Some(&100));
    assert_eq!(counts.get("b"), Some(&300));
    assert_eq!(counts.get("drain"), None);
    assert_eq!(pool.snapshot()[2].status, Status::Draining);
}

#[tokio::test]
async fn discovery_and_api_change_membership() {
    let fake = Fake::default();
    let (tx, rx) = discover::channel();
    let pool = Pool::builder("d", fake.make())
        .discover(rx)
        .build()
        .unwrap();
    assert!(pool.is_empty());
    tx.insert(Endpoint::new("x").with_weight(2));
    tx.insert(Endpoint::new("y"));
    wait_for(|| pool.len() == 2).await;
    tx.remove("x");
    wait_for(|| pool.len() == 1).await;
    pool.insert(Endpoint::new("z")).unwrap();
    let urls: Vec<String> = pool
        .endpoints()
        .iter()
        .map(|e| e.url().to_owned())
        .collect();
    assert_eq!(urls, ["y", "z"]);
    let state = pool.snapshot();
    assert_eq!(state[0].source, "discover");
    assert_eq!(state[1].source, "api");
    let json = serde_json::to_value(&state[0]).unwrap();
    assert_eq!(json["status"], "healthy");
    assert_eq!(json["url"], "y");
    assert!(json["ewma_ms"].is_number());
}

#[tokio::test]
async fn dns_source_resolves_and_refreshes() {
    let fake = Fake::default();
    let pool = Pool::builder("dns", fake.make())
        .dns(crate::Dns::new("localhost", 8080).interval(Duration::from_secs(3600)))
        .build()
        .unwrap();
    pool.refresh().await.unwrap();
    assert!(!pool.is_empty());
    assert!(
        pool.endpoints()
            .iter()
            .all(|e| e.hostname() == Some("localhost"))
    );
    assert!(pool.snapshot().iter().all(|s| s.source == "dns"));
}

#[test]
fn bad_settings_are_build_errors() {
    let fake = Fake::default();
    let err = |b: Result<Pool<FakeSvc>, crate::BuildError>| b.unwrap_err().to_string();
    assert!(
        err(Pool::builder("p", fake.make()).panic_threshold(2.0).build())
            .contains("panic_threshold")
    );
    assert!(
        err(Pool::builder("p", fake.make())
            .endpoint(Endpoint::new("a"))
            .endpoint(Endpoint::new("a"))
            .build())
        .contains("twice")
    );
    assert!(
        err(Pool::builder("p", fake.make())
            .ejection(Ejection::default().consecutive_failures(0))
            .build())
        .contains("consecutive")
    );
    assert!(
        err(Pool::builder("p", fake.make())
            .circuit_breaker(CircuitBreaker::new().max_requests(0))
            .build())
        .contains("0")
    );
    // Health checks need a runtime, and say so rather than panic.
    let check =
        HealthCheck::new(|_e: &Endpoint, _p: &str| async { Ok::<_, BoxError>(StatusCode::OK) });
    assert!(err(Pool::builder("p", fake.make()).health_check(check).build()).contains("runtime"));
    let pool = Pool::builder("p", fake.make()).build().unwrap();
    assert!(
        Balance::builder(pool.clone())
            .timeout(Duration::ZERO)
            .build()
            .is_err()
    );
    assert!(
        Balance::builder(pool)
            .retry(RetryPolicy::default().backoff(Duration::from_secs(2), Duration::from_secs(1)))
            .build()
            .is_err()
    );
    let failing = Pool::builder("p", |_e: &Endpoint| Err::<FakeSvc, _>("no"))
        .endpoint(Endpoint::new("a"))
        .build();
    assert!(err(failing).contains("endpoint a: no"));
    let _ = RetryOn::none();
}

#[tokio::test]
async fn full_body_through_a_retry() {
    let fake = Fake::with(&[("a", Mode::Refuse), ("b", Mode::Read503), ("c", Mode::Ok)]);
    let pool = fake
        .pool(Algorithm::RoundRobin)
        .ejection(Ejection::disabled())
        .build()
        .unwrap();
    let b = Balance::builder(pool)
        .retry(RetryPolicy::default().max_retries(3))
        .buffer_requests(16)
        .build()
        .unwrap();
    let rsp = b
        .oneshot(
            Request::put("/")
                .body(Full::new(Bytes::from_static(b"0123456789")))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(rsp.into_body().into_inner(), "c");
}

async fn wait_for(mut cond: impl FnMut() -> bool) {
    tokio::time::timeout(Duration::from_secs(5), async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("condition within 5s");
}

/// With per-endpoint limits, a pick goes on past full endpoints until it
/// has tried them all: four busy of six is not `Overloaded`.
#[tokio::test]
async fn a_pick_tries_every_endpoint_before_answering_overloaded() {
    let urls = ["a", "b", "c", "d", "e", "f"];
    let fake = Fake::with(&urls.map(|u| (u, Mode::Ok)));
    let pool = fake
        .pool(Algorithm::RoundRobin)
        .ejection(Ejection::disabled())
        .circuit_breaker(CircuitBreaker::new().max_endpoint_requests(1))
        .build()
        .unwrap();
    let held: Vec<_> = (0..4).map(|_| pool.pick(None, &[]).unwrap()).collect();
    let busy: Vec<String> = held
        .iter()
        .map(|p| p.slot.endpoint().url().to_owned())
        .collect();
    assert_eq!(busy, ["a", "b", "c", "d"]);
    // e and f answer at once.
    for _ in 0..2 {
        drop(pool.pick(None, &[]).unwrap());
    }
    for _ in 0..4 {
        let p = pool.pick(None, &[]).expect("e and f are free");
        let url = p.slot.endpoint().url().to_owned();
        assert!(url == "e" || url == "f", "{url}");
    }
    drop(held);
    assert!(pool.pick(None, &[]).is_ok());
}

/// An attempt whose failure is not the endpoint's fault (`Ignore`: a
/// route's own short timeout) still tells how long the endpoint took at
/// least: a silent endpoint must not look fast to the latency-aware pick.
#[tokio::test(start_paused = true)]
async fn an_ignored_outcome_still_raises_the_latency_estimate() {
    let fake = Fake::with(&[("a", Mode::Ok)]);
    let pool = fake.pool(Algorithm::PeakEwma).build().unwrap();
    let picked = pool.pick(None, &[]).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    picked.finish(crate::Outcome::Ignore);
    let a = pool.snapshot().into_iter().next().unwrap();
    assert!(a.ewma_ms >= 190.0, "{a:?}");
    assert_eq!(a.failures, 0, "{a:?}");
    // A quick one afterwards does not lower it below what was seen.
    let picked = pool.pick(None, &[]).unwrap();
    picked.finish(crate::Outcome::Ignore);
    let a = pool.snapshot().into_iter().next().unwrap();
    assert!(a.ewma_ms >= 190.0, "{a:?}");
}

/// A request deadline shorter than the attempts' own timeout: an attempt
/// it cuts short is a timeout of the endpoint, so one that accepts and
/// never answers is ejected instead of failing its share of requests for
/// ever.
#[tokio::test(start_paused = true)]
async fn an_attempt_cut_short_by_the_request_deadline_counts_against_its_endpoint() {
    let fake = Fake::with(&[("a", Mode::Hang), ("b", Mode::Ok)]);
    let pool = fake
        .pool(Algorithm::RoundRobin)
        .ejection(
            Ejection::default()
                .consecutive_failures(2)
                .base_time(Duration::from_secs(60)),
        )
        .build()
        .unwrap();
    let b = Balance::builder(pool.clone())
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(match send(&b, get()).await {
            Ok(rsp) => rsp.status().as_u16(),
            Err(e) => {
                let t = cause_ref::<Timeout>(&*e).expect("typed timeout");
                assert!(!t.is_attempt(), "the request's deadline");
                504
            }
        });
    }
    assert!(
        statuses[10..].iter().all(|s| *s == 200),
        "the last ten: {statuses:?}"
    );
    let a = pool.snapshot().into_iter().find(|s| s.url == "a").unwrap();
    assert_eq!(a.status, Status::Ejected, "{a:?}");
    assert_eq!((a.failures, fake.hits("a")), (2, 2), "{a:?}");
}

/// A caller that goes away is not the endpoint's fault: the attempt it
/// abandons is no failure (only a lower bound of its latency).
#[tokio::test(start_paused = true)]
async fn a_request_its_caller_drops_is_not_held_against_the_endpoint() {
    let fake = Fake::with(&[("a", Mode::Hang)]);
    let pool = fake
        .pool(Algorithm::RoundRobin)
        .ejection(Ejection::default().consecutive_failures(1))
        .build()
        .unwrap();
    let b = Balance::builder(pool.clone())
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    for _ in 0..3 {
        let gone = tokio::time::timeout(Duration::from_millis(100), send(&b, get())).await;
        assert!(gone.is_err(), "still waiting when the caller left");
    }
    let a = pool.snapshot().into_iter().next().unwrap();
    assert_eq!(a.status, Status::Healthy, "{a:?}");
    assert_eq!((a.failures, a.consecutive_failures), (0, 0), "{a:?}");
    assert!(a.ewma_ms >= 90.0, "{a:?}");
    assert_eq!(a.in_flight, 0, "{a:?}");
}

/// Percentile hedging measures the first attempts it hedges away too (as
/// lower bounds): were only the winners measured, the slow tail would
/// vanish from the distribution, the percentile would fall to the fast
/// endpoint's latency and every request would be hedged.
#[tokio::test(start_paused = true)]
async fn percentile_hedging_keeps_the_slow_tail_it_hedges_away() {
    let fake = Fake::with(&[
        ("a", Mode::Delay(Duration::from_secs(1))),
        ("b", Mode::Delay(Duration::from_millis(10))),
    ]);
    let pool = fake
        .pool(Algorithm::RoundRobin)
        .ejection(Ejection::disabled())
        .build()
        .unwrap();
    let b = Balance::builder(pool)
        .hedge(Hedge::percentile(0.9, Duration::from_millis(100)))
        .retry(RetryPolicy::default().budget(None))
        .build()
        .unwrap();
    for _ in 0..100 {
        assert_eq!(send(&b, get()).await.unwrap().status(), 200);
    }
    let p90 = b
        .route
        .latencies
        .quantile(0.9, crate::retry::HEDGE_MIN_SAMPLES)
        .unwrap();
    assert!(
        p90 >= Duration::from_millis(100) && p90 <= Duration::from_millis(1250),
        "{p90:?}"
    );

    // Attempts cut short by a timeout took that long at least, too.
    let fake = Fake::with(&[("a", Mode::Hang), ("b", Mode::Hang)]);
    let pool = fake.pool(Algorithm::RoundRobin).build().unwrap();
    let b = Balance::builder(pool)
        .hedge(Hedge::percentile(0.9, Duration::from_millis(100)))
        .attempt_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    for _ in 0..20 {
        assert!(send(&b, get()).await.is_err());
    }
    let p50 = b.route.latencies.quantile(0.5, 20).unwrap();
    assert!(p50 >= Duration::from_millis(300), "{p50:?}");
}

/// A retry goes to an endpoint the request has not tried, or does not
/// happen; the retries counter and the budget count only retries sent.
#[tokio::test(start_paused = true)]
async fn a_retry_goes_to_an_untried_endpoint_or_not_at_all() {
    use std::sync::atomic::{AtomicUsize, Ordering};

    let counted = |pool| {
        let retries = Arc::new(AtomicUsize::new(0));
        let r = retries.clone();
        let b = Balance::builder(pool)
            .retry(
                RetryPolicy::default()
                    .max_retries(3)
                    .backoff(Duration::ZERO, Duration::ZERO),
            )
            .on_retry(move || {
                r.fetch_add(1, Ordering::SeqCst);
            })
            .build()
            .unwrap();
        (b, retries)
    };

    // One endpoint: nowhere else to go, so no retry.
    let fake = Fake::with(&[("a", Mode::Status(503))]);
    let pool = fake
        .pool(Algorithm::RoundRobin)
        .ejection(Ejection::disabled())
        .build()
        .unwrap();
    let (b, retries) = counted(pool);
    let before = b.budget_left().unwrap();
    for _ in 0..5 {
        assert_eq!(send(&b, get()).await.unwrap().status(), 503);
    }
    assert_eq!(fake.hits("a"), 5);
    assert_eq!(retries.load(Ordering::SeqCst), 0);
    assert!(b.budget_left().unwrap() >= before, "nothing spent");

    // Two: one retry each, on the other one, whatever `max_retries` allows.
    let fake = Fake::with(&[("a", Mode::Status(503)), ("b", Mode::Status(503))]);
    let pool = fake
        .pool(Algorithm::RoundRobin)
        .ejection(Ejection::disabled())
        .build()
        .unwrap();
    let (b, retries) = counted(pool);
    for _ in 0..5 {
        assert_eq!(send(&b, get()).await.unwrap().status(), 503);
    }
    assert_eq!((fake.hits("a"), fake.hits("b")), (5, 5));
    assert_eq!(retries.load(Ordering::SeqCst), 5);
}

/// A response body that streams until its sender says it is done (or
/// goes): a download, server-sent events.
#[derive(Debug)]
struct Open(tokio::sync::oneshot::Receiver<()>);

impl Body for Open {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        std::pin::Pin::new(&mut self.0).poll(cx).map(|_| None)
    }
}

/// What ends the answers of a [`streaming_pool`]: a sender per body, a
/// hold per tunnel (a tunnel's task keeps one until it closes).
#[derive(Clone, Default)]
struct Ends {
    bodies: Arc<Mutex<Vec<tokio::sync::oneshot::Sender<()>>>>,
    tunnels: Arc<Mutex<Vec<towergate_core::TunnelHold>>>,
}

/// An endpoint whose answers' bodies stay open until the test ends them
/// through [`Ends`]; with `tunnel`, each answer is a `101` carrying its
/// tunnel's hold, as towergate-proxy's are.
#[derive(Clone)]
struct Streaming {
    ends: Ends,
    tunnel: bool,
}

impl Service<Request<RetryBody<Empty<Bytes>>>> for Streaming {
    type Response = Response<Open>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<Open>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Request<RetryBody<Empty<Bytes>>>) -> Self::Future {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.ends.bodies.lock().push(tx);
        let mut rsp = Response::new(Open(rx));
        if self.tunnel {
            let hold = towergate_core::TunnelHold::default();
            *rsp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            rsp.extensions_mut().insert(hold.clone());
            self.ends.tunnels.lock().push(hold);
        }
        std::future::ready(Ok(rsp))
    }
}

/// A pool of one [`Streaming`] endpoint, `a`.
fn streaming_pool(circuit: CircuitBreaker, tunnel: bool) -> (Pool<Streaming>, Ends) {
    let ends = Ends::default();
    let svc = Streaming {
        ends: ends.clone(),
        tunnel,
    };
    let pool = Pool::builder("streams", move |_: &Endpoint| {
        Ok::<_, Infallible>(svc.clone())
    })
    .endpoint(Endpoint::new("a"))
    .circuit_breaker(circuit)
    .build()
    .unwrap();
    (pool, ends)
}

/// A request is in flight until its response body ends, not only until
/// the headers came: streams (downloads, server-sent events) count against
/// `max_endpoint_requests` (and as the endpoint's load) while they stream.
#[tokio::test]
async fn a_streamed_response_counts_in_flight_until_its_body_ends() {
    let (pool, ends) = streaming_pool(CircuitBreaker::new().max_endpoint_requests(2), false);
    let b = Balance::new(pool.clone());
    let in_flight = || pool.snapshot()[0].in_flight;
    let first = b.clone().oneshot(get()).await.unwrap();
    let second = b.clone().oneshot(get()).await.unwrap();
    assert_eq!(in_flight(), 2, "both bodies still stream");
    let err = b.clone().oneshot(get()).await.unwrap_err();
    assert_eq!(cause_ref::<Overloaded>(&*err).unwrap().scope(), "endpoint");

    // One read to its end, the other dropped unread (its client gone).
    let end = ends.bodies.lock().remove(0);
    end.send(()).unwrap();
    first.into_body().collect().await.unwrap();
    assert_eq!(in_flight(), 1);
    drop(second);
    assert_eq!(in_flight(), 0);
    assert_eq!(b.oneshot(get()).await.unwrap().status(), 200);
}

/// The pool-wide `max_requests` counts a request until its body ends too.
#[tokio::test]
async fn a_streamed_response_holds_its_place_in_max_requests() {
    let (pool, _ends) = streaming_pool(CircuitBreaker::new().max_requests(1), false);
    let b = Balance::new(pool);
    let first = b.clone().oneshot(get()).await.unwrap();
    let err = b.clone().oneshot(get()).await.unwrap_err();
    assert_eq!(cause_ref::<Overloaded>(&*err).unwrap().scope(), "pool");
    drop(first);
    assert_eq!(b.oneshot(get()).await.unwrap().status(), 200);
}

/// A `101` that opened a tunnel counts until the tunnel closes (its hold
/// goes), not until its (empty) body is dropped.
#[tokio::test]
async fn a_tunnel_counts_in_flight_until_it_closes() {
    let (pool, ends) = streaming_pool(
        CircuitBreaker::new()
            .max_endpoint_requests(1)
            .max_requests(1),
        true,
    );
    let b = Balance::new(pool.clone());
    let rsp = b.clone().oneshot(get()).await.unwrap();
    assert_eq!(rsp.status(), StatusCode::SWITCHING_PROTOCOLS);
    drop(rsp);
    assert_eq!(pool.snapshot()[0].in_flight, 1, "the tunnel is open");
    assert!(
        b.clone().oneshot(get()).await.is_err(),
        "no room while it is"
    );
    // The tunnel closes: its task lets go of the hold.
    ends.tunnels.lock().clear();
    assert_eq!(pool.snapshot()[0].in_flight, 0);
    assert_eq!(b.oneshot(get()).await.unwrap().status(), 101);
}
