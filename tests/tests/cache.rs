//! Response caching through the assembled gateway: hits never reach the
//! upstream, per-user responses stay apart, writes invalidate, the admin
//! API purges, a reload that changes a route's cache settings purges it,
//! and the metrics count what the cache did.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns panic by design

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::Request;
use axum::routing::get;
use serde_json::{Value, json};
use support::{client, gateway_from_file};

/// An upstream that counts its requests and answers per path.
async fn counting() -> (towergate_test::Upstream, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let app = Router::new().fallback(
        get(move |req: Request| {
            let n = c.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                let path = req.uri().path().to_owned();
                let cc = if path.starts_with("/private") {
                    "private, max-age=60"
                } else {
                    "max-age=60"
                };
                (
                    [("cache-control", cc)],
                    axum::Json(json!({"path": path, "n": n,
                    "user": req.headers().get("x-user").map(|v| v.to_str().unwrap().to_owned())})),
                )
            }
        })
        .post(|| async { "written" }),
    );
    (towergate_test::spawn_upstream(app).await, count)
}

fn config(url: &str, ttl: &str) -> String {
    format!(
        r#"listen: "127.0.0.1:0"
cache: {{ max_size: "8MB", max_entry_size: "256KB" }}
routes:
  - name: items
    match: {{ path_prefix: "/" }}
    upstream: "{url}"
    cache: {{ ttl: "{ttl}", key: {{ query: [page] }} }}
"#
    )
}

async fn get_json(c: &reqwest::Client, url: &str, auth: Option<&str>) -> (Value, String) {
    let mut req = c.get(url);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let rsp = req.send().await.unwrap();
    assert_eq!(rsp.status(), 200);
    let status = rsp
        .headers()
        .get("cache-status")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (rsp.json().await.unwrap(), status)
}

#[tokio::test]
async fn hits_skip_the_upstream_and_writes_and_purges_invalidate() {
    let (up, count) = counting().await;
    let (gw, addr) = support::gateway(&config(&up.url(), "30s")).await;
    let c = client();
    let base = format!("http://{addr}");

    let (a, s1) = get_json(&c, &format!("{base}/items/1?page=2&utm=x"), None).await;
    let (b, s2) = get_json(&c, &format!("{base}/items/1?utm=y&page=2"), None).await;
    assert_eq!(a, b, "the second answer is the stored one");
    assert_eq!(count.load(Ordering::SeqCst), 1);
    assert!(s1.contains("fwd=") && s1.contains("stored"), "{s1}");
    assert!(s2.contains("hit"), "{s2}");
    // Another page is another entry.
    get_json(&c, &format!("{base}/items/1?page=3"), None).await;
    assert_eq!(count.load(Ordering::SeqCst), 2);

    // `private` answers and requests with credentials are not shared.
    get_json(&c, &format!("{base}/private/x"), None).await;
    get_json(&c, &format!("{base}/private/x"), None).await;
    assert_eq!(count.load(Ordering::SeqCst), 4);
    get_json(&c, &format!("{base}/mine"), Some("Bearer a")).await;
    get_json(&c, &format!("{base}/mine"), Some("Bearer b")).await;
    assert_eq!(count.load(Ordering::SeqCst), 6);

    // A successful POST invalidates the entry for its URL.
    let rsp = c
        .post(format!("{base}/items/1?page=2"))
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    let before = count.load(Ordering::SeqCst);
    get_json(&c, &format!("{base}/items/1?page=2"), None).await;
    assert_eq!(count.load(Ordering::SeqCst), before + 1);
    get_json(&c, &format!("{base}/items/1?page=2"), None).await;
    assert_eq!(count.load(Ordering::SeqCst), before + 1);

    // The admin API purges by prefix and by route.
    let admin = towergate::admin::start(
        "127.0.0.1:0".parse().unwrap(),
        towergate::admin::AdminState {
            live: gw.live(),
            config_path: None,
            token: None,
        },
    )
    .await
    .unwrap();
    let purge = |body: Value| {
        c.post(format!("http://{}/admin/cache/purge", admin.addr))
            .json(&body)
            .send()
    };
    let v: Value = purge(json!({"prefix": "/items/"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["purged"], 2, "{v}");
    get_json(&c, &format!("{base}/items/1?page=2"), None).await;
    assert_eq!(count.load(Ordering::SeqCst), before + 2);
    let v: Value = purge(json!({"route": "items"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(v["purged"].as_u64().unwrap() >= 1, "{v}");
    let rsp = purge(json!({"nonsense": 1})).await.unwrap();
    assert_eq!(rsp.status(), 400);

    // The metrics say what happened, per route.
    let page = c
        .get(format!("http://{}/metrics", admin.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("towergate_cache_requests_total{route=\"items\",result=\"hit\"}"),
        "{page}"
    );
    assert!(
        page.contains("towergate_cache_requests_total{route=\"items\",result=\"miss\"}"),
        "{page}"
    );
    assert!(page.contains("towergate_cache_size_bytes"), "{page}");
    admin.stop();
}

#[tokio::test]
async fn concurrent_misses_make_one_upstream_request() {
    let count = Arc::new(AtomicUsize::new(0));
    let c2 = count.clone();
    let app = Router::new().fallback(get(move || {
        c2.fetch_add(1, Ordering::SeqCst);
        async {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            ([("cache-control", "max-age=60")], "slow and shared")
        }
    }));
    let up = towergate_test::spawn_upstream(app).await;
    let (_gw, addr) = support::gateway(&config(&up.url(), "30s")).await;
    let c = client();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move {
                c.get(format!("http://{addr}/hot"))
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap()
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), "slow and shared");
    }
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_reload_that_changes_cache_settings_purges_the_route() {
    let (up, count) = counting().await;
    let dir = std::env::temp_dir().join(format!("tg-cache-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gw.yaml");
    std::fs::write(&path, config(&up.url(), "30s")).unwrap();
    let (gw, addr) = gateway_from_file(&path).await;
    let c = client();
    let url = format!("http://{addr}/items/9");
    get_json(&c, &url, None).await;
    get_json(&c, &url, None).await;
    assert_eq!(count.load(Ordering::SeqCst), 1);
    // Same settings: entries survive the reload.
    std::fs::write(&path, config(&up.url(), "30s")).unwrap();
    let out = towergate::reload::reload_now(&path, &gw.live());
    assert!(
        matches!(out, towergate::reload::ReloadOutcome::Applied { .. }),
        "{out:?}"
    );
    get_json(&c, &url, None).await;
    assert_eq!(count.load(Ordering::SeqCst), 1);
    // Changed settings: the route's entries go.
    std::fs::write(&path, config(&up.url(), "45s")).unwrap();
    let out = towergate::reload::reload_now(&path, &gw.live());
    assert!(
        matches!(out, towergate::reload::ReloadOutcome::Applied { .. }),
        "{out:?}"
    );
    get_json(&c, &url, None).await;
    assert_eq!(count.load(Ordering::SeqCst), 2);
    // A credential header sent upstream decides what an entry holds too,
    // though `/admin/config` shows it redacted: a new value purges.
    let with_key = |key: &str| {
        format!(
            "{}    request_headers: {{ set: {{ X-Api-Key: \"{key}\" }} }}\n",
            config(&up.url(), "45s")
        )
    };
    for (key, upstream_calls) in [("key-1", 3), ("key-1", 3), ("key-2", 4)] {
        std::fs::write(&path, with_key(key)).unwrap();
        let out = towergate::reload::reload_now(&path, &gw.live());
        assert!(
            matches!(out, towergate::reload::ReloadOutcome::Applied { .. }),
            "{out:?}"
        );
        get_json(&c, &url, None).await;
        assert_eq!(count.load(Ordering::SeqCst), upstream_calls, "{key}");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn authenticated_answers_are_never_shared_between_callers() {
    let (up, count) = counting().await;
    let (_gw, addr) = support::gateway(&format!(
        r#"listen: "127.0.0.1:0"
auth_providers:
  keys:
    api_key:
      keys:
        - {{ consumer: alice, key: "alice-key-0123456789" }}
        - {{ consumer: bob, key: "bob-key-0123456789ab" }}
routes:
  - name: shared-by-mistake
    match: {{ path_prefix: "/plain/" }}
    upstream: "{url}"
    auth: {{ any_of: [keys], strip_credentials: true }}
    cache: {{ ttl: "30s" }}
  - name: per-caller
    match: {{ path_prefix: "/mine/" }}
    upstream: "{url}"
    auth: {{ any_of: [keys], identity_headers: {{ consumer: x-user }}, strip_credentials: true }}
    cache: {{ ttl: "30s", key: {{ identity: consumer }} }}
"#,
        url = up.url()
    ))
    .await;
    let c = client();
    let get = |path: &str, key: &'static str| {
        c.get(format!("http://{addr}{path}"))
            .header("x-api-key", key)
            .send()
    };
    // Credentials stripped and sent as an API key: the cache still knows
    // the request was authenticated, and does not share the answer.
    for key in [
        "alice-key-0123456789",
        "bob-key-0123456789ab",
        "alice-key-0123456789",
    ] {
        assert_eq!(get("/plain/x", key).await.unwrap().status(), 200);
    }
    assert_eq!(count.load(Ordering::SeqCst), 3);
    // Keyed by the caller: one entry each, never crossed.
    let before = count.load(Ordering::SeqCst);
    for (key, user) in [
        ("alice-key-0123456789", "alice"),
        ("bob-key-0123456789ab", "bob"),
        ("alice-key-0123456789", "alice"),
        ("bob-key-0123456789ab", "bob"),
    ] {
        let v: Value = get("/mine/x", key).await.unwrap().json().await.unwrap();
        assert_eq!(v["user"], user, "{v}");
    }
    assert_eq!(count.load(Ordering::SeqCst), before + 2);
}

/// An upstream behind a load balancer: it builds links from the forwarded
/// host, serves the path `X-Original-URL` names, and answers per API key,
/// which it checks itself. Counts requests.
async fn links_and_tenants() -> (towergate_test::Upstream, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let app = Router::new().fallback(get(move |req: Request| {
        c.fetch_add(1, Ordering::SeqCst);
        let h = |name: &str| {
            req.headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default()
        };
        // The path served: `X-Original-URL`'s when there is one (IIS,
        // Symfony, Zend).
        let served = match h("x-original-url") {
            url if url.is_empty() => req.uri().path().to_owned(),
            url => url,
        };
        let body = format!(
            "<a href=\"//{}/next\"> tenant [{}] serving {served}",
            h("x-forwarded-host"),
            h("x-api-key")
        );
        async move { ([("cache-control", "max-age=60")], body) }
    }));
    (towergate_test::spawn_upstream(app).await, count)
}

/// A gateway with one cached route on `path` to `upstream`, its peer
/// (127.0.0.1) a trusted proxy or not.
async fn cached_route(
    upstream: &str,
    path: &str,
    trusted: bool,
) -> (towergate::RunningGateway, std::net::SocketAddr) {
    let server = if trusted {
        r#"server: { trusted_proxies: ["127.0.0.1"] }"#
    } else {
        ""
    };
    support::gateway(&format!(
        r#"listen: "127.0.0.1:0"
{server}
routes:
  - name: cached
    match: {{ path: "{path}" }}
    upstream: "{upstream}"
    cache: {{ ttl: "30s" }}
"#
    ))
    .await
}

#[tokio::test]
async fn a_trusted_proxys_forwarded_host_cannot_poison_the_cache() {
    for trusted in [true, false] {
        let (up, count) = links_and_tenants().await;
        let (_gw, addr) = cached_route(&up.url(), "/catalog", trusted).await;
        let c = client();
        let links = |forwarded_host: &'static str| {
            let req = c
                .get(format!("http://{addr}/catalog"))
                .header("host", "shop.example")
                .header("x-forwarded-host", forwarded_host);
            async move { req.send().await.unwrap().text().await.unwrap() }
        };
        let evil = links("evil.example").await;
        let good = links("shop.example").await;
        if trusted {
            // The load balancer's header reaches the upstream: one entry
            // per forwarded host, and shop.example's links stay its own.
            assert!(evil.contains("//evil.example/"), "{evil}");
            assert!(good.contains("//shop.example/"), "{good}");
            assert_eq!(count.load(Ordering::SeqCst), 2);
        } else {
            // Anyone else's is replaced by the `Host`: one entry for all.
            assert!(evil.contains("//shop.example/"), "{evil}");
            assert_eq!(good, evil);
            assert_eq!(count.load(Ordering::SeqCst), 1);
        }
    }
}

#[tokio::test]
async fn a_trusted_proxys_original_url_cannot_poison_the_cache() {
    for trusted in [true, false] {
        let (up, count) = links_and_tenants().await;
        let (_gw, addr) = cached_route(&up.url(), "/public", trusted).await;
        let c = client();
        let page = |original_url: Option<&'static str>| {
            let mut req = c.get(format!("http://{addr}/public"));
            if let Some(url) = original_url {
                req = req.header("x-original-url", url);
            }
            async move { req.send().await.unwrap().text().await.unwrap() }
        };
        let admin = page(Some("/admin/report")).await;
        let public = page(None).await;
        if trusted {
            // The load balancer's header reaches the upstream, which serves
            // that path: its answer is not stored as `/public`'s.
            assert!(admin.ends_with("serving /admin/report"), "{admin}");
            assert!(public.ends_with("serving /public"), "{public}");
            assert_eq!(count.load(Ordering::SeqCst), 2);
        } else {
            // Anyone else's is removed: one entry for all.
            assert!(admin.ends_with("serving /public"), "{admin}");
            assert_eq!(public, admin);
            assert_eq!(count.load(Ordering::SeqCst), 1);
        }
    }
}

#[tokio::test]
async fn an_api_key_the_upstream_checks_is_not_shared() {
    let (up, count) = links_and_tenants().await;
    let (_gw, addr) = support::gateway(&config(&up.url(), "30s")).await;
    let c = client();
    let url = format!("http://{addr}/reports");
    let a = c.get(&url).header("x-api-key", "tenant-a").send().await;
    let a = a.unwrap().text().await.unwrap();
    assert!(a.contains("tenant [tenant-a]"), "{a}");
    // An anonymous caller is not served tenant A's report.
    let anon = c.get(&url).send().await.unwrap().text().await.unwrap();
    assert!(anon.contains("tenant []"), "{anon}");
    assert_eq!(count.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn the_gateways_own_api_key_does_not_keep_answers_private() {
    let (up, count) = links_and_tenants().await;
    let (_gw, addr) = support::gateway(&format!(
        r#"listen: "127.0.0.1:0"
routes:
  - name: service-key
    match: {{ path: "/service" }}
    upstream: "{url}"
    request_headers: {{ set: {{ X-Api-Key: "gateway-key" }} }}
    cache: {{ ttl: "30s" }}
  - name: copied-key
    match: {{ path: "/copied" }}
    upstream: "{url}"
    request_headers: {{ set: {{ X-Api-Key: "{{header.x-client-key}}" }} }}
    cache: {{ ttl: "30s" }}
"#,
        url = up.url()
    ))
    .await;
    let c = client();
    let get = |path: &str, key: &'static str| {
        c.get(format!("http://{addr}{path}"))
            .header("x-client-key", key)
            .send()
    };
    // One literal value for every caller: shared, whatever callers send.
    for key in ["a", "b"] {
        let body = get("/service", key).await.unwrap().text().await.unwrap();
        assert!(body.contains("tenant [gateway-key]"), "{body}");
    }
    assert_eq!(count.load(Ordering::SeqCst), 1);
    // A template copies the caller's key: each its own answer.
    for key in ["a", "b"] {
        let body = get("/copied", key).await.unwrap().text().await.unwrap();
        assert!(body.contains(&format!("tenant [{key}]")), "{body}");
    }
    assert_eq!(count.load(Ordering::SeqCst), 3);
}
