//! Response aggregation: one incoming request fans out to several upstream
//! calls, in parallel where it can, and their JSON answers are merged into
//! one JSON object.
//!
//! An [`Aggregate`] is a `tower::Service<Request<B>>` built from named
//! *targets* (any `tower::Service` that answers HTTP requests: in the
//! gateway an upstream pool or proxy) and *calls* ([`Call`]): which target,
//! which method and path, which headers, how long to wait, whether the
//! answer is required, and how its JSON is shaped and where it lands. No
//! configuration file is involved; the gateway binary converts its config
//! into this builder.
//!
//! ```
//! use std::convert::Infallible;
//!
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use serde_json::{Value, json};
//! use tower::{ServiceExt, service_fn};
//! use towergate_aggregate::{Aggregate, Call};
//! use towergate_core::RouteMatch;
//!
//! fn json_response(v: Value) -> Result<Response<Full<Bytes>>, Infallible> {
//!     Ok(Response::builder()
//!         .header("content-type", "application/json")
//!         .body(Full::new(Bytes::from(v.to_string())))
//!         .unwrap())
//! }
//!
//! // Two upstreams, here plain functions: in the gateway, HTTP clients.
//! let users = service_fn(|req: Request<Full<Bytes>>| async move {
//!     let id = req.uri().path().trim_start_matches("/users/").to_owned();
//!     json_response(json!({"id": id, "name": "Ada", "customer_id": "c-7", "password": "x"}))
//! });
//! let billing = service_fn(|req: Request<Full<Bytes>>| async move {
//!     assert_eq!(req.uri(), "/customers/c-7?expand=plan");
//!     json_response(json!({"data": {"plan": "gold", "iban": "DE00"}}))
//! });
//!
//! let aggregate = Aggregate::builder()
//!     .target("users", users)
//!     .target("billing", billing)
//!     .call(Call::new("user", "users").path("/users/{params.id}").deny(["password"]))
//!     // Depends on `user`: runs once `user` answered, with its `customer_id`.
//!     .call(
//!         Call::new("customer", "billing")
//!             .path("/customers/{user.customer_id}?expand=plan")
//!             .pick("data")
//!             .allow(["plan"]),
//!     )
//!     .build()
//!     .unwrap();
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! // The router puts the matched route's parameters in the extensions.
//! let mut req = Request::new(());
//! req.extensions_mut().insert(RouteMatch {
//!     route: "home".into(),
//!     params: vec![("id".into(), "42".into())],
//! });
//! let rsp = aggregate.oneshot(req).await.unwrap();
//! assert_eq!(rsp.status(), 200);
//! assert_eq!(rsp.headers()["content-type"], "application/json");
//! let body: Value = serde_json::from_slice(&rsp.into_body().collect().await.unwrap().to_bytes()).unwrap();
//! assert_eq!(
//!     body,
//!     json!({
//!         "user": {"id": "42", "name": "Ada", "customer_id": "c-7"},
//!         "customer": {"plan": "gold"},
//!     })
//! );
//! # });
//! ```
//!
//! # Templates
//!
//! A call's path (with optional query) and the values of
//! [`Call::set_header`] are templates. `{source.field}` inserts a value;
//! `{{` and `}}` are literal braces.
//!
//! | Variable | Value |
//! |---|---|
//! | `{params.NAME}` | the path parameter `NAME` of the [`RouteMatch`](towergate_core::RouteMatch) in the request extensions |
//! | `{query.NAME}` | the first query parameter `NAME` of the incoming request, percent-decoded |
//! | `{header.NAME}` | the first value of the incoming header `NAME` (visible ASCII) |
//! | `{identity.FIELD}` | [`Identity::field`](towergate_core::Identity::field) of the [`Identity`](towergate_core::Identity) in the extensions: `sub`, `consumer`, `iss`, or a claim path (`org.id`) |
//! | `{CALL.path}` | the field at a dotted path (`a.b`, `items.0.id`) of the **raw** JSON answer of the call `CALL` (before its `pick`/`allow`/`deny`/`rename`): a string as is, a number or boolean in JSON form |
//!
//! Values are percent-encoded for their position: in the path, a value is
//! one segment (`/`, `?`, `#`, `%`, space... are escaped); after the `?`, a
//! value is a query component (`&`, `=`, `+`, `#` escaped too). Header
//! values are inserted as they are, and must be valid header values.
//!
//! [`AggregateBuilder::build`] refuses a template that does not parse, a
//! path that does not start with `/`, an unknown source (`{x.y}` where `x`
//! is not a source or a call name), and the other mistakes listed in
//! [`BuildError`].
//!
//! # Dependencies and scheduling
//!
//! A call whose templates reference another call (`{user.customer_id}`)
//! depends on it. Dependencies form a graph; a cycle is a build error
//! ([`BuildError::Cycle`], naming the calls: `a -> b -> a`). Each call
//! starts as soon as all its dependencies succeeded (there are no stage
//! barriers), at most [`max_concurrent_calls`](AggregateBuilder::max_concurrent_calls)
//! at a time per aggregated request (default 16). A call's own
//! [`timeout`](Call::timeout) starts when it gets a concurrency slot; the
//! overall [`deadline`](AggregateBuilder::deadline) (default 10 s) covers
//! the whole request.
//!
//! # Sub-requests
//!
//! Each call sends an origin-form request (path and query, no authority:
//! the target knows where to send it) with the call's method, an empty body,
//! `Accept: application/json`, the headers named by
//! [`pass_header`](Call::pass_header) (all values) when the incoming request
//! has them, then the [`set_header`](Call::set_header) headers (which
//! replace). Its extensions are a clone of the incoming request's, so the
//! target still sees the client address, request id and identity. The
//! incoming body is ignored.
//!
//! # Failures
//!
//! A call fails ([`CallFailure`]) when:
//!
//! - a request input of its templates is missing (`missing_input`) or cannot
//!   go in a header (`invalid_input`);
//! - a referenced field of a dependency's answer is absent, `null`, an
//!   object or an array (`dependency_field_missing`);
//! - a call it depends on failed: it is not made (`dependency_failed`);
//! - the target errs (`transport`), answers with a non-2xx status
//!   (`upstream_status`), answers without a JSON content type
//!   (`application/json` or `*/*+json`) or with a body that does not parse
//!   (`not_json`), or with a body larger than
//!   [`max_response_bytes`](AggregateBuilder::max_response_bytes), default
//!   1 MiB, read through `http_body_util::Limited` (`too_large`);
//! - its timeout elapses (`timeout`) or the deadline does first (`deadline`).
//!
//! An **optional** call ([`Call::required(false)`](Call::required)) that
//! fails is *missing*: a grouped call leaves `null` under its group, a
//! top-level one leaves nothing. A call skipped because a dependency failed
//! is missing too. When anything is missing, the answer (still 200) has the
//! header [`X-Aggregate-Partial`](PARTIAL_HEADER) listing the missing calls
//! by name in declaration order (`orders, notifications`) and the same list
//! as the body member [`"_partial"`](PARTIAL_FIELD).
//!
//! A **required** call (the default) that fails makes the whole answer an
//! `application/problem+json` problem, with extension members `call` (the
//! call's name) and `reason` (the code above) and, when a dependency failed,
//! `dependency` and `dependency_reason`:
//!
//! | Failure | Status |
//! |---|---|
//! | `missing_input`, `invalid_input` | 400 (the problem's `detail` names the variable) |
//! | upstream 4xx, 503, 504 | the same status (e.g. 404 for an unknown user; 503/504 from a gateway or balancer in front of the upstream) |
//! | upstream 500, 502, other 5xx or non-2xx, `transport`, `not_json`, `too_large`, `dependency_field_missing` | 502 |
//! | `timeout`, `deadline` | 504 |
//! | `dependency_failed` | the status of the dependency's failure |
//!
//! The answer is sent as soon as a required call fails; calls still in flight
//! are cancelled. When several required calls have failed, the first in
//! declaration order that failed by itself decides. The problem's `detail`
//! never carries internal error text; the log (`tracing`, at `warn`) does.
//! When the deadline passes, finished calls are used, unfinished optional
//! calls are missing, and an unfinished required call gives 504.
//!
//! # Merging
//!
//! Each call's answer is first shaped, in this order:
//! [`pick`](Call::pick) (keep the value at a dotted path; `null` if absent),
//! [`allow`](Call::allow) (keep only these dotted paths),
//! [`deny`](Call::deny) (remove these), then each [`rename`](Call::rename)
//! in order (move `from` to `to`, creating objects on the way). When the
//! picked value is an array, `allow`, `deny` and `rename` apply to each of
//! its object elements; other values pass through them unchanged.
//!
//! Then, starting from `{}`, calls are applied in declaration order:
//!
//! - a grouped call (the default; the group is the call name unless
//!   [`group`](Call::group) says otherwise) sets `out[group] = value`,
//!   replacing whatever an earlier call put there;
//! - a [`merge_top_level`](Call::merge_top_level) call deep-merges its object
//!   into `out`: objects merge recursively, and on a conflict between
//!   anything else the later call wins. A top-level value that is not an
//!   object (array, string, number, `null`) goes under its group instead.
//!
//! `_partial` is added last, so it replaces a member of that name.
//!
//! # Example in an axum router
//!
//! `Aggregate` is `Clone`, always ready and infallible, so it mounts directly:
//! `Router::new().route_service("/screens/home", aggregate)`.

mod builder;
mod call;
pub mod error;
mod future;
mod merge;
mod plan;
mod service;
mod template;

pub use builder::{
    AggregateBuilder, DEFAULT_DEADLINE, DEFAULT_MAX_CONCURRENT_CALLS, DEFAULT_MAX_RESPONSE_BYTES,
};
pub use call::Call;
pub use error::{BuildError, CallFailure};
pub use future::ResponseFuture;
pub use service::{Aggregate, PARTIAL_FIELD, PARTIAL_HEADER};
