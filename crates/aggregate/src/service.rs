//! [`Aggregate`]: the service, and the scheduler that runs one aggregated
//! request.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use http::header::{ACCEPT, CONTENT_TYPE};
use http::request::Parts;
use http::{Extensions, HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri};
use http_body::Body as _;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Collected, Full, LengthLimitError, Limited};
use serde_json::{Map, Value};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tower::{Service, ServiceExt};
use towergate_core::{BoxError, Identity, Problem, RequestId, RouteMatch};

use crate::builder::{AggregateBuilder, Inner, Target};
use crate::error::CallFailure;
use crate::future::ResponseFuture;
use crate::merge::{self, FieldPath};
use crate::template::{Source, Var};

/// The header that lists the calls missing from a partial answer, in
/// declaration order: `X-Aggregate-Partial: orders, notifications`.
pub const PARTIAL_HEADER: HeaderName = HeaderName::from_static("x-aggregate-partial");

/// The member of the aggregated JSON that lists the missing calls, present
/// only when something is missing.
pub const PARTIAL_FIELD: &str = "_partial";

/// A service that answers one request by making several upstream calls and
/// merging their JSON answers. See the [crate docs](crate) for semantics.
///
/// Cheap to clone: the definition is shared behind an `Arc`. Always ready;
/// never fails (`Error = Infallible`): a failed required call is a
/// problem+json answer.
#[derive(Clone, Debug)]
pub struct Aggregate {
    inner: Arc<Inner>,
}

/// What one call produced: its raw JSON, or why there is none.
type Outcome = Option<Result<Value, CallFailure>>;

/// The parts of the incoming request that templates and sub-requests use.
#[derive(Debug)]
struct Input {
    route: Option<RouteMatch>,
    identity: Option<Identity>,
    request_id: Option<RequestId>,
    query: Vec<(String, String)>,
    headers: HeaderMap,
    extensions: Extensions,
}

/// The bookkeeping of one aggregated request.
#[derive(Debug)]
struct Run {
    outcomes: Vec<Outcome>,
    /// How many dependencies of each call have not succeeded yet.
    waiting: Vec<usize>,
    /// Calls whose dependencies all succeeded, not started yet.
    ready: VecDeque<usize>,
}

// === impl Aggregate ===

impl Aggregate {
    /// A builder with no targets and no calls.
    pub fn builder() -> AggregateBuilder {
        AggregateBuilder::new()
    }

    pub(crate) fn from_inner(inner: Arc<Inner>) -> Self {
        Self { inner }
    }

    /// The names of the calls, in declaration order.
    pub fn call_names(&self) -> impl Iterator<Item = &str> {
        self.inner.calls.iter().map(|c| c.name.as_str())
    }
}

impl<B> Service<Request<B>> for Aggregate {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The incoming body is not used: sub-requests have empty bodies.
        let (parts, _body) = req.into_parts();
        ResponseFuture::new(run(self.inner.clone(), Input::new(parts)))
    }
}

// === impl Input ===

impl Input {
    fn new(parts: Parts) -> Self {
        let query = parts
            .uri
            .query()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        Self {
            route: parts.extensions.get::<RouteMatch>().cloned(),
            identity: parts.extensions.get::<Identity>().cloned(),
            request_id: parts.extensions.get::<RequestId>().cloned(),
            query,
            headers: parts.headers,
            extensions: parts.extensions,
        }
    }
}

// === impl Run ===

impl Run {
    /// Records the outcome of call `i`, makes its dependents ready, or, when
    /// it failed, fails them (and theirs) with `DependencyFailed`.
    fn complete(&mut self, inner: &Inner, i: usize, res: Result<Value, CallFailure>) {
        let cascade = match &res {
            Ok(_) => None,
            Err(f @ CallFailure::DependencyFailed { .. }) => Some(f.clone()),
            Err(f) => Some(CallFailure::DependencyFailed {
                dependency: inner.calls[i].name.clone(),
                cause: Box::new(f.clone()),
            }),
        };
        if let Err(f) = &res {
            tracing::debug!(call = %inner.calls[i].name, reason = f.reason(), "aggregate call failed");
        }
        self.outcomes[i] = Some(res);
        for &d in &inner.plan.dependents[i] {
            if self.outcomes[d].is_some() {
                continue;
            }
            match &cascade {
                Some(f) => self.complete(inner, d, Err(f.clone())),
                None => {
                    self.waiting[d] = self.waiting[d].saturating_sub(1);
                    if self.waiting[d] == 0 {
                        self.ready.push_back(d);
                    }
                }
            }
        }
    }

    /// The required call whose failure decides the answer: the first one in
    /// declaration order that failed by itself, else the first one skipped
    /// because of a dependency.
    fn required_failure<'a>(&'a self, inner: &Inner) -> Option<(usize, &'a CallFailure)> {
        let failed = || {
            inner
                .calls
                .iter()
                .zip(&self.outcomes)
                .enumerate()
                .filter_map(|(i, (c, o))| match o {
                    Some(Err(f)) if c.required => Some((i, f)),
                    _ => None,
                })
        };
        failed()
            .find(|(_, f)| !matches!(f, CallFailure::DependencyFailed { .. }))
            .or_else(|| failed().next())
    }
}

/// Runs one aggregated request: starts each call as soon as its
/// dependencies succeeded, at most `max_concurrent_calls` at a time, all
/// under the deadline; then merges.
async fn run(inner: Arc<Inner>, input: Input) -> Response<Full<Bytes>> {
    let n = inner.calls.len();
    let deadline = Instant::now() + inner.deadline;
    let semaphore = Arc::new(Semaphore::new(inner.max_concurrent_calls));
    let mut state = Run {
        outcomes: vec![None; n],
        waiting: inner.plan.deps.iter().map(Vec::len).collect(),
        ready: VecDeque::new(),
    };
    state
        .ready
        .extend((0..n).filter(|&i| inner.plan.deps[i].is_empty()));
    let mut running = FuturesUnordered::new();

    loop {
        if let Some((i, f)) = state.required_failure(&inner) {
            // Dropping `running` cancels the calls still in flight.
            return failure_response(&inner, i, f, &input);
        }
        while let Some(i) = state.ready.pop_front() {
            match prepare(&inner, i, &input, &state.outcomes) {
                Ok(req) => running.push(call_one(inner.clone(), i, req, semaphore.clone())),
                Err(f) => state.complete(&inner, i, Err(f)),
            }
        }
        // A call that failed before being sent (missing input) may be
        // required: answer now rather than after the next completion.
        if let Some((i, f)) = state.required_failure(&inner) {
            return failure_response(&inner, i, f, &input);
        }
        if running.is_empty() {
            break;
        }
        match tokio::time::timeout_at(deadline, running.next()).await {
            Ok(Some((i, res))) => state.complete(&inner, i, res),
            Ok(None) => break,
            Err(_elapsed) => {
                tracing::warn!(deadline = ?inner.deadline, "aggregate deadline reached");
                break;
            }
        }
    }
    drop(running);

    for o in &mut state.outcomes {
        if o.is_none() {
            *o = Some(Err(CallFailure::Deadline));
        }
    }
    if let Some((i, f)) = state.required_failure(&inner) {
        return failure_response(&inner, i, f, &input);
    }
    compose(&inner, state.outcomes)
}

/// Builds the sub-request of call `i`.
fn prepare(
    inner: &Inner,
    i: usize,
    input: &Input,
    outcomes: &[Outcome],
) -> Result<Request<Full<Bytes>>, CallFailure> {
    let call = &inner.calls[i];
    let path = call.path.render_path(
        |v| resolve(inner, v, input, outcomes),
        |v| match v.source {
            // An earlier call's answer put it there, not the client.
            Source::Call(_) => CallFailure::DependencyFieldInvalid {
                variable: v.text.clone(),
            },
            _ => CallFailure::InvalidInput {
                variable: v.text.clone(),
            },
        },
    )?;
    let uri = Uri::try_from(path).map_err(|_| CallFailure::InvalidInput {
        variable: call.path.as_str().to_owned(),
    })?;

    let mut req = Request::new(Full::new(Bytes::new()));
    *req.method_mut() = call.method.clone();
    *req.uri_mut() = uri;
    // The target (the gateway's proxy) still needs the client address,
    // request id and identity the outer layers recorded.
    *req.extensions_mut() = input.extensions.clone();
    let headers = req.headers_mut();
    headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
    for name in &call.pass_headers {
        let mut values = input.headers.get_all(name).iter().peekable();
        if values.peek().is_some() {
            headers.remove(name);
        }
        for v in values {
            headers.append(name.clone(), v.clone());
        }
    }
    for (name, template) in &call.set_headers {
        let value = template.render(|v| {
            let s = resolve(inner, v, input, outcomes)?;
            // Checked per variable, so that the failure names it.
            HeaderValue::try_from(s.as_str()).map_err(|_| CallFailure::InvalidInput {
                variable: v.text.clone(),
            })?;
            Ok(s)
        })?;
        let value = HeaderValue::try_from(value).map_err(|_| CallFailure::InvalidInput {
            variable: template.as_str().to_owned(),
        })?;
        headers.insert(name.clone(), value);
    }
    Ok(req)
}

/// The raw (unescaped) value of a template variable.
fn resolve(
    inner: &Inner,
    v: &Var,
    input: &Input,
    outcomes: &[Outcome],
) -> Result<String, CallFailure> {
    let value = match &v.source {
        Source::Params => input
            .route
            .as_ref()
            .and_then(|r| r.param(&v.field))
            .map(str::to_owned),
        Source::Query => input
            .query
            .iter()
            .find(|(k, _)| *k == v.field)
            .map(|(_, x)| x.clone()),
        Source::Header => input
            .headers
            .get(v.field.as_str())
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned),
        Source::Identity => input.identity.as_ref().and_then(|id| id.field(&v.field)),
        Source::Call(c) => {
            let raw = inner
                .index
                .get(c)
                .and_then(|&j| outcomes.get(j))
                .and_then(|o| o.as_ref())
                .and_then(|r| r.as_ref().ok());
            let field = FieldPath::parse(&v.field)
                .and_then(|p| raw.and_then(|raw| merge::get_path(raw, &p)));
            return match field {
                Some(Value::String(s)) => Ok(s.clone()),
                Some(x @ (Value::Number(_) | Value::Bool(_))) => Ok(x.to_string()),
                _ => Err(CallFailure::DependencyFieldMissing {
                    variable: v.text.clone(),
                }),
            };
        }
    };
    value.ok_or_else(|| CallFailure::MissingInput {
        variable: v.text.clone(),
    })
}

/// Makes call `i`: waits for a concurrency slot, then sends, under the
/// call's timeout.
async fn call_one(
    inner: Arc<Inner>,
    i: usize,
    req: Request<Full<Bytes>>,
    semaphore: Arc<Semaphore>,
) -> (usize, Result<Value, CallFailure>) {
    let call = &inner.calls[i];
    // The semaphore is never closed; failing the call beats panicking.
    let Ok(_permit) = semaphore.acquire_owned().await else {
        return (i, Err(CallFailure::Transport));
    };
    let target = inner.targets[call.target].clone();
    let exchange = exchange(target, req, inner.max_response_bytes, &call.name);
    let res = match call.timeout {
        Some(t) => tokio::time::timeout(t, exchange).await.unwrap_or_else(|_| {
            tracing::warn!(call = %call.name, timeout = ?t, "aggregate call timed out");
            Err(CallFailure::Timeout)
        }),
        None => exchange.await,
    };
    (i, res)
}

/// Sends one sub-request and reads its JSON answer.
async fn exchange(
    target: Target,
    req: Request<Full<Bytes>>,
    max_bytes: usize,
    name: &str,
) -> Result<Value, CallFailure> {
    let rsp = target.oneshot(req).await.map_err(|e| {
        tracing::warn!(call = %name, error = %e, "aggregate call: transport error");
        CallFailure::Transport
    })?;
    let status = rsp.status();
    if !status.is_success() {
        tracing::warn!(call = %name, %status, "aggregate call: upstream answered an error");
        return Err(CallFailure::Status(status));
    }
    if !is_json(rsp.headers()) {
        tracing::warn!(
            call = %name,
            content_type = ?rsp.headers().get(CONTENT_TYPE),
            "aggregate call: answer is not JSON"
        );
        return Err(CallFailure::NotJson);
    }
    let body = rsp.into_body();
    let too_large = || {
        tracing::warn!(call = %name, max_bytes, "aggregate call: answer too large");
        CallFailure::TooLarge
    };
    if body.size_hint().lower() > u64::try_from(max_bytes).unwrap_or(u64::MAX) {
        return Err(too_large());
    }
    let bytes = match read_limited(body, max_bytes).await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => return Err(too_large()),
        Err(e) => {
            tracing::warn!(call = %name, error = %e, "aggregate call: body error");
            return Err(CallFailure::Transport);
        }
    };
    serde_json::from_slice(&bytes).map_err(|e| {
        tracing::warn!(call = %name, error = %e, "aggregate call: invalid JSON");
        CallFailure::NotJson
    })
}

/// Reads a body through `Limited`, as a boxed `Send` future: written inline
/// in the `async fn`, rustc fails to prove the future `Send` ("implementation
/// of `From` is not general enough", a known higher-ranked lifetime
/// limitation of async blocks).
fn read_limited(
    body: UnsyncBoxBody<Bytes, BoxError>,
    max_bytes: usize,
) -> Pin<Box<dyn Future<Output = Result<Collected<Bytes>, BoxError>> + Send>> {
    Box::pin(Limited::new(body, max_bytes).collect())
}

/// Whether the content type is `application/json` or `*/*+json`.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(ct) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .split_once('/')
            .is_some_and(|(_, sub)| sub.ends_with("+json"))
}

/// The problem answer for a required call that failed.
fn failure_response(
    inner: &Inner,
    i: usize,
    f: &CallFailure,
    input: &Input,
) -> Response<Full<Bytes>> {
    let name = &inner.calls[i].name;
    let status = f.status();
    let detail = match f {
        CallFailure::MissingInput { variable } => {
            format!("call `{name}` needs `{variable}`, which the request lacks")
        }
        CallFailure::InvalidInput { variable } => {
            format!("the value of `{variable}` cannot be sent to call `{name}`")
        }
        CallFailure::Status(s) if s.is_client_error() => {
            format!("call `{name}` answered {}", s.as_u16())
        }
        CallFailure::Timeout => format!("call `{name}` timed out"),
        CallFailure::Deadline => {
            format!("the aggregate deadline passed before call `{name}` finished")
        }
        CallFailure::DependencyFailed { dependency, .. } => {
            format!("call `{name}` depends on call `{dependency}`, which failed")
        }
        _ => format!("call `{name}` failed"),
    };
    tracing::warn!(
        call = %name,
        reason = f.reason(),
        status = status.as_u16(),
        "required aggregate call failed: {f}"
    );
    let mut problem = Problem::new(status)
        .detail(detail)
        .extension("call", name.as_str())
        .extension("reason", f.reason());
    if let CallFailure::DependencyFailed { dependency, cause } = f {
        problem = problem
            .extension("dependency", dependency.as_str())
            .extension("dependency_reason", cause.reason());
    }
    if let Some(id) = &input.request_id {
        problem = problem.instance(id.as_str());
    }
    problem.into_full_response()
}

/// Merges the results in declaration order into the answer.
fn compose(inner: &Inner, outcomes: Vec<Outcome>) -> Response<Full<Bytes>> {
    let mut out = Map::new();
    let mut missing = Vec::new();
    for (call, outcome) in inner.calls.iter().zip(outcomes) {
        match outcome {
            Some(Ok(v)) => merge::place(
                &mut out,
                &call.group,
                call.top_level,
                Some(call.shape.apply(v)),
            ),
            _ => {
                missing.push(call.name.as_str());
                merge::place(&mut out, &call.group, call.top_level, None);
            }
        }
    }
    if !missing.is_empty() {
        out.insert(
            PARTIAL_FIELD.to_owned(),
            Value::Array(missing.iter().map(|&m| Value::from(m)).collect()),
        );
    }
    let body = match serde_json::to_vec(&Value::Object(out)) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "aggregate: cannot serialise the answer");
            return Problem::new(StatusCode::INTERNAL_SERVER_ERROR).into_full_response();
        }
    };
    let mut rsp = Response::new(Full::new(Bytes::from(body)));
    rsp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if !missing.is_empty() {
        // Call names are checked to be header-safe at build time.
        if let Ok(v) = HeaderValue::try_from(missing.join(", ")) {
            rsp.headers_mut().insert(PARTIAL_HEADER, v);
        }
    }
    rsp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        let check = |ct: &str| {
            let mut h = HeaderMap::new();
            h.insert(CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
            is_json(&h)
        };
        assert!(check("application/json"));
        assert!(check("Application/JSON; charset=utf-8"));
        assert!(check("application/problem+json"));
        assert!(check("application/vnd.api+json"));
        assert!(!check("text/html"));
        assert!(!check("text/plain; note=json"));
        assert!(!is_json(&HeaderMap::new()));
    }
}
