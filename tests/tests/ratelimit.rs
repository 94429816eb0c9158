//! Rate limiting through the gateway (in-memory store): exact admission,
//! separate buckets, headers, several limits, missing keys, concurrency
//! limits, and buckets that survive a reload.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns panic by design

mod support;

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use support::{client, gateway, gateway_from_file};
use towergate::reload::{ReloadOutcome, reload_now};
use towergate_test::{assert_problem_reqwest, echo_router, spawn_upstream};

fn config(upstream: &str, route_extra: &str) -> String {
    format!(
        r#"listen: "127.0.0.1:0"
server: {{ trusted_proxies: ["127.0.0.1"] }}
routes:
  - name: api
    match: {{ path_prefix: "/" }}
    upstream: "{upstream}"
{route_extra}"#
    )
}

async fn statuses(c: &reqwest::Client, url: &str, headers: &[(&str, &str)], n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        let mut rb = c.get(url);
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        out.push(rb.send().await.unwrap().status().as_u16());
    }
    out
}

#[tokio::test]
async fn exact_admission_per_client_with_headers() {
    let echo = spawn_upstream(echo_router("echo")).await;
    let yaml = config(
        &echo.url(),
        "    rate_limit:\n      key: ip\n      legacy_headers: true\n      limits:\n        - { name: per-ip, rate: \"5/min\" }\n",
    );
    let (_gw, addr) = gateway(&yaml).await;
    let c = client();
    let url = format!("http://{addr}/x");
    // The client IP comes from X-Forwarded-For, since 127.0.0.1 is trusted.
    let a = statuses(&c, &url, &[("x-forwarded-for", "203.0.113.1")], 12).await;
    assert_eq!(a.iter().filter(|s| **s == 200).count(), 5, "{a:?}");
    assert_eq!(a.iter().filter(|s| **s == 429).count(), 7, "{a:?}");
    assert_eq!(&a[..5], &[200; 5], "the burst passes first");
    // Another client has its own bucket.
    let b = statuses(&c, &url, &[("x-forwarded-for", "203.0.113.2")], 6).await;
    assert_eq!(b.iter().filter(|s| **s == 200).count(), 5, "{b:?}");

    let ok = c
        .get(&url)
        .header("x-forwarded-for", "203.0.113.3")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.headers()["ratelimit-policy"], "\"per-ip\";q=5;w=60");
    assert_eq!(ok.headers()["ratelimit"], "\"per-ip\";r=4;t=12");
    assert_eq!(ok.headers()["x-ratelimit-limit"], "5");
    assert_eq!(ok.headers()["x-ratelimit-remaining"], "4");
    let refused = c
        .get(&url)
        .header("x-forwarded-for", "203.0.113.1")
        .send()
        .await
        .unwrap();
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=12).contains(&retry), "retry-after {retry}");
    let id = refused.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let v = assert_problem_reqwest(refused, 429).await;
    assert!(v["detail"].as_str().unwrap().contains("per-ip"), "{v}");
    // The refusal names the request, as every problem does.
    assert_eq!(v["instance"], id.as_str(), "{v}");
}

#[tokio::test]
async fn several_limits_and_missing_keys() {
    let echo = spawn_upstream(echo_router("echo")).await;
    let yaml = config(
        &echo.url(),
        r#"    rate_limit:
      key: "header:x-consumer"
      on_missing_key: 401
      limits:
        - { name: burst, rate: "100/s", burst: 3 }
        - { name: hourly, rate: "4/h" }
        - { name: route-wide, rate: "1000/min", key: route }
"#,
    );
    let (_gw, addr) = gateway(&yaml).await;
    let c = client();
    let url = format!("http://{addr}/x");
    let rsp = c.get(&url).send().await.unwrap();
    assert_problem_reqwest(rsp, 401).await;
    // The burst of 3 is the tightest at first ...
    let first = c
        .get(&url)
        .header("x-consumer", "acme")
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let rl = first.headers()["ratelimit"].to_str().unwrap().to_owned();
    assert!(rl.starts_with("\"burst\";r=2"), "{rl}");
    let policy = first.headers()["ratelimit-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    for name in ["burst", "hourly", "route-wide"] {
        assert!(policy.contains(&format!("\"{name}\"")), "{policy}");
    }
    // ... and after refilling, the hourly quota of 4 decides.
    let mut admitted = 1;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(40)).await;
        if c.get(&url)
            .header("x-consumer", "acme")
            .send()
            .await
            .unwrap()
            .status()
            == 200
        {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 4, "the hourly quota admits exactly 4");
    let refused = c
        .get(&url)
        .header("x-consumer", "acme")
        .send()
        .await
        .unwrap();
    assert!(
        refused.headers()["ratelimit"]
            .to_str()
            .unwrap()
            .starts_with("\"hourly\"")
    );
    assert_problem_reqwest(refused, 429).await;
    // Another consumer is unaffected.
    let other = c
        .get(&url)
        .header("x-consumer", "globex")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
}

/// An upstream whose `/slow` answers after `delay`.
async fn slow_upstream(delay: Duration) -> towergate_test::Upstream {
    spawn_upstream(Router::new().route(
        "/slow",
        get(move || async move {
            tokio::time::sleep(delay).await;
            "done"
        }),
    ))
    .await
}

/// `n` GETs of `url` in flight at once; each task ends with its status.
fn spawn_gets(c: &reqwest::Client, url: &str, n: usize) -> Vec<tokio::task::JoinHandle<u16>> {
    (0..n)
        .map(|_| {
            let (c, url) = (c.clone(), url.to_owned());
            tokio::spawn(async move { c.get(url).send().await.unwrap().status().as_u16() })
        })
        .collect()
}

#[tokio::test]
async fn concurrency_limit_answers_503_at_once() {
    let slow = slow_upstream(Duration::from_millis(800)).await;
    let yaml = config(
        &slow.url(),
        "    concurrency: { max: 2, retry_after: \"2s\" }\n",
    );
    let (_gw, addr) = gateway(&yaml).await;
    let c = client();
    let url = format!("http://{addr}/slow");
    let in_flight = spawn_gets(&c, &url, 2);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rsp = c.get(&url).send().await.unwrap();
    assert_eq!(rsp.headers()["retry-after"], "2");
    assert_problem_reqwest(rsp, 503).await;
    for t in in_flight {
        assert_eq!(t.await.unwrap(), 200);
    }
    // Slots are released.
    assert_eq!(c.get(&url).send().await.unwrap().status(), 200);
}

/// Requests in flight when a reload lands still count against the
/// route's (new) limit: a fresh counter would let in twice the limit.
#[tokio::test]
async fn the_concurrency_limit_counts_across_a_reload() {
    let slow = slow_upstream(Duration::from_millis(1_500)).await;
    let dir = std::env::temp_dir().join(format!("towergate-rl-conc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gateway.yaml");
    let yaml = config(&slow.url(), "    concurrency: { max: 2 }\n");
    std::fs::write(&path, &yaml).unwrap();
    let (gw, addr) = gateway_from_file(&path).await;
    let c = client();
    let url = format!("http://{addr}/slow");
    let in_flight = spawn_gets(&c, &url, 2);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The same limit, and then a higher one, reloaded while both run.
    std::fs::write(
        &path,
        format!(
            "{yaml}
"
        ),
    )
    .unwrap();
    assert!(matches!(reload(&path, &gw), ReloadOutcome::Applied { .. }));
    assert_problem_reqwest(c.get(&url).send().await.unwrap(), 503).await;
    std::fs::write(&path, yaml.replace("max: 2", "max: 3")).unwrap();
    assert!(matches!(reload(&path, &gw), ReloadOutcome::Applied { .. }));
    let third = spawn_gets(&c, &url, 1).remove(0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_problem_reqwest(c.get(&url).send().await.unwrap(), 503).await;
    for t in in_flight {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(third.await.unwrap(), 200);
    gw.shutdown().await;
}

/// Reloads `gw` from `path` now.
fn reload(path: &std::path::Path, gw: &towergate::RunningGateway) -> ReloadOutcome {
    reload_now(path, &gw.live())
}

/// A gateway started from a file (so that it can be reloaded), its one
/// route limited to 3 requests a minute per client; with the file's path
/// and text.
async fn three_a_minute_from_a_file(
    echo: &towergate_test::Upstream,
    name: &str,
) -> (towergate::RunningGateway, std::path::PathBuf, String) {
    let dir = std::env::temp_dir().join(format!("towergate-rl-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gateway.yaml");
    let yaml = config(
        &echo.url(),
        "    rate_limit:\n      limits:\n        - { name: per-ip, rate: \"3/min\" }\n",
    );
    std::fs::write(&path, &yaml).unwrap();
    let (gw, _) = gateway_from_file(&path).await;
    (gw, path, yaml)
}

#[tokio::test]
async fn buckets_survive_a_reload() {
    let echo = spawn_upstream(echo_router("echo")).await;
    let (gw, path, yaml) = three_a_minute_from_a_file(&echo, "reload").await;
    let addr = gw.local_addrs()[0];
    let c = client();
    let url = format!("http://{addr}/x");
    let s = statuses(&c, &url, &[], 4).await;
    assert_eq!(s, vec![200, 200, 200, 429]);
    // Reloading (here with an extra route) must not hand out a fresh burst.
    std::fs::write(
        &path,
        format!("{yaml}  - name: other\n    match: {{ path_prefix: \"/other/\" }}\n    upstream: \"{}\"\n", echo.url()),
    )
    .unwrap();
    assert!(matches!(reload(&path, &gw), ReloadOutcome::Applied { .. }));
    assert_eq!(statuses(&c, &url, &[], 1).await, vec![429]);
    // Nor with a new `max_keys`: the buckets move to a store of the new size.
    let resized = yaml.replacen("routes:", "rate_limiting: { max_keys: 5000 }\nroutes:", 1);
    std::fs::write(&path, &resized).unwrap();
    assert!(matches!(reload(&path, &gw), ReloadOutcome::Applied { .. }));
    assert_eq!(statuses(&c, &url, &[], 1).await, vec![429]);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_failed_reload_leaves_no_stale_buckets_behind() {
    // A reload that changes `max_keys` but fails on something else must not
    // keep the copy of the buckets it made: the live stack goes on spending
    // the old ones, and the next good reload must start from those.
    let echo = spawn_upstream(echo_router("echo")).await;
    let (gw, path, yaml) = three_a_minute_from_a_file(&echo, "stale").await;
    let addr = gw.local_addrs()[0];
    let c = client();
    let url = format!("http://{addr}/x");
    assert_eq!(statuses(&c, &url, &[], 1).await, vec![200]);
    let resized = yaml.replacen("routes:", "rate_limiting: { max_keys: 5000 }\nroutes:", 1);
    let broken = format!("{resized}  - name: broken\n    upstream: \"not a url\"\n");
    std::fs::write(&path, &broken).unwrap();
    assert!(matches!(reload(&path, &gw), ReloadOutcome::Rejected(_)));
    assert_eq!(statuses(&c, &url, &[], 2).await, vec![200, 200]);
    std::fs::write(&path, &resized).unwrap();
    assert!(matches!(reload(&path, &gw), ReloadOutcome::Applied { .. }));
    assert_eq!(statuses(&c, &url, &[], 1).await, vec![429]);
    gw.shutdown().await;
}

#[tokio::test]
async fn limits_before_auth_count_failed_logins() {
    // Guessing keys is limited per client address before authentication;
    // the per-consumer limit still runs after it, keyed by identity.
    let echo = spawn_upstream(echo_router("echo")).await;
    let yaml = format!(
        r#"listen: "127.0.0.1:0"
server: {{ trusted_proxies: ["127.0.0.1"] }}
auth_providers:
  keys:
    api_key:
      header: x-api-key
      keys:
        - {{ consumer: acme, key: "acme-key-0123456789" }}
        - {{ consumer: globex, key: "globex-key-0123456789" }}
routes:
  - name: api
    match: {{ path_prefix: "/" }}
    upstream: "{}"
    auth: {{ any_of: [keys] }}
    rate_limit:
      limits:
        - {{ name: attempts, rate: "4/min", key: ip, before_auth: true }}
        - {{ name: per-consumer, rate: "1/min", key: "identity:consumer" }}
"#,
        echo.url()
    );
    let (_gw, addr) = gateway(&yaml).await;
    let c = client();
    let url = format!("http://{addr}/x");
    let from = |ip: &'static str, key: &'static str| [("x-forwarded-for", ip), ("x-api-key", key)];
    // One client guesses: 4 answers of 401, then 429 without a key check.
    assert_eq!(
        statuses(&c, &url, &from("203.0.113.7", "guess-0123456789"), 5).await,
        [401, 401, 401, 401, 429]
    );
    let rsp = c
        .get(&url)
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-api-key", "acme-key-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(
        rsp.headers()["ratelimit"]
            .to_str()
            .unwrap()
            .split(';')
            .next(),
        Some("\"attempts\"")
    );
    assert_problem_reqwest(rsp, 429).await;
    // Another client: its own attempts bucket; acme's quota of 1 applies
    // after auth, and both limits are reported.
    let ok = c
        .get(&url)
        .header("x-forwarded-for", "203.0.113.8")
        .header("x-api-key", "acme-key-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    // One line per layer: a list split over two header lines.
    let policy: Vec<&str> = ok
        .headers()
        .get_all("ratelimit-policy")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    let policy = policy.join(", ");
    assert!(
        policy.contains("\"attempts\"") && policy.contains("\"per-consumer\""),
        "{policy}"
    );
    assert_eq!(
        statuses(&c, &url, &from("203.0.113.8", "acme-key-0123456789"), 1).await,
        [429]
    );
    assert_eq!(
        statuses(&c, &url, &from("203.0.113.8", "globex-key-0123456789"), 1).await,
        [200]
    );
}

#[test]
fn bad_rate_limit_config_names_its_path() {
    let cases = [
        ("rate: \"10\"", "routes[0].rate_limit.limits[0].rate"),
        (
            "rate: \"10/fortnight\"",
            "routes[0].rate_limit.limits[0].rate",
        ),
        (
            "rate: \"10/s\", key: \"cookie:x\"",
            "routes[0].rate_limit.limits[0].key",
        ),
        (
            "rate: \"10/s\", burst: 0",
            "routes[0].rate_limit.limits[0].burst",
        ),
        (
            "rate: \"10/s\", key: \"identity:sub\", before_auth: true",
            "routes[0].rate_limit.limits[0].before_auth",
        ),
        (
            "rate: \"10/s\", key: [ip, \"identity:consumer\"], before_auth: true",
            "routes[0].rate_limit.limits[0].before_auth",
        ),
        (
            "rate: \"10/s\" }\n        - { rate: \"10/s\", before_auth: true",
            "routes[0].rate_limit.limits[1].name",
        ),
        // No `auth` on the route: no request has an identity.
        (
            "rate: \"10/s\", key: \"identity:sub\"",
            "routes[0].rate_limit.limits[0].key",
        ),
    ];
    for (limit, path) in cases {
        let yaml = config(
            "http://127.0.0.1:1",
            &format!("    rate_limit:\n      limits:\n        - {{ {limit} }}\n"),
        );
        let cfg = towergate::config::parse_str(&yaml, towergate::config::Format::Yaml).unwrap();
        let e = towergate::stack::compile(&cfg).unwrap_err();
        assert!(e.has_path(path), "{limit}: {e}");
    }
    let yaml = config(
        "http://127.0.0.1:1",
        "    rate_limit: { key: \"identity:consumer\", limits: [{ rate: \"10/s\" }] }\n",
    );
    let cfg = towergate::config::parse_str(&yaml, towergate::config::Format::Yaml).unwrap();
    let e = towergate::stack::compile(&cfg).unwrap_err();
    assert!(e.has_path("routes[0].rate_limit.key"), "{e}");
    let yaml = config("http://127.0.0.1:1", "    concurrency: { max: 0 }\n");
    let cfg = towergate::config::parse_str(&yaml, towergate::config::Format::Yaml).unwrap();
    assert!(
        towergate::stack::compile(&cfg)
            .unwrap_err()
            .has_path("routes[0].concurrency.max")
    );
}
