//! Vocabulary shared by every towergate crate.
//!
//! This crate has no behaviour of its own beyond small helpers on its types:
//! it is the common language of the other crates, so that a rate limiter can
//! key on the [`Identity`] an authentication layer set, or a proxy can write
//! forwarding headers from the [`ClientAddr`] a listener recorded, without one
//! crate depending on the other.
//!
//! - [`Problem`]: an RFC 9457 `application/problem+json` answer, used for every
//!   refusal (404, 405, 401, 429, 413, ...) and every operational failure
//!   (502, 503, 504) that towergate generates.
//! - [`body::ResponseBody`]: the one body type of generated responses.
//! - Request extensions: [`RouteMatch`], [`Identity`], [`ClientAddr`],
//!   [`RequestId`], [`OriginalPath`], [`RoutedPath`].
//! - [`write_ip`]: an IP address as text, identical to `Display`, without
//!   `core::fmt` (forwarding headers, rate-limit keys and log lines use it).
//!
//! ```
//! use http::StatusCode;
//! use towergate_core::Problem;
//!
//! let response = Problem::new(StatusCode::NOT_FOUND)
//!     .detail("no route matches GET /nope")
//!     .into_full_response();
//! assert_eq!(response.status(), StatusCode::NOT_FOUND);
//! assert_eq!(response.headers()["content-type"], "application/problem+json");
//! ```

pub mod body;
mod client_addr;
mod identity;
mod ip_text;
mod problem;
mod route_match;
pub mod timer;
pub mod url_text;

pub use client_addr::{ClientAddr, TrustedProxies, URL_CLAIMS};
pub use identity::Identity;
pub use ip_text::write_ip;
pub use problem::{PROBLEM_CONTENT_TYPE, Problem};
pub use route_match::RouteMatch;
pub use url_text::url_without_password;

/// A type-erased error, as tower uses it: operational failures travel as a
/// `BoxError` holding a typed error, and the edge downcasts it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The request id of a request, put in the request extensions by the layer
/// that accepts or generates it; problem responses use it as `instance`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RequestId(pub std::sync::Arc<str>);

impl RequestId {
    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What keeps a client connection counted (the open-connections gauge,
/// the `max_connections` permit) while it lives: the server puts it in
/// the extensions of a request that asks for an upgrade, and whoever takes
/// the connection over (a WebSocket tunnel) holds it until the end, so a
/// tunnel is counted and limited as the connection it came from.
#[derive(Clone)]
pub struct ConnectionLease(pub std::sync::Arc<dyn std::any::Any + Send + Sync>);

impl std::fmt::Debug for ConnectionLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnectionLease")
    }
}

/// Put in the extensions of an answer a proxy target made itself instead
/// of the upstream's, for what records upstream calls (the metrics of
/// `towergate-observe`'s `RecordUpstreamLayer`): such an answer is not the
/// upstream's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GatewayAnswer {
    /// The upstream was not called, or the call was given up because of
    /// the client (a body over the route's limit): nothing to record.
    NotCalled,
    /// The upstream was called and gave no response (connect failure,
    /// timeout, reset): a call that failed without one.
    NoResponse,
}

/// What must live as long as a tunnel (an upgraded connection, a
/// WebSocket): the proxy puts one in the extensions of a `101` response it
/// starts a tunnel for and keeps a clone in the tunnel's task; a layer
/// outside it that counts requests in flight ([`hold`](Self::hold)s its
/// slot there instead of releasing it with the `101`, so a tunnel counts
/// against the route's concurrency limit until it closes.
///
/// ```
/// let hold = towergate_core::TunnelHold::default();
/// let slot = std::sync::Arc::new(());
/// hold.hold(Box::new(slot.clone()));
/// assert_eq!(std::sync::Arc::strong_count(&slot), 2);
/// drop(hold);
/// assert_eq!(std::sync::Arc::strong_count(&slot), 1);
/// ```
#[derive(Clone, Default)]
pub struct TunnelHold(std::sync::Arc<std::sync::Mutex<Vec<Box<dyn std::any::Any + Send>>>>);

impl TunnelHold {
    /// Keeps `thing` until the tunnel ends (and every clone is dropped).
    pub fn hold(&self, thing: Box<dyn std::any::Any + Send>) {
        match self.0.lock() {
            Ok(mut held) => held.push(thing),
            Err(poisoned) => poisoned.into_inner().push(thing),
        }
    }
}

impl std::fmt::Debug for TunnelHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TunnelHold")
    }
}

/// The request's path as the client sent it, before a router replaced it
/// with a normalised, stripped or rewritten one; put in the extensions by
/// the router only when it changed the path. Redirects to the same URL
/// (HTTP to HTTPS) read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginalPath(pub std::sync::Arc<str>);

/// The path and query the router matched the request on (normalised),
/// when the route's `strip_prefix` or `rewrite` then changed the path the
/// upstream is sent; put in the extensions by the router only then.
/// Layers behind the router that tell someone else what was asked
/// (forward auth's `X-Forwarded-Uri`) read it: their rules are written
/// against the paths clients use, not the upstream's. Unlike
/// [`OriginalPath`], it has no `..` or escapes left to read two ways.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutedPath(pub http::uri::PathAndQuery);

/// Returns whether `err`, or any error in its `source()` chain, is a `T`.
pub fn is_caused_by<T: std::error::Error + 'static>(
    err: &(dyn std::error::Error + 'static),
) -> bool {
    cause_ref::<T>(err).is_some()
}

/// Finds the first `T` in `err`'s `source()` chain (`err` included).
pub fn cause_ref<'a, T: std::error::Error + 'static>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut cur: Option<&'a (dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(t) = e.downcast_ref::<T>() {
            return Some(t);
        }
        cur = e.source();
    }
    None
}
