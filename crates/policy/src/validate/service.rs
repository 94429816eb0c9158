use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::Body;
use http_body_util::{LengthLimitError, Limited};
use pin_project_lite::pin_project;
use serde_json::{Value, json};
use tower::Service;
use towergate_core::body::ResponseBody;
use towergate_core::{BoxError, Problem, RequestId};

use super::{Config, MAX_LISTED_ERRORS, ValidateLayer, ValidatedBody};
use crate::media_type::{essence, is_json};

/// The middleware of [`ValidateLayer`]; see the
/// [module docs](crate::validate).
#[derive(Clone, Debug)]
pub struct Validate<S> {
    inner: S,
    config: Arc<Config>,
}

pin_project! {
    /// Response future of [`Validate`].
    pub struct ResponseFuture<S, F, B, ResB> {
        #[pin]
        state: State<S, F, B, ResB>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, F, B, ResB> {
        Rejected {
            response: Option<Response<ResponseBody<ResB>>>,
        },
        Reading {
            #[pin]
            body: Limited<B>,
            buf: BytesMut,
            parts: Option<Parts>,
            svc: Option<S>,
            config: Arc<Config>,
            // The body must be whole by then (`body_timeout`).
            deadline: towergate_core::timer::Sleep,
        },
        Inner {
            #[pin]
            fut: F,
        },
    }
}

// === impl Validate ===

impl<S> Validate<S> {
    /// Wraps `inner` with the checks of `layer`.
    pub fn new(inner: S, layer: &ValidateLayer) -> Self {
        Self::from_config(inner, layer.config.clone())
    }

    pub(super) fn from_config(inner: S, config: Arc<Config>) -> Self {
        Self { inner, config }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B, ResB> Service<Request<B>> for Validate<S>
where
    S: Service<Request<ValidatedBody<B>>, Response = Response<ResB>> + Clone,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, S::Future, B, ResB>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let config = &self.config;
        let reject = |problem: Problem, req: &Request<B>| ResponseFuture {
            state: State::Rejected {
                response: Some(with_instance(problem, req.extensions().get()).into_response()),
            },
        };

        if let Some((methods, allow)) = &config.methods
            && !methods.contains(req.method())
        {
            let problem = Problem::new(StatusCode::METHOD_NOT_ALLOWED)
                .detail(format!("{} is not allowed here", req.method()))
                .header(header::ALLOW, allow.clone());
            return reject(problem, &req);
        }

        let has_body = has_body(&req);
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(essence);
        // Two `Content-Type`s: the check would judge the first, and the
        // upstream may read the other.
        let several = req
            .headers()
            .get_all(header::CONTENT_TYPE)
            .iter()
            .nth(1)
            .is_some();
        if let Some((ranges, listed)) = &config.content_types
            && has_body
            && (several
                || !content_type
                    .as_deref()
                    .is_some_and(|ct| ranges.iter().any(|r| r.matches(ct))))
        {
            let detail = match &content_type {
                _ if several => "a request body has one Content-Type, not several".to_owned(),
                Some(ct) => format!("content type {ct} is not accepted here"),
                None => "a request body needs a Content-Type".to_owned(),
            };
            let problem = Problem::new(StatusCode::UNSUPPORTED_MEDIA_TYPE)
                .detail(detail)
                .extension("accepted", listed.clone());
            return reject(problem, &req);
        }

        let errors = check_query_and_headers(config, &req);
        if !errors.is_empty() {
            let problem = Problem::new(StatusCode::BAD_REQUEST)
                .title("Invalid request")
                .detail(format!(
                    "{} required query parameter(s) or header(s) missing or invalid",
                    errors.len()
                ))
                .extension("errors", Value::Array(errors));
            return reject(problem, &req);
        }

        let schema_applies = config.schema.is_some()
            && (has_body || matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH));
        if !schema_applies {
            return ResponseFuture {
                state: State::Inner {
                    fut: self.inner.call(req.map(ValidatedBody::original)),
                },
            };
        }

        if !content_type.as_deref().is_some_and(is_json) {
            let problem = Problem::new(StatusCode::UNSUPPORTED_MEDIA_TYPE)
                .detail("the body must be JSON (application/json or */*+json)")
                .extension(
                    "accepted",
                    json!(["application/json", "application/*+json"]),
                );
            return reject(problem, &req);
        }
        if content_length(req.headers()).is_some_and(|len| len > config.max_body as u64) {
            return reject(too_large(config.max_body), &req);
        }

        // The ready service goes into the future; a clone stays behind for
        // the next request (tower's usual move).
        let clone = self.inner.clone();
        let svc = std::mem::replace(&mut self.inner, clone);
        let (parts, body) = req.into_parts();
        ResponseFuture {
            state: State::Reading {
                body: Limited::new(body, config.max_body),
                buf: BytesMut::new(),
                parts: Some(parts),
                svc: Some(svc),
                deadline: towergate_core::timer::sleep(config.body_timeout),
                config: config.clone(),
            },
        }
    }
}

// === impl ResponseFuture ===

impl<S, B, ResB> Future for ResponseFuture<S, S::Future, B, ResB>
where
    S: Service<Request<ValidatedBody<B>>, Response = Response<ResB>>,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<ResponseBody<ResB>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            let next = match state.as_mut().project() {
                StateProj::Rejected { response } => {
                    // `None` only if polled again after completion.
                    return Poll::Ready(Ok(response.take().unwrap_or_else(|| {
                        Problem::new(StatusCode::INTERNAL_SERVER_ERROR).into_response()
                    })));
                }
                StateProj::Inner { fut } => {
                    let rsp = ready!(fut.poll(cx))?;
                    return Poll::Ready(Ok(rsp.map(ResponseBody::inner)));
                }
                StateProj::Reading {
                    mut body,
                    buf,
                    parts,
                    svc,
                    config,
                    deadline,
                } => {
                    let problem = loop {
                        let frame = match body.as_mut().poll_frame(cx) {
                            Poll::Ready(frame) => frame,
                            // A client that sends its body slowly or not
                            // at all would hold the request (and its
                            // connection) for ever: nothing else runs a
                            // clock before the upstream is called.
                            Poll::Pending => match Pin::new(&mut *deadline).poll(cx) {
                                Poll::Ready(()) => {
                                    break Some(Problem::new(StatusCode::REQUEST_TIMEOUT).detail(
                                        format!(
                                            "the request body did not arrive within {} ms",
                                            config.body_timeout.as_millis()
                                        ),
                                    ));
                                }
                                Poll::Pending => return Poll::Pending,
                            },
                        };
                        match frame {
                            Some(Ok(frame)) => {
                                if let Ok(data) = frame.into_data() {
                                    buf.extend_from_slice(&data);
                                }
                            }
                            Some(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
                                break Some(too_large(config.max_body));
                            }
                            Some(Err(e)) => {
                                tracing::debug!(error = %e, "request body could not be read");
                                break Some(
                                    Problem::new(StatusCode::BAD_REQUEST)
                                        .detail("the request body could not be read"),
                                );
                            }
                            None => break None,
                        }
                    };
                    let bytes = buf.split().freeze();
                    let problem = problem.or_else(|| {
                        let schema = config.schema.as_ref()?;
                        check_json(&bytes, schema).err().map(|p| *p)
                    });
                    match (problem, parts.take(), svc.take()) {
                        (None, Some(mut parts), Some(mut svc)) => {
                            // Same bytes, so the same length; a chunked
                            // request gets the length it now has.
                            parts.headers.remove(header::TRANSFER_ENCODING);
                            parts
                                .headers
                                .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
                            let req = Request::from_parts(parts, ValidatedBody::buffered(bytes));
                            State::Inner { fut: svc.call(req) }
                        }
                        (problem, parts, _) => {
                            let problem = problem
                                .unwrap_or_else(|| Problem::new(StatusCode::INTERNAL_SERVER_ERROR));
                            let id = parts.as_ref().and_then(|p| p.extensions.get());
                            State::Rejected {
                                response: Some(with_instance(problem, id).into_response()),
                            }
                        }
                    }
                }
            };
            state.set(next);
        }
    }
}

impl<S, F, B, ResB> std::fmt::Debug for ResponseFuture<S, F, B, ResB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            State::Rejected { .. } => "rejected",
            State::Reading { .. } => "reading body",
            State::Inner { .. } => "inner",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

fn with_instance(problem: Problem, id: Option<&RequestId>) -> Problem {
    match id {
        Some(id) => problem.instance_if_absent(id.as_str()),
        None => problem,
    }
}

fn too_large(limit: usize) -> Problem {
    Problem::new(StatusCode::PAYLOAD_TOO_LARGE)
        .detail(format!("the request body is larger than {limit} bytes"))
        .extension("limit", limit)
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

fn has_body<B: Body>(req: &Request<B>) -> bool {
    if let Some(len) = content_length(req.headers()) {
        return len > 0;
    }
    req.headers().contains_key(header::TRANSFER_ENCODING)
        || req.body().size_hint().exact() != Some(0)
}

/// One entry per missing or non-matching parameter or header, in the
/// order they were configured.
fn check_query_and_headers<B>(config: &Config, req: &Request<B>) -> Vec<Value> {
    let mut errors = Vec::new();
    if !config.queries.is_empty() {
        let pairs: Vec<(String, String)> = req
            .uri()
            .query()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        for (name, pattern) in &config.queries {
            let mut values = pairs
                .iter()
                .filter(|(k, _)| k == name)
                .map(|(_, v)| v.as_str());
            let value = values.next();
            // Checked once, used as the upstream reads it: the first, the
            // last (PHP) or all (Express). A repeated one is refused.
            let repeated = values.next().is_some();
            let message = match (value, pattern) {
                _ if repeated => "must appear once".to_owned(),
                (None | Some(""), _) => "required query parameter is missing".to_owned(),
                (Some(v), Some(re)) if !re.is_match(v) => {
                    format!("must match the pattern {}", original_pattern(re))
                }
                _ => continue,
            };
            errors.push(json!({"in": "query", "name": name, "message": message}));
        }
    }
    for (name, pattern) in &config.headers {
        let mut values = req.headers().get_all(name).iter();
        let value = values.next();
        let repeated = values.next().is_some();
        let message = match (value, pattern) {
            _ if repeated => "must appear once".to_owned(),
            (None, _) => "required header is missing".to_owned(),
            (Some(v), Some(re)) if !v.to_str().is_ok_and(|v| re.is_match(v)) => {
                format!("must match the pattern {}", original_pattern(re))
            }
            _ => continue,
        };
        errors.push(json!({"in": "header", "name": name.as_str(), "message": message}));
    }
    errors
}

/// The pattern as configured, without the anchors `build` added.
fn original_pattern(re: &regex::Regex) -> &str {
    let s = re.as_str();
    s.strip_prefix(r"\A(?:")
        .and_then(|s| s.strip_suffix(r")\z"))
        .unwrap_or(s)
}

/// Bodies up to this size get every schema error listed (at most
/// [`MAX_LISTED_ERRORS`] shown); larger ones their first.
const LIST_ALL_ERRORS_UP_TO: usize = 16 * 1024;

/// Parses and validates a JSON body; the problem lists the schema errors
/// (of a body over 16 KiB, the first).
pub(super) fn check_json(bytes: &[u8], schema: &jsonschema::Validator) -> Result<(), Box<Problem>> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        Box::new(
            Problem::new(StatusCode::BAD_REQUEST)
                .title("Invalid JSON body")
                .detail(format!("the request body is not valid JSON: {e}"))
                .extension("line", e.line())
                .extension("column", e.column()),
        )
    })?;
    // Most bodies are valid: ask that first, which allocates nothing.
    if schema.is_valid(&value) {
        return Ok(());
    }
    // Listing every error builds them all first, one or more per bad
    // node: for `[0,0,0,...]` against `items: {type: object}` that is an
    // error per array element, a hundred times the body in memory. Only a
    // small body's are all listed; a larger one reports its first.
    let all = bytes.len() <= LIST_ALL_ERRORS_UP_TO;
    let mut errors: Vec<(String, String)> = if all {
        schema
            .iter_errors(&value)
            .map(|e| (e.instance_path().to_string(), shorten(e.to_string())))
            .collect()
    } else {
        match schema.validate(&value) {
            Ok(()) => return Ok(()),
            Err(e) => vec![(e.instance_path().to_string(), shorten(e.to_string()))],
        }
    };
    if errors.is_empty() {
        return Ok(());
    }
    errors.sort();
    errors.dedup();
    let total = errors.len();
    let listed: Vec<Value> = errors
        .into_iter()
        .take(MAX_LISTED_ERRORS)
        .map(|(path, message)| json!({"path": path, "message": message}))
        .collect();
    Err(Box::new(
        Problem::new(StatusCode::BAD_REQUEST)
            .title("Request body does not match the schema")
            .detail(if all {
                format!("{total} schema violation(s)")
            } else {
                "the first schema violation (of a body over 16 KiB, only the first is listed)"
                    .to_owned()
            })
            .extension("errors", Value::Array(listed)),
    ))
}

/// Error messages quote the offending value; a huge value is cut.
fn shorten(mut message: String) -> String {
    const MAX: usize = 300;
    if message.len() > MAX {
        let mut cut = MAX;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push('…');
    }
    message
}
