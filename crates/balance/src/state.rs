//! What operators see of a pool: [`Pool::snapshot`](crate::Pool::snapshot).

use serde::Serialize;

/// The state of one endpoint, for the admin API.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct EndpointState {
    /// The endpoint's URL.
    pub url: String,
    /// Its weight.
    pub weight: u32,
    /// Where it came from: `static`, `dns`, `discover` or `api`.
    pub source: &'static str,
    /// Whether it takes traffic, and if not why.
    pub status: Status,
    /// The active health check's view, if checks are configured.
    pub active_check: Option<ActiveCheckState>,
    /// Requests sent whose response has not ended yet (its body still
    /// streams, or its tunnel is open).
    pub in_flight: usize,
    /// Requests waiting for the endpoint service to become ready.
    pub pending: usize,
    /// The peak-EWMA latency estimate, in milliseconds.
    pub ewma_ms: f64,
    /// Attempts sent to it.
    pub requests: u64,
    /// Attempts that failed.
    pub failures: u64,
    /// Failures in a row now.
    pub consecutive_failures: u32,
    /// Milliseconds left of the current ejection, if ejected.
    pub ejected_for_ms: Option<u64>,
    /// Passive ejections so far.
    pub ejections: u64,
}

/// Whether an endpoint takes traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Status {
    /// In rotation.
    Healthy,
    /// Failing active health checks.
    Unhealthy,
    /// Ejected by passive health for a while.
    Ejected,
    /// Weight 0: takes no new request.
    Draining,
}

/// The active health check's view of an endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ActiveCheckState {
    /// The check's verdict.
    pub healthy: bool,
    /// Passed checks in a row.
    pub consecutive_successes: u32,
    /// Failed checks in a row.
    pub consecutive_failures: u32,
    /// The last check's status, if it got an answer.
    pub last_status: Option<u16>,
    /// Why the last failed check failed.
    pub last_error: Option<String>,
}
