//! Per-route settings of a [`Balance`](crate::Balance): retries, their
//! budget and back-off, and hedging.

use std::time::Duration;

use http::{Method, StatusCode};

use crate::algorithm::Backoff;
use crate::classify::Outcome;
use crate::error::BuildError;

/// When and how often a failed attempt is tried again on another endpoint.
///
/// A retry happens only if all of these hold:
/// - the attempt's [`Outcome`] is one of the [`RetryOn`] conditions;
/// - the request is safe to repeat: its method is idempotent (`GET`,
///   `HEAD`, `OPTIONS`, `TRACE`, `PUT`, `DELETE`), or the failure happened
///   before anything was sent ([`Outcome::ConnectFailure`]), or
///   [`non_idempotent`](Self::non_idempotent) is on;
/// - the body can be sent again (see [`RetryBody`](crate::RetryBody));
/// - fewer than [`max_retries`](Self::max_retries) retries were made;
/// - the [`RetryBudget`] has a retry left;
/// - an endpoint this request has not tried takes traffic: a retry never
///   goes back to an endpoint that failed it (so a pool of one endpoint
///   does not retry), and is counted (budget, `on_retry`) only once it
///   has one.
///
/// The default retries twice on connect failures, other failures (a reset
/// connection) and 502/503/504, within a budget of 20% plus 10 per second, with 10 ms →
/// 250 ms of jittered back-off. A timed-out attempt is retried only when
/// asked for ([`RetryOn::timeout`]): an upstream that is slow to answer is
/// likely overloaded, and retrying would multiply both its load and the
/// client's wait.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    pub(crate) max_retries: u32,
    pub(crate) on: RetryOn,
    pub(crate) non_idempotent: bool,
    pub(crate) budget: Option<RetryBudget>,
    pub(crate) backoff: Backoff,
}

/// The failures that may be retried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryOn {
    connect: bool,
    timeout: bool,
    failure: bool,
    statuses: Vec<StatusCode>,
}

/// A retry budget (finagle and linkerd2-proxy style): over the last `ttl`,
/// at most `min_per_sec × ttl + ratio × requests` retries (and hedges).
///
/// The budget is shared by all clones of one [`Balance`](crate::Balance),
/// so it caps what one route adds to an outage.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryBudget {
    pub(crate) ratio: f64,
    pub(crate) min_per_sec: u32,
    pub(crate) ttl: Duration,
}

/// Hedging: when the first attempt of a safe read (`GET`, `HEAD`,
/// `OPTIONS`, with an empty or buffered body) has not answered after a
/// delay, a second one goes to another endpoint; the first good answer
/// wins and the other attempt is cancelled. Hedges draw on the retry
/// budget.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hedge {
    pub(crate) delay: HedgeDelay,
    pub(crate) min_delay: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum HedgeDelay {
    Fixed(Duration),
    /// A percentile of recent latencies; `initial` until there are enough.
    Percentile {
        q: f64,
        initial: Duration,
    },
}

/// Samples the latency histogram needs before its percentile is believed.
pub(crate) const HEDGE_MIN_SAMPLES: u32 = 20;

// === impl RetryPolicy ===

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 2,
            on: RetryOn::default(),
            non_idempotent: false,
            budget: Some(RetryBudget::default()),
            backoff: Backoff::new(Duration::from_millis(10), Duration::from_millis(250)),
        }
    }
}

impl RetryPolicy {
    /// No retries.
    pub fn none() -> Self {
        Self {
            max_retries: 0,
            ..Self::default()
        }
    }

    /// Retries after the first attempt (default 2).
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// Which failures are retried.
    pub fn retry_on(mut self, on: RetryOn) -> Self {
        self.on = on;
        self
    }

    /// Also retry non-idempotent requests (`POST`, `PATCH`) after failures
    /// that happened once they may have been sent. Default off: only a
    /// connect failure is retried for them. The body rule still holds.
    pub fn non_idempotent(mut self, yes: bool) -> Self {
        self.non_idempotent = yes;
        self
    }

    /// The budget; `None` removes it (retries then only stop at
    /// `max_retries`, which can multiply an outage's load).
    pub fn budget(mut self, budget: Option<RetryBudget>) -> Self {
        self.budget = budget;
        self
    }

    /// Exponential back-off with full jitter between attempts: the `n`-th
    /// retry waits up to `min(max, base × 2ⁿ)` (default 10 ms, 250 ms).
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.backoff = Backoff::new(base, max);
        self
    }

    pub(crate) fn validate(&self) -> Result<(), BuildError> {
        if self.backoff.base() > self.backoff.max() {
            return Err(BuildError::new("retry: back-off base must not exceed max"));
        }
        if let Some(b) = &self.budget {
            b.validate()?;
        }
        Ok(())
    }

    /// Whether the method may be repeated after the request was sent.
    pub(crate) fn method_allows(&self, method: &Method) -> bool {
        self.non_idempotent || is_idempotent(method)
    }
}

/// RFC 9110 §9.2.2: repeating these has the effect of sending them once.
pub(crate) fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

// === impl RetryOn ===

impl Default for RetryOn {
    /// Connect failures, other failures, 502, 503 and 504; not timeouts.
    fn default() -> Self {
        Self {
            connect: true,
            timeout: false,
            failure: true,
            statuses: vec![
                StatusCode::BAD_GATEWAY,
                StatusCode::SERVICE_UNAVAILABLE,
                StatusCode::GATEWAY_TIMEOUT,
            ],
        }
    }
}

impl RetryOn {
    /// Nothing; add conditions with the setters.
    pub fn none() -> Self {
        Self {
            connect: false,
            timeout: false,
            failure: false,
            statuses: Vec::new(),
        }
    }

    /// [`Outcome::ConnectFailure`]: nothing was sent.
    pub fn connect_failure(mut self, yes: bool) -> Self {
        self.connect = yes;
        self
    }

    /// [`Outcome::Timeout`], the endpoint's or the attempt's.
    pub fn timeout(mut self, yes: bool) -> Self {
        self.timeout = yes;
        self
    }

    /// [`Outcome::Failure`]: reset, closed or broken exchanges.
    pub fn failure(mut self, yes: bool) -> Self {
        self.failure = yes;
        self
    }

    /// A failure status ([`Outcome::Status`]) to retry.
    pub fn status(mut self, status: StatusCode) -> Self {
        if !self.statuses.contains(&status) {
            self.statuses.push(status);
        }
        self
    }

    pub(crate) fn matches(&self, outcome: Outcome) -> bool {
        match outcome {
            Outcome::ConnectFailure => self.connect,
            Outcome::Timeout => self.timeout,
            Outcome::Failure => self.failure,
            Outcome::Status(s) => self.statuses.contains(&s),
            Outcome::Success | Outcome::Ignore => false,
        }
    }
}

// === impl RetryBudget ===

impl Default for RetryBudget {
    /// 20% of requests plus 10 per second, over 10 s.
    fn default() -> Self {
        Self {
            ratio: 0.2,
            min_per_sec: 10,
            ttl: Duration::from_secs(10),
        }
    }
}

impl RetryBudget {
    /// `ratio` retries per request (0.2 = 20% extra load at most), plus
    /// `min_per_sec` whatever the traffic, remembered for `ttl` (1 to 60 s).
    pub fn new(ratio: f64, min_per_sec: u32, ttl: Duration) -> Self {
        Self {
            ratio,
            min_per_sec,
            ttl,
        }
    }

    fn validate(&self) -> Result<(), BuildError> {
        if !self.ratio.is_finite() || !(0.0..=1000.0).contains(&self.ratio) {
            return Err(BuildError::new(
                "retry budget: ratio must be within 0..=1000",
            ));
        }
        if self.ttl < Duration::from_secs(1) || self.ttl > Duration::from_secs(60) {
            return Err(BuildError::new("retry budget: ttl must be within 1s..=60s"));
        }
        Ok(())
    }
}

// === impl Hedge ===

impl Hedge {
    /// Hedge after a fixed delay.
    pub fn after(delay: Duration) -> Self {
        Self {
            delay: HedgeDelay::Fixed(delay),
            min_delay: Duration::ZERO,
        }
    }

    /// Hedge after the `q` quantile (e.g. `0.95`) of this route's recent
    /// attempt latencies; `initial` until 20 have been seen. Successful
    /// attempts count, and so, as lower bounds, do first attempts that a
    /// hedge beat and attempts that timed out: the slow tail that hedging
    /// hides must stay in the distribution, or the quantile would keep
    /// falling and ever more requests be hedged.
    pub fn percentile(q: f64, initial: Duration) -> Self {
        Self {
            delay: HedgeDelay::Percentile { q, initial },
            min_delay: Duration::ZERO,
        }
    }

    /// Never hedge sooner than this (default 0), so a fast route does not
    /// hedge on noise.
    pub fn min_delay(mut self, d: Duration) -> Self {
        self.min_delay = d;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), BuildError> {
        if let HedgeDelay::Percentile { q, .. } = self.delay
            && !(q > 0.0 && q < 1.0)
        {
            return Err(BuildError::new("hedge: percentile must be within (0, 1)"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_and_methods() {
        let on = RetryOn::default();
        assert!(on.matches(Outcome::ConnectFailure));
        assert!(on.matches(Outcome::Status(StatusCode::SERVICE_UNAVAILABLE)));
        assert!(!on.matches(Outcome::Status(StatusCode::INTERNAL_SERVER_ERROR)));
        assert!(!on.matches(Outcome::Ignore));
        assert!(on.matches(Outcome::Failure));
        assert!(!on.matches(Outcome::Timeout), "timeouts are opt-in");
        assert!(on.timeout(true).matches(Outcome::Timeout));
        assert!(
            RetryOn::none()
                .status(StatusCode::INTERNAL_SERVER_ERROR)
                .matches(Outcome::Status(StatusCode::INTERNAL_SERVER_ERROR))
        );
        let p = RetryPolicy::default();
        assert!(p.method_allows(&Method::PUT));
        assert!(!p.method_allows(&Method::POST));
        assert!(p.clone().non_idempotent(true).method_allows(&Method::POST));
        assert!(
            RetryPolicy::default()
                .budget(Some(RetryBudget::new(0.2, 1, Duration::ZERO)))
                .validate()
                .is_err()
        );
        assert!(Hedge::percentile(1.5, Duration::ZERO).validate().is_err());
    }
}
