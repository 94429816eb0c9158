//! Typed errors, named after what happened.
//!
//! The [`Balance`](crate::Balance) service fails with a
//! [`BoxError`](towergate_core::BoxError) holding one of these, or the last
//! endpoint's own error when every attempt failed. Mapping them to answers
//! is the caller's policy; [`to_problem`] gives the usual one.

use std::time::Duration;

use http::{HeaderValue, StatusCode, header};
use towergate_core::{Problem, cause_ref};

/// The pool has no endpoint to send to: it is empty, or every endpoint is
/// unhealthy and the panic threshold is off.
///
/// The gateway answers 503 Service Unavailable.
#[derive(Debug, thiserror::Error)]
#[error("no healthy endpoint in pool {pool}")]
pub struct NoHealthyEndpoint {
    pool: std::sync::Arc<str>,
}

/// A circuit breaker is open: the pool or every endpoint is at its limit
/// of concurrent or pending requests. Nothing was sent.
///
/// The gateway answers 503 Service Unavailable with `Retry-After`.
#[derive(Debug, thiserror::Error)]
#[error("pool {pool} is overloaded ({scope} limit reached)")]
pub struct Overloaded {
    pool: std::sync::Arc<str>,
    scope: &'static str,
    retry_after: Duration,
}

/// A request, or one attempt of it, took longer than its timeout.
///
/// The gateway answers 504 Gateway Timeout.
#[derive(Debug, thiserror::Error)]
#[error("{} timed out after {after:?}", if *.attempt { "attempt" } else { "request" })]
pub struct Timeout {
    after: Duration,
    attempt: bool,
}

/// A builder was given settings that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct BuildError {
    message: String,
}

/// An attempt found the request body already consumed by an earlier one
/// (should not happen: a body is reused only while untouched).
#[derive(Debug, thiserror::Error)]
#[error("request body already consumed by an earlier attempt")]
pub(crate) struct BodyConsumed;

/// Maps an error of this crate to the usual problem response: 503 for
/// [`NoHealthyEndpoint`], 503 with `Retry-After` for [`Overloaded`], 504
/// for [`Timeout`]. `None` for anything else (an endpoint's own error),
/// which the endpoint's crate knows how to answer.
///
/// ```
/// use towergate_balance::error::to_problem;
///
/// let other: towergate_core::BoxError = "connection refused".into();
/// assert!(to_problem(&*other).is_none());
/// ```
pub fn to_problem(err: &(dyn std::error::Error + 'static)) -> Option<Problem> {
    if cause_ref::<NoHealthyEndpoint>(err).is_some() {
        return Some(
            Problem::new(StatusCode::SERVICE_UNAVAILABLE)
                .detail("no healthy upstream endpoint is available"),
        );
    }
    if let Some(o) = cause_ref::<Overloaded>(err) {
        // Rounded up: a client that waits that long is never early.
        let secs = o.retry_after.as_micros().div_ceil(1_000_000).max(1);
        let mut p = Problem::new(StatusCode::SERVICE_UNAVAILABLE)
            .detail("the upstream service is overloaded");
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            p = p.header(header::RETRY_AFTER, v);
        }
        return Some(p);
    }
    if cause_ref::<Timeout>(err).is_some() {
        return Some(
            Problem::new(StatusCode::GATEWAY_TIMEOUT)
                .detail("the upstream service did not answer in time"),
        );
    }
    None
}

// === impl NoHealthyEndpoint ===

impl NoHealthyEndpoint {
    pub(crate) fn new(pool: std::sync::Arc<str>) -> Self {
        Self { pool }
    }

    /// The pool's name.
    pub fn pool(&self) -> &str {
        &self.pool
    }
}

// === impl Overloaded ===

impl Overloaded {
    pub(crate) fn new(
        pool: std::sync::Arc<str>,
        scope: &'static str,
        retry_after: Duration,
    ) -> Self {
        Self {
            pool,
            scope,
            retry_after,
        }
    }

    /// The pool's name.
    pub fn pool(&self) -> &str {
        &self.pool
    }

    /// Which limit: `"pool"` (the pool's concurrent or pending requests) or
    /// `"endpoint"` (every endpoint at its own limit).
    pub fn scope(&self) -> &'static str {
        self.scope
    }

    /// How long the caller should wait, for `Retry-After`.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }
}

// === impl Timeout ===

impl Timeout {
    pub(crate) fn request(after: Duration) -> Self {
        Self {
            after,
            attempt: false,
        }
    }

    pub(crate) fn attempt(after: Duration) -> Self {
        Self {
            after,
            attempt: true,
        }
    }

    /// The timeout that expired.
    pub fn after(&self) -> Duration {
        self.after
    }

    /// Whether one attempt timed out (and no retry was possible), rather
    /// than the whole request.
    pub fn is_attempt(&self) -> bool {
        self.attempt
    }
}

// === impl BuildError ===

impl BuildError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems() {
        let e: towergate_core::BoxError = Box::new(Overloaded::new(
            "p".into(),
            "pool",
            Duration::from_millis(1500),
        ));
        let p = to_problem(&*e).expect("ours");
        assert_eq!(p.status(), 503);
        assert_eq!(p.headers()["retry-after"], "2", "rounded up");
        let e: towergate_core::BoxError = Box::new(Timeout::request(Duration::from_secs(1)));
        assert_eq!(to_problem(&*e).expect("ours").status(), 504);
        assert_eq!(e.to_string(), "request timed out after 1s");
        let e: towergate_core::BoxError = Box::new(NoHealthyEndpoint::new("users".into()));
        assert_eq!(to_problem(&*e).expect("ours").status(), 503);
        assert_eq!(e.to_string(), "no healthy endpoint in pool users");
    }
}
