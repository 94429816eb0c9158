//! Errors, and the markers a refusal leaves in the response extensions.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use towergate_core::BoxError;

/// A layer or store could not be built from its settings.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The layer has no limit.
    #[error("a rate-limit layer needs at least one limit")]
    NoLimits,
    /// A limit has no key and the layer has no default key.
    #[error("limit {0:?} has no key and the layer has no default key")]
    NoKey(String),
    /// A limit's rate, period or burst is zero or out of range.
    #[error("limit {limit:?} is invalid: {reason}")]
    InvalidLimit {
        /// The limit's name.
        limit: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A key's settings are out of range.
    #[error("limit {limit:?} has an invalid key: {reason}")]
    InvalidKey {
        /// The limit's name.
        limit: String,
        /// What is wrong with its key.
        reason: String,
    },
    /// A limit or scope name is not a token usable in headers and store keys.
    #[error("invalid name {0:?}: use 1 to 64 letters, digits, '-', '_' or '.'")]
    InvalidName(String),
    /// Two limits of one layer have the same name.
    #[error("two limits are named {0:?}")]
    DuplicateName(String),
    /// The missing-key refusal status is not a client error.
    #[error("a missing key must be refused with a 4xx status, not {0}")]
    InvalidStatus(StatusCode),
    /// A store's settings are invalid.
    #[error("invalid store settings: {0}")]
    InvalidStore(String),
    /// The Redis store was built outside a Tokio runtime.
    #[error("the Redis store must be built inside a Tokio runtime")]
    NoRuntime,
    /// The Redis client refused the URL.
    #[error("invalid Redis settings")]
    Redis(#[source] redis::RedisError),
}

/// A store could not decide.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store did not answer in time.
    #[error("rate-limit store did not answer within {0:?}")]
    TimedOut(Duration),
    /// The store failed (connection refused, server error).
    #[error("rate-limit store failed")]
    Backend(#[source] BoxError),
    /// The store is degraded and was not asked; it will be probed again in
    /// about this long.
    #[error("rate-limit store is degraded; next probe in {0:?}")]
    Degraded(Duration),
    /// The store answered something this crate does not understand.
    #[error("rate-limit store answered unexpectedly: {0}")]
    BadReply(String),
    /// A finished [`Check`](crate::store::Check) was polled again.
    #[error("rate-limit check polled after completion")]
    Polled,
}

/// In the extensions of a `429` response: which limit refused, and for how
/// long. Access logs and metrics read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimited {
    limit: Arc<str>,
    retry_after: Duration,
}

/// In the extensions of a `503` response: the store failed and a
/// [`FailClosed`](crate::FailurePolicy::FailClosed) limit could not decide.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreUnavailable {
    limit: Arc<str>,
}

/// In the extensions of a `503` response from
/// [`ConcurrencyLimit`](crate::ConcurrencyLimit): too many requests were in
/// flight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Overloaded {
    max_in_flight: usize,
}

// === impl RateLimited ===

impl RateLimited {
    pub(crate) fn new(limit: Arc<str>, retry_after: Duration) -> Self {
        Self { limit, retry_after }
    }

    /// The name of the limit that refused (the one that asks to wait longest).
    pub fn limit(&self) -> &str {
        &self.limit
    }

    /// How long until the request would be admitted.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }
}

impl fmt::Display for RateLimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rate limit {:?} exceeded", self.limit)
    }
}

impl std::error::Error for RateLimited {}

// === impl StoreUnavailable ===

impl StoreUnavailable {
    pub(crate) fn new(limit: Arc<str>) -> Self {
        Self { limit }
    }

    /// The fail-closed limit that could not be decided.
    pub fn limit(&self) -> &str {
        &self.limit
    }
}

impl fmt::Display for StoreUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rate-limit store unavailable for limit {:?}", self.limit)
    }
}

impl std::error::Error for StoreUnavailable {}

// === impl Overloaded ===

impl Overloaded {
    pub(crate) fn new(max_in_flight: usize) -> Self {
        Self { max_in_flight }
    }

    /// The limit that was reached.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }
}

impl fmt::Display for Overloaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "more than {} requests in flight", self.max_in_flight)
    }
}

impl std::error::Error for Overloaded {}
