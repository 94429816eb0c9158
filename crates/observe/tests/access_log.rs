//! Access-log lines from a real gateway over real sockets.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::routing::{any, get};
use serde_json::Value;
use tower::ServiceBuilder;
use tower::util::MapRequestLayer;
use towergate_core::Identity;
use towergate_observe::access_log::{AccessLogLayer, Field, LogFormat, Sink};
use towergate_observe::{Metrics, RecordLayer, RecordUpstreamLayer, RequestIdLayer, TraceLayer};
use towergate_test::{echo_router, spawn_upstream};

use common::{MemoryWriter, eventually, forward, parse_metrics, sample, serve};

const SECRETS: [&str; 6] = [
    "SECRET1", "SECRET2", "SECRET3", "SECRET4", "SECRET5", "SECRET6",
];

/// Stands in for an authentication layer: an `Authorization` header makes
/// the caller alice of acme.
fn fake_auth() -> MapRequestLayer<fn(Request) -> Request> {
    fn authenticate(mut req: Request) -> Request {
        if req.headers().contains_key(http::header::AUTHORIZATION) {
            req.extensions_mut().insert(Identity {
                subject: Some("alice".into()),
                consumer: Some("acme".into()),
                method: Some("jwt"),
                ..Identity::default()
            });
        }
        req
    }
    MapRequestLayer::new(authenticate)
}

/// The gateway: request id, trace and access log outside the router; in
/// the route stack, a `RecordLayer` before and after authentication.
async fn gateway(log: AccessLogLayer, upstream: String) -> common::Server {
    let routes = Router::new()
        .route(
            "/api/{*rest}",
            any(forward(upstream)).layer(
                ServiceBuilder::new()
                    .layer(RecordLayer::route("api"))
                    .layer(fake_auth())
                    .layer(RecordLayer::new())
                    .layer(RecordUpstreamLayer::new("echo:1")),
            ),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                "late"
            })
            .layer(RecordLayer::route("slow")),
        );
    let stack = ServiceBuilder::new()
        .layer(RequestIdLayer::new())
        .layer(TraceLayer::new())
        .layer(log)
        .service(routes);
    serve(Router::new().fallback_service(stack)).await
}

async fn flush(log: &AccessLogLayer) {
    let log = log.clone();
    assert!(
        tokio::task::spawn_blocking(move || log.flush(Duration::from_secs(5)))
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn json_line_has_the_documented_fields_and_no_secret() {
    let dir = std::env::temp_dir().join(format!("towergate-observe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("access.log");
    let _ = std::fs::remove_file(&path);
    let log = AccessLogLayer::builder()
        .sink(Sink::file(&path))
        .keep_query_params(["page"])
        .build()
        .unwrap();
    let upstream = spawn_upstream(echo_router("users")).await;
    let gw = gateway(log.clone(), upstream.url()).await;

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let rsp = reqwest::Client::new()
        .post(gw.url("/api/users?page=2&api_key=SECRET1&token=SECRET2"))
        .header("authorization", "Bearer SECRET3")
        .header("cookie", "session=SECRET4")
        .header("x-api-key", "SECRET5")
        .header("x-request-id", "log-req-1")
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .body("hello world")
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    let body = rsp.bytes().await.unwrap();

    // The line is written once the response body has ended on the server.
    let line = eventually(|| {
        let text = std::fs::read_to_string(&path).ok()?;
        let first = text.lines().next()?.to_owned();
        Some(first)
    })
    .await;
    flush(&log).await;
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 1);
    for secret in SECRETS {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }

    let v: Value = serde_json::from_str(&line).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    let mut expected: Vec<&str> = towergate_observe::access_log::DEFAULT_FIELDS
        .iter()
        .map(|f| f.key())
        .collect();
    expected.sort_unstable();
    let mut keys_sorted = keys.clone();
    keys_sorted.sort_unstable();
    assert_eq!(keys_sorted, expected);
    assert!(
        line.starts_with("{\"ts\":\""),
        "fields in documented order: {line}"
    );

    let ts = v["ts"].as_str().unwrap();
    assert_eq!(ts.len(), "2026-11-27T08:05:09.042Z".len(), "{ts}");
    assert!(
        ts.ends_with('Z') && &ts[10..11] == "T" && &ts[19..20] == ".",
        "{ts}"
    );
    assert_eq!(v["request_id"], "log-req-1");
    assert_eq!(v["trace_id"], trace_id);
    assert_eq!(v["client"], "127.0.0.1");
    assert_eq!(v["method"], "POST");
    assert_eq!(v["path"], "/api/users?page=2");
    assert_eq!(v["route"], "api");
    assert_eq!(v["upstream"], "echo:1");
    assert_eq!(v["status"], 200);
    assert_eq!(v["bytes_in"], 11);
    assert_eq!(v["bytes_out"], body.len());
    assert!(v["latency_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(v["consumer"], "acme");
    assert_eq!(v["subject"], "alice");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn client_that_leaves_is_logged_as_499() {
    let out = MemoryWriter::default();
    let log = AccessLogLayer::builder()
        .sink(Sink::writer(out.clone()))
        .build()
        .unwrap();
    let upstream = spawn_upstream(echo_router("users")).await;
    let gw = gateway(log, upstream.url()).await;
    let err = reqwest::Client::new()
        .get(gw.url("/slow"))
        .timeout(Duration::from_millis(200))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout());
    let line = eventually(|| out.lines().into_iter().next()).await;
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["status"], 499);
    assert_eq!(v["route"], "slow");
    assert_eq!(v["bytes_out"], 0);
}

#[tokio::test]
async fn common_and_combined_formats() {
    let upstream = spawn_upstream(echo_router("users")).await;
    for (format, combined) in [(LogFormat::Common, false), (LogFormat::Combined, true)] {
        let out = MemoryWriter::default();
        let log = AccessLogLayer::builder()
            .sink(Sink::writer(out.clone()))
            .format(format)
            .build()
            .unwrap();
        let gw = gateway(log, upstream.url()).await;
        let rsp = reqwest::Client::new()
            .get(gw.url("/api/users?token=SECRET1"))
            .header("authorization", "Bearer SECRET3")
            .header(
                "referer",
                "https://me:SECRET6@site.example/page?api_key=SECRET2#x",
            )
            .header("user-agent", "test-agent/1.0")
            .send()
            .await
            .unwrap();
        let len = rsp.bytes().await.unwrap().len();
        let line = eventually(|| out.lines().into_iter().next()).await;
        for secret in SECRETS {
            assert!(!line.contains(secret), "{secret} leaked: {line}");
        }
        // 127.0.0.1 - alice [27/Nov/2026:08:05:09 +0000] "GET /api/users HTTP/1.1" 200 123
        let (head, rest) = line.split_once(" [").unwrap();
        assert_eq!(head, "127.0.0.1 - alice");
        let (time, rest) = rest.split_once("] ").unwrap();
        assert!(time.ends_with(" +0000") && time.len() == 26, "{time}");
        let expected = format!("\"GET /api/users HTTP/1.1\" 200 {len}");
        if combined {
            assert_eq!(
                rest,
                format!("{expected} \"https://site.example/page\" \"test-agent/1.0\"")
            );
        } else {
            assert_eq!(rest, expected);
        }
    }
}

/// A sink that takes a few bytes at a time and fails every third write,
/// as a pipe that fills up does.
struct FitfulWriter {
    out: MemoryWriter,
    calls: usize,
}

impl Write for FitfulWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.calls += 1;
        if self.calls.is_multiple_of(3) {
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(4096 + self.calls % 97);
        self.out.write(&buf[..n])
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn lines_stay_whole_and_in_order_through_the_writers_buffer() {
    // More lines than the writer's 64 KiB buffer holds, to a sink that
    // takes part of each write and fails some: every line arrives, whole,
    // in the order of the requests.
    let out = MemoryWriter::default();
    let log = AccessLogLayer::builder()
        .sink(Sink::writer(FitfulWriter {
            out: out.clone(),
            calls: 0,
        }))
        .build()
        .unwrap();
    let upstream = spawn_upstream(echo_router("users")).await;
    let gw = gateway(log.clone(), upstream.url()).await;
    let c = reqwest::Client::new();
    let n = 600;
    for i in 0..n {
        let rsp = c.get(gw.url(&format!("/api/{i}"))).send().await.unwrap();
        rsp.bytes().await.unwrap();
    }
    // The writer keeps what the sink did not take and goes on from there
    // in the next rounds: wait for all of it.
    eventually(|| (out.lines().len() >= n).then_some(())).await;
    flush(&log).await;
    let lines = out.lines();
    assert_eq!(lines.len(), n);
    assert!(lines.iter().map(String::len).sum::<usize>() > 2 * 64 * 1024);
    for (i, line) in lines.iter().enumerate() {
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["path"], format!("/api/{i}"));
        assert_eq!(v["status"], 200);
    }
}

/// A sink that takes its time.
struct SlowWriter(MemoryWriter);

impl Write for SlowWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        std::thread::sleep(Duration::from_millis(200));
        self.0.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A log of statuses to `sink` whose queue holds one line: a sink that
/// falls behind fills it at once.
fn one_place_queue(
    sink: impl Write + Send + 'static,
) -> towergate_observe::access_log::AccessLogBuilder {
    AccessLogLayer::builder()
        .sink(Sink::writer(sink))
        .capacity(1)
        .fields([Field::Status])
}

/// A sink whose writes wait until the test lets them go, as a pipe whose
/// reader stopped reading does.
struct StalledWriter(std::sync::mpsc::Receiver<()>);

impl Write for StalledWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // Blocks until released (or the test ends and drops the sender).
        let _ = self.0.recv();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn flush_gives_up_at_its_timeout_when_the_sink_stalls_with_a_full_queue() {
    let (release, stalled) = std::sync::mpsc::channel();
    let log = one_place_queue(StalledWriter(stalled)).build().unwrap();
    let upstream = spawn_upstream(echo_router("users")).await;
    let gw = gateway(log.clone(), upstream.url()).await;
    let c = reqwest::Client::new();
    // The writer takes one line and stalls in the sink; the queue's one
    // place fills; the rest are dropped.
    for _ in 0..5 {
        let rsp = c.get(gw.url("/api/x")).send().await.unwrap();
        rsp.bytes().await.unwrap();
    }
    eventually(|| (log.dropped() > 0).then_some(())).await;
    let waiting = log.clone();
    let flushed = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || waiting.flush(Duration::from_millis(200))),
    )
    .await
    .expect("flush returns at its timeout instead of waiting for room")
    .unwrap();
    assert!(!flushed, "nothing could be written");
    drop(release);
}

#[tokio::test]
async fn a_slow_sink_drops_and_counts_instead_of_blocking() {
    let out = MemoryWriter::default();
    let metrics = Metrics::new();
    let log = one_place_queue(SlowWriter(out.clone()))
        .metrics(metrics.clone())
        .build()
        .unwrap();
    let upstream = spawn_upstream(echo_router("users")).await;
    let gw = gateway(log.clone(), upstream.url()).await;
    let c = reqwest::Client::new();
    let started = std::time::Instant::now();
    let n = 30;
    for _ in 0..n {
        let rsp = c.get(gw.url("/api/x")).send().await.unwrap();
        rsp.bytes().await.unwrap();
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "requests never wait for the sink"
    );
    // Let the last lines arrive, then wait for the writer.
    tokio::time::sleep(Duration::from_millis(100)).await;
    flush(&log).await;
    let dropped = log.dropped();
    assert!(dropped > 0, "a sink this slow cannot keep up");
    assert_eq!(
        out.lines().len() as u64 + dropped,
        n,
        "every line written or counted"
    );
    let page = parse_metrics(&metrics.encode());
    assert_eq!(
        sample(&page, "towergate_access_log_dropped_total"),
        dropped as f64
    );
}

#[test]
fn credential_like_query_params_cannot_be_kept() {
    for name in [
        "api_key",
        "access_token",
        "X-Auth",
        "password",
        "client_secret",
        "sessionid",
    ] {
        let err = AccessLogLayer::builder()
            .sink(Sink::writer(std::io::sink()))
            .keep_query_params([name])
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("credential"), "{name}: {err}");
    }
    assert!(
        AccessLogLayer::builder()
            .sink(Sink::writer(std::io::sink()))
            .keep_query_params(["page", "limit"])
            .build()
            .is_ok()
    );
}
