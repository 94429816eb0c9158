//! Shared helpers for the routing integration tests.

// Each test crate uses a different subset of these helpers.
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use http::{Request, Response};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::Service;
use towergate_core::{RouteMatch, RoutedPath};

/// A route's service that answers with a JSON echo of what it received:
/// its own name, the `RouteMatch` and `RoutedPath` the router inserted, and
/// the request line.
#[derive(Clone, Debug)]
pub(crate) struct Echo(pub(crate) Arc<str>);

impl Echo {
    pub(crate) fn named(name: &str) -> Self {
        Self(name.into())
    }
}

impl<B> Service<Request<B>> for Echo {
    type Response = Response<String>;
    type Error = Infallible;
    type Future = Ready<Result<Response<String>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let m = req.extensions().get::<RouteMatch>();
        let params: serde_json::Map<String, Value> = m
            .map(|m| {
                m.params
                    .iter()
                    .map(|(k, v)| (k.to_string(), Value::String(v.clone())))
                    .collect()
            })
            .unwrap_or_default();
        let body = json!({
            "service": &*self.0,
            "route": m.map(|m| m.route.to_string()),
            "params": params,
            "method": req.method().as_str(),
            "path": req.uri().path(),
            "query": req.uri().query(),
            "routed": req.extensions().get::<RoutedPath>().map(|r| r.0.as_str()),
        });
        ready(Ok(Response::new(body.to_string())))
    }
}

/// Reads a whole response body as JSON.
pub(crate) async fn json<B>(rsp: Response<B>) -> Value
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let bytes = rsp
        .into_body()
        .collect()
        .await
        .expect("response body")
        .to_bytes();
    serde_json::from_slice(&bytes).expect("response body is JSON")
}

/// Converts any response into an axum one, for `towergate_test::assert_problem`.
pub(crate) fn to_axum<B>(rsp: Response<B>) -> Response<Body>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    rsp.map(Body::new)
}
