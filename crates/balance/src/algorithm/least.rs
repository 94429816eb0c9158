//! Least outstanding requests: a full scan for the lowest load.
//!
//! The scan starts at a random index so that ties (typically several idle
//! endpoints) are broken at random instead of always favouring the first.

use super::Random;

/// Picks the eligible index in `0..n` with the lowest `load`.
///
/// ```
/// use towergate_balance::algorithm::least;
///
/// let in_flight = [3.0, 0.0, 5.0];
/// let mut rng = fastrand::Rng::with_seed(1);
/// assert_eq!(least::pick(3, |_| true, |i| in_flight[i], &mut rng), Some(1));
/// ```
pub fn pick<R: Random + ?Sized>(
    n: usize,
    mut eligible: impl FnMut(usize) -> bool,
    mut load: impl FnMut(usize) -> f64,
    rng: &mut R,
) -> Option<usize> {
    if n == 0 {
        return None;
    }
    let start = rng.below(n);
    let mut best: Option<(usize, f64)> = None;
    for k in 0..n {
        let i = (start + k) % n;
        if !eligible(i) {
            continue;
        }
        let l = load(i);
        if best.is_none_or(|(_, b)| l < b) {
            best = Some((i, l));
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_idle_one() {
        let mut rng = fastrand::Rng::with_seed(9);
        let in_flight = [4.0, 7.0, 0.0, 2.0];
        for _ in 0..100 {
            assert_eq!(pick(4, |_| true, |i| in_flight[i], &mut rng), Some(2));
        }
        // Unless it is out.
        assert_eq!(pick(4, |i| i != 2, |i| in_flight[i], &mut rng), Some(3));
    }

    #[test]
    fn ties_are_spread() {
        let mut rng = fastrand::Rng::with_seed(10);
        let mut counts = [0usize; 3];
        for _ in 0..3000 {
            counts[pick(3, |_| true, |_| 0.0, &mut rng).expect("pick")] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }
}
