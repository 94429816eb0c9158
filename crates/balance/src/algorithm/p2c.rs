//! Power of two choices: draw two distinct eligible endpoints at random and
//! take the one with the lower cost.
//!
//! Compared with scanning for the global minimum, it is O(1) in the common
//! case and avoids the herd effect of every balancer sending to the same
//! "best" endpoint at once (Mitzenmacher, *The Power of Two Choices in
//! Randomized Load Balancing*).

use super::Random;

/// Draws before falling back to collecting the eligible endpoints: with most
/// endpoints eligible, a draw almost always succeeds at once.
const TRIES: usize = 4;

/// Picks among `0..n` the cheaper of two distinct random eligible indices;
/// `None` when no index is eligible, the only one when one is.
///
/// ```
/// use towergate_balance::algorithm::{p2c, Random};
///
/// let mut rng = fastrand::Rng::with_seed(7);
/// let cost = [5.0, 1.0, 9.0];
/// // With two endpoints the cheaper one always wins.
/// let pick = p2c::pick(3, |i| i != 2, |i| cost[i], &mut rng);
/// assert_eq!(pick, Some(1));
/// assert_eq!(p2c::pick(3, |_| false, |i| cost[i], &mut rng), None);
/// ```
pub fn pick<R: Random + ?Sized>(
    n: usize,
    mut eligible: impl FnMut(usize) -> bool,
    mut cost: impl FnMut(usize) -> f64,
    rng: &mut R,
) -> Option<usize> {
    let a = draw(n, &mut eligible, None, rng)?;
    let Some(b) = draw(n, &mut eligible, Some(a), rng) else {
        return Some(a);
    };
    if cost(b) < cost(a) { Some(b) } else { Some(a) }
}

fn draw<R: Random + ?Sized>(
    n: usize,
    eligible: &mut impl FnMut(usize) -> bool,
    not: Option<usize>,
    rng: &mut R,
) -> Option<usize> {
    if n == 0 {
        return None;
    }
    for _ in 0..TRIES {
        let i = rng.below(n);
        if Some(i) != not && eligible(i) {
            return Some(i);
        }
    }
    // Most endpoints are out: draw uniformly among those that are in.
    let rest: Vec<usize> = (0..n).filter(|&i| Some(i) != not && eligible(i)).collect();
    if rest.is_empty() {
        None
    } else {
        Some(rest[rng.below(rest.len())])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefers_the_faster_of_two() {
        // Injected latency estimates: 2ms and 20ms, nothing in flight.
        let est = [2e6, 20e6];
        let mut rng = fastrand::Rng::with_seed(1);
        let mut counts = [0usize; 2];
        for _ in 0..1000 {
            let i = pick(
                2,
                |_| true,
                |i| super::super::ewma::cost(est[i], 0, 1),
                &mut rng,
            )
            .expect("a pick");
            counts[i] += 1;
        }
        assert_eq!(counts, [1000, 0]);
    }

    #[test]
    fn slower_endpoint_gets_a_small_share_among_three() {
        // Each pick raises in-flight on the chosen one, as real traffic
        // would, so the fast ones fill up and the slow one is chosen only
        // when both fast ones are busier than it costs.
        let est = [1e6, 1e6, 50e6];
        let mut in_flight = [0usize; 3];
        let mut counts = [0usize; 3];
        let mut rng = fastrand::Rng::with_seed(2);
        for round in 0..3000 {
            let i = pick(
                3,
                |_| true,
                |i| super::super::ewma::cost(est[i], in_flight[i], 1),
                &mut rng,
            )
            .expect("a pick");
            counts[i] += 1;
            in_flight[i] += 1;
            // Requests finish in proportion to speed.
            if round % 4 == 3 {
                in_flight = [0, 0, in_flight[2].saturating_sub(1)];
            }
        }
        assert!(counts[2] * 10 < 3000, "slow share {counts:?}");
    }

    #[test]
    fn skips_ineligible_and_handles_single() {
        let mut rng = fastrand::Rng::with_seed(3);
        for _ in 0..100 {
            assert_eq!(pick(50, |i| i == 17, |_| 1.0, &mut rng), Some(17));
        }
        assert_eq!(pick(0, |_| true, |_| 1.0, &mut rng), None);
    }

    #[test]
    fn uniform_when_costs_are_equal_among_eligible() {
        let mut rng = fastrand::Rng::with_seed(4);
        let mut counts = [0usize; 10];
        // Only the even half is eligible; with ties the first draw wins, so
        // the choice is uniform among the five.
        for _ in 0..50_000 {
            let i = pick(10, |i| i % 2 == 0, |_| 1.0, &mut rng).expect("pick");
            counts[i] += 1;
        }
        for (i, c) in counts.iter().enumerate() {
            if i % 2 == 1 {
                assert_eq!(*c, 0);
            } else {
                assert!((9_000..11_000).contains(c), "{counts:?}");
            }
        }
    }
}
