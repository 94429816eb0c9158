//! The balance layers over plain reqwest clients, with no towergate proxy
//! involved: starts three upstreams (one of them slow), sends requests
//! through a P2C peak-EWMA pool, prints where they went, and exits.
//!
//! ```text
//! cargo run -p towergate-balance --example reqwest_pool
//! ```

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Empty;
use tower::{ServiceExt, service_fn};
use towergate_balance::{Balance, Endpoint, Pool, ResponseBody, RetryBody};
use towergate_core::BoxError;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // Three upstreams on loopback; gamma takes 20 ms per request.
    let mut endpoints = Vec::new();
    for name in ["alpha", "beta", "gamma"] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let delay = Duration::from_millis(if name == "gamma" { 20 } else { 0 });
        let app = axum::Router::new().fallback(move || async move {
            tokio::time::sleep(delay).await;
            name
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        endpoints.push(Endpoint::from_addr(addr));
    }

    // Each endpoint's service is a reqwest call to its URL: any Tower
    // service over `http` types will do.
    let client = reqwest::Client::new();
    let make = move |e: &Endpoint| {
        let client = client.clone();
        let base = e.url().to_owned();
        Ok::<_, Infallible>(service_fn(move |req: Request<RetryBody<Empty<Bytes>>>| {
            let call = client.request(req.method().clone(), format!("{base}{}", req.uri()));
            async move {
                let rsp = call.send().await?;
                let status = rsp.status();
                let body = rsp.bytes().await?;
                Ok::<_, BoxError>(Response::builder().status(status).body(body)?)
            }
        }))
    };
    let pool = Pool::builder("example", make)
        .endpoints(endpoints)
        .build()?;
    let lb = Balance::new(pool.clone());

    // Four concurrent callers, 100 requests each.
    let caller = |lb: Balance<_>| async move {
        let mut seen = BTreeMap::<String, usize>::new();
        for _ in 0..100 {
            let req = Request::get("/hello").body(Empty::<Bytes>::new())?;
            let rsp: Response<ResponseBody<Bytes>> = lb.clone().oneshot(req).await?;
            let name = String::from_utf8_lossy(rsp.body().get_ref()).into_owned();
            *seen.entry(name).or_default() += 1;
        }
        Ok::<_, BoxError>(seen)
    };
    let results = futures_util::future::join_all((0..4).map(|_| caller(lb.clone()))).await;
    let mut total = BTreeMap::<String, usize>::new();
    for seen in results {
        for (name, n) in seen? {
            *total.entry(name).or_default() += n;
        }
    }
    println!("requests per upstream (gamma is slow, so P2C sends it little):");
    for (name, n) in &total {
        println!("  {name:>6}: {n:>3} {}", "#".repeat(n / 5));
    }
    println!("endpoint state:");
    for s in pool.snapshot() {
        println!(
            "  {} {:?} ewma={:.2}ms requests={}",
            s.url, s.status, s.ewma_ms, s.requests
        );
    }
    Ok(())
}
