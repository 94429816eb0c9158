//! Header transforms per route, on the request and on the response.
//!
//! Operations run in the order they were added. Template values are
//! rendered from the *incoming* request before any operation runs, so
//! `{header.NAME}` sees the header as the client sent it; response-side
//! templates are rendered from the request too, in `call`, before the
//! request is forwarded.
//!
//! A request-side [`Set`](Op::Set) whose template has a missing variable, or
//! renders an invalid header value (CR, LF, other control characters; with
//! a warning), removes the header: what a `set` decides is never left to
//! the client. On the response side the upstream's header is kept. An
//! [`Add`](Op::Add) in that case is skipped. Neither ever fails the request.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, header};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::template::{Ctx, verbatim};
use crate::{BuildError, Template};

/// One header operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Replaces every value of the header with the rendered template; when
    /// the template cannot be rendered, removes a request header and keeps
    /// a response header as the upstream sent it.
    Set(HeaderName, Template),
    /// Appends the rendered template as one more value of the header.
    Add(HeaderName, Template),
    /// Removes every value of the header.
    Remove(HeaderName),
    /// Moves every value of the first header to the second, replacing what
    /// the second had; nothing happens when the first is absent.
    Rename(HeaderName, HeaderName),
}

/// Applies header [`Op`]s to requests and responses; see the
/// [module docs](crate::transform).
///
/// ```
/// use std::convert::Infallible;
/// use http::{Request, Response, header::SERVER};
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
/// use towergate_policy::{HeaderTransformLayer, Op, Template};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let layer = HeaderTransformLayer::builder()
///     .request(Op::Set("x-path".parse()?, Template::parse("{method} {path}")?))
///     .request(Op::Rename("x-old".parse()?, "x-new".parse()?))
///     .response(Op::Set("x-served-for".parse()?, Template::parse("{header.x-user}")?))
///     .strip_server_headers()
///     .build()?;
/// let svc = ServiceBuilder::new().layer(layer).service(service_fn(|req: Request<()>| async move {
///     assert_eq!(req.headers()["x-path"], "GET /a");
///     assert_eq!(req.headers()["x-new"], "1");
///     assert!(!req.headers().contains_key("x-old"));
///     let mut rsp = Response::new(());
///     rsp.headers_mut().insert(SERVER, "nginx".parse().unwrap());
///     Ok::<_, Infallible>(rsp)
/// }));
/// let req = Request::get("/a").header("x-old", "1").header("x-user", "bob").body(())?;
/// let rsp = svc.oneshot(req).await?;
/// assert_eq!(rsp.headers()["x-served-for"], "bob");
/// assert!(!rsp.headers().contains_key(SERVER));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct HeaderTransformLayer {
    ops: Arc<Ops>,
}

/// Builds a [`HeaderTransformLayer`].
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct HeaderTransformBuilder {
    ops: Ops,
}

/// The middleware of [`HeaderTransformLayer`].
#[derive(Clone, Debug)]
pub struct HeaderTransform<S> {
    inner: S,
    ops: Arc<Ops>,
}

pin_project! {
    /// Response future of [`HeaderTransform`].
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        ops: Arc<Ops>,
        // One rendered value per response op (`None` for skipped or
        // template-less ops), rendered from the request.
        values: Vec<Option<HeaderValue>>,
    }
}

#[derive(Clone, Debug, Default)]
struct Ops {
    request: Vec<Op>,
    response: Vec<Op>,
}

// === impl HeaderTransformLayer ===

impl HeaderTransformLayer {
    /// A builder with no operations.
    pub fn builder() -> HeaderTransformBuilder {
        HeaderTransformBuilder::default()
    }
}

impl<S> Layer<S> for HeaderTransformLayer {
    type Service = HeaderTransform<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HeaderTransform {
            inner,
            ops: self.ops.clone(),
        }
    }
}

// === impl HeaderTransformBuilder ===

impl HeaderTransformBuilder {
    /// Adds an operation on the request.
    pub fn request(mut self, op: Op) -> Self {
        self.ops.request.push(op);
        self
    }

    /// Adds an operation on the response.
    pub fn response(mut self, op: Op) -> Self {
        self.ops.response.push(op);
        self
    }

    /// Removes `Server` and `X-Powered-By` from responses.
    pub fn strip_server_headers(self) -> Self {
        self.response(Op::Remove(header::SERVER))
            .response(Op::Remove(HeaderName::from_static("x-powered-by")))
    }

    /// Checks the operations: none may touch `Content-Length` or
    /// `Transfer-Encoding`, which frame the message body.
    pub fn build(self) -> Result<HeaderTransformLayer, BuildError> {
        for op in self.ops.request.iter().chain(&self.ops.response) {
            let names: &[&HeaderName] = match op {
                Op::Set(n, _) | Op::Add(n, _) | Op::Remove(n) => &[n],
                Op::Rename(a, b) => &[a, b],
            };
            for name in names {
                if *name == header::CONTENT_LENGTH || *name == header::TRANSFER_ENCODING {
                    return Err(BuildError::ForbiddenHeader {
                        name: name.as_str().to_owned(),
                        reason: "it frames the message body",
                    });
                }
            }
        }
        Ok(HeaderTransformLayer {
            ops: Arc::new(self.ops),
        })
    }
}

// === impl HeaderTransform ===

impl<S> HeaderTransform<S> {
    /// Wraps `inner` with the operations of `layer`.
    pub fn new(inner: S, layer: &HeaderTransformLayer) -> Self {
        layer.layer(inner)
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

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for HeaderTransform<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let values = render_all(&self.ops.response, &req);
        if !self.ops.request.is_empty() {
            let request_values = render_all(&self.ops.request, &req);
            apply(&self.ops.request, request_values, req.headers_mut(), true);
        }
        ResponseFuture {
            inner: self.inner.call(req),
            ops: self.ops.clone(),
            values,
        }
    }
}

// === impl ResponseFuture ===

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut rsp = ready!(this.inner.poll(cx))?;
        if !this.ops.response.is_empty() {
            apply(
                &this.ops.response,
                std::mem::take(this.values),
                rsp.headers_mut(),
                false,
            );
        }
        Poll::Ready(Ok(rsp))
    }
}

/// Renders the template of each op (in order) from the request.
fn render_all<B>(ops: &[Op], req: &Request<B>) -> Vec<Option<HeaderValue>> {
    if ops.is_empty() {
        return Vec::new();
    }
    let ctx = Ctx::of(req);
    ops.iter()
        .map(|op| match op {
            Op::Set(name, t) | Op::Add(name, t) => {
                let value = t.render_ctx(&ctx, verbatim, false)?;
                match HeaderValue::try_from(value) {
                    Ok(v) => Some(v),
                    Err(_) => {
                        tracing::warn!(
                            header = %name,
                            template = %t,
                            "header transform skipped: the rendered value is not a valid header value"
                        );
                        None
                    }
                }
            }
            Op::Remove(_) | Op::Rename(..) => None,
        })
        .collect()
}

/// Removes the headers whose names are `name` with some `-` written `_`
/// (`x_user_sub`, `x-user_sub` for `x-user-sub`).
fn remove_lookalikes(headers: &mut HeaderMap, name: &HeaderName) {
    let want = name.as_str().as_bytes();
    if !want.contains(&b'-') {
        return;
    }
    let lookalike = |k: &HeaderName| {
        let k = k.as_str().as_bytes();
        k.len() == want.len()
            && k != want
            && k.iter()
                .zip(want)
                .all(|(&a, &b)| a == b || (a == b'_' && b == b'-'))
    };
    if !headers.keys().any(lookalike) {
        return;
    }
    let found: Vec<HeaderName> = headers.keys().filter(|k| lookalike(k)).cloned().collect();
    for k in found {
        headers.remove(k);
    }
}

/// `unrendered_set_removes`: on the request side, a `set` that could not be
/// rendered removes the header (the client must not choose its value); on
/// the response side the upstream's header is kept.
fn apply(
    ops: &[Op],
    values: Vec<Option<HeaderValue>>,
    headers: &mut HeaderMap,
    unrendered_set_removes: bool,
) {
    for (op, value) in ops.iter().zip(values) {
        // On the request side, what a `set`, `add` or `remove` decides is
        // not left to a client's other spelling of the name either: an
        // upstream that maps headers CGI-style (`HTTP_X_USER_SUB`) reads
        // `x_user_sub` as `x-user-sub`.
        if unrendered_set_removes && let Op::Set(name, _) | Op::Add(name, _) | Op::Remove(name) = op
        {
            remove_lookalikes(headers, name);
        }
        match (op, value) {
            (Op::Set(name, _), Some(v)) => {
                headers.insert(name.clone(), v);
            }
            (Op::Add(name, _), Some(v)) => {
                headers.append(name.clone(), v);
            }
            // A `set` whose value could not be rendered (a variable the
            // request lacks, an invalid value) still decides the header:
            // absent. Keeping what the client sent would let it choose the
            // value (`x-user-sub: {identity.sub}` for a caller without a
            // `sub`, and a client-sent `X-User-Sub: admin`).
            (Op::Set(name, _), None) => {
                if unrendered_set_removes {
                    headers.remove(name);
                }
            }
            (Op::Add(..), None) => {}
            (Op::Remove(name), _) => {
                headers.remove(name);
            }
            (Op::Rename(from, to), _) => {
                if from == to {
                    continue;
                }
                let moved: Vec<HeaderValue> = match headers.entry(from) {
                    http::header::Entry::Occupied(e) => e.remove_entry_mult().1.collect(),
                    http::header::Entry::Vacant(_) => continue,
                };
                headers.remove(to);
                for v in moved {
                    headers.append(to.clone(), v);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower::{ServiceExt, service_fn};

    use super::*;

    fn t(s: &str) -> Template {
        Template::parse(s).unwrap()
    }

    #[tokio::test]
    async fn request_ops_in_order() {
        let layer = HeaderTransformLayer::builder()
            .request(Op::Add(HeaderName::from_static("x-a"), t("two")))
            .request(Op::Set(HeaderName::from_static("x-b"), t("{header.x-a}")))
            .request(Op::Rename(
                HeaderName::from_static("x-a"),
                HeaderName::from_static("x-c"),
            ))
            .request(Op::Remove(HeaderName::from_static("x-gone")))
            .request(Op::Set(
                HeaderName::from_static("x-skip"),
                t("{identity.sub}"),
            ))
            .request(Op::Set(HeaderName::from_static("x-crlf"), t("{query.v}")))
            .build()
            .unwrap();
        let svc = layer.layer(service_fn(|req: Request<()>| async move {
            let h = req.headers();
            let c: Vec<_> = h.get_all("x-c").iter().collect();
            assert_eq!(c, ["one", "two"]);
            assert!(!h.contains_key("x-a"));
            // rendered from the incoming request
            assert_eq!(h["x-b"], "one");
            assert!(!h.contains_key("x-gone"));
            assert!(
                !h.contains_key("x-skip"),
                "a set that renders nothing removes"
            );
            assert!(!h.contains_key("x-crlf"));
            Ok::<_, Infallible>(Response::new(()))
        }));
        let req = Request::get("/?v=a%0D%0Ab")
            .header("x-a", "one")
            .header("x-c", "replaced")
            .header("x-gone", "1")
            .header("x-skip", "client-chosen value")
            .body(())
            .unwrap();
        svc.oneshot(req).await.unwrap();
    }

    /// A client's underscore spelling of a header a request `set`, `add`
    /// or `remove` decides is removed too: CGI-style upstreams read
    /// `x_user_sub` as `x-user-sub`.
    #[tokio::test]
    async fn request_ops_also_clear_underscore_spellings() {
        let layer = HeaderTransformLayer::builder()
            .request(Op::Set(
                HeaderName::from_static("x-user-sub"),
                t("{identity.sub}"),
            ))
            .request(Op::Add(HeaderName::from_static("x-org"), t("acme")))
            .request(Op::Remove(HeaderName::from_static("x-internal-flag")))
            .build()
            .unwrap();
        let svc = layer.layer(service_fn(|req: Request<()>| async move {
            let names: Vec<&str> = req.headers().keys().map(HeaderName::as_str).collect();
            assert_eq!(names, ["x-keep_me", "x-org"], "{names:?}");
            assert_eq!(req.headers()["x-org"], "acme");
            Ok::<_, Infallible>(Response::new(()))
        }));
        let req = Request::get("/")
            .header("x_user_sub", "admin")
            .header("x-user_sub", "admin")
            .header("x_org", "evil")
            .header("x_internal_flag", "1")
            .header("x-keep_me", "1")
            .body(())
            .unwrap();
        svc.oneshot(req).await.unwrap();
    }

    #[tokio::test]
    async fn a_response_set_that_renders_nothing_keeps_the_upstreams_header() {
        let layer = HeaderTransformLayer::builder()
            .response(Op::Set(
                HeaderName::from_static("x-tenant"),
                t("{header.x-tenant}"),
            ))
            .build()
            .unwrap();
        let svc = layer.layer(service_fn(|_req: Request<()>| async move {
            let mut rsp = Response::new(());
            rsp.headers_mut()
                .insert("x-tenant", HeaderValue::from_static("from-upstream"));
            Ok::<_, Infallible>(rsp)
        }));
        let rsp = svc
            .clone()
            .oneshot(Request::get("/").body(()).unwrap())
            .await
            .unwrap();
        assert_eq!(rsp.headers()["x-tenant"], "from-upstream");
        let rsp = svc
            .oneshot(
                Request::get("/")
                    .header("x-tenant", "acme")
                    .body(())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(rsp.headers()["x-tenant"], "acme");
    }

    #[test]
    fn framing_headers_are_refused() {
        for op in [
            Op::Remove(header::CONTENT_LENGTH),
            Op::Set(header::TRANSFER_ENCODING, t("chunked")),
            Op::Rename(HeaderName::from_static("x-len"), header::CONTENT_LENGTH),
        ] {
            let e = HeaderTransformLayer::builder()
                .response(op)
                .build()
                .unwrap_err();
            assert!(matches!(e, BuildError::ForbiddenHeader { .. }), "{e}");
        }
    }
}
