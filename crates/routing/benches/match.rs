//! Route matching cost against the size of the table: 1, 10, 100 and 10,000
//! routes, the request always matching the route declared last.
//!
//! - `find/prefix/N`: [`RouteTable::find`] over N prefix routes
//!   (`/api/s0/` ..), the shape `bench/run.sh` proxies through.
//! - `find/template/N`: N exact templates with a parameter
//!   (`/v1/s0/items/{id}` ..), which capture and decode a parameter.
//! - `router/prefix/N`: the whole [`Router`] service (path normalisation,
//!   lookup, `RouteMatch` in the extensions, the route's service called),
//!   with a service that answers at once.
//!
//! `cargo bench -p towergate-routing`; CI only compiles it
//! (`cargo bench -p towergate-routing --no-run`).

use std::convert::Infallible;
use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::{HeaderMap, Method, Request, Response};
use tower::{ServiceExt, service_fn};
use towergate_routing::{Outcome, Route, RouteTable, Router};

const SIZES: [usize; 4] = [1, 10, 100, 10_000];

fn prefix_routes(n: usize) -> impl Iterator<Item = Route> {
    (0..n).map(|i| Route::new(format!("s{i}")).path_prefix(format!("/api/s{i}/")))
}

fn template_routes(n: usize) -> impl Iterator<Item = Route> {
    (0..n).map(|i| {
        Route::new(format!("s{i}"))
            .method(Method::GET)
            .path_template(format!("/v1/s{i}/items/{{id}}"))
    })
}

fn find(c: &mut Criterion) {
    let headers = HeaderMap::new();
    let mut group = c.benchmark_group("find");
    for n in SIZES {
        let Ok(table) = RouteTable::new(prefix_routes(n)) else {
            panic!("prefix table of {n} routes does not build");
        };
        let path = format!("/api/s{}/x", n - 1);
        assert!(matches!(
            table.find(&Method::GET, Some("localhost"), &path, &headers, None),
            Outcome::Matched { .. }
        ));
        group.bench_with_input(BenchmarkId::new("prefix", n), &path, |b, path| {
            b.iter(|| {
                black_box(table.find(
                    &Method::GET,
                    Some("localhost"),
                    black_box(path),
                    &headers,
                    None,
                ))
            });
        });

        let Ok(table) = RouteTable::new(template_routes(n)) else {
            panic!("template table of {n} routes does not build");
        };
        let path = format!("/v1/s{}/items/42", n - 1);
        assert!(matches!(
            table.find(&Method::GET, Some("localhost"), &path, &headers, None),
            Outcome::Matched { .. }
        ));
        group.bench_with_input(BenchmarkId::new("template", n), &path, |b, path| {
            b.iter(|| {
                black_box(table.find(
                    &Method::GET,
                    Some("localhost"),
                    black_box(path),
                    &headers,
                    None,
                ))
            });
        });
    }
    group.finish();
}

fn router(c: &mut Criterion) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().build() else {
        panic!("no tokio runtime");
    };
    let mut group = c.benchmark_group("router");
    for n in SIZES {
        let answer =
            service_fn(|_req: Request<()>| async { Ok::<_, Infallible>(Response::new(())) });
        let mut builder = Router::builder();
        for route in prefix_routes(n) {
            builder = builder.route(route, answer);
        }
        let Ok(router) = builder.build() else {
            panic!("router of {n} routes does not build");
        };
        let uri = format!("/api/s{}/x", n - 1);
        group.bench_with_input(BenchmarkId::new("prefix", n), &uri, |b, uri| {
            b.iter(|| {
                let req = Request::get(uri.as_str())
                    .header("host", "localhost")
                    .body(())
                    .unwrap_or_default();
                let rsp = rt.block_on(router.clone().oneshot(req));
                black_box(rsp.map(|r| r.status()))
            });
        });
    }
    group.finish();
}

criterion_group!(benches, find, router);
criterion_main!(benches);
