//! Typed errors of the proxy, named after what happened.
//!
//! [`Proxy`](crate::Proxy) fails with a [`BoxError`] that holds exactly one
//! of [`UpstreamUnavailable`], [`UpstreamTimeout`] or [`RequestBodyFailed`],
//! with the underlying cause (hyper, rustls, io) as its `source()` for the
//! logs. The edge of the gateway turns it into a problem response with
//! [`to_problem`]; callers that want to react differently (retry, passive
//! health) downcast it with [`towergate_core::cause_ref`].

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use towergate_core::{BoxError, Problem, cause_ref};

use crate::pool::SendError;

/// The upstream could not be reached or failed the exchange: connection
/// refused or reset, DNS failure, TLS handshake or certificate failure, or
/// a connection closed before the response headers arrived.
///
/// The gateway answers 502 Bad Gateway.
#[derive(Debug)]
pub struct UpstreamUnavailable {
    upstream: Arc<str>,
    connect: bool,
    source: BoxError,
}

/// The upstream did not connect, or did not send its response headers, in
/// time.
///
/// The gateway answers 504 Gateway Timeout.
#[derive(Debug)]
pub struct UpstreamTimeout {
    upstream: Arc<str>,
    phase: Phase,
    after: Option<Duration>,
    source: Option<BoxError>,
}

/// The caller's request body failed while it was streamed to the upstream
/// (typically: the client went away in the middle of an upload).
///
/// The upstream is not to blame, so health checks and circuit breakers
/// should not count it against the upstream. [`to_problem`] maps it to 502
/// like any other failure; the client has usually gone anyway.
#[derive(Debug)]
pub struct RequestBodyFailed {
    upstream: Arc<str>,
    source: BoxError,
}

/// The source of a [`RequestBodyFailed`] whose body did not arrive within
/// the proxy's timeout: the client is slow, not the upstream.
#[derive(Debug)]
pub(crate) struct BodyTimedOut {
    pub(crate) after: Duration,
}

/// A [`Client`](crate::Client) or [`Proxy`](crate::Proxy) could not be
/// built from the given settings (bad URL, bad PEM, bad header value).
#[derive(Debug)]
pub struct BuildError {
    message: String,
    source: Option<BoxError>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Connect,
    Response,
    /// Between two pieces of the response body.
    Body,
}

/// The error the client's connector fails with when the connect timeout
/// (TCP and TLS handshake together) expires; recognised again when the
/// client reports the failed connect.
#[derive(Debug)]
pub(crate) struct ConnectTimedOut {
    pub(crate) after: Duration,
}

/// Marks an error of the caller's request body, so that a failed exchange
/// can be blamed on the right side.
#[derive(Debug)]
pub(crate) struct BodyError(pub(crate) BoxError);

/// Displays an error and its whole `source()` chain, `a: b: c`, for logs.
pub(crate) struct Chain<'a>(pub(crate) &'a (dyn StdError + 'static));

/// Maps an error from this crate to a problem response.
///
/// The `source()` chain is walked, so the typed error may be wrapped:
/// [`UpstreamTimeout`] gives 504 Gateway Timeout, a request body that did
/// not arrive in time ([`RequestBodyFailed::is_timeout`]) 408 Request
/// Timeout, [`UpstreamUnavailable`] and anything else 502 Bad Gateway. The detail is generic on purpose:
/// internal error text (addresses, certificate names) belongs in the log,
/// never in a 5xx body.
///
/// ```
/// use towergate_proxy::error::to_problem;
///
/// let err: towergate_core::BoxError = "something odd".into();
/// let problem = to_problem(&*err);
/// assert_eq!(problem.status(), 502);
/// assert!(!problem.detail_text().unwrap_or_default().contains("odd"));
/// ```
pub fn to_problem(err: &(dyn StdError + 'static)) -> Problem {
    if cause_ref::<RequestBodyFailed>(err).is_some_and(RequestBodyFailed::is_timeout) {
        return Problem::new(StatusCode::REQUEST_TIMEOUT)
            .detail("the request body did not arrive in time");
    }
    if cause_ref::<UpstreamTimeout>(err).is_some() {
        return Problem::new(StatusCode::GATEWAY_TIMEOUT)
            .detail("the upstream service did not answer in time");
    }
    if cause_ref::<UpstreamUnavailable>(err).is_some() {
        return Problem::new(StatusCode::BAD_GATEWAY)
            .detail("the upstream service could not be reached");
    }
    Problem::new(StatusCode::BAD_GATEWAY).detail("the upstream request failed")
}

/// Classifies a failure of the pool: timeout, body, or upstream.
pub(crate) fn classify(err: SendError, upstream: &Arc<str>) -> BoxError {
    let upstream = upstream.clone();
    match err {
        SendError::Connect(err) => {
            if let Some(t) = cause_ref::<ConnectTimedOut>(&*err) {
                let after = Some(t.after);
                return Box::new(UpstreamTimeout::connect(upstream, after, err));
            }
            // The TCP connector's own per-address timeout, or the kernel
            // giving up on the SYN, surfaces as an io error of kind TimedOut.
            if cause_ref::<io::Error>(&*err).is_some_and(|e| e.kind() == io::ErrorKind::TimedOut) {
                return Box::new(UpstreamTimeout::connect(upstream, None, err));
            }
            Box::new(UpstreamUnavailable {
                upstream,
                connect: true,
                source: err,
            })
        }
        // Refused before anything was sent: as safe to retry elsewhere as
        // a failed connect.
        SendError::Unsent(err) => Box::new(UpstreamUnavailable {
            upstream,
            connect: true,
            source: Box::new(err),
        }),
        SendError::Request(err) => {
            if cause_ref::<BodyError>(&err).is_some() {
                return Box::new(RequestBodyFailed {
                    upstream,
                    source: Box::new(err),
                });
            }
            Box::new(UpstreamUnavailable {
                upstream,
                connect: false,
                source: Box::new(err),
            })
        }
    }
}

// === impl UpstreamUnavailable ===

impl UpstreamUnavailable {
    /// The upstream answered in a way the gateway cannot pass on.
    pub(crate) fn protocol(upstream: Arc<str>, what: &'static str) -> Self {
        Self {
            upstream,
            connect: false,
            source: what.into(),
        }
    }

    /// The upstream's authority (`host:port`).
    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    /// Whether the connection could not be established, so the request
    /// never reached the upstream and is safe to retry elsewhere.
    pub fn is_connect(&self) -> bool {
        self.connect
    }
}

impl fmt::Display for UpstreamUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.connect {
            write!(f, "could not connect to upstream {}", self.upstream)
        } else {
            write!(f, "upstream {} failed the request", self.upstream)
        }
    }
}

impl StdError for UpstreamUnavailable {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.source)
    }
}

// === impl UpstreamTimeout ===

impl UpstreamTimeout {
    fn connect(upstream: Arc<str>, after: Option<Duration>, source: BoxError) -> Self {
        Self {
            upstream,
            phase: Phase::Connect,
            after,
            source: Some(source),
        }
    }

    /// The connection was still being made (or waited for) when the
    /// response timeout `after` ran out: nothing was sent.
    pub(crate) fn not_connected(upstream: Arc<str>, after: Duration) -> Self {
        Self {
            upstream,
            phase: Phase::Connect,
            after: Some(after),
            source: None,
        }
    }

    /// The response body paused for longer than `after`.
    pub(crate) fn body(upstream: Arc<str>, after: Duration) -> Self {
        Self {
            upstream,
            phase: Phase::Body,
            after: Some(after),
            source: None,
        }
    }

    pub(crate) fn response(upstream: Arc<str>, after: Duration) -> Self {
        Self {
            upstream,
            phase: Phase::Response,
            after: Some(after),
            source: None,
        }
    }

    /// The upstream's authority (`host:port`).
    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    /// Whether the connect phase (TCP and TLS) timed out, so the request
    /// never reached the upstream; otherwise the response headers did not
    /// arrive in time.
    pub fn is_connect(&self) -> bool {
        self.phase == Phase::Connect
    }

    /// The timeout that ran out, when known: the proxy's response timeout,
    /// or a request's [`RouteSettings`](crate::RouteSettings) one.
    pub fn after(&self) -> Option<Duration> {
        self.after
    }
}

impl fmt::Display for UpstreamTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.phase {
            Phase::Connect => "did not accept a connection",
            Phase::Response => "did not send response headers",
            Phase::Body => "paused its response body",
        };
        write!(f, "upstream {} {what}", self.upstream)?;
        if let Some(after) = self.after {
            write!(f, " within {after:?}")?;
        }
        Ok(())
    }
}

impl StdError for UpstreamTimeout {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source.as_deref().map(|e| e as _)
    }
}

// === impl RequestBodyFailed ===

impl RequestBodyFailed {
    /// The client's body failed with `source` while it was sent.
    pub(crate) fn failed(upstream: Arc<str>, source: BoxError) -> Self {
        Self { upstream, source }
    }

    pub(crate) fn timed_out(upstream: Arc<str>, after: Duration) -> Self {
        Self {
            upstream,
            source: Box::new(BodyTimedOut { after }),
        }
    }

    /// The upstream's authority (`host:port`).
    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    /// Whether the body did not arrive within the proxy's timeout (the
    /// gateway answers 408 Request Timeout): the timeout counts from the
    /// end of the request body, so a slow upload is the client's, and
    /// never makes the upstream look slow.
    pub fn is_timeout(&self) -> bool {
        self.source.downcast_ref::<BodyTimedOut>().is_some()
    }
}

impl fmt::Display for BodyTimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the request body did not arrive within {:?}", self.after)
    }
}

impl StdError for BodyTimedOut {}

impl fmt::Display for RequestBodyFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "request body failed while streaming to upstream {}",
            self.upstream
        )
    }
}

impl StdError for RequestBodyFailed {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.source)
    }
}

// === impl BuildError ===

impl BuildError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn with_source(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self {
            message: message.into(),
            source: Some(source.into()),
        }
    }
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for BuildError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source.as_deref().map(|e| e as _)
    }
}

// === impl ConnectTimedOut ===

impl fmt::Display for ConnectTimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "connect timed out after {:?}", self.after)
    }
}

impl StdError for ConnectTimedOut {}

// === impl BodyError ===

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("request body error")
    }
}

impl StdError for BodyError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.0)
    }
}

// === impl Chain ===

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cur = self.0.source();
        while let Some(e) = cur {
            write!(f, ": {e}")?;
            cur = e.source();
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn upstream() -> Arc<str> {
        Arc::from("svc:80")
    }

    #[test]
    fn timeout_is_504_and_generic() {
        let err: BoxError = Box::new(UpstreamTimeout::response(
            upstream(),
            Duration::from_secs(3),
        ));
        let p = to_problem(&*err);
        assert_eq!(p.status(), StatusCode::GATEWAY_TIMEOUT);
        assert!(!p.detail_text().unwrap().contains("svc"));
        assert_eq!(
            err.to_string(),
            "upstream svc:80 did not send response headers within 3s"
        );
    }

    #[test]
    fn unavailable_is_502_even_when_wrapped() {
        #[derive(Debug)]
        struct Wrapper(UpstreamUnavailable);
        impl fmt::Display for Wrapper {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("wrapped")
            }
        }
        impl StdError for Wrapper {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                Some(&self.0)
            }
        }
        let inner = UpstreamUnavailable {
            upstream: upstream(),
            connect: true,
            source: "refused".into(),
        };
        let err: BoxError = Box::new(Wrapper(inner));
        let p = to_problem(&*err);
        assert_eq!(p.status(), StatusCode::BAD_GATEWAY);
        assert!(!p.detail_text().unwrap().contains("refused"));
        assert!(
            cause_ref::<UpstreamUnavailable>(&*err)
                .unwrap()
                .is_connect()
        );
    }

    #[test]
    fn chain_lists_every_cause() {
        let err = UpstreamUnavailable {
            upstream: upstream(),
            connect: false,
            source: Box::new(io::Error::new(io::ErrorKind::ConnectionReset, "reset")),
        };
        assert_eq!(
            Chain(&err).to_string(),
            "upstream svc:80 failed the request: reset"
        );
    }

    #[test]
    fn unknown_errors_are_502() {
        let err = io::Error::other("boom");
        assert_eq!(to_problem(&err).status(), StatusCode::BAD_GATEWAY);
    }
}
