//! Observability through the assembled gateway: request ids, metrics after a
//! known sequence of requests (scraped from the admin server), and the JSON
//! access log with no secrets in it.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns panic by design

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::{client, gateway_from_file};
use towergate::admin::{AdminState, start};
use towergate_test::{echo_router, spawn_upstream};

/// The value of the sample `name{labels}` in a metrics page (labels given
/// in the page's order), or 0.
fn sample(page: &str, name_and_labels: &str) -> f64 {
    page.lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_request_ids_and_access_log() {
    let echo = spawn_upstream(echo_router("echo")).await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("towergate-observe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("access.log");
    let _ = std::fs::remove_file(&log);
    let yaml = format!(
        r#"listen: "127.0.0.1:0"
observability:
  access_log: {{ enabled: true, sink: "{log}", keep_query: [page] }}
auth_providers:
  keys: {{ api_key: {{ keys: [{{ consumer: acme, key: "acme-key-0123456789" }}] }} }}
routes:
  - name: open
    match: {{ path_prefix: "/open/" }}
    upstream: "{up}"
  - name: private
    match: {{ path_prefix: "/private/" }}
    upstream: "{up}"
    auth: {{ any_of: [keys] }}
  - name: limited
    match: {{ path_prefix: "/limited/" }}
    upstream: "{up}"
    rate_limit: {{ limits: [{{ name: tiny, rate: "1/h" }}] }}
  - name: broken
    match: {{ path_prefix: "/broken/" }}
    upstream: "http://{dead}"
"#,
        log = log.display(),
        up = echo.url(),
    );
    let (gw, addr) = support::gateway(&yaml).await;
    let admin = start(
        "127.0.0.1:0".parse().unwrap(),
        AdminState {
            live: gw.live(),
            config_path: None,
            token: None,
        },
    )
    .await
    .unwrap();
    let c = client();
    let base = format!("http://{addr}");

    // Request ids: generated, kept when valid, replaced when not; the
    // upstream and the response agree.
    let rsp = c.get(format!("{base}/open/a")).send().await.unwrap();
    let id = rsp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let v: Value = rsp.json().await.unwrap();
    assert_eq!(v["headers"]["x-request-id"][0], id.as_str());
    let rsp = c
        .get(format!("{base}/open/b"))
        .header("x-request-id", "client-id-1")
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.headers()["x-request-id"], "client-id-1");
    let rsp = c
        .get(format!("{base}/open/c"))
        .header("x-request-id", "bad id with spaces")
        .send()
        .await
        .unwrap();
    assert_ne!(rsp.headers()["x-request-id"], "bad id with spaces");

    // A known sequence: 3 more 200s (one with secrets), a 401, a 200 and a
    // 429 on the limited route, a 502, an unrouted 404.
    for _ in 0..2 {
        assert_eq!(
            c.get(format!("{base}/open/x"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    let rsp = c
        .get(format!(
            "{base}/private/x?page=2&api_key=acme-key-0123456789&token=tok-secret-42"
        ))
        .header("x-api-key", "acme-key-0123456789")
        .header("authorization", "Bearer bearer-secret-43")
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    assert_eq!(
        c.get(format!("{base}/private/x"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        c.get(format!("{base}/limited/x"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(format!("{base}/limited/x"))
            .send()
            .await
            .unwrap()
            .status(),
        429
    );
    assert_eq!(
        c.get(format!("{base}/broken/x"))
            .send()
            .await
            .unwrap()
            .status(),
        502
    );
    assert_eq!(
        c.get(format!("{base}/nowhere"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    let page = c
        .get(format!("http://{}/metrics", admin.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let req = |route: &str, class: &str| {
        sample(
            &page,
            &format!("towergate_http_requests_total{{route=\"{route}\",status_class=\"{class}\"}}"),
        )
    };
    assert_eq!(req("open", "2xx"), 5.0, "{page}");
    assert_eq!(req("private", "2xx"), 1.0);
    assert_eq!(req("private", "4xx"), 1.0);
    assert_eq!(req("limited", "2xx"), 1.0);
    assert_eq!(req("limited", "4xx"), 1.0);
    assert_eq!(req("broken", "5xx"), 1.0);
    // The upstream of `broken` gave no answer: a failed call, not a 5xx of
    // its own (the 502 is the gateway's).
    let upstream = |class: &str| {
        sample(
            &page,
            &format!(
                "towergate_upstream_requests_total{{upstream=\"{dead}\",status_class=\"{class}\"}}"
            ),
        )
    };
    assert_eq!(upstream("error"), 1.0, "{page}");
    assert_eq!(upstream("5xx"), 0.0, "{page}");
    assert_eq!(req("(none)", "4xx"), 1.0);
    assert!(
        page.contains("towergate_auth_failures_total{reason=\"missing_credentials\"} 1"),
        "{page}"
    );
    assert!(
        page.contains("towergate_ratelimit_rejections_total{limit=\"tiny\"} 1"),
        "{page}"
    );
    assert!(
        page.contains("towergate_http_requests_in_flight 0"),
        "{page}"
    );
    assert!(
        !page.contains("/open/x") && !page.contains("acme"),
        "raw paths or ids in labels"
    );

    // The access log: one JSON line per request, no secrets.
    let deadline = Instant::now() + Duration::from_secs(10);
    let lines = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if lines.len() >= 11 || Instant::now() > deadline {
            break (text, lines);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (text, lines) = lines;
    assert_eq!(lines.len(), 11, "{text}");
    for secret in ["acme-key-0123456789", "tok-secret-42", "bearer-secret-43"] {
        assert!(!text.contains(secret), "secret {secret} in the access log");
    }
    let private = lines
        .iter()
        .find(|l| l["route"] == "private" && l["status"] == 200)
        .unwrap();
    assert_eq!(private["path"], "/private/x?page=2");
    assert_eq!(private["consumer"], "acme");
    assert_eq!(private["method"], "GET");
    assert_eq!(private["client"], "127.0.0.1");
    for field in ["ts", "request_id", "latency_ms", "bytes_out", "upstream"] {
        assert!(private.get(field).is_some(), "{field} missing: {private}");
    }
    let first = lines
        .iter()
        .find(|l| l["request_id"] == id.as_str())
        .unwrap();
    assert_eq!(first["route"], "open");
    admin.stop();
    gw.shutdown().await;
}

#[tokio::test]
async fn a_relative_access_log_path_is_the_config_files_directorys() {
    let echo = spawn_upstream(echo_router("echo")).await;
    let dir = std::env::temp_dir().join(format!("towergate-relative-log-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    let path = dir.join("gateway.yaml");
    std::fs::write(
        &path,
        format!(
            "listen: \"127.0.0.1:0\"\nobservability:\n  access_log: {{ enabled: true, sink: \"logs/relative.log\" }}\nroutes:\n  - name: r\n    match: {{ path_prefix: \"/\" }}\n    upstream: \"{}\"\n",
            echo.url()
        ),
    )
    .unwrap();
    let (gw, addr) = gateway_from_file(&path).await;
    let rsp = client()
        .get(format!("http://{addr}/relative"))
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    let live = gw.live();
    gw.shutdown().await;
    live.registry()
        .flush_access_log(std::time::Duration::from_secs(2));
    let text = std::fs::read_to_string(dir.join("logs/relative.log")).unwrap();
    assert!(text.contains("/relative"), "{text}");
}

#[tokio::test]
async fn observation_can_be_switched_off() {
    let echo = spawn_upstream(echo_router("echo")).await;
    let (gw, addr) = support::gateway(&format!(
        "listen: \"127.0.0.1:0\"\nobservability: {{ enabled: false }}\nroutes:\n  - name: quiet\n    match: {{ path_prefix: \"/\" }}\n    upstream: \"{}\"\n",
        echo.url()
    ))
    .await;
    let rsp = client()
        .get(format!("http://{addr}/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    assert!(rsp.headers().get("x-request-id").is_none());
    let page = gw.live().registry().metrics().encode();
    assert_eq!(
        sample(
            &page,
            "towergate_http_requests_total{route=\"quiet\",status_class=\"2xx\"}"
        ),
        0.0,
        "{page}"
    );
}

#[tokio::test]
async fn b3_is_continued_when_the_configuration_asks() {
    // A Zipkin-instrumented client sends `b3`, no `traceparent`; the
    // request is not sampled (ratio 0, and the client said 0).
    let echo = spawn_upstream(echo_router("echo")).await;
    let trace_id = "80f198ee56343ba864fe8b2a57d3eff7";
    let b3 = format!("{trace_id}-e457b5a2e4d86bd1-0");
    for (enabled, continued) in [(true, true), (false, false)] {
        let yaml = format!(
            r#"listen: "127.0.0.1:0"
observability:
  tracing: {{ otlp_endpoint: "http://127.0.0.1:1", sample_ratio: 0, b3: {enabled} }}
routes:
  - name: traced
    match: {{ path_prefix: "/" }}
    upstream: "{}"
"#,
            echo.url()
        );
        let (gw, addr) = support::gateway(&yaml).await;
        let v = support::get_json(&format!("http://{addr}/x"), &[("b3", &b3)]).await;
        let tp = v["headers"]["traceparent"][0].as_str().unwrap();
        let sent_b3 = v["headers"]["b3"][0].as_str().unwrap();
        if continued {
            // The client's trace, not sampled, a new span id; `b3` too.
            assert_eq!(&tp[3..35], trace_id, "{tp}");
            assert!(tp.ends_with("-00"), "{tp}");
            assert!(sent_b3.starts_with(trace_id) && sent_b3 != b3, "{sent_b3}");
        } else {
            // Not read: a new trace; the client's `b3` passes untouched.
            assert_ne!(&tp[3..35], trace_id, "{tp}");
            assert_eq!(sent_b3, b3);
        }
        gw.shutdown().await;
    }
}

/// `generate_request_id: false`: metrics still count, a kept incoming id
/// still goes on both ways, and a request without one gets none.
#[tokio::test]
async fn request_ids_can_be_left_ungenerated() {
    let echo = spawn_upstream(echo_router("echo")).await;
    let (gw, addr) = support::gateway(&format!(
        "listen: \"127.0.0.1:0\"\nobservability: {{ generate_request_id: false }}\nroutes:\n  - name: counted\n    match: {{ path_prefix: \"/\" }}\n    upstream: \"{}\"\n",
        echo.url()
    ))
    .await;
    let get = |id: Option<&'static str>| {
        let mut req = client().get(format!("http://{addr}/x"));
        if let Some(id) = id {
            req = req.header("x-request-id", id);
        }
        req.send()
    };
    let rsp = get(None).await.unwrap();
    assert_eq!(rsp.status(), 200);
    assert!(rsp.headers().get("x-request-id").is_none());
    let echoed: Value = rsp.json().await.unwrap();
    assert!(echoed["headers"].get("x-request-id").is_none(), "{echoed}");

    let rsp = get(Some("lb-1234")).await.unwrap();
    assert_eq!(rsp.headers()["x-request-id"], "lb-1234");
    let echoed: Value = rsp.json().await.unwrap();
    assert_eq!(echoed["headers"]["x-request-id"][0], "lb-1234");

    let page = gw.live().registry().metrics().encode();
    assert_eq!(
        sample(
            &page,
            "towergate_http_requests_total{route=\"counted\",status_class=\"2xx\"}"
        ),
        2.0,
        "{page}"
    );
    gw.shutdown().await;
}
