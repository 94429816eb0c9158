//! `RateLimitLayer` embedded in an axum `Router`, served on a real socket.

// Helpers outside #[test] fns are test code too.
#![allow(clippy::unwrap_used)]

use axum::Router;
use axum::routing::get;
use http::HeaderName;
use tokio::task::JoinSet;
use towergate_ratelimit::{Key, Limit, RateLimitLayer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_router_over_a_real_socket() {
    let layer = RateLimitLayer::builder()
        .limit(Limit::per_minute(3).name("per-key"))
        .key(Key::header(HeaderName::from_static("x-api-key")))
        .build()
        .unwrap();
    let app = Router::new()
        .route("/hello", get(|| async { "hello" }))
        .layer(layer);
    let server = towergate_test::spawn_upstream(app).await;
    let url = format!("{}/hello", server.url());
    let client = reqwest::Client::new();

    // Ten concurrent requests per key, two keys: exactly the burst of each
    // key passes, and one key's traffic does not touch the other's bucket.
    let mut requests = JoinSet::new();
    for key in ["alice", "bob"] {
        for _ in 0..10 {
            let (client, url) = (client.clone(), url.clone());
            requests.spawn(async move {
                let rsp = client
                    .get(url)
                    .header("x-api-key", key)
                    .send()
                    .await
                    .unwrap();
                (key, rsp)
            });
        }
    }
    let mut passed = std::collections::HashMap::new();
    while let Some(done) = requests.join_next().await {
        let (key, rsp) = done.unwrap();
        assert!(rsp.headers().contains_key("ratelimit-policy"));
        assert!(rsp.headers().contains_key("ratelimit"));
        match rsp.status().as_u16() {
            200 => {
                *passed.entry(key).or_insert(0) += 1;
                assert_eq!(rsp.text().await.unwrap(), "hello");
            }
            429 => {
                assert_eq!(rsp.headers()["retry-after"], "20");
                let body = towergate_test::assert_problem_reqwest(rsp, 429).await;
                assert_eq!(body["limit"], "per-key");
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(passed.get("alice"), Some(&3));
    assert_eq!(passed.get("bob"), Some(&3));

    // No key: refused by default with 400.
    let rsp = client.get(&url).send().await.unwrap();
    towergate_test::assert_problem_reqwest(rsp, 400).await;
}
