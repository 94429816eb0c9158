//! Active health: an endpoint turns unhealthy after `unhealthy_threshold`
//! failed checks in a row, and healthy again after `healthy_threshold`
//! passed ones, so one lost probe does not flap it.

/// The active-check state of one endpoint. New endpoints start healthy, so
/// a pool serves before its first round of checks.
///
/// ```
/// use towergate_balance::algorithm::ActiveHealth;
///
/// let mut h = ActiveHealth::default();
/// assert_eq!(h.record(false, 2, 2), None);
/// assert_eq!(h.record(false, 2, 2), Some(false), "down after two failures");
/// assert_eq!(h.record(true, 2, 2), None);
/// assert_eq!(h.record(true, 2, 2), Some(true), "up after two passes");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActiveHealth {
    healthy: bool,
    successes: u32,
    failures: u32,
}

// === impl ActiveHealth ===

impl Default for ActiveHealth {
    fn default() -> Self {
        Self {
            healthy: true,
            successes: 0,
            failures: 0,
        }
    }
}

impl ActiveHealth {
    /// Records a check; returns the new state when it changes.
    pub fn record(
        &mut self,
        ok: bool,
        healthy_threshold: u32,
        unhealthy_threshold: u32,
    ) -> Option<bool> {
        if ok {
            self.successes = self.successes.saturating_add(1);
            self.failures = 0;
            if !self.healthy && self.successes >= healthy_threshold {
                self.healthy = true;
                return Some(true);
            }
        } else {
            self.failures = self.failures.saturating_add(1);
            self.successes = 0;
            if self.healthy && self.failures >= unhealthy_threshold {
                self.healthy = false;
                return Some(false);
            }
        }
        None
    }

    /// Whether the endpoint is healthy.
    pub fn is_healthy(&self) -> bool {
        self.healthy
    }

    /// Passed checks in a row.
    pub fn successes(&self) -> u32 {
        self.successes
    }

    /// Failed checks in a row.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_lost_probe_does_not_flap() {
        let mut h = ActiveHealth::default();
        for _ in 0..10 {
            assert_eq!(h.record(false, 1, 3), None);
            assert_eq!(h.record(true, 1, 3), None);
        }
        assert!(h.is_healthy());
        assert_eq!(h.record(false, 1, 1), Some(false));
        assert_eq!(h.record(true, 1, 1), Some(true));
    }
}
