//! Pool-wide settings: the algorithm, passive ejection and circuit breaking.

use std::time::Duration;

use crate::algorithm::outlier::EjectionPolicy;
use crate::error::BuildError;
use crate::hash::HashKey;

/// How a pool picks an endpoint for a request.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub enum Algorithm {
    /// Power of two choices over peak-EWMA latency × requests in flight
    /// (÷ weight): the default, as in linkerd2-proxy. Adapts to slow and
    /// overloaded endpoints without configuration.
    #[default]
    PeakEwma,
    /// The endpoint with the fewest requests in flight (÷ weight).
    LeastRequests,
    /// Each endpoint in turn, ignoring weights.
    RoundRobin,
    /// Smooth weighted round-robin (nginx's): each endpoint in proportion
    /// to its weight, interleaved.
    WeightedRoundRobin,
    /// A ring with virtual nodes over the request's key: a key sticks to an
    /// endpoint, and only about `1/N` of the keys move when one leaves.
    /// Requests without the key are balanced by P2C.
    ConsistentHash(HashKey),
}

/// Passive health: consecutive failed attempts eject an endpoint for a
/// while (outlier detection).
///
/// An ejection lasts `base_time × 2^(n-1)` for the `n`-th ejection in a row,
/// at most `max_time`; an endpoint that stays in for `max_time` starts
/// again from `base_time`. No more than `max_ejected_ratio` of the pool is
/// ever ejected at once, so a failure that is not the endpoints' fault
/// cannot empty it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ejection {
    pub(crate) enabled: bool,
    pub(crate) consecutive_failures: u32,
    pub(crate) base: Duration,
    pub(crate) max: Duration,
    pub(crate) max_ratio: f64,
}

/// Circuit breaking: limits on requests, per pool and per endpoint. A
/// request over a limit fails at once with
/// [`Overloaded`](crate::error::Overloaded) instead of queueing.
///
/// *Requests* are in flight from when they are sent until their response
/// body ends or is dropped (a stream counts while it streams), or, for a
/// `101` that opened a tunnel, until the tunnel closes (see
/// [`ResponseBody`](crate::body::ResponseBody)); *pending* ones wait for an
/// endpoint service to become ready (services with their own concurrency
/// limit). All limits are off by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CircuitBreaker {
    pub(crate) max_requests: Option<usize>,
    pub(crate) max_pending: Option<usize>,
    pub(crate) max_endpoint_requests: Option<usize>,
    pub(crate) max_endpoint_pending: Option<usize>,
    pub(crate) retry_after: Duration,
}

// === impl Ejection ===

impl Default for Ejection {
    /// Five failures in a row eject for 10 s, doubling up to 5 min; at most
    /// half of the pool is ejected (the towergate binary's defaults too).
    fn default() -> Self {
        Self {
            enabled: true,
            consecutive_failures: 5,
            base: Duration::from_secs(10),
            max: Duration::from_secs(300),
            max_ratio: 0.5,
        }
    }
}

impl Ejection {
    /// No passive ejection.
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            ..Self::default()
        }
    }

    /// Failures in a row that eject (default 5).
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.consecutive_failures = n;
        self
    }

    /// The first ejection's length (default 10 s).
    pub fn base_time(mut self, d: Duration) -> Self {
        self.base = d;
        self
    }

    /// The longest ejection (default 5 min).
    pub fn max_time(mut self, d: Duration) -> Self {
        self.max = d;
        self
    }

    /// The largest share of the pool ejected at once, `0.0..=1.0`
    /// (default 0.5): with 3 endpoints, 1.
    pub fn max_ejected_ratio(mut self, r: f64) -> Self {
        self.max_ratio = r;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), BuildError> {
        if !self.enabled {
            return Ok(());
        }
        if self.consecutive_failures == 0 {
            return Err(BuildError::new(
                "ejection: consecutive_failures must be at least 1",
            ));
        }
        if self.base.is_zero() || self.max < self.base {
            return Err(BuildError::new("ejection: need 0 < base_time <= max_time"));
        }
        if !(0.0..=1.0).contains(&self.max_ratio) {
            return Err(BuildError::new(
                "ejection: max_ejected_ratio must be within 0..=1",
            ));
        }
        Ok(())
    }

    pub(crate) fn policy(&self) -> EjectionPolicy {
        EjectionPolicy {
            consecutive_failures: self.consecutive_failures,
            base: self.base,
            max: self.max,
        }
    }
}

// === impl CircuitBreaker ===

impl Default for CircuitBreaker {
    fn default() -> Self {
        Self {
            max_requests: None,
            max_pending: None,
            max_endpoint_requests: None,
            max_endpoint_pending: None,
            retry_after: Duration::from_secs(1),
        }
    }
}

impl CircuitBreaker {
    /// No limits (the default).
    pub fn new() -> Self {
        Self::default()
    }

    /// Most requests in the pool at once, retries and waits included.
    pub fn max_requests(mut self, n: usize) -> Self {
        self.max_requests = Some(n);
        self
    }

    /// Most requests waiting for an endpoint to become ready, pool-wide.
    pub fn max_pending(mut self, n: usize) -> Self {
        self.max_pending = Some(n);
        self
    }

    /// Most requests in flight to one endpoint; a full endpoint is skipped.
    pub fn max_endpoint_requests(mut self, n: usize) -> Self {
        self.max_endpoint_requests = Some(n);
        self
    }

    /// Most requests waiting for one endpoint to become ready.
    pub fn max_endpoint_pending(mut self, n: usize) -> Self {
        self.max_endpoint_pending = Some(n);
        self
    }

    /// What [`Overloaded::retry_after`](crate::error::Overloaded::retry_after)
    /// says (default 1 s).
    pub fn retry_after(mut self, d: Duration) -> Self {
        self.retry_after = d;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), BuildError> {
        let limits = [
            self.max_requests,
            self.max_pending,
            self.max_endpoint_requests,
            self.max_endpoint_pending,
        ];
        if limits.contains(&Some(0)) {
            return Err(BuildError::new(
                "circuit breaker: a limit of 0 would refuse everything",
            ));
        }
        Ok(())
    }
}
