//! One limit: a rate, a burst, a name, what to key on and what to do when
//! the store fails.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::duration_micros;
use crate::gcra::Gcra;
use crate::key::Key;

/// A rate limit or quota: `count` requests per `period`, up to `burst` at
/// once (`count` unless set).
///
/// Limits are GCRA ([`gcra`](crate::gcra)): a client that waits earns
/// requests back continuously, one every `period / count`, instead of at
/// fixed window boundaries. A quota is the same thing over a long period:
/// `Limit::per_day(10_000)` allows 10,000 requests at once from a full
/// bucket and earns one back every 8.64 s, so no more than 10,000 pass in
/// any 24 hours plus what was earned in them. Windows slide; they are not
/// calendar days or months.
///
/// ```
/// use std::time::Duration;
/// use towergate_ratelimit::{FailurePolicy, Key, Limit};
///
/// let per_consumer = Limit::per_second(10)
///     .burst(20)
///     .name("per-consumer")
///     .key(Key::identity("consumer"));
/// let hourly = Limit::per_hour(1_000).name("hourly").key(Key::identity("consumer"));
/// let route = Limit::per_second(5_000)
///     .name("route")
///     .key(Key::Route)
///     .on_store_failure(FailurePolicy::FailClosed);
/// let monthly = Limit::new(100_000, Duration::from_secs(30 * 86_400)).name("monthly");
/// # let _ = (per_consumer, hourly, route, monthly);
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct Limit {
    pub(crate) count: u64,
    pub(crate) period: Duration,
    pub(crate) burst: Option<u64>,
    pub(crate) name: Option<Arc<str>>,
    pub(crate) key: Option<Key>,
    pub(crate) on_store_failure: FailurePolicy,
}

/// What a limit does when its shared store (Redis) is slow or down.
///
/// Decided per request: if any of its limits fails closed, the request is
/// answered `503`; otherwise all its limits are decided by the layer's
/// local limiter, still all-or-nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Decide with the layer's local in-memory limiter instead: the gateway
    /// keeps serving and keeps limiting, per instance (with N instances a
    /// client may get up to N times the limit while the store is down).
    #[default]
    FailOpen,
    /// Answer `503` with `Retry-After`: for limits that protect something
    /// that must not see more than the limit, whatever happens.
    FailClosed,
}

// === impl Limit ===

impl Limit {
    /// `count` requests per `period`, burst `count`.
    pub fn new(count: u64, period: Duration) -> Self {
        Self {
            count,
            period,
            burst: None,
            name: None,
            key: None,
            on_store_failure: FailurePolicy::default(),
        }
    }

    /// `count` requests per second.
    pub fn per_second(count: u64) -> Self {
        Self::new(count, Duration::from_secs(1))
    }

    /// `count` requests per minute.
    pub fn per_minute(count: u64) -> Self {
        Self::new(count, Duration::from_secs(60))
    }

    /// `count` requests per hour.
    pub fn per_hour(count: u64) -> Self {
        Self::new(count, Duration::from_secs(3_600))
    }

    /// A daily quota: `count` requests per 24 hours, all usable at once.
    pub fn per_day(count: u64) -> Self {
        Self::new(count, Duration::from_secs(86_400))
    }

    /// A monthly quota: `count` requests per 30 days, all usable at once.
    pub fn per_month(count: u64) -> Self {
        Self::new(count, Duration::from_secs(30 * 86_400))
    }

    /// Requests admitted at once from a full bucket (default: `count`).
    pub fn burst(mut self, burst: u64) -> Self {
        self.burst = Some(burst);
        self
    }

    /// The name reported in `RateLimit-Policy`, `RateLimit` and problem
    /// bodies, and part of the store key: letters, digits, `-`, `_`, `.`,
    /// at most 64 characters, unique in a layer. Defaults to
    /// `"<count>-per-<seconds>s"`.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// What this limit counts by; defaults to the layer's key.
    pub fn key(mut self, key: Key) -> Self {
        self.key = Some(key);
        self
    }

    /// What to do when the store fails (default [`FailurePolicy::FailOpen`]).
    pub fn on_store_failure(mut self, policy: FailurePolicy) -> Self {
        self.on_store_failure = policy;
        self
    }

    /// The GCRA parameters in microseconds, or `None` if the limit is
    /// zero, sub-microsecond or longer than [`gcra::MAX_WINDOW`](crate::gcra::MAX_WINDOW).
    pub fn gcra(&self) -> Option<Gcra> {
        if self.count == 0 {
            return None;
        }
        let period = duration_micros(self.period);
        // Rounded up: never admit faster than asked.
        let interval = period.div_ceil(self.count);
        Gcra::new(interval, self.burst.unwrap_or(self.count))
    }

    /// The name this limit goes by in headers, problems and bucket ids:
    /// its own, or `{count}-per-{seconds}s`.
    pub fn display_name(&self) -> String {
        match &self.name {
            Some(name) => name.to_string(),
            None => self.default_name(),
        }
    }

    /// The key this limit sets for itself, if any (otherwise the layer's).
    pub fn own_key(&self) -> Option<&Key> {
        self.key.as_ref()
    }

    pub(crate) fn default_name(&self) -> String {
        let secs = self.period.as_secs_f64();
        format!("{}-per-{}s", self.count, secs)
    }
}
