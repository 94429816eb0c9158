//! OpenTelemetry end to end: a real client, the gateway with the tracing
//! subscriber of `otel::layer`, a real upstream, and a real OTLP/HTTP
//! receiver on loopback that decodes what the exporter sends.
//!
//! The subscriber is process-global, so every test here shares one
//! pipeline and one receiver; each test tells its spans apart by trace id.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use axum::Router;
use axum::body::Bytes;
use axum::routing::{any, get, post};
use http::StatusCode;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::{
    Span, span::SpanKind, status::StatusCode as OtlpStatus,
};
use prost::Message;
use serde_json::Value;
use tower::ServiceBuilder;
use towergate_observe::otel::{self, OtelConfig, OtelGuard};
use towergate_observe::{RecordLayer, RecordUpstreamLayer, RequestIdLayer, TraceLayer};
use towergate_test::{echo_router, spawn_upstream};
use tracing_subscriber::prelude::*;

use common::{forward, serve};

/// A span as the receiver got it, with its resource's `service.name`.
#[derive(Clone, Debug)]
struct Exported {
    service: String,
    span: Span,
}

struct Pipeline {
    guard: OtelGuard,
    spans: Arc<Mutex<Vec<Exported>>>,
}

/// Starts the receiver (on its own thread and runtime, so it outlives each
/// test's runtime), the export pipeline, and the global subscriber, once.
fn pipeline() -> &'static Pipeline {
    static PIPELINE: OnceLock<Pipeline> = OnceLock::new();
    PIPELINE.get_or_init(|| {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let addr = start_receiver(spans.clone());
        let guard = otel::init(OtelConfig {
            endpoint: format!("http://{addr}"),
            service_name: "towergate-test".into(),
            sample_ratio: 1.0,
            ..OtelConfig::default()
        })
        .unwrap();
        tracing_subscriber::registry()
            .with(otel::layer(&guard))
            .try_init()
            .unwrap();
        Pipeline { guard, spans }
    })
}

fn start_receiver(spans: Arc<Mutex<Vec<Exported>>>) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let app = Router::new().route(
                "/v1/traces",
                post(move |headers: http::HeaderMap, body: Bytes| {
                    let spans = spans.clone();
                    async move {
                        assert_eq!(headers["content-type"], "application/x-protobuf");
                        let req = ExportTraceServiceRequest::decode(body).unwrap();
                        let mut out = spans.lock().unwrap();
                        for rs in req.resource_spans {
                            let service = rs
                                .resource
                                .iter()
                                .flat_map(|r| &r.attributes)
                                .find(|kv| kv.key == "service.name")
                                .and_then(|kv| string_value(kv.value.as_ref()?))
                                .unwrap_or_default();
                            for ss in rs.scope_spans {
                                for span in ss.spans {
                                    out.push(Exported {
                                        service: service.clone(),
                                        span,
                                    });
                                }
                            }
                        }
                        (
                            [("content-type", "application/x-protobuf")],
                            ExportTraceServiceResponse::default().encode_to_vec(),
                        )
                    }
                }),
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    rx.recv().unwrap()
}

fn string_value(v: &opentelemetry_proto::tonic::common::v1::AnyValue) -> Option<String> {
    match v.value.as_ref()? {
        AnyValue::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a AnyValue> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

/// Exports everything ended so far, then returns the spans of `trace_id`.
async fn exported(trace_id: &str) -> Vec<Exported> {
    tokio::task::spawn_blocking(|| pipeline().guard.force_flush().unwrap())
        .await
        .unwrap();
    let id = hex(trace_id);
    pipeline()
        .spans
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.span.trace_id == id)
        .cloned()
        .collect()
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn new_trace_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// The gateway: trace layers outside the router, as in the binary.
async fn gateway(trace: TraceLayer, upstream: String) -> common::Server {
    let routes = Router::new()
        .route(
            "/api/{*rest}",
            any(forward(upstream)).layer(
                ServiceBuilder::new()
                    .layer(RecordLayer::route("api"))
                    .layer(RecordUpstreamLayer::new("echo:1")),
            ),
        )
        .route(
            "/broken",
            get(|| async { StatusCode::BAD_GATEWAY }).layer(RecordLayer::route("broken")),
        );
    let stack = ServiceBuilder::new()
        .layer(RequestIdLayer::new())
        .layer(trace)
        .service(routes);
    serve(Router::new().fallback_service(stack)).await
}

/// `traceparent` split into (trace id, span id, flags).
fn split_traceparent(v: &str) -> (String, String, String) {
    let parts: Vec<&str> = v.split('-').collect();
    assert_eq!(parts.len(), 4, "{v}");
    assert_eq!(parts[0], "00");
    (parts[1].into(), parts[2].into(), parts[3].into())
}

/// Sends `GET /api/x` with `headers`, returns the echo of what the
/// upstream received.
async fn call(gw: &common::Server, headers: &[(&str, String)]) -> Value {
    let mut req = reqwest::Client::new().get(gw.url("/api/x"));
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let rsp = req.send().await.unwrap();
    assert_eq!(rsp.status(), 200);
    rsp.json().await.unwrap()
}

fn seen(echo: &Value, header: &str) -> Option<String> {
    Some(echo["headers"][header][0].as_str()?.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampled_parent_is_continued_and_exported() {
    pipeline();
    let upstream = spawn_upstream(echo_router("users")).await;
    let gw = gateway(TraceLayer::new(), upstream.url()).await;
    let trace_id = new_trace_id();
    let client_span = "00f067aa0ba902b7";
    let echo = call(
        &gw,
        &[
            ("traceparent", format!("00-{trace_id}-{client_span}-01")),
            ("tracestate", "vendor=abc".into()),
        ],
    )
    .await;

    // The upstream is in the same trace, below a new span, still sampled.
    let (t, s, f) = split_traceparent(&seen(&echo, "traceparent").unwrap());
    assert_eq!(t, trace_id);
    assert_ne!(
        s, client_span,
        "the gateway's span is the upstream's parent"
    );
    assert_eq!(f, "01");
    assert_eq!(seen(&echo, "tracestate").as_deref(), Some("vendor=abc"));
    let request_id = seen(&echo, "x-request-id").unwrap();

    let spans = exported(&trace_id).await;
    assert_eq!(spans.len(), 1, "{spans:#?}");
    let e = &spans[0];
    assert_eq!(e.service, "towergate-test");
    let span = &e.span;
    assert_eq!(span.name, "GET api");
    assert_eq!(span.kind, SpanKind::Server as i32);
    assert_eq!(span.parent_span_id, hex(client_span));
    assert_eq!(
        span.span_id,
        hex(&s),
        "the span the upstream saw is the exported one"
    );
    assert_eq!(
        attr(span, "http.route"),
        Some(&AnyValue::StringValue("api".into()))
    );
    assert_eq!(
        attr(span, "http.request.method"),
        Some(&AnyValue::StringValue("GET".into()))
    );
    assert_eq!(
        attr(span, "http.response.status_code"),
        Some(&AnyValue::IntValue(200))
    );
    assert_eq!(
        attr(span, "url.path"),
        Some(&AnyValue::StringValue("/api/x".into()))
    );
    assert_eq!(
        attr(span, "url.scheme"),
        Some(&AnyValue::StringValue("http".into()))
    );
    assert_eq!(
        attr(span, "server.address"),
        Some(&AnyValue::StringValue("127.0.0.1".into()))
    );
    assert_eq!(attr(span, "http.request.method_original"), None);
    assert_eq!(
        attr(span, "upstream"),
        Some(&AnyValue::StringValue("echo:1".into()))
    );
    assert_eq!(
        attr(span, "request_id"),
        Some(&AnyValue::StringValue(request_id))
    );
    assert!(matches!(attr(span, "latency_ms"), Some(AnyValue::DoubleValue(ms)) if *ms >= 0.0));
    assert_ne!(
        span.status.as_ref().map(|s| s.code),
        Some(OtlpStatus::Error as i32)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsampled_parent_is_honoured() {
    pipeline();
    let upstream = spawn_upstream(echo_router("users")).await;
    let gw = gateway(TraceLayer::new(), upstream.url()).await;
    let trace_id = new_trace_id();
    let client_span = "b7ad6b7169203331";
    let echo = call(
        &gw,
        &[("traceparent", format!("00-{trace_id}-{client_span}-00"))],
    )
    .await;
    let (t, s, f) = split_traceparent(&seen(&echo, "traceparent").unwrap());
    assert_eq!(t, trace_id);
    assert_ne!(s, client_span, "a new span id even when not sampled");
    assert_eq!(f, "00", "the decision not to sample travels on");
    assert!(exported(&trace_id).await.is_empty(), "nothing exported");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_parent_starts_a_trace() {
    pipeline();
    let upstream = spawn_upstream(echo_router("users")).await;
    let gw = gateway(TraceLayer::new(), upstream.url()).await;
    let echo = call(&gw, &[]).await;
    let (t, s, f) = split_traceparent(&seen(&echo, "traceparent").unwrap());
    assert_eq!(f, "01", "sample ratio 1.0");
    let spans = exported(&t).await;
    assert_eq!(spans.len(), 1);
    assert!(spans[0].span.parent_span_id.is_empty(), "a root span");
    assert_eq!(spans[0].span.span_id, hex(&s));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_mark_the_span() {
    pipeline();
    let upstream = spawn_upstream(echo_router("users")).await;
    let gw = gateway(TraceLayer::new(), upstream.url()).await;
    let trace_id = new_trace_id();
    let rsp = reqwest::Client::new()
        .get(gw.url("/broken"))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 502);
    let spans = exported(&trace_id).await;
    assert_eq!(spans.len(), 1);
    let span = &spans[0].span;
    assert_eq!(span.name, "GET broken");
    assert_eq!(
        attr(span, "http.response.status_code"),
        Some(&AnyValue::IntValue(502))
    );
    assert_eq!(
        span.status.as_ref().map(|s| s.code),
        Some(OtlpStatus::Error as i32)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b3_single_header_is_continued() {
    pipeline();
    let upstream = spawn_upstream(echo_router("users")).await;
    let gw = gateway(TraceLayer::builder().b3(true).build(), upstream.url()).await;
    let trace_id = new_trace_id();
    let echo = call(&gw, &[("b3", format!("{trace_id}-e457b5a2e4d86bd1-1"))]).await;
    let (t, s, f) = split_traceparent(&seen(&echo, "traceparent").unwrap());
    assert_eq!((t.as_str(), f.as_str()), (trace_id.as_str(), "01"));
    assert_eq!(seen(&echo, "b3"), Some(format!("{trace_id}-{s}-1")));
    let spans = exported(&trace_id).await;
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].span.parent_span_id, hex("e457b5a2e4d86bd1"));
}

// --- sampling decided by the layer (`TraceBuilder::sample_ratio`) ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsampled_b3_parent_drops_tracestate_few_headers_or_many() {
    pipeline();
    let upstream = spawn_upstream(echo_router("users")).await;
    let gw = gateway(
        TraceLayer::builder().b3(true).sample_ratio(0.0).build(),
        upstream.url(),
    )
    .await;
    // A few header names are read in one pass, many by look-up: the
    // outcome is the same. A B3 parent continues its trace, but W3C's
    // tracestate belongs to no W3C parent here and is dropped.
    for pad in [0, 12] {
        let trace_id = new_trace_id();
        let mut headers = vec![
            ("b3".to_string(), format!("{trace_id}-e457b5a2e4d86bd1-0")),
            ("tracestate".to_string(), "vendor=stale".to_string()),
        ];
        headers.extend((0..pad).map(|i| (format!("x-pad-{i}"), "1".to_string())));
        let headers: Vec<(&str, String)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        let echo = call(&gw, &headers).await;
        let (t, s, f) = split_traceparent(&seen(&echo, "traceparent").unwrap());
        assert_eq!(
            (t.as_str(), f.as_str()),
            (trace_id.as_str(), "00"),
            "pad {pad}"
        );
        assert_eq!(
            seen(&echo, "b3"),
            Some(format!("{trace_id}-{s}-0")),
            "pad {pad}"
        );
        assert_eq!(seen(&echo, "tracestate"), None, "pad {pad}");
        assert!(exported(&trace_id).await.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layer_sampling_keeps_the_context_without_a_span() {
    pipeline();
    let upstream = spawn_upstream(echo_router("users")).await;
    let gw = gateway(
        TraceLayer::builder().sample_ratio(0.0).build(),
        upstream.url(),
    )
    .await;

    // No parent, ratio 0: a new trace, not sampled, nothing exported; a
    // stray tracestate belongs to no trace of ours and is dropped.
    let echo = call(&gw, &[("tracestate", "vendor=stale".into())]).await;
    let (t, s, f) = split_traceparent(&seen(&echo, "traceparent").unwrap());
    assert_eq!((t.len(), s.len(), f.as_str()), (32, 16, "00"));
    assert_eq!(seen(&echo, "tracestate"), None);
    assert_ne!(t, "0".repeat(32));
    assert!(exported(&t).await.is_empty());

    // An unsampled parent: same trace, a new parent id, still unsampled;
    // tracestate passes as it came.
    let trace_id = new_trace_id();
    let client_span = "00f067aa0ba902b7";
    let echo = call(
        &gw,
        &[
            ("traceparent", format!("00-{trace_id}-{client_span}-00")),
            ("tracestate", "vendor=abc".into()),
        ],
    )
    .await;
    let (t, s, f) = split_traceparent(&seen(&echo, "traceparent").unwrap());
    assert_eq!(t, trace_id);
    assert_ne!(s, client_span);
    assert_eq!(f, "00");
    assert_eq!(seen(&echo, "tracestate").as_deref(), Some("vendor=abc"));
    assert!(exported(&trace_id).await.is_empty());

    // A sampled parent wins over the ratio: the span is made and exported,
    // and it is the upstream's parent.
    let trace_id = new_trace_id();
    let echo = call(
        &gw,
        &[("traceparent", format!("00-{trace_id}-{client_span}-01"))],
    )
    .await;
    let (t, s, f) = split_traceparent(&seen(&echo, "traceparent").unwrap());
    assert_eq!((t.as_str(), f.as_str()), (trace_id.as_str(), "01"));
    let spans = exported(&trace_id).await;
    assert_eq!(spans.len(), 1, "{spans:#?}");
    assert_eq!(spans[0].span.span_id, hex(&s));
    assert_eq!(spans[0].span.parent_span_id, hex(client_span));
    assert_eq!(spans[0].span.name, "GET api");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layer_sampling_ratio_one_samples_new_traces() {
    pipeline();
    let upstream = spawn_upstream(echo_router("users")).await;
    let gw = gateway(
        TraceLayer::builder().sample_ratio(1.0).build(),
        upstream.url(),
    )
    .await;
    let echo = call(&gw, &[]).await;
    let (t, s, f) = split_traceparent(&seen(&echo, "traceparent").unwrap());
    assert_eq!(f, "01");
    let spans = exported(&t).await;
    assert_eq!(spans.len(), 1, "{spans:#?}");
    assert_eq!(spans[0].span.span_id, hex(&s));
    assert!(spans[0].span.parent_span_id.is_empty(), "a root span");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b3_without_a_decision_is_sampled_by_the_layer() {
    pipeline();
    let upstream = spawn_upstream(echo_router("users")).await;
    let client_span = "e457b5a2e4d86bd1";
    // B3 ids without the sampling field leave the decision to this hop:
    // ratio 1 samples (the span continues the client's trace), ratio 0
    // does not.
    for (ratio, flag) in [(1.0, "01"), (0.0, "00")] {
        let gw = gateway(
            TraceLayer::builder().b3(true).sample_ratio(ratio).build(),
            upstream.url(),
        )
        .await;
        let trace_id = new_trace_id();
        let echo = call(&gw, &[("b3", format!("{trace_id}-{client_span}"))]).await;
        let (t, s, f) = split_traceparent(&seen(&echo, "traceparent").unwrap());
        assert_eq!((t.as_str(), f.as_str()), (trace_id.as_str(), flag));
        let b3_flag = &flag[1..];
        assert_eq!(seen(&echo, "b3"), Some(format!("{trace_id}-{s}-{b3_flag}")));
        let spans = exported(&trace_id).await;
        if ratio == 1.0 {
            assert_eq!(spans.len(), 1, "{spans:#?}");
            assert_eq!(spans[0].span.parent_span_id, hex(client_span));
        } else {
            assert!(spans.is_empty(), "{spans:#?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b3_lone_decision_is_honoured() {
    pipeline();
    let upstream = spawn_upstream(echo_router("users")).await;
    // `b3: 0` at ratio 1: a new trace, not sampled.
    let gw = gateway(
        TraceLayer::builder().b3(true).sample_ratio(1.0).build(),
        upstream.url(),
    )
    .await;
    let echo = call(&gw, &[("b3", "0".into())]).await;
    let (t, s, f) = split_traceparent(&seen(&echo, "traceparent").unwrap());
    assert_eq!(f, "00");
    assert_eq!(seen(&echo, "b3"), Some(format!("{t}-{s}-0")));
    assert!(exported(&t).await.is_empty());
    // `b3: 1` at ratio 0: a new trace, sampled, a root span.
    let gw = gateway(
        TraceLayer::builder().b3(true).sample_ratio(0.0).build(),
        upstream.url(),
    )
    .await;
    let echo = call(&gw, &[("b3", "1".into())]).await;
    let (t, s, f) = split_traceparent(&seen(&echo, "traceparent").unwrap());
    assert_eq!(f, "01");
    let spans = exported(&t).await;
    assert_eq!(spans.len(), 1, "{spans:#?}");
    assert_eq!(spans[0].span.span_id, hex(&s));
    assert!(spans[0].span.parent_span_id.is_empty(), "a root span");
}

/// The four parts in one `ObserveLayer`, as the binary's edge has them:
/// the id, the span, the metrics and the log line all describe the same
/// request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_layer_does_the_work_of_the_four_layers() {
    use common::{MemoryWriter, eventually, parse_metrics, sample};
    use towergate_observe::access_log::Sink;
    use towergate_observe::{AccessLogLayer, Metrics, ObserveLayer};

    pipeline();
    let upstream = spawn_upstream(echo_router("users")).await;
    let metrics = Metrics::new();
    let log = MemoryWriter::default();
    let layer = ObserveLayer::builder()
        .request_id(RequestIdLayer::new())
        .trace(TraceLayer::builder().sample_ratio(0.0).build())
        .metrics(metrics.clone())
        .access_log(
            AccessLogLayer::builder()
                .sink(Sink::writer(log.clone()))
                .build()
                .unwrap(),
        )
        .build();
    let routes = Router::new().route(
        "/api/{*rest}",
        any(forward(upstream.url())).layer(
            ServiceBuilder::new()
                .layer(RecordLayer::route("api"))
                .layer(RecordUpstreamLayer::new("echo:1")),
        ),
    );
    let gw =
        serve(Router::new().fallback_service(ServiceBuilder::new().layer(layer).service(routes)))
            .await;

    let trace_id = new_trace_id();
    let client_span = "00f067aa0ba902b7";
    let rsp = reqwest::Client::new()
        .post(gw.url("/api/x?token=secret"))
        .header("traceparent", format!("00-{trace_id}-{client_span}-01"))
        .body("12345")
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    let request_id = rsp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let echo: Value = rsp.json().await.unwrap();

    // The upstream got the id and the context of the gateway's span.
    assert_eq!(seen(&echo, "x-request-id").as_deref(), Some(&*request_id));
    let (t, s, f) = split_traceparent(&seen(&echo, "traceparent").unwrap());
    assert_eq!((t.as_str(), f.as_str()), (trace_id.as_str(), "01"));

    // The span, with the route the router found and the request id.
    let spans = exported(&trace_id).await;
    assert_eq!(spans.len(), 1, "{spans:#?}");
    let span = &spans[0].span;
    assert_eq!(span.span_id, hex(&s));
    assert_eq!(span.name, "POST api");
    assert_eq!(
        attr(span, "request_id"),
        Some(&AnyValue::StringValue(request_id.clone()))
    );
    assert_eq!(
        attr(span, "upstream"),
        Some(&AnyValue::StringValue("echo:1".into()))
    );

    // The metrics: one request of route `api`, its bytes both ways (counted
    // when the response body has ended, which the client may see first).
    let page = eventually(|| {
        let page = parse_metrics(&metrics.encode());
        (sample(&page, "towergate_http_requests_in_flight") == 0.0).then_some(page)
    })
    .await;
    assert_eq!(
        sample(
            &page,
            r#"towergate_http_requests_total{route="api",status_class="2xx"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &page,
            r#"towergate_http_request_body_bytes_total{route="api"}"#
        ),
        5.0
    );
    assert!(
        sample(
            &page,
            r#"towergate_http_response_body_bytes_total{route="api"}"#
        ) > 0.0
    );

    // The log line: the same id and trace, the route and upstream, the
    // bytes, and no query secret.
    let line = eventually(|| log.lines().into_iter().next()).await;
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["request_id"], request_id.as_str());
    assert_eq!(v["trace_id"], trace_id.as_str());
    assert_eq!(v["route"], "api");
    assert_eq!(v["upstream"], "echo:1");
    assert_eq!(v["status"], 200);
    assert_eq!(v["bytes_in"], 5);
    assert!(v["bytes_out"].as_u64().unwrap() > 0);
    assert_eq!(v["path"], "/api/x");
    assert!(!line.contains("secret"), "{line}");
}

/// A method the client made up does not name the span: span names (and
/// the span metrics backends derive from them) stay a closed set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_made_up_method_is_other_and_the_span_is_named_http() {
    pipeline();
    let upstream = spawn_upstream(echo_router("users")).await;
    let gw = gateway(TraceLayer::new(), upstream.url()).await;
    let trace_id = new_trace_id();
    let rsp = reqwest::Client::new()
        .request(
            reqwest::Method::from_bytes(b"RAND0123").unwrap(),
            gw.url("/api/x"),
        )
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    let spans = exported(&trace_id).await;
    let span = &spans[0].span;
    assert_eq!(span.name, "HTTP api");
    assert_eq!(
        attr(span, "http.request.method"),
        Some(&AnyValue::StringValue("_OTHER".into()))
    );
    assert_eq!(
        attr(span, "http.request.method_original"),
        Some(&AnyValue::StringValue("RAND0123".into()))
    );
}
