//! What each layer adds to a request: a `service_fn` that answers at once,
//! bare and behind each layer, and behind all of them (request id, trace
//! with OpenTelemetry at 1% sampling, metrics, access log to a sink).
//!
//! Futures and bodies are polled by hand with a no-op waker: everything
//! here is ready at once, and a runtime would only add noise. Each
//! iteration builds the request, calls the service and drains the response
//! body (so that the body watches fire: in-flight gauge, bytes, log line).
//!
//! `cargo bench -p towergate-observe --bench overhead -- --warm-up-time 1 --measurement-time 3`
#![allow(missing_docs, clippy::unwrap_used)]

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body::Body;
use http_body_util::Full;
use tower::{Layer, Service, ServiceBuilder, service_fn};
use towergate_core::RouteMatch;
use towergate_observe::access_log::{AccessLogLayer, Sink};
use towergate_observe::otel::{self, OtelConfig};
use towergate_observe::{Metrics, RecordLayer, RequestIdLayer, TraceLayer};
use tracing::Dispatch;
use tracing_subscriber::prelude::*;

fn request() -> Request<Full<Bytes>> {
    let mut req = Request::get("/users/42?page=1")
        .header("user-agent", "bench")
        .body(Full::new(Bytes::new()))
        .unwrap();
    req.extensions_mut().insert(RouteMatch::new("users"));
    req
}

async fn handler<B>(_req: Request<B>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(
        b"hello, world",
    ))))
}

/// Calls `svc` once and drains the response, all synchronously.
fn once<S, B>(svc: &mut S)
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
    B: Body,
{
    let mut cx = Context::from_waker(Waker::noop());
    let fut = svc.call(request());
    let mut fut = pin!(fut);
    let Poll::Ready(rsp) = fut.as_mut().poll(&mut cx) else {
        panic!("the bench service is always ready");
    };
    let body = rsp.unwrap().into_body();
    let mut body = pin!(body);
    while let Poll::Ready(Some(frame)) = body.as_mut().poll_frame(&mut cx) {
        black_box(frame.is_ok());
    }
}

fn bench<S, B>(c: &mut Criterion, name: &str, dispatch: &Dispatch, mut svc: S)
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
    B: Body,
{
    tracing::dispatcher::with_default(dispatch, || {
        c.bench_function(name, |b| b.iter(|| once(&mut svc)));
    });
}

fn overhead(c: &mut Criterion) {
    // Spans of the sampled 1% go to a closed port; the export thread fails
    // quietly, off the measured path.
    let guard = otel::init(OtelConfig {
        endpoint: "http://127.0.0.1:9".into(),
        sample_ratio: 0.01,
        ..OtelConfig::default()
    })
    .unwrap();
    let none = Dispatch::none();
    let with_otel = Dispatch::new(tracing_subscriber::registry().with(otel::layer(&guard)));
    let metrics = Metrics::new();
    let log = AccessLogLayer::builder()
        .sink(Sink::writer(std::io::sink()))
        .metrics(metrics.clone())
        .build()
        .unwrap();

    // The OpenTelemetry subscriber is really in play: the inner service runs
    // in an enabled span whose context was injected toward it.
    tracing::dispatcher::with_default(&with_otel, || {
        let mut svc = TraceLayer::new().layer(service_fn(|req: Request<Full<Bytes>>| async move {
            assert!(!tracing::Span::current().is_disabled());
            assert!(req.headers().contains_key("traceparent"));
            handler(req).await
        }));
        once(&mut svc);
    });

    bench(c, "baseline", &none, service_fn(handler));
    bench(
        c,
        "request_id",
        &none,
        RequestIdLayer::new().layer(service_fn(handler)),
    );
    bench(
        c,
        "trace (no subscriber)",
        &none,
        TraceLayer::new().layer(service_fn(handler)),
    );
    bench(
        c,
        "trace (otel, 1% sampled)",
        &with_otel,
        TraceLayer::new().layer(service_fn(handler)),
    );
    bench(
        c,
        "metrics",
        &none,
        metrics.layer().layer(service_fn(handler)),
    );
    bench(
        c,
        "access_log",
        &none,
        log.clone().layer(service_fn(handler)),
    );
    let all = ServiceBuilder::new()
        .layer(RequestIdLayer::new())
        .layer(TraceLayer::new())
        .layer(metrics.layer())
        .layer(log.clone())
        .layer(RecordLayer::new())
        .service(service_fn(handler));
    bench(c, "all layers (otel 1%)", &with_otel, all);

    assert!(log.flush(std::time::Duration::from_secs(10)));
    eprintln!(
        "access log: {} lines dropped (writer behind the bench loop)",
        log.dropped()
    );
}

criterion_group!(benches, overhead);
criterion_main!(benches);
