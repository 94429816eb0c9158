//! Every layer mounted in a plain axum app with `Router::layer`, served on
//! a real socket in front of a real upstream.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use axum::Router;
use axum::routing::{any, get};
use serde_json::Value;
use tower::ServiceBuilder;
use towergate_observe::access_log::Sink;
use towergate_observe::metrics::CONTENT_TYPE;
use towergate_observe::{
    AccessLogLayer, Metrics, RecordLayer, RecordUpstreamLayer, RequestIdLayer, TraceLayer,
};
use towergate_test::{echo_router, spawn_upstream};

use common::{MemoryWriter, eventually, forward, parse_metrics, sample, serve};

#[tokio::test]
async fn all_layers_embed_in_an_axum_router() {
    let upstream = spawn_upstream(echo_router("orders")).await;
    let metrics = Metrics::new();
    let out = MemoryWriter::default();
    let access_log = AccessLogLayer::builder()
        .sink(Sink::writer(out.clone()))
        .metrics(metrics.clone())
        .build()
        .unwrap();

    let page = metrics.clone();
    let app: Router = Router::new()
        .route(
            "/orders/{*rest}",
            any(forward(upstream.url())).layer(
                ServiceBuilder::new()
                    .layer(RecordLayer::route("orders"))
                    .layer(RecordUpstreamLayer::new("orders-svc").metrics(metrics.clone())),
            ),
        )
        .route(
            "/hello",
            get(|| async { "hello" }).layer(RecordLayer::route("hello")),
        )
        .layer(
            ServiceBuilder::new()
                .layer(RequestIdLayer::new())
                .layer(TraceLayer::builder().b3(true).build())
                .layer(metrics.layer())
                .layer(access_log.clone()),
        )
        // Added after the layers: the scrape is not measured.
        .route(
            "/metrics",
            get(move || {
                let page = page.clone();
                async move { ([(http::header::CONTENT_TYPE, CONTENT_TYPE)], page.encode()) }
            }),
        );
    let gw = serve(app).await;
    let c = reqwest::Client::new();

    let rsp = c.get(gw.url("/hello")).send().await.unwrap();
    assert_eq!(rsp.status(), 200);
    assert!(rsp.headers().contains_key("x-request-id"));
    assert_eq!(rsp.text().await.unwrap(), "hello");

    let rsp = c
        .get(gw.url("/orders/9?secret_token=s3cr3tvalue"))
        .header("x-request-id", "embed-1")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.headers()["x-request-id"], "embed-1");
    let echo: Value = rsp.json().await.unwrap();
    assert_eq!(echo["path"], "/orders/9");
    assert_eq!(echo["headers"]["x-request-id"][0], "embed-1");
    // No OpenTelemetry subscriber in this process: trace context passes as is.
    assert_eq!(
        echo["headers"]["traceparent"][0],
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    );

    eventually(|| (metrics.in_flight() == 0).then_some(())).await;
    let rsp = c.get(gw.url("/metrics")).send().await.unwrap();
    assert_eq!(rsp.headers()["content-type"], CONTENT_TYPE);
    let page = parse_metrics(&rsp.text().await.unwrap());
    assert_eq!(
        sample(
            &page,
            r#"towergate_http_requests_total{route="hello",status_class="2xx"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &page,
            r#"towergate_http_requests_total{route="orders",status_class="2xx"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &page,
            r#"towergate_upstream_requests_total{status_class="2xx",upstream="orders-svc"}"#
        ),
        1.0
    );
    assert_eq!(sample(&page, "towergate_http_requests_in_flight"), 0.0);

    let log = access_log.clone();
    assert!(
        tokio::task::spawn_blocking(move || log.flush(Duration::from_secs(5)))
            .await
            .unwrap()
    );
    let lines: Vec<Value> = out
        .lines()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    let orders = lines.iter().find(|l| l["route"] == "orders").unwrap();
    assert_eq!(orders["request_id"], "embed-1");
    assert_eq!(orders["path"], "/orders/9");
    assert_eq!(orders["upstream"], "orders-svc");
    assert_eq!(orders["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert!(!out.text().contains("s3cr3tvalue"));
}
