//! OpenTelemetry over OTLP/gRPC through the real binary: with
//! `observability.tracing.protocol: grpc`, the server span of a request that
//! carries a `traceparent` reaches a real gRPC `TraceService` (tonic, the
//! official `opentelemetry-proto` stubs) on loopback, with the client's trace
//! id and the documented attributes. Once while the gateway runs (the batch
//! exporter's schedule) and once through the flush at SIGTERM.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns panic by design

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use serde_json::Value;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};
use towergate::config::schema::TracingProtocol;
use towergate::config::{Format, parse_str};
use towergate_test::{echo_router, spawn_upstream};

const BIN: &str = env!("CARGO_BIN_EXE_towergate");

/// A span as received, with the `service.name` of its resource.
#[derive(Clone, Debug)]
struct Received {
    service: Option<String>,
    span: Span,
}

/// The OTLP/gRPC receiver: keeps every exported span.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Received>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut out = self.spans.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            let service = rs.resource.as_ref().and_then(|r| {
                r.attributes
                    .iter()
                    .find(|kv| kv.key == "service.name")
                    .and_then(|kv| string(kv.value.as_ref()?.value.as_ref()?))
            });
            for ss in rs.scope_spans {
                out.extend(ss.spans.into_iter().map(|span| Received {
                    service: service.clone(),
                    span,
                }));
            }
        }
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    /// Waits up to `within` for a span of `trace_id`.
    async fn span_of(&self, trace_id: &str, within: Duration) -> Received {
        let deadline = Instant::now() + within;
        loop {
            if let Some(r) = self
                .spans
                .lock()
                .unwrap()
                .iter()
                .find(|r| hex(&r.span.trace_id) == trace_id)
                .cloned()
            {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "no span of trace {trace_id} within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Kills the gateway if the test fails before it exits.
struct Gateway(Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn string(v: &AnyValue) -> Option<String> {
    match v {
        AnyValue::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn attr(span: &Span, key: &str) -> Option<AnyValue> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.clone()?.value)
}

/// Sends `GET path` with a `traceparent` of `trace_id`/`parent`, and returns
/// the span id the upstream received (the gateway span's).
async fn traced_get(listen: SocketAddr, path: &str, trace_id: &str, parent: &str) -> String {
    let c = reqwest::Client::builder().no_proxy().build().unwrap();
    let v: Value = c
        .get(format!("http://{listen}{path}"))
        .header("traceparent", format!("00-{trace_id}-{parent}-01"))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    let upstream_tp = v["headers"]["traceparent"][0].as_str().unwrap().to_owned();
    let parts: Vec<&str> = upstream_tp.split('-').collect();
    assert_eq!(parts[1], trace_id, "same trace id toward the upstream");
    assert_ne!(parts[2], parent, "a new span id toward the upstream");
    parts[2].to_owned()
}

/// The server span of `GET path` on route `traced`, child of `parent`.
fn assert_server_span(r: &Received, path: &str, parent: &str, span_id: &str) {
    let span = &r.span;
    assert_eq!(r.service.as_deref(), Some("towergate-e2e"), "{r:?}");
    assert_eq!(hex(&span.parent_span_id), parent, "{span:?}");
    assert_eq!(hex(&span.span_id), span_id, "{span:?}");
    assert_eq!(span.kind, SpanKind::Server as i32, "{span:?}");
    assert_eq!(
        attr(span, "http.route"),
        Some(AnyValue::StringValue("traced".into())),
        "{span:?}"
    );
    assert_eq!(
        attr(span, "http.request.method"),
        Some(AnyValue::StringValue("GET".into())),
        "{span:?}"
    );
    assert_eq!(
        attr(span, "url.path"),
        Some(AnyValue::StringValue(path.into())),
        "{span:?}"
    );
    assert_eq!(
        attr(span, "http.response.status_code"),
        Some(AnyValue::IntValue(200)),
        "{span:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_exported_over_grpc() {
    export_over_grpc(&[]).await;
}

/// The same with one worker (the current-thread scheduler): the shutdown
/// flush still reaches the collector, over a channel whose tasks only run
/// while the runtime is driven.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_thread_exports_over_grpc() {
    export_over_grpc(&["--worker-threads", "1"]).await;
}

async fn export_over_grpc(options: &[&str]) {
    // The OTLP/gRPC receiver on 127.0.0.1:0.
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc_addr = listener.local_addr().unwrap();
    tokio::spawn(
        Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(TcpIncoming::from(listener)),
    );

    let echo = spawn_upstream(echo_router("echo")).await;
    let listen = free_port();
    let dir = std::env::temp_dir().join(format!(
        "towergate-otel-grpc-{}-{}",
        std::process::id(),
        options.len()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("gateway.yaml");
    std::fs::write(
        &cfg,
        format!(
            r#"listen: "{listen}"
admin: {{ enabled: false }}
observability:
  tracing:
    protocol: grpc
    otlp_endpoint: "http://{grpc_addr}"
    service_name: towergate-e2e
    sample_ratio: 1.0
routes:
  - name: traced
    match: {{ path_prefix: "/" }}
    upstream: "{}"
"#,
            echo.url()
        ),
    )
    .unwrap();
    let mut gateway = Gateway(
        Command::new(BIN)
            .args(options)
            .args(["run", "--config"])
            .arg(&cfg)
            // Export every 200 ms rather than every 5 s, so the scheduled
            // (not only the shutdown) export is seen well within the wait.
            .env("OTEL_BSP_SCHEDULE_DELAY", "200")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = gateway.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut log = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            let up = line.contains("listening");
            log.push(line);
            if up {
                break;
            }
        }
        assert!(Instant::now() < deadline, "gateway did not start: {log:#?}");
    }

    // 1. Exported while the gateway runs.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let span_id = traced_get(listen, "/orders/1", trace_id, parent).await;
    let r = collector.span_of(trace_id, Duration::from_secs(10)).await;
    assert_server_span(&r, "/orders/1", parent, &span_id);

    // 2. Ended just before SIGTERM: the shutdown flush exports it, over a
    // gRPC channel whose runtime is still up.
    let trace_id2 = "0af7651916cd43dd8448eb211c80319c";
    let parent2 = "b7ad6b7169203331";
    let span_id2 = traced_get(listen, "/orders/2", trace_id2, parent2).await;
    assert!(
        Command::new("kill")
            .args(["-TERM", &gateway.0.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let r = collector.span_of(trace_id2, Duration::from_secs(10)).await;
    assert_server_span(&r, "/orders/2", parent2, &span_id2);

    // And the gateway exits cleanly.
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = gateway.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "gateway did not exit on SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    log.extend(rx.try_iter());
    assert!(status.success(), "{status}: {log:#?}");
    assert!(
        !log.iter()
            .any(|l| l.contains("OpenTelemetry export disabled")),
        "{log:#?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tracing_protocol_is_parsed_and_validated() {
    let cfg = |protocol: &str| {
        format!(
            r#"listen: "127.0.0.1:8080"
observability:
  tracing:
    otlp_endpoint: "http://collector:4317"
    {protocol}
routes:
  - name: r
    match: {{ path_prefix: "/" }}
    upstream: "http://127.0.0.1:9000"
"#
        )
    };
    let protocol_of = |text: &str| {
        parse_str(text, Format::Yaml)
            .map(|c| c.observability.tracing.unwrap().protocol)
            .map_err(|e| e.to_string())
    };
    assert_eq!(protocol_of(&cfg("")), Ok(TracingProtocol::Http));
    assert_eq!(
        protocol_of(&cfg("protocol: http")),
        Ok(TracingProtocol::Http)
    );
    assert_eq!(
        protocol_of(&cfg("protocol: grpc")),
        Ok(TracingProtocol::Grpc)
    );
    for bad in [
        "protocol: gRPC",
        "protocol: http/protobuf",
        "protocol: 4317",
    ] {
        let e = parse_str(&cfg(bad), Format::Yaml).unwrap_err();
        assert!(e.has_path("observability.tracing.protocol"), "{bad}: {e}");
    }
    // The same key in TOML.
    let toml = r#"listen = "127.0.0.1:8080"
[observability.tracing]
otlp_endpoint = "http://collector:4317"
protocol = "grpc"
[[routes]]
name = "r"
upstream = "http://127.0.0.1:9000"
match = { path_prefix = "/" }
"#;
    let c = parse_str(toml, Format::Toml).unwrap();
    assert_eq!(
        c.observability.tracing.unwrap().protocol,
        TracingProtocol::Grpc
    );
}
