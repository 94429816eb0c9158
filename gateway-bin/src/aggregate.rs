//! Config → `towergate-aggregate`: an aggregate route's calls go through the
//! same clients, pools, retries and timeouts as proxied routes (each call's
//! `upstream` is resolved exactly like a route's), and the route's auth and
//! rate limits apply once, in front of the whole aggregate.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, Method, Request, Response};
use http_body_util::Full;
use tower::ServiceExt;
use towergate_aggregate::{Aggregate, Call};
use towergate_core::BoxError;
use towergate_observe::RecordUpstreamLayer;

use crate::config::schema::{AggregateConfig, Route};
use crate::config::validate::size_value;
use crate::config::{ConfigError, parse_duration};
use crate::stack::{Forward, ForwardOpts, Forwards, RouteService, boxed};

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
const B3: HeaderName = HeaderName::from_static("b3");

/// The most calls of one request in flight at once that a configuration
/// may ask for (beyond it tokio's semaphore refuses to be built).
const MAX_CONCURRENT_CALLS: usize = 10_000;

/// A call's target, answering its operational failures itself as the
/// proxied routes do (502, 503 no healthy endpoint or open circuit, 504
/// timeout), so the aggregate reports the right status for a required
/// call.
fn answered<S, B>(
    svc: S,
) -> impl tower::Service<
    Request<Full<Bytes>>,
    Response = Response<axum::body::Body>,
    Error = BoxError,
    Future = impl Send + 'static,
> + Clone
+ Send
+ Sync
+ 'static
where
    S: tower::Service<Request<Full<Bytes>>, Response = Response<B>, Error = BoxError>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    svc.map_result(|r: Result<Response<B>, BoxError>| {
        Ok::<_, BoxError>(match r {
            Ok(rsp) => rsp.map(axum::body::Body::new),
            Err(e) => towergate_balance::error::to_problem(&*e)
                .unwrap_or_else(|| towergate_proxy::error::to_problem(&*e))
                .into_full_response()
                .map(axum::body::Body::new),
        })
    })
}

/// The aggregate target of route `r`.
pub(crate) fn target(
    a: &AggregateConfig,
    r: &Route,
    forwards: &mut Forwards<'_>,
    request_id_header: Option<&str>,
    p: &str,
) -> Result<RouteService, Vec<ConfigError>> {
    let mut errs = Vec::new();
    let mut b = Aggregate::builder();
    let request_id = request_id_header
        .and_then(|h| HeaderName::from_bytes(h.as_bytes()).ok())
        .unwrap_or(HeaderName::from_static("x-request-id"));
    if let Some(d) = &a.deadline {
        match parse_duration(d) {
            Ok(d) => b = b.deadline(d),
            Err(e) => errs.push(ConfigError::new(format!("{p}.deadline"), e)),
        }
    }
    if let Some(m) = &a.max_response_size {
        match size_value(m) {
            Ok(n) => b = b.max_response_bytes(usize::try_from(n).unwrap_or(usize::MAX)),
            Err(e) => errs.push(ConfigError::new(format!("{p}.max_response_size"), e)),
        }
    }
    if let Some(n) = a.max_concurrent_calls {
        if n > MAX_CONCURRENT_CALLS {
            errs.push(ConfigError::new(
                format!("{p}.max_concurrent_calls"),
                format!("at most {MAX_CONCURRENT_CALLS}"),
            ));
        } else {
            b = b.max_concurrent_calls(n);
        }
    }
    // One target per upstream the calls name, built as a route's would be.
    let mut targets = HashSet::new();
    for (i, c) in a.calls.iter().enumerate() {
        let cp = format!("{p}.calls[{i}]");
        if targets.insert(c.upstream.clone()) {
            let opts = ForwardOpts {
                preserve_host: false,
                host_rewrite: None,
                timeout: None,
                route: r.name.clone(),
            };
            match forwards.get(&c.upstream, &opts, &format!("{cp}.upstream")) {
                Ok(Forward::One(proxy)) => {
                    let record = RecordUpstreamLayer::new(proxy.upstream().to_owned())
                        .forget_when_dropped(true)
                        .metrics(forwards.metrics())
                        .mark_response(false)
                        .record_request(false);
                    b = b.target(
                        c.upstream.clone(),
                        answered(tower::Layer::layer(&record, proxy)),
                    );
                }
                Ok(Forward::Pool(pool, _)) => b = b.target(c.upstream.clone(), answered(pool)),
                Err(e) => errs.extend(e),
            }
        }
        let mut call = Call::new(c.name.clone(), c.upstream.clone()).path(c.path.clone());
        // The request id and the trace context follow every call, as they
        // follow a proxied request.
        for h in [request_id.clone(), TRACEPARENT, TRACESTATE, B3] {
            call = call.pass_header(h);
        }
        if let Some(m) = &c.method {
            match Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
                Ok(m) => call = call.method(m),
                Err(_) => errs.push(ConfigError::new(
                    format!("{cp}.method"),
                    format!("`{m}` is not an HTTP method"),
                )),
            }
        }
        if let Some(t) = &c.timeout {
            match parse_duration(t) {
                Ok(t) if t > Duration::ZERO => call = call.timeout(t),
                Ok(_) => errs.push(ConfigError::new(
                    format!("{cp}.timeout"),
                    "must not be zero",
                )),
                Err(e) => errs.push(ConfigError::new(format!("{cp}.timeout"), e)),
            }
        }
        call = call.required(c.required.unwrap_or(true));
        for (j, h) in c.pass_headers.iter().enumerate() {
            match HeaderName::from_bytes(h.as_bytes()) {
                Ok(h) => call = call.pass_header(h),
                Err(_) => errs.push(ConfigError::new(
                    format!("{cp}.pass_headers[{j}]"),
                    format!("`{h}` is not a header name"),
                )),
            }
        }
        for (k, v) in &c.set_headers {
            match HeaderName::from_bytes(k.as_bytes()) {
                Ok(h) => call = call.set_header(h, v.clone()),
                Err(_) => errs.push(ConfigError::new(
                    format!("{cp}.set_headers.{k}"),
                    format!("`{k}` is not a header name"),
                )),
            }
        }
        if let Some(g) = &c.group {
            call = call.group(g.clone());
        }
        if c.merge {
            call = call.merge_top_level();
        }
        if let Some(pick) = &c.pick {
            call = call.pick(pick.clone());
        }
        if !c.allow.is_empty() {
            call = call.allow(c.allow.iter().cloned());
        }
        if !c.deny.is_empty() {
            call = call.deny(c.deny.iter().cloned());
        }
        for (from, to) in &c.rename {
            call = call.rename(from.clone(), to.clone());
        }
        b = b.call(call);
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    match b.build() {
        Ok(agg) => Ok(boxed(agg)),
        Err(e) => Err(vec![ConfigError::new(format!("{p}.calls"), e.to_string())]),
    }
}
