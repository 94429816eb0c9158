//! OpenTelemetry through the real binary: the client's `traceparent` is
//! continued (same trace id, a new span id toward the upstream), and the
//! server span reaches a real OTLP/HTTP receiver on loopback, decoded with
//! the official protobuf definitions.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns panic by design

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::Value;
use towergate_test::{echo_router, spawn_upstream};

const BIN: &str = env!("CARGO_BIN_EXE_towergate");

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traceparent_continued_and_span_exported() {
    let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
    let sink = spans.clone();
    let receiver = spawn_upstream(Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let sink = sink.clone();
            async move {
                let req = ExportTraceServiceRequest::decode(body).unwrap();
                let mut out = sink.lock().unwrap();
                for rs in req.resource_spans {
                    for ss in rs.scope_spans {
                        out.extend(ss.spans);
                    }
                }
                (
                    [("content-type", "application/x-protobuf")],
                    ExportTraceServiceResponse::default().encode_to_vec(),
                )
            }
        }),
    ))
    .await;
    let echo = spawn_upstream(echo_router("echo")).await;
    let listen = free_port();
    let dir = std::env::temp_dir().join(format!("towergate-otel-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("gateway.yaml");
    std::fs::write(
        &cfg,
        format!(
            r#"listen: "{listen}"
admin: {{ enabled: false }}
observability:
  tracing: {{ otlp_endpoint: "{}", service_name: towergate-e2e, sample_ratio: 1.0 }}
routes:
  - name: traced
    match: {{ path_prefix: "/" }}
    upstream: "{}"
"#,
            receiver.url(),
            echo.url()
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while !rx
        .recv_timeout(Duration::from_millis(100))
        .is_ok_and(|l| l.contains("listening"))
    {
        assert!(Instant::now() < deadline, "gateway did not start");
    }

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let c = reqwest::Client::builder().no_proxy().build().unwrap();
    let v: Value = c
        .get(format!("http://{listen}/orders/1"))
        .header("traceparent", format!("00-{trace_id}-{parent}-01"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let upstream_tp = v["headers"]["traceparent"][0].as_str().unwrap().to_owned();
    let parts: Vec<&str> = upstream_tp.split('-').collect();
    assert_eq!(parts[1], trace_id, "same trace id toward the upstream");
    assert_ne!(parts[2], parent, "a new span id toward the upstream");

    // SIGTERM flushes the exporter.
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let span = loop {
        if let Some(s) = spans
            .lock()
            .unwrap()
            .iter()
            .find(|s| hex(&s.trace_id) == trace_id)
            .cloned()
        {
            break s;
        }
        assert!(Instant::now() < deadline, "no span exported");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(hex(&span.parent_span_id), parent);
    assert_eq!(hex(&span.span_id), parts[2]);
    let attr = |k: &str| {
        span.attributes
            .iter()
            .find(|kv| kv.key == k)
            .and_then(|kv| kv.value.clone())
            .map(|v| format!("{:?}", v.value))
    };
    assert!(attr("http.route").unwrap().contains("traced"), "{span:?}");
    assert!(
        attr("http.response.status_code").unwrap().contains("200"),
        "{span:?}"
    );
    let _ = child.wait();
}
