//! Endpoint pick cost: P2C peak-EWMA, round-robin and consistent hashing,
//! at 3 and 300 endpoints, through `Pool::select` (what a request pays:
//! the lock-free membership load, health filter, choice and in-flight
//! accounting).

#![allow(missing_docs, clippy::unwrap_used)]

use std::convert::Infallible;
use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use towergate_balance::algorithm::ring::hash64;
use towergate_balance::{Algorithm, Endpoint, HashKey, Pool};

fn pool(n: usize, algorithm: Algorithm) -> Pool<()> {
    Pool::builder("bench", |_e: &Endpoint| Ok::<_, Infallible>(()))
        .algorithm(algorithm)
        .endpoints(
            (0..n).map(|i| Endpoint::new(format!("http://10.0.{}.{}:8080", i / 256, i % 256))),
        )
        .build()
        .unwrap()
}

fn pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick");
    let keys: Vec<u64> = (0..1024)
        .map(|k| hash64(format!("user-{k}").as_bytes()))
        .collect();
    for n in [3, 300] {
        let algorithms = [
            ("p2c_peak_ewma", Algorithm::PeakEwma),
            ("round_robin", Algorithm::RoundRobin),
            (
                "consistent_hash",
                Algorithm::ConsistentHash(HashKey::header("x-user").unwrap()),
            ),
        ];
        for (name, algorithm) in algorithms {
            let hashing = matches!(algorithm, Algorithm::ConsistentHash(_));
            let p = pool(n, algorithm);
            let mut i = 0usize;
            group.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                b.iter(|| {
                    i = (i + 1) % keys.len();
                    let key = hashing.then(|| keys[i]);
                    black_box(p.select(black_box(key)).unwrap())
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, pick);
criterion_main!(benches);
