//! The cost of a cache hit against calling the upstream service directly
//! and against passing through the layer (request `no-store`).

#![allow(clippy::unwrap_used, missing_docs)]

use std::convert::Infallible;
use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tower::{Layer, Service, ServiceExt};
use towergate_cache::{CacheLayer, CacheStore};

fn upstream() -> impl Service<
    Request<Full<Bytes>>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Send,
> + Clone
+ Send
+ 'static {
    tower::service_fn(|_req: Request<Full<Bytes>>| async {
        Ok::<_, Infallible>(
            Response::builder()
                .header("cache-control", "max-age=3600")
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(vec![b'x'; 2048])))
                .unwrap(),
        )
    })
}

fn request(no_store: bool) -> Request<Full<Bytes>> {
    let mut b = Request::get("http://api.example.com/items?page=2&size=10")
        .header("accept", "application/json");
    if no_store {
        b = b.header("cache-control", "no-store");
    }
    b.body(Full::default()).unwrap()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let layer = CacheLayer::builder(CacheStore::new())
        .namespace("bench")
        .build()
        .unwrap();
    let cached = layer.layer(upstream());
    // Warm the entry.
    rt.block_on(async {
        let rsp = cached.clone().oneshot(request(false)).await.unwrap();
        rsp.into_body().collect().await.unwrap();
    });

    let mut group = c.benchmark_group("cache");
    group.bench_function("upstream_direct", |b| {
        let svc = upstream();
        b.iter(|| {
            rt.block_on(async {
                let rsp = svc.clone().oneshot(request(false)).await.unwrap();
                black_box(rsp.into_body().collect().await.unwrap().to_bytes())
            })
        })
    });
    group.bench_function("hit", |b| {
        b.iter(|| {
            rt.block_on(async {
                let rsp = cached.clone().oneshot(request(false)).await.unwrap();
                black_box(rsp.into_body().collect().await.unwrap().to_bytes())
            })
        })
    });
    group.bench_function("pass_through", |b| {
        b.iter(|| {
            rt.block_on(async {
                let rsp = cached.clone().oneshot(request(true)).await.unwrap();
                black_box(rsp.into_body().collect().await.unwrap().to_bytes())
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
