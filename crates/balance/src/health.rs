//! Active health checks: each endpoint is probed on an interval, taken out
//! after failed checks and put back after passed ones. Each endpoint has
//! its own schedule, offset at random by up to a tenth of the interval, so
//! a probe that hangs until its timeout delays no other endpoint's checks.
//!
//! The probe itself is the embedder's: a [`CheckHealth`] (any closure
//! `Fn(&Endpoint, &str) -> impl Future<Output = Result<StatusCode, BoxError>>`)
//! sends `GET {path}` however it likes, so this crate forces no HTTP client.
//! The pool adds the interval, the timeout, the expected statuses and the
//! thresholds.

use std::fmt;
use std::future::Future;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::StatusCode;
use towergate_core::BoxError;

use crate::endpoint::Endpoint;
use crate::error::BuildError;

/// Sends one health probe to an endpoint and reports the status it got.
pub trait CheckHealth: Send + Sync + 'static {
    /// Probes `endpoint` at `path` (`/healthz`).
    fn check(
        &self,
        endpoint: &Endpoint,
        path: &str,
    ) -> BoxFuture<'static, Result<StatusCode, BoxError>>;
}

/// Active health checks: each endpoint is probed on an interval, taken out
/// of rotation after `unhealthy_threshold` failed probes in a row and put
/// back after `healthy_threshold` passed ones.
///
/// The probe is the embedder's [`CheckHealth`] (any closure
/// `Fn(&Endpoint, &str) -> impl Future<Output = Result<StatusCode, BoxError>>`),
/// so this crate forces no HTTP client; the pool adds the interval, the
/// timeout and the expected statuses.
///
/// ```
/// use std::time::Duration;
/// use towergate_balance::{Endpoint, HealthCheck};
///
/// let check = HealthCheck::new(|_e: &Endpoint, _path: &str| async {
///     Ok::<_, towergate_core::BoxError>(http::StatusCode::OK)
/// })
/// .path("/healthz")
/// .interval(Duration::from_secs(2))
/// .unhealthy_threshold(2);
/// # drop(check);
/// ```
#[derive(Clone)]
pub struct HealthCheck {
    pub(crate) checker: Arc<dyn CheckHealth>,
    pub(crate) path: Arc<str>,
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
    pub(crate) expected: Vec<RangeInclusive<u16>>,
    pub(crate) healthy_threshold: u32,
    pub(crate) unhealthy_threshold: u32,
}

// === impl CheckHealth ===

impl<F, Fut> CheckHealth for F
where
    F: Fn(&Endpoint, &str) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<StatusCode, BoxError>> + Send + 'static,
{
    fn check(
        &self,
        endpoint: &Endpoint,
        path: &str,
    ) -> BoxFuture<'static, Result<StatusCode, BoxError>> {
        Box::pin(self(endpoint, path))
    }
}

// === impl HealthCheck ===

impl HealthCheck {
    /// Checks `GET /health` with `checker` every 5 s, 1 s timeout, 200-399
    /// expected (a redirect or a 304 is an answer, as in the binary); 3 failures in a row take an endpoint out, 2 passes put it
    /// back.
    pub fn new(checker: impl CheckHealth) -> Self {
        Self {
            checker: Arc::new(checker),
            path: "/health".into(),
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            expected: vec![200..=399],
            healthy_threshold: 2,
            unhealthy_threshold: 3,
        }
    }

    /// The path probed (default `/health`).
    pub fn path(mut self, path: impl Into<Arc<str>>) -> Self {
        self.path = path.into();
        self
    }

    /// Time from the start of one probe of an endpoint to the start of its
    /// next (default 5 s), plus a random up to a tenth of it; each endpoint
    /// on its own schedule. A probe that takes longer is followed at once
    /// by the next one.
    pub fn interval(mut self, d: Duration) -> Self {
        self.interval = d;
        self
    }

    /// How long a probe may take (default 1 s); a late answer is a failure.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// The statuses that pass, replacing the default 200-399.
    pub fn expected_statuses(
        mut self,
        ranges: impl IntoIterator<Item = RangeInclusive<u16>>,
    ) -> Self {
        self.expected = ranges.into_iter().collect();
        self
    }

    /// Passed checks in a row that put an endpoint back (default 2).
    pub fn healthy_threshold(mut self, n: u32) -> Self {
        self.healthy_threshold = n;
        self
    }

    /// Failed checks in a row that take an endpoint out (default 3).
    pub fn unhealthy_threshold(mut self, n: u32) -> Self {
        self.unhealthy_threshold = n;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), BuildError> {
        if !self.path.starts_with('/') {
            return Err(BuildError::new(
                "health check: the path must start with `/`",
            ));
        }
        if self.interval.is_zero() || self.timeout.is_zero() {
            return Err(BuildError::new(
                "health check: interval and timeout must not be zero",
            ));
        }
        if self.healthy_threshold == 0 || self.unhealthy_threshold == 0 {
            return Err(BuildError::new(
                "health check: thresholds must be at least 1",
            ));
        }
        if self.expected.is_empty() || self.expected.iter().any(|r| r.is_empty()) {
            return Err(BuildError::new("health check: no expected status"));
        }
        Ok(())
    }

    pub(crate) fn passes(&self, status: StatusCode) -> bool {
        self.expected.iter().any(|r| r.contains(&status.as_u16()))
    }
}

impl fmt::Debug for HealthCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthCheck")
            .field("path", &self.path)
            .field("interval", &self.interval)
            .field("timeout", &self.timeout)
            .field("expected", &self.expected)
            .field("healthy_threshold", &self.healthy_threshold)
            .field("unhealthy_threshold", &self.unhealthy_threshold)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_and_not_modified_pass_by_default() {
        let check = HealthCheck::new(|_e: &Endpoint, _path: &str| async {
            Ok::<_, BoxError>(StatusCode::OK)
        });
        for ok in [200, 204, 301, 304, 399] {
            assert!(check.passes(StatusCode::from_u16(ok).unwrap()), "{ok}");
        }
        for bad in [400, 404, 500, 503] {
            assert!(!check.passes(StatusCode::from_u16(bad).unwrap()), "{bad}");
        }
        let strict = check.expected_statuses([200..=200]);
        assert!(!strict.passes(StatusCode::MOVED_PERMANENTLY));
    }
}
