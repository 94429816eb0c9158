//! Response compression (gzip, brotli, zstd by `Accept-Encoding`) and
//! request decompression, on top of tower-http.
//!
//! [`CompressionPolicy`] decides *what* is compressed: only listed media
//! types, only bodies of at least `min_size` bytes (or of unknown size,
//! when streamed), never `text/event-stream`, never an empty body (which
//! is what a `HEAD` response or a `204`/`304` carries), never a `206` or
//! another status without content. tower-http's compression itself never
//! touches a response that already has a `Content-Encoding` or a
//! `Content-Range`, adds `Vary: Accept-Encoding`, and drops
//! `Content-Length` and `Accept-Ranges` from what it compresses.
//! Already-compressed formats (PNG, JPEG, zip, woff2, ...) are simply not
//! in the default list.

use std::sync::Arc;

use http::{HeaderMap, StatusCode, header};
use http_body::Body;
use tower_http::compression::{CompressionLayer, Predicate};
use tower_http::decompression::RequestDecompressionLayer;

use crate::BuildError;
use crate::media_type::{MediaRange, essence};

/// The media types compressed by default.
pub const DEFAULT_COMPRESSIBLE_TYPES: &[&str] = &[
    "text/*",
    "application/json",
    "application/javascript",
    "application/xml",
    "application/*+json",
    "application/*+xml",
    "image/svg+xml",
];

/// The default minimum body size, in bytes.
pub const DEFAULT_MIN_SIZE: u16 = 1024;

/// What to compress, and with which encodings; [`layer`](Self::layer) gives
/// tower-http's [`CompressionLayer`].
///
/// ```
/// use std::convert::Infallible;
/// use http::{Request, Response};
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
/// use towergate_policy::CompressionPolicy;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let svc = ServiceBuilder::new()
///     .layer(CompressionPolicy::new().min_size(16).layer())
///     .service(service_fn(|_req: Request<String>| async {
///         let rsp = Response::builder()
///             .header("content-type", "application/json")
///             .body("[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]".to_owned())
///             .unwrap();
///         Ok::<_, Infallible>(rsp)
///     }));
/// let req = Request::get("/").header("accept-encoding", "gzip").body(String::new())?;
/// let rsp = svc.oneshot(req).await?;
/// assert_eq!(rsp.headers()["content-encoding"], "gzip");
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct CompressionPolicy {
    min_size: u16,
    types: Vec<String>,
    gzip: bool,
    br: bool,
    zstd: bool,
}

/// The [`Predicate`] of [`CompressionPolicy`].
#[derive(Clone, Debug)]
pub struct CompressPredicate {
    min_size: u16,
    types: Arc<[MediaRange]>,
}

// === impl CompressionPolicy ===

impl CompressionPolicy {
    /// gzip, br and zstd, [`DEFAULT_COMPRESSIBLE_TYPES`], at least
    /// [`DEFAULT_MIN_SIZE`] bytes.
    pub fn new() -> Self {
        Self {
            min_size: DEFAULT_MIN_SIZE,
            types: DEFAULT_COMPRESSIBLE_TYPES
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            gzip: true,
            br: true,
            zstd: true,
        }
    }

    /// Bodies smaller than this are not compressed.
    pub fn min_size(mut self, bytes: u16) -> Self {
        self.min_size = bytes;
        self
    }

    /// The media ranges compressed, replacing the defaults: `type/subtype`,
    /// `type/*` or `type/*+suffix`. Check them with
    /// [`try_predicate`](Self::try_predicate); [`layer`](Self::layer)
    /// ignores (and logs) the ones that do not parse.
    pub fn content_types<'a>(mut self, types: impl IntoIterator<Item = &'a str>) -> Self {
        self.types = types.into_iter().map(str::to_owned).collect();
        self
    }

    /// Whether gzip is offered.
    pub fn gzip(mut self, enable: bool) -> Self {
        self.gzip = enable;
        self
    }

    /// Whether brotli is offered.
    pub fn br(mut self, enable: bool) -> Self {
        self.br = enable;
        self
    }

    /// Whether zstd is offered.
    pub fn zstd(mut self, enable: bool) -> Self {
        self.zstd = enable;
        self
    }

    /// The predicate, or the first media range that does not parse.
    pub fn try_predicate(&self) -> Result<CompressPredicate, BuildError> {
        let types = self
            .types
            .iter()
            .map(|t| MediaRange::parse(t))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CompressPredicate {
            min_size: self.min_size,
            types: types.into(),
        })
    }

    /// tower-http's compression layer with this policy.
    pub fn layer(&self) -> CompressionLayer<CompressPredicate> {
        let predicate = self.try_predicate().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "compression: media ranges that do not parse are ignored");
            CompressPredicate {
                min_size: self.min_size,
                types: self
                    .types
                    .iter()
                    .filter_map(|t| MediaRange::parse(t).ok())
                    .collect::<Vec<_>>()
                    .into(),
            }
        });
        CompressionLayer::new()
            .gzip(self.gzip)
            .br(self.br)
            .zstd(self.zstd)
            .compress_when(predicate)
    }
}

impl Default for CompressionPolicy {
    fn default() -> Self {
        Self::new()
    }
}

// === impl CompressPredicate ===

impl CompressPredicate {
    /// The decision, from the parts of a response.
    pub fn decide(&self, status: StatusCode, headers: &HeaderMap, exact_size: Option<u64>) -> bool {
        if status == StatusCode::PARTIAL_CONTENT
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
            || status.is_informational()
            || headers.contains_key(header::CONTENT_ENCODING)
            || headers.contains_key(header::CONTENT_RANGE)
            || no_transform(headers)
        {
            return false;
        }
        let Some(ct) = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(essence)
        else {
            return false;
        };
        if ct == "text/event-stream" || !self.types.iter().any(|r| r.matches(&ct)) {
            return false;
        }
        let size = exact_size.or_else(|| {
            headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
        });
        match size {
            Some(0) => false,
            Some(n) => n >= u64::from(self.min_size),
            None => true,
        }
    }
}

/// `Cache-Control: no-transform`: a proxy must not change the body's
/// encoding (RFC 9110 §7.7).
fn no_transform(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .any(|d| d.trim_ascii().eq_ignore_ascii_case(b"no-transform"))
}

impl Predicate for CompressPredicate {
    fn should_compress<B>(&self, response: &http::Response<B>) -> bool
    where
        B: Body,
    {
        self.decide(
            response.status(),
            response.headers(),
            response.body().size_hint().exact(),
        )
    }
}

/// Decompresses request bodies sent with `Content-Encoding: gzip`, `br` or
/// `zstd` (removing that header and `Content-Length`); other encodings are
/// answered `415` by tower-http. The binary enables it per route: put it
/// outside [`ValidateLayer`](crate::ValidateLayer), whose body limit then
/// bounds the decompressed size.
pub fn request_decompression() -> RequestDecompressionLayer {
    RequestDecompressionLayer::new()
        .gzip(true)
        .br(true)
        .zstd(true)
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(ct: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
        h
    }

    #[test]
    fn decisions() {
        let p = CompressionPolicy::new().try_predicate().unwrap();
        let ok = StatusCode::OK;
        assert!(p.decide(ok, &headers("text/html; charset=utf-8"), Some(2000)));
        assert!(p.decide(ok, &headers("application/problem+json"), Some(2000)));
        assert!(p.decide(ok, &headers("image/svg+xml"), None));
        assert!(!p.decide(ok, &headers("text/html"), Some(1023)));
        assert!(!p.decide(ok, &headers("text/html"), Some(0)));
        assert!(!p.decide(ok, &headers("image/png"), Some(5000)));
        assert!(!p.decide(ok, &headers("application/zip"), Some(5000)));
        assert!(!p.decide(ok, &headers("text/event-stream"), None));
        assert!(!p.decide(ok, &HeaderMap::new(), Some(5000)));
        assert!(!p.decide(
            StatusCode::PARTIAL_CONTENT,
            &headers("text/plain"),
            Some(5000)
        ));
        assert!(!p.decide(StatusCode::NO_CONTENT, &headers("text/plain"), None));
        let mut encoded = headers("text/plain");
        encoded.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        assert!(!p.decide(ok, &encoded, Some(5000)));
        let mut len = headers("text/plain");
        len.insert(header::CONTENT_LENGTH, HeaderValue::from_static("10"));
        assert!(!p.decide(ok, &len, None));
        // `no-transform`, in any of several directives or lines.
        for cc in [
            "no-transform",
            "public, No-Transform",
            "max-age=60 ,no-transform",
        ] {
            let mut kept = headers("application/json");
            kept.insert(header::CACHE_CONTROL, HeaderValue::from_str(cc).unwrap());
            assert!(!p.decide(ok, &kept, Some(5000)), "{cc}");
        }
        let mut cached = headers("application/json");
        cached.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=60"),
        );
        assert!(p.decide(ok, &cached, Some(5000)));
    }

    #[test]
    fn custom_types() {
        let p = CompressionPolicy::new()
            .content_types(["text/csv"])
            .min_size(1)
            .try_predicate()
            .unwrap();
        assert!(p.decide(StatusCode::OK, &headers("text/csv"), Some(1)));
        assert!(!p.decide(StatusCode::OK, &headers("text/html"), Some(100)));
        assert!(
            CompressionPolicy::new()
                .content_types(["nonsense"])
                .try_predicate()
                .is_err()
        );
    }
}
