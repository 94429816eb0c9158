//! A retry budget over a sliding window, as in finagle and linkerd2-proxy.
//!
//! Every request deposits, every retry withdraws. Over the last `ttl` the
//! retries allowed are `min_per_sec × ttl` (a floor, so that a quiet client
//! can still retry) plus `ratio × requests`. Once spent, retries stop: when
//! every endpoint fails, retries add at most `ratio` extra load instead of
//! multiplying it by the number of attempts.

use std::time::{Duration, Instant};

/// Slots of the window: the budget forgets in steps of `ttl / SLOTS`.
const SLOTS: u32 = 10;

/// The state of a retry budget; time is passed in.
///
/// ```
/// use std::time::{Duration, Instant};
/// use towergate_balance::algorithm::BudgetWindow;
///
/// let t0 = Instant::now();
/// // 20% of requests, and no floor.
/// let mut b = BudgetWindow::new(Duration::from_secs(10), 0, 0.2, t0);
/// for _ in 0..10 {
///     b.deposit(t0);
/// }
/// assert!(b.try_withdraw(t0));
/// assert!(b.try_withdraw(t0));
/// assert!(!b.try_withdraw(t0), "10 requests buy 2 retries");
/// ```
#[derive(Clone, Debug)]
pub struct BudgetWindow {
    reserve: f64,
    ratio: f64,
    slot_len: Duration,
    slots: Vec<Slot>,
    current: usize,
    current_start: Instant,
}

#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    deposits: u64,
    withdrawals: u64,
}

// === impl BudgetWindow ===

impl BudgetWindow {
    /// A budget that forgets after `ttl` (at least a millisecond), allows
    /// `min_per_sec` retries per second whatever the traffic, and `ratio`
    /// retries per request on top.
    pub fn new(ttl: Duration, min_per_sec: u32, ratio: f64, now: Instant) -> Self {
        let ttl = ttl.max(Duration::from_millis(1));
        Self {
            reserve: f64::from(min_per_sec) * ttl.as_secs_f64(),
            ratio: if ratio.is_finite() {
                ratio.max(0.0)
            } else {
                0.0
            },
            slot_len: ttl / SLOTS,
            slots: vec![Slot::default(); SLOTS as usize],
            current: 0,
            current_start: now,
        }
    }

    /// Records a request.
    pub fn deposit(&mut self, now: Instant) {
        self.advance(now);
        self.slots[self.current].deposits += 1;
    }

    /// Takes one retry from the budget, if there is one left.
    pub fn try_withdraw(&mut self, now: Instant) -> bool {
        if self.balance(now) >= 1.0 {
            self.slots[self.current].withdrawals += 1;
            true
        } else {
            false
        }
    }

    /// Retries left now.
    pub fn balance(&mut self, now: Instant) -> f64 {
        self.advance(now);
        let (d, w) = self.slots.iter().fold((0u64, 0u64), |(d, w), s| {
            (d + s.deposits, w + s.withdrawals)
        });
        self.reserve + self.ratio * d as f64 - w as f64
    }

    fn advance(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.current_start);
        if elapsed < self.slot_len || self.slot_len.is_zero() {
            return;
        }
        let steps = (elapsed.as_nanos() / self.slot_len.as_nanos()).min(u128::from(SLOTS));
        for _ in 0..steps {
            self.current = (self.current + 1) % self.slots.len();
            self.slots[self.current] = Slot::default();
        }
        if steps == u128::from(SLOTS) {
            // Idle for a whole window: start afresh from now.
            self.current_start = now;
        } else {
            // `steps < SLOTS` here, so the cast cannot truncate.
            self.current_start += self.slot_len * steps as u32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_allows_retries_without_traffic() {
        let t0 = Instant::now();
        let mut b = BudgetWindow::new(Duration::from_secs(10), 1, 0.2, t0);
        let allowed = (0..100).filter(|_| b.try_withdraw(t0)).count();
        assert_eq!(allowed, 10);
    }

    #[test]
    fn extra_attempts_bounded_by_ratio_plus_floor() {
        let t0 = Instant::now();
        let mut b = BudgetWindow::new(Duration::from_secs(10), 1, 0.2, t0);
        let mut retries = 0;
        // Every request fails and wants 3 retries, over 5 seconds.
        for i in 0..500u32 {
            let now = t0 + Duration::from_millis(u64::from(i) * 10);
            b.deposit(now);
            for _ in 0..3 {
                if b.try_withdraw(now) {
                    retries += 1;
                }
            }
        }
        assert_eq!(retries, 10 + 100);
    }

    #[test]
    fn forgets_after_ttl() {
        let t0 = Instant::now();
        let mut b = BudgetWindow::new(Duration::from_secs(10), 0, 0.5, t0);
        for _ in 0..10 {
            b.deposit(t0);
        }
        assert_eq!(b.balance(t0), 5.0);
        assert_eq!(b.balance(t0 + Duration::from_secs(5)), 5.0);
        assert_eq!(b.balance(t0 + Duration::from_secs(11)), 0.0);
        // Withdrawals are forgotten too.
        for _ in 0..4 {
            b.deposit(t0 + Duration::from_secs(11));
        }
        assert!(b.try_withdraw(t0 + Duration::from_secs(11)));
        assert!(b.try_withdraw(t0 + Duration::from_secs(11)));
        assert!(!b.try_withdraw(t0 + Duration::from_secs(11)));
        assert_eq!(b.balance(t0 + Duration::from_secs(60)), 0.0);
    }
}
