#![allow(clippy::unwrap_used)]
//! The aggregate over real sockets: in-process axum upstreams on loopback,
//! real HTTP clients (hyper-util) as targets.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::response::IntoResponse;
use axum::routing::get;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::sync::Barrier;
use tower::{ServiceExt, service_fn};
use towergate_aggregate::{Aggregate, AggregateBuilder, BuildError, Call};
use towergate_core::{ClientAddr, Identity, RequestId, RouteMatch};
use towergate_test::{Upstream, assert_problem, echo_router, spawn_upstream};

// === support ===

/// Registers a real HTTP/1 client to `addr` as the target `name`: it sets
/// the authority, as the gateway's proxy does.
fn http_target(builder: AggregateBuilder, name: &str, addr: SocketAddr) -> AggregateBuilder {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let svc = client.map_request(move |mut req: Request<Full<Bytes>>| {
        let pq = req
            .uri()
            .path_and_query()
            .map(|pq| pq.as_str().to_owned())
            .unwrap_or_else(|| "/".to_owned());
        *req.uri_mut() = Uri::builder()
            .scheme("http")
            .authority(addr.to_string())
            .path_and_query(pq)
            .build()
            .unwrap();
        req
    });
    builder.target(name, svc)
}

fn route(params: &[(&str, &str)]) -> RouteMatch {
    RouteMatch {
        route: "screen".into(),
        params: params
            .iter()
            .map(|(k, v)| (Arc::from(*k), (*v).to_owned()))
            .collect(),
    }
}

fn request(uri: &str, params: &[(&str, &str)]) -> Request<Body> {
    let mut req = Request::builder().uri(uri).body(Body::empty()).unwrap();
    req.extensions_mut().insert(route(params));
    req
}

/// Calls the aggregate, guarded by a generous timeout so that a deadlock
/// fails the test instead of hanging it.
async fn send(agg: &Aggregate, req: Request<Body>) -> Response<Body> {
    let rsp = tokio::time::timeout(Duration::from_secs(5), agg.clone().oneshot(req))
        .await
        .expect("aggregate answered within 5 s")
        .unwrap();
    rsp.map(Body::new)
}

async fn json_body(rsp: Response<Body>) -> Value {
    assert_eq!(rsp.headers()["content-type"], "application/json");
    let bytes = rsp.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

fn partial_header(rsp: &Response<Body>) -> Option<&str> {
    rsp.headers()
        .get("x-aggregate-partial")
        .map(|v| v.to_str().unwrap())
}

/// A user service: `/users/{id}`.
fn users_router() -> Router {
    Router::new().route(
        "/users/{id}",
        get(|Path(id): Path<String>| async move {
            axum::Json(json!({
                "id": id,
                "name": "Ada",
                "customer_id": "acme 7;b",
                "password_hash": "x",
                "address": {"city": "Paris", "zip": "75001"}
            }))
        }),
    )
}

/// An upstream that never answers.
fn hanging_router() -> Router {
    Router::new().fallback(std::future::pending::<StatusCode>)
}

/// An address where nothing listens.
async fn closed_port() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}

// === tests ===

#[tokio::test]
async fn three_calls_run_in_parallel_and_merge() {
    // Each upstream waits at a barrier of 3 before answering: the aggregate
    // deadlocks (and the 5 s guard fails the test) unless the three calls
    // are in flight at the same time.
    let barrier = Arc::new(Barrier::new(3));
    let b = barrier.clone();
    let users = spawn_upstream(Router::new().route(
        "/users/{id}",
        get(move |Path(id): Path<String>| {
            let b = b.clone();
            async move {
                b.wait().await;
                tokio::time::sleep(Duration::from_millis(300)).await;
                axum::Json(json!({"id": id, "name": "Ada"}))
            }
        }),
    ))
    .await;
    let b = barrier.clone();
    let orders = spawn_upstream(Router::new().route(
        "/orders",
        get(move || {
            let b = b.clone();
            async move {
                b.wait().await;
                tokio::time::sleep(Duration::from_millis(300)).await;
                axum::Json(json!([{"id": 1}, {"id": 2}]))
            }
        }),
    ))
    .await;
    let b = barrier.clone();
    let notifications = spawn_upstream(Router::new().route(
        "/notifications",
        get(move || {
            let b = b.clone();
            async move {
                b.wait().await;
                tokio::time::sleep(Duration::from_millis(300)).await;
                axum::Json(json!({"unread": 3}))
            }
        }),
    ))
    .await;

    let mut builder = Aggregate::builder();
    builder = http_target(builder, "users", users.addr);
    builder = http_target(builder, "orders", orders.addr);
    builder = http_target(builder, "notifications", notifications.addr);
    let agg = builder
        .call(Call::new("user", "users").path("/users/{params.id}"))
        .call(Call::new("orders", "orders").path("/orders?user={params.id}"))
        .call(Call::new("notifications", "notifications").path("/notifications"))
        .build()
        .unwrap();

    let rsp = send(&agg, request("/screens/home/42", &[("id", "42")])).await;
    assert_eq!(rsp.status(), 200);
    assert_eq!(partial_header(&rsp), None);
    assert_eq!(
        json_body(rsp).await,
        json!({
            "user": {"id": "42", "name": "Ada"},
            "orders": [{"id": 1}, {"id": 2}],
            "notifications": {"unread": 3},
        })
    );
}

#[tokio::test]
async fn dependent_call_uses_a_field_of_the_first_answer() {
    let users = spawn_upstream(users_router()).await;
    let customers = spawn_upstream(echo_router("customers")).await;
    let mut builder = Aggregate::builder();
    builder = http_target(builder, "users", users.addr);
    builder = http_target(builder, "customers", customers.addr);
    let agg = builder
        // Declared first, though it runs second: order of declaration only
        // decides merging.
        .call(
            Call::new("customer", "customers")
                .path("/customers/{user.customer_id}?of={user.id}&n={user.address.zip}"),
        )
        .call(Call::new("user", "users").path("/users/{params.id}"))
        .build()
        .unwrap();

    let rsp = send(&agg, request("/", &[("id", "42")])).await;
    assert_eq!(rsp.status(), 200);
    let body = json_body(rsp).await;
    // The value `acme 7;b` is one escaped path segment.
    assert_eq!(body["customer"]["path"], "/customers/acme%207;b");
    assert_eq!(body["customer"]["query"], "of=42&n=75001");
    assert_eq!(body["customer"]["method"], "GET");
    assert_eq!(body["user"]["id"], "42");
}

#[tokio::test]
async fn identity_params_query_and_headers_in_templates() {
    let echo = spawn_upstream(echo_router("profile")).await;
    let agg = http_target(Aggregate::builder(), "profile", echo.addr)
        .call(
            Call::new("profile", "profile")
                .path("/orgs/{identity.org.id}/users/{identity.sub}/items/{params.item}?q={query.q}&lang={header.accept-language}")
                .pass_header(HeaderName::from_static("x-trace"))
                .pass_header(http::header::COOKIE)
                .set_header(HeaderName::from_static("x-user"), "user={identity.sub}"),
        )
        .build()
        .unwrap();

    let mut req = request("/screens/x?q=a%20b%26c&other=1", &[("item", "i-9")]);
    let mut identity = Identity {
        subject: Some("alice@example.com".into()),
        ..Identity::default()
    };
    identity.claims.insert("org".into(), json!({"id": 7}));
    req.extensions_mut().insert(identity);
    req.headers_mut()
        .insert("x-trace", HeaderValue::from_static("t-1"));
    req.headers_mut()
        .insert("accept-language", HeaderValue::from_static("fr"));
    req.headers_mut()
        .insert("x-not-passed", HeaderValue::from_static("secret"));

    let rsp = send(&agg, req).await;
    assert_eq!(rsp.status(), 200);
    let body = json_body(rsp).await;
    let p = &body["profile"];
    assert_eq!(p["path"], "/orgs/7/users/alice@example.com/items/i-9");
    assert_eq!(p["query"], "q=a%20b%26c&lang=fr");
    assert_eq!(p["headers"]["x-trace"], json!(["t-1"]));
    assert_eq!(p["headers"]["x-user"], json!(["user=alice@example.com"]));
    assert_eq!(p["headers"]["accept"], json!(["application/json"]));
    assert!(p["headers"].get("x-not-passed").is_none());
    assert!(
        p["headers"].get("cookie").is_none(),
        "absent headers are not invented"
    );
}

#[tokio::test]
async fn optional_call_to_a_closed_port_is_partial() {
    let users = spawn_upstream(users_router()).await;
    let notifications = spawn_upstream(echo_router("notifications")).await;
    let mut builder = Aggregate::builder();
    builder = http_target(builder, "users", users.addr);
    builder = http_target(builder, "orders", closed_port().await);
    builder = http_target(builder, "notifications", notifications.addr);
    let agg = builder
        .call(
            Call::new("user", "users")
                .path("/users/{params.id}")
                .allow(["id"]),
        )
        .call(
            Call::new("orders", "orders")
                .path("/orders")
                .required(false),
        )
        .call(
            Call::new("notifications", "notifications")
                .path("/n")
                .pick("service"),
        )
        .build()
        .unwrap();

    let rsp = send(&agg, request("/", &[("id", "1")])).await;
    assert_eq!(rsp.status(), 200);
    assert_eq!(partial_header(&rsp), Some("orders"));
    assert_eq!(
        json_body(rsp).await,
        json!({
            "user": {"id": "1"},
            "orders": null,
            "notifications": "notifications",
            "_partial": ["orders"],
        })
    );
}

#[tokio::test]
async fn optional_calls_past_their_timeout_are_missing() {
    let users = spawn_upstream(users_router()).await;
    let slow = spawn_upstream(hanging_router()).await;
    let mut builder = Aggregate::builder();
    builder = http_target(builder, "users", users.addr);
    builder = http_target(builder, "slow", slow.addr);
    let agg = builder
        .call(
            Call::new("orders", "slow")
                .timeout(Duration::from_millis(100))
                .required(false),
        )
        .call(
            Call::new("user", "users")
                .path("/users/{params.id}")
                .pick("id"),
        )
        .call(
            Call::new("flags", "slow")
                .timeout(Duration::from_millis(100))
                .required(false)
                .merge_top_level(),
        )
        .build()
        .unwrap();

    let rsp = send(&agg, request("/", &[("id", "5")])).await;
    assert_eq!(rsp.status(), 200);
    assert_eq!(partial_header(&rsp), Some("orders, flags"));
    assert_eq!(
        json_body(rsp).await,
        json!({"orders": null, "user": "5", "_partial": ["orders", "flags"]}),
        "a missing top-level call leaves nothing"
    );
}

#[tokio::test]
async fn required_call_answering_500_is_502() {
    let broken = spawn_upstream(Router::new().fallback(|| async {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "database exploded at 0xdeadbeef",
        )
    }))
    .await;
    let users = spawn_upstream(users_router()).await;
    let mut builder = Aggregate::builder();
    builder = http_target(builder, "users", users.addr);
    builder = http_target(builder, "broken", broken.addr);
    let agg = builder
        .call(Call::new("user", "users").path("/users/1"))
        .call(Call::new("orders", "broken").path("/orders"))
        .build()
        .unwrap();

    let mut req = request("/", &[]);
    req.extensions_mut().insert(RequestId("req-17".into()));
    let rsp = send(&agg, req).await;
    let problem = assert_problem(rsp, 502).await;
    assert_eq!(problem["call"], "orders");
    assert_eq!(problem["reason"], "upstream_status");
    assert_eq!(problem["instance"], "req-17");
    assert!(
        !problem.to_string().contains("exploded"),
        "no upstream text leaks"
    );
}

#[tokio::test]
async fn required_call_answering_404_is_404() {
    let users = spawn_upstream(Router::new().fallback(|| async {
        (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error": "no such user"})),
        )
    }))
    .await;
    let agg = http_target(Aggregate::builder(), "users", users.addr)
        .call(Call::new("user", "users").path("/users/{params.id}"))
        .build()
        .unwrap();
    let rsp = send(&agg, request("/", &[("id", "404")])).await;
    let problem = assert_problem(rsp, 404).await;
    assert_eq!(problem["call"], "user");
    assert_eq!(problem["detail"], "call `user` answered 404");
}

#[tokio::test]
async fn required_call_timing_out_is_504() {
    let slow = spawn_upstream(hanging_router()).await;
    let users = spawn_upstream(users_router()).await;
    let mut builder = Aggregate::builder();
    builder = http_target(builder, "slow", slow.addr);
    builder = http_target(builder, "users", users.addr);
    let agg = builder
        .call(Call::new("user", "users").path("/users/1"))
        .call(Call::new("orders", "slow").timeout(Duration::from_millis(100)))
        .build()
        .unwrap();
    let problem = assert_problem(send(&agg, request("/", &[])).await, 504).await;
    assert_eq!(problem["call"], "orders");
    assert_eq!(problem["reason"], "timeout");
}

#[tokio::test]
async fn overall_deadline_keeps_finished_parts() {
    let slow = spawn_upstream(hanging_router()).await;
    let users = spawn_upstream(users_router()).await;
    let mut builder = Aggregate::builder();
    builder = http_target(builder, "slow", slow.addr);
    builder = http_target(builder, "users", users.addr);
    // Generous enough for `user` to answer on a loaded machine; `orders`
    // never answers.
    let agg = builder
        .deadline(Duration::from_millis(1500))
        .call(Call::new("user", "users").path("/users/1").allow(["name"]))
        .call(Call::new("orders", "slow").required(false))
        .build()
        .unwrap();
    let rsp = send(&agg, request("/", &[])).await;
    assert_eq!(rsp.status(), 200);
    assert_eq!(partial_header(&rsp), Some("orders"));
    assert_eq!(
        json_body(rsp).await,
        json!({"user": {"name": "Ada"}, "orders": null, "_partial": ["orders"]})
    );

    // The same with the slow call required: 504.
    let mut builder = Aggregate::builder();
    builder = http_target(builder, "slow", slow.addr);
    let agg = builder
        .deadline(Duration::from_millis(300))
        .call(Call::new("orders", "slow"))
        .build()
        .unwrap();
    let problem = assert_problem(send(&agg, request("/", &[])).await, 504).await;
    assert_eq!(problem["reason"], "deadline");
}

#[tokio::test]
async fn non_json_answers_fail_the_call() {
    let upstream = spawn_upstream(
        Router::new()
            .route(
                "/html",
                get(|| async { axum::response::Html("<p>hello</p>") }),
            )
            .route(
                "/broken",
                get(|| async { ([("content-type", "application/json")], "{not json") }),
            )
            .route(
                "/problem",
                get(|| async {
                    (
                        [("content-type", "application/vnd.x+json")],
                        r#"{"ok":true}"#,
                    )
                }),
            ),
    )
    .await;
    let agg = http_target(Aggregate::builder(), "up", upstream.addr)
        .call(Call::new("html", "up").path("/html").required(false))
        .call(Call::new("broken", "up").path("/broken").required(false))
        .call(Call::new("vendor", "up").path("/problem"))
        .build()
        .unwrap();
    let rsp = send(&agg, request("/", &[])).await;
    assert_eq!(rsp.status(), 200);
    assert_eq!(partial_header(&rsp), Some("html, broken"));
    assert_eq!(
        json_body(rsp).await,
        json!({"html": null, "broken": null, "vendor": {"ok": true}, "_partial": ["html", "broken"]})
    );

    let agg = http_target(Aggregate::builder(), "up", upstream.addr)
        .call(Call::new("html", "up").path("/html"))
        .build()
        .unwrap();
    let problem = assert_problem(send(&agg, request("/", &[])).await, 502).await;
    assert_eq!(problem["reason"], "not_json");
}

#[tokio::test]
async fn answers_above_max_response_bytes_fail_the_call() {
    let big = "x".repeat(10_000);
    let upstream = spawn_upstream(
        Router::new()
            .route(
                "/sized",
                get(move || {
                    let big = big.clone();
                    async move { axum::Json(json!({"big": big})) }
                }),
            )
            // Chunked, no content-length: only the limited read can tell.
            .route(
                "/streamed",
                get(|| async {
                    let chunks = (0..20).map(|i| {
                        Ok::<_, Infallible>(Bytes::from(if i == 0 {
                            "[".to_owned()
                        } else {
                            format!("{}\"{}\"", if i > 1 { "," } else { "" }, "y".repeat(500))
                        }))
                    });
                    let chunks = chunks.chain(std::iter::once(Ok(Bytes::from_static(b"]"))));
                    (
                        [("content-type", "application/json")],
                        Body::from_stream(futures_util::stream::iter(chunks)),
                    )
                        .into_response()
                }),
            )
            .route("/small", get(|| async { axum::Json(json!({"ok": 1})) })),
    )
    .await;
    let agg = http_target(Aggregate::builder(), "up", upstream.addr)
        .max_response_bytes(1024)
        .call(Call::new("sized", "up").path("/sized").required(false))
        .call(
            Call::new("streamed", "up")
                .path("/streamed")
                .required(false),
        )
        .call(Call::new("small", "up").path("/small"))
        .build()
        .unwrap();
    let rsp = send(&agg, request("/", &[])).await;
    assert_eq!(rsp.status(), 200);
    assert_eq!(partial_header(&rsp), Some("sized, streamed"));
    assert_eq!(json_body(rsp).await["small"], json!({"ok": 1}));

    let agg = http_target(Aggregate::builder(), "up", upstream.addr)
        .max_response_bytes(1024)
        .call(Call::new("streamed", "up").path("/streamed"))
        .build()
        .unwrap();
    let problem = assert_problem(send(&agg, request("/", &[])).await, 502).await;
    assert_eq!(problem["reason"], "too_large");
}

#[tokio::test]
async fn max_concurrent_calls_one_runs_every_call_one_at_a_time() {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (f, p) = (in_flight.clone(), peak.clone());
    let upstream = spawn_upstream(Router::new().route(
        "/n/{i}",
        get(move |Path(i): Path<u32>| {
            let (f, p) = (f.clone(), p.clone());
            async move {
                let now = f.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                f.fetch_sub(1, Ordering::SeqCst);
                axum::Json(json!({"i": i}))
            }
        }),
    ))
    .await;
    let mut builder =
        http_target(Aggregate::builder(), "up", upstream.addr).max_concurrent_calls(1);
    for i in 0..5 {
        builder = builder.call(Call::new(format!("c{i}"), "up").path(format!("/n/{i}")));
    }
    let agg = builder.build().unwrap();
    let rsp = send(&agg, request("/", &[])).await;
    assert_eq!(rsp.status(), 200);
    let body = json_body(rsp).await;
    for i in 0..5 {
        assert_eq!(body[format!("c{i}")]["i"], i);
    }
    assert_eq!(
        peak.load(Ordering::SeqCst),
        1,
        "never more than one call in flight"
    );
}

#[tokio::test]
async fn pick_allow_deny_rename_and_top_level_merge() {
    let users = spawn_upstream(users_router()).await;
    let orders = spawn_upstream(Router::new().route(
        "/orders",
        get(|| async {
            axum::Json(json!({"data": {"items": [
                {"id": 1, "total": 10, "internal": "a"},
                {"id": 2, "total": 20, "internal": "b"}
            ]}}))
        }),
    ))
    .await;
    let prefs = spawn_upstream(Router::new().route(
        "/prefs",
        get(|| async {
            axum::Json(json!({"theme": "dark", "address": {"country": "FR"}, "name": "ignored?"}))
        }),
    ))
    .await;
    let mut builder = Aggregate::builder();
    builder = http_target(builder, "users", users.addr);
    builder = http_target(builder, "orders", orders.addr);
    builder = http_target(builder, "prefs", prefs.addr);
    let agg = builder
        .call(
            Call::new("user", "users")
                .path("/users/{params.id}")
                .deny(["password_hash", "address.zip"])
                .rename("customer_id", "customer")
                .merge_top_level(),
        )
        .call(
            Call::new("orders", "orders")
                .path("/orders")
                .pick("data.items")
                .allow(["id", "total", "internal"])
                .deny(["internal"])
                .rename("total", "amount")
                .group("recent_orders"),
        )
        .call(Call::new("prefs", "prefs").path("/prefs").merge_top_level())
        .call(
            Call::new("first", "orders")
                .path("/orders")
                .pick("data.items.0.id"),
        )
        .build()
        .unwrap();
    let rsp = send(&agg, request("/", &[("id", "9")])).await;
    assert_eq!(rsp.status(), 200);
    assert_eq!(
        json_body(rsp).await,
        json!({
            "id": "9",
            // prefs merged later: it wins the conflict on `name`.
            "name": "ignored?",
            "customer": "acme 7;b",
            "address": {"city": "Paris", "country": "FR"},
            "theme": "dark",
            "recent_orders": [{"id": 1, "amount": 10}, {"id": 2, "amount": 20}],
            "first": 1,
        })
    );
}

#[tokio::test]
async fn failed_dependency_skips_its_dependents() {
    let broken = spawn_upstream(Router::new().fallback(|| async { StatusCode::BAD_GATEWAY })).await;
    let echo = spawn_upstream(echo_router("echo")).await;
    let mut builder = Aggregate::builder();
    builder = http_target(builder, "broken", broken.addr);
    builder = http_target(builder, "echo", echo.addr);
    let agg = builder
        .call(Call::new("user", "broken").required(false))
        .call(
            Call::new("customer", "echo")
                .path("/c/{user.customer_id}")
                .required(false),
        )
        .call(Call::new("other", "echo").path("/o").pick("path"))
        .build()
        .unwrap();
    let rsp = send(&agg, request("/", &[])).await;
    assert_eq!(rsp.status(), 200);
    assert_eq!(partial_header(&rsp), Some("user, customer"));
    assert_eq!(
        json_body(rsp).await,
        json!({"user": null, "customer": null, "other": "/o", "_partial": ["user", "customer"]})
    );

    // A required dependent fails the request with the dependency's status.
    let mut builder = Aggregate::builder();
    builder = http_target(builder, "broken", broken.addr);
    builder = http_target(builder, "echo", echo.addr);
    let agg = builder
        .call(Call::new("user", "broken").required(false))
        .call(Call::new("customer", "echo").path("/c/{user.customer_id}"))
        .build()
        .unwrap();
    let problem = assert_problem(send(&agg, request("/", &[])).await, 502).await;
    assert_eq!(problem["call"], "customer");
    assert_eq!(problem["reason"], "dependency_failed");
    assert_eq!(problem["dependency"], "user");
    assert_eq!(problem["dependency_reason"], "upstream_status");
}

#[tokio::test]
async fn missing_dependency_field_is_502() {
    let users = spawn_upstream(users_router()).await;
    let echo = spawn_upstream(echo_router("echo")).await;
    let mut builder = Aggregate::builder();
    builder = http_target(builder, "users", users.addr);
    builder = http_target(builder, "echo", echo.addr);
    let agg = builder
        .call(Call::new("user", "users").path("/users/1"))
        .call(Call::new("customer", "echo").path("/c/{user.address}"))
        .build()
        .unwrap();
    let problem = assert_problem(send(&agg, request("/", &[])).await, 502).await;
    assert_eq!(problem["reason"], "dependency_field_missing");
}

#[tokio::test]
async fn missing_request_input_is_400_or_partial() {
    let echo = spawn_upstream(echo_router("echo")).await;
    let agg = http_target(Aggregate::builder(), "echo", echo.addr)
        .call(Call::new("user", "echo").path("/users/{identity.sub}"))
        .build()
        .unwrap();
    let problem = assert_problem(send(&agg, request("/", &[])).await, 400).await;
    assert_eq!(problem["call"], "user");
    assert_eq!(
        problem["detail"],
        "call `user` needs `identity.sub`, which the request lacks"
    );
    assert_eq!(problem["reason"], "missing_input");
    assert!(problem["detail"].as_str().unwrap().contains("identity.sub"));

    let agg = http_target(Aggregate::builder(), "echo", echo.addr)
        .call(Call::new("user", "echo").path("/users/{params.id}"))
        .call(
            Call::new("search", "echo")
                .path("/s?q={query.q}")
                .required(false),
        )
        .build()
        .unwrap();
    let rsp = send(&agg, request("/", &[("id", "3")])).await;
    assert_eq!(rsp.status(), 200);
    assert_eq!(partial_header(&rsp), Some("search"));

    // The 400 does not wait for other calls in flight (this one never
    // answers; the 5 s guard would fail the test).
    let slow = spawn_upstream(hanging_router()).await;
    let mut builder = http_target(Aggregate::builder(), "echo", echo.addr);
    builder = http_target(builder, "slow", slow.addr);
    let agg = builder
        .call(Call::new("slow", "slow"))
        .call(Call::new("user", "echo").path("/users/{header.x-user}"))
        .build()
        .unwrap();
    let problem = assert_problem(send(&agg, request("/", &[])).await, 400).await;
    assert_eq!(problem["call"], "user");
}

#[tokio::test]
async fn a_value_cannot_climb_out_of_its_path_segment() {
    // `/customers/{query.c}/orders` with `c=..` would ask the upstream for
    // `/orders` (everyone's); `.`, an empty value and `..;x` (a dot segment
    // to a servlet container) likewise leave their segment.
    let echo = spawn_upstream(echo_router("echo")).await;
    let agg = http_target(Aggregate::builder(), "echo", echo.addr)
        .call(Call::new("orders", "echo").path("/customers/{query.c}/orders?o={query.o}"))
        .build()
        .unwrap();
    // Nor may a value hold a separator, escaped or not: upstreams that
    // decode `%2F` or `%5C` before routing would read `..%2Fadmin` as
    // `../admin`, and NUL ends a path in C.
    for c in [
        "..",
        "%2E%2E",
        ".",
        "",
        "..;x=1",
        ".%2e",
        "..%2Fadmin",
        "a%2Fb",
        "a/b",
        "a%5Cb",
        "a%00b",
    ] {
        let problem =
            assert_problem(send(&agg, request(&format!("/?c={c}&o=1"), &[])).await, 400).await;
        assert_eq!(problem["reason"], "invalid_input", "{c}");
        assert_eq!(problem["call"], "orders", "{c}");
    }
    // A separator an earlier call's answer holds is the upstream's fault:
    // 502, not the client's 400.
    let chained = http_target(Aggregate::builder(), "echo", echo.addr)
        .call(Call::new("first", "echo").path("/a/b"))
        .call(Call::new("second", "echo").path("/items/{first.path}"))
        .build()
        .unwrap();
    let problem = assert_problem(send(&chained, request("/", &[])).await, 502).await;
    assert_eq!(problem["reason"], "dependency_field_invalid");
    assert_eq!(problem["call"], "second");
    // In the query, or inside a segment, dots are only dots; and in the
    // query a slash is only data.
    let rsp = send(&agg, request("/?c=a..b&o=../x%2Fy", &[])).await;
    assert_eq!(rsp.status(), 200);
    let v = json_body(rsp).await;
    assert_eq!(v["orders"]["path"], "/customers/a..b/orders", "{v}");
    // A value that is only part of its segment may be empty or a dot.
    let agg = http_target(Aggregate::builder(), "echo", echo.addr)
        .call(Call::new("file", "echo").path("/files/{query.name}.json/v{query.v}"))
        .build()
        .unwrap();
    let rsp = send(&agg, request("/?name=&v=.", &[])).await;
    assert_eq!(rsp.status(), 200);
    let v = json_body(rsp).await;
    assert_eq!(v["file"]["path"], "/files/.json/v.", "{v}");
}

#[tokio::test]
async fn sub_requests_carry_the_incoming_extensions() {
    // A target written in Rust: it sees what the gateway's proxy would see.
    let target = service_fn(|req: Request<Full<Bytes>>| async move {
        let id = req.extensions().get::<RequestId>().map(|r| r.to_string());
        let client = req
            .extensions()
            .get::<ClientAddr>()
            .map(|c| c.peer.to_string());
        let body = json!({"request_id": id, "client": client, "uri": req.uri().to_string(), "method": req.method().as_str()});
        Ok::<_, Infallible>(
            Response::builder()
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body.to_string())))
                .unwrap(),
        )
    });
    let agg = Aggregate::builder()
        .target("local", target)
        .call(
            Call::new("seen", "local")
                .method(http::Method::POST)
                .path("/x?y=1"),
        )
        .build()
        .unwrap();
    let mut req = request("/", &[]);
    req.extensions_mut().insert(RequestId("r-1".into()));
    req.extensions_mut()
        .insert(ClientAddr::direct("10.0.0.1:5000".parse().unwrap(), false));
    let rsp = send(&agg, req).await;
    assert_eq!(
        json_body(rsp).await,
        json!({"seen": {"request_id": "r-1", "client": "10.0.0.1:5000", "uri": "/x?y=1", "method": "POST"}})
    );
}

#[tokio::test]
async fn a_call_starts_when_its_own_dependencies_are_done() {
    // `slow` answers only once `after_fast` has been called; `after_fast`
    // depends on `fast` only. With stage barriers (wait for the whole first
    // stage, `slow` included) this deadlocks.
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let tx = Arc::new(std::sync::Mutex::new(Some(tx)));
    let rx = Arc::new(tokio::sync::Mutex::new(Some(rx)));
    let json = |v: Value| {
        Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(v.to_string())))
            .unwrap()
    };
    let slow = service_fn(move |_req: Request<Full<Bytes>>| {
        let rx = rx.clone();
        async move {
            if let Some(rx) = rx.lock().await.take() {
                rx.await.unwrap();
            }
            Ok::<_, Infallible>(json(json!({"slow": true})))
        }
    });
    let fast = service_fn(move |req: Request<Full<Bytes>>| {
        let tx = tx.clone();
        async move {
            if req.uri().path() == "/after"
                && let Some(tx) = tx.lock().unwrap().take()
            {
                tx.send(()).unwrap();
            }
            Ok::<_, Infallible>(json(json!({"token": "t1", "path": req.uri().path()})))
        }
    });
    let agg = Aggregate::builder()
        .target("slow", slow)
        .target("fast", fast)
        .call(Call::new("slow", "slow"))
        .call(Call::new("fast", "fast").path("/first"))
        .call(Call::new("after_fast", "fast").path("/after?t={fast.token}"))
        .build()
        .unwrap();
    let rsp = send(&agg, request("/", &[])).await;
    assert_eq!(
        json_body(rsp).await,
        json!({
            "slow": {"slow": true},
            "fast": {"token": "t1", "path": "/first"},
            "after_fast": {"token": "t1", "path": "/after"},
        })
    );
}

#[tokio::test]
async fn mounted_in_an_axum_router() {
    let users = spawn_upstream(users_router()).await;
    let agg = http_target(Aggregate::builder(), "users", users.addr)
        .call(
            Call::new("user", "users")
                .path("/users/{query.id}")
                .allow(["id", "name"]),
        )
        .call(Call::new("orders", "users").path("/nope").required(false))
        .build()
        .unwrap();
    let app = Router::new().route_service("/screens/home", agg);
    let gateway: Upstream = spawn_upstream(app).await;

    let rsp = reqwest::get(format!("{}/screens/home?id=77", gateway.url()))
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    assert_eq!(rsp.headers()["x-aggregate-partial"], "orders");
    let body: Value = rsp.json().await.unwrap();
    assert_eq!(
        body,
        json!({"user": {"id": "77", "name": "Ada"}, "orders": null, "_partial": ["orders"]})
    );

    let rsp = reqwest::get(format!("{}/screens/home", gateway.url()))
        .await
        .unwrap();
    let problem = towergate_test::assert_problem_reqwest(rsp, 400).await;
    assert_eq!(problem["reason"], "missing_input");
}

#[tokio::test]
async fn build_errors_name_the_culprit() {
    let ok = || {
        service_fn(|_req: Request<Full<Bytes>>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
        })
    };
    let err = Aggregate::builder()
        .target("t", ok())
        .call(Call::new("a", "t").path("/a/{c.x}"))
        .call(Call::new("b", "t").path("/b/{a.x}"))
        .call(Call::new("c", "t").path("/c/{b.x}"))
        .build()
        .unwrap_err();
    assert_eq!(
        err,
        BuildError::Cycle {
            calls: vec!["a".into(), "c".into(), "b".into(), "a".into()]
        }
    );
    assert_eq!(
        err.to_string(),
        "dependency cycle between calls: a -> c -> b -> a"
    );

    let err = Aggregate::builder()
        .target("t", ok())
        .call(Call::new("a", "t").path("/a/{b.x}"))
        .call(Call::new("b", "t").set_header(HeaderName::from_static("x-a"), "{a.y}"))
        .build()
        .unwrap_err();
    assert!(matches!(err, BuildError::Cycle { ref calls } if calls == &["a", "b", "a"]));

    let err = Aggregate::builder()
        .target("t", ok())
        .call(Call::new("a", "t").path("/a/{usr.id}"))
        .build()
        .unwrap_err();
    assert_eq!(
        err,
        BuildError::UnknownReference {
            call: "a".into(),
            reference: "usr.id".into()
        }
    );

    let err = Aggregate::builder()
        .call(Call::new("a", "nowhere"))
        .build()
        .unwrap_err();
    assert_eq!(
        err,
        BuildError::UnknownTarget {
            call: "a".into(),
            target: "nowhere".into()
        }
    );

    let err = Aggregate::builder()
        .target("t", ok())
        .call(Call::new("a", "t"))
        .call(Call::new("a", "t"))
        .build()
        .unwrap_err();
    assert_eq!(err, BuildError::DuplicateCall { name: "a".into() });

    let err = Aggregate::builder()
        .target("t", ok())
        .call(Call::new("a", "t").path("/a/{params.id"))
        .build()
        .unwrap_err();
    assert!(
        matches!(err, BuildError::BadTemplate { ref call, .. } if call == "a"),
        "{err}"
    );

    let err = Aggregate::builder()
        .target("t", ok())
        .call(Call::new("a", "t").set_header(HeaderName::from_static("x"), "{header.bad name}"))
        .build()
        .unwrap_err();
    assert!(matches!(err, BuildError::BadTemplate { .. }), "{err}");

    let err = Aggregate::builder()
        .target("t", ok())
        .call(Call::new("a", "t").pick("data..x"))
        .build()
        .unwrap_err();
    assert_eq!(
        err,
        BuildError::BadPath {
            call: "a".into(),
            path: "data..x".into()
        }
    );

    for name in ["", "a.b", "params", "ünï"] {
        let err = Aggregate::builder()
            .target("t", ok())
            .call(Call::new(name, "t"))
            .build()
            .unwrap_err();
        assert!(
            matches!(err, BuildError::InvalidCallName { .. }),
            "{name:?}: {err}"
        );
    }

    let err = Aggregate::builder()
        .target("t", ok())
        .target("t", ok())
        .build()
        .unwrap_err();
    assert_eq!(err, BuildError::DuplicateTarget { name: "t".into() });

    let err = Aggregate::builder()
        .max_concurrent_calls(0)
        .build()
        .unwrap_err();
    assert!(matches!(err, BuildError::InvalidSetting(_)));
}
