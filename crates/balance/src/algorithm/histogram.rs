//! A small lock-free latency histogram for the hedging delay.
//!
//! Buckets grow by 25% from 50 µs (so a percentile is known within 25%),
//! and the counts are halved every 1024 samples, so the histogram follows
//! the recent latency rather than the whole history.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

const BUCKETS: usize = 96;
const MIN_NS: f64 = 50_000.0;
const FACTOR: f64 = 1.25;
const HALVE_AT: u32 = 1024;

/// Recent latencies, bucketed.
///
/// ```
/// use std::time::Duration;
/// use towergate_balance::algorithm::LatencyHistogram;
///
/// let h = LatencyHistogram::default();
/// for ms in 1..=100 {
///     h.record(Duration::from_millis(ms));
/// }
/// let p90 = h.quantile(0.9, 10).unwrap();
/// assert!(p90 >= Duration::from_millis(90) && p90 <= Duration::from_millis(113));
/// assert_eq!(LatencyHistogram::default().quantile(0.9, 10), None);
/// ```
#[derive(Debug)]
pub struct LatencyHistogram {
    buckets: [AtomicU32; BUCKETS],
    count: AtomicU32,
}

// === impl LatencyHistogram ===

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU32::new(0)),
            count: AtomicU32::new(0),
        }
    }
}

impl LatencyHistogram {
    /// Records one latency.
    pub fn record(&self, latency: Duration) {
        let ns = latency.as_secs_f64() * 1e9;
        let i = if ns <= MIN_NS {
            0
        } else {
            // The float-to-int cast saturates; `min` keeps it in range.
            (((ns / MIN_NS).ln() / FACTOR.ln()).ceil() as usize).min(BUCKETS - 1)
        };
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        if self.count.fetch_add(1, Ordering::Relaxed) + 1 == HALVE_AT {
            // Only the thread that reached the mark halves; a few samples
            // recorded meanwhile may be halved too, which is harmless.
            let mut total = 0;
            for b in &self.buckets {
                let v = b.load(Ordering::Relaxed) / 2;
                b.store(v, Ordering::Relaxed);
                total += v;
            }
            self.count.store(total, Ordering::Relaxed);
        }
    }

    /// The `q` quantile (`0.0..=1.0`), as the upper bound of its bucket;
    /// `None` with fewer than `min_samples` samples.
    pub fn quantile(&self, q: f64, min_samples: u32) -> Option<Duration> {
        let counts: Vec<u32> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().map(|&c| u64::from(c)).sum();
        if total == 0 || total < u64::from(min_samples) {
            return None;
        }
        let target = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (i, &c) in counts.iter().enumerate() {
            seen += u64::from(c);
            if seen >= target {
                let i = i32::try_from(i).unwrap_or(i32::MAX);
                return Some(Duration::from_secs_f64(MIN_NS * FACTOR.powi(i) / 1e9));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_recent_latency() {
        let h = LatencyHistogram::default();
        for _ in 0..2000 {
            h.record(Duration::from_millis(100));
        }
        for _ in 0..4000 {
            h.record(Duration::from_millis(2));
        }
        let p50 = h.quantile(0.5, 1).expect("p50");
        assert!(p50 < Duration::from_millis(3), "{p50:?}");
        let tiny = LatencyHistogram::default();
        tiny.record(Duration::from_micros(1));
        assert_eq!(tiny.quantile(1.0, 1), Some(Duration::from_micros(50)));
    }
}
