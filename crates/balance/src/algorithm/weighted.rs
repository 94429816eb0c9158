//! Smooth weighted round-robin, as nginx does it.
//!
//! Each pick adds every eligible endpoint's weight to its running score,
//! takes the highest score, and subtracts the total weight from the winner.
//! Over any window of `sum(weights)` picks each endpoint gets exactly its
//! weight, and the picks are interleaved (`a a b a c a a` rather than
//! `a a a a a b c`), so no endpoint sees bursts.

/// The running scores of smooth weighted round-robin.
///
/// ```
/// use towergate_balance::algorithm::SmoothWeighted;
///
/// let weights = [5, 1, 1];
/// let mut wrr = SmoothWeighted::default();
/// let picks: Vec<_> = (0..7)
///     .filter_map(|_| wrr.pick(3, |i| weights[i], |_| true))
///     .collect();
/// assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0]);
/// ```
#[derive(Clone, Debug, Default)]
pub struct SmoothWeighted {
    current: Vec<i64>,
}

// === impl SmoothWeighted ===

impl SmoothWeighted {
    /// Picks among `0..n`; endpoints that are not eligible or weigh `0` are
    /// left out of the round.
    pub fn pick(
        &mut self,
        n: usize,
        mut weight: impl FnMut(usize) -> u32,
        mut eligible: impl FnMut(usize) -> bool,
    ) -> Option<usize> {
        if self.current.len() != n {
            // A new membership starts a new round.
            self.current = vec![0; n];
        }
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for i in 0..n {
            let w = i64::from(weight(i));
            if w == 0 || !eligible(i) {
                continue;
            }
            self.current[i] += w;
            total += w;
            if best.is_none_or(|b| self.current[i] > self.current[b]) {
                best = Some(i);
            }
        }
        let b = best?;
        self.current[b] -= total;
        Some(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_one_percent_of_weights_over_10k() {
        let weights = [1u32, 2, 3, 4, 10];
        let total: u32 = weights.iter().sum();
        let mut wrr = SmoothWeighted::default();
        let mut counts = [0usize; 5];
        let picks = 10_000;
        for _ in 0..picks {
            counts[wrr.pick(5, |i| weights[i], |_| true).expect("pick")] += 1;
        }
        for (i, &c) in counts.iter().enumerate() {
            let want = picks as f64 * f64::from(weights[i]) / f64::from(total);
            assert!(
                (c as f64 - want).abs() <= picks as f64 * 0.01,
                "endpoint {i}: {c} vs {want}"
            );
        }
    }

    #[test]
    fn ineligible_and_zero_weight_are_skipped() {
        let weights = [3u32, 0, 1];
        let mut wrr = SmoothWeighted::default();
        let mut counts = [0usize; 3];
        for _ in 0..400 {
            counts[wrr.pick(3, |i| weights[i], |_| true).expect("pick")] += 1;
        }
        assert_eq!(counts, [300, 0, 100]);
        for _ in 0..10 {
            assert_eq!(wrr.pick(3, |i| weights[i], |i| i != 0), Some(2));
        }
        assert_eq!(wrr.pick(3, |_| 0, |_| true), None);
    }
}
