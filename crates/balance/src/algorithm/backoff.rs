//! Exponential back-off with full jitter.
//!
//! The `n`-th retry waits a uniformly random time in
//! `[0, min(max, base × 2ⁿ)]`. Full jitter spreads the retries of many
//! clients that failed at the same moment, so they do not come back in
//! lockstep (the "thundering herd" after an endpoint blips).

use std::time::Duration;

/// Back-off settings.
///
/// ```
/// use std::time::Duration;
/// use towergate_balance::algorithm::Backoff;
///
/// let b = Backoff::new(Duration::from_millis(10), Duration::from_millis(100));
/// // The random draw is passed in: 0.5 of the cap.
/// assert_eq!(b.delay(0, 0.5), Duration::from_millis(5));
/// assert_eq!(b.delay(2, 0.5), Duration::from_millis(20));
/// assert_eq!(b.delay(10, 0.5), Duration::from_millis(50), "capped at max");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
}

// === impl Backoff ===

impl Backoff {
    /// Starts at `base`, doubles per retry, never exceeds `max`.
    pub const fn new(base: Duration, max: Duration) -> Self {
        Self { base, max }
    }

    /// No waiting between attempts.
    pub const fn none() -> Self {
        Self::new(Duration::ZERO, Duration::ZERO)
    }

    /// The wait before retry number `retry` (0 for the first), given a
    /// uniform draw `unit` in `[0, 1)`.
    pub fn delay(&self, retry: u32, unit: f64) -> Duration {
        let cap = self
            .base
            .saturating_mul(1u32 << retry.min(31))
            .min(self.max);
        let unit = if unit.is_finite() {
            unit.clamp(0.0, 1.0)
        } else {
            0.0
        };
        cap.mul_f64(unit)
    }

    /// The first delay's cap.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The largest delay.
    pub fn max(&self) -> Duration {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_then_caps_and_jitters() {
        let b = Backoff::new(Duration::from_millis(10), Duration::from_secs(1));
        assert_eq!(b.delay(0, 0.999_999).as_millis(), 9);
        assert_eq!(b.delay(3, 1.0), Duration::from_millis(80));
        assert_eq!(b.delay(40, 1.0), Duration::from_secs(1));
        assert_eq!(b.delay(3, 0.0), Duration::ZERO);
        assert_eq!(b.delay(3, f64::NAN), Duration::ZERO);
        assert_eq!(Backoff::none().delay(5, 0.7), Duration::ZERO);
    }
}
