//! Peak-EWMA latency estimate, with the same arithmetic as
//! `tower::load::PeakEwma` (and linkerd2-proxy), but with time passed in.
//!
//! A slower observation than the estimate replaces it at once (the *peak*),
//! a faster one pulls it down exponentially with the time elapsed since the
//! last update, and reading the estimate lets it decay towards zero so that
//! an endpoint that has not been tried for a while gets probed again.

use std::time::{Duration, Instant};

/// A peak-sensitive, exponentially weighted moving average of round-trip
/// times, in nanoseconds.
///
/// ```
/// use std::time::{Duration, Instant};
/// use towergate_balance::algorithm::PeakEwma;
///
/// let t0 = Instant::now();
/// let decay = Duration::from_secs(10);
/// let mut e = PeakEwma::new(Duration::from_millis(10), t0);
/// // A slow answer is believed at once.
/// e.observe(Duration::from_millis(100), t0, decay);
/// assert_eq!(e.estimate(t0, decay), 100e6);
/// // Ten seconds later, with no news, it has decayed by a factor e.
/// let later = e.estimate(t0 + decay, decay);
/// assert!((later - 100e6 / std::f64::consts::E).abs() < 1.0);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PeakEwma {
    rtt_ns: f64,
    update_at: Instant,
}

/// The most a failed attempt can add to an estimate: past this an endpoint
/// is simply "very slow", and the estimate stays a finite number of
/// nanoseconds however many failures follow one another.
pub const FAILURE_PENALTY_CAP: Duration = Duration::from_secs(30);

/// The load of an endpoint as P2C compares it: the latency estimate times
/// the requests in flight plus one, divided by the endpoint's weight.
///
/// One nanosecond is added to the estimate so that, when every estimate has
/// decayed to nothing, the number in flight still decides.
#[inline]
pub fn cost(estimate_ns: f64, in_flight: usize, weight: u32) -> f64 {
    (estimate_ns + 1.0) * (in_flight as f64 + 1.0) / f64::from(weight.max(1))
}

// === impl PeakEwma ===

impl PeakEwma {
    /// An estimate that starts at `initial`.
    pub fn new(initial: Duration, now: Instant) -> Self {
        Self {
            rtt_ns: nanos(initial),
            update_at: now,
        }
    }

    /// Restarts the estimate at `rtt_ns` (a returning endpoint starts at the
    /// pool's average, so it is neither flooded nor starved).
    pub fn reset(&mut self, rtt_ns: f64, now: Instant) {
        self.rtt_ns = rtt_ns.max(0.0);
        self.update_at = now;
    }

    /// Records a round trip of `rtt` that ended at `now`.
    pub fn observe(&mut self, rtt: Duration, now: Instant, decay: Duration) {
        self.observe_ns(nanos(rtt), now, decay);
    }

    fn observe_ns(&mut self, rtt: f64, now: Instant, decay: Duration) {
        if self.rtt_ns < rtt {
            // Peak: the worst recent case is the estimate.
            self.rtt_ns = rtt;
        } else {
            let elapsed = nanos(now.saturating_duration_since(self.update_at));
            let w = (-elapsed / nanos(decay).max(1.0)).exp();
            self.rtt_ns = self.rtt_ns * w + rtt * (1.0 - w);
        }
        self.update_at = self.update_at.max(now);
    }

    /// Records a failed attempt of `rtt` that ended at `now`: a fast failure
    /// must not look like a fast endpoint, so it counts as at least twice the
    /// current estimate, but never more than [`FAILURE_PENALTY_CAP`] (an
    /// endpoint that keeps failing would otherwise double without bound).
    pub fn observe_failure(&mut self, rtt: Duration, now: Instant, decay: Duration) {
        let doubled = (2.0 * self.estimate(now, decay)).min(nanos(FAILURE_PENALTY_CAP));
        let rtt = nanos(rtt).min(nanos(FAILURE_PENALTY_CAP));
        self.observe_ns(rtt.max(doubled), now, decay);
    }

    /// The estimate at `now`, in nanoseconds, decayed towards zero for the
    /// time since the last update.
    pub fn estimate(&mut self, now: Instant, decay: Duration) -> f64 {
        self.observe(Duration::ZERO, now, decay);
        self.rtt_ns
    }

    /// The estimate as of the last update, without decaying it.
    pub fn last(&self) -> f64 {
        self.rtt_ns
    }
}

fn nanos(d: Duration) -> f64 {
    d.as_secs_f64() * 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    const DECAY: Duration = Duration::from_secs(10);

    #[test]
    fn peak_then_ewma_towards_faster() {
        let t0 = Instant::now();
        let mut e = PeakEwma::new(Duration::from_millis(1), t0);
        e.observe(Duration::from_millis(50), t0, DECAY);
        assert_eq!(e.last(), 50e6);
        // One decay period later a 10ms answer: 50/e + 10(1 - 1/e).
        e.observe(Duration::from_millis(10), t0 + DECAY, DECAY);
        let want = 50e6 / std::f64::consts::E + 10e6 * (1.0 - 1.0 / std::f64::consts::E);
        assert!((e.last() - want).abs() < 1.0, "{} vs {want}", e.last());
    }

    #[test]
    fn failures_double_the_estimate_up_to_a_cap() {
        let t0 = Instant::now();
        let mut e = PeakEwma::new(Duration::from_millis(10), t0);
        e.observe_failure(Duration::from_millis(1), t0, DECAY);
        assert_eq!(e.last(), 20e6);
        // A thousand fast failures in a row (the pool of one endpoint that
        // answers 503 during maintenance): the estimate stops at the cap
        // instead of overflowing what a Duration can hold.
        for i in 0..1000u32 {
            e.observe_failure(
                Duration::from_millis(1),
                t0 + Duration::from_millis(u64::from(i)),
                DECAY,
            );
        }
        assert!(e.last().is_finite());
        assert!(e.last() <= nanos(FAILURE_PENALTY_CAP), "{}", e.last());
        assert!(e.last() > nanos(FAILURE_PENALTY_CAP) * 0.9, "{}", e.last());
        // And it comes down again like any other estimate.
        e.observe(Duration::from_millis(5), t0 + DECAY * 10, DECAY);
        // 30 s / e^10 + 5 ms: about 6.4 ms.
        assert!(e.last() < 10e6, "{}", e.last());
    }

    #[test]
    fn cost_grows_with_load_and_shrinks_with_weight() {
        assert!(cost(10.0, 1, 1) > cost(10.0, 0, 1));
        assert!(cost(10.0, 1, 2) < cost(10.0, 1, 1));
        assert!(cost(0.0, 3, 1) > cost(0.0, 0, 1));
    }
}
