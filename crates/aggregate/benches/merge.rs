//! The cost of one aggregated request: three calls to in-process targets
//! (`tower::service_fn`s answering pre-built ~10 KB JSON bodies), their
//! answers parsed, shaped and merged, the result serialised.
//!
//! - `aggregate/3_calls_10kb`: the whole request through `Aggregate`
//!   (fan-out, parse, shape, merge, serialise), body collected.
//! - `baseline/fanout_only`: the same three targets called and their bodies
//!   collected, nothing parsed: the floor of the fan-out.
//! - `baseline/json_only`: the JSON work any implementation must do: parse
//!   the three bodies, serialise a value the size of the answer.
//!
//! The merge itself is crate-private; whole − fanout − json approximates
//! what shaping, merging and the aggregate's bookkeeping cost.

#![allow(clippy::unwrap_used, missing_docs)]

use std::convert::Infallible;
use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tower::ServiceExt;
use towergate_aggregate::{Aggregate, Call};

/// A user profile: one object, ~10 KB (grouped as is).
fn user() -> Value {
    let addresses: Vec<Value> = (0..80)
        .map(|i| {
            json!({
                "id": format!("addr-{i}"),
                "street": format!("{i} Long Example Street"),
                "city": "Springfield",
                "postcode": format!("{:05}", 10_000 + i),
                "country": "DE",
                "default": i == 0,
            })
        })
        .collect();
    json!({
        "id": "42",
        "name": "Ada Lovelace",
        "email": "ada@example.com",
        "customer_id": "c-7",
        "tags": ["gold", "early", "beta", "newsletter"],
        "addresses": addresses,
    })
}

/// Orders: `{ "data": [ 60 orders ] }`, ~10 KB; the call picks `data`,
/// keeps four fields of each order and renames one.
fn orders() -> Value {
    let data: Vec<Value> = (0..60)
        .map(|i| {
            json!({
                "id": format!("o-{i:04}"),
                "total": 1000 + i * 7,
                "currency": "EUR",
                "status": if i % 3 == 0 { "shipped" } else { "open" },
                "internal_note": "do not expose",
                "warehouse": { "id": i % 5, "zone": "B" },
                "created": "2026-11-27T12:00:00Z",
            })
        })
        .collect();
    json!({ "data": data, "page": 1, "more": false })
}

/// Preferences, merged at the top level: ~10 KB of flat and nested keys.
fn prefs() -> Value {
    let mut m = serde_json::Map::new();
    for i in 0..320 {
        m.insert(format!("pref_{i:03}"), json!({ "on": i % 2 == 0, "v": i }));
    }
    m.insert("locale".into(), json!("en-GB"));
    Value::Object(m)
}

type Answer = std::future::Ready<Result<Response<Full<Bytes>>, Infallible>>;

/// A target answering `v` as JSON, with the body built once.
fn target(
    v: &Value,
) -> tower::util::ServiceFn<impl Fn(Request<Full<Bytes>>) -> Answer + Clone + Send + Sync + 'static>
{
    let body = Bytes::from(serde_json::to_vec(v).unwrap());
    tower::service_fn(move |_req: Request<Full<Bytes>>| {
        std::future::ready(Ok(Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(body.clone()))
            .unwrap()))
    })
}

/// One call to a target, body collected: what the fan-out can't avoid.
async fn call<S>(t: &S, path: &'static str) -> Bytes
where
    S: tower::Service<Request<Full<Bytes>>, Response = Response<Full<Bytes>>, Error = Infallible>
        + Clone,
{
    let req = Request::get(path).body(Full::default()).unwrap();
    let rsp = t.clone().oneshot(req).await.unwrap();
    rsp.into_body().collect().await.unwrap().to_bytes()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let values = [user(), orders(), prefs()];
    let sizes: Vec<usize> = values
        .iter()
        .map(|v| serde_json::to_vec(v).unwrap().len())
        .collect();
    let [users_t, orders_t, prefs_t] = [&values[0], &values[1], &values[2]].map(target);
    let aggregate = Aggregate::builder()
        .target("users", users_t.clone())
        .target("orders", orders_t.clone())
        .target("prefs", prefs_t.clone())
        .call(Call::new("user", "users").path("/users/42"))
        .call(
            Call::new("orders", "orders")
                .path("/orders?user=42")
                .pick("data")
                .allow(["id", "total", "currency", "status"])
                .rename("total", "amount"),
        )
        .call(
            Call::new("prefs", "prefs")
                .path("/prefs/42")
                .merge_top_level(),
        )
        .build()
        .unwrap();

    let whole = || async {
        let rsp = aggregate.clone().oneshot(Request::new(())).await.unwrap();
        rsp.into_body().collect().await.unwrap().to_bytes()
    };
    let out = rt.block_on(whole());
    let merged: Value = serde_json::from_slice(&out).unwrap();
    assert!(merged.get("_partial").is_none(), "{merged}");
    assert_eq!(merged["orders"][0]["amount"], 1000);
    assert!(merged["orders"][0].get("internal_note").is_none());
    assert_eq!(merged["pref_000"]["on"], true);
    eprintln!(
        "bodies {} + {} + {} bytes, answer {} bytes",
        sizes[0],
        sizes[1],
        sizes[2],
        out.len()
    );

    let mut group = c.benchmark_group("aggregate");
    group.bench_function("3_calls_10kb", |b| {
        b.iter(|| black_box(rt.block_on(whole())))
    });
    group.finish();

    let mut group = c.benchmark_group("baseline");
    group.bench_function("fanout_only", |b| {
        b.iter(|| {
            black_box(rt.block_on(futures_util::future::join3(
                call(&users_t, "/users/42"),
                call(&orders_t, "/orders?user=42"),
                call(&prefs_t, "/prefs/42"),
            )))
        })
    });
    let bodies: Vec<Vec<u8>> = values
        .iter()
        .map(|v| serde_json::to_vec(v).unwrap())
        .collect();
    group.bench_function("json_only", |b| {
        b.iter(|| {
            for body in &bodies {
                black_box(serde_json::from_slice::<Value>(black_box(body)).unwrap());
            }
            black_box(serde_json::to_vec(black_box(&merged)).unwrap())
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
