//! What a consistent-hash pool hashes a request on.

use std::fmt;
use std::sync::Arc;

use http::HeaderName;
use http::request::Parts;
use towergate_core::{ClientAddr, Identity, RouteMatch};

use crate::algorithm::ring::hash64;

/// A key function for [`HashKey::Custom`].
pub type CustomKey = Arc<dyn Fn(&Parts) -> Option<Vec<u8>> + Send + Sync>;

/// The key of a request for [`Algorithm::ConsistentHash`](crate::Algorithm::ConsistentHash).
///
/// A request without the key is balanced by P2C instead.
///
/// ```
/// use towergate_balance::HashKey;
///
/// let key = HashKey::header("x-user-id").unwrap();
/// let (parts, ()) = http::Request::get("/").header("x-user-id", "42").body(()).unwrap().into_parts();
/// assert!(key.hash(&parts).is_some());
/// let (parts, ()) = http::Request::get("/").body(()).unwrap().into_parts();
/// assert!(key.hash(&parts).is_none());
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub enum HashKey {
    /// A header's value (all values, if repeated).
    Header(HeaderName),
    /// A cookie's value.
    Cookie(Arc<str>),
    /// The client's IP, from [`ClientAddr`] in the extensions.
    ClientIp,
    /// A field of the caller's [`Identity`] (`sub`, `consumer`, a claim).
    Identity(Arc<str>),
    /// A path parameter captured by the route ([`RouteMatch`]).
    PathParam(Arc<str>),
    /// Anything else: bytes to hash, computed from the request head.
    Custom(CustomKey),
}

// === impl HashKey ===

impl HashKey {
    /// Hashes on a header; fails if `name` is not a valid header name.
    pub fn header(name: &str) -> Result<Self, crate::error::BuildError> {
        HeaderName::from_bytes(name.as_bytes())
            .map(Self::Header)
            .map_err(|_| {
                crate::error::BuildError::new(format!("`{name}` is not a valid header name"))
            })
    }

    /// Hashes on a cookie.
    pub fn cookie(name: impl Into<Arc<str>>) -> Self {
        Self::Cookie(name.into())
    }

    /// Hashes on an identity field.
    pub fn identity(field: impl Into<Arc<str>>) -> Self {
        Self::Identity(field.into())
    }

    /// Hashes on a path parameter.
    pub fn path_param(name: impl Into<Arc<str>>) -> Self {
        Self::PathParam(name.into())
    }

    /// Hashes on what `f` returns.
    pub fn custom(f: impl Fn(&Parts) -> Option<Vec<u8>> + Send + Sync + 'static) -> Self {
        Self::Custom(Arc::new(f))
    }

    /// The request's key hash, or `None` when the request has no such key.
    pub fn hash(&self, parts: &Parts) -> Option<u64> {
        match self {
            Self::Header(name) => {
                let mut values = parts.headers.get_all(name).iter().peekable();
                values.peek()?;
                let mut buf = Vec::new();
                for v in values {
                    buf.extend_from_slice(v.as_bytes());
                    buf.push(b',');
                }
                Some(hash64(&buf))
            }
            Self::Cookie(name) => parts
                .headers
                .get_all(http::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|pair| pair.trim().split_once('='))
                .find(|(k, _)| *k == &**name)
                .map(|(_, v)| hash64(v.as_bytes())),
            Self::ClientIp => {
                let ip = parts.extensions.get::<ClientAddr>()?.client;
                Some(match ip {
                    std::net::IpAddr::V4(v4) => hash64(&v4.octets()),
                    std::net::IpAddr::V6(v6) => hash64(&v6.octets()),
                })
            }
            Self::Identity(field) => parts
                .extensions
                .get::<Identity>()?
                .field(field)
                .map(|v| hash64(v.as_bytes())),
            Self::PathParam(name) => parts
                .extensions
                .get::<RouteMatch>()?
                .param(name)
                .map(|v| hash64(v.as_bytes())),
            Self::Custom(f) => f(parts).map(|b| hash64(&b)),
        }
    }
}

impl fmt::Debug for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Header(h) => f.debug_tuple("Header").field(h).finish(),
            Self::Cookie(c) => f.debug_tuple("Cookie").field(c).finish(),
            Self::ClientIp => f.write_str("ClientIp"),
            Self::Identity(i) => f.debug_tuple("Identity").field(i).finish(),
            Self::PathParam(p) => f.debug_tuple("PathParam").field(p).finish(),
            Self::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(req: http::request::Builder) -> Parts {
        req.body(()).expect("request").into_parts().0
    }

    #[test]
    fn keys() {
        let p = parts(http::Request::get("/").header("cookie", "a=1; session=abc; b=2"));
        assert_eq!(HashKey::cookie("session").hash(&p), Some(hash64(b"abc")));
        assert_eq!(HashKey::cookie("nope").hash(&p), None);

        let mut p = parts(http::Request::get("/"));
        assert_eq!(HashKey::ClientIp.hash(&p), None);
        p.extensions.insert(ClientAddr::direct(
            "10.0.0.1:5".parse().expect("addr"),
            false,
        ));
        assert_eq!(HashKey::ClientIp.hash(&p), Some(hash64(&[10, 0, 0, 1])));

        p.extensions.insert(Identity {
            subject: Some("alice".into()),
            ..Identity::default()
        });
        assert_eq!(HashKey::identity("sub").hash(&p), Some(hash64(b"alice")));

        p.extensions.insert(RouteMatch {
            route: "users".into(),
            params: vec![("id".into(), "7".into())],
        });
        assert_eq!(HashKey::path_param("id").hash(&p), Some(hash64(b"7")));
        let c = HashKey::custom(|p| Some(p.uri.path().as_bytes().to_vec()));
        assert_eq!(c.hash(&p), Some(hash64(b"/")));
        assert!(HashKey::header("bad header").is_err());
    }
}
