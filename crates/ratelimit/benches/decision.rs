//! In-memory decision cost: one hot key, many keys, a flood of a million
//! distinct keys against a bounded store, and the whole layer.

use std::convert::Infallible;
use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::{HeaderName, Request, Response};
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
use towergate_core::ClientAddr;
use towergate_ratelimit::gcra::Gcra;
use towergate_ratelimit::store::{Batch, Bucket};
use towergate_ratelimit::{Key, Limit, MemoryStore, RateLimitLayer};

fn batch(id: String, gcra: Gcra) -> Batch {
    Batch::new("", vec![Bucket::new(id, gcra)])
}

fn decisions(c: &mut Criterion) {
    // Fast enough that the hot key keeps being admitted and refused.
    let gcra = Limit::per_second(1_000_000)
        .gcra()
        .unwrap_or_else(|| unreachable!());
    let mut group = c.benchmark_group("memory");

    let store = MemoryStore::new();
    let hot = batch("hot".to_owned(), gcra);
    group.bench_function("single_key", |b| b.iter(|| black_box(store.decide(&hot))));

    let store = MemoryStore::new();
    let many: Vec<Batch> = (0..10_000)
        .map(|i| batch(format!("client-{i}"), gcra))
        .collect();
    let mut i = 0;
    group.bench_function("10k_keys", |b| {
        b.iter(|| {
            i = (i + 1) % many.len();
            black_box(store.decide(&many[i]))
        })
    });

    let two = Batch::new(
        "",
        vec![
            Bucket::new("a", gcra),
            Bucket::new(
                "b",
                Limit::per_hour(1_000_000)
                    .gcra()
                    .unwrap_or_else(|| unreachable!()),
            ),
        ],
    );
    group.bench_function("two_limits", |b| b.iter(|| black_box(store.decide(&two))));

    // A million distinct keys that all stay live, into a store bounded at
    // 10,000: measures the eviction path under a key flood.
    let hourly = Limit::per_hour(1).gcra().unwrap_or_else(|| unreachable!());
    let flood: Vec<Batch> = (0..1_000_000)
        .map(|i| batch(format!("flood-{i}"), hourly))
        .collect();
    group.sample_size(10);
    group.bench_function("flood_1M_distinct_keys_bound_10k", |b| {
        b.iter_batched(
            || {
                MemoryStore::builder()
                    .max_keys(10_000)
                    .build()
                    .unwrap_or_default()
            },
            |store| {
                for batch in &flood {
                    black_box(store.decide(batch));
                }
                assert!(store.len() <= 10_000);
                store
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

fn layer(c: &mut Criterion) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().build() else {
        return;
    };
    let Ok(layer) = RateLimitLayer::builder()
        .limit(Limit::per_second(1_000_000).name("per-key"))
        .key(Key::header(HeaderName::from_static("x-api-key")))
        .build()
    else {
        return;
    };
    let mut svc = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(|_: Request<()>| async {
            Ok::<_, Infallible>(Response::new(String::new()))
        }));
    c.bench_function("layer/call_in_memory", |b| {
        b.iter(|| {
            let req = Request::get("/")
                .header("x-api-key", "k")
                .body(())
                .unwrap_or_default();
            rt.block_on(async { black_box(svc.ready().await?.call(req).await) })
        })
    });

    // The gateway's usual setup: one limit per client IP.
    let Ok(layer) = RateLimitLayer::builder()
        .limit(Limit::per_second(1_000_000).name("per-ip"))
        .key(Key::ClientIp)
        .build()
    else {
        return;
    };
    let mut svc = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(|_: Request<()>| async {
            Ok::<_, Infallible>(Response::new(String::new()))
        }));
    let mut i = 0u8;
    c.bench_function("layer/call_in_memory_client_ip", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            let peer = SocketAddr::from(([203, 0, 113, i], 40_000));
            let mut req = Request::new(());
            req.extensions_mut().insert(ClientAddr::direct(peer, false));
            rt.block_on(async { black_box(svc.ready().await?.call(req).await) })
        })
    });
}

criterion_group!(benches, decisions, layer);
criterion_main!(benches);
