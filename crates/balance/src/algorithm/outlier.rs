//! Passive health: consecutive failures eject an endpoint for a time that
//! doubles each time it is ejected again soon after returning.

use std::time::{Duration, Instant};

/// When an endpoint is ejected, and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EjectionPolicy {
    /// Consecutive failures that eject.
    pub consecutive_failures: u32,
    /// The first ejection's length.
    pub base: Duration,
    /// The longest ejection; an endpoint that has stayed in for this long
    /// since its last return starts again from `base`.
    pub max: Duration,
}

/// The passive-health state of one endpoint.
///
/// ```
/// use std::time::{Duration, Instant};
/// use towergate_balance::algorithm::{outlier::EjectionPolicy, Outlier};
///
/// let p = EjectionPolicy {
///     consecutive_failures: 2,
///     base: Duration::from_secs(1),
///     max: Duration::from_secs(60),
/// };
/// let t0 = Instant::now();
/// let mut o = Outlier::default();
/// assert!(!o.on_failure(&p));
/// assert!(o.on_failure(&p), "second failure in a row");
/// assert_eq!(o.eject(t0, &p), Duration::from_secs(1));
/// assert!(o.is_ejected(t0));
/// assert!(o.expire(t0 + Duration::from_secs(1)), "back after 1s");
/// // Failing again right away doubles the ejection.
/// o.on_failure(&p);
/// o.on_failure(&p);
/// assert_eq!(o.eject(t0 + Duration::from_secs(2), &p), Duration::from_secs(2));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outlier {
    consecutive_failures: u32,
    streak: u32,
    ejections: u64,
    ejected_until: Option<Instant>,
    returned_at: Option<Instant>,
}

// === impl Outlier ===

impl Outlier {
    /// Records a success: the failure run is broken.
    pub fn on_success(&mut self) {
        self.consecutive_failures = 0;
    }

    /// Records a failure; returns whether the endpoint should now be
    /// ejected (the caller may refuse, to keep enough of the pool in).
    pub fn on_failure(&mut self, policy: &EjectionPolicy) -> bool {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.ejected_until.is_none() && self.consecutive_failures >= policy.consecutive_failures
    }

    /// Ejects the endpoint; returns for how long.
    pub fn eject(&mut self, now: Instant, policy: &EjectionPolicy) -> Duration {
        if self
            .returned_at
            .is_some_and(|r| now.saturating_duration_since(r) >= policy.max)
        {
            // Healthy for a long while: forget the earlier ejections.
            self.streak = 0;
        }
        let d = policy
            .base
            .saturating_mul(1u32 << self.streak.min(31))
            .min(policy.max);
        self.streak = self.streak.saturating_add(1);
        self.ejections += 1;
        self.consecutive_failures = 0;
        self.ejected_until = Some(now + d);
        d
    }

    /// Whether the endpoint is out at `now` (an expired ejection still
    /// counts until [`expire`](Self::expire) clears it).
    pub fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until.is_some_and(|u| now < u)
    }

    /// The end of the current ejection, if any.
    pub fn ejected_until(&self) -> Option<Instant> {
        self.ejected_until
    }

    /// Clears an ejection that has run out; returns whether one did.
    pub fn expire(&mut self, now: Instant) -> bool {
        match self.ejected_until {
            Some(u) if now >= u => {
                self.ejected_until = None;
                // Failures of requests that were in flight while it was out
                // do not count towards the next ejection.
                self.consecutive_failures = 0;
                self.returned_at = Some(now);
                true
            }
            _ => false,
        }
    }

    /// Brings the endpoint back early (an active check saw it healthy);
    /// returns whether it was out.
    pub fn uneject(&mut self, now: Instant) -> bool {
        let was = self.ejected_until.is_some();
        self.ejected_until = None;
        self.consecutive_failures = 0;
        if was {
            self.returned_at = Some(now);
        }
        was
    }

    /// Failures in a row so far.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// Ejections since the endpoint joined.
    pub fn ejections(&self) -> u64 {
        self.ejections
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: EjectionPolicy = EjectionPolicy {
        consecutive_failures: 3,
        base: Duration::from_secs(2),
        max: Duration::from_secs(10),
    };

    #[test]
    fn success_breaks_the_run() {
        let mut o = Outlier::default();
        assert!(!o.on_failure(&P));
        assert!(!o.on_failure(&P));
        o.on_success();
        assert!(!o.on_failure(&P));
        assert!(!o.on_failure(&P));
        assert!(o.on_failure(&P));
    }

    #[test]
    fn failures_while_out_do_not_count_after_the_return() {
        let t0 = Instant::now();
        let mut o = Outlier::default();
        assert!(!o.on_failure(&P));
        assert!(!o.on_failure(&P));
        assert!(o.on_failure(&P));
        let d = o.eject(t0, &P);
        // Requests in flight at the ejection fail later, while it is out.
        assert!(!o.on_failure(&P));
        assert!(!o.on_failure(&P));
        assert!(o.expire(t0 + d));
        assert_eq!(o.consecutive_failures(), 0);
        assert!(
            !o.on_failure(&P),
            "one failure after the return is not three"
        );
    }

    #[test]
    fn backoff_grows_caps_and_resets() {
        let t0 = Instant::now();
        let mut o = Outlier::default();
        let mut now = t0;
        let mut got = vec![];
        for _ in 0..5 {
            let d = o.eject(now, &P);
            got.push(d.as_secs());
            now += d;
            assert!(o.is_ejected(now - Duration::from_millis(1)));
            assert!(o.expire(now));
            assert!(!o.is_ejected(now));
        }
        assert_eq!(got, [2, 4, 8, 10, 10]);
        // In for `max`: back to base.
        now += Duration::from_secs(10);
        assert_eq!(o.eject(now, &P), Duration::from_secs(2));
        assert_eq!(o.ejections(), 6);
        assert!(o.uneject(now));
        assert!(!o.is_ejected(now));
    }
}
