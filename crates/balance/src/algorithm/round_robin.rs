//! Plain round-robin over the eligible endpoints.

use std::sync::atomic::{AtomicUsize, Ordering};

/// A shared round-robin cursor: each pick takes the next eligible index.
///
/// ```
/// use towergate_balance::algorithm::RoundRobin;
///
/// let rr = RoundRobin::default();
/// let picks: Vec<_> = (0..4).filter_map(|_| rr.pick(3, |_| true)).collect();
/// assert_eq!(picks, [0, 1, 2, 0]);
/// ```
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

// === impl RoundRobin ===

impl RoundRobin {
    /// The next eligible index in `0..n`, or `None` if none is eligible.
    ///
    /// The cursor counts through the eligible indices, not through all of
    /// them: with `b` of `[a, b, c]` out, picks alternate `a`, `c` (taking
    /// the next eligible one after the cursor would send `b`'s turns to
    /// `c`, twice `a`'s load).
    pub fn pick(&self, n: usize, mut eligible: impl FnMut(usize) -> bool) -> Option<usize> {
        if n == 0 {
            return None;
        }
        let cursor = self.next.fetch_add(1, Ordering::Relaxed);
        let k = (0..n).filter(|&i| eligible(i)).count();
        if k == n {
            return Some(cursor % n);
        }
        let nth = cursor.checked_rem(k)?;
        (0..n).filter(|&i| eligible(i)).nth(nth)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn even_and_skips_ineligible() {
        let rr = RoundRobin::default();
        let mut counts = [0usize; 4];
        for _ in 0..4000 {
            counts[rr.pick(4, |_| true).expect("pick")] += 1;
        }
        assert_eq!(counts, [1000; 4]);
        for _ in 0..100 {
            assert_ne!(rr.pick(4, |i| i != 1), Some(1));
        }
        assert_eq!(rr.pick(4, |_| false), None);
    }

    #[test]
    fn the_turns_of_an_ineligible_index_are_shared_evenly() {
        let rr = RoundRobin::default();
        let mut counts = [0usize; 3];
        for _ in 0..300 {
            counts[rr.pick(3, |i| i != 1).expect("pick")] += 1;
        }
        assert_eq!(counts, [150, 0, 150]);
    }
}
