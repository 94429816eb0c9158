//! Measures Redis-backed rate-limit decisions per second: 64 concurrent
//! callers through a `RateLimitLayer` whose store is Redis, for 3 seconds.
//!
//! Run: `REDIS_URL=redis://127.0.0.1:6379 cargo run --release -p towergate-examples --example ratelimit_redis_rate`

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::{HeaderName, Request, Response};
use tower::{ServiceBuilder, ServiceExt, service_fn};
use towergate_ratelimit::{Key, Limit, RateLimitLayer, RedisStore};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let store = RedisStore::builder(url.clone())
        .prefix(format!("rate-bench-{}:", std::process::id()))
        .build()?;
    let layer = RateLimitLayer::builder()
        .limit(Limit::per_second(1_000_000).name("bench"))
        .key(Key::header(HeaderName::from_static("x-key")))
        .store(store)
        .build()?;
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(|_: Request<String>| async {
            Ok::<_, Infallible>(Response::new(String::new()))
        }));
    let decisions = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut tasks = Vec::new();
    for worker in 0..64 {
        let (svc, decisions) = (svc.clone(), decisions.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while Instant::now() < deadline {
                let req = Request::get("/")
                    .header("x-key", format!("k{}", (worker * 1000 + i) % 10_000))
                    .body(String::new())
                    .unwrap_or_default();
                if svc.clone().oneshot(req).await.is_ok() {
                    decisions.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let n = decisions.load(Ordering::Relaxed);
    println!(
        "{url}: {n} decisions in 3 s = {:.0} decisions/s (64 concurrent callers, 10k keys)",
        n as f64 / 3.0
    );
    Ok(())
}
