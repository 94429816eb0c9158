//! Request ids: accept the client's `X-Request-Id` when it is well formed,
//! otherwise generate one (a UUIDv7, so ids sort by time), and make it
//! known everywhere: a [`RequestId`] in the request extensions (problem
//! responses use it as `instance`, the proxy logs it), the header on the
//! request that goes to the upstream, and the header on the response.
//!
//! A well-formed id is 1 to 128 bytes of `[A-Za-z0-9._:-]` (see
//! [`is_valid`]); anything else is replaced, so that ids are safe in logs
//! and headers whatever the client sent.
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use towergate_core::RequestId;
//! use towergate_observe::RequestIdLayer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let svc = ServiceBuilder::new()
//!     .layer(RequestIdLayer::new())
//!     .service(service_fn(|req: Request<()>| async move {
//!         let id = req.extensions().get::<RequestId>().unwrap().clone();
//!         assert_eq!(req.headers()["x-request-id"], id.as_str());
//!         Ok::<_, Infallible>(Response::new(()))
//!     }));
//!
//! // Kept when valid...
//! let req = Request::get("/").header("x-request-id", "abc-123").body(()).unwrap();
//! let rsp = svc.clone().oneshot(req).await.unwrap();
//! assert_eq!(rsp.headers()["x-request-id"], "abc-123");
//!
//! // ...replaced when not.
//! let req = Request::get("/").header("x-request-id", "<script>").body(()).unwrap();
//! let rsp = svc.oneshot(req).await.unwrap();
//! assert_eq!(rsp.headers()["x-request-id"].len(), 36);
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::header::Entry;
use http::{HeaderName, HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};
use towergate_core::RequestId;

use crate::error::BuildError;

/// The longest request id accepted from a client.
pub const MAX_LEN: usize = 128;

/// Accepts or generates the request id; see the [module docs](self).
#[derive(Clone, Debug)]
#[must_use]
pub struct RequestIdLayer {
    pub(crate) shared: Arc<Shared>,
}

/// Settings for a [`RequestIdLayer`]; see [`RequestIdLayer::builder`].
#[derive(Debug)]
#[must_use]
pub struct RequestIdBuilder {
    header: String,
    trust_incoming: bool,
    generate: bool,
}

/// The service of [`RequestIdLayer`].
#[derive(Clone, Debug)]
pub struct SetRequestId<S> {
    inner: S,
    shared: Arc<Shared>,
}

pin_project! {
    /// The response future of [`SetRequestId`]: sets the id header on the
    /// response.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        // Taken when the response comes: it goes on it as it is.
        id: Option<HeaderValue>,
        shared: Arc<Shared>,
    }
}

#[derive(Debug)]
pub(crate) struct Shared {
    header: HeaderName,
    trust_incoming: bool,
    generate: bool,
}

/// Whether `id` is acceptable as a request id: 1 to [`MAX_LEN`] bytes of
/// ASCII letters, digits, `.`, `_`, `:` and `-`.
///
/// ```
/// use towergate_observe::request_id::is_valid;
/// assert!(is_valid(b"0190b7e4-7c1a-7cc3-9d5e-3f1f6b0c2d11"));
/// assert!(is_valid(b"svc:frontend.42_a"));
/// assert!(!is_valid(b""));
/// assert!(!is_valid(b"a b"));
/// assert!(!is_valid(&[b'a'; 129]));
/// ```
pub fn is_valid(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// The text of an id as the bytes of a header value: the header shares the
/// id's allocation instead of copying it (and a copied `Bytes` allocates
/// again at its first clone, for the request and the response).
struct IdBytes(Arc<str>);

impl AsRef<[u8]> for IdBytes {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// The header value of a generated id, sharing its text.
fn header_value(id: &RequestId) -> HeaderValue {
    // A UUID is always a valid header value; the fallback is unreachable
    // but keeps the request going.
    let mut value = HeaderValue::from_maybe_shared(Bytes::from_owner(IdBytes(id.0.clone())))
        .unwrap_or_else(|_| HeaderValue::from_static("invalid"));
    never_indexed(&mut value);
    value
}

/// Marks a value that is new on every request so that HTTP/2 sends it as a
/// literal never indexed: HPACK would otherwise add each one to the
/// connection's header table, evicting the entries that do repeat (a
/// third of an HTTP/2 response's encoding cost went to that churn). The
/// value itself is unchanged; only its `Debug` output reads `Sensitive`.
pub(crate) fn never_indexed(value: &mut HeaderValue) {
    value.set_sensitive(true);
}

/// A new request id: a UUIDv7 in its hyphenated form. Its random bits come
/// from a fast, non-cryptographic generator: ids are unique, not secret
/// (never use one as a token).
pub fn generate() -> RequestId {
    generate_at(std::time::SystemTime::now())
}

/// [`generate`] with the time of `now`: a layer that reads the clock for
/// other reasons too reads it once.
pub(crate) fn generate_at(now: std::time::SystemTime) -> RequestId {
    // The millisecond and 74 random bits (uuid's `now_v7` also keeps a
    // shared counter for ordering within a millisecond, at several times
    // the cost; ids of one millisecond need no order).
    let millis = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let random = fastrand::u128(..).to_le_bytes();
    let mut bytes = [0u8; 10];
    bytes.copy_from_slice(&random[..10]);
    let id = uuid::Builder::from_unix_timestamp_millis(millis, &bytes).into_uuid();
    let mut buf = uuid::Uuid::encode_buffer();
    let s = id.hyphenated().encode_lower(&mut buf);
    RequestId(Arc::from(&*s))
}

// === impl RequestIdLayer ===

impl RequestIdLayer {
    /// Reads and writes `X-Request-Id`, trusting valid incoming ids.
    pub fn new() -> Self {
        Self {
            shared: Arc::new(Shared {
                header: HeaderName::from_static("x-request-id"),
                trust_incoming: true,
                generate: true,
            }),
        }
    }

    /// Starts building a layer with another header or policy.
    pub fn builder() -> RequestIdBuilder {
        RequestIdBuilder {
            header: "x-request-id".to_owned(),
            trust_incoming: true,
            generate: true,
        }
    }

    /// The header the id is read from and written to.
    pub fn header(&self) -> &HeaderName {
        &self.shared.header
    }
}

impl Default for RequestIdLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for RequestIdLayer {
    type Service = SetRequestId<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SetRequestId {
            inner,
            shared: self.shared.clone(),
        }
    }
}

// === impl RequestIdBuilder ===

impl RequestIdBuilder {
    /// The header to read and write (`x-correlation-id`, ...). Default
    /// `x-request-id`.
    pub fn header(mut self, name: impl Into<String>) -> Self {
        self.header = name.into();
        self
    }

    /// Whether a valid id sent by the client is kept. Default true; turn it
    /// off at an edge where clients are not trusted to choose ids.
    pub fn trust_incoming(mut self, yes: bool) -> Self {
        self.trust_incoming = yes;
        self
    }

    /// Whether a request without an id (or with one that is not kept) is
    /// given a new one. Default true. Off, only a kept incoming id goes on
    /// (an invalid or untrusted one is still removed): for a gateway
    /// behind a proxy that already sets ids, or where an id per request is
    /// not worth its cost (about 1,000 instructions: the id, its header on
    /// the request and on the response). A request without an id has no
    /// [`RequestId`] in its extensions, and its problem responses no
    /// `instance`.
    pub fn generate(mut self, yes: bool) -> Self {
        self.generate = yes;
        self
    }

    /// Checks the header name and builds the layer.
    pub fn build(self) -> Result<RequestIdLayer, BuildError> {
        let header = HeaderName::try_from(self.header.as_str()).map_err(|e| {
            BuildError::with_source(
                format!("request id: invalid header name `{}`", self.header),
                e,
            )
        })?;
        Ok(RequestIdLayer {
            shared: Arc::new(Shared {
                header,
                trust_incoming: self.trust_incoming,
                generate: self.generate,
            }),
        })
    }
}

// === impl SetRequestId ===

impl<S> SetRequestId<S> {
    /// Wraps `inner` with the default settings of [`RequestIdLayer::new`].
    pub fn new(inner: S) -> Self {
        RequestIdLayer::new().layer(inner)
    }

    /// A [`RequestIdLayer`] with the default settings.
    pub fn layer() -> RequestIdLayer {
        RequestIdLayer::new()
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

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SetRequestId<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let value = self.shared.apply(&mut req);
        ResponseFuture {
            inner: self.inner.call(req),
            id: value,
            shared: self.shared.clone(),
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut res = ready!(this.inner.poll(cx));
        if let (Ok(rsp), Some(id)) = (&mut res, this.id.take()) {
            this.shared.respond(rsp, id);
        }
        Poll::Ready(res)
    }
}

// === impl Shared ===

impl Shared {
    /// Takes or makes the id of `req`, puts it in the extensions and on
    /// the request's header; returns the header value for the response
    /// (`None`: the request has no id, when ids are not generated).
    pub(crate) fn apply<B>(&self, req: &mut Request<B>) -> Option<HeaderValue> {
        self.apply_at(req, std::time::SystemTime::now)
    }

    /// [`apply`](Self::apply), reading the clock through `now` only when
    /// an id is generated.
    pub(crate) fn apply_at<B>(
        &self,
        req: &mut Request<B>,
        now: impl FnOnce() -> std::time::SystemTime,
    ) -> Option<HeaderValue> {
        if !self.generate {
            return self.keep_incoming(req);
        }
        // One look-up of the header for both the incoming id and ours.
        // (`try_`: a map at its maximum size keeps the request going with
        // the id in the extensions and on the response, not a panic.)
        let fresh = move || {
            let id = generate_at(now());
            let value = header_value(&id);
            (id, value)
        };
        let (id, value) = match req.headers_mut().try_entry(&self.header) {
            Ok(Entry::Occupied(mut e)) => {
                // Several values are as bad as an invalid one: which would
                // the upstream read?
                let mut all = e.iter();
                let trusted = match (all.next(), all.next()) {
                    (Some(v), None) if self.trust_incoming && is_valid(v.as_bytes()) => v
                        .to_str()
                        .ok()
                        .map(|s| (RequestId(Arc::from(s)), v.clone())),
                    _ => None,
                };
                match trusted {
                    Some(pair) => {
                        never_indexed(e.get_mut());
                        pair
                    }
                    None => {
                        let (id, value) = fresh();
                        // Replaces every value that came.
                        e.insert(value.clone());
                        (id, value)
                    }
                }
            }
            Ok(Entry::Vacant(e)) => {
                let (id, value) = fresh();
                let _ = e.try_insert(value.clone());
                (id, value)
            }
            Err(_) => fresh(),
        };
        req.extensions_mut().insert(id);
        Some(value)
    }

    /// [`apply_at`](Self::apply_at) when ids are not generated: a read
    /// of the header (no entry, which makes room for an insert), and a
    /// removal in the rare case of a value that is not kept.
    fn keep_incoming<B>(&self, req: &mut Request<B>) -> Option<HeaderValue> {
        let headers = req.headers_mut();
        let mut all = headers.get_all(&self.header).iter();
        let kept = match (all.next(), all.next()) {
            (None, _) => return None,
            (Some(v), None) if self.trust_incoming && is_valid(v.as_bytes()) => v
                .to_str()
                .ok()
                .map(|s| (RequestId(Arc::from(s)), v.clone())),
            _ => None,
        };
        let Some((id, value)) = kept else {
            // Not passed on: the upstream would take it for an id this
            // gateway vouches for.
            headers.remove(&self.header);
            return None;
        };
        if let Some(v) = headers.get_mut(&self.header) {
            never_indexed(v);
        }
        req.extensions_mut().insert(id);
        Some(value)
    }

    /// Puts the id on the response. Ours wins over whatever the upstream
    /// echoed: the client should see the id that is in our logs.
    pub(crate) fn respond<B>(&self, rsp: &mut Response<B>, mut value: HeaderValue) {
        // An incoming id comes as the client sent it.
        never_indexed(&mut value);
        rsp.headers_mut().insert(self.header.clone(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_valid_and_distinct() {
        let a = generate();
        let b = generate();
        assert!(is_valid(a.as_str().as_bytes()));
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 36);
        // Version 7 nibble.
        assert_eq!(&a.as_str()[14..15], "7");
    }

    #[test]
    fn generated_header_value_is_the_id() {
        let id = generate();
        let v = header_value(&id);
        assert_eq!(v.to_str().unwrap(), id.as_str());
        assert_eq!(v.clone(), v);
    }

    /// Ids are new on every request: HTTP/2 must not put them in its
    /// header table (see `never_indexed`), whether made here or echoed.
    #[tokio::test]
    async fn ids_go_out_never_indexed() {
        use tower::{ServiceExt, service_fn};
        for incoming in [None, Some("client-id-1")] {
            let svc = RequestIdLayer::new().layer(service_fn(|req: Request<()>| async move {
                let upstream = req
                    .headers()
                    .get("x-request-id")
                    .map(HeaderValue::is_sensitive);
                Ok::<_, std::convert::Infallible>(Response::new(upstream))
            }));
            let mut req = Request::new(());
            if let Some(id) = incoming {
                req.headers_mut()
                    .insert("x-request-id", HeaderValue::from_static(id));
            }
            let rsp = svc.oneshot(req).await.unwrap();
            let sent = rsp.headers().get("x-request-id").unwrap();
            assert!(sent.is_sensitive(), "{incoming:?}");
            if let Some(id) = incoming {
                assert_eq!(sent, id);
            }
            // The upstream's copy too (an HTTP/2 upstream).
            assert_eq!(*rsp.body(), Some(true), "{incoming:?}");
        }
    }

    #[test]
    fn charset_and_length() {
        assert!(is_valid(&[b'x'; MAX_LEN]));
        assert!(!is_valid(&[b'x'; MAX_LEN + 1]));
        for bad in ["a/b", "a\"b", "é", "a\tb", "a,b", "a;b", "a=b"] {
            assert!(!is_valid(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn bad_header_name_is_a_build_error() {
        assert!(RequestIdLayer::builder().header("x y").build().is_err());
        let l = RequestIdLayer::builder()
            .header("X-Correlation-Id")
            .build()
            .unwrap();
        assert_eq!(l.header(), "x-correlation-id");
    }
}
