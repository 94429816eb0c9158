//! Aggregate routes through the assembled gateway: one request, several
//! upstream calls (a balanced pool among them) in parallel, dependent
//! calls, the caller's identity in templates, partial answers, required
//! calls failing, and auth applied once at the front.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns panic by design

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::Path;
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use support::{client, gateway};
use towergate_test::{assert_problem_reqwest, spawn_upstream};

const SECRET: &str = "an aggregate test secret of 32+ bytes!!";

fn token(sub: &str) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": sub, "exp": exp}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

struct Services {
    users: [towergate_test::Upstream; 2],
    orders: towergate_test::Upstream,
    notifications: towergate_test::Upstream,
    calls: Arc<AtomicUsize>,
}

async fn services() -> Services {
    let calls = Arc::new(AtomicUsize::new(0));
    let users = |instance: &'static str, calls: Arc<AtomicUsize>| {
        Router::new().route(
            "/users/{id}",
            get(move |Path(id): Path<String>, headers: HeaderMap| {
                calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    if id == "ghost" {
                        return (axum::http::StatusCode::NOT_FOUND, Json(json!({"error": "no such user"})));
                    }
                    (
                        axum::http::StatusCode::OK,
                        Json(json!({
                            "id": id, "name": format!("User {id}"), "customer_id": 77,
                            "password_hash": "never shown", "instance": instance,
                            "saw_auth": headers.contains_key("authorization"),
                            "lang": headers.get("accept-language").map(|v| v.to_str().unwrap().to_owned()),
                        })),
                    )
                }
            }),
        )
    };
    let c = calls.clone();
    let orders = Router::new()
        .route(
            "/customers/{cid}/orders",
            get(move |Path(cid): Path<u64>| {
                c.fetch_add(1, Ordering::SeqCst);
                async move { Json(json!([{"id": 1, "customer": cid, "total": 10}, {"id": 2, "customer": cid, "total": 5}])) }
            }),
        );
    let c = calls.clone();
    let notifications = Router::new().route(
        "/inbox/{user}",
        get(move |Path(user): Path<String>| {
            c.fetch_add(1, Ordering::SeqCst);
            async move {
                if user == "slow" {
                    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
                }
                Json(json!({"user": user, "unread": 3}))
            }
        }),
    );
    Services {
        users: [
            spawn_upstream(users("u1", calls.clone())).await,
            spawn_upstream(users("u2", calls.clone())).await,
        ],
        orders: spawn_upstream(orders).await,
        notifications: spawn_upstream(notifications).await,
        calls,
    }
}

fn config(s: &Services, notifications: &str) -> String {
    format!(
        r#"listen: "127.0.0.1:0"
auth_providers:
  jwt: {{ jwt: {{ secret: "{SECRET}", algorithms: [HS256] }} }}
upstreams:
  users:
    endpoints: ["{}", "{}"]
    balance: round_robin
routes:
  - name: home
    match: {{ path: "/screens/home" }}
    auth: {{ any_of: [jwt], strip_credentials: true }}
    aggregate:
      deadline: "2s"
      calls:
        - name: user
          upstream: users
          path: "/users/{{identity.sub}}"
          pass_headers: [accept-language]
          deny: [password_hash]
          rename: {{ name: display_name }}
        - name: orders
          upstream: "{}"
          path: "/customers/{{user.customer_id}}/orders"
          allow: [id, total]
        - name: notifications
          upstream: "{notifications}"
          path: "/inbox/{{identity.sub}}"
          required: false
          timeout: "500ms"
          merge: true
          allow: [unread]
"#,
        s.users[0].url(),
        s.users[1].url(),
        s.orders.url(),
    )
}

#[tokio::test]
async fn one_request_three_services_merged() {
    let s = services().await;
    let (_gw, addr) = gateway(&config(&s, &s.notifications.url())).await;
    let c = client();
    let rsp = c
        .get(format!("http://{addr}/screens/home"))
        .bearer_auth(token("ada"))
        .header("accept-language", "fr")
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    assert!(rsp.headers().get("x-aggregate-partial").is_none());
    let v: Value = rsp.json().await.unwrap();
    assert_eq!(v["user"]["id"], "ada");
    assert_eq!(v["user"]["display_name"], "User ada");
    assert!(v["user"].get("password_hash").is_none(), "{v}");
    assert!(v["user"].get("name").is_none(), "{v}");
    assert_eq!(v["user"]["lang"], "fr");
    // Credentials were stripped at the front: the calls do not carry them.
    assert_eq!(v["user"]["saw_auth"], false);
    // A dependent call used the first answer's customer_id.
    assert_eq!(
        v["orders"],
        json!([{"id": 1, "total": 10}, {"id": 2, "total": 5}])
    );
    // Merged into the top level.
    assert_eq!(v["unread"], 3);
    assert_eq!(s.calls.load(Ordering::SeqCst), 3);

    // The users calls are balanced over the pool's two instances.
    let mut instances = std::collections::HashSet::new();
    for _ in 0..4 {
        let v: Value = c
            .get(format!("http://{addr}/screens/home"))
            .bearer_auth(token("ada"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        instances.insert(v["user"]["instance"].as_str().unwrap().to_owned());
    }
    assert_eq!(instances.len(), 2, "{instances:?}");

    // Auth applies once, at the front: no token, no upstream call.
    let before = s.calls.load(Ordering::SeqCst);
    let rsp = c
        .get(format!("http://{addr}/screens/home"))
        .send()
        .await
        .unwrap();
    assert_problem_reqwest(rsp, 401).await;
    assert_eq!(s.calls.load(Ordering::SeqCst), before);
}

#[tokio::test]
async fn partial_answers_and_required_failures() {
    let s = services().await;
    // The optional call's upstream is down.
    let (_gw, addr) = gateway(&config(&s, "http://127.0.0.1:1")).await;
    let c = client();
    let rsp = c
        .get(format!("http://{addr}/screens/home"))
        .bearer_auth(token("ada"))
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    assert_eq!(rsp.headers()["x-aggregate-partial"], "notifications");
    let v: Value = rsp.json().await.unwrap();
    assert_eq!(v["_partial"], json!(["notifications"]));
    assert_eq!(v["user"]["id"], "ada");

    // The optional call is slower than its timeout: left out, not waited for.
    let (_gw2, addr2) = gateway(&config(&s, &s.notifications.url())).await;
    let rsp = c
        .get(format!("http://{addr2}/screens/home"))
        .bearer_auth(token("slow"))
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    assert_eq!(rsp.headers()["x-aggregate-partial"], "notifications");

    // A required call answering 404 is passed on as a problem.
    let rsp = c
        .get(format!("http://{addr2}/screens/home"))
        .bearer_auth(token("ghost"))
        .send()
        .await
        .unwrap();
    let p = assert_problem_reqwest(rsp, 404).await;
    assert_eq!(p["call"], "user");
}

#[tokio::test]
async fn a_required_upstream_down_is_a_502_and_bad_plans_are_config_errors() {
    let s = services().await;
    let yaml = config(&s, &s.notifications.url()).replace(&s.orders.url(), "http://127.0.0.1:1");
    let (_gw, addr) = gateway(&yaml).await;
    let rsp = client()
        .get(format!("http://{addr}/screens/home"))
        .bearer_auth(token("ada"))
        .send()
        .await
        .unwrap();
    let p = assert_problem_reqwest(rsp, 502).await;
    assert_eq!(p["call"], "orders");

    for (calls, path) in [
        // A cycle.
        (
            r#"[{ name: a, upstream: "http://127.0.0.1:1", path: "/{b.x}" }, { name: b, upstream: "http://127.0.0.1:1", path: "/{a.x}" }]"#,
            "routes[0].aggregate.calls",
        ),
        // An unknown upstream.
        (
            r#"[{ name: a, upstream: nowhere, path: "/" }]"#,
            "routes[0].aggregate.calls[0].upstream",
        ),
        // A bad timeout.
        (
            r#"[{ name: a, upstream: "http://127.0.0.1:1", path: "/", timeout: soon }]"#,
            "routes[0].aggregate.calls[0].timeout",
        ),
    ] {
        let yaml = format!(
            "listen: \"127.0.0.1:0\"\nroutes:\n  - name: r\n    match: {{ path: \"/x\" }}\n    aggregate: {{ calls: {calls} }}\n"
        );
        let cfg = towergate::config::parse_str(&yaml, towergate::config::Format::Yaml).unwrap();
        let e = towergate::stack::compile(&cfg).unwrap_err();
        assert!(e.errors.iter().any(|e| e.path == path), "{calls}: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_run_concurrently_and_client_values_cannot_escape_their_segment() {
    // Three upstreams that each wait until all three calls are in flight:
    // with calls made one after another the barrier never opens and the
    // deadline answers 504 instead.
    let barrier = Arc::new(tokio::sync::Barrier::new(3));
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mk = |name: &'static str| {
        let barrier = barrier.clone();
        let seen = seen.clone();
        Router::new().fallback(move |req: axum::extract::Request| {
            let barrier = barrier.clone();
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(format!(
                    "{name} {} {}",
                    req.uri(),
                    req.headers()
                        .get("x-request-id")
                        .map(|v| v.to_str().unwrap())
                        .unwrap_or("-")
                ));
                barrier.wait().await;
                Json(json!({"from": name}))
            }
        })
    };
    let (a, b, c) = (
        spawn_upstream(mk("a")).await,
        spawn_upstream(mk("b")).await,
        spawn_upstream(mk("c")).await,
    );
    let (_gw, addr) = gateway(&format!(
        r#"listen: "127.0.0.1:0"
routes:
  - name: fan
    match: {{ path: "/fan" }}
    aggregate:
      deadline: "5s"
      calls:
        - {{ name: a, upstream: "{}", path: "/items/{{query.id}}" }}
        - {{ name: b, upstream: "{}", path: "/search?q={{query.q}}&limit=5" }}
        - {{ name: c, upstream: "{}", path: "/c" }}
"#,
        a.url(),
        b.url(),
        c.url()
    ))
    .await;
    // The client controls `id` and `q`; neither may add path segments,
    // climb directories or start a second query parameter.
    let rsp = client()
        .get(format!(
            "http://{addr}/fan?id=..%3Fx%3D1&q=a%26limit%3D9999%23frag"
        ))
        .header("x-request-id", "fan-out-1")
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    let v: Value = rsp.json().await.unwrap();
    assert_eq!(
        v,
        json!({"a": {"from": "a"}, "b": {"from": "b"}, "c": {"from": "c"}})
    );
    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    assert_eq!(
        seen,
        [
            "a /items/..%3Fx=1 fan-out-1",
            "b /search?q=a%26limit%3D9999%23frag&limit=5 fan-out-1",
            "c /c fan-out-1",
        ]
    );
}

#[tokio::test]
async fn a_separator_in_a_path_value_is_refused_before_any_call() {
    // `..%2Fadmin` escaped is still `../admin` to an upstream that decodes
    // `%2F` before routing; the gateway refuses it as its router would.
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let up = spawn_upstream(Router::new().fallback(move || {
        counted.fetch_add(1, Ordering::SeqCst);
        async { Json(json!({})) }
    }))
    .await;
    let (_gw, addr) = gateway(&format!(
        r#"listen: "127.0.0.1:0"
routes:
  - name: fan
    match: {{ path: "/fan" }}
    aggregate:
      calls:
        - {{ name: a, upstream: "{}", path: "/items/{{query.id}}" }}
"#,
        up.url()
    ))
    .await;
    for id in ["..%2Fadmin", "a%5Cb", "a%00b"] {
        let rsp = client()
            .get(format!("http://{addr}/fan?id={id}"))
            .send()
            .await
            .unwrap();
        let p = assert_problem_reqwest(rsp, 400).await;
        assert_eq!(p["reason"], "invalid_input", "{id}");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_required_call_that_times_out_is_a_504() {
    let slow = spawn_upstream(Router::new().fallback(|| async {
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        Json(json!({}))
    }))
    .await;
    let (_gw, addr) = gateway(&format!(
        r#"listen: "127.0.0.1:0"
upstreams:
  slow: {{ url: "{}", timeout: "200ms" }}
routes:
  - name: fan
    match: {{ path: "/fan" }}
    aggregate: {{ calls: [{{ name: slow, upstream: slow, path: "/" }}] }}
"#,
        slow.url()
    ))
    .await;
    let rsp = client()
        .get(format!("http://{addr}/fan"))
        .send()
        .await
        .unwrap();
    let p = assert_problem_reqwest(rsp, 504).await;
    assert_eq!(p["call"], "slow");
}
