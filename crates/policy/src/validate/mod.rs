//! Request validation per route: method and content-type allow-lists,
//! required query parameters and headers, and JSON bodies checked against a
//! JSON Schema.
//!
//! Checks run in this order, and the first that fails answers with an RFC
//! 9457 problem (the upstream is not called):
//!
//! | check | answer |
//! |---|---|
//! | method not in [`methods`](ValidateLayerBuilder::methods) | `405` with `Allow` |
//! | a request with a body whose `Content-Type` essence is not in [`content_types`](ValidateLayerBuilder::content_types) (or which has none) | `415` with `accepted` |
//! | required query parameters and headers missing or not matching | `400`, `errors: [{in, name, message}]` for each |
//! | with a schema: `Content-Type` not `application/json` nor `*/*+json` | `415` |
//! | with a schema: body over [`max_body_bytes`](ValidateLayerBuilder::max_body_bytes) (declared or streamed) | `413` |
//! | with a schema: body not whole within [`body_timeout`](ValidateLayerBuilder::body_timeout) | `408` |
//! | with a schema: body not JSON | `400` with `line` and `column` |
//! | with a schema: body not valid | `400`, `errors: [{path, message}]` |
//!
//! Patterns match the *whole* value (they are anchored). A request "has a
//! body" when its `Content-Length` is above 0, or it has no
//! `Content-Length` and a `Transfer-Encoding` or a body that is not known
//! to be empty.
//!
//! The schema applies to `POST`, `PUT` and `PATCH` requests, and to any
//! other request that has a body; a `POST` without a body is refused as
//! invalid JSON. The body is read once, through
//! [`http_body_util::Limited`], and the very bytes read are forwarded as
//! [`ValidatedBody::Buffered`] with a correct `Content-Length`; without a
//! schema (or when it does not apply) the body streams through untouched as
//! [`ValidatedBody::Original`]. Schema errors are listed by instance path
//! (a JSON pointer such as `/items/0/qty`) and message, sorted, at most 50.
//! `$ref`s are resolved inside the schema only: nothing is ever fetched.
//! `format` keywords are asserted.
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Method, Request, Response, StatusCode};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use towergate_policy::ValidateLayer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let layer = ValidateLayer::builder()
//!     .methods([Method::POST])
//!     .json_schema(serde_json::json!({
//!         "type": "object",
//!         "required": ["qty"],
//!         "properties": {"qty": {"type": "integer", "minimum": 1}}
//!     }))
//!     .build()?;
//! let svc = ServiceBuilder::new()
//!     .layer(layer)
//!     .service(service_fn(|_req| async { Ok::<_, Infallible>(Response::new(String::new())) }));
//!
//! let post = |body: &'static str| {
//!     Request::post("/orders")
//!         .header("content-type", "application/json")
//!         .body(body.to_owned())
//! };
//! let rsp = svc.clone().oneshot(post(r#"{"qty": 2}"#)?).await?;
//! assert_eq!(rsp.status(), StatusCode::OK);
//! let rsp = svc.clone().oneshot(post(r#"{"qty": 0}"#)?).await?;
//! assert_eq!(rsp.status(), StatusCode::BAD_REQUEST);
//! let rsp = svc.clone().oneshot(Request::get("/orders").body(String::new())?).await?;
//! assert_eq!(rsp.status(), StatusCode::METHOD_NOT_ALLOWED);
//! assert_eq!(rsp.headers()["allow"], "POST");
//! # Ok(())
//! # }
//! ```

mod body;
mod service;

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use regex::Regex;
use tower::Layer;

pub use self::body::ValidatedBody;
pub use self::service::{ResponseFuture, Validate};
use crate::BuildError;
use crate::media_type::MediaRange;

/// The default limit of a body checked against a schema: 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// How long a body read for validation may take by default: the gateway's
/// default upstream `timeout`.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// At most this many schema errors are listed in a problem.
pub const MAX_LISTED_ERRORS: usize = 50;

/// Validates requests before they reach the inner service; see the
/// [module docs](crate::validate).
#[derive(Clone, Debug)]
#[must_use]
pub struct ValidateLayer {
    config: Arc<Config>,
}

/// Builds a [`ValidateLayer`].
#[derive(Clone, Debug)]
#[must_use]
pub struct ValidateLayerBuilder {
    methods: Option<Vec<Method>>,
    content_types: Option<Vec<String>>,
    queries: Vec<(String, Option<Regex>)>,
    headers: Vec<(HeaderName, Option<Regex>)>,
    schema: Option<serde_json::Value>,
    max_body: usize,
    body_timeout: Duration,
}

#[derive(Debug)]
struct Config {
    methods: Option<(Vec<Method>, HeaderValue)>,
    content_types: Option<(Vec<MediaRange>, serde_json::Value)>,
    queries: Vec<(String, Option<Regex>)>,
    headers: Vec<(HeaderName, Option<Regex>)>,
    schema: Option<jsonschema::Validator>,
    max_body: usize,
    body_timeout: Duration,
}

// === impl ValidateLayer ===

impl ValidateLayer {
    /// A builder that checks nothing yet.
    pub fn builder() -> ValidateLayerBuilder {
        ValidateLayerBuilder {
            methods: None,
            content_types: None,
            queries: Vec::new(),
            headers: Vec::new(),
            schema: None,
            max_body: DEFAULT_MAX_BODY_BYTES,
            body_timeout: DEFAULT_BODY_TIMEOUT,
        }
    }
}

impl<S> Layer<S> for ValidateLayer {
    type Service = Validate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Validate::from_config(inner, self.config.clone())
    }
}

// === impl ValidateLayerBuilder ===

impl ValidateLayerBuilder {
    /// The methods allowed (exactly: list `HEAD` next to `GET` if wanted).
    pub fn methods(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.methods.get_or_insert_with(Vec::new).extend(methods);
        self
    }

    /// The media types a request with a body may have: `type/subtype`,
    /// `type/*` or `type/*+suffix`; parameters of the request's
    /// `Content-Type` are ignored.
    pub fn content_types<'a>(mut self, types: impl IntoIterator<Item = &'a str>) -> Self {
        self.content_types
            .get_or_insert_with(Vec::new)
            .extend(types.into_iter().map(str::to_owned));
        self
    }

    /// A query parameter that must be present (with a non-empty value
    /// matching `pattern` in full, when given).
    pub fn require_query(mut self, name: impl Into<String>, pattern: Option<Regex>) -> Self {
        self.queries.push((name.into(), pattern));
        self
    }

    /// A header that must be present (with a value matching `pattern` in
    /// full, when given).
    pub fn require_header(mut self, name: HeaderName, pattern: Option<Regex>) -> Self {
        self.headers.push((name, pattern));
        self
    }

    /// A JSON Schema (draft detected from `$schema`, 2020-12 by default)
    /// the body must satisfy; compiled by [`build`](Self::build).
    pub fn json_schema(mut self, schema: serde_json::Value) -> Self {
        self.schema = Some(schema);
        self
    }

    /// The largest body read for schema validation (default 1 MiB).
    pub fn max_body_bytes(mut self, limit: usize) -> Self {
        self.max_body = limit;
        self
    }

    /// How long a body read for schema validation may take to arrive whole
    /// (default 30 s, the gateway's default upstream timeout); past it the
    /// request is answered `408`.
    pub fn body_timeout(mut self, timeout: Duration) -> Self {
        self.body_timeout = timeout;
        self
    }

    /// Compiles the schema, anchors the patterns and checks the lists.
    pub fn build(self) -> Result<ValidateLayer, BuildError> {
        let methods = match self.methods {
            None => None,
            Some(m) if m.is_empty() => return Err(BuildError::NoMethods),
            Some(mut m) => {
                m.dedup();
                let allow = m.iter().map(Method::as_str).collect::<Vec<_>>().join(", ");
                let allow = HeaderValue::try_from(allow).map_err(|_| BuildError::NoMethods)?;
                Some((m, allow))
            }
        };
        let content_types = match self.content_types {
            None => None,
            Some(types) => {
                let ranges = types
                    .iter()
                    .map(|t| MediaRange::parse(t))
                    .collect::<Result<Vec<_>, _>>()?;
                let listed = ranges.iter().map(|r| r.to_string().into()).collect();
                Some((ranges, serde_json::Value::Array(listed)))
            }
        };
        let anchor = |name: &str, re: Option<Regex>| -> Result<Option<Regex>, BuildError> {
            re.map(|re| {
                Regex::new(&format!(r"\A(?:{})\z", re.as_str())).map_err(|e| {
                    BuildError::InvalidPattern {
                        name: name.to_owned(),
                        reason: e.to_string(),
                    }
                })
            })
            .transpose()
        };
        let queries = self
            .queries
            .into_iter()
            .map(|(n, re)| Ok((n.clone(), anchor(&n, re)?)))
            .collect::<Result<Vec<_>, BuildError>>()?;
        let headers = self
            .headers
            .into_iter()
            .map(|(n, re)| Ok((n.clone(), anchor(n.as_str(), re)?)))
            .collect::<Result<Vec<_>, BuildError>>()?;
        let schema = self
            .schema
            .map(|schema| {
                jsonschema::options()
                    .with_retriever(NoRemoteRefs)
                    .should_validate_formats(true)
                    .build(&schema)
                    .map_err(|e| BuildError::InvalidSchema {
                        reason: e.to_string(),
                    })
            })
            .transpose()?;
        Ok(ValidateLayer {
            config: Arc::new(Config {
                methods,
                content_types,
                queries,
                headers,
                schema,
                max_body: self.max_body,
                body_timeout: self.body_timeout,
            }),
        })
    }
}

/// Refuses every remote `$ref`: a gateway never fetches schemas at run time.
struct NoRemoteRefs;

impl jsonschema::Retrieve for NoRemoteRefs {
    fn retrieve(
        &self,
        uri: &jsonschema::Uri<String>,
    ) -> Result<serde_json::Value, Box<dyn std::error::Error + Send + Sync>> {
        Err(format!("remote references are not fetched: {}", uri.as_str()).into())
    }
}

#[cfg(test)]
mod tests;
