//! Load balancing through the gateway: an upstream with several real
//! endpoints, one killed during a request loop (zero failed requests), its
//! return noticed by active health checks, weighted round-robin, consistent
//! hashing, a fast 503 when every endpoint is down, and streamed responses
//! and WebSocket tunnels counted in flight until they end.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns panic by design

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use support::{client, gateway};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use towergate_test::echo_router;
use towergate_test::tls::serve_io;

/// A server that can be killed with its open connections, and restarted
/// on the same port.
struct Killable {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Killable {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn killable(addr: SocketAddr, name: &'static str) -> Killable {
    let listener = TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = echo_router(name).route("/healthz", get(|| async { "ok" }));
    let task = tokio::spawn(async move {
        // Owned here: aborting the task drops the set, which aborts every
        // connection, as a crashed process would.
        let mut conns = JoinSet::new();
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let app: Router = app.clone();
            conns.spawn(serve_io(TokioIo::new(tcp), app));
        }
    });
    Killable { addr, task }
}

fn config(endpoints: &[String], extra: &str) -> String {
    let list = endpoints.join(", ");
    format!(
        r#"listen: "127.0.0.1:0"
upstreams:
  svc:
    endpoints: [{list}]
{extra}
routes:
  - name: svc
    match: {{ path_prefix: "/" }}
    upstream: svc
"#
    )
}

async fn service_of(
    c: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
) -> Result<String, u16> {
    let mut rb = c.get(url);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let rsp = rb.send().await.map_err(|_| 0u16)?;
    if rsp.status() != 200 {
        return Err(rsp.status().as_u16());
    }
    let v: Value = rsp.json().await.map_err(|_| 1u16)?;
    Ok(v["service"].as_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_endpoint_costs_no_request_and_comes_back() {
    let a = killable("127.0.0.1:0".parse().unwrap(), "a").await;
    let b = killable("127.0.0.1:0".parse().unwrap(), "b").await;
    let c_srv = killable("127.0.0.1:0".parse().unwrap(), "c").await;
    let eps: Vec<String> = [&a, &b, &c_srv]
        .iter()
        .map(|k| format!("\"http://{}\"", k.addr))
        .collect();
    // `failure` too: a GET in flight on a connection the kill resets is
    // safe to send again (idempotent), and must be, for zero failures.
    let yaml = config(
        &eps,
        r#"    balance: round_robin
    health_check: { path: /healthz, interval: "200ms", timeout: "150ms", healthy_threshold: 1, unhealthy_threshold: 1 }
    ejection: { consecutive_failures: 1, base_time: "300ms" }
    retry: { max_retries: 2, on: [connect, failure, 502, 503] }"#,
    );
    let (_gw, addr) = gateway(&yaml).await;
    let c = client();
    let url = format!("http://{addr}/x");
    let b_addr = b.addr;
    let mut failures = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut b = Some(b);
    for i in 0..300 {
        if i == 100 {
            drop(b.take()); // killed mid-loop, connections and all
        }
        match service_of(&c, &url, &[]).await {
            Ok(s) => *seen.entry(s).or_default() += 1,
            Err(status) => failures.push((i, status)),
        }
    }
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert!(seen["a"] > 50 && seen["c"] > 50, "{seen:?}");
    // The operator sees it: one of three out is a half-open circuit.
    let admin = towergate::admin::start(
        "127.0.0.1:0".parse().unwrap(),
        towergate::admin::AdminState {
            live: _gw.live(),
            config_path: None,
            token: None,
        },
    )
    .await
    .unwrap();
    let page = c
        .get(format!("http://{}/metrics", admin.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("towergate_circuit_state{upstream=\"svc\"} 1"),
        "{page}"
    );
    // The requests that met the dead endpoint were retried elsewhere, and
    // counted.
    let retries: u64 = page
        .lines()
        .find_map(|l| l.strip_prefix("towergate_retries_total{route=\"svc\"} "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(retries >= 1, "no retry counted:\n{page}");
    let ups: Value = c
        .get(format!("http://{}/admin/upstreams", admin.addr))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let statuses: Vec<&str> = ups[0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == "healthy").count(),
        2,
        "{statuses:?}"
    );
    // It comes back on the same port; active checks put it back.
    let _b = killable(b_addr, "b").await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if service_of(&c, &url, &[]).await == Ok("b".into()) {
            break;
        }
        assert!(Instant::now() < deadline, "the endpoint did not rejoin");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(a);
    drop(c_srv);
}

#[tokio::test]
async fn weighted_round_robin_and_consistent_hash() {
    let a = killable("127.0.0.1:0".parse().unwrap(), "a").await;
    let b = killable("127.0.0.1:0".parse().unwrap(), "b").await;
    let eps = vec![
        format!("{{ url: \"http://{}\", weight: 2 }}", a.addr),
        format!("{{ url: \"http://{}\", weight: 1 }}", b.addr),
    ];
    let (_gw, addr) = gateway(&config(&eps, "    balance: weighted_round_robin")).await;
    let c = client();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..300 {
        *seen
            .entry(
                service_of(&c, &format!("http://{addr}/x"), &[])
                    .await
                    .unwrap(),
            )
            .or_default() += 1;
    }
    assert_eq!(seen["a"], 200, "{seen:?}");
    assert_eq!(seen["b"], 100, "{seen:?}");

    let eps = vec![
        format!("\"http://{}\"", a.addr),
        format!("\"http://{}\"", b.addr),
    ];
    let (_gw2, addr2) = gateway(&config(
        &eps,
        "    balance: { consistent_hash: \"header:x-user\" }",
    ))
    .await;
    let mut by_user: HashMap<String, String> = HashMap::new();
    for round in 0..5 {
        for user in ["u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8"] {
            let s = service_of(&c, &format!("http://{addr2}/x"), &[("x-user", user)])
                .await
                .unwrap();
            let first = by_user.entry(user.to_owned()).or_insert_with(|| s.clone());
            assert_eq!(*first, s, "{user} moved in round {round}");
        }
    }
    let distinct: std::collections::HashSet<_> = by_user.values().collect();
    assert_eq!(
        distinct.len(),
        2,
        "8 users all on one endpoint: {by_user:?}"
    );
}

#[tokio::test]
async fn every_endpoint_down_is_503_quickly() {
    let dead: Vec<String> = (0..3)
        .map(|_| {
            let a = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap();
            format!("\"http://{a}\"")
        })
        .collect();
    let (_gw, addr) = gateway(&config(&dead, "    retry: { max_retries: 2 }")).await;
    let c = client();
    let started = Instant::now();
    for _ in 0..5 {
        let rsp = c.get(format!("http://{addr}/x")).send().await.unwrap();
        let s = rsp.status().as_u16();
        assert!(s == 502 || s == 503, "status {s}");
        towergate_test::assert_problem_reqwest(rsp, s).await;
    }
    // A hang guard, not a speed target.
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn bad_balance_config_names_its_path() {
    let cases = [
        ("upstreams: { u: { } }", "upstreams.u.url"),
        (
            "upstreams: { u: { endpoints: [\"ftp://x\"] } }",
            "upstreams.u.endpoints[0]",
        ),
        (
            "upstreams: { u: { endpoints: [\"http://127.0.0.1:1\"], balance: fastest } }",
            "upstreams.u.balance",
        ),
        (
            "upstreams: { u: { url: \"http://127.0.0.1:1\", retry: { max_retries: 1 } } }",
            "upstreams.u.retry",
        ),
        (
            "upstreams: { u: { endpoints: [\"http://127.0.0.1:1\"], retry: { on: [teapot] } } }",
            "upstreams.u.retry.on[0]",
        ),
        (
            "upstreams: { u: { endpoints: [\"http://127.0.0.1:1\"], hedge: { after: \"0s\" } } }",
            "upstreams.u.hedge.after",
        ),
    ];
    for (ups, path) in cases {
        let yaml =
            format!("listen: \"127.0.0.1:0\"\n{ups}\nroutes:\n  - name: r\n    upstream: u\n");
        let cfg = towergate::config::parse_str(&yaml, towergate::config::Format::Yaml).unwrap();
        let e = towergate::stack::compile(&cfg).unwrap_err();
        assert!(e.has_path(path), "{ups}: {e}");
    }
}

async fn slow_server(name: &'static str, delay: Duration) -> towergate_test::Upstream {
    towergate_test::spawn_upstream(Router::new().fallback(move || async move {
        tokio::time::sleep(delay).await;
        axum::Json(serde_json::json!({ "service": name }))
    }))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_endpoints_hedging_and_request_timeout() {
    // Endpoints from DNS: `localhost` resolves to this machine.
    let a = killable("127.0.0.1:0".parse().unwrap(), "dns-a").await;
    let yaml = format!(
        r#"listen: "127.0.0.1:0"
upstreams:
  svc:
    dns: {{ host: localhost, port: {}, interval: "1s" }}
    retry: {{ max_retries: 2, on: [connect] }}
routes:
  - name: svc
    match: {{ path_prefix: "/" }}
    upstream: svc
"#,
        a.addr.port()
    );
    let (_gw, addr) = gateway(&yaml).await;
    let c = client();
    for _ in 0..10 {
        assert_eq!(
            service_of(&c, &format!("http://{addr}/x"), &[]).await,
            Ok("dns-a".into())
        );
    }

    // Hedging: a slow first attempt is raced by a second one elsewhere.
    let slow = slow_server("slow", Duration::from_secs(3)).await;
    let fast = slow_server("fast", Duration::from_millis(0)).await;
    let eps = vec![format!("\"{}\"", slow.url()), format!("\"{}\"", fast.url())];
    let (_gw2, addr2) = gateway(&config(
        &eps,
        "    balance: round_robin\n    hedge: { after: \"50ms\" }",
    ))
    .await;
    for _ in 0..6 {
        assert_eq!(
            service_of(&c, &format!("http://{addr2}/x"), &[]).await,
            Ok("fast".into())
        );
    }

    // The overall deadline across attempts.
    let s1 = slow_server("s1", Duration::from_secs(5)).await;
    let s2 = slow_server("s2", Duration::from_secs(5)).await;
    let eps = vec![format!("\"{}\"", s1.url()), format!("\"{}\"", s2.url())];
    let (_gw3, addr3) = gateway(&config(&eps, "    request_timeout: \"300ms\"")).await;
    let rsp = c.get(format!("http://{addr3}/x")).send().await.unwrap();
    towergate_test::assert_problem_reqwest(rsp, 504).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_with_their_own_settings_share_one_pool() {
    // Four routes on one upstream, three with settings of their own. They
    // share one pool: an endpoint ejected through one route is out for
    // all, and each route's Host and timeout still apply.
    let good = towergate_test::spawn_upstream(echo_router("good")).await;
    let failing_hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let hits = failing_hits.clone();
    let failing = towergate_test::spawn_upstream(Router::new().fallback(move || {
        hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async { (http::StatusCode::SERVICE_UNAVAILABLE, "down") }
    }))
    .await;
    let slow = slow_server("slow", Duration::from_millis(400)).await;
    let slow2 = slow_server("slow2", Duration::from_millis(400)).await;
    let slow3 = slow_server("slow3", Duration::from_millis(400)).await;
    let yaml = format!(
        r#"listen: "127.0.0.1:0"
upstreams:
  svc:
    endpoints: ["{good}", "{failing}"]
    balance: round_robin
    ejection: {{ consecutive_failures: 1, base_time: "60s" }}
  slowsvc:
    endpoints: ["{slow}", "{slow2}"]
    timeout: "5s"
    ejection: {{ consecutive_failures: 1, base_time: "60s" }}
  stucksvc:
    endpoints: ["{slow3}", "{good}"]
    balance: round_robin
    ejection: {{ consecutive_failures: 1, base_time: "60s" }}
routes:
  - name: plain
    match: {{ path_prefix: "/plain/" }}
    upstream: svc
  - name: patient
    match: {{ path_prefix: "/patient/" }}
    upstream: svc
    timeout: "60s"
  - name: preserved
    match: {{ path_prefix: "/preserved/" }}
    upstream: svc
    preserve_host: true
  - name: rewritten
    match: {{ path_prefix: "/rewritten/" }}
    upstream: svc
    host_rewrite: "svc.example"
  - name: hurried
    match: {{ path_prefix: "/hurried/" }}
    upstream: slowsvc
    timeout: "100ms"
  - name: slowok
    match: {{ path_prefix: "/slowok/" }}
    upstream: slowsvc
  - name: stuck
    match: {{ path_prefix: "/stuck/" }}
    upstream: stucksvc
    timeout: "100ms"
"#,
        good = good.url(),
        failing = failing.url(),
        slow = slow.url(),
        slow2 = slow2.url(),
        slow3 = slow3.url(),
    );
    let (gw, addr) = gateway(&yaml).await;
    let c = client();
    // Through `plain`, until the failing endpoint has been tried (and
    // ejected: one failure is enough). Its 503 is retried on `good`.
    for _ in 0..10 {
        let rsp = c
            .get(format!("http://{addr}/plain/x"))
            .send()
            .await
            .unwrap();
        assert_eq!(rsp.status(), 200);
        if failing_hits.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            break;
        }
    }
    let tried = failing_hits.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(tried, 1, "round-robin tried the failing endpoint once");
    // The other routes see the ejection: the failing endpoint gets nothing.
    for route in ["patient", "preserved", "rewritten"] {
        for _ in 0..6 {
            let rsp = c
                .get(format!("http://{addr}/{route}/x"))
                .header("host", "client.example")
                .send()
                .await
                .unwrap();
            assert_eq!(rsp.status(), 200, "{route}");
            let v: Value = rsp.json().await.unwrap();
            let host = v["headers"]["host"][0].as_str().unwrap().to_owned();
            match route {
                "preserved" => assert_eq!(host, "client.example"),
                "rewritten" => assert_eq!(host, "svc.example"),
                _ => assert_eq!(host, good.url().trim_start_matches("http://")),
            }
        }
    }
    assert_eq!(
        failing_hits.load(std::sync::atomic::Ordering::SeqCst),
        tried,
        "an endpoint ejected through one route was picked through another"
    );
    // Each route's own timeout, on a shared pool; a route's shorter one
    // running out is not held against the endpoints (one failure would
    // eject here).
    for _ in 0..4 {
        let rsp = c
            .get(format!("http://{addr}/hurried/x"))
            .send()
            .await
            .unwrap();
        assert_eq!(rsp.status(), 504);
    }
    let states = gw.live().stack().upstream_states();
    let (_, slow_states) = states.iter().find(|(n, _)| n == "slowsvc").unwrap();
    assert!(
        slow_states.iter().all(|s| s.ejections == 0),
        "{slow_states:?}"
    );
    for _ in 0..2 {
        let rsp = c
            .get(format!("http://{addr}/slowok/x"))
            .send()
            .await
            .unwrap();
        assert_eq!(rsp.status(), 200);
    }
    // When every route of an upstream is that impatient, its timeouts do
    // count: an endpoint that stopped answering in time is ejected.
    for _ in 0..4 {
        c.get(format!("http://{addr}/stuck/x"))
            .send()
            .await
            .unwrap();
    }
    let states = gw.live().stack().upstream_states();
    let (_, stuck_states) = states.iter().find(|(n, _)| n == "stucksvc").unwrap();
    let slow3_state = stuck_states.iter().find(|s| s.url == slow3.url()).unwrap();
    assert!(slow3_state.ejections >= 1, "{stuck_states:?}");
}

/// An endpoint that accepts connections and never answers on them.
async fn hung_server() -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_endpoint_cut_short_by_request_timeout_is_ejected() {
    // `request_timeout` runs out long before the attempt's own `timeout`
    // (30 s by default): the attempt it cuts short is the endpoint's
    // timeout, so the hung endpoint is ejected instead of costing every
    // other request a 504 for ever.
    let (hung, hung_task) = hung_server().await;
    let good = towergate_test::spawn_upstream(echo_router("good")).await;
    let eps = vec![format!("\"http://{hung}\""), format!("\"{}\"", good.url())];
    let (_gw, addr) = gateway(&config(
        &eps,
        "    balance: round_robin\n    request_timeout: \"200ms\"\n    ejection: { consecutive_failures: 2, base_time: \"60s\" }",
    ))
    .await;
    let c = client();
    let mut statuses = Vec::new();
    for _ in 0..20 {
        let rsp = c.get(format!("http://{addr}/x")).send().await.unwrap();
        statuses.push(rsp.status().as_u16());
    }
    let late_ok = statuses[10..].iter().filter(|s| **s == 200).count();
    assert!(late_ok >= 9, "the last ten: {statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 504),
        "{statuses:?}"
    );
    hung_task.abort();
}

/// An upstream whose answers send a first chunk at once, then stream on
/// (as a download or server-sent events do) until `end` turns true.
async fn streaming_server(end: tokio::sync::watch::Receiver<bool>) -> towergate_test::Upstream {
    use futures_util::StreamExt;
    towergate_test::spawn_upstream(Router::new().fallback(move || {
        let mut end = end.clone();
        async move {
            let first = futures_util::stream::once(async {
                Ok::<_, std::convert::Infallible>(bytes::Bytes::from_static(b"start\n"))
            });
            let rest = futures_util::stream::once(async move {
                let _ = end.wait_for(|e| *e).await;
                Ok(bytes::Bytes::from_static(b"end\n"))
            });
            axum::body::Body::from_stream(first.chain(rest))
        }
    }))
    .await
}

/// A request counts against `max_endpoint_requests` until its response
/// body ends, not only until its headers came: two bodies still streaming
/// fill an endpoint with room for two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_responses_count_in_flight_until_their_bodies_end() {
    let (end, ends) = tokio::sync::watch::channel(false);
    let up = streaming_server(ends).await;
    let (_gw, addr) = gateway(&config(
        &[format!("\"{}\"", up.url())],
        "    circuit_breaker: { max_endpoint_requests: 2 }",
    ))
    .await;
    let c = client();
    let url = format!("http://{addr}/events");
    let mut streams = Vec::new();
    for _ in 0..2 {
        let mut rsp = c.get(&url).send().await.unwrap();
        assert_eq!(rsp.status(), 200);
        assert_eq!(rsp.chunk().await.unwrap().unwrap(), "start\n");
        streams.push(rsp);
    }
    // Both still stream: the endpoint is full.
    let rsp = c.get(&url).send().await.unwrap();
    towergate_test::assert_problem_reqwest(rsp, 503).await;

    // The streams end; then there is room again.
    end.send(true).unwrap();
    for rsp in streams {
        assert_eq!(rsp.text().await.unwrap(), "end\n");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rsp = c.get(&url).send().await.unwrap();
        if rsp.status() == 200 {
            assert_eq!(rsp.text().await.unwrap(), "start\nend\n");
            break;
        }
        assert_eq!(rsp.status(), 503);
        assert!(Instant::now() < deadline, "the endpoint was never freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A WebSocket tunnel through a pool counts against
/// `max_endpoint_requests` until it closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_websocket_counts_against_max_endpoint_requests() {
    use axum::extract::ws::{Message, WebSocketUpgrade};
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite;

    let up = towergate_test::spawn_upstream(Router::new().route(
        "/ws",
        get(|ws: WebSocketUpgrade| async move {
            ws.on_upgrade(|mut socket| async move {
                while let Some(Ok(msg)) = socket.recv().await {
                    if let Message::Text(t) = msg {
                        let _ = socket.send(Message::Text(t)).await;
                    }
                }
            })
        }),
    ))
    .await;
    let (_gw, addr) = gateway(&config(
        &[format!("\"{}\"", up.url())],
        "    circuit_breaker: { max_endpoint_requests: 1 }",
    ))
    .await;
    let open = || async move {
        match tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await {
            Ok((ws, rsp)) => (Some(ws), rsp.status().as_u16()),
            Err(tungstenite::Error::Http(rsp)) => (None, rsp.status().as_u16()),
            Err(e) => panic!("{e}"),
        }
    };
    let (ws, status) = open().await;
    assert_eq!(status, 101);
    let mut ws = ws.unwrap();
    ws.send(tungstenite::Message::Text("hi".into()))
        .await
        .unwrap();
    let echoed = ws.next().await.unwrap().unwrap();
    assert_eq!(echoed.into_text().unwrap().as_str(), "hi");
    // The open tunnel fills the endpoint.
    assert_eq!(open().await.1, 503);

    ws.close(None).await.unwrap();
    drop(ws);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (ws, status) = open().await;
        if status == 101 {
            drop(ws);
            break;
        }
        assert_eq!(status, 503);
        assert!(Instant::now() < deadline, "the tunnel was never let go");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
